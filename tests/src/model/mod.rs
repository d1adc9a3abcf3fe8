//! The toy model behind the local Tinker server: a real, tiny, trainable language model.
//!
//! Results of tests, examples and benchmarks run against the local server must mean something, so
//! the server trains an actual model rather than echoing canned numbers. The model is a **bigram
//! language model with a LoRA adapter**, computed in `f64`:
//!
//! * vocabulary of `V` token ids (`ModelSpec::vocab_size`, default 512); ids outside `0..V` are a
//!   user error;
//! * a frozen base logits table `W` with one row per context: the `V` tokens plus one extra
//!   **media context** that every position of a non-text chunk (image, image pointer, dmel) reads
//!   as — so multimodal inputs have the right length and train like any other position. `W` is
//!   `N(0, 2²)` noise generated from a hash of the base model name (and `V`): the same name always
//!   gives the same base model;
//! * trainable LoRA factors `A` (`(V + 1) × r`, small random from `ModelSpec::seed`) and `B`
//!   (`r × V`, zeros), as LoRA initialises them, so a fresh adapter equals the base model. There is
//!   no `alpha / r` scaling (it would only rescale the learning rate);
//! * `logits(prev) = W[prev] + A[prev] · B`: the prediction at position *i* depends only on the
//!   token (or media position) at *i*, which is the next-token alignment of losses.md §1.1.
//!
//! A batch is evaluated per **distinct context**, not per token: the logits of the (at most
//! `V + 1`) contexts a batch uses are one matrix product `W + Bᵀ·A` over those columns, and the
//! backward pass is two more; each token then costs O(1). A 128 × 512-token `forward_backward`
//! takes well under 0.1 s in release builds (see `tests/timing.rs`).
//!
//! # What it implements
//!
//! * [`ToyModel::forward`] / [`ToyModel::forward_backward`]: every built-in loss of losses.md
//!   (`cross_entropy`, `importance_sampling`, `ppo`, `cispo`, `dro`, `gspo`, and a documented
//!   stand-in for `stable_reinforce`), with the per-datum `logprobs` and `elementwise_loss` outputs
//!   and the `loss:sum` metric; see [`BuiltinLoss`]. Other losses (a server-side `custom` graph)
//!   plug in through the [`LossFunction`] trait and [`ToyModel::forward_backward_with`].
//!   Gradients **accumulate** across `forward_backward` calls until [`ToyModel::optim_step`]
//!   (losses.md §1.3), which applies AdamW (or a Dimuon stand-in) and clears them.
//! * [`ToyModel::snapshot`] / [`ToyModel::restore`] / [`Snapshot::to_bytes`]: checkpoints with or
//!   without optimizer state, bit-exact.
//! * [`ToyModel::sample`]: temperature / top-k / top-p sampling with a seed, stop tokens, stop
//!   strings (through the [byte tokenizer](tokenizer)), implicit EOS, prompt logprobs and top-k
//!   logprobs.
//!
//! The model knows nothing about HTTP, sessions or futures; the server wraps it.
//!
//! ```
//! use std::collections::BTreeMap;
//! use tinker_core::types::{Datum, ModelInput, TensorData};
//! use tinker_testkit::model::{AdamParams, LossConfig, ModelSpec, OptimParams, ToyModel};
//!
//! let mut model = ToyModel::new(ModelSpec::new("Qwen/Qwen3-8B", 8)).unwrap();
//! // "1 2 3 4": read 1 2 3, predict 2 3 4.
//! let datum = Datum::new(ModelInput::from_tokens(vec![1, 2, 3]))
//!     .with_input("target_tokens", TensorData::from_i64(vec![2, 3, 4]))
//!     .with_input("weights", TensorData::from_f32(vec![1.0, 1.0, 1.0]));
//! let out = model
//!     .forward_backward(&[datum], "cross_entropy", &LossConfig::default())
//!     .unwrap();
//! assert!(out.metrics["loss:sum"] > 0.0);
//! let metrics = model.optim_step(&OptimParams::Adam(AdamParams::default())).unwrap();
//! assert!(metrics["grad_norm:mean"] > 0.0);
//! ```

mod checkpoint;
mod error;
mod inputs;
mod losses;
mod optim;
mod rng;
mod sampling;
pub mod tokenizer;
mod train;

#[cfg(test)]
mod tests;

use nalgebra::{DMatrix, DVector};
use tinker_core::types::TokenId;

pub use checkpoint::Snapshot;
pub use error::ModelError;
pub use inputs::{positions, Position};
pub use losses::{BuiltinLoss, DatumLoss, LossConfig, LossFunction, LossInputs};
pub use optim::{AdamParams, DimuonParams, OptimParams, OptimizerKind};
pub use rng::{hash_name, SplitMix64};
pub use sampling::{
    SampleResult, SampleSettings, SampledSequence, Stop, StopReason, TopLogprobs,
    DEFAULT_MAX_TOKENS,
};
pub use train::ForwardOutput;

use optim::OptimState;

/// Default vocabulary size.
pub const DEFAULT_VOCAB_SIZE: usize = 512;
/// Largest LoRA rank the toy model accepts (keeps memory bounded; real services cap rank too).
pub const MAX_RANK: usize = 1024;
/// Largest vocabulary the toy model accepts (the base table is `(V + 1) × V` doubles).
pub const MAX_VOCAB_SIZE: usize = 8192;
/// Standard deviation of the base logits.
const BASE_LOGIT_SCALE: f64 = 2.0;

/// What model to build: the `create_model` request, reduced to what a bigram model needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelSpec {
    /// Base model name; its hash seeds the frozen base weights.
    pub base_model: String,
    /// Vocabulary size `V` (token ids `0..V`).
    pub vocab_size: usize,
    /// LoRA rank `r` (0 = the bare base model, nothing to train).
    pub rank: usize,
    /// Seed of the LoRA initialisation (`A`).
    pub seed: u64,
    /// The optimizer family fixed at creation (protocol.md 9.8).
    pub optimizer: OptimizerKind,
    /// End-of-sequence token: sampling stops on it when `stop` is null.
    pub eos_token: TokenId,
}

impl ModelSpec {
    /// A spec with the defaults: vocabulary 512, seed 0, AdamW, EOS token 0.
    pub fn new(base_model: impl Into<String>, rank: usize) -> ModelSpec {
        ModelSpec {
            base_model: base_model.into(),
            vocab_size: DEFAULT_VOCAB_SIZE,
            rank,
            seed: 0,
            optimizer: OptimizerKind::AdamW,
            eos_token: 0,
        }
    }

    /// Sets the vocabulary size.
    pub fn with_vocab_size(mut self, vocab_size: usize) -> ModelSpec {
        self.vocab_size = vocab_size;
        self
    }

    /// Sets the LoRA initialisation seed.
    pub fn with_seed(mut self, seed: u64) -> ModelSpec {
        self.seed = seed;
        self
    }

    /// Sets the optimizer family.
    pub fn with_optimizer(mut self, optimizer: OptimizerKind) -> ModelSpec {
        self.optimizer = optimizer;
        self
    }

    /// Sets the end-of-sequence token.
    pub fn with_eos_token(mut self, eos_token: TokenId) -> ModelSpec {
        self.eos_token = eos_token;
        self
    }

    fn validate(&self) -> Result<(), ModelError> {
        if self.vocab_size < 2 || self.vocab_size > MAX_VOCAB_SIZE {
            return Err(ModelError::user(format!(
                "vocab_size {} is outside 2..={MAX_VOCAB_SIZE}",
                self.vocab_size
            )));
        }
        if self.rank > MAX_RANK {
            return Err(ModelError::user(format!(
                "lora rank {} is larger than the toy model's maximum {MAX_RANK}",
                self.rank
            )));
        }
        if self.eos_token < 0 || self.eos_token as usize >= self.vocab_size {
            return Err(ModelError::user(format!(
                "eos_token {} is outside the vocabulary 0..{}",
                self.eos_token, self.vocab_size
            )));
        }
        Ok(())
    }
}

/// The toy language model: frozen bigram base plus a trainable LoRA adapter, with accumulated
/// gradients and optimizer state.
///
/// Parameters are stored transposed so that everything one context needs is a contiguous column:
/// `base` is `V × (V+1)` (column `c` = `W[c]`), `lora_a` is `r × (V+1)` (column `c` = `A[c]`),
/// `lora_b` is `V × r` (`Bᵀ`).
#[derive(Debug, Clone)]
pub struct ToyModel {
    spec: ModelSpec,
    base: DMatrix<f64>,
    lora_a: DMatrix<f64>,
    lora_b: DMatrix<f64>,
    grad_a: DMatrix<f64>,
    grad_b: DMatrix<f64>,
    /// forward_backward calls whose gradients wait for the next optim_step.
    pending_backwards: u64,
    optim: OptimState,
}

impl ToyModel {
    /// Builds a fresh model: base weights from the base model name, LoRA `A` random from the seed,
    /// `B` zero (so the fresh adapter changes nothing).
    pub fn new(spec: ModelSpec) -> Result<ToyModel, ModelError> {
        spec.validate()?;
        let (v, r) = (spec.vocab_size, spec.rank);
        let base = base_weights(&spec.base_model, v);
        let mut rng = SplitMix64::new(spec.seed ^ 0x4C6F_5241_5F41_0001);
        let scale = if r == 0 { 0.0 } else { 1.0 / (r as f64).sqrt() };
        let lora_a = DMatrix::from_fn(r, v + 1, |_, _| rng.next_normal() * scale);
        let lora_b = DMatrix::zeros(v, r);
        Ok(ToyModel {
            grad_a: DMatrix::zeros(r, v + 1),
            grad_b: DMatrix::zeros(v, r),
            optim: OptimState::new(r, v),
            pending_backwards: 0,
            spec,
            base,
            lora_a,
            lora_b,
        })
    }

    /// The spec the model was built from.
    pub fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    /// Vocabulary size `V`.
    pub fn vocab_size(&self) -> usize {
        self.spec.vocab_size
    }

    /// Optimizer steps taken so far (restored with the optimizer state).
    pub fn step(&self) -> u64 {
        self.optim.step
    }

    /// forward_backward calls accumulated since the last optim_step (or restore).
    pub fn pending_backwards(&self) -> u64 {
        self.pending_backwards
    }

    /// The L2 norm of the accumulated gradient over all LoRA parameters.
    pub fn grad_norm(&self) -> f64 {
        (self.grad_a.norm_squared() + self.grad_b.norm_squared()).sqrt()
    }

    /// Log-probabilities of every next token after `position` (length `V`, temperature 1).
    pub fn next_token_logprobs(&self, position: Position) -> Result<Vec<f64>, ModelError> {
        let ctx = self.context(position)?;
        let z = self.logits(ctx);
        let lse = log_sum_exp(z.as_slice());
        Ok(z.iter().map(|x| x - lse).collect())
    }

    /// The context index of a position (its column in the parameter tables).
    fn context(&self, position: Position) -> Result<usize, ModelError> {
        match position {
            Position::Media => Ok(self.spec.vocab_size),
            Position::Token(t) => self.token_index(i64::from(t), "token"),
        }
    }

    /// Checks a token id against the vocabulary.
    fn token_index(&self, t: i64, location: &str) -> Result<usize, ModelError> {
        if t < 0 || t as u64 >= self.spec.vocab_size as u64 {
            return Err(ModelError::user(format!(
                "{location}: token id {t} is outside the vocabulary 0..{} of the toy model",
                self.spec.vocab_size
            )));
        }
        Ok(t as usize)
    }

    /// The logits row of a context: `W[ctx] + A[ctx] · B`.
    fn logits(&self, ctx: usize) -> DVector<f64> {
        let mut z = self.base.column(ctx).into_owned();
        if self.spec.rank > 0 {
            z.gemv(1.0, &self.lora_b, &self.lora_a.column(ctx), 1.0);
        }
        z
    }

    fn clear_gradients(&mut self) {
        self.grad_a.fill(0.0);
        self.grad_b.fill(0.0);
        self.pending_backwards = 0;
    }
}

/// The frozen base table for a model name: `N(0, BASE_LOGIT_SCALE²)`, seeded by the name and `V`.
fn base_weights(base_model: &str, vocab_size: usize) -> DMatrix<f64> {
    let seed = hash_name(base_model) ^ (vocab_size as u64).rotate_left(32);
    let mut rng = SplitMix64::new(seed);
    DMatrix::from_fn(vocab_size, vocab_size + 1, |_, _| {
        rng.next_normal() * BASE_LOGIT_SCALE
    })
}

/// `log Σ exp(x)`, stable for any finite input.
fn log_sum_exp(x: &[f64]) -> f64 {
    let max = x.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if !max.is_finite() {
        return max;
    }
    max + x.iter().map(|v| (v - max).exp()).sum::<f64>().ln()
}
