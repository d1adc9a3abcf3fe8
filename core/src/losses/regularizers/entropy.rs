//! Entropy of each datum's row (tinkex_features.md 2.20.6, F121).

use std::collections::BTreeMap;

use nalgebra::DVector;

use super::{log_sum_exp, Reduction, Regularizer};
use crate::error::{Error, Result};
use crate::losses::custom::{CustomLossOutput, LogprobBatch};

/// Which way the entropy term pushes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntropyMode {
    /// The value is `+H`: minimising the total loss lowers the entropy.
    Minimize,
    /// The value is `−H`: minimising the total loss raises the entropy.
    Maximize,
}

/// Entropy of each row (one datum's logprobs), reduced over rows. Name `entropy`; metrics
/// `entropy` (the signed value) and `temperature`.
///
/// Per row `x` of length V: with temperature `T ≠ 1`, `x' = x/T − logsumexp(x/T)` (renormalised);
/// with `T = 1`, `x' = x` as given. `H = −Σⱼ e^{x'ⱼ}·x'ⱼ`, terms with `x'ⱼ <= −50` counted as 0;
/// `normalize` divides by `ln V`. Gradient, with `aⱼ = −e^{x'ⱼ}(x'ⱼ + 1)` (0 where masked):
/// `∂H/∂xᵢ = aᵢ` for `T = 1`, and `(aᵢ − p'ᵢ·Σⱼ aⱼ)/T` with `p' = e^{x'}` otherwise.
///
/// Same as Tinkex. As there, on per-token target logprobs this is `Σₜ −pₜ ln pₜ` over sequence
/// positions, not a vocabulary entropy.
#[derive(Debug, Clone, PartialEq)]
pub struct Entropy {
    /// Minimise (default) or maximise the entropy.
    pub mode: EntropyMode,
    /// Mean (default) or sum over rows.
    pub reduction: Reduction,
    /// Divide each row's entropy by `ln V` (rows need at least two entries).
    pub normalize: bool,
    /// Temperature `T > 0` (default 1).
    pub temperature: f64,
}

impl Default for Entropy {
    fn default() -> Entropy {
        Entropy {
            mode: EntropyMode::Minimize,
            reduction: Reduction::Mean,
            normalize: false,
            temperature: 1.0,
        }
    }
}

/// Entries at or below this (log-space) contribute nothing, as in Tinkex.
const MASK_BELOW: f64 = -50.0;

impl Entropy {
    /// One row's entropy and its gradient.
    fn row(&self, x: &[f64]) -> (f64, DVector<f64>) {
        let t = self.temperature;
        let x = DVector::from_column_slice(x);
        let shifted = if t == 1.0 {
            x
        } else {
            let y = &x / t;
            let lse = log_sum_exp(y.as_slice());
            y.add_scalar(-lse)
        };
        let live = |v: f64| v > MASK_BELOW;
        let h: f64 = shifted
            .iter()
            .filter(|v| live(**v))
            .map(|v| -v.exp() * v)
            .sum();
        let a = shifted.map(|v| if live(v) { -v.exp() * (v + 1.0) } else { 0.0 });
        let grad = if t == 1.0 {
            a
        } else {
            let p = shifted.map(f64::exp);
            (&a - p * a.sum()) / t
        };
        (h, grad)
    }
}

impl Regularizer for Entropy {
    fn name(&self) -> &str {
        "entropy"
    }

    fn validate(&self) -> Result<()> {
        if !(self.temperature.is_finite() && self.temperature > 0.0) {
            return Err(Error::invalid(
                "entropy.temperature",
                format!(
                    "{} is not allowed; the temperature must be > 0",
                    self.temperature
                ),
            ));
        }
        Ok(())
    }

    fn compute(&self, batch: &LogprobBatch<'_>) -> Result<CustomLossOutput> {
        self.validate()?;
        let sign = match self.mode {
            EntropyMode::Minimize => 1.0,
            EntropyMode::Maximize => -1.0,
        };
        let scale = sign * self.reduction.scale(batch.len());
        let mut loss = 0.0;
        let mut gradients = Vec::with_capacity(batch.len());
        for (i, x) in batch.logprobs().iter().enumerate() {
            let norm = if self.normalize {
                if x.len() < 2 {
                    return Err(Error::invalid(
                        format!("entropy.normalize (logprobs[{i}])"),
                        format!(
                            "normalising divides by ln V, but row {i} has {} entries; it needs at least 2",
                            x.len()
                        ),
                    ));
                }
                1.0 / (x.len() as f64).ln()
            } else {
                1.0
            };
            let (h, g) = self.row(x);
            loss += scale * norm * h;
            gradients.push((g * (scale * norm)).as_slice().to_vec());
        }
        Ok(CustomLossOutput {
            loss,
            gradients,
            metrics: BTreeMap::from([
                ("entropy".to_owned(), loss),
                ("temperature".to_owned(), self.temperature),
            ]),
        })
    }
}
