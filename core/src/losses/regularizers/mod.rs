//! The eight regularizers of Tinkex (tinkex_features.md 2.20.6), each returning its value and its
//! exact gradient with respect to the logprobs.
//!
//! A regularizer sees the whole batch: one row of logprobs per datum (a [`LogprobBatch`]). Where
//! Tinkex speaks of "the last axis" (entropy, KL divergence) a row is one datum's logprobs; where
//! it reduces over "all elements" (L1, L2, elastic net, consistency) the elements of every row
//! count. Each item's documentation lists where it differs from Tinkex.
//!
//! Differences common to all eight:
//! * The value is always a scalar: Tinkex's `reduction: none` (per-row values, summed by its
//!   autodiff before differentiating) is `Reduction::Sum` here.
//! * Metrics are numbers only; Tinkex's string metrics that echo options (`mode`, `kl_direction`,
//!   `consistency_metric`) are left out since the caller chose them.
//! * Options are checked when evaluated (and when added to a pipeline): a negative or non-finite
//!   `lambda`, a temperature `<= 0`, a shape mismatch or an empty batch is an
//!   [`crate::Error::InvalidInput`] naming the option.

mod divergence;
mod entropy;
mod gradient_penalty;
mod norms;
mod orthogonality;

use nalgebra::DVector;

pub use divergence::{Consistency, ConsistencyMetric, KlDirection, KlDivergence};
pub use entropy::{Entropy, EntropyMode};
pub use gradient_penalty::{GradientPenalty, GradientPenaltyMode, TwiceDifferentiable};
pub use norms::{Center, ElasticNet, Target, L1, L2};
pub use orthogonality::{Orthogonality, OrthogonalityAxis, OrthogonalityMode};

use super::custom::{CustomLossOutput, LogprobBatch};
use crate::error::{Error, Result};

/// A penalty on the batch's logprobs with its exact gradient.
///
/// `compute` returns the raw value (before any pipeline weight) as [`CustomLossOutput::loss`],
/// `∂value/∂logprobs` as its gradients, and the regularizer's own metrics.
///
/// ```
/// use tinker_core::losses::{LogprobBatch, Regularizer};
/// use tinker_core::losses::regularizers::L1;
/// let rows = vec![vec![-1.0, -2.0], vec![-3.0]];
/// let out = L1::default().compute(&LogprobBatch::new(&rows).unwrap()).unwrap();
/// assert_eq!(out.loss, 6.0);
/// assert_eq!(out.gradients, vec![vec![-1.0, -1.0], vec![-1.0]]);
/// ```
pub trait Regularizer: Send + Sync {
    /// The name used in metrics (Tinkex's names: `l1_sparsity`, `entropy`, ...).
    fn name(&self) -> &str;

    /// Checks the options alone (called when the regularizer joins a pipeline).
    fn validate(&self) -> Result<()> {
        Ok(())
    }

    /// The value, its gradient with respect to every logprob, and metrics.
    fn compute(&self, batch: &LogprobBatch<'_>) -> Result<CustomLossOutput>;
}

/// How element or row values are combined into the scalar value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reduction {
    /// The sum.
    Sum,
    /// The mean (over elements or rows, as the regularizer documents).
    Mean,
}

impl Reduction {
    /// The factor applied to a sum over `n` items.
    fn scale(self, n: usize) -> f64 {
        match self {
            Reduction::Sum => 1.0,
            Reduction::Mean => 1.0 / n as f64,
        }
    }
}

/// Reference logprobs compared with the batch's (KL divergence, consistency, distillation, the
/// interpolated gradient penalty): one row per datum, each as long as the datum's logprobs.
#[derive(Debug, Clone, PartialEq)]
pub enum Reference {
    /// Rows given directly.
    Rows(Vec<Vec<f64>>),
    /// Each datum's own `loss_fn_inputs[key]` (the batch must carry its datums). Tinkex reads
    /// the *first* datum's field for the whole tensor; here every datum brings its own reference,
    /// aligned with its row.
    Field(String),
}

impl Reference {
    /// The reference rows for `batch`, checked: one row per datum of the row's length, finite.
    /// `what` names the option in errors (e.g. `kl_divergence.reference`).
    pub fn resolve(&self, batch: &LogprobBatch<'_>, what: &str) -> Result<Vec<Vec<f64>>> {
        let rows = match self {
            Reference::Rows(rows) => {
                if rows.len() != batch.len() {
                    return Err(Error::invalid(
                        what,
                        format!("{} rows for {} datums", rows.len(), batch.len()),
                    ));
                }
                for (i, (r, lp)) in rows.iter().zip(batch.logprobs()).enumerate() {
                    if r.len() != lp.len() {
                        return Err(Error::invalid(
                            format!("{what}[{i}]"),
                            format!(
                                "shape mismatch: {} values but datum {i} has {} logprobs",
                                r.len(),
                                lp.len()
                            ),
                        ));
                    }
                }
                rows.clone()
            }
            Reference::Field(key) => {
                if batch.data().is_none() {
                    return Err(Error::invalid(
                        what,
                        format!("reads loss_fn_inputs.{key} but the batch carries no datums"),
                    ));
                }
                (0..batch.len())
                    .map(|i| {
                        batch.input(i, key)?.ok_or_else(|| {
                            Error::invalid(
                                format!("data[{i}].loss_fn_inputs.{key}"),
                                format!("missing; {what} reads it"),
                            )
                        })
                    })
                    .collect::<Result<_>>()?
            }
        };
        for (i, r) in rows.iter().enumerate() {
            if let Some(j) = r.iter().position(|v| !v.is_finite()) {
                return Err(Error::invalid(
                    format!("{what}[{i}][{j}]"),
                    format!("value {} is not finite", r[j]),
                ));
            }
        }
        Ok(rows)
    }
}

/// Checks a scale option: finite and `>= 0`.
fn check_lambda(what: &str, lambda: f64) -> Result<()> {
    if !(lambda.is_finite() && lambda >= 0.0) {
        return Err(Error::invalid(
            what,
            format!("{lambda} is not allowed; use a finite value >= 0"),
        ));
    }
    Ok(())
}

/// Errors when the batch holds no logprob at all (a mean over nothing is undefined).
fn check_has_elements(what: &str, batch: &LogprobBatch<'_>) -> Result<usize> {
    match batch.element_count() {
        0 => Err(Error::invalid(what, "the batch holds no logprob")),
        n => Ok(n),
    }
}

/// All rows end to end.
fn flatten(rows: &[Vec<f64>]) -> DVector<f64> {
    DVector::from_iterator(
        rows.iter().map(Vec::len).sum(),
        rows.iter().flatten().copied(),
    )
}

/// A flat vector cut back into rows shaped like `like`.
fn unflatten(flat: &DVector<f64>, like: &[Vec<f64>]) -> Vec<Vec<f64>> {
    let mut at = 0;
    like.iter()
        .map(|r| {
            let row = flat.as_slice()[at..at + r.len()].to_vec();
            at += r.len();
            row
        })
        .collect()
}

/// `sign(x)` with `sign(0) = 0` (the subgradient Tinkex uses at the kink; also the derivative of
/// `abs` in server-side losses, as torch defines it).
pub(crate) fn sign(x: f64) -> f64 {
    if x > 0.0 {
        1.0
    } else if x < 0.0 {
        -1.0
    } else {
        0.0
    }
}

/// `ln Σ eˣ` without overflow.
fn log_sum_exp(x: &[f64]) -> f64 {
    let max = x.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if max == f64::NEG_INFINITY {
        return max;
    }
    max + x.iter().map(|v| (v - max).exp()).sum::<f64>().ln()
}

/// The Euclidean norm over every value of every row.
pub(crate) fn flat_norm(rows: &[Vec<f64>]) -> f64 {
    flatten(rows).norm()
}
