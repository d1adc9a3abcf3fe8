//! The blocking HTTP transport: [`BlockingHttp`] on ureq 3.
//!
//! ureq is small, has no async runtime inside and is built on a sans-IO HTTP/1.1 core, which
//! matches this crate: plain threads, no tokio anywhere.
//!
//! Configuration choices, and why:
//! - **Statuses are values** (`http_status_as_error(false)`): ureq's default turns 4xx/5xx into an
//!   error and loses the headers and body (Retry-After, the error JSON) the core needs.
//! - **TLS**: rustls with the *ring* provider passed in the agent's TLS config (never installed
//!   process-wide) and the Mozilla roots of `webpki-roots` compiled in: the same trust on every
//!   OS and in minimal containers, no file or network access at start-up.
//! - **Timeouts** are set per request from [`Timeouts`]: `timeout_connect` (DNS, TCP, TLS and proxy
//!   negotiation) and `timeout_per_read`/`timeout_per_write` for each socket operation, which also
//!   bounds the wait for the response head. No global or per-call timeout, so long polls and
//!   streams live as long as data keeps coming.
//! - **Proxy** from the environment (`ALL_PROXY`, `HTTPS_PROXY`, `HTTP_PROXY`, lower-case forms,
//!   with `NO_PROXY`), read once when the transport is built.
//! - **Pooling**: one agent, idle connections kept per host and reused.
//! - **Redirects** are followed (up to 10), as the official SDK does, by a loop on the core's
//!   [`tinker_core::redirect::next_request`], not by ureq (`max_redirects(0)`): ureq's policy
//!   drops only `Authorization` on another origin and would forward the `X-API-Key`.
//!   One exception, decided by the core's [`tinker_core::redirect::after_response`]: the
//!   0.25 checkpoint-archive endpoint's 302 is read (its `Location` is the answer), not followed.
//! - **Compression**: the transport owns `Accept-Encoding`. It sends `gzip`, the one encoding it
//!   decodes; a decoded response has no `Content-Encoding` or `Content-Length` header.
//! - **Body** is a reader over the socket with no size limit (checkpoints can be large). Its read
//!   errors carry a [`TransportError`] inside the `std::io::Error` (see [`transport_error_of`]).

use std::io::{self, Read};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tinker_core::io::{
    BlockingHttp, BlockingResponse, Timeouts, TransportError, TransportErrorKind,
};
use tinker_core::redirect::{after_response, AfterResponse, MAX_REDIRECTS};
use ureq::tls::{RootCerts, TlsConfig, TlsProvider};

/// The encodings this transport decodes, sent as `Accept-Encoding` on every request.
pub const ACCEPT_ENCODING: &str = "gzip";

/// How long an idle pooled connection is kept (servers and load balancers commonly drop idle
/// connections after 60–120 s; closing first avoids writing into a dead socket).
const POOL_IDLE_AGE: Duration = Duration::from_secs(55);
/// Idle connections kept per host (httpx's default keep-alive limit).
const POOL_MAX_IDLE_PER_HOST: usize = 20;

/// A [`BlockingHttp`] transport on ureq 3.
///
/// Cheap to clone; clones share the connection pool.
///
/// ```no_run
/// use std::io::Read;
/// use tinker_blocking::UreqTransport;
/// use tinker_core::io::{BlockingHttp, Timeouts};
///
/// let transport = UreqTransport::new();
/// let request = http::Request::get("https://example.com/api/v1/healthz")
///     .body(bytes::Bytes::new())
///     .unwrap();
/// let mut response = transport.send(request, Timeouts::default()).unwrap();
/// let mut body = Vec::new();
/// response.body.read_to_end(&mut body).unwrap();
/// println!("{} {}", response.head.status, body.len());
/// ```
#[derive(Clone)]
pub struct UreqTransport {
    agent: ureq::Agent,
}

impl std::fmt::Debug for UreqTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UreqTransport").finish_non_exhaustive()
    }
}

impl Default for UreqTransport {
    fn default() -> UreqTransport {
        UreqTransport::new()
    }
}

impl UreqTransport {
    /// A transport trusting the Mozilla root certificates, with the ring crypto provider and the
    /// proxy configured in the environment.
    pub fn new() -> UreqTransport {
        let tls = TlsConfig::builder()
            .provider(TlsProvider::Rustls)
            .unversioned_rustls_crypto_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .root_certs(RootCerts::WebPki)
            .build();
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .tls_config(tls)
            .proxy(ureq::Proxy::try_from_env())
            .max_idle_connections_per_host(POOL_MAX_IDLE_PER_HOST)
            .max_idle_age(POOL_IDLE_AGE)
            // The 3xx comes back as a response; the send loop follows it.
            .max_redirects(0)
            .max_redirects_will_error(false)
            .build();
        UreqTransport {
            agent: ureq::Agent::new_with_config(config),
        }
    }

    fn run<S: ureq::AsSendBody>(
        &self,
        request: http::Request<S>,
        timeouts: Timeouts,
    ) -> Result<http::Response<ureq::Body>, TransportError> {
        let request = self
            .agent
            .configure_request(request)
            .timeout_connect(Some(timeouts.connect))
            .timeout_per_read(Some(timeouts.read))
            .timeout_per_write(Some(timeouts.read))
            .build();
        self.agent.run(request).map_err(|e| classify(&e))
    }
}

impl BlockingHttp for UreqTransport {
    fn send(
        &self,
        request: http::Request<Bytes>,
        timeouts: Timeouts,
    ) -> Result<BlockingResponse, TransportError> {
        let (mut parts, body) = request.into_parts();
        parts.headers.insert(
            http::header::ACCEPT_ENCODING,
            http::HeaderValue::from_static(ACCEPT_ENCODING),
        );
        let mut request = http::Request::from_parts(parts, body);
        for _hop in 0..=MAX_REDIRECTS {
            let response = self.send_once(&request, timeouts)?;
            let now = std::time::SystemTime::now();
            match after_response(&request, response.status(), response.headers(), now) {
                AfterResponse::Follow(next) => request = next,
                AfterResponse::Reply(reply) => {
                    let (head, body) = reply.into_parts();
                    return Ok(BlockingResponse {
                        head,
                        body: Box::new(io::Cursor::new(body)),
                    });
                }
                AfterResponse::Deliver => {
                    let (head, body) = response.into_parts();
                    return Ok(BlockingResponse {
                        head,
                        body: Box::new(UreqBody {
                            reader: body.into_reader(),
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

impl UreqTransport {
    /// Sends one request (no redirect handling).
    fn send_once(
        &self,
        request: &http::Request<Bytes>,
        timeouts: Timeouts,
    ) -> Result<http::Response<ureq::Body>, TransportError> {
        let (parts, body) = request.clone().into_parts();
        // A GET carries no body and no Content-Length; a POST with an empty body says
        // `Content-Length: 0`.
        let carries_body = !body.is_empty()
            || matches!(
                parts.method,
                http::Method::POST | http::Method::PUT | http::Method::PATCH
            );
        if carries_body {
            self.run(http::Request::from_parts(parts, &body[..]), timeouts)
        } else {
            self.run(
                http::Request::from_parts(parts, ureq::SendBody::none()),
                timeouts,
            )
        }
    }
}

/// The response body, with read errors translated to transport errors.
struct UreqBody {
    reader: ureq::BodyReader<'static>,
}

impl Read for UreqBody {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.reader.read(buf).map_err(|e| {
            let kind = e.kind();
            let error = classify(&ureq::Error::from(e));
            io::Error::new(kind, error)
        })
    }
}

/// The [`TransportError`] a body read error of this transport carries, if it is one.
///
/// ```
/// use tinker_blocking::transport_error_of;
/// let plain = std::io::Error::other("not from the transport");
/// assert!(transport_error_of(&plain).is_none());
/// ```
pub fn transport_error_of(error: &io::Error) -> Option<&TransportError> {
    error.get_ref()?.downcast_ref::<TransportError>()
}

/// Maps a ureq error to the core's transport error kinds.
fn classify(error: &ureq::Error) -> TransportError {
    use ureq::{Error as E, Timeout as T};
    let kind = match error {
        // A connect timeout is a connect failure: nothing was sent.
        E::Timeout(T::Connect | T::Resolve) => TransportErrorKind::Connect,
        E::Timeout(_) => TransportErrorKind::Timeout,
        E::HostNotFound | E::ConnectionFailed | E::ConnectProxyFailed(_) => {
            TransportErrorKind::Connect
        }
        // rustls reports handshake failures through the socket's io::Error.
        E::Io(io) if io.get_ref().is_some_and(|e| e.is::<rustls::Error>()) => {
            TransportErrorKind::Tls
        }
        E::Io(io) => match io.kind() {
            io::ErrorKind::ConnectionRefused | io::ErrorKind::AddrNotAvailable => {
                TransportErrorKind::Connect
            }
            io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => TransportErrorKind::Timeout,
            _ => TransportErrorKind::Io,
        },
        E::Tls(_) | E::Rustls(_) | E::Pem(_) | E::TlsRequired => TransportErrorKind::Tls,
        E::Protocol(_) | E::LargeResponseHeader(..) | E::Decompress(..) => {
            TransportErrorKind::Protocol
        }
        E::TooManyRedirects | E::RedirectFailed => TransportErrorKind::Protocol,
        _ => TransportErrorKind::Other,
    };
    TransportError::new(kind, error.to_string())
}
