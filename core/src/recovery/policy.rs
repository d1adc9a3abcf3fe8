//! What recovery does and how hard it tries (Tinkex F126).

use std::time::Duration;

use crate::error::{Error, Result};

/// Which checkpoint a corrupted run is recreated from.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CheckpointStrategy {
    /// The run's latest state checkpoint (`last_checkpoint` of the training run).
    Latest,
    /// This `tinker://…/weights/…` path, whatever the run reports.
    Path(String),
}

/// Settings of automatic recovery of corrupted training runs. Off by default: a monitor refuses
/// to watch runs until `enabled` is set.
///
/// Defaults (Tinkex's): 3 attempts, back-off 5 s doubling per failed attempt up to 60 s, runs
/// polled every 30 s, recreated from their latest checkpoint with optimizer state, one recovery
/// at a time.
///
/// ```
/// use std::time::Duration;
/// use tinker_core::recovery::{CheckpointStrategy, RecoveryPolicy};
///
/// let policy = RecoveryPolicy::enabled()
///     .with_max_attempts(5)
///     .with_poll_interval(Duration::from_secs(10));
/// assert_eq!(policy.checkpoint, CheckpointStrategy::Latest);
/// assert_eq!(policy.backoff_after(1), Duration::from_secs(5));
/// assert_eq!(policy.backoff_after(3), Duration::from_secs(20));
/// assert_eq!(policy.backoff_after(9), Duration::from_secs(60));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecoveryPolicy {
    /// Whether runs may be watched and recovered at all (false by default).
    pub enabled: bool,
    /// Attempts per corrupted run before giving up (3).
    pub max_attempts: u32,
    /// Wait after the first failed attempt (5 s); doubles after each further failure.
    pub backoff: Duration,
    /// Cap of the wait between attempts (60 s).
    pub max_backoff: Duration,
    /// How often every watched run is fetched to look for `corrupted: true` (30 s).
    pub poll_interval: Duration,
    /// Which checkpoint to recreate the run from ([`CheckpointStrategy::Latest`]).
    pub checkpoint: CheckpointStrategy,
    /// Restore the optimizer state with the weights (true), or start a fresh optimizer.
    pub restore_optimizer: bool,
    /// Recoveries in progress at once (1).
    pub max_concurrent: usize,
}

impl Default for RecoveryPolicy {
    fn default() -> RecoveryPolicy {
        RecoveryPolicy {
            enabled: false,
            max_attempts: 3,
            backoff: Duration::from_secs(5),
            max_backoff: Duration::from_secs(60),
            poll_interval: Duration::from_secs(30),
            checkpoint: CheckpointStrategy::Latest,
            restore_optimizer: true,
            max_concurrent: 1,
        }
    }
}

impl RecoveryPolicy {
    /// The defaults with recovery switched on.
    pub fn enabled() -> RecoveryPolicy {
        RecoveryPolicy {
            enabled: true,
            ..RecoveryPolicy::default()
        }
    }

    /// Sets the attempts per run.
    pub fn with_max_attempts(mut self, attempts: u32) -> RecoveryPolicy {
        self.max_attempts = attempts;
        self
    }

    /// Sets the first back-off and its cap.
    pub fn with_backoff(mut self, first: Duration, cap: Duration) -> RecoveryPolicy {
        self.backoff = first;
        self.max_backoff = cap;
        self
    }

    /// Sets how often watched runs are polled.
    pub fn with_poll_interval(mut self, interval: Duration) -> RecoveryPolicy {
        self.poll_interval = interval;
        self
    }

    /// Sets the checkpoint strategy.
    pub fn with_checkpoint(mut self, strategy: CheckpointStrategy) -> RecoveryPolicy {
        self.checkpoint = strategy;
        self
    }

    /// Sets whether optimizer state is restored.
    pub fn with_restore_optimizer(mut self, restore: bool) -> RecoveryPolicy {
        self.restore_optimizer = restore;
        self
    }

    /// Sets how many recoveries may run at once.
    pub fn with_max_concurrent(mut self, n: usize) -> RecoveryPolicy {
        self.max_concurrent = n;
        self
    }

    /// The wait after failed attempt number `attempt` (1-based):
    /// `min(backoff · 2^(attempt−1), max_backoff)`.
    pub fn backoff_after(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(31);
        self.backoff
            .saturating_mul(1 << doublings)
            .min(self.max_backoff)
    }

    /// Checks the settings a monitor cannot work with.
    pub fn validate(&self) -> Result<()> {
        if self.max_attempts == 0 {
            return Err(Error::invalid("policy.max_attempts", "must be at least 1"));
        }
        if self.max_concurrent == 0 {
            return Err(Error::invalid(
                "policy.max_concurrent",
                "must be at least 1",
            ));
        }
        if self.poll_interval.is_zero() {
            return Err(Error::invalid("policy.poll_interval", "must be positive"));
        }
        if self.max_backoff < self.backoff {
            return Err(Error::invalid(
                "policy.max_backoff",
                "must not be shorter than policy.backoff",
            ));
        }
        if let CheckpointStrategy::Path(p) = &self.checkpoint {
            if !p.starts_with("tinker://") {
                return Err(Error::invalid(
                    "policy.checkpoint",
                    format!("{p:?} is not a tinker:// path"),
                ));
            }
        }
        Ok(())
    }
}
