//! Client-side flow control: byte budgets, the sampling dispatch gate, the rate-limit back-off
//! window, circuit breakers and the `retrieve_futures` completion poller.
//!
//! All of it is pure accounting. A caller that cannot proceed gets "must wait" and retries when
//! the shared ledger changes (a release, a back-off ending); no machine here blocks or sleeps.

mod byte_budget;
mod circuit_breaker;
mod completion_poller;
mod count_gate;
mod rate_limit;
mod sampling_dispatch;

pub use byte_budget::{Acquire, ByteBudget, BytePermit};
pub use circuit_breaker::{
    CircuitBreaker, CircuitBreakerConfig, CircuitBreakerRegistry, CircuitOpen, CircuitState,
};
pub use completion_poller::{Completion, CompletionPoller, Lease, PollerFailure};
pub use count_gate::{CountGate, GatePermit};
pub use rate_limit::RateLimitWindow;
pub use sampling_dispatch::{
    DispatchEntry, DispatchProgress, DispatchStage, SamplingDispatch, SamplingDispatchConfig,
};
