//! One failed attempt, normalised for the retry layers above the HTTP client.

use http::HeaderMap;

use super::{is_proxy_rejection, ProxyRejectionCredits, ProxyVerdict};
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
    /// Classifies a response the way a connection pool hands it to layers X and R: `None` for a
    /// 2xx (and the pool earns back a proxy-rejection credit), [`Failure::ProxyRejection`] for an
    /// empty-bodied 400 while the pool has credits, otherwise [`Failure::Status`].
    ///
    /// ```
    /// use tinker_core::retry::{Failure, ProxyRejectionCredits};
    ///
    /// let mut pool = ProxyRejectionCredits::default();
    /// let empty = http::HeaderMap::new();
    /// assert_eq!(Failure::from_response(400, &empty, true, &mut pool), Some(Failure::ProxyRejection));
    /// assert_eq!(Failure::from_response(400, &empty, false, &mut pool), Some(Failure::Status(400)));
    /// assert_eq!(Failure::from_response(200, &empty, false, &mut pool), None);
    /// ```
    pub fn from_response(
        status: u16,
        headers: &HeaderMap,
        body_empty: bool,
        pool: &mut ProxyRejectionCredits,
    ) -> Option<Failure> {
        if (200..300).contains(&status) {
            pool.on_success();
            return None;
        }
        if is_proxy_rejection(status, headers, body_empty)
            && pool.on_rejection() == ProxyVerdict::RetryAsConnectionError
        {
            return Some(Failure::ProxyRejection);
        }
        Some(Failure::Status(status))
    }

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_400s_become_connection_errors_until_the_pool_runs_out_of_credits() {
        let mut pool = ProxyRejectionCredits::default();
        let h = HeaderMap::new();
        let converted = (0..20)
            .filter(|_| {
                Failure::from_response(400, &h, true, &mut pool) == Some(Failure::ProxyRejection)
            })
            .count();
        assert_eq!(converted, 16);
        assert_eq!(
            Failure::from_response(400, &h, true, &mut pool),
            Some(Failure::Status(400))
        );
        assert_eq!(Failure::from_response(204, &h, true, &mut pool), None);
        assert_eq!(
            Failure::from_response(400, &h, true, &mut pool),
            Some(Failure::ProxyRejection)
        );
        assert_eq!(
            Failure::from_response(503, &h, true, &mut pool),
            Some(Failure::Status(503))
        );
    }
}
