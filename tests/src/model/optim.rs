//! optim_step: AdamW (protocol.md 9.8) or the Dimuon stand-in, applied to the accumulated gradients.

use std::collections::BTreeMap;

use nalgebra::DMatrix;

use super::error::ModelError;
use super::ToyModel;

/// The optimizer family a model is created with (`optimizer_config.type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OptimizerKind {
    /// `{"type": "adamw"}`, the default.
    AdamW,
    /// `{"type": "dimuon"}`. The real Dimuon is unpublished; the toy model runs SGD with
    /// heavy-ball momentum (`buf = β₁·buf + g; θ −= lr·buf`), so training still moves.
    Dimuon,
}

impl OptimizerKind {
    /// The wire name.
    pub fn name(self) -> &'static str {
        match self {
            OptimizerKind::AdamW => "adamw",
            OptimizerKind::Dimuon => "dimuon",
        }
    }

    /// Parses a wire name.
    pub fn from_name(name: &str) -> Option<OptimizerKind> {
        match name {
            "adamw" => Some(OptimizerKind::AdamW),
            "dimuon" => Some(OptimizerKind::Dimuon),
            _ => None,
        }
    }
}

/// `adam_params` of an optim_step (defaults as in the SDK, protocol.md 9.8).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamParams {
    /// Step size.
    pub learning_rate: f64,
    /// First-moment decay.
    pub beta1: f64,
    /// Second-moment decay.
    pub beta2: f64,
    /// Denominator epsilon.
    pub eps: f64,
    /// Decoupled (AdamW) weight decay: `θ ← θ·(1 − lr·wd)` before the Adam update.
    pub weight_decay: f64,
    /// Global-norm gradient clipping threshold; ≤ 0 disables it.
    pub grad_clip_norm: f64,
}

impl Default for AdamParams {
    fn default() -> AdamParams {
        AdamParams {
            learning_rate: 1e-4,
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-12,
            weight_decay: 0.0,
            grad_clip_norm: 0.0,
        }
    }
}

/// `optimizer_params` of type `dimuon` (protocol.md 9.8).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DimuonParams {
    /// Step size.
    pub learning_rate: f64,
    /// Global-norm gradient clipping threshold; ≤ 0 disables it.
    pub grad_clip_norm: f64,
    /// Momentum.
    pub beta1: f64,
}

impl Default for DimuonParams {
    fn default() -> DimuonParams {
        DimuonParams {
            learning_rate: 0.02,
            grad_clip_norm: 0.0,
            beta1: 0.9,
        }
    }
}

/// The step parameters of one optim_step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum OptimParams {
    /// For AdamW models.
    Adam(AdamParams),
    /// For Dimuon models.
    Dimuon(DimuonParams),
}

/// Optimizer state: step count and moment estimates, shaped like the LoRA factors.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct OptimState {
    pub step: u64,
    pub m_a: DMatrix<f64>,
    pub v_a: DMatrix<f64>,
    pub m_b: DMatrix<f64>,
    pub v_b: DMatrix<f64>,
}

impl OptimState {
    pub fn new(rank: usize, vocab: usize) -> OptimState {
        OptimState {
            step: 0,
            m_a: DMatrix::zeros(rank, vocab + 1),
            v_a: DMatrix::zeros(rank, vocab + 1),
            m_b: DMatrix::zeros(vocab, rank),
            v_b: DMatrix::zeros(vocab, rank),
        }
    }
}

impl ToyModel {
    /// Applies one optimizer step to the gradients accumulated since the last step, then clears
    /// them. Returns the metrics `grad_norm:mean` (global L2 norm before clipping) and
    /// `learning_rate:mean`. Parameters of the wrong family or out of range are user errors, and
    /// the model is left unchanged.
    pub fn optim_step(
        &mut self,
        params: &OptimParams,
    ) -> Result<BTreeMap<String, f64>, ModelError> {
        let (lr, clip) = match (self.spec.optimizer, params) {
            (OptimizerKind::AdamW, OptimParams::Adam(p)) => {
                check_adam(p)?;
                (p.learning_rate, p.grad_clip_norm)
            }
            (OptimizerKind::Dimuon, OptimParams::Dimuon(p)) => {
                check_range("learning_rate", p.learning_rate, 0.0, f64::INFINITY)?;
                check_range("beta1", p.beta1, 0.0, 1.0)?;
                check_finite("grad_clip_norm", p.grad_clip_norm)?;
                (p.learning_rate, p.grad_clip_norm)
            }
            (kind, _) => {
                return Err(ModelError::user(format!(
                    "optim_step: the model was created with optimizer `{}` and cannot take parameters for another optimizer",
                    kind.name()
                )))
            }
        };
        let grad_norm = self.grad_norm();
        if clip > 0.0 && grad_norm > clip {
            let scale = clip / grad_norm;
            self.grad_a *= scale;
            self.grad_b *= scale;
        }
        let s = &mut self.optim;
        s.step += 1;
        match params {
            OptimParams::Adam(p) => {
                let t = s.step as i32;
                let c1 = 1.0 - p.beta1.powi(t);
                let c2 = 1.0 - p.beta2.powi(t);
                for (theta, g, m, v) in [
                    (&mut self.lora_a, &self.grad_a, &mut s.m_a, &mut s.v_a),
                    (&mut self.lora_b, &self.grad_b, &mut s.m_b, &mut s.v_b),
                ] {
                    let it = theta
                        .iter_mut()
                        .zip(g.iter())
                        .zip(m.iter_mut())
                        .zip(v.iter_mut());
                    for (((theta, &g), m), v) in it {
                        *m = p.beta1 * *m + (1.0 - p.beta1) * g;
                        *v = p.beta2 * *v + (1.0 - p.beta2) * g * g;
                        // torch.optim.AdamW: decay first, then the bias-corrected Adam update.
                        *theta *= 1.0 - p.learning_rate * p.weight_decay;
                        *theta -= p.learning_rate * (*m / c1) / ((*v / c2).sqrt() + p.eps);
                    }
                }
            }
            OptimParams::Dimuon(p) => {
                for (theta, g, m) in [
                    (&mut self.lora_a, &self.grad_a, &mut s.m_a),
                    (&mut self.lora_b, &self.grad_b, &mut s.m_b),
                ] {
                    for ((theta, &g), m) in theta.iter_mut().zip(g.iter()).zip(m.iter_mut()) {
                        *m = p.beta1 * *m + g;
                        *theta -= p.learning_rate * *m;
                    }
                }
            }
        }
        self.clear_gradients();
        let mut metrics = BTreeMap::new();
        metrics.insert("grad_norm:mean".to_string(), grad_norm);
        metrics.insert("learning_rate:mean".to_string(), lr);
        Ok(metrics)
    }
}

fn check_adam(p: &AdamParams) -> Result<(), ModelError> {
    check_range("learning_rate", p.learning_rate, 0.0, f64::INFINITY)?;
    check_range("beta1", p.beta1, 0.0, 1.0)?;
    check_range("beta2", p.beta2, 0.0, 1.0)?;
    check_range("eps", p.eps, 0.0, f64::INFINITY)?;
    check_range("weight_decay", p.weight_decay, 0.0, f64::INFINITY)?;
    check_finite("grad_clip_norm", p.grad_clip_norm)
}

/// `lo ≤ x < hi`, finite.
fn check_range(name: &str, x: f64, lo: f64, hi: f64) -> Result<(), ModelError> {
    check_finite(name, x)?;
    if x < lo || x >= hi {
        return Err(ModelError::user(format!(
            "optim_step.{name}: {x} is outside [{lo}, {hi})"
        )));
    }
    Ok(())
}

fn check_finite(name: &str, x: f64) -> Result<(), ModelError> {
    if !x.is_finite() {
        return Err(ModelError::user(format!(
            "optim_step.{name}: {x} is not a finite number"
        )));
    }
    Ok(())
}
