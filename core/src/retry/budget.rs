//! A retry budget (token bucket), so a storm of failures cannot multiply traffic.

use super::failure::Failure;
use crate::io::TransportErrorKind;

/// Costs and capacity of a [`RetryBudget`].
///
/// Defaults follow the AWS SDKs' standard retry strategy (smithy-rs `token_bucket.rs`): capacity
/// 500, a retry costs 5 tokens (10 after a timeout, which is the expensive kind of failure), each
/// success refunds 1. So with no successes at all a client makes at most 100 retries (50 after
/// timeouts) before retries stop; a healthy client refills as it succeeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryBudgetConfig {
    /// Maximum (and initial) number of tokens.
    pub capacity: u32,
    /// Tokens a retry after any non-timeout failure costs.
    pub retry_cost: u32,
    /// Tokens a retry after a per-read timeout costs.
    pub timeout_retry_cost: u32,
    /// Tokens a successful attempt gives back.
    pub success_refund: u32,
}

impl Default for RetryBudgetConfig {
    fn default() -> RetryBudgetConfig {
        RetryBudgetConfig {
            capacity: 500,
            retry_cost: 5,
            timeout_retry_cost: 10,
            success_refund: 1,
        }
    }
}

/// A shared token bucket consulted before every retry (one per client, in the ledger).
///
/// This is not in the official SDK, which retries without a global bound; it is an addition the
/// call machine applies on top of the layer policies. A denied retry surfaces the failure as if
/// the policy were exhausted.
///
/// ```
/// use tinker_core::retry::{Failure, RetryBudget, RetryBudgetConfig};
///
/// let mut budget = RetryBudget::new(RetryBudgetConfig { capacity: 10, ..Default::default() });
/// assert!(budget.try_spend(Failure::Status(503)));  // 10 -> 5
/// assert!(budget.try_spend(Failure::Status(503)));  // 5 -> 0
/// assert!(!budget.try_spend(Failure::Status(503))); // storm: no more retries
/// budget.on_success();
/// assert_eq!(budget.tokens(), 1);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryBudget {
    config: RetryBudgetConfig,
    tokens: u32,
}

impl Default for RetryBudget {
    fn default() -> RetryBudget {
        RetryBudget::new(RetryBudgetConfig::default())
    }
}

impl RetryBudget {
    /// A full bucket.
    pub fn new(config: RetryBudgetConfig) -> RetryBudget {
        RetryBudget {
            tokens: config.capacity,
            config,
        }
    }

    /// What a retry after `failure` costs.
    pub fn cost_of(&self, failure: Failure) -> u32 {
        match failure {
            Failure::Transport(TransportErrorKind::Timeout) => self.config.timeout_retry_cost,
            _ => self.config.retry_cost,
        }
    }

    /// Takes the cost of one retry; `false` (and nothing taken) when the bucket cannot pay.
    pub fn try_spend(&mut self, failure: Failure) -> bool {
        let cost = self.cost_of(failure);
        if self.tokens >= cost {
            self.tokens -= cost;
            true
        } else {
            false
        }
    }

    /// A successful attempt refills the bucket a little (never above capacity).
    pub fn on_success(&mut self) {
        self.tokens = (self.tokens + self.config.success_refund).min(self.config.capacity);
    }

    /// Tokens left.
    pub fn tokens(&self) -> u32 {
        self.tokens
    }

    /// The configuration.
    pub fn config(&self) -> RetryBudgetConfig {
        self.config
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_storm_of_failures_is_cut_off_after_capacity_over_cost_retries() {
        let mut b = RetryBudget::default();
        let allowed = (0..1000)
            .take_while(|_| b.try_spend(Failure::Status(500)))
            .count();
        assert_eq!(allowed, 100);
        let mut b = RetryBudget::default();
        let timeouts = (0..1000)
            .take_while(|_| b.try_spend(Failure::Transport(TransportErrorKind::Timeout)))
            .count();
        assert_eq!(timeouts, 50);
    }

    #[test]
    fn successes_refill_up_to_capacity_only() {
        let mut b = RetryBudget::default();
        b.on_success();
        assert_eq!(b.tokens(), 500);
        assert!(b.try_spend(Failure::ProxyRejection));
        for _ in 0..3 {
            b.on_success();
        }
        assert_eq!(b.tokens(), 498);
    }

    proptest! {
        #[test]
        fn tokens_never_leave_zero_to_capacity(ops in proptest::collection::vec(0u8..3, 0..500)) {
            let mut b = RetryBudget::default();
            for op in ops {
                match op {
                    0 => { b.try_spend(Failure::Status(503)); }
                    1 => { b.try_spend(Failure::Transport(TransportErrorKind::Timeout)); }
                    _ => b.on_success(),
                }
                prop_assert!(b.tokens() <= 500);
            }
        }
    }
}
