//! KL divergence and consistency against reference logprobs (tinkex_features.md 2.20.6,
//! F122-F123).

use std::collections::BTreeMap;

use nalgebra::DVector;

use super::{check_has_elements, flatten, sign, unflatten, Reduction, Reference, Regularizer};
use crate::error::Result;
use crate::losses::custom::{CustomLossOutput, LogprobBatch};

/// Which distribution is `P` in `KL(P‖Q)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KlDirection {
    /// `P` = the batch's logprobs, `Q` = the reference.
    Forward,
    /// `P` = the reference, `Q` = the batch's logprobs.
    Reverse,
}

/// Differences beyond this are clamped, as in Tinkex.
const KL_CLAMP: f64 = 100.0;
/// Probabilities at or below this are masked out, as in Tinkex.
const KL_MIN_PROB: f64 = 1e-10;

/// One row of `KL(P‖Q) = Σⱼ mⱼ·pⱼ·clamp(pˡⱼ − qˡⱼ, −100, 100)` with `∂/∂pˡ` and `∂/∂qˡ`.
fn kl_row(p: &DVector<f64>, q: &DVector<f64>) -> (f64, DVector<f64>, DVector<f64>) {
    let n = p.len();
    let (mut value, mut dp, mut dq) = (0.0, DVector::zeros(n), DVector::zeros(n));
    for j in 0..n {
        let prob = p[j].exp();
        if prob <= KL_MIN_PROB {
            continue;
        }
        let d = p[j] - q[j];
        let inside = if d.abs() < KL_CLAMP { 1.0 } else { 0.0 };
        value += prob * d.clamp(-KL_CLAMP, KL_CLAMP);
        dp[j] = prob * (d.clamp(-KL_CLAMP, KL_CLAMP) + inside);
        dq[j] = -prob * inside;
    }
    (value, dp, dq)
}

/// KL divergence between each row and its reference row, reduced over rows. Name
/// `kl_divergence`; metrics `kl_divergence` (the value), `kl_max` and `kl_min` (per-row extremes).
///
/// Per row: `KL(P‖Q) = Σⱼ mⱼ·pⱼ·clamp(pˡⱼ − qˡⱼ, −100, 100)`, `pⱼ = e^{pˡⱼ}`, mask
/// `mⱼ = [pⱼ > 1e−10]`; forward `P = x, Q = ref`, reverse `P = ref, Q = x`, symmetric
/// `½(KL(x‖ref) + KL(ref‖x))`. Gradient (exact, including clamp and mask):
/// `∂KL(P‖Q)/∂pˡⱼ = mⱼpⱼ(clamp(dⱼ) + [|dⱼ| < 100])`, `∂KL(P‖Q)/∂qˡⱼ = −mⱼpⱼ[|dⱼ| < 100]`.
///
/// **Difference from Tinkex:** Tinkex returns a zero scalar while tracing, so its KL term adds
/// no gradient to a custom loss even though its value shows in the metrics; here the gradient is
/// real and enters the total. Also, the reference rows are per datum (see [`Reference::Field`]).
#[derive(Debug, Clone, PartialEq)]
pub struct KlDivergence {
    /// The reference logprobs (`Q` in the forward direction).
    pub reference: Reference,
    /// Mean (default) or sum over rows.
    pub reduction: Reduction,
    /// Forward (default) or reverse.
    pub direction: KlDirection,
    /// Average both directions (the direction is then ignored).
    pub symmetric: bool,
}

impl KlDivergence {
    /// Forward, mean-reduced KL against `reference`.
    pub fn new(reference: Reference) -> KlDivergence {
        KlDivergence {
            reference,
            reduction: Reduction::Mean,
            direction: KlDirection::Forward,
            symmetric: false,
        }
    }
}

impl Regularizer for KlDivergence {
    fn name(&self) -> &str {
        "kl_divergence"
    }

    fn compute(&self, batch: &LogprobBatch<'_>) -> Result<CustomLossOutput> {
        let reference = self.reference.resolve(batch, "kl_divergence.reference")?;
        let scale = self.reduction.scale(batch.len());
        let mut per_row = Vec::with_capacity(batch.len());
        let mut gradients = Vec::with_capacity(batch.len());
        for (x, r) in batch.logprobs().iter().zip(&reference) {
            let (x, r) = (DVector::from_column_slice(x), DVector::from_column_slice(r));
            let (value, grad) = if self.symmetric {
                let (fwd, dx_fwd, _) = kl_row(&x, &r);
                let (rev, _, dx_rev) = kl_row(&r, &x);
                (0.5 * (fwd + rev), (dx_fwd + dx_rev) * 0.5)
            } else {
                match self.direction {
                    KlDirection::Forward => {
                        let (v, dx, _) = kl_row(&x, &r);
                        (v, dx)
                    }
                    KlDirection::Reverse => {
                        let (v, _, dx) = kl_row(&r, &x);
                        (v, dx)
                    }
                }
            };
            per_row.push(value);
            gradients.push((grad * scale).as_slice().to_vec());
        }
        let loss = scale * per_row.iter().sum::<f64>();
        let max = per_row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let min = per_row.iter().copied().fold(f64::INFINITY, f64::min);
        Ok(CustomLossOutput {
            loss,
            gradients,
            metrics: BTreeMap::from([
                ("kl_divergence".to_owned(), loss),
                ("kl_max".to_owned(), max),
                ("kl_min".to_owned(), min),
            ]),
        })
    }
}

/// How [`Consistency`] compares the batch with its reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsistencyMetric {
    /// `R((a − b)²)` over all elements.
    Mse,
    /// `R(|a − b|)` over all elements.
    L1,
    /// `1 − ⟨a, b⟩ / (max(‖a‖, 1e−8)·max(‖b‖, 1e−8))` on the flattened batch (no reduction).
    Cosine,
    /// Per row `½[Σ eᵃ(a − b) + Σ eᵇ(b − a)]` (no clamp or mask), reduced over rows.
    Kl,
}

/// Keeps the logprobs `a` close to reference logprobs `b` (e.g. of an unperturbed input). Name
/// `consistency`; metric `consistency` (the value).
///
/// Gradients with respect to `a`: mse `2(aᵢ − bᵢ)` (÷N for the mean), l1 `sign(aᵢ − bᵢ)`
/// (÷N), cosine `−b/(‖a‖'‖b‖') + ⟨a,b⟩·a/(‖a‖'²‖b‖'‖a‖)` (the second term only where
/// `‖a‖ > 1e−8`; `‖·‖' = max(‖·‖, 1e−8)`), kl `½[eᵃⁱ(aᵢ − bᵢ + 1) − eᵇⁱ]` (÷rows for the mean).
///
/// **Difference from Tinkex:** Tinkex returns zero while tracing, so consistency contributes
/// no gradient to a custom loss; here it does. The reference is per datum (default each datum's
/// `loss_fn_inputs["original_logprobs"]`) rather than the first datum's.
#[derive(Debug, Clone, PartialEq)]
pub struct Consistency {
    /// The reference `b` (default [`Reference::Field`]`("original_logprobs")`).
    pub reference: Reference,
    /// The comparison (default mse).
    pub metric: ConsistencyMetric,
    /// Mean (default) or sum; over elements (mse, l1) or rows (kl); cosine ignores it.
    pub reduction: Reduction,
}

impl Default for Consistency {
    fn default() -> Consistency {
        Consistency {
            reference: Reference::Field("original_logprobs".to_owned()),
            metric: ConsistencyMetric::Mse,
            reduction: Reduction::Mean,
        }
    }
}

/// Norms below this are treated as this (as in Tinkex's cosine).
const COSINE_EPS: f64 = 1e-8;

impl Regularizer for Consistency {
    fn name(&self) -> &str {
        "consistency"
    }

    fn compute(&self, batch: &LogprobBatch<'_>) -> Result<CustomLossOutput> {
        let n = check_has_elements("consistency", batch)?;
        let reference = self.reference.resolve(batch, "consistency.reference")?;
        let (a, b) = (flatten(batch.logprobs()), flatten(&reference));
        let diff = &a - &b;
        let (loss, grad) = match self.metric {
            ConsistencyMetric::Mse => {
                let s = self.reduction.scale(n);
                (s * diff.norm_squared(), &diff * (2.0 * s))
            }
            ConsistencyMetric::L1 => {
                let s = self.reduction.scale(n);
                (s * diff.map(f64::abs).sum(), diff.map(sign) * s)
            }
            ConsistencyMetric::Cosine => {
                let (na, nb) = (a.norm(), b.norm());
                let (ca, cb) = (na.max(COSINE_EPS), nb.max(COSINE_EPS));
                let dot = a.dot(&b);
                let mut grad = &b * (-1.0 / (ca * cb));
                if na > COSINE_EPS {
                    grad += &a * (dot / (ca * ca * cb * na));
                }
                (1.0 - dot / (ca * cb), grad)
            }
            ConsistencyMetric::Kl => {
                let s = self.reduction.scale(batch.len());
                let ea = a.map(f64::exp);
                let eb = b.map(f64::exp);
                let value = 0.5 * (ea.dot(&diff) - eb.dot(&diff));
                let grad = (ea.component_mul(&diff.add_scalar(1.0)) - eb) * (0.5 * s);
                (s * value, grad)
            }
        };
        Ok(CustomLossOutput {
            loss,
            gradients: unflatten(&grad, batch.logprobs()),
            metrics: BTreeMap::from([("consistency".to_owned(), loss)]),
        })
    }
}
