//! Fake transports over a [`Server`], recording every request.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;

use super::{Reply, Server, VirtualClock};
use crate::io::{
    AsyncBody, AsyncHttp, AsyncResponse, BlockingHttp, BlockingResponse, Timeouts, TransportError,
    TransportErrorKind,
};

/// The requests a fake transport saw, one line each:
/// `+<ms since start> <METHOD> <path> key=<idempotency key> retry=<k> <body summary>`.
#[derive(Debug, Clone, Default)]
pub struct Trace {
    lines: Arc<Mutex<Vec<String>>>,
}

impl Trace {
    /// Appends a request.
    pub fn record(&self, start: Instant, now: Instant, request: &http::Request<Bytes>) {
        let line = describe(start, now, request);
        self.lines
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(line);
    }

    /// The lines so far.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// One line of a trace.
pub fn describe(start: Instant, now: Instant, request: &http::Request<Bytes>) -> String {
    let h = |name: &str| {
        request
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .to_owned()
    };
    let body = if h("content-type").contains("json") || request.body().is_empty() {
        String::from_utf8_lossy(request.body()).into_owned()
    } else {
        format!("<{} bytes {}>", request.body().len(), h("content-type"))
    };
    format!(
        "+{}ms {} {} key={} retry={} {}",
        now.saturating_duration_since(start).as_millis(),
        request.method(),
        request.uri().path(),
        h("x-idempotency-key"),
        h("x-stainless-retry-count"),
        body
    )
}

/// A transport that answers from a [`Server`] on virtual time. A reply's `delay` advances the
/// clock before the head is returned (a slow server).
#[derive(Clone)]
pub struct FakeHttp {
    server: Arc<Mutex<dyn Server>>,
    clock: VirtualClock,
    trace: Trace,
}

impl std::fmt::Debug for FakeHttp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeHttp")
            .field("trace", &self.trace)
            .finish()
    }
}

impl FakeHttp {
    /// A transport over `server`.
    pub fn new(server: impl Server + 'static, clock: VirtualClock) -> FakeHttp {
        FakeHttp {
            server: Arc::new(Mutex::new(server)),
            clock,
            trace: Trace::default(),
        }
    }

    /// The recorded requests.
    pub fn trace(&self) -> Vec<String> {
        self.trace.lines()
    }

    fn exchange(&self, request: &http::Request<Bytes>) -> Reply {
        let now = self.clock.now();
        self.trace.record(self.clock.start(), now, request);
        let reply = self
            .server
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .respond(request, now);
        self.clock.advance(reply.delay());
        reply
    }
}

fn head(status: u16, headers: &[(String, String)]) -> http::response::Parts {
    let mut b = http::Response::builder().status(status);
    for (k, v) in headers {
        b = b.header(k.as_str(), v.as_str());
    }
    b.body(())
        .unwrap_or_else(|_| http::Response::new(()))
        .into_parts()
        .0
}

struct ChunkBody {
    chunks: Vec<Result<Bytes, TransportError>>,
}

#[async_trait::async_trait]
impl AsyncBody for ChunkBody {
    async fn next_chunk(&mut self) -> Option<Result<Bytes, TransportError>> {
        if self.chunks.is_empty() {
            None
        } else {
            Some(self.chunks.remove(0))
        }
    }
}

struct ReadBody {
    data: Bytes,
    pos: usize,
    fail_at_end: bool,
}

impl std::io::Read for ReadBody {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.pos >= self.data.len() {
            if self.fail_at_end {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::ConnectionReset,
                    "connection reset mid-body",
                ));
            }
            return Ok(0);
        }
        let n = buf.len().min(self.data.len() - self.pos);
        buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[async_trait::async_trait]
impl AsyncHttp for FakeHttp {
    async fn send(
        &self,
        request: http::Request<Bytes>,
        _timeouts: Timeouts,
    ) -> Result<AsyncResponse, TransportError> {
        match self.exchange(&request) {
            Reply::Fail { kind, .. } => {
                Err(TransportError::new(kind, "simulated transport failure"))
            }
            Reply::Response {
                status,
                headers,
                body,
                ..
            } => {
                // Two chunks, to exercise reassembly.
                let mid = body.len() / 2;
                let chunks = vec![Ok(body.slice(..mid)), Ok(body.slice(mid..))];
                Ok(AsyncResponse {
                    head: head(status, &headers),
                    body: Box::new(ChunkBody { chunks }),
                })
            }
            Reply::ResetMidBody {
                status,
                headers,
                partial,
                ..
            } => Ok(AsyncResponse {
                head: head(status, &headers),
                body: Box::new(ChunkBody {
                    chunks: vec![
                        Ok(partial),
                        Err(TransportError::new(
                            TransportErrorKind::Io,
                            "connection reset mid-body",
                        )),
                    ],
                }),
            }),
        }
    }
}

impl BlockingHttp for FakeHttp {
    fn send(
        &self,
        request: http::Request<Bytes>,
        _timeouts: Timeouts,
    ) -> Result<BlockingResponse, TransportError> {
        match self.exchange(&request) {
            Reply::Fail { kind, .. } => {
                Err(TransportError::new(kind, "simulated transport failure"))
            }
            Reply::Response {
                status,
                headers,
                body,
                ..
            } => Ok(BlockingResponse {
                head: head(status, &headers),
                body: Box::new(ReadBody {
                    data: body,
                    pos: 0,
                    fail_at_end: false,
                }),
            }),
            Reply::ResetMidBody {
                status,
                headers,
                partial,
                ..
            } => Ok(BlockingResponse {
                head: head(status, &headers),
                body: Box::new(ReadBody {
                    data: partial,
                    pos: 0,
                    fail_at_end: true,
                }),
            }),
        }
    }
}
