//! Checkpoints: snapshots of the LoRA weights (and optionally the optimizer state), and their
//! byte form for the server's checkpoint store and archive downloads.
//!
//! Byte format (version 1, little-endian): the magic `TOYLORA1`, a `u32` header length, a JSON
//! header `{"base_model", "vocab_size", "rank", "seed", "eos_token", "optimizer": "adamw"|"dimuon",
//! "step": null | n}`, then the `f64` arrays column-major: `Aᵀ` (`r × (V+1)`), `Bᵀ` (`V × r`),
//! and — when `step` is not null — the moments `m_A`, `v_A`, `m_B`, `v_B` in the same shapes.
//! The frozen base table is not stored: the base model name regenerates it.

use nalgebra::DMatrix;
use serde::{Deserialize, Serialize};

use super::error::ModelError;
use super::optim::{OptimState, OptimizerKind};
use super::{ModelSpec, ToyModel};

const MAGIC: &[u8; 8] = b"TOYLORA1";

/// A saved model state: `save_weights` (with optimizer) or `save_weights_for_sampler` (weights
/// only).
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    spec: ModelSpec,
    lora_a: DMatrix<f64>,
    lora_b: DMatrix<f64>,
    optim: Option<OptimState>,
}

#[derive(Serialize, Deserialize)]
struct Header {
    base_model: String,
    vocab_size: usize,
    rank: usize,
    seed: u64,
    eos_token: i32,
    optimizer: String,
    step: Option<u64>,
}

impl Snapshot {
    /// The base model the weights belong to.
    pub fn base_model(&self) -> &str {
        &self.spec.base_model
    }

    /// The LoRA rank.
    pub fn rank(&self) -> usize {
        self.spec.rank
    }

    /// The vocabulary size.
    pub fn vocab_size(&self) -> usize {
        self.spec.vocab_size
    }

    /// Whether optimizer state is included (a training checkpoint rather than sampler weights).
    pub fn has_optimizer_state(&self) -> bool {
        self.optim.is_some()
    }

    /// The optimizer step count, when optimizer state is included.
    pub fn step(&self) -> Option<u64> {
        self.optim.as_ref().map(|o| o.step)
    }

    /// The same snapshot without optimizer state.
    pub fn weights_only(&self) -> Snapshot {
        Snapshot {
            optim: None,
            ..self.clone()
        }
    }

    /// Serialises the snapshot (format in the module docs). Deterministic and bit-exact.
    pub fn to_bytes(&self) -> Vec<u8> {
        let header = Header {
            base_model: self.spec.base_model.clone(),
            vocab_size: self.spec.vocab_size,
            rank: self.spec.rank,
            seed: self.spec.seed,
            eos_token: self.spec.eos_token,
            optimizer: self.spec.optimizer.name().to_string(),
            step: self.step(),
        };
        let header = serde_json::to_vec(&header).unwrap_or_default();
        let mut out = Vec::with_capacity(12 + header.len() + 8 * 6 * self.lora_b.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&(header.len() as u32).to_le_bytes());
        out.extend_from_slice(&header);
        let mut put = |m: &DMatrix<f64>| {
            for x in m.iter() {
                out.extend_from_slice(&x.to_le_bytes());
            }
        };
        put(&self.lora_a);
        put(&self.lora_b);
        if let Some(o) = &self.optim {
            for m in [&o.m_a, &o.v_a, &o.m_b, &o.v_b] {
                put(m);
            }
        }
        out
    }

    /// Parses [`Snapshot::to_bytes`] output. Anything malformed is a server-category error (a
    /// corrupt checkpoint in the server's own store), never a panic.
    pub fn from_bytes(bytes: &[u8]) -> Result<Snapshot, ModelError> {
        let bad = |why: &str| ModelError::server(format!("corrupt toy-model checkpoint: {why}"));
        if bytes.len() < 12 || &bytes[..8] != MAGIC {
            return Err(bad("missing the TOYLORA1 magic"));
        }
        let header_len = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize;
        let body_start = 12usize
            .checked_add(header_len)
            .filter(|&e| e <= bytes.len())
            .ok_or_else(|| bad("header runs past the end"))?;
        let header: Header = serde_json::from_slice(&bytes[12..body_start])
            .map_err(|e| bad(&format!("header: {e}")))?;
        let optimizer = OptimizerKind::from_name(&header.optimizer)
            .ok_or_else(|| bad(&format!("unknown optimizer {}", header.optimizer)))?;
        let spec = ModelSpec {
            base_model: header.base_model,
            vocab_size: header.vocab_size,
            rank: header.rank,
            seed: header.seed,
            optimizer,
            eos_token: header.eos_token,
        };
        spec.validate().map_err(|e| bad(&e.message))?;
        let (r, v) = (spec.rank, spec.vocab_size);
        let per = r * (v + 1) + v * r;
        let matrices = if header.step.is_some() { 3 * per } else { per };
        let body = &bytes[body_start..];
        if body.len() != 8 * matrices {
            return Err(bad(&format!(
                "expected {} bytes of weights, found {}",
                8 * matrices,
                body.len()
            )));
        }
        let mut values = body
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]));
        let mut take = |rows: usize, cols: usize| {
            DMatrix::from_iterator(rows, cols, values.by_ref().take(rows * cols))
        };
        let lora_a = take(r, v + 1);
        let lora_b = take(v, r);
        let optim = header.step.map(|step| OptimState {
            step,
            m_a: take(r, v + 1),
            v_a: take(r, v + 1),
            m_b: take(v, r),
            v_b: take(v, r),
        });
        Ok(Snapshot {
            spec,
            lora_a,
            lora_b,
            optim,
        })
    }
}

impl ToyModel {
    /// A training checkpoint: weights, optimizer moments and step count (`save_weights`).
    /// Accumulated, not yet applied gradients are not part of it.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            spec: self.spec.clone(),
            lora_a: self.lora_a.clone(),
            lora_b: self.lora_b.clone(),
            optim: Some(self.optim.clone()),
        }
    }

    /// Sampler weights: the LoRA weights only (`save_weights_for_sampler`).
    pub fn sampler_snapshot(&self) -> Snapshot {
        self.snapshot().weights_only()
    }

    /// Builds a model from a checkpoint (create-via-load, or a sampler for saved weights).
    /// With `with_optimizer` the optimizer state is restored too (an error if it has none).
    pub fn from_snapshot(
        snapshot: &Snapshot,
        with_optimizer: bool,
    ) -> Result<ToyModel, ModelError> {
        let mut model = ToyModel::new(snapshot.spec.clone())?;
        model.restore(snapshot, with_optimizer)?;
        Ok(model)
    }

    /// `load_weights` into this model: replaces the LoRA weights; with `with_optimizer` also the
    /// optimizer moments and step count, otherwise the optimizer starts fresh (step 0). Pending
    /// gradients are dropped. The checkpoint must match base model, vocabulary and rank.
    pub fn restore(&mut self, snapshot: &Snapshot, with_optimizer: bool) -> Result<(), ModelError> {
        let (have, want) = (&snapshot.spec, &self.spec);
        if have.base_model != want.base_model
            || have.vocab_size != want.vocab_size
            || have.rank != want.rank
        {
            return Err(ModelError::user(format!(
                "checkpoint is for base model `{}` (vocab {}, rank {}) but this model is `{}` (vocab {}, rank {})",
                have.base_model, have.vocab_size, have.rank, want.base_model, want.vocab_size, want.rank
            )));
        }
        let optim = if with_optimizer {
            if have.optimizer != want.optimizer {
                return Err(ModelError::user(format!(
                    "checkpoint optimizer state is `{}` but this model uses `{}`",
                    have.optimizer.name(),
                    want.optimizer.name()
                )));
            }
            snapshot.optim.clone().ok_or_else(|| {
                ModelError::user(
                    "checkpoint holds sampler weights only; it has no optimizer state to load",
                )
            })?
        } else {
            OptimState::new(want.rank, want.vocab_size)
        };
        self.lora_a = snapshot.lora_a.clone();
        self.lora_b = snapshot.lora_b.clone();
        self.optim = optim;
        self.clear_gradients();
        Ok(())
    }
}
