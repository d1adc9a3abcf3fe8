//! Gradient penalty on a user function of the logprobs (tinkex_features.md 2.20.6, F125).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use nalgebra::DVector;

use super::{check_has_elements, flatten, unflatten, Reference, Regularizer};
use crate::error::{Error, Result};
use crate::losses::custom::{CustomLossOutput, LogprobBatch};

/// A scalar function `f` of the flattened logprobs that knows its gradient and its Hessian-vector
/// products, which is what differentiating `‖∇f‖` needs (Tinkex gets them from second-order
/// autodiff; Rust code states them).
///
/// ```
/// use tinker_core::losses::regularizers::TwiceDifferentiable;
/// /// f(x) = ½‖x‖²: ∇f = x, H = I.
/// struct HalfSquaredNorm;
/// impl TwiceDifferentiable for HalfSquaredNorm {
///     fn gradient(&self, x: &[f64]) -> Vec<f64> { x.to_vec() }
///     fn hessian_vector_product(&self, _x: &[f64], v: &[f64]) -> Vec<f64> { v.to_vec() }
/// }
/// assert_eq!(HalfSquaredNorm.gradient(&[3.0, 4.0]), vec![3.0, 4.0]);
/// ```
pub trait TwiceDifferentiable: Send + Sync {
    /// `∇f(x)`, as long as `x`.
    fn gradient(&self, x: &[f64]) -> Vec<f64>;
    /// `H_f(x)·v`, as long as `x` (H symmetric).
    fn hessian_vector_product(&self, x: &[f64], v: &[f64]) -> Vec<f64>;
}

/// Where [`GradientPenalty`] evaluates `∇f`.
#[derive(Debug, Clone, PartialEq)]
pub enum GradientPenaltyMode {
    /// At the logprobs themselves: `x̂ = x`.
    Output,
    /// At `x̂ = ε·x + (1 − ε)·ref` (WGAN-GP). ε is given by the caller, in `[0, 1]`: draw it from
    /// a seeded PRNG per step to reproduce Tinkex's random interpolation deterministically.
    Interpolated {
        /// ε.
        epsilon: f64,
        /// The reference logprobs (Tinkex's default field is `reference_logprobs`).
        reference: Reference,
    },
}

/// `value = (‖∇f(x̂)‖₂ − τ)²` for a user function `f` of the flattened batch logprobs. Name
/// `gradient_penalty`; metrics `gradient_penalty` (the value) and `function_grad_norm` (‖∇f(x̂)‖).
///
/// Gradient with respect to the logprobs: `c·2(‖g‖ − τ)/‖g‖·H_f(x̂)·g` with `g = ∇f(x̂)`,
/// `c = 1` (output) or `ε` (interpolated); at `g = 0`, where the norm has no derivative, the
/// gradient is taken as 0.
///
/// **Differences from Tinkex:** Tinkex differentiates an arbitrary `f` with second-order
/// autodiff; here `f` supplies its gradient and Hessian-vector product
/// ([`TwiceDifferentiable`]). Tinkex draws ε from a fresh random key on every call
/// (non-deterministic); here ε is an option, since the core draws no randomness.
#[derive(Clone)]
pub struct GradientPenalty {
    /// The function whose gradient norm is penalised.
    pub function: Arc<dyn TwiceDifferentiable>,
    /// Output (default) or interpolated.
    pub mode: GradientPenaltyMode,
    /// τ, the target norm (default 1).
    pub target_norm: f64,
}

impl fmt::Debug for GradientPenalty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GradientPenalty")
            .field("mode", &self.mode)
            .field("target_norm", &self.target_norm)
            .finish_non_exhaustive()
    }
}

impl GradientPenalty {
    /// Output mode, τ = 1, for `function`.
    pub fn new(function: Arc<dyn TwiceDifferentiable>) -> GradientPenalty {
        GradientPenalty {
            function,
            mode: GradientPenaltyMode::Output,
            target_norm: 1.0,
        }
    }
}

fn checked(what: &str, values: Vec<f64>, len: usize) -> Result<DVector<f64>> {
    if values.len() != len {
        return Err(Error::invalid(
            what,
            format!("returned {} values for {len} logprobs", values.len()),
        ));
    }
    if let Some(j) = values.iter().position(|v| !v.is_finite()) {
        return Err(Error::invalid(
            format!("{what}[{j}]"),
            format!("{} is not finite", values[j]),
        ));
    }
    Ok(DVector::from_vec(values))
}

impl Regularizer for GradientPenalty {
    fn name(&self) -> &str {
        "gradient_penalty"
    }

    fn validate(&self) -> Result<()> {
        super::check_lambda("gradient_penalty.target_norm", self.target_norm)?;
        if let GradientPenaltyMode::Interpolated { epsilon, .. } = self.mode {
            if !(0.0..=1.0).contains(&epsilon) {
                return Err(Error::invalid(
                    "gradient_penalty.mode.epsilon",
                    format!("{epsilon} is not in [0, 1]"),
                ));
            }
        }
        Ok(())
    }

    fn compute(&self, batch: &LogprobBatch<'_>) -> Result<CustomLossOutput> {
        self.validate()?;
        let n = check_has_elements("gradient_penalty", batch)?;
        let x = flatten(batch.logprobs());
        let (at, chain) = match &self.mode {
            GradientPenaltyMode::Output => (x, 1.0),
            GradientPenaltyMode::Interpolated { epsilon, reference } => {
                let r = flatten(&reference.resolve(batch, "gradient_penalty.mode.reference")?);
                (x * *epsilon + r * (1.0 - epsilon), *epsilon)
            }
        };
        let g = checked(
            "gradient_penalty.function.gradient",
            self.function.gradient(at.as_slice()),
            n,
        )?;
        let norm = g.norm();
        let excess = norm - self.target_norm;
        let grad = if norm > 0.0 {
            let hg = checked(
                "gradient_penalty.function.hessian_vector_product",
                self.function
                    .hessian_vector_product(at.as_slice(), g.as_slice()),
                n,
            )?;
            hg * (chain * 2.0 * excess / norm)
        } else {
            DVector::zeros(n)
        };
        let value = excess * excess;
        Ok(CustomLossOutput {
            loss: value,
            gradients: unflatten(&grad, batch.logprobs()),
            metrics: BTreeMap::from([
                ("gradient_penalty".to_owned(), value),
                ("function_grad_norm".to_owned(), norm),
            ]),
        })
    }
}
