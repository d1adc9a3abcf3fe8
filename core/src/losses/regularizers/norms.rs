//! L1, L2 and elastic-net penalties over every element of the batch (tinkex_features.md
//! 2.20.6, F118-F120).

use std::collections::BTreeMap;

use nalgebra::DVector;

use super::{check_has_elements, check_lambda, flatten, sign, unflatten, Reduction, Regularizer};
use crate::error::{Error, Result};
use crate::losses::custom::{CustomLossOutput, LogprobBatch};

/// What a norm penalty measures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The logprobs themselves (`t = x`).
    Logprobs,
    /// The probabilities (`t = eˣ`); the gradient chains through `eˣ`.
    Probs,
    /// Each datum's `loss_fn_inputs[key]`: a constant, so the gradient is zero (Tinkex reads the
    /// first datum's field; here each datum's own).
    Field(String),
}

/// The target values `t` and `∂t/∂x` element-wise.
fn target_values(
    target: &Target,
    batch: &LogprobBatch<'_>,
    what: &str,
) -> Result<(DVector<f64>, DVector<f64>)> {
    let x = flatten(batch.logprobs());
    Ok(match target {
        Target::Logprobs => {
            let ones = DVector::from_element(x.len(), 1.0);
            (x, ones)
        }
        Target::Probs => {
            let p = x.map(f64::exp);
            (p.clone(), p)
        }
        Target::Field(key) => {
            let rows = super::Reference::Field(key.clone()).resolve(batch, what)?;
            let zeros = DVector::zeros(x.len());
            (flatten(&rows), zeros)
        }
    })
}

/// `value = λ·R|t|`, `∂value/∂tᵢ = λ·sign(tᵢ)` (÷N for the mean), `sign(0) = 0`. Name
/// `l1_sparsity`; metrics `l1_raw` (the value) and `l1_mean` (mean `|t|`, unscaled).
///
/// Same as Tinkex, with N = every logprob of the batch.
#[derive(Debug, Clone, PartialEq)]
pub struct L1 {
    /// λ (default 1; the pipeline weight is the usual knob).
    pub lambda: f64,
    /// Sum (default) or mean over all elements.
    pub reduction: Reduction,
    /// What is penalised (default the logprobs).
    pub target: Target,
}

impl Default for L1 {
    fn default() -> L1 {
        L1 {
            lambda: 1.0,
            reduction: Reduction::Sum,
            target: Target::Logprobs,
        }
    }
}

impl Regularizer for L1 {
    fn name(&self) -> &str {
        "l1_sparsity"
    }

    fn validate(&self) -> Result<()> {
        check_lambda("l1_sparsity.lambda", self.lambda)
    }

    fn compute(&self, batch: &LogprobBatch<'_>) -> Result<CustomLossOutput> {
        self.validate()?;
        let n = check_has_elements("l1_sparsity", batch)?;
        let (t, dt) = target_values(&self.target, batch, "l1_sparsity.target")?;
        let s = self.lambda * self.reduction.scale(n);
        let abs_sum = t.map(f64::abs).sum();
        let loss = s * abs_sum;
        let grad = t.map(sign).component_mul(&dt) * s;
        Ok(CustomLossOutput {
            loss,
            gradients: unflatten(&grad, batch.logprobs()),
            metrics: BTreeMap::from([
                ("l1_raw".to_owned(), loss),
                ("l1_mean".to_owned(), abs_sum / n as f64),
            ]),
        })
    }
}

/// Where [`L2`] centres the target before squaring.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Center {
    /// No centring (`c = 0`).
    Zero,
    /// The mean of the target over the batch.
    Mean,
    /// A fixed value.
    Value(f64),
}

/// `u = t − c`, `u' = clamp(u, −k, k)` when `clip` is `k`, `value = λ·R(u'²)`. Name
/// `l2_weight_decay`; metrics `l2_raw` (the value), `l2_mean` (mean `t²`, uncentred, unscaled)
/// and `center` (only for [`Center::Value`]).
///
/// Gradient: `∂value/∂tᵢ = 2λ·(aᵢ·u'ᵢ − [c = mean]·(1/N)·Σⱼ aⱼ·u'ⱼ)` (÷N for the mean
/// reduction), `aᵢ = 1` where `|uᵢ| < k` (0 where clipped).
///
/// **Difference from Tinkex:** Tinkex drops the second term, arguing that `Σ(t − t̄) = 0`; that
/// holds without clipping, but once some elements are clipped the mean's dependence on every
/// element no longer cancels. The term above is exact in both cases (and zero without clipping).
#[derive(Debug, Clone, PartialEq)]
pub struct L2 {
    /// λ (default 1).
    pub lambda: f64,
    /// Sum (default) or mean over all elements.
    pub reduction: Reduction,
    /// What is penalised (default the logprobs).
    pub target: Target,
    /// Clip `k > 0` for the centred values (default none).
    pub clip: Option<f64>,
    /// The centre (default zero).
    pub center: Center,
}

impl Default for L2 {
    fn default() -> L2 {
        L2 {
            lambda: 1.0,
            reduction: Reduction::Sum,
            target: Target::Logprobs,
            clip: None,
            center: Center::Zero,
        }
    }
}

impl Regularizer for L2 {
    fn name(&self) -> &str {
        "l2_weight_decay"
    }

    fn validate(&self) -> Result<()> {
        check_lambda("l2_weight_decay.lambda", self.lambda)?;
        if let Some(k) = self.clip {
            if !(k.is_finite() && k > 0.0) {
                return Err(Error::invalid(
                    "l2_weight_decay.clip",
                    format!("{k} is not allowed; the clip must be finite and > 0"),
                ));
            }
        }
        if let Center::Value(c) = self.center {
            if !c.is_finite() {
                return Err(Error::invalid(
                    "l2_weight_decay.center",
                    format!("{c} is not finite"),
                ));
            }
        }
        Ok(())
    }

    fn compute(&self, batch: &LogprobBatch<'_>) -> Result<CustomLossOutput> {
        self.validate()?;
        let n = check_has_elements("l2_weight_decay", batch)?;
        let (t, dt) = target_values(&self.target, batch, "l2_weight_decay.target")?;
        let c = match self.center {
            Center::Zero => 0.0,
            Center::Mean => t.mean(),
            Center::Value(c) => c,
        };
        let u = t.add_scalar(-c);
        let k = self.clip.unwrap_or(f64::INFINITY);
        let clipped = u.map(|v| v.clamp(-k, k));
        // aᵢ·u'ᵢ: the clipped elements are constant in t.
        let active = u.zip_map(&clipped, |v, w| if v.abs() < k { w } else { 0.0 });
        let s = self.lambda * self.reduction.scale(n);
        let loss = s * clipped.norm_squared();
        let mean_term = match self.center {
            Center::Mean => active.mean(),
            _ => 0.0,
        };
        let grad = active.add_scalar(-mean_term).component_mul(&dt) * (2.0 * s);
        let mut metrics = BTreeMap::from([
            ("l2_raw".to_owned(), loss),
            ("l2_mean".to_owned(), t.norm_squared() / n as f64),
        ]);
        if let Center::Value(c) = self.center {
            metrics.insert("center".to_owned(), c);
        }
        Ok(CustomLossOutput {
            loss,
            gradients: unflatten(&grad, batch.logprobs()),
            metrics,
        })
    }
}

/// `value = λ·(α·R|t| + (1−α)·R(t²))`, `∂value/∂tᵢ = λ·(α·sign(tᵢ) + 2(1−α)·tᵢ)` (÷N for the
/// mean). Name `elastic_net`; metrics `elastic_net` (the value) and `l1_ratio` (α).
///
/// Same as Tinkex (α must lie in `[0, 1]`).
#[derive(Debug, Clone, PartialEq)]
pub struct ElasticNet {
    /// λ (default 1).
    pub lambda: f64,
    /// Sum (default) or mean over all elements.
    pub reduction: Reduction,
    /// What is penalised (default the logprobs).
    pub target: Target,
    /// α, the L1 share (default 0.5).
    pub l1_ratio: f64,
}

impl Default for ElasticNet {
    fn default() -> ElasticNet {
        ElasticNet {
            lambda: 1.0,
            reduction: Reduction::Sum,
            target: Target::Logprobs,
            l1_ratio: 0.5,
        }
    }
}

impl Regularizer for ElasticNet {
    fn name(&self) -> &str {
        "elastic_net"
    }

    fn validate(&self) -> Result<()> {
        check_lambda("elastic_net.lambda", self.lambda)?;
        if !(0.0..=1.0).contains(&self.l1_ratio) {
            return Err(Error::invalid(
                "elastic_net.l1_ratio",
                format!("{} is not in [0, 1]", self.l1_ratio),
            ));
        }
        Ok(())
    }

    fn compute(&self, batch: &LogprobBatch<'_>) -> Result<CustomLossOutput> {
        self.validate()?;
        let n = check_has_elements("elastic_net", batch)?;
        let (t, dt) = target_values(&self.target, batch, "elastic_net.target")?;
        let (a, s) = (self.l1_ratio, self.lambda * self.reduction.scale(n));
        let loss = s * (a * t.map(f64::abs).sum() + (1.0 - a) * t.norm_squared());
        let grad = t
            .map(|v| a * sign(v) + 2.0 * (1.0 - a) * v)
            .component_mul(&dt)
            * s;
        Ok(CustomLossOutput {
            loss,
            gradients: unflatten(&grad, batch.logprobs()),
            metrics: BTreeMap::from([("elastic_net".to_owned(), loss), ("l1_ratio".to_owned(), a)]),
        })
    }
}
