//! The async-std / smol HTTP transport: [`AsyncHttp`] on hyper-util's pooled client, driven by
//! async-io.
//!
//! reqwest needs a tokio reactor, so this crate builds on what async-std itself runs on: sockets
//! and timers from `async-io`, hyper 1 with hyper-util's legacy pooled `Client` (HTTP/1.1 and
//! HTTP/2 over ALPN, keep-alive), TLS from `futures-rustls`. The glue is in `connector.rs`. The
//! `tokio` crate is compiled (hyper and h2 use its I/O and sync types) but no tokio runtime or
//! reactor is ever needed: the transport works under `async_std::task::block_on` and
//! `smol::block_on` alike (both are tested).
//!
//! Configuration choices, and why:
//! - **TLS**: rustls with the *ring* provider passed to the connector (never installed
//!   process-wide) and the Mozilla roots of `webpki-roots` compiled in: the same trust on every
//!   OS and in minimal containers, no file or network access at start-up.
//!   [`HyperTransport::with_tls_config`] takes a custom `rustls::ClientConfig`.
//! - **Timeouts** are per request, from [`Timeouts`]: the connect timeout bounds DNS, TCP, proxy
//!   tunnel and TLS (one pooled client per distinct connect timeout, in practice one); the read
//!   timeout bounds the wait for the response head from the moment the request is sent, then
//!   each body frame. No total timeout, so long polls and streams live as long as data comes.
//! - **Pooling**: a finished HTTP/1.1 connection returns to the pool from hyper's connection task
//!   on the executor, so a request sent the very instant the previous body ended may open a
//!   second connection instead of waiting for the first.
//! - **Pool timer**: hyper-util reaps idle connections only with a pool timer; without one,
//!   idle connections are never closed on non-tokio executors (hyperium/hyper#2808).
//! - **Proxy**: `HTTPS_PROXY`/`HTTP_PROXY`/`ALL_PROXY` and `NO_PROXY` (and lower-case forms) are
//!   read when the transport is built. HTTPS targets go through a CONNECT tunnel, plain HTTP
//!   targets in absolute form; credentials in the proxy URL are sent as `Proxy-Authorization`.
//! - **Redirects** are followed (up to 10), as the official SDK does, by a loop on the core's
//!   [`tinker_core::redirect::after_response`]: the one policy of all transports, which drops the
//!   API key and every other credential when a redirect leaves the origin.
//!   One exception, decided there too: the 0.25 checkpoint-archive endpoint's 302 is read (its
//!   `Location` is the answer), not followed.
//! - **Compression**: the transport owns `Accept-Encoding`. hyper has no decoder, so it sends
//!   `identity`: the server must answer uncompressed (an absent header would allow any
//!   encoding). The core always sees plain bytes.
//! - **Statuses** are values: 4xx and 5xx come back as responses with their headers and body.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::proxy::matcher::Matcher;
use smol_hyper::rt::SmolTimer;
use tinker_core::io::{
    AsyncBody, AsyncHttp, AsyncResponse, Timeouts, TransportError, TransportErrorKind,
};
use tinker_core::redirect::{after_response, AfterResponse, MAX_REDIRECTS};

use crate::connector::{with_timeout, AsyncStdExecutor, Connector};

/// The encodings this transport decodes, sent as `Accept-Encoding` on every request: none.
pub const ACCEPT_ENCODING: &str = "identity";

/// How long an idle pooled connection is kept (servers and load balancers commonly drop idle
/// connections after 60–120 s; closing first avoids writing into a dead socket).
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(55);
/// Idle connections kept per host (httpx's default keep-alive limit).
const POOL_MAX_IDLE_PER_HOST: usize = 20;

type PooledClient = Client<Connector, Full<Bytes>>;

/// An [`AsyncHttp`] transport on hyper + hyper-util, running on async-io (async-std or smol).
///
/// Cheap to clone; clones share the connection pool.
///
/// ```no_run
/// use tinker_async_std::HyperTransport;
/// use tinker_core::io::{AsyncHttp, Timeouts};
///
/// smol::block_on(async {
///     let transport = HyperTransport::new();
///     let request = http::Request::get("https://example.com/api/v1/healthz")
///         .body(bytes::Bytes::new())
///         .unwrap();
///     let mut response = transport.send(request, Timeouts::default()).await.unwrap();
///     println!("{}", response.head.status);
///     while let Some(chunk) = response.body.next_chunk().await {
///         let _bytes = chunk.unwrap();
///     }
/// });
/// ```
#[derive(Clone)]
pub struct HyperTransport {
    tls: futures_rustls::TlsConnector,
    proxy: Arc<Matcher>,
    /// One client per distinct connect timeout: the connector fixes the timeout per client.
    /// The SDK uses a single value (5 s), so this holds one entry.
    clients: Arc<Mutex<Vec<(Duration, PooledClient)>>>,
}

impl std::fmt::Debug for HyperTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HyperTransport").finish_non_exhaustive()
    }
}

impl Default for HyperTransport {
    fn default() -> HyperTransport {
        HyperTransport::new()
    }
}

impl HyperTransport {
    /// A transport trusting the Mozilla root certificates, with the ring crypto provider and the
    /// proxy configured in the environment.
    pub fn new() -> HyperTransport {
        HyperTransport::with_tls_config(default_tls_config())
    }

    /// A transport using this rustls configuration (custom roots, client certificates, another
    /// provider). Its ALPN list is replaced by `h2, http/1.1`.
    pub fn with_tls_config(tls: futures_rustls::rustls::ClientConfig) -> HyperTransport {
        HyperTransport::with_tls_and_proxy(tls, Matcher::from_env())
    }

    fn with_tls_and_proxy(
        mut tls: futures_rustls::rustls::ClientConfig,
        proxy: Matcher,
    ) -> HyperTransport {
        tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        HyperTransport {
            tls: futures_rustls::TlsConnector::from(Arc::new(tls)),
            proxy: Arc::new(proxy),
            clients: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// The pooled client for this connect timeout, built on first use.
    fn client(&self, connect_timeout: Duration) -> PooledClient {
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, client)) = clients.iter().find(|(t, _)| *t == connect_timeout) {
            return client.clone();
        }
        let connector = Connector {
            tls: self.tls.clone(),
            proxy: self.proxy.clone(),
            connect_timeout,
        };
        let client = Client::builder(AsyncStdExecutor)
            .timer(SmolTimer::new())
            .pool_timer(SmolTimer::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .pool_max_idle_per_host(POOL_MAX_IDLE_PER_HOST)
            .build(connector);
        clients.push((connect_timeout, client.clone()));
        client
    }

    /// Sends one request (no redirect handling), waiting at most `read` for the head.
    async fn send_once(
        &self,
        client: &PooledClient,
        request: http::Request<Bytes>,
        read: Duration,
    ) -> Result<http::Response<hyper::body::Incoming>, TransportError> {
        let request = request.map(Full::new);
        match with_timeout(read, client.request(request)).await {
            Some(result) => result.map_err(|e| classify_client_error(&e)),
            None => Err(TransportError::new(
                TransportErrorKind::Timeout,
                format!("no response head within {read:?}"),
            )),
        }
    }
}

/// The default TLS setup: ring provider, Mozilla roots, TLS 1.2 and 1.3.
fn default_tls_config() -> futures_rustls::rustls::ClientConfig {
    use futures_rustls::rustls;
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("the ring provider supports the default TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth()
}

#[async_trait::async_trait]
impl AsyncHttp for HyperTransport {
    async fn send(
        &self,
        request: http::Request<Bytes>,
        timeouts: Timeouts,
    ) -> Result<AsyncResponse, TransportError> {
        let client = self.client(timeouts.connect);
        let (mut parts, body) = request.into_parts();
        parts.headers.insert(
            http::header::ACCEPT_ENCODING,
            http::HeaderValue::from_static(ACCEPT_ENCODING),
        );
        let mut request = http::Request::from_parts(parts, body);
        for _hop in 0..=MAX_REDIRECTS {
            self.add_proxy_credentials(&mut request);
            let response = self
                .send_once(&client, request.clone(), timeouts.read)
                .await?;
            let now = std::time::SystemTime::now();
            match after_response(&request, response.status(), response.headers(), now) {
                AfterResponse::Follow(next) => request = next,
                AfterResponse::Reply(reply) => {
                    let (head, body) = reply.into_parts();
                    return Ok(AsyncResponse {
                        head,
                        body: Box::new(body),
                    });
                }
                AfterResponse::Deliver => {
                    let (head, body) = response.into_parts();
                    return Ok(AsyncResponse {
                        head,
                        body: Box::new(HyperBody {
                            body,
                            read_timeout: timeouts.read,
                        }),
                    });
                }
            }
        }
        Err(TransportError::new(
            TransportErrorKind::Protocol,
            format!("more than {MAX_REDIRECTS} redirects"),
        ))
    }
}

impl HyperTransport {
    /// A plain-HTTP request through a proxy carries the proxy's credentials itself (an HTTPS one
    /// sends them in the CONNECT).
    fn add_proxy_credentials(&self, request: &mut http::Request<Bytes>) {
        if request.uri().scheme() != Some(&http::uri::Scheme::HTTP) {
            return;
        }
        let auth = self
            .proxy
            .intercept(request.uri())
            .and_then(|proxy| proxy.basic_auth().cloned());
        if let Some(auth) = auth {
            request
                .headers_mut()
                .insert(http::header::PROXY_AUTHORIZATION, auth);
        }
    }
}

/// A response body read frame by frame, each read bounded by the read timeout.
struct HyperBody {
    body: hyper::body::Incoming,
    read_timeout: Duration,
}

#[async_trait::async_trait]
impl AsyncBody for HyperBody {
    async fn next_chunk(&mut self) -> Option<Result<Bytes, TransportError>> {
        loop {
            let frame = match with_timeout(self.read_timeout, self.body.frame()).await {
                Some(frame) => frame?,
                None => {
                    return Some(Err(TransportError::new(
                        TransportErrorKind::Timeout,
                        format!("no body data within {:?}", self.read_timeout),
                    )))
                }
            };
            match frame {
                // Trailers carry nothing the SDK reads; skip them.
                Ok(frame) => match frame.into_data() {
                    Ok(data) if data.is_empty() => continue,
                    Ok(data) => return Some(Ok(data)),
                    Err(_trailers) => continue,
                },
                Err(e) => return Some(Err(classify(&e, false))),
            }
        }
    }
}

fn classify_client_error(error: &hyper_util::client::legacy::Error) -> TransportError {
    classify(error, error.is_connect())
}

/// Maps an error of the HTTP stack to the core's transport error kinds by looking at its
/// causes. `connecting` says the error happened while establishing the connection.
fn classify(error: &(dyn std::error::Error + 'static), connecting: bool) -> TransportError {
    use std::io::ErrorKind as Io;
    let message = error_message(error);
    let io = error_chain(error).find_map(|e| e.downcast_ref::<std::io::Error>());
    let hyper = error_chain(error).find_map(|e| e.downcast_ref::<hyper::Error>());
    let kind = if error_chain(error).any(|e| e.is::<futures_rustls::rustls::Error>()) {
        TransportErrorKind::Tls
    } else if connecting {
        // A connect timeout is a connect failure: nothing was sent.
        TransportErrorKind::Connect
    } else if let Some(io) = io {
        match io.kind() {
            Io::TimedOut => TransportErrorKind::Timeout,
            Io::InvalidData => TransportErrorKind::Protocol,
            _ => TransportErrorKind::Io,
        }
    } else if let Some(hyper) = hyper {
        if hyper.is_timeout() {
            TransportErrorKind::Timeout
        } else if hyper.is_parse() || hyper.is_parse_status() {
            TransportErrorKind::Protocol
        } else {
            // Incomplete message, closed or cancelled connection, body write failure.
            TransportErrorKind::Io
        }
    } else {
        TransportErrorKind::Other
    };
    TransportError::new(kind, message)
}

/// The error and its causes, looking inside `io::Error` wrappers (whose `source()` skips the
/// wrapped error itself, which is where rustls puts its `rustls::Error`).
fn error_chain<'a>(
    error: &'a (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    let mut next = Some(error);
    std::iter::from_fn(move || {
        let current = next?;
        next = match current.downcast_ref::<std::io::Error>() {
            Some(io) => io.get_ref().map(|inner| inner as _),
            None => current.source(),
        };
        Some(current)
    })
}

/// The error and its causes in one line.
fn error_message(error: &(dyn std::error::Error + 'static)) -> String {
    let mut message = String::new();
    for cause in error_chain(error) {
        let text = cause.to_string();
        if !message.contains(&text) {
            if !message.is_empty() {
                message.push_str(": ");
            }
            message.push_str(&text);
        }
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;
    use tinker_testkit::scripted_http::{Reply, ScriptedHttpServer};

    fn get(url: &str) -> http::Request<Bytes> {
        http::Request::get(url).body(Bytes::new()).unwrap()
    }

    fn through_proxy(proxy: &ScriptedHttpServer) -> HyperTransport {
        let matcher = Matcher::builder().all(proxy.url("")).build();
        HyperTransport::with_tls_and_proxy(default_tls_config(), matcher)
    }

    #[test]
    fn a_plain_http_request_through_a_proxy_goes_in_absolute_form() {
        let proxy = ScriptedHttpServer::start([Reply::new(200).body("via proxy")]);
        let transport = through_proxy(&proxy);

        let response = smol::block_on(transport.send(
            get("http://tinker.invalid/api/v1/healthz"),
            Timeouts::default(),
        ))
        .unwrap();

        assert_eq!(response.head.status, 200);
        assert_eq!(
            proxy.requests()[0].target,
            "http://tinker.invalid/api/v1/healthz"
        );
    }

    #[test]
    fn an_https_request_through_a_proxy_asks_for_a_tunnel() {
        // The scripted proxy grants the tunnel, then cannot speak TLS: the handshake fails,
        // which shows the ClientHello went through the tunnel.
        let proxy = ScriptedHttpServer::start([Reply::new(200)]);
        let transport = through_proxy(&proxy);

        let error = smol::block_on(transport.send(
            get("https://tinker.invalid/api/v1/healthz"),
            Timeouts::default(),
        ))
        .err()
        .expect("the proxy does not speak TLS");

        assert_eq!(proxy.requests()[0].method, "CONNECT");
        assert_eq!(proxy.requests()[0].target, "tinker.invalid:443");
        assert_eq!(error.kind, TransportErrorKind::Tls, "{error}");
    }
}
