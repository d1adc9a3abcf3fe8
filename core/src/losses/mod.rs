//! Client-side custom losses: the math behind `forward_backward_custom` (protocol.md 11.3,
//! losses.md 9.1, tinkex_features.md 2.8 and 2.20).
//!
//! Rust has no autograd at hand, so a custom loss here returns its value **and** its exact
//! gradient with respect to the per-token logprobs of the forward pass. The client then sends the
//! backward pass with `weights = −gradient` under `cross_entropy`, whose parameter gradient is the
//! custom loss's by the chain rule.
//!
//! * [`custom`]: the [`CustomLoss`] interface, the [`LogprobBatch`] it reads, and the pure wire
//!   helpers a client calls around it (forward-pass datums, logprob extraction, backward-pass
//!   weights, the SDK 0.38 metric rewrite).
//! * [`Dpo`] and [`ReverseKlDistillation`]: ready-made losses for preference training and
//!   on-policy distillation.
//! * [`regularizers`]: the eight structured penalties of Tinkex (L1, L2, elastic net, entropy,
//!   KL divergence, consistency, gradient penalty, orthogonality), each with its exact gradient.
//! * [`server_side`]: losses recorded as graphs, uploaded with `create_custom_loss` and run by
//!   the server (protocol.md 11.4), or evaluated on the client like any [`CustomLoss`].
//! * [`RegularizerPipeline`]: a base loss plus weighted regularizers as one [`CustomLoss`], with
//!   per-regularizer metrics and gradient norms, evaluated sequentially here or in parallel by a
//!   runtime through an [`Executor`].
//!
//! Everything is pure: no I/O, no threads, no randomness. Inputs are plain `&[Vec<f64>]` rows (one
//! row per datum, aligned with its `target_tokens`); nalgebra is an implementation detail.

pub mod custom;
mod distill;
mod dpo;
mod pipeline;
pub mod regularizers;
pub mod server_side;

#[cfg(test)]
mod tests;

pub use custom::{
    backward_pass_data, evaluate_custom_loss, extract_logprobs, forward_pass_data,
    merge_custom_metrics, negated_gradient_weights, CustomLoss, CustomLossOutput, LogprobBatch,
};
pub use distill::{KlEstimator, ReverseKlDistillation};
pub use dpo::{Dpo, DpoPairing, ReferenceLogprobs};
pub use pipeline::{
    gradient_norm, Executor, PipelineOutput, RegularizerJob, RegularizerOutput,
    RegularizerPipeline, Sequential,
};
pub use regularizers::{Reference, Regularizer};
