//! The Cloudflare rule: an empty-bodied 400 is a dropped connection, not a validation error
//! (protocol.md 8.7).

use http::HeaderMap;

/// Whether a response is the empty-bodied 400 a proxy sends when it rejects a connection.
///
/// The SDK checks `Content-Length` is `"0"` or absent. With no `Content-Length` we also require
/// the body to be empty: a chunked 400 carrying an error text is a genuine validation failure
/// (deliberate, documented divergence; the SDK would retry it).
pub fn is_proxy_rejection(status: u16, headers: &HeaderMap, body_empty: bool) -> bool {
    if status != 400 {
        return false;
    }
    match headers.get(http::header::CONTENT_LENGTH) {
        Some(v) => v.as_bytes().trim_ascii() == b"0",
        None => body_empty,
    }
}

/// What the pool does with an empty-bodied 400.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyVerdict {
    /// Drop the connection and report a connection error ([`super::Failure::ProxyRejection`]),
    /// which layers X and R and the poll loop retry.
    RetryAsConnectionError,
    /// Out of credits: surface the 400 unchanged.
    Surface,
}

/// Credits of one connection pool: 16 at start, −1 per rejection converted, +1 per successful
/// request, at most 16. They stop a server that really answers every request with an empty 400
/// from being retried forever.
///
/// ```
/// use tinker_core::retry::{ProxyRejectionCredits, ProxyVerdict};
///
/// let mut pool = ProxyRejectionCredits::default();
/// for _ in 0..16 {
///     assert_eq!(pool.on_rejection(), ProxyVerdict::RetryAsConnectionError);
/// }
/// assert_eq!(pool.on_rejection(), ProxyVerdict::Surface);
/// pool.on_success();
/// assert_eq!(pool.on_rejection(), ProxyVerdict::RetryAsConnectionError);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyRejectionCredits {
    credits: u32,
}

impl Default for ProxyRejectionCredits {
    fn default() -> ProxyRejectionCredits {
        ProxyRejectionCredits { credits: Self::MAX }
    }
}

impl ProxyRejectionCredits {
    /// Initial and maximum credits.
    pub const MAX: u32 = 16;

    /// Feeds one empty-bodied 400.
    pub fn on_rejection(&mut self) -> ProxyVerdict {
        if self.credits == 0 {
            ProxyVerdict::Surface
        } else {
            self.credits -= 1;
            ProxyVerdict::RetryAsConnectionError
        }
    }

    /// Feeds one successful request through this pool.
    pub fn on_success(&mut self) {
        self.credits = (self.credits + 1).min(Self::MAX);
    }

    /// Credits left.
    pub fn credits(&self) -> u32 {
        self.credits
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_400_without_a_body_counts_as_a_proxy_rejection() {
        let mut zero = HeaderMap::new();
        zero.insert(http::header::CONTENT_LENGTH, "0".parse().unwrap());
        let mut twelve = HeaderMap::new();
        twelve.insert(http::header::CONTENT_LENGTH, "12".parse().unwrap());
        let none = HeaderMap::new();
        assert!(is_proxy_rejection(400, &zero, true));
        assert!(is_proxy_rejection(400, &none, true));
        assert!(!is_proxy_rejection(400, &none, false));
        assert!(!is_proxy_rejection(400, &twelve, false));
        assert!(!is_proxy_rejection(500, &zero, true));
        assert!(!is_proxy_rejection(404, &none, true));
    }

    #[test]
    fn credits_are_spent_refilled_and_capped() {
        let mut pool = ProxyRejectionCredits::default();
        pool.on_success();
        assert_eq!(pool.credits(), 16);
        pool.on_rejection();
        pool.on_rejection();
        assert_eq!(pool.credits(), 14);
        pool.on_success();
        assert_eq!(pool.credits(), 15);
    }
}
