//! How the `retrieve_future` poll loop reacts to anything but a 2xx (protocol.md 7.5).
//!
//! The loop never sleeps between `try_again` replies; it sleeps only after 429s and connection
//! errors (min(2^n, 30) s, with `n` reset by every other outcome), pauses for billing (402), and
//! gives 400s a budget of three in a row (reset by a 408). A 410 means the server future is gone
//! and only a resubmission can help.
//!
//! One deliberate difference from the official SDK: it re-polls at once after every 5xx, so a
//! 30 s burst of 503s becomes a tight loop (hundreds of polls a second per future, workloads.md
//! B4). Here the first 5xx in a row is still re-polled at once, and each further one waits
//! [`SERVER_ERROR_BACKOFF_INITIAL`] doubled per 5xx up to [`SERVER_ERROR_BACKOFF_MAX`]. Any other
//! outcome ends the run of 5xx, so a single blip costs nothing.

use std::time::{Duration, Instant};

use super::{BackoffPolicy, BillingPause, BillingVerdict, Failure};

/// How many 400s in a row are re-polled before the fourth is fatal.
pub const MAX_BAD_REQUEST_RETRIES: u32 = 3;

/// The wait after the second 5xx in a row; it doubles with each further one.
pub const SERVER_ERROR_BACKOFF_INITIAL: Duration = Duration::from_millis(100);

/// The longest wait between polls during a run of 5xx replies.
pub const SERVER_ERROR_BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Why polling ended in an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PollFatal {
    /// A fourth 400 without a 408 in between.
    BadRequest,
    /// A 402 after the billing pause window ran out.
    Billing,
    /// Another status (401, 403, 404, 409, 422, …): "Error retrieving result".
    Status(u16),
    /// A failure the poll loop has no rule for (undecodable reply, …).
    Other,
}

/// What the poll loop does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PollAction {
    /// A 408: parse its body for `queue_state` / `queue_state_reason` as for a `try_again`, then
    /// poll again at once.
    TryAgain,
    /// Poll again at once (the first 5xx of a run, a 400 within its budget).
    PollNow,
    /// Wait, then poll again (429, connection errors, proxy rejections, repeated 5xx).
    PollAfter(Duration),
    /// A 402 inside the billing window: wait `sleep`, then poll; log the warning if `log_now`.
    BillingPause {
        /// How long to wait.
        sleep: Duration,
        /// Whether to log "The job is paused due to billing status" now.
        log_now: bool,
    },
    /// A 410: the server future expired. Layer R resubmits the whole sample; other callers
    /// surface it as [`crate::ErrorKind::Gone`].
    Expired,
    /// Stop polling with an error.
    Fatal(PollFatal),
}

/// The error counters of one future's poll loop.
///
/// ```
/// use std::time::{Duration, Instant};
/// use tinker_core::retry::{BillingPause, Failure};
/// use tinker_core::retry::poll::{PollAction, PollErrors};
///
/// # #[allow(clippy::disallowed_methods)]
/// let now = Instant::now();
/// let mut billing = BillingPause::default();
/// let mut poll = PollErrors::default();
/// assert_eq!(poll.on_failure(Failure::Status(429), now, &mut billing), PollAction::PollAfter(Duration::from_secs(1)));
/// assert_eq!(poll.on_failure(Failure::Status(429), now, &mut billing), PollAction::PollAfter(Duration::from_secs(2)));
/// assert_eq!(poll.on_failure(Failure::Status(503), now, &mut billing), PollAction::PollNow);
/// assert_eq!(poll.on_failure(Failure::Status(503), now, &mut billing), PollAction::PollAfter(Duration::from_millis(100)));
/// assert_eq!(poll.on_failure(Failure::Status(429), now, &mut billing), PollAction::PollAfter(Duration::from_secs(1)));
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PollErrors {
    connection_retries: u32,
    bad_request_retries: u32,
    server_errors_in_a_row: u32,
}

impl PollErrors {
    /// A complete 2xx reply of any kind (try_again, metadata, failed, result) arrived.
    pub fn on_complete(&mut self) {
        self.connection_retries = 0;
        self.server_errors_in_a_row = 0;
    }

    /// Decides after a poll failed with `failure` at `now`.
    pub fn on_failure(
        &mut self,
        failure: Failure,
        now: Instant,
        billing: &mut BillingPause,
    ) -> PollAction {
        if let Failure::Status(500..=599) = failure {
            // A 5xx is a reply, so the connection back-off restarts; the 5xx run has its own.
            self.connection_retries = 0;
            self.server_errors_in_a_row += 1;
            return match self.server_errors_in_a_row {
                1 => PollAction::PollNow,
                n => PollAction::PollAfter(BackoffPolicy::poll_server_error().nominal(n - 2)),
            };
        }
        self.server_errors_in_a_row = 0;
        if failure.is_connection_error() || failure == Failure::Status(429) {
            let wait = BackoffPolicy::poll_connection().delay(self.connection_retries, 0.0);
            self.connection_retries += 1;
            return PollAction::PollAfter(wait);
        }
        // Every outcome that is not a back-off resets the back-off exponent.
        self.connection_retries = 0;
        match failure {
            Failure::Status(408) => {
                self.bad_request_retries = 0;
                PollAction::TryAgain
            }
            Failure::Status(400) => {
                if self.bad_request_retries < MAX_BAD_REQUEST_RETRIES {
                    self.bad_request_retries += 1;
                    PollAction::PollNow
                } else {
                    PollAction::Fatal(PollFatal::BadRequest)
                }
            }
            Failure::Status(402) => match billing.on_402(now) {
                BillingVerdict::Pause { sleep, log_now } => {
                    PollAction::BillingPause { sleep, log_now }
                }
                BillingVerdict::GiveUp => PollAction::Fatal(PollFatal::Billing),
            },
            Failure::Status(410) | Failure::FutureExpired => PollAction::Expired,
            Failure::Status(other) => PollAction::Fatal(PollFatal::Status(other)),
            _ => PollAction::Fatal(PollFatal::Other),
        }
    }

    /// How many 5xx replies came in a row, ended by any other outcome.
    pub fn server_errors_in_a_row(&self) -> u32 {
        self.server_errors_in_a_row
    }

    /// The current connection back-off exponent *n* (telemetry `connection_error_retries`).
    pub fn connection_retries(&self) -> u32 {
        self.connection_retries
    }

    /// 400s re-polled since the last 408 (telemetry `bad_request_retries`).
    pub fn bad_request_retries(&self) -> u32 {
        self.bad_request_retries
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::TransportErrorKind;

    fn fresh(failure: Failure) -> PollAction {
        #[allow(clippy::disallowed_methods)]
        let now = Instant::now();
        PollErrors::default().on_failure(failure, now, &mut BillingPause::default())
    }

    /// One row per line of the table in protocol.md 7.5, from a fresh loop.
    #[test]
    fn each_rule_of_the_poll_loop() {
        let secs = |s| PollAction::PollAfter(Duration::from_secs(s));
        let table = [
            (Failure::Status(408), PollAction::TryAgain),
            (Failure::Status(500), PollAction::PollNow),
            (Failure::Status(503), PollAction::PollNow),
            (Failure::Status(429), secs(1)),
            (Failure::Transport(TransportErrorKind::Timeout), secs(1)),
            (Failure::Transport(TransportErrorKind::Connect), secs(1)),
            (Failure::ProxyRejection, secs(1)),
            (Failure::Status(400), PollAction::PollNow),
            (
                Failure::Status(402),
                PollAction::BillingPause {
                    sleep: Duration::from_secs(5),
                    log_now: true,
                },
            ),
            (Failure::Status(410), PollAction::Expired),
            (
                Failure::Status(401),
                PollAction::Fatal(PollFatal::Status(401)),
            ),
            (
                Failure::Status(403),
                PollAction::Fatal(PollFatal::Status(403)),
            ),
            (
                Failure::Status(404),
                PollAction::Fatal(PollFatal::Status(404)),
            ),
            (
                Failure::Status(409),
                PollAction::Fatal(PollFatal::Status(409)),
            ),
            (
                Failure::Status(422),
                PollAction::Fatal(PollFatal::Status(422)),
            ),
            (Failure::RequestFailed, PollAction::Fatal(PollFatal::Other)),
        ];
        for (failure, expected) in table {
            assert_eq!(fresh(failure), expected, "{failure:?}");
        }
    }

    #[test]
    fn connection_back_off_doubles_to_thirty_and_resets_on_any_other_outcome() {
        #[allow(clippy::disallowed_methods)]
        let now = Instant::now();
        let mut billing = BillingPause::default();
        let mut p = PollErrors::default();
        let io = Failure::Transport(TransportErrorKind::Io);
        let waits: Vec<PollAction> = (0..7)
            .map(|_| p.on_failure(io, now, &mut billing))
            .collect();
        let secs = |s| PollAction::PollAfter(Duration::from_secs(s));
        assert_eq!(
            waits,
            [
                secs(1),
                secs(2),
                secs(4),
                secs(8),
                secs(16),
                secs(30),
                secs(30)
            ]
        );
        assert_eq!(p.connection_retries(), 7);
        p.on_complete();
        assert_eq!(
            p.on_failure(Failure::Status(429), now, &mut billing),
            secs(1)
        );
        assert_eq!(
            p.on_failure(Failure::Status(408), now, &mut billing),
            PollAction::TryAgain
        );
        assert_eq!(
            p.on_failure(Failure::Status(429), now, &mut billing),
            secs(1)
        );
    }

    /// A 30 s burst of 503s on one future: the official SDK re-polls at once every time (a tight
    /// loop); here the run of 5xx backs off, so the whole burst costs a handful of polls.
    #[test]
    fn a_burst_of_5xx_backs_off_and_one_reply_ends_it() {
        #[allow(clippy::disallowed_methods)]
        let start = Instant::now();
        let mut billing = BillingPause::default();
        let mut p = PollErrors::default();
        let ms = |m| PollAction::PollAfter(Duration::from_millis(m));
        let first: Vec<PollAction> = (0..9)
            .map(|_| p.on_failure(Failure::Status(503), start, &mut billing))
            .collect();
        assert_eq!(
            first,
            [
                PollAction::PollNow,
                ms(100),
                ms(200),
                ms(400),
                ms(800),
                ms(1600),
                ms(3200),
                ms(5000),
                ms(5000)
            ]
        );
        // Count the polls a 30 s burst costs when each wait is honoured.
        let mut p = PollErrors::default();
        let (mut elapsed, mut polls) = (Duration::ZERO, 0);
        while elapsed < Duration::from_secs(30) {
            polls += 1;
            match p.on_failure(Failure::Status(503), start + elapsed, &mut billing) {
                PollAction::PollNow => {}
                PollAction::PollAfter(wait) => elapsed += wait,
                other => panic!("unexpected {other:?}"),
            }
        }
        assert!(polls <= 16, "{polls} polls in a 30 s burst");
        // A try_again (complete reply) or any non-5xx failure ends the run.
        p.on_complete();
        assert_eq!(
            p.on_failure(Failure::Status(500), start, &mut billing),
            PollAction::PollNow
        );
        assert_eq!(
            p.on_failure(Failure::Status(408), start, &mut billing),
            PollAction::TryAgain
        );
        assert_eq!(
            p.on_failure(Failure::Status(502), start, &mut billing),
            PollAction::PollNow
        );
        assert_eq!(p.server_errors_in_a_row(), 1);
    }

    #[test]
    fn the_fourth_400_in_a_row_is_fatal_unless_a_408_came_between() {
        #[allow(clippy::disallowed_methods)]
        let now = Instant::now();
        let mut billing = BillingPause::default();
        let mut p = PollErrors::default();
        let bad = Failure::Status(400);
        for _ in 0..3 {
            assert_eq!(p.on_failure(bad, now, &mut billing), PollAction::PollNow);
        }
        assert_eq!(p.bad_request_retries(), 3);
        assert_eq!(
            p.on_failure(Failure::Status(408), now, &mut billing),
            PollAction::TryAgain
        );
        for _ in 0..3 {
            assert_eq!(p.on_failure(bad, now, &mut billing), PollAction::PollNow);
        }
        // 5xx and 2xx replies do not reset the 400 budget; only a 408 does.
        assert_eq!(
            p.on_failure(Failure::Status(502), now, &mut billing),
            PollAction::PollNow
        );
        p.on_complete();
        assert_eq!(
            p.on_failure(bad, now, &mut billing),
            PollAction::Fatal(PollFatal::BadRequest)
        );
    }

    #[test]
    fn a_402_beyond_the_billing_window_is_fatal() {
        #[allow(clippy::disallowed_methods)]
        let t0 = Instant::now();
        let mut billing = BillingPause::new(Duration::from_secs(10));
        let mut p = PollErrors::default();
        assert!(matches!(
            p.on_failure(Failure::Status(402), t0, &mut billing),
            PollAction::BillingPause { .. }
        ));
        assert_eq!(
            p.on_failure(
                Failure::Status(402),
                t0 + Duration::from_secs(11),
                &mut billing
            ),
            PollAction::Fatal(PollFatal::Billing)
        );
    }
}
