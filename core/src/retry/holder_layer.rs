//! Layer X: the holder's `execute_with_retries` around one logical operation (protocol.md 8.3).
//!
//! Each retry builds a *new* request (new idempotency key, same body and `seq_id`). Transient
//! failures (408, 409, 429, 5xx, transport errors, proxy rejections) are retried with waits of
//! 1, 2, 4, 8, 16, 30, 30 … s until 300 s have elapsed since the first attempt; the last wait is
//! clipped to that deadline. A 402 consults the shared [`BillingPause`] instead and does not count
//! as an attempt.

use std::time::{Duration, Instant};

use super::{
    BackoffPolicy, BillingPause, BillingVerdict, DelaySource, Failure, KeyRule, LoopState,
    RetryPlan, RetryPolicy,
};

/// `MAX_WAIT_TIME` of the SDK: no retry starts once this much time has passed.
pub const MAX_ELAPSED: Duration = Duration::from_secs(300);

/// Why layer X stopped retrying.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GiveUp {
    /// The failure is not transient (400, 401, 404, 422, a failed future, …).
    Permanent,
    /// Transient, but the 300 s budget (or a configured limit) is spent.
    Exhausted,
    /// A 402 whose billing incident outlasted the pause window.
    Billing,
}

/// Layer X's verdict on a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HolderDecision {
    /// Wait, then run the operation again with a new idempotency key.
    Retry(RetryPlan),
    /// Surface the failure.
    GiveUp(GiveUp),
}

/// The retry state of one logical operation under layer X.
///
/// ```
/// use std::time::{Duration, Instant};
/// use tinker_core::retry::{BillingPause, Failure, KeyRule};
/// use tinker_core::retry::holder_layer::{HolderDecision, HolderRetry};
///
/// # #[allow(clippy::disallowed_methods)]
/// let t0 = Instant::now();
/// let mut billing = BillingPause::default();
/// let mut op = HolderRetry::new(t0);
/// let HolderDecision::Retry(plan) = op.on_failure(Failure::ProxyRejection, t0, &mut billing, 0.5) else { panic!() };
/// assert_eq!((plan.delay, plan.key), (Duration::from_secs(1), KeyRule::Regenerate));
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct HolderRetry {
    policy: RetryPolicy,
    backoff: BackoffPolicy,
    start: Instant,
    retries: u32,
}

impl HolderRetry {
    /// Starts tracking an operation whose first attempt begins at `start`, with the SDK's policy.
    pub fn new(start: Instant) -> HolderRetry {
        HolderRetry::with_policy(start, RetryPolicy::holder(), BackoffPolicy::holder())
    }

    /// Same, with a custom policy and back-off (e.g. a user-configured time limit).
    pub fn with_policy(start: Instant, policy: RetryPolicy, backoff: BackoffPolicy) -> HolderRetry {
        HolderRetry {
            policy,
            backoff,
            start,
            retries: 0,
        }
    }

    /// Retries decided so far (402 pauses excluded).
    pub fn retries(&self) -> u32 {
        self.retries
    }

    /// When the first attempt started.
    pub fn start(&self) -> Instant {
        self.start
    }

    /// Decides after an attempt failed with `failure` at `now`. `draw` (in `[0, 1)`, from the
    /// PRNG) feeds the back-off jitter; the SDK's layer X has none, so it only matters for a
    /// custom [`BackoffPolicy`].
    pub fn on_failure(
        &mut self,
        failure: Failure,
        now: Instant,
        billing: &mut BillingPause,
        draw: f64,
    ) -> HolderDecision {
        if failure == Failure::Status(402) {
            return match billing.on_402(now) {
                BillingVerdict::Pause { sleep, .. } => HolderDecision::Retry(RetryPlan {
                    delay: sleep,
                    key: KeyRule::Regenerate,
                    source: DelaySource::BillingPause,
                }),
                BillingVerdict::GiveUp => HolderDecision::GiveUp(GiveUp::Billing),
            };
        }
        match self
            .policy
            .on_error(self.start, now, self.retries + 1, failure)
        {
            LoopState::Permanent => HolderDecision::GiveUp(GiveUp::Permanent),
            LoopState::Exhausted => HolderDecision::GiveUp(GiveUp::Exhausted),
            LoopState::Continue => {
                let mut delay = self.backoff.delay(self.retries, draw);
                if let Some(left) = self.policy.remaining_time(self.start, now) {
                    delay = delay.min(left);
                }
                self.retries += 1;
                HolderDecision::Retry(RetryPlan {
                    delay,
                    key: KeyRule::Regenerate,
                    source: DelaySource::Backoff,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::TransportErrorKind;

    fn retry_after(secs: u64) -> HolderDecision {
        HolderDecision::Retry(RetryPlan {
            delay: Duration::from_secs(secs),
            key: KeyRule::Regenerate,
            source: DelaySource::Backoff,
        })
    }

    #[test]
    fn each_rule_of_layer_x() {
        #[allow(clippy::disallowed_methods)]
        let t0 = Instant::now();
        use Failure::*;
        let table = [
            (Status(408), retry_after(1)),
            (Status(409), retry_after(1)),
            (Status(429), retry_after(1)),
            (Status(500), retry_after(1)),
            (Status(504), retry_after(1)),
            (Transport(TransportErrorKind::Timeout), retry_after(1)),
            (Transport(TransportErrorKind::Io), retry_after(1)),
            (ProxyRejection, retry_after(1)),
            (Status(400), HolderDecision::GiveUp(GiveUp::Permanent)),
            (Status(401), HolderDecision::GiveUp(GiveUp::Permanent)),
            (Status(403), HolderDecision::GiveUp(GiveUp::Permanent)),
            (Status(404), HolderDecision::GiveUp(GiveUp::Permanent)),
            (Status(410), HolderDecision::GiveUp(GiveUp::Permanent)),
            (Status(422), HolderDecision::GiveUp(GiveUp::Permanent)),
            (FutureExpired, HolderDecision::GiveUp(GiveUp::Permanent)),
            (RequestFailed, HolderDecision::GiveUp(GiveUp::Permanent)),
            (Permanent, HolderDecision::GiveUp(GiveUp::Permanent)),
        ];
        for (failure, expected) in table {
            let mut op = HolderRetry::new(t0);
            let mut billing = BillingPause::default();
            assert_eq!(
                op.on_failure(failure, t0, &mut billing, 0.5),
                expected,
                "{failure:?}"
            );
        }
    }

    #[test]
    fn a_server_down_for_ten_minutes_is_retried_with_doubling_waits_until_300_s() {
        #[allow(clippy::disallowed_methods)]
        let t0 = Instant::now();
        let mut billing = BillingPause::default();
        let mut op = HolderRetry::new(t0);
        let mut now = t0;
        let mut waits = vec![];
        loop {
            match op.on_failure(Failure::Status(503), now, &mut billing, 0.5) {
                HolderDecision::Retry(plan) => {
                    waits.push(plan.delay.as_secs());
                    now += plan.delay;
                }
                HolderDecision::GiveUp(why) => {
                    assert_eq!(why, GiveUp::Exhausted);
                    break;
                }
            }
        }
        // 1+2+4+8+16 = 31, then 30 s waits: 31 + 8*30 = 271, last wait clipped to 29 s.
        assert_eq!(waits, [1, 2, 4, 8, 16, 30, 30, 30, 30, 30, 30, 30, 30, 29]);
        assert_eq!(now, t0 + MAX_ELAPSED);
        assert_eq!(op.retries(), 14);
    }

    #[test]
    fn a_402_pauses_five_seconds_without_counting_until_billing_gives_up() {
        #[allow(clippy::disallowed_methods)]
        let t0 = Instant::now();
        let mut billing = BillingPause::new(Duration::from_secs(20));
        let mut op = HolderRetry::new(t0);
        let pause = HolderDecision::Retry(RetryPlan {
            delay: Duration::from_secs(5),
            key: KeyRule::Regenerate,
            source: DelaySource::BillingPause,
        });
        for s in [0, 5, 10, 15, 20] {
            let now = t0 + Duration::from_secs(s);
            assert_eq!(
                op.on_failure(Failure::Status(402), now, &mut billing, 0.5),
                pause,
                "at {s}"
            );
        }
        assert_eq!(op.retries(), 0);
        let now = t0 + Duration::from_secs(25);
        assert_eq!(
            op.on_failure(Failure::Status(402), now, &mut billing, 0.5),
            HolderDecision::GiveUp(GiveUp::Billing)
        );
        // Transient failures after the pause still start the back-off from 1 s.
        assert_eq!(
            op.on_failure(Failure::Status(500), now, &mut billing, 0.5),
            retry_after(1)
        );
    }
}
