//! The glue that lets hyper-util's pooled client run on async-io instead of tokio: a connector
//! (TCP through `async-net`, TLS through `futures-rustls`, HTTP CONNECT tunnels through a proxy),
//! an executor for hyper's background connection tasks and the stream type hyper reads and writes.
//!
//! Nothing here touches a tokio reactor: sockets are `async_io::Async`, timers `async_io::Timer`,
//! tasks go to async-std's global executor. hyper's I/O traits are bridged from `futures-io` by
//! `smol_hyper::rt::FuturesIo`.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_net::TcpStream;
use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use futures_rustls::client::TlsStream;
use futures_rustls::pki_types::ServerName;
use http::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::client::proxy::matcher::Matcher;
use smol_hyper::rt::FuturesIo;

/// Spawns hyper's connection tasks onto async-std's global executor (which runs its own
/// threads, so it works under `smol::block_on` or `async_std::task::block_on` alike).
#[derive(Debug, Clone, Copy)]
pub(crate) struct AsyncStdExecutor;

impl<F> hyper::rt::Executor<F> for AsyncStdExecutor
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, task: F) {
        // Dropping an async-std JoinHandle detaches the task; it ends with its connection.
        drop(async_std::task::spawn(task));
    }
}

/// Opens connections for hyper-util's client: direct or through the environment's proxy,
/// plain or TLS, bounded by the connect timeout.
#[derive(Clone)]
pub(crate) struct Connector {
    pub(crate) tls: futures_rustls::TlsConnector,
    pub(crate) proxy: Arc<Matcher>,
    pub(crate) connect_timeout: Duration,
}

impl tower_service::Service<Uri> for Connector {
    type Response = Stream;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Stream>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, target: Uri) -> Self::Future {
        let connector = self.clone();
        Box::pin(async move {
            let timeout = connector.connect_timeout;
            with_timeout(timeout, connector.connect(target))
                .await
                .unwrap_or_else(|| {
                    Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("connect timed out after {timeout:?}"),
                    ))
                })
        })
    }
}

impl Connector {
    async fn connect(self, target: Uri) -> io::Result<Stream> {
        let https = target.scheme() == Some(&http::uri::Scheme::HTTPS);
        let host = target
            .host()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "URL without a host"))?;
        let port = target.port_u16().unwrap_or(if https { 443 } else { 80 });

        let Some(proxy) = self.proxy.intercept(&target) else {
            let tcp = tcp_connect(host, port).await?;
            return self.finish(tcp, https, host, false).await;
        };
        let proxy_uri = proxy.uri();
        let proxy_host = proxy_uri
            .host()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "proxy without a host"))?;
        let proxy_port = proxy_uri.port_u16().unwrap_or(80);
        let mut tcp = tcp_connect(proxy_host, proxy_port).await?;
        if https {
            // Through a tunnel the proxy only sees the target's name, never the request.
            tunnel(&mut tcp, host, port, proxy.basic_auth()).await?;
            self.finish(tcp, true, host, false).await
        } else {
            // Plain HTTP goes to the proxy in absolute form; hyper writes it that way when the
            // connection says it is proxied.
            self.finish(tcp, false, host, true).await
        }
    }

    async fn finish(
        &self,
        tcp: TcpStream,
        https: bool,
        host: &str,
        proxied: bool,
    ) -> io::Result<Stream> {
        // Nagle's delay would hold back small requests behind an unacknowledged write.
        tcp.set_nodelay(true)?;
        if !https {
            return Ok(Stream::new(Inner::Plain(tcp), false, proxied));
        }
        let name = ServerName::try_from(host.trim_start_matches('[').trim_end_matches(']'))
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?
            .to_owned();
        let tls = self.tls.connect(name, tcp).await?;
        let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
        Ok(Stream::new(Inner::Tls(Box::new(tls)), h2, proxied))
    }
}

async fn tcp_connect(host: &str, port: u16) -> io::Result<TcpStream> {
    // `Uri::host` keeps the brackets of an IPv6 literal; the resolver wants them off.
    let host = host.trim_start_matches('[').trim_end_matches(']');
    TcpStream::connect((host, port)).await
}

/// Asks an HTTP proxy for a tunnel to `host:port` (RFC 9110 §9.3.6).
async fn tunnel(
    tcp: &mut TcpStream,
    host: &str,
    port: u16,
    auth: Option<&http::HeaderValue>,
) -> io::Result<()> {
    let mut request = format!("CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n");
    if let Some(auth) = auth.and_then(|a| a.to_str().ok()) {
        request.push_str(&format!("Proxy-Authorization: {auth}\r\n"));
    }
    request.push_str("\r\n");
    tcp.write_all(request.as_bytes()).await?;

    // The proxy sends nothing after its head until we speak TLS, so reading in blocks cannot
    // swallow tunnel bytes.
    let mut head = Vec::new();
    let mut block = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() > 16 * 1024 {
            return Err(io::Error::other("proxy CONNECT answer head too large"));
        }
        let n = tcp.read(&mut block).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        head.extend_from_slice(&block[..n]);
    }
    let status_line = String::from_utf8_lossy(&head);
    let status_line = status_line.lines().next().unwrap_or_default();
    match status_line.split(' ').nth(1) {
        Some(status) if status.starts_with('2') => Ok(()),
        _ => Err(io::Error::new(
            io::ErrorKind::ConnectionRefused,
            format!("proxy refused the tunnel: {status_line}"),
        )),
    }
}

/// Runs `work` for at most `limit`; `None` when the time ran out first.
pub(crate) async fn with_timeout<T>(limit: Duration, work: impl Future<Output = T>) -> Option<T> {
    futures_lite::future::or(async { Some(work.await) }, async {
        async_io::Timer::after(limit).await;
        None
    })
    .await
}

/// A plain or TLS connection.
enum Inner {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Inner {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Inner::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Inner::Tls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Inner {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Inner::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Inner::Tls(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Inner::Plain(s) => Pin::new(s).poll_flush(cx),
            Inner::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Inner::Plain(s) => Pin::new(s).poll_close(cx),
            Inner::Tls(s) => Pin::new(s).poll_close(cx),
        }
    }
}

/// A connection as hyper sees it: its I/O traits plus what was negotiated.
pub(crate) struct Stream {
    io: FuturesIo<Inner>,
    h2: bool,
    proxied: bool,
}

impl Stream {
    fn new(inner: Inner, h2: bool, proxied: bool) -> Stream {
        Stream {
            io: FuturesIo::new(inner),
            h2,
            proxied,
        }
    }
}

impl Connection for Stream {
    fn connected(&self) -> Connected {
        let connected = Connected::new().proxy(self.proxied);
        if self.h2 {
            connected.negotiated_h2()
        } else {
            connected
        }
    }
}

impl hyper::rt::Read for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}
