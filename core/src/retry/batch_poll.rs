//! How the `retrieve_futures` session poller reacts to anything but a 2xx (protocol.md 7.7).
//!
//! The poller has no HTTP-layer retries and its own small rule set, simpler than the
//! `retrieve_future` loop's: a 402 pauses for billing, transient failures wait one second, a 400
//! gets three one-second retries, and anything else stops the poller for good (every waiting
//! sample then fails).

use std::time::{Duration, Instant};

use super::{BillingPause, BillingVerdict, Failure};

/// Sleep after a transient failure or a 400 within its budget (7.7).
pub const BATCH_POLL_RETRY_SLEEP: Duration = Duration::from_secs(1);

/// How many 400s in a row the poller retries before the next one is fatal.
pub const MAX_BATCH_BAD_REQUESTS: u32 = 3;

/// What the poller does after a failed poll.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchPollAction {
    /// Wait, then poll again (transient failure, a 400 within its budget).
    RetryAfter(Duration),
    /// A 402 inside the billing window: wait `sleep`; log the warning if `log_now`.
    BillingPause {
        /// How long to wait.
        sleep: Duration,
        /// Whether to log "The job is paused due to billing status" now.
        log_now: bool,
    },
    /// The poller stops for good; every waiter fails.
    Fatal,
}

/// The error counter of one session poller.
///
/// ```
/// use std::time::{Duration, Instant};
/// use tinker_core::retry::{BillingPause, Failure};
/// use tinker_core::retry::batch_poll::{BatchPollAction, BatchPollErrors};
///
/// # #[allow(clippy::disallowed_methods)]
/// let now = Instant::now();
/// let mut billing = BillingPause::default();
/// let mut errors = BatchPollErrors::default();
/// let one_second = BatchPollAction::RetryAfter(Duration::from_secs(1));
/// assert_eq!(errors.on_failure(Failure::Status(503), now, &mut billing), one_second);
/// for _ in 0..3 {
///     assert_eq!(errors.on_failure(Failure::Status(400), now, &mut billing), one_second);
/// }
/// assert_eq!(errors.on_failure(Failure::Status(400), now, &mut billing), BatchPollAction::Fatal);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchPollErrors {
    bad_requests: u32,
}

impl BatchPollErrors {
    /// A poll succeeded: the 400 budget is full again.
    pub fn on_success(&mut self) {
        self.bad_requests = 0;
    }

    /// Decides after a poll failed with `failure` at `now`.
    pub fn on_failure(
        &mut self,
        failure: Failure,
        now: Instant,
        billing: &mut BillingPause,
    ) -> BatchPollAction {
        match failure {
            Failure::Status(402) => match billing.on_402(now) {
                BillingVerdict::Pause { sleep, log_now } => {
                    BatchPollAction::BillingPause { sleep, log_now }
                }
                BillingVerdict::GiveUp => BatchPollAction::Fatal,
            },
            Failure::Status(400) => {
                if self.bad_requests < MAX_BATCH_BAD_REQUESTS {
                    self.bad_requests += 1;
                    BatchPollAction::RetryAfter(BATCH_POLL_RETRY_SLEEP)
                } else {
                    BatchPollAction::Fatal
                }
            }
            f if f.is_connection_error() || f.is_transient_status() => {
                BatchPollAction::RetryAfter(BATCH_POLL_RETRY_SLEEP)
            }
            _ => BatchPollAction::Fatal,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::TransportErrorKind;

    /// One row per rule of protocol.md 7.7 "Errors".
    #[test]
    fn every_failure_maps_to_the_rule_of_the_spec() {
        let one = BatchPollAction::RetryAfter(Duration::from_secs(1));
        let rows: &[(Failure, BatchPollAction)] = &[
            (Failure::Status(408), one),
            (Failure::Status(409), one),
            (Failure::Status(429), one),
            (Failure::Status(500), one),
            (Failure::Status(503), one),
            (Failure::Transport(TransportErrorKind::Timeout), one),
            (Failure::Transport(TransportErrorKind::Connect), one),
            (Failure::ProxyRejection, one),
            (Failure::Status(400), one),
            (Failure::Status(401), BatchPollAction::Fatal),
            (Failure::Status(403), BatchPollAction::Fatal),
            (Failure::Status(404), BatchPollAction::Fatal),
            (Failure::Status(410), BatchPollAction::Fatal),
            (Failure::Status(422), BatchPollAction::Fatal),
            (Failure::Permanent, BatchPollAction::Fatal),
        ];
        #[allow(clippy::disallowed_methods)]
        let now = Instant::now();
        for (failure, expected) in rows {
            let mut billing = BillingPause::default();
            let got = BatchPollErrors::default().on_failure(*failure, now, &mut billing);
            assert_eq!(got, *expected, "{failure:?}");
        }
    }

    #[test]
    fn a_402_pauses_five_seconds_inside_the_billing_window_and_is_fatal_after_it() {
        #[allow(clippy::disallowed_methods)]
        let t0 = Instant::now();
        let mut billing = BillingPause::new(Duration::from_secs(60));
        let mut errors = BatchPollErrors::default();
        assert_eq!(
            errors.on_failure(Failure::Status(402), t0, &mut billing),
            BatchPollAction::BillingPause {
                sleep: Duration::from_secs(5),
                log_now: true
            }
        );
        let later = t0 + Duration::from_secs(61);
        assert_eq!(
            errors.on_failure(Failure::Status(402), later, &mut billing),
            BatchPollAction::Fatal
        );
    }

    #[test]
    fn a_success_refills_the_400_budget() {
        #[allow(clippy::disallowed_methods)]
        let now = Instant::now();
        let mut billing = BillingPause::default();
        let mut errors = BatchPollErrors::default();
        for _ in 0..3 {
            errors.on_failure(Failure::Status(400), now, &mut billing);
        }
        errors.on_success();
        assert_eq!(
            errors.on_failure(Failure::Status(400), now, &mut billing),
            BatchPollAction::RetryAfter(Duration::from_secs(1))
        );
    }
}
