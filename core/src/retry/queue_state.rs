//! Queue-state reporting: turning `try_again` replies into change events and rate-limited
//! warnings (protocol.md 7.9).

use std::time::{Duration, Instant};

pub use crate::types::QueueState;

/// Which kind of client is waiting: it changes the default reason text and the log rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClientKind {
    /// A sampling client: log at most once per 60 s.
    Sampling,
    /// A training client or model creation: log at most once per 60 s, and only once a pause has
    /// lasted 15 minutes (SDK 0.38).
    Training,
}

impl ClientKind {
    fn label(self) -> &'static str {
        match self {
            ClientKind::Sampling => "Sampling",
            ClientKind::Training => "Training",
        }
    }

    /// The reason shown when the server gave none.
    pub fn default_reason(self, state: QueueState) -> &'static str {
        match (state, self) {
            (QueueState::PausedCapacity, _) => {
                "Tinker backend is running short on capacity, please wait"
            }
            (QueueState::PausedRateLimit, ClientKind::Sampling) => {
                "concurrent sampler weights limit hit"
            }
            (QueueState::PausedRateLimit, ClientKind::Training) => {
                "concurrent training clients rate limit hit"
            }
            _ => "unknown",
        }
    }
}

/// A queue-state change to hand to the user's observer callback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueStateChange {
    /// The new state.
    pub state: QueueState,
    /// The server's reason, if it sent a non-empty one.
    pub reason: Option<String>,
}

/// What one observation produced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueStateObservation {
    /// Set when the state or reason differs from the previous observation.
    pub changed: Option<QueueStateChange>,
    /// A warning to log now, e.g. "Sampling is paused for sess:sample:0. Reason: …".
    pub log: Option<String>,
}

/// Tracks the queue state of one client (one per model id or sampling session, in the ledger).
///
/// ```
/// use std::time::{Duration, Instant};
/// use tinker_core::retry::{ClientKind, QueueState, QueueStateTracker};
///
/// # #[allow(clippy::disallowed_methods)]
/// let t0 = Instant::now();
/// let mut tracker = QueueStateTracker::new(ClientKind::Sampling, "sess-1:sample:0");
/// let first = tracker.observe(QueueState::PausedCapacity, None, t0);
/// assert!(first.changed.is_some());
/// assert_eq!(first.log.as_deref(), Some("Sampling is paused for sess-1:sample:0. Reason: Tinker backend is running short on capacity, please wait"));
/// let again = tracker.observe(QueueState::PausedCapacity, None, t0 + Duration::from_secs(30));
/// assert_eq!(again, Default::default()); // no change, and too soon to log again
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueStateTracker {
    kind: ClientKind,
    identifier: String,
    state: QueueState,
    reason: Option<String>,
    paused_since: Option<Instant>,
    last_logged: Option<Instant>,
}

impl QueueStateTracker {
    /// Minimum time between two warnings.
    pub const LOG_INTERVAL: Duration = Duration::from_secs(60);
    /// How long a training pause must last before it is logged.
    pub const TRAINING_PAUSE_BEFORE_LOG: Duration = Duration::from_secs(15 * 60);

    /// A tracker for the client named `identifier` (model id or sampling session id), starting
    /// in [`QueueState::Active`].
    pub fn new(kind: ClientKind, identifier: impl Into<String>) -> QueueStateTracker {
        QueueStateTracker {
            kind,
            identifier: identifier.into(),
            state: QueueState::Active,
            reason: None,
            paused_since: None,
            last_logged: None,
        }
    }

    /// The last observed state.
    pub fn state(&self) -> QueueState {
        self.state
    }

    /// Feeds the `queue_state` / `queue_state_reason` of a `try_again` reply (or a 408 body).
    pub fn observe(
        &mut self,
        state: QueueState,
        reason: Option<&str>,
        now: Instant,
    ) -> QueueStateObservation {
        let reason = reason.filter(|r| !r.is_empty()).map(str::to_owned);
        let changed = (state != self.state || reason != self.reason).then(|| QueueStateChange {
            state,
            reason: reason.clone(),
        });
        self.state = state;
        self.reason = reason;
        if state == QueueState::Active {
            self.paused_since = None;
            return QueueStateObservation { changed, log: None };
        }
        let paused_since = *self.paused_since.get_or_insert(now);
        let interval_ok = self
            .last_logged
            .is_none_or(|t| now.saturating_duration_since(t) >= Self::LOG_INTERVAL);
        let long_enough = match self.kind {
            ClientKind::Sampling => true,
            ClientKind::Training => {
                now.saturating_duration_since(paused_since) >= Self::TRAINING_PAUSE_BEFORE_LOG
            }
        };
        let log = (interval_ok && long_enough).then(|| {
            self.last_logged = Some(now);
            let why = self
                .reason
                .as_deref()
                .unwrap_or_else(|| self.kind.default_reason(state));
            format!(
                "{} is paused for {}. Reason: {}",
                self.kind.label(),
                self.identifier,
                why
            )
        });
        QueueStateObservation { changed, log }
    }

    /// A result (success or failure) arrived: the observer is told `active` again (SDK 0.38).
    pub fn on_result(&mut self, now: Instant) -> Option<QueueStateChange> {
        self.observe(QueueState::Active, None, now).changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_values_parse_with_unknown_as_fallback() {
        assert_eq!(QueueState::from_wire(Some("active")), QueueState::Active);
        assert_eq!(
            QueueState::from_wire(Some("paused_capacity")),
            QueueState::PausedCapacity
        );
        assert_eq!(
            QueueState::from_wire(Some("paused_rate_limit")),
            QueueState::PausedRateLimit
        );
        assert_eq!(
            QueueState::from_wire(Some("paused_moon")),
            QueueState::Unknown
        );
        assert_eq!(QueueState::from_wire(None), QueueState::Unknown);
    }

    #[test]
    fn default_reasons_follow_the_table() {
        use ClientKind::*;
        use QueueState::*;
        assert_eq!(
            Sampling.default_reason(PausedRateLimit),
            "concurrent sampler weights limit hit"
        );
        assert_eq!(
            Training.default_reason(PausedRateLimit),
            "concurrent training clients rate limit hit"
        );
        assert_eq!(
            Training.default_reason(PausedCapacity),
            "Tinker backend is running short on capacity, please wait"
        );
        assert_eq!(Sampling.default_reason(Unknown), "unknown");
    }

    #[test]
    fn a_sampling_pause_logs_once_a_minute_with_the_servers_reason() {
        #[allow(clippy::disallowed_methods)]
        let t0 = Instant::now();
        let at = |s| t0 + Duration::from_secs(s);
        let mut t = QueueStateTracker::new(ClientKind::Sampling, "s:sample:0");
        let logs: Vec<bool> = [0, 20, 59, 60, 61, 125]
            .iter()
            .map(|s| {
                t.observe(QueueState::PausedRateLimit, Some("quota"), at(*s))
                    .log
                    .is_some()
            })
            .collect();
        assert_eq!(logs, [true, false, false, true, false, true]);
        let o = t.observe(QueueState::PausedRateLimit, Some("other"), at(130));
        assert_eq!(o.changed.unwrap().reason.as_deref(), Some("other"));
        assert_eq!(o.log, None);
        assert_eq!(
            t.on_result(at(140)),
            Some(QueueStateChange {
                state: QueueState::Active,
                reason: None
            })
        );
        assert_eq!(t.on_result(at(141)), None, "already active");
    }

    #[test]
    fn a_training_pause_is_logged_only_after_fifteen_minutes() {
        #[allow(clippy::disallowed_methods)]
        let t0 = Instant::now();
        let at = |s| t0 + Duration::from_secs(s);
        let mut t = QueueStateTracker::new(ClientKind::Training, "s:train:0");
        let first = t.observe(QueueState::PausedCapacity, None, at(0));
        assert!(first.changed.is_some());
        assert_eq!(first.log, None);
        assert_eq!(
            t.observe(QueueState::PausedCapacity, None, at(899)).log,
            None
        );
        assert_eq!(
            t.observe(QueueState::PausedCapacity, None, at(900)).log.as_deref(),
            Some("Training is paused for s:train:0. Reason: Tinker backend is running short on capacity, please wait")
        );
        assert_eq!(
            t.observe(QueueState::PausedCapacity, None, at(930)).log,
            None
        );
        // Becoming active resets the pause clock.
        t.observe(QueueState::Active, None, at(1000));
        assert_eq!(
            t.observe(QueueState::PausedCapacity, None, at(1100)).log,
            None
        );
        assert!(t
            .observe(QueueState::PausedCapacity, None, at(2000))
            .log
            .is_some());
    }
}
