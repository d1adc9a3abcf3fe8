//! The tokio HTTP transport: [`AsyncHttp`] on reqwest.
//!
//! reqwest brings what the SDK needs from an HTTP stack: a pooled keep-alive client (HTTP/1.1 and
//! HTTP/2 over ALPN), `HTTP(S)_PROXY`/`ALL_PROXY` with `NO_PROXY` from the environment, and
//! response decompression. Everything else is decided by the core, so reqwest's own retries are
//! switched off (the core is the only one counting attempts), and so is its redirect policy.
//!
//! Configuration choices, and why:
//! - **TLS**: rustls with the *ring* provider passed to the client (never installed process-wide,
//!   so an application that installs aws-lc-rs, or two providers in the graph, cannot make us
//!   panic), and the Mozilla roots of `webpki-roots` compiled in: the same trust on every OS and in
//!   minimal containers with no CA bundle, no file or network access at start-up. An application
//!   that needs its corporate CA passes its own `rustls::ClientConfig`
//!   ([`ReqwestTransport::with_tls_config`]).
//! - **Timeouts** are per request, from [`Timeouts`]: the connect timeout bounds establishing a
//!   connection (one pooled client per distinct connect timeout, in practice one); the read
//!   timeout bounds the wait for the response head from the moment the request is sent (as
//!   reqwest's own `read_timeout`) and then each body chunk. There is no total timeout, so long
//!   polls and streams live as long as data keeps coming.
//! - **Compression**: the transport owns `Accept-Encoding`. It sends `gzip, deflate, zstd` (what
//!   the official SDK advertises) and decodes those transparently; a decoded response has no
//!   `Content-Encoding` or `Content-Length` header, so the core always sees plain bytes.
//! - **Redirects** are followed (up to 10), as the official SDK does, by a loop on the core's
//!   [`tinker_core::redirect::after_response`], not by reqwest's policy: that one drops only
//!   `Authorization` on another origin and would forward the `X-API-Key`.
//!   One exception, decided there too: the 0.25 checkpoint-archive endpoint's 302 is read (its
//!   `Location` is the answer), not followed.
//! - **Statuses** are values: 4xx and 5xx come back as responses with their headers and body.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tinker_core::io::{
    AsyncBody, AsyncHttp, AsyncResponse, Timeouts, TransportError, TransportErrorKind,
};
use tinker_core::redirect::{after_response, AfterResponse, MAX_REDIRECTS};

/// The encodings this transport decodes, sent as `Accept-Encoding` on every request.
pub const ACCEPT_ENCODING: &str = "gzip, deflate, zstd";

/// How long an idle pooled connection is kept (servers and load balancers commonly drop idle
/// connections after 60–120 s; closing first avoids writing into a dead socket).
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(55);
/// Idle connections kept per host (httpx's default keep-alive limit).
const POOL_MAX_IDLE_PER_HOST: usize = 20;
/// TCP keep-alive probes, so a silently dead peer is noticed on long polls.
const TCP_KEEPALIVE: Duration = Duration::from_secs(30);

/// An [`AsyncHttp`] transport on reqwest (tokio).
///
/// Cheap to clone; clones share the connection pool.
///
/// ```no_run
/// # async fn demo() -> Result<(), tinker_core::io::TransportError> {
/// use tinker_core::io::{AsyncHttp, Timeouts};
/// use tinker_tokio::ReqwestTransport;
///
/// let transport = ReqwestTransport::new();
/// let request = http::Request::get("https://example.com/api/v1/healthz")
///     .body(bytes::Bytes::new())
///     .unwrap();
/// let mut response = transport.send(request, Timeouts::default()).await?;
/// println!("{}", response.head.status);
/// while let Some(chunk) = response.body.next_chunk().await {
///     let _bytes = chunk?;
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct ReqwestTransport {
    tls: rustls::ClientConfig,
    /// One client per distinct connect timeout: reqwest fixes the connect timeout per client.
    /// The SDK uses a single value (5 s), so this holds one entry.
    clients: Arc<Mutex<Vec<(Duration, reqwest::Client)>>>,
}

impl std::fmt::Debug for ReqwestTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReqwestTransport").finish_non_exhaustive()
    }
}

impl Default for ReqwestTransport {
    fn default() -> ReqwestTransport {
        ReqwestTransport::new()
    }
}

impl ReqwestTransport {
    /// A transport trusting the Mozilla root certificates (`webpki-roots`), with the ring
    /// crypto provider.
    pub fn new() -> ReqwestTransport {
        ReqwestTransport::with_tls_config(default_tls_config())
    }

    /// A transport using this rustls configuration (custom roots, client certificates, another
    /// provider). Its ALPN list is replaced by `h2, http/1.1`.
    pub fn with_tls_config(mut tls: rustls::ClientConfig) -> ReqwestTransport {
        tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        ReqwestTransport {
            tls,
            clients: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// The pooled client for this connect timeout, built on first use.
    fn client(&self, connect_timeout: Duration) -> Result<reqwest::Client, TransportError> {
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, client)) = clients.iter().find(|(t, _)| *t == connect_timeout) {
            return Ok(client.clone());
        }
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(self.tls.clone())
            .connect_timeout(connect_timeout)
            .retry(reqwest::retry::never())
            .redirect(reqwest::redirect::Policy::none())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .pool_max_idle_per_host(POOL_MAX_IDLE_PER_HOST)
            .tcp_keepalive(TCP_KEEPALIVE)
            .build()
            .map_err(|e| TransportError::new(TransportErrorKind::Other, error_message(&e)))?;
        clients.push((connect_timeout, client.clone()));
        Ok(client)
    }
}

/// The default TLS setup: ring provider, Mozilla roots, TLS 1.2 and 1.3.
fn default_tls_config() -> rustls::ClientConfig {
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
impl AsyncHttp for ReqwestTransport {
    async fn send(
        &self,
        request: http::Request<Bytes>,
        timeouts: Timeouts,
    ) -> Result<AsyncResponse, TransportError> {
        let client = self.client(timeouts.connect)?;
        let (mut parts, body) = request.into_parts();
        parts.headers.insert(
            http::header::ACCEPT_ENCODING,
            http::HeaderValue::from_static(ACCEPT_ENCODING),
        );
        let mut request = http::Request::from_parts(parts, body);
        for _hop in 0..=MAX_REDIRECTS {
            let response = send_once(&client, request.clone(), timeouts.read).await?;
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
                    let (head, body) = http::Response::from(response).into_parts();
                    return Ok(AsyncResponse {
                        head,
                        body: Box::new(ReqwestBody {
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

/// Sends one request (no redirect handling), waiting at most `read` for the head.
async fn send_once(
    client: &reqwest::Client,
    request: http::Request<Bytes>,
    read: Duration,
) -> Result<reqwest::Response, TransportError> {
    let request = reqwest::Request::try_from(request)
        .map_err(|e| TransportError::new(TransportErrorKind::Other, error_message(&e)))?;
    match tokio::time::timeout(read, client.execute(request)).await {
        Ok(result) => result.map_err(|e| classify(&e)),
        Err(_) => Err(TransportError::new(
            TransportErrorKind::Timeout,
            format!("no response head within {read:?}"),
        )),
    }
}

/// A response body read frame by frame, each read bounded by the read timeout.
struct ReqwestBody {
    body: reqwest::Body,
    read_timeout: Duration,
}

#[async_trait::async_trait]
impl AsyncBody for ReqwestBody {
    async fn next_chunk(&mut self) -> Option<Result<Bytes, TransportError>> {
        use http_body_util::BodyExt;
        loop {
            let frame = match tokio::time::timeout(self.read_timeout, self.body.frame()).await {
                Ok(frame) => frame?,
                Err(_) => {
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
                Err(e) => return Some(Err(classify(&e))),
            }
        }
    }
}

/// Maps a reqwest error to the core's transport error kinds by looking at what caused it.
fn classify(error: &reqwest::Error) -> TransportError {
    let message = error_message(error);
    let kind = if error_chain(error).any(|e| e.is::<rustls::Error>()) {
        TransportErrorKind::Tls
    } else if error.is_connect() {
        // A connect timeout is a connect failure: nothing was sent.
        TransportErrorKind::Connect
    } else if error.is_timeout() {
        TransportErrorKind::Timeout
    } else if let Some(kind) = error_chain(error).find_map(io_kind) {
        kind
    } else if let Some(h) = error_chain(error).find_map(|e| e.downcast_ref::<hyper::Error>()) {
        if h.is_parse() || h.is_parse_status() {
            TransportErrorKind::Protocol
        } else {
            // Incomplete message, closed or cancelled connection, body write failure.
            TransportErrorKind::Io
        }
    } else if error.is_decode() {
        // A body that does not decode in its declared Content-Encoding.
        TransportErrorKind::Protocol
    } else if error.is_body() || error.is_request() {
        TransportErrorKind::Io
    } else {
        TransportErrorKind::Other
    };
    TransportError::new(kind, message)
}

/// The kind an `io::Error` in the chain implies, if it is telling.
fn io_kind(error: &(dyn std::error::Error + 'static)) -> Option<TransportErrorKind> {
    use std::io::ErrorKind as Io;
    let io = error.downcast_ref::<std::io::Error>()?;
    match io.kind() {
        Io::TimedOut => Some(TransportErrorKind::Timeout),
        Io::ConnectionReset
        | Io::ConnectionAborted
        | Io::BrokenPipe
        | Io::UnexpectedEof
        | Io::NotConnected => Some(TransportErrorKind::Io),
        _ => None,
    }
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

/// The error and its causes in one line. reqwest puts the URL in its message; the URL never
/// holds credentials (the API key travels in a header).
fn error_message(error: &reqwest::Error) -> String {
    let mut message = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    message
}
