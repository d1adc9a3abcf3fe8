//! The built-in loss functions of losses.md, as functions of the per-token target logprobs `lp`.
//!
//! Each loss turns one datum's `lp` (and its `loss_fn_inputs`) into the datum's loss, the
//! per-token `elementwise_loss` whose sum is that loss, and the gradient `g = ∂L/∂lp` that the
//! model back-propagates. Formulas and defaults are losses.md §§2–8 and its summary table §10;
//! where losses.md marks something UNDETERMINED, the suggested emulator behaviour is used and
//! named below.

use std::collections::BTreeMap;

use tinker_core::types::Datum;

use super::error::ModelError;
use super::inputs::float_input;

/// A request's `loss_fn_config`: numbers (0.25 `loss_fn_config`, 0.38 `loss_fn_config_v2`
/// numbers) and strings (0.38 `loss_fn_config_v2` texts, e.g. `custom`'s `loss_id`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LossConfig {
    /// Numeric settings, e.g. `clip_low_threshold`.
    pub numbers: BTreeMap<String, f64>,
    /// String settings, e.g. `loss_id`.
    pub texts: BTreeMap<String, String>,
}

impl LossConfig {
    /// Adds a numeric setting.
    pub fn with_number(mut self, key: impl Into<String>, value: f64) -> LossConfig {
        self.numbers.insert(key.into(), value);
        self
    }

    /// Adds a string setting.
    pub fn with_text(mut self, key: impl Into<String>, value: impl Into<String>) -> LossConfig {
        self.texts.insert(key.into(), value.into());
        self
    }
}

/// The `loss_fn_inputs` a built-in loss reads besides `target_tokens`, as dense `f64` vectors
/// laid out like `lp` (row-major).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LossInputs {
    /// `weights` (cross_entropy).
    pub weights: Option<Vec<f64>>,
    /// `logprobs`: the sampler's logprobs `sp` (RL losses).
    pub sampling_logprobs: Option<Vec<f64>>,
    /// `advantages` (RL losses).
    pub advantages: Option<Vec<f64>>,
    /// `sequence_ratio_mask` (gspo).
    pub sequence_ratio_mask: Option<Vec<f64>>,
    /// Per-token `clip_low_threshold`, overriding the config scalar (ppo, cispo, gspo).
    pub clip_low: Option<Vec<f64>>,
    /// Per-token `clip_high_threshold`, overriding the config scalar (ppo, cispo, gspo).
    pub clip_high: Option<Vec<f64>>,
}

/// One datum's result of a loss.
#[derive(Debug, Clone, PartialEq)]
pub struct DatumLoss {
    /// The datum's loss; the request's `loss:sum` is the sum over datums.
    pub loss: f64,
    /// Per-token loss terms (returned as `elementwise_loss`, shaped like `target_tokens`).
    pub elementwise: Option<Vec<f64>>,
    /// `∂loss/∂lp`, laid out like `lp`.
    pub grad: Vec<f64>,
}

/// A loss the model can train with: the built-ins, or anything a server plugs in (e.g. an
/// interpreter of uploaded `custom` loss graphs).
pub trait LossFunction {
    /// The `loss_fn_output_type` string of the response.
    fn output_type(&self) -> String;

    /// Whether `target_tokens` may be 2-D `(N, K)`.
    fn allows_2d_targets(&self) -> bool;

    /// Computes one datum's loss from its target logprobs `lp` (row-major, `shape` = the shape of
    /// `target_tokens`). `at` names the datum in errors (`data[3]`).
    fn datum_loss(
        &self,
        datum: &Datum,
        at: &str,
        lp: &[f64],
        shape: &[usize],
    ) -> Result<DatumLoss, ModelError>;
}

/// Default `clip_low_threshold` / `clip_high_threshold` of `ppo` (losses.md §4).
pub const PPO_CLIP: (f64, f64) = (0.8, 1.2);
/// Default thresholds of `cispo`: the one-sided clip of the current service (losses.md §5).
pub const CISPO_CLIP: (f64, f64) = (0.0, 4.0);
/// Default thresholds of `gspo`: UNDETERMINED in losses.md §7; its suggested guess (PPO's).
pub const GSPO_CLIP: (f64, f64) = (0.8, 1.2);
/// Default `beta` of `dro`: UNDETERMINED; losses.md §6 suggests the docs' example value.
pub const DRO_BETA: f64 = 0.05;
/// Default `kl_coeff` of the `stable_reinforce` stand-in: UNDETERMINED; 0 makes it plain
/// importance sampling unless the caller asks for the regulariser.
pub const STABLE_REINFORCE_KL: f64 = 0.0;

/// The losses of losses.md, with their configuration resolved.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum BuiltinLoss {
    /// `−Σ w·lp`; targets may be `(N, K)` (top-K distillation).
    CrossEntropy,
    /// `−Σ exp(lp − sp)·A`.
    ImportanceSampling,
    /// Token-wise clipped surrogate `−Σ min(r·A, clamp(r, lo, hi)·A)`.
    Ppo {
        /// Lower ratio bound.
        clip_low: f64,
        /// Upper ratio bound.
        clip_high: f64,
    },
    /// `−Σ sg(clamp(r, lo, hi))·lp·A`.
    Cispo {
        /// Lower ratio bound.
        clip_low: f64,
        /// Upper ratio bound.
        clip_high: f64,
    },
    /// `−Σ (lp·A − ½β(lp − sp)²)`, applied literally to every position (also where A = 0).
    Dro {
        /// Penalty strength β.
        beta: f64,
    },
    /// PPO with one detached sequence ratio `s = exp(mean_M(lp − sp))` per datum.
    Gspo {
        /// Lower ratio bound.
        clip_low: f64,
        /// Upper ratio bound.
        clip_high: f64,
    },
    /// Stand-in for the undocumented `stable_reinforce` (losses.md §8): importance sampling with
    /// `sp` = `loss_fn_inputs["logprobs"]` plus `kl_coeff · Σ ½(lp − sp)²`. The server is expected
    /// to check provenance spans against its sample records and to fill `logprobs` with the
    /// recorded sampler logprobs when the client did not send them.
    StableReinforce {
        /// Weight of the quadratic regulariser.
        kl_coeff: f64,
    },
}

/// Every loss name the toy model knows, for error messages.
const KNOWN: &str =
    "cross_entropy, importance_sampling, ppo, cispo, dro, gspo, stable_reinforce (custom: via LossFunction)";

impl BuiltinLoss {
    /// Resolves a request's `loss_fn` and `loss_fn_config`, rejecting unknown names, unknown or
    /// string-valued keys and invalid values (lo > hi, negative β) as user errors (losses.md §1.5).
    pub fn from_request(name: &str, config: &LossConfig) -> Result<BuiltinLoss, ModelError> {
        let (loss, keys): (BuiltinLoss, &[&str]) = match name {
            "cross_entropy" => (BuiltinLoss::CrossEntropy, &[]),
            "importance_sampling" => (BuiltinLoss::ImportanceSampling, &[]),
            "ppo" | "cispo" | "gspo" => {
                let (lo0, hi0) = match name {
                    "ppo" => PPO_CLIP,
                    "cispo" => CISPO_CLIP,
                    _ => GSPO_CLIP,
                };
                let lo = number(config, "clip_low_threshold", lo0)?;
                let hi = number(config, "clip_high_threshold", hi0)?;
                if lo > hi {
                    return Err(ModelError::user(format!(
                        "loss_fn_config: clip_low_threshold {lo} is greater than clip_high_threshold {hi}"
                    )));
                }
                let (clip_low, clip_high) = (lo, hi);
                let loss = match name {
                    "ppo" => BuiltinLoss::Ppo {
                        clip_low,
                        clip_high,
                    },
                    "cispo" => BuiltinLoss::Cispo {
                        clip_low,
                        clip_high,
                    },
                    _ => BuiltinLoss::Gspo {
                        clip_low,
                        clip_high,
                    },
                };
                (loss, &["clip_low_threshold", "clip_high_threshold"])
            }
            "dro" => {
                let beta = number(config, "beta", DRO_BETA)?;
                if beta < 0.0 {
                    return Err(ModelError::user(format!(
                        "loss_fn_config.beta: must be ≥ 0, got {beta}"
                    )));
                }
                (BuiltinLoss::Dro { beta }, &["beta"])
            }
            "stable_reinforce" => {
                let kl_coeff = number(config, "kl_coeff", STABLE_REINFORCE_KL)?;
                if kl_coeff < 0.0 {
                    return Err(ModelError::user(format!(
                        "loss_fn_config.kl_coeff: must be ≥ 0, got {kl_coeff}"
                    )));
                }
                (BuiltinLoss::StableReinforce { kl_coeff }, &["kl_coeff"])
            }
            "custom" => {
                let id = config
                    .texts
                    .get("loss_id")
                    .map(String::as_str)
                    .unwrap_or("?");
                return Err(ModelError::user(format!(
                    "loss_fn `custom` (loss_id {id}) is not a built-in loss; this server runs no uploaded loss graphs, so use forward_backward_custom client-side"
                )));
            }
            other => {
                return Err(ModelError::user(format!(
                    "unknown loss_fn `{other}`; known: {KNOWN}"
                )))
            }
        };
        if let Some(key) = config.numbers.keys().find(|k| !keys.contains(&k.as_str())) {
            return Err(ModelError::user(format!(
                "loss_fn_config.{key}: not a setting of loss `{name}` (accepted: {keys:?})"
            )));
        }
        if let Some(key) = config.texts.keys().next() {
            return Err(ModelError::user(format!(
                "loss_fn_config.{key}: loss `{name}` takes no string settings"
            )));
        }
        Ok(loss)
    }

    /// The wire name.
    pub fn name(&self) -> &'static str {
        match self {
            BuiltinLoss::CrossEntropy => "cross_entropy",
            BuiltinLoss::ImportanceSampling => "importance_sampling",
            BuiltinLoss::Ppo { .. } => "ppo",
            BuiltinLoss::Cispo { .. } => "cispo",
            BuiltinLoss::Dro { .. } => "dro",
            BuiltinLoss::Gspo { .. } => "gspo",
            BuiltinLoss::StableReinforce { .. } => "stable_reinforce",
        }
    }

    /// `(required, optional)` keys of `loss_fn_inputs` besides `target_tokens`.
    pub fn input_keys(&self) -> (&'static [&'static str], &'static [&'static str]) {
        const CLIPS: &[&str] = &["clip_low_threshold", "clip_high_threshold"];
        const RL: &[&str] = &["logprobs", "advantages"];
        match self {
            BuiltinLoss::CrossEntropy => (&["weights"], &[]),
            BuiltinLoss::ImportanceSampling | BuiltinLoss::Dro { .. } => (RL, &[]),
            BuiltinLoss::Ppo { .. } | BuiltinLoss::Cispo { .. } => (RL, CLIPS),
            BuiltinLoss::Gspo { .. } => (&["logprobs", "advantages", "sequence_ratio_mask"], CLIPS),
            BuiltinLoss::StableReinforce { .. } => (RL, &[]),
        }
    }

    /// The loss of one datum from its target logprobs and inputs (the pure maths, also used by
    /// the losses.md test vectors). Inputs the loss requires must be present and as long as `lp`.
    pub fn evaluate(&self, lp: &[f64], inputs: &LossInputs) -> Result<DatumLoss, ModelError> {
        let n = lp.len();
        let name = self.name();
        let get = |v: &Option<Vec<f64>>, key: &str| required(v, key, n, name);
        let bounds = |lo: f64, hi: f64| -> Result<(Vec<f64>, Vec<f64>), ModelError> {
            let low = match &inputs.clip_low {
                Some(_) => get(&inputs.clip_low, "clip_low_threshold")?,
                None => vec![lo; n],
            };
            let high = match &inputs.clip_high {
                Some(_) => get(&inputs.clip_high, "clip_high_threshold")?,
                None => vec![hi; n],
            };
            if let Some(t) = (0..n).find(|&t| low[t] > high[t]) {
                return Err(ModelError::user(format!(
                    "loss_fn_inputs.clip_low_threshold[{t}]: {} is greater than the high threshold {}",
                    low[t], high[t]
                )));
            }
            Ok((low, high))
        };
        let (elementwise, grad): (Vec<f64>, Vec<f64>) = match *self {
            BuiltinLoss::CrossEntropy => {
                let w = get(&inputs.weights, "weights")?;
                (
                    (0..n).map(|t| -w[t] * lp[t]).collect(),
                    w.iter().map(|w| -w).collect(),
                )
            }
            BuiltinLoss::ImportanceSampling => {
                let (sp, a) = (
                    get(&inputs.sampling_logprobs, "logprobs")?,
                    get(&inputs.advantages, "advantages")?,
                );
                let terms: Vec<f64> = (0..n).map(|t| -(lp[t] - sp[t]).exp() * a[t]).collect();
                (terms.clone(), terms)
            }
            BuiltinLoss::Ppo {
                clip_low,
                clip_high,
            } => {
                let (sp, a) = (
                    get(&inputs.sampling_logprobs, "logprobs")?,
                    get(&inputs.advantages, "advantages")?,
                );
                let (lo, hi) = bounds(clip_low, clip_high)?;
                let r: Vec<f64> = (0..n).map(|t| (lp[t] - sp[t]).exp()).collect();
                clipped_surrogate(&r, &a, &lo, &hi)
            }
            BuiltinLoss::Cispo {
                clip_low,
                clip_high,
            } => {
                let (sp, a) = (
                    get(&inputs.sampling_logprobs, "logprobs")?,
                    get(&inputs.advantages, "advantages")?,
                );
                let (lo, hi) = bounds(clip_low, clip_high)?;
                let c: Vec<f64> = (0..n)
                    .map(|t| (lp[t] - sp[t]).exp().clamp(lo[t], hi[t]))
                    .collect();
                (
                    (0..n).map(|t| -c[t] * lp[t] * a[t]).collect(),
                    (0..n).map(|t| -c[t] * a[t]).collect(),
                )
            }
            BuiltinLoss::Dro { beta } => {
                let (sp, a) = (
                    get(&inputs.sampling_logprobs, "logprobs")?,
                    get(&inputs.advantages, "advantages")?,
                );
                (
                    (0..n)
                        .map(|t| -(lp[t] * a[t] - 0.5 * beta * (lp[t] - sp[t]).powi(2)))
                        .collect(),
                    (0..n).map(|t| -a[t] + beta * (lp[t] - sp[t])).collect(),
                )
            }
            BuiltinLoss::Gspo {
                clip_low,
                clip_high,
            } => {
                let (sp, a) = (
                    get(&inputs.sampling_logprobs, "logprobs")?,
                    get(&inputs.advantages, "advantages")?,
                );
                let mask = get(&inputs.sequence_ratio_mask, "sequence_ratio_mask")?;
                let (lo, hi) = bounds(clip_low, clip_high)?;
                let selected: Vec<usize> = (0..n).filter(|&t| mask[t] != 0.0).collect();
                if selected.is_empty() {
                    // losses.md §7: the literal mean over an empty set is NaN; refuse instead.
                    return Err(ModelError::user(
                        "loss_fn_inputs.sequence_ratio_mask: selects no position, so the sequence ratio is undefined",
                    ));
                }
                let mean =
                    selected.iter().map(|&t| lp[t] - sp[t]).sum::<f64>() / selected.len() as f64;
                let s = vec![mean.exp(); n];
                clipped_surrogate(&s, &a, &lo, &hi)
            }
            BuiltinLoss::StableReinforce { kl_coeff } => {
                let (sp, a) = (
                    get(&inputs.sampling_logprobs, "logprobs")?,
                    get(&inputs.advantages, "advantages")?,
                );
                (
                    (0..n)
                        .map(|t| {
                            -(lp[t] - sp[t]).exp() * a[t] + 0.5 * kl_coeff * (lp[t] - sp[t]).powi(2)
                        })
                        .collect(),
                    (0..n)
                        .map(|t| -(lp[t] - sp[t]).exp() * a[t] + kl_coeff * (lp[t] - sp[t]))
                        .collect(),
                )
            }
        };
        Ok(DatumLoss {
            loss: elementwise.iter().sum(),
            elementwise: Some(elementwise),
            grad,
        })
    }
}

/// A required input of length `n` (the number of target logprobs).
fn required(v: &Option<Vec<f64>>, key: &str, n: usize, loss: &str) -> Result<Vec<f64>, ModelError> {
    match v {
        Some(v) if v.len() == n => Ok(v.clone()),
        Some(v) => Err(ModelError::user(format!(
            "loss_fn_inputs.{key}: {} values for {n} target logprobs",
            v.len()
        ))),
        None => Err(ModelError::user(format!(
            "loss_fn_inputs.{key}: required by loss `{loss}` but missing"
        ))),
    }
}

/// `−min(ρ·A, clamp(ρ, lo, hi)·A)` per token and its gradient with PyTorch's tie rules
/// (losses.md §4): the gradient is `−ρ·A` except where the clamp is active on the side the
/// minimum selects, where it is 0. `ρ` carries the gradient `∂ρ/∂lp = ρ` (for GSPO the detached
/// sequence ratio plays the same role).
fn clipped_surrogate(rho: &[f64], a: &[f64], lo: &[f64], hi: &[f64]) -> (Vec<f64>, Vec<f64>) {
    let n = rho.len();
    let elementwise = (0..n)
        .map(|t| -f64::min(rho[t] * a[t], rho[t].clamp(lo[t], hi[t]) * a[t]))
        .collect();
    let grad = (0..n)
        .map(|t| {
            let clipped = (a[t] > 0.0 && rho[t] > hi[t]) || (a[t] < 0.0 && rho[t] < lo[t]);
            if clipped {
                0.0
            } else {
                -rho[t] * a[t]
            }
        })
        .collect();
    (elementwise, grad)
}

/// A config number with its default; non-finite values are user errors.
fn number(config: &LossConfig, key: &str, default: f64) -> Result<f64, ModelError> {
    match config.numbers.get(key) {
        None => Ok(default),
        Some(v) if v.is_finite() => Ok(*v),
        Some(v) => Err(ModelError::user(format!(
            "loss_fn_config.{key}: {v} is not a finite number"
        ))),
    }
}

impl LossFunction for BuiltinLoss {
    fn output_type(&self) -> String {
        match self {
            // Observed on the real service (losses.md §1.6).
            BuiltinLoss::CrossEntropy => "CrossEntropyLossReturn".into(),
            // UNDETERMINED; losses.md's suggested `<Name>LossReturn`.
            BuiltinLoss::ImportanceSampling => "ImportanceSamplingLossReturn".into(),
            BuiltinLoss::Ppo { .. } => "PPOLossReturn".into(),
            BuiltinLoss::Cispo { .. } => "CISPOLossReturn".into(),
            BuiltinLoss::Dro { .. } => "DROLossReturn".into(),
            BuiltinLoss::Gspo { .. } => "GSPOLossReturn".into(),
            BuiltinLoss::StableReinforce { .. } => "StableReinforceLossReturn".into(),
        }
    }

    fn allows_2d_targets(&self) -> bool {
        matches!(self, BuiltinLoss::CrossEntropy)
    }

    fn datum_loss(
        &self,
        datum: &Datum,
        at: &str,
        lp: &[f64],
        shape: &[usize],
    ) -> Result<DatumLoss, ModelError> {
        let (required, optional) = self.input_keys();
        for key in datum.loss_fn_inputs.keys() {
            let key = key.as_str();
            if key != "target_tokens" && !required.contains(&key) && !optional.contains(&key) {
                return Err(ModelError::user(format!(
                    "{at}.loss_fn_inputs.{key}: not an input of loss `{}` (it takes target_tokens, {})",
                    self.name(),
                    required.iter().chain(optional).copied().collect::<Vec<_>>().join(", ")
                )));
            }
        }
        for key in required {
            if !datum.loss_fn_inputs.contains_key(*key) {
                return Err(ModelError::user(format!(
                    "{at}.loss_fn_inputs.{key}: required by loss `{}` but missing",
                    self.name()
                )));
            }
        }
        let read = |key: &str| float_input(datum, at, key, shape);
        let inputs = LossInputs {
            weights: read("weights")?,
            sampling_logprobs: read("logprobs")?,
            advantages: read("advantages")?,
            sequence_ratio_mask: read("sequence_ratio_mask")?,
            clip_low: read("clip_low_threshold")?,
            clip_high: read("clip_high_threshold")?,
        };
        self.evaluate(lp, &inputs).map_err(|e| ModelError {
            message: format!("{at}.{}", e.message),
            ..e
        })
    }
}
