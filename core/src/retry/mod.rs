//! Retry decisions: which failures are retried, after how long, with which idempotency key, and
//! when to give up.
//!
//! The official SDK stacks several retry layers (protocol.md 8.1); each has its own module here so
//! the call machine can compose them exactly:
//!
//! | Layer | Module | Retries | Delay |
//! |---|---|---|---|
//! | H, HTTP client | [`http_layer`] | 10, same idempotency key | `Retry-After` in (0, 60] s, else 0.5·2^k ≤ 10 s × [0.75, 1] |
//! | X, holder | [`holder_layer`] | until 300 s elapsed, new key each time | 1, 2, 4 … ≤ 30 s, last wait clipped |
//! | R, sampling | [`sampling_layer`] | unbounded, whole sample resubmitted | 0.5·2^k ≤ 10 s ± 25 % |
//! | `retrieve_future` polls | [`poll`] | own rules (protocol.md 7.5) | none, or min(2^n, 30) s |
//! | `retrieve_futures` poller | [`batch_poll`] | own rules (protocol.md 7.7) | 1 s, 402: 5 s |
//!
//! Shared pieces: [`Failure`] (one attempt's outcome, normalised), [`BackoffPolicy`],
//! [`RetryPolicy`] (gax-style attempt/time limits), [`RetryBudget`] (token bucket),
//! [`ProxyRejectionCredits`] (the Cloudflare empty-400 rule, 8.7), [`BillingPause`] (402, 8.8) and
//! [`QueueStateTracker`] (queue-state reporting, 7.9).
//!
//! Everything here is a pure function of its inputs: time comes in as `now`, randomness as a
//! `draw` in `[0, 1)` taken from [`crate::rng::Rng`].

mod backoff;
pub mod batch_poll;
mod billing;
mod budget;
mod failure;
pub mod holder_layer;
pub mod http_layer;
mod policy;
pub mod poll;
mod proxy_rejection;
mod queue_state;
mod retry_after;
pub mod sampling_layer;

pub use backoff::{BackoffPolicy, Jitter};
pub use billing::{BillingPause, BillingVerdict};
pub use budget::{RetryBudget, RetryBudgetConfig};
pub use failure::Failure;
pub use policy::{LoopState, RetryPolicy, Retryable};
pub use proxy_rejection::{is_proxy_rejection, ProxyRejectionCredits, ProxyVerdict};
pub use queue_state::{
    ClientKind, QueueState, QueueStateChange, QueueStateObservation, QueueStateTracker,
};
pub use retry_after::retry_after;

use std::time::Duration;

/// Which idempotency key a retry carries.
///
/// Layer H resends the *same* HTTP request, so the server can deduplicate it; layers X and R (and
/// the 429/402 loops around `asample`) build a *new* request each time (protocol.md 8.2-8.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyRule {
    /// Send the same `X-Idempotency-Key` as the failed attempt.
    Reuse,
    /// Draw a fresh key for the new attempt.
    Regenerate,
}

/// Why a retry waits as long as it does (for logs and telemetry).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DelaySource {
    /// The server's `Retry-After` / `Retry-After-Ms` header.
    RetryAfterHeader,
    /// The layer's exponential back-off.
    Backoff,
    /// The 402 billing pause (8.8).
    BillingPause,
    /// No wait at all.
    Immediate,
}

/// A decision to try again: wait `delay`, then send an attempt with the given key rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPlan {
    /// How long to wait before the next attempt.
    pub delay: Duration,
    /// Whether the next attempt reuses the idempotency key.
    pub key: KeyRule,
    /// Where the delay came from.
    pub source: DelaySource,
}
