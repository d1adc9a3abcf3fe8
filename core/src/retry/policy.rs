//! Composable retry policies in the style of google-cloud-rust's gax: a classifier of which
//! failures are transient, decorated with attempt and elapsed-time limits.

use std::time::{Duration, Instant};

use super::failure::Failure;

/// What a retry loop should do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LoopState {
    /// The failure is transient and limits allow another attempt.
    Continue,
    /// The failure is not transient: surface it now.
    Permanent,
    /// The failure is transient, but the attempt or time limit is used up.
    Exhausted,
}

/// Which failures a policy treats as transient.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Retryable {
    /// Nothing: the caller retries itself.
    Nothing,
    /// Layer X (protocol.md 8.3): 408, 409, 429, 5xx, transport errors and proxy rejections.
    Holder,
    /// Layer R (8.4): layer X's set plus an expired server future (410 while polling), which is
    /// answered by resubmitting the whole sample.
    Sampling,
}

impl Retryable {
    /// Whether `failure` is transient under this classifier.
    pub fn is_retryable(self, failure: Failure) -> bool {
        let holder = failure.is_transient_status() || failure.is_connection_error();
        match self {
            Retryable::Nothing => false,
            Retryable::Holder => holder,
            Retryable::Sampling => holder || failure == Failure::FutureExpired,
        }
    }
}

/// A retry policy: a classifier plus optional attempt and time limits.
///
/// Policies are values built from a safe preset and narrowed with decorators, so replacing a
/// limit never silently drops the transport-error retries (the octocrab trap in rust-anchors 5.6).
///
/// ```
/// use std::time::{Duration, Instant};
/// use tinker_core::retry::{Failure, LoopState, RetryPolicy};
///
/// let policy = RetryPolicy::holder().with_attempt_limit(3);
/// # #[allow(clippy::disallowed_methods)]
/// let start = Instant::now();
/// assert_eq!(policy.on_error(start, start, 1, Failure::Status(503)), LoopState::Continue);
/// assert_eq!(policy.on_error(start, start, 3, Failure::Status(503)), LoopState::Exhausted);
/// assert_eq!(policy.on_error(start, start, 1, Failure::Status(404)), LoopState::Permanent);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    retryable: Retryable,
    attempt_limit: Option<u32>,
    time_limit: Option<Duration>,
}

impl RetryPolicy {
    /// Never retry.
    pub fn never() -> RetryPolicy {
        RetryPolicy {
            retryable: Retryable::Nothing,
            attempt_limit: None,
            time_limit: None,
        }
    }

    /// Layer X: retry transient failures until 300 s have elapsed since the first attempt.
    pub fn holder() -> RetryPolicy {
        RetryPolicy {
            retryable: Retryable::Holder,
            attempt_limit: None,
            time_limit: Some(super::holder_layer::MAX_ELAPSED),
        }
    }

    /// Layer R: retry transient failures and expired futures with no attempt or time limit (the
    /// progress timeout of [`super::sampling_layer::ProgressWatch`] bounds it instead).
    pub fn sampling() -> RetryPolicy {
        RetryPolicy {
            retryable: Retryable::Sampling,
            attempt_limit: None,
            time_limit: None,
        }
    }

    /// Caps the total number of attempts (the first one included): `with_attempt_limit(1)` never
    /// retries. Combines with an existing limit by keeping the stricter one.
    pub fn with_attempt_limit(mut self, attempts: u32) -> RetryPolicy {
        self.attempt_limit = Some(self.attempt_limit.map_or(attempts, |a| a.min(attempts)));
        self
    }

    /// Caps the time since the first attempt started; keeps the stricter of two limits.
    pub fn with_time_limit(mut self, limit: Duration) -> RetryPolicy {
        self.time_limit = Some(self.time_limit.map_or(limit, |t| t.min(limit)));
        self
    }

    /// The classifier.
    pub fn retryable(&self) -> Retryable {
        self.retryable
    }

    /// The attempt limit, if any.
    pub fn attempt_limit(&self) -> Option<u32> {
        self.attempt_limit
    }

    /// The elapsed-time limit, if any.
    pub fn time_limit(&self) -> Option<Duration> {
        self.time_limit
    }

    /// Decides after attempt number `attempts_made` (1-based) failed with `failure` at `now`.
    pub fn on_error(
        &self,
        loop_start: Instant,
        now: Instant,
        attempts_made: u32,
        failure: Failure,
    ) -> LoopState {
        if !self.retryable.is_retryable(failure) {
            return LoopState::Permanent;
        }
        if self.attempt_limit.is_some_and(|max| attempts_made >= max) {
            return LoopState::Exhausted;
        }
        if self
            .time_limit
            .is_some_and(|limit| now.saturating_duration_since(loop_start) >= limit)
        {
            return LoopState::Exhausted;
        }
        LoopState::Continue
    }

    /// Time left before the time limit (`None` when there is no time limit). A retry's wait is
    /// clipped to this, as layer X clips its last wait to the 300 s deadline.
    pub fn remaining_time(&self, loop_start: Instant, now: Instant) -> Option<Duration> {
        self.time_limit
            .map(|limit| limit.saturating_sub(now.saturating_duration_since(loop_start)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::TransportErrorKind;

    #[test]
    fn classifiers_follow_the_sdk_layers() {
        use Failure::*;
        let table = [
            (Status(408), true, true),
            (Status(409), true, true),
            (Status(429), true, true),
            (Status(500), true, true),
            (Status(503), true, true),
            (Transport(TransportErrorKind::Timeout), true, true),
            (Transport(TransportErrorKind::Connect), true, true),
            (ProxyRejection, true, true),
            (FutureExpired, false, true),
            (Status(400), false, false),
            (Status(401), false, false),
            (Status(402), false, false),
            (Status(404), false, false),
            (Status(410), false, false),
            (Status(422), false, false),
            (RequestFailed, false, false),
            (Permanent, false, false),
        ];
        for (failure, holder, sampling) in table {
            assert_eq!(
                Retryable::Holder.is_retryable(failure),
                holder,
                "{failure:?}"
            );
            assert_eq!(
                Retryable::Sampling.is_retryable(failure),
                sampling,
                "{failure:?}"
            );
            assert!(!Retryable::Nothing.is_retryable(failure));
        }
    }

    #[test]
    fn limits_exhaust_and_combine_by_keeping_the_stricter() {
        #[allow(clippy::disallowed_methods)]
        let t0 = Instant::now();
        let p = RetryPolicy::holder();
        let s = |secs| t0 + Duration::from_secs(secs);
        assert_eq!(
            p.on_error(t0, s(299), 50, Failure::Status(500)),
            LoopState::Continue
        );
        assert_eq!(
            p.on_error(t0, s(300), 50, Failure::Status(500)),
            LoopState::Exhausted
        );
        assert_eq!(p.remaining_time(t0, s(290)), Some(Duration::from_secs(10)));
        assert_eq!(p.remaining_time(t0, s(400)), Some(Duration::ZERO));

        let tighter = p
            .with_time_limit(Duration::from_secs(10))
            .with_time_limit(Duration::from_secs(60));
        assert_eq!(tighter.time_limit(), Some(Duration::from_secs(10)));
        let two = RetryPolicy::sampling()
            .with_attempt_limit(5)
            .with_attempt_limit(2);
        assert_eq!(two.attempt_limit(), Some(2));
        assert_eq!(
            two.on_error(t0, t0, 1, Failure::FutureExpired),
            LoopState::Continue
        );
        assert_eq!(
            two.on_error(t0, t0, 2, Failure::FutureExpired),
            LoopState::Exhausted
        );
        assert_eq!(
            RetryPolicy::never().on_error(t0, t0, 1, Failure::Status(503)),
            LoopState::Permanent
        );
        assert_eq!(RetryPolicy::sampling().remaining_time(t0, s(1)), None);
    }
}
