//! One failed attempt, normalised for the retry layers above the HTTP client.

use crate::io::TransportErrorKind;

/// What went wrong with one attempt, as seen by layers X, R and the `retrieve_future` loop.
///
/// Layer H works on the raw response (it needs the headers); the connection pool then turns an
/// empty-bodied 400 into [`Failure::ProxyRejection`] while it has credits (8.7), and the poll loop
/// turns a 410 into [`Failure::FutureExpired`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Failure {
    /// A non-success HTTP status that reached the caller.
    Status(u16),
    /// No (complete) response: connect, read/write failure, per-read timeout.
    Transport(TransportErrorKind),
    /// An empty-bodied 400 the pool converted into a connection error (protocol.md 8.7).
    ProxyRejection,
    /// `retrieve_future` answered 410: the server future is gone and the whole request must be
    /// resubmitted (only the sampling layer does that; protocol.md 7.5).
    FutureExpired,
    /// The server future completed with `{"error": …}`: terminal at every layer.
    RequestFailed,
    /// Anything else (undecodable reply, invalid input, auth-provider failure): never retried.
    Permanent,
}

impl Failure {
    /// Whether the SDK reports this as a connection error (`APIConnectionError`).
    pub fn is_connection_error(self) -> bool {
        matches!(self, Failure::Transport(_) | Failure::ProxyRejection)
    }

    /// Whether this is one of the statuses every SDK layer treats as transient: 408, 409, 429, 5xx.
    pub fn is_transient_status(self) -> bool {
        matches!(self, Failure::Status(s) if is_transient_status(s))
    }
}

/// 408, 409, 429 and 5xx: the statuses layers H, X and R all retry.
pub(crate) fn is_transient_status(status: u16) -> bool {
    matches!(status, 408 | 409 | 429 | 500..=599)
}
