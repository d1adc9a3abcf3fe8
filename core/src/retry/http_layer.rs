//! Layer H: the generated HTTP client's retries (protocol.md 8.2).
//!
//! Every attempt of one logical request carries the same idempotency key and
//! `x-stainless-retry-count: k`. Requests that disable this layer (`retrieve_future`,
//! `asample`, the save calls, heartbeats, …) simply use `max_retries = 0`. Failures of the auth
//! provider (credential command, JWT exchange) are never fed here: they are not HTTP outcomes.

use std::time::{Duration, SystemTime};

use http::HeaderMap;

use super::{retry_after, BackoffPolicy, DelaySource, KeyRule, RetryPlan};
use crate::io::TransportErrorKind;

/// The SDK default number of retries (11 attempts in all).
pub const DEFAULT_MAX_RETRIES: u32 = 10;

/// One attempt's outcome as the HTTP client sees it.
#[derive(Debug, Clone, Copy)]
pub enum Attempt<'a> {
    /// A response head arrived.
    Response {
        /// The status code.
        status: u16,
        /// The response headers (`x-should-retry`, `retry-after`, …).
        headers: &'a HeaderMap,
    },
    /// No response: connect, read/write failure or timeout, of any kind.
    Transport(TransportErrorKind),
}

/// Layer H's verdict on one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpDecision {
    /// Send the same request again after the plan's delay (same idempotency key).
    Retry(RetryPlan),
    /// Hand the outcome to the caller: a success, a non-retryable status, or retries used up.
    Surface,
}

/// Whether layer H considers the attempt worth retrying, ignoring the retry count.
///
/// `x-should-retry: true|false` overrides everything; otherwise 408, 409, 429 and ≥ 500 are
/// retried, as is every transport error. Statuses below 400 are not failures.
pub fn should_retry(attempt: Attempt<'_>) -> bool {
    match attempt {
        Attempt::Transport(_) => true,
        Attempt::Response { status, .. } if status < 400 => false,
        Attempt::Response { status, headers } => {
            match headers.get("x-should-retry").map(|v| v.as_bytes()) {
                Some(b"true") => true,
                Some(b"false") => false,
                _ => matches!(status, 408 | 409 | 429) || status >= 500,
            }
        }
    }
}

/// Decides layer H's next step after an attempt.
///
/// `retries_taken` is *k*, the number of retries already made (the value of
/// `x-stainless-retry-count` on the failed attempt); `now_unix` is needed to read an HTTP-date
/// `Retry-After`; `draw` is a PRNG draw in `[0, 1)` for jitter.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use tinker_core::retry::http_layer::{decide, Attempt, HttpDecision};
///
/// let mut headers = http::HeaderMap::new();
/// headers.insert("retry-after", "1.5".parse().unwrap());
/// let d = decide(Attempt::Response { status: 429, headers: &headers }, 0, 10, SystemTime::UNIX_EPOCH, 0.3);
/// let HttpDecision::Retry(plan) = d else { panic!() };
/// assert_eq!(plan.delay, Duration::from_millis(1500));
/// ```
pub fn decide(
    attempt: Attempt<'_>,
    retries_taken: u32,
    max_retries: u32,
    now_unix: SystemTime,
    draw: f64,
) -> HttpDecision {
    if retries_taken >= max_retries || !should_retry(attempt) {
        return HttpDecision::Surface;
    }
    let requested = match attempt {
        Attempt::Response { headers, .. } => retry_after(headers, now_unix),
        Attempt::Transport(_) => None,
    };
    let (delay, source): (Duration, DelaySource) = match requested {
        Some(d) => (d, DelaySource::RetryAfterHeader),
        None => (
            BackoffPolicy::http().delay(retries_taken, draw),
            DelaySource::Backoff,
        ),
    };
    HttpDecision::Retry(RetryPlan {
        delay,
        key: KeyRule::Reuse,
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.insert(*k, v.parse().unwrap());
        }
        m
    }

    fn backoff(ms: u64) -> HttpDecision {
        HttpDecision::Retry(RetryPlan {
            delay: Duration::from_millis(ms),
            key: KeyRule::Reuse,
            source: DelaySource::Backoff,
        })
    }

    /// One row per rule of protocol.md 8.2, at k = 0 with draw 0 (no jitter reduction).
    #[test]
    fn each_rule_of_layer_h() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let none = h(&[]);
        let force = h(&[("x-should-retry", "true")]);
        let forbid = h(&[("x-should-retry", "false")]);
        let after = h(&[("retry-after", "2")]);
        let after_long = h(&[("retry-after", "120")]);
        let resp = |status, headers| Attempt::Response { status, headers };
        let table: Vec<(&str, Attempt<'_>, HttpDecision)> = vec![
            (
                "connect error",
                Attempt::Transport(TransportErrorKind::Connect),
                backoff(500),
            ),
            (
                "read timeout",
                Attempt::Transport(TransportErrorKind::Timeout),
                backoff(500),
            ),
            (
                "protocol error",
                Attempt::Transport(TransportErrorKind::Protocol),
                backoff(500),
            ),
            ("408", resp(408, &none), backoff(500)),
            ("409", resp(409, &none), backoff(500)),
            ("429", resp(429, &none), backoff(500)),
            ("500", resp(500, &none), backoff(500)),
            ("599", resp(599, &none), backoff(500)),
            ("400", resp(400, &none), HttpDecision::Surface),
            ("401", resp(401, &none), HttpDecision::Surface),
            ("404", resp(404, &none), HttpDecision::Surface),
            ("410", resp(410, &none), HttpDecision::Surface),
            (
                "x-should-retry true on 400",
                resp(400, &force),
                backoff(500),
            ),
            (
                "x-should-retry false on 503",
                resp(503, &forbid),
                HttpDecision::Surface,
            ),
            (
                "200 is not a failure",
                resp(200, &force),
                HttpDecision::Surface,
            ),
            (
                "retry-after in range",
                resp(429, &after),
                HttpDecision::Retry(RetryPlan {
                    delay: Duration::from_secs(2),
                    key: KeyRule::Reuse,
                    source: DelaySource::RetryAfterHeader,
                }),
            ),
            ("retry-after too long", resp(429, &after_long), backoff(500)),
        ];
        for (name, attempt, expected) in table {
            assert_eq!(
                decide(attempt, 0, DEFAULT_MAX_RETRIES, now, 0.0),
                expected,
                "{name}"
            );
        }
    }

    #[test]
    fn retries_stop_after_max_retries_and_the_delay_grows_with_k() {
        let none = h(&[]);
        let a = Attempt::Response {
            status: 500,
            headers: &none,
        };
        let t = SystemTime::UNIX_EPOCH;
        let delays: Vec<HttpDecision> = (0..5).map(|k| decide(a, k, 10, t, 0.0)).collect();
        assert_eq!(
            delays,
            [
                backoff(500),
                backoff(1000),
                backoff(2000),
                backoff(4000),
                backoff(8000)
            ]
        );
        assert_eq!(decide(a, 9, 10, t, 0.0), backoff(10_000));
        assert_eq!(decide(a, 10, 10, t, 0.0), HttpDecision::Surface);
        assert_eq!(
            decide(a, 0, 0, t, 0.0),
            HttpDecision::Surface,
            "layer disabled"
        );
        // Jitter only ever shortens the wait, by at most 25 %.
        assert_eq!(decide(a, 1, 10, t, 0.5), backoff(875));
    }
}
