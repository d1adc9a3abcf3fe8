//! Layer R: the sampling `RetryHandler` (protocol.md 8.4).
//!
//! Wraps each `sample()` / `compute_logprobs()`. Attempts are unlimited; every retry re-runs the
//! whole sample (new `asample`, new `seq_id`, new future, new idempotency key), including after
//! the poll loop reports an expired future (410). What bounds it is stuck detection: a
//! [`ProgressWatch`] shared by every sample of one sampling session fails the running samples when
//! none has completed for `progress_timeout` (7200 s).

use std::time::{Duration, Instant};

use super::{BackoffPolicy, DelaySource, Failure, KeyRule, RetryPlan, RetryPolicy};

/// The user-facing settings of layer R (`RetryConfig` of the SDK, minus `max_connections`, which
/// the client config forces).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplingRetryConfig {
    /// Back-off between attempts: 0.5 s · 2^k ≤ 10 s, ± 25 % by default.
    pub backoff: BackoffPolicy,
    /// Fail running samples when none of the session's samples completed for this long.
    pub progress_timeout: Duration,
    /// `false` = never retry (each failure surfaces).
    pub enable_retry_logic: bool,
    /// `false` = no stuck detection (forced off by client config `sample_enable_stuck_detection`).
    pub enable_stuck_detection: bool,
}

impl Default for SamplingRetryConfig {
    fn default() -> SamplingRetryConfig {
        SamplingRetryConfig {
            backoff: BackoffPolicy::sampling(),
            progress_timeout: Duration::from_secs(7200),
            enable_retry_logic: true,
            enable_stuck_detection: true,
        }
    }
}

/// Layer R's verdict on a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SamplingDecision {
    /// Wait, then resubmit the whole sample (new `asample`, new `seq_id`, new key).
    Resubmit(RetryPlan),
    /// Surface the failure (not transient, or retries disabled).
    GiveUp,
}

/// The retry state of one sample call.
///
/// ```
/// use std::time::Duration;
/// use tinker_core::retry::Failure;
/// use tinker_core::retry::sampling_layer::{SamplingDecision, SamplingRetry, SamplingRetryConfig};
///
/// let mut call = SamplingRetry::new(SamplingRetryConfig::default());
/// let SamplingDecision::Resubmit(plan) = call.on_failure(Failure::FutureExpired, 0.5) else { panic!() };
/// assert_eq!(plan.delay, Duration::from_millis(500));
/// assert_eq!(call.on_failure(Failure::RequestFailed, 0.5), SamplingDecision::GiveUp);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingRetry {
    config: SamplingRetryConfig,
    policy: RetryPolicy,
    retries: u32,
}

impl SamplingRetry {
    /// A fresh call.
    pub fn new(config: SamplingRetryConfig) -> SamplingRetry {
        let policy = if config.enable_retry_logic {
            RetryPolicy::sampling()
        } else {
            RetryPolicy::never()
        };
        SamplingRetry {
            config,
            policy,
            retries: 0,
        }
    }

    /// Retries decided so far.
    pub fn retries(&self) -> u32 {
        self.retries
    }

    /// Decides after an attempt failed; `draw` in `[0, 1)` comes from the PRNG.
    pub fn on_failure(&mut self, failure: Failure, draw: f64) -> SamplingDecision {
        // Layer R has no attempt or time limit (the progress watch bounds it), so only the
        // classifier matters.
        if !self.policy.retryable().is_retryable(failure) {
            return SamplingDecision::GiveUp;
        }
        let delay = self.config.backoff.delay(self.retries, draw);
        self.retries += 1;
        SamplingDecision::Resubmit(RetryPlan {
            delay,
            key: KeyRule::Regenerate,
            source: DelaySource::Backoff,
        })
    }
}

/// Stuck detection for one sampling session (shared by all its samples, in the ledger).
///
/// Progress = a sample of the session completed successfully. While at least one sample is in
/// flight and there was no progress for `progress_timeout`, [`ProgressWatch::is_stuck`] is true
/// and the call machine fails the running samples with "No progress made in 7200.0s. Requests
/// appear to be stuck.". Time spent idle (no sample in flight) does not count: the clock restarts
/// when the first sample of an idle session starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgressWatch {
    timeout: Option<Duration>,
    last_progress: Instant,
    in_flight: usize,
}

impl ProgressWatch {
    /// A watch starting at `now`; `config.enable_stuck_detection = false` disables it.
    pub fn new(config: &SamplingRetryConfig, now: Instant) -> ProgressWatch {
        ProgressWatch {
            timeout: config
                .enable_stuck_detection
                .then_some(config.progress_timeout),
            last_progress: now,
            in_flight: 0,
        }
    }

    /// A sample started.
    pub fn on_start(&mut self, now: Instant) {
        if self.in_flight == 0 {
            self.last_progress = now;
        }
        self.in_flight += 1;
    }

    /// A sample ended (`succeeded` = it produced a result; failures are not progress).
    pub fn on_finish(&mut self, now: Instant, succeeded: bool) {
        self.in_flight = self.in_flight.saturating_sub(1);
        if succeeded {
            self.last_progress = now;
        }
    }

    /// When the running samples will be declared stuck, if nothing completes before.
    pub fn deadline(&self) -> Option<Instant> {
        if self.in_flight == 0 {
            return None;
        }
        self.timeout.map(|t| self.last_progress + t)
    }

    /// Whether the running samples are stuck at `now`.
    pub fn is_stuck(&self, now: Instant) -> bool {
        self.deadline().is_some_and(|d| now > d)
    }

    /// Samples in flight.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::TransportErrorKind;

    #[test]
    fn each_rule_of_layer_r() {
        use Failure::*;
        let table = [
            (Status(408), true),
            (Status(409), true),
            (Status(429), true),
            (Status(500), true),
            (Transport(TransportErrorKind::Timeout), true),
            (Transport(TransportErrorKind::Connect), true),
            (ProxyRejection, true),
            (FutureExpired, true),
            (Status(400), false),
            (Status(402), false),
            (Status(404), false),
            (RequestFailed, false),
            (Permanent, false),
        ];
        for (failure, retried) in table {
            let mut call = SamplingRetry::new(SamplingRetryConfig::default());
            let decision = call.on_failure(failure, 0.5);
            assert_eq!(
                matches!(decision, SamplingDecision::Resubmit(_)),
                retried,
                "{failure:?}"
            );
            if let SamplingDecision::Resubmit(plan) = decision {
                assert_eq!(plan.key, KeyRule::Regenerate);
            }
        }
    }

    #[test]
    fn attempts_are_unbounded_and_waits_cap_at_ten_seconds() {
        let mut call = SamplingRetry::new(SamplingRetryConfig::default());
        let mut last = Duration::ZERO;
        for _ in 0..10_000 {
            let SamplingDecision::Resubmit(plan) = call.on_failure(Failure::Status(503), 0.5)
            else {
                panic!("gave up");
            };
            last = plan.delay;
        }
        assert_eq!(last, Duration::from_secs(10));
        assert_eq!(call.retries(), 10_000);
    }

    #[test]
    fn the_same_seed_gives_the_same_waits() {
        let waits = |seed| {
            let mut rng = crate::rng::Rng::from_seed(seed);
            let mut call = SamplingRetry::new(SamplingRetryConfig::default());
            (0..8)
                .map(
                    |_| match call.on_failure(Failure::Status(500), rng.next_f64()) {
                        SamplingDecision::Resubmit(plan) => plan.delay,
                        SamplingDecision::GiveUp => panic!("gave up"),
                    },
                )
                .collect::<Vec<_>>()
        };
        assert_eq!(waits(1), waits(1));
        assert_ne!(waits(1), waits(2));
    }

    #[test]
    fn disabled_retry_logic_surfaces_everything() {
        let config = SamplingRetryConfig {
            enable_retry_logic: false,
            ..Default::default()
        };
        let mut call = SamplingRetry::new(config);
        assert_eq!(
            call.on_failure(Failure::Status(503), 0.5),
            SamplingDecision::GiveUp
        );
    }

    #[test]
    fn samples_are_stuck_after_two_hours_without_a_completion() {
        #[allow(clippy::disallowed_methods)]
        let t0 = Instant::now();
        let h = |secs: u64| t0 + Duration::from_secs(secs);
        let mut watch = ProgressWatch::new(&SamplingRetryConfig::default(), t0);
        // Idle for three hours: not stuck, and the clock restarts when work begins.
        assert!(!watch.is_stuck(h(3 * 3600)));
        watch.on_start(h(3 * 3600));
        watch.on_start(h(3 * 3600 + 10));
        assert_eq!(watch.deadline(), Some(h(3 * 3600 + 7200)));
        // One sample completes: progress pushes the deadline.
        watch.on_finish(h(4 * 3600), true);
        assert!(!watch.is_stuck(h(4 * 3600 + 7200)));
        assert!(watch.is_stuck(h(4 * 3600 + 7201)));
        // A failure is not progress.
        watch.on_start(h(4 * 3600 + 100));
        watch.on_finish(h(4 * 3600 + 200), false);
        assert_eq!(watch.deadline(), Some(h(4 * 3600 + 7200)));
    }

    #[test]
    fn disabled_stuck_detection_never_fires() {
        #[allow(clippy::disallowed_methods)]
        let t0 = Instant::now();
        let config = SamplingRetryConfig {
            enable_stuck_detection: false,
            ..Default::default()
        };
        let mut watch = ProgressWatch::new(&config, t0);
        watch.on_start(t0);
        assert_eq!(watch.deadline(), None);
        assert!(!watch.is_stuck(t0 + Duration::from_secs(1_000_000)));
    }
}
