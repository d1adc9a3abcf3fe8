//! The user-facing clients, written once as async code over the I/O traits of [`crate::io`].
//!
//! | Client | What it does |
//! |---|---|
//! | [`ServiceClient`] | entry point: owns the session, creates the others, `close()` |
//! | [`TrainingClient`] | one training run: forward/backward, optimizer steps, checkpoints |
//! | [`SamplingClient`] | sampling and prompt log-probabilities from one set of weights |
//! | [`RestClient`] | training runs, checkpoints, sessions, billing over REST |
//! | [`Pending`] | a submitted request whose result is awaited later |
//!
//! # How the runtimes share this code
//!
//! Nothing here names a runtime. A client holds an `Arc<dyn AsyncHttp>` and an
//! `Arc<dyn AsyncRuntime>` ([`ClientIo`]), builds operations from [`crate::ops`] with the shared
//! ledger locked, and hands them to the engine's one async drive loop
//! ([`crate::drive::drive_async`]). The background housekeeper is one task started with
//! [`crate::io::AsyncRuntime::spawn`].
//!
//! * `tinker-tokio` and `tinker-async-std` re-export these types unchanged and supply the I/O
//!   (`reqwest` on tokio; `hyper` on `async-io`), so switching runtime is changing one
//!   dependency line and the `connect` call's crate name.
//! * `tinker-blocking` wraps each client in a blocking twin whose methods run the same async
//!   method to completion on the calling thread with a minimal executor. Each `ureq` request
//!   runs on a short-lived thread that wakes the caller when its response is complete (so
//!   deadlines still interrupt long polls); timers are one timer thread; the housekeeper runs on
//!   its own thread.
//!
//! # Ordering and pipelining
//!
//! A training client's requests reach the server in the order its methods were *called*: each
//! method reserves its turn synchronously, before returning its future (its seq id is taken when
//! the turn starts sending). Methods that
//! start a server-side computation resolve once the request is submitted and return a
//! [`Pending`], so a step is two submissions followed by two waits:
//!
//! ```no_run
//! # async fn step(training: tinker_core::client::TrainingClient,
//! #               batch: Vec<tinker_core::types::Datum>) -> tinker_core::Result<()> {
//! use tinker_core::types::{AdamParams, LossFn};
//! let fb = training.forward_backward(batch, LossFn::CrossEntropy).await?;
//! let opt = training.optim_step(AdamParams::with_learning_rate(1e-4)).await?;
//! let out = fb.result().await?;
//! opt.result().await?;
//! println!("loss {:?}", out.loss());
//! # Ok(()) }
//! ```
//!
//! # Deadlines and observability
//!
//! Every call may carry a deadline: client-wide ([`ClientOptions::default_deadline`]), per client
//! view (`TrainingClient::with_deadline`, `SamplingClient::with_deadline`) or per result
//! ([`Pending::result_with_deadline`]). A call that runs out fails with
//! [`crate::Error::Timeout`] naming its request id and the last queue state. Each call runs in a
//! `tracing` span `tinker.call` (method, client, request id, attempt); queue-state changes reach
//! [`ClientOptions::on_queue_state`] and a rate-limited warning names the reason.
//!
//! # Cancellation
//!
//! Dropping any future or [`Pending`] at any point abandons the call and leaves the ledger
//! consistent (budgets refunded, the training run's turn advanced), so later calls on the same
//! client proceed. A training request dropped before it was sent takes no seq id; one dropped
//! after its turn started sending (some chunks out) is finished by the background task, its
//! result discarded, so the server never waits for a missing seq id.

mod exec;
mod housekeeping;
mod instrumented_http;
mod options;
mod pending;
mod recovery;
mod rest;
mod sampling;
mod service;
#[cfg(feature = "otel")]
mod trace_context;
mod training;

pub use options::{ClientOptions, HeaderInjector, QueueStateEvent, QueueStateObserver};
pub use pending::Pending;
pub use recovery::{Recovered, RecoveryHooks, RecoveryMonitor};
pub use rest::RestClient;
pub use sampling::{SampleStream, SamplingClient};
pub use service::{ClientIo, ServiceClient};
#[cfg(feature = "otel")]
pub use trace_context::{otel_injector, TRACEPARENT, TRACESTATE};
pub use training::{SaveOptions, TrainingClient};

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync + 'static>() {}

    #[test]
    fn every_client_and_handle_can_cross_threads() {
        assert_send_sync::<ServiceClient>();
        assert_send_sync::<TrainingClient>();
        assert_send_sync::<SamplingClient>();
        assert_send_sync::<RestClient>();
        fn assert_send<T: Send>() {}
        assert_send::<Pending<crate::types::ForwardBackwardOutput>>();
    }
}
