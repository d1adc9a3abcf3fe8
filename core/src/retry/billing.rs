//! The holder-wide 402 billing pause (protocol.md 8.8).

use std::time::{Duration, Instant};

/// What to do with a 402.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BillingVerdict {
    /// The job is paused for billing: wait `sleep`, then retry (for `asample`: treat it like a
    /// 429). `log_now` says whether to emit the warning "The job is paused due to billing status"
    /// (at most once per [`BillingPause::LOG_INTERVAL`]). No telemetry for paused 402s.
    Pause {
        /// How long to wait before retrying.
        sleep: Duration,
        /// Whether this is the moment to log the warning.
        log_now: bool,
    },
    /// The incident has lasted longer than the window: surface the 402 as a billing error.
    GiveUp,
}

/// Tracks billing incidents across every call of a client (lives in the shared ledger).
///
/// A 402 starts a new incident when no 402 has been logged for more than 300 s; within an
/// incident, 402s pause the caller for 5 s each until the incident is older than the window
/// (`billing_exception_max_pause_duration_sec`, default 3600 s).
///
/// ```
/// use std::time::{Duration, Instant};
/// use tinker_core::retry::{BillingPause, BillingVerdict};
///
/// let mut billing = BillingPause::default();
/// # #[allow(clippy::disallowed_methods)]
/// let t0 = Instant::now();
/// assert_eq!(billing.on_402(t0), BillingVerdict::Pause { sleep: Duration::from_secs(5), log_now: true });
/// assert_eq!(billing.on_402(t0 + Duration::from_secs(5)), BillingVerdict::Pause { sleep: Duration::from_secs(5), log_now: false });
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BillingPause {
    window: Duration,
    incident_start: Option<Instant>,
    last_logged: Option<Instant>,
}

impl Default for BillingPause {
    fn default() -> BillingPause {
        BillingPause::new(BillingPause::DEFAULT_WINDOW)
    }
}

impl BillingPause {
    /// Default give-up window (client config `billing_exception_max_pause_duration_sec`).
    pub const DEFAULT_WINDOW: Duration = Duration::from_secs(3600);
    /// The wait before retrying a paused request.
    pub const PAUSE: Duration = Duration::from_secs(5);
    /// At most one warning per this interval.
    pub const LOG_INTERVAL: Duration = Duration::from_secs(60);
    /// A 402 after this long without a logged 402 starts a new incident.
    pub const INCIDENT_GAP: Duration = Duration::from_secs(300);

    /// A tracker with the given give-up window.
    pub fn new(window: Duration) -> BillingPause {
        BillingPause {
            window,
            incident_start: None,
            last_logged: None,
        }
    }

    /// Changes the window (e.g. after the client config arrived).
    pub fn set_window(&mut self, window: Duration) {
        self.window = window;
    }

    /// Feeds one 402 received at `now`.
    pub fn on_402(&mut self, now: Instant) -> BillingVerdict {
        let quiet = self
            .last_logged
            .is_none_or(|t| now.saturating_duration_since(t) > Self::INCIDENT_GAP);
        if quiet || self.incident_start.is_none() {
            self.incident_start = Some(now);
        }
        let start = self.incident_start.unwrap_or(now);
        if now.saturating_duration_since(start) > self.window {
            return BillingVerdict::GiveUp;
        }
        let log_now = self
            .last_logged
            .is_none_or(|t| now.saturating_duration_since(t) >= Self::LOG_INTERVAL);
        if log_now {
            self.last_logged = Some(now);
        }
        BillingVerdict::Pause {
            sleep: Self::PAUSE,
            log_now,
        }
    }

    /// When the current incident started, if there is one.
    pub fn incident_start(&self) -> Option<Instant> {
        self.incident_start
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pause(log_now: bool) -> BillingVerdict {
        BillingVerdict::Pause {
            sleep: Duration::from_secs(5),
            log_now,
        }
    }

    #[test]
    fn a_long_incident_logs_once_a_minute_and_gives_up_after_the_window() {
        #[allow(clippy::disallowed_methods)]
        let t0 = Instant::now();
        let mut b = BillingPause::default();
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert_eq!(b.on_402(at(0)), pause(true));
        assert_eq!(b.on_402(at(5)), pause(false));
        assert_eq!(b.on_402(at(59)), pause(false));
        assert_eq!(b.on_402(at(60)), pause(true));
        // Continuous 402s every 5 s keep the same incident alive...
        let mut logged = 0;
        for s in (65..=3600).step_by(5) {
            match b.on_402(at(s)) {
                BillingVerdict::Pause { log_now, .. } => logged += log_now as u32,
                BillingVerdict::GiveUp => panic!("gave up early at {s}"),
            }
        }
        assert_eq!(logged, 59, "one warning per minute from 120 s to 3600 s");
        // ...until it is older than the 3600 s window.
        assert_eq!(b.on_402(at(3605)), BillingVerdict::GiveUp);
        assert_eq!(b.incident_start(), Some(t0));
    }

    #[test]
    fn a_402_after_five_quiet_minutes_starts_a_new_incident() {
        #[allow(clippy::disallowed_methods)]
        let t0 = Instant::now();
        let mut b = BillingPause::new(Duration::from_secs(100));
        assert_eq!(b.on_402(t0), pause(true));
        let later = t0 + Duration::from_secs(301);
        assert_eq!(b.on_402(later), pause(true));
        assert_eq!(b.incident_start(), Some(later));
        // A configured window shorter than the gap gives up inside one incident.
        assert_eq!(b.on_402(later + Duration::from_secs(60)), pause(true));
        assert_eq!(
            b.on_402(later + Duration::from_secs(101)),
            BillingVerdict::GiveUp
        );
    }
}
