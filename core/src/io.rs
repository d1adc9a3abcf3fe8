//! The narrow I/O surface a runtime adapter implements.
//!
//! The core never touches a socket or a clock. The two drive loops (async and blocking) talk to the
//! outside world only through these traits, so the tokio, async-std and blocking crates differ only
//! in how they implement them: which HTTP stack sends an `http::Request<Bytes>`, how a task sleeps,
//! how the clock is read and how background work is spawned.
//!
//! The traits are object safe (`Arc<dyn AsyncHttp>`), so clients need no generic parameter and a
//! test can swap in a scripted transport.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use bytes::Bytes;

/// Why a request produced no (complete) response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TransportErrorKind {
    /// The connection could not be established (DNS, refused, unreachable, connect timeout).
    Connect,
    /// A read or write did not make progress within the per-read timeout.
    Timeout,
    /// TLS handshake or certificate failure.
    Tls,
    /// The connection broke mid-request or mid-body (reset, unexpected EOF).
    Io,
    /// The peer violated HTTP (malformed head, bad chunked encoding, ...).
    Protocol,
    /// Anything the HTTP stack could not classify.
    Other,
}

/// A transport failure, as reported by an adapter's HTTP stack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransportError {
    /// The class of failure; retry decisions use only this.
    pub kind: TransportErrorKind,
    /// The stack's own description, for error messages and logs. Never contains credentials.
    pub message: String,
}

impl TransportError {
    /// Builds a transport error.
    pub fn new(kind: TransportErrorKind, message: impl Into<String>) -> TransportError {
        TransportError {
            kind,
            message: message.into(),
        }
    }
}

impl fmt::Display for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.kind, self.message)
    }
}

impl std::error::Error for TransportError {}

/// Per-request timeouts. There is deliberately no total timeout: long polls and streams are bounded
/// by the per-read timeout plus the core's own deadlines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Bound on establishing a connection (the SDK uses 5 s).
    pub connect: Duration,
    /// Bound on each read or write making progress (the SDK uses 60 s, 45 s for polls).
    pub read: Duration,
}

impl Default for Timeouts {
    fn default() -> Timeouts {
        Timeouts {
            connect: Duration::from_secs(5),
            read: Duration::from_secs(60),
        }
    }
}

/// A boxed future, as returned by the object-safe async traits.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A response body being received, one chunk at a time.
#[async_trait::async_trait]
pub trait AsyncBody: Send {
    /// The next chunk, `None` at the end of the body.
    async fn next_chunk(&mut self) -> Option<Result<Bytes, TransportError>>;
}

/// A body already in memory (a reply a transport synthesizes): all of it in one chunk.
#[async_trait::async_trait]
impl AsyncBody for Bytes {
    async fn next_chunk(&mut self) -> Option<Result<Bytes, TransportError>> {
        if self.is_empty() {
            None
        } else {
            Some(Ok(std::mem::take(self)))
        }
    }
}

/// A response head plus its body stream.
pub struct AsyncResponse {
    /// Status, headers and version.
    pub head: http::response::Parts,
    /// The body, streamed.
    pub body: Box<dyn AsyncBody>,
}

/// An HTTP client driven by an async runtime.
#[async_trait::async_trait]
pub trait AsyncHttp: Send + Sync + 'static {
    /// Sends one request and returns once the response head has arrived.
    async fn send(
        &self,
        request: http::Request<Bytes>,
        timeouts: Timeouts,
    ) -> Result<AsyncResponse, TransportError>;
}

/// Timers, the clock and task spawning of an async runtime.
pub trait AsyncRuntime: Send + Sync + 'static {
    /// The current instant.
    fn now(&self) -> Instant;
    /// A future that completes at `deadline` (at once if it has passed).
    fn sleep_until(&self, deadline: Instant) -> BoxFuture<'static, ()>;
    /// Runs background work (the housekeeper) until it completes.
    fn spawn(&self, task: BoxFuture<'static, ()>);
}

/// A response head plus a blocking body reader.
pub struct BlockingResponse {
    /// Status, headers and version.
    pub head: http::response::Parts,
    /// The body; read errors are transport errors of kind `Io` or `Timeout`.
    pub body: Box<dyn std::io::Read + Send>,
}

/// An HTTP client used from plain threads.
pub trait BlockingHttp: Send + Sync + 'static {
    /// Sends one request and returns once the response head has arrived.
    fn send(
        &self,
        request: http::Request<Bytes>,
        timeouts: Timeouts,
    ) -> Result<BlockingResponse, TransportError>;
}

/// The clock of a blocking driver (a trait so simulations can substitute a virtual clock).
pub trait BlockingClock: Send + Sync + 'static {
    /// The current instant.
    fn now(&self) -> Instant;
    /// Blocks the calling thread until `deadline`.
    fn sleep_until(&self, deadline: Instant);

    /// How long a thread should block in real time to wait `duration` of this clock's time
    /// while also watching for other threads (a condition variable wait). A real clock returns
    /// `duration`; a virtual clock returns zero and is advanced by [`BlockingClock::sleep_until`].
    fn real_wait(&self, duration: Duration) -> Duration {
        duration
    }
}
