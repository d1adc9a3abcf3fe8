//! Direct preference optimisation (Rafailov et al. 2023) as a ready-made custom loss.

use std::collections::BTreeMap;
use std::f64::consts::LN_2;

use super::custom::{CustomLoss, CustomLossOutput, LogprobBatch};
use super::regularizers::Reference;
use crate::error::{Error, Result};

/// Which datums form the (chosen, rejected) pairs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DpoPairing {
    /// Datums `2k` (chosen) and `2k + 1` (rejected); the batch length must be even.
    Consecutive,
    /// Explicit `(chosen, rejected)` datum indices; a datum may appear in several pairs.
    Explicit(Vec<(usize, usize)>),
}

/// The reference model's logprobs of each datum.
#[derive(Debug, Clone, PartialEq)]
pub enum ReferenceLogprobs {
    /// One number per datum: the sum of the reference's target logprobs over the tokens that
    /// count (already masked by the caller).
    Sums(Vec<f64>),
    /// Per-token reference logprobs aligned with each datum's targets (e.g. a reference
    /// sampler's `compute_logprobs`, shifted to the targets); masked with the same `weights` as
    /// the policy's.
    PerToken(Vec<Vec<f64>>),
}

/// The DPO loss over (chosen, rejected) pairs:
/// `loss = −(1/P)·Σₖ ln σ(β·((π_c − π_r) − (ref_c − ref_r)))`, where `π_i = Σₜ wₜ·logprobₜ` over
/// datum i's targets, `wₜ` its `weights` input (all ones when absent; 0/1 weights are a mask),
/// and `ref_i` the reference's likewise.
///
/// Gradient: with `zₖ` the bracket, `∂loss/∂logprobₜ = ∓β·wₜ·σ(−zₖ)/P` for the chosen (−) and
/// rejected (+) datum of each pair. At initialisation (policy = reference) every `zₖ = 0` and the
/// loss is exactly `ln 2` (the loss is accumulated as `ln 2 + mean(−ln σ(z) − ln 2)`, whose terms
/// vanish exactly at `z = 0`).
///
/// Metrics (the cookbook's names): `dpo_loss`, `accuracy` (share of pairs with `z > 0`),
/// `margin` (mean `z`), `chosen_reward` and `rejected_reward` (mean `β(π − ref)`).
///
/// ```
/// use tinker_core::losses::{evaluate_custom_loss, Dpo, LogprobBatch, ReferenceLogprobs};
/// let policy = vec![vec![-1.0, -2.0], vec![-0.5, -3.0]]; // datum 0 chosen, datum 1 rejected
/// let dpo = Dpo::new(0.1, ReferenceLogprobs::PerToken(policy.clone()));
/// let out = evaluate_custom_loss(&dpo, &LogprobBatch::new(&policy).unwrap()).unwrap();
/// assert_eq!(out.loss, std::f64::consts::LN_2);
/// assert_eq!(out.metrics["accuracy"], 0.0);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Dpo {
    /// β > 0, the inverse temperature of the implicit reward.
    pub beta: f64,
    /// How datums pair up.
    pub pairing: DpoPairing,
    /// The reference model's logprobs.
    pub reference: ReferenceLogprobs,
}

impl Dpo {
    /// DPO with consecutive pairs.
    pub fn new(beta: f64, reference: ReferenceLogprobs) -> Dpo {
        Dpo {
            beta,
            pairing: DpoPairing::Consecutive,
            reference,
        }
    }

    fn pairs(&self, n: usize) -> Result<Vec<(usize, usize)>> {
        match &self.pairing {
            DpoPairing::Consecutive => {
                if !n.is_multiple_of(2) {
                    return Err(Error::invalid(
                        "dpo.pairing",
                        format!("consecutive pairs need an even number of datums, got {n}"),
                    ));
                }
                Ok((0..n / 2).map(|k| (2 * k, 2 * k + 1)).collect())
            }
            DpoPairing::Explicit(pairs) => {
                if pairs.is_empty() {
                    return Err(Error::invalid("dpo.pairing", "no pair given"));
                }
                for (k, &(c, r)) in pairs.iter().enumerate() {
                    if c >= n || r >= n {
                        return Err(Error::invalid(
                            format!("dpo.pairing[{k}]"),
                            format!("({c}, {r}) refers past the batch of {n} datums"),
                        ));
                    }
                    if c == r {
                        return Err(Error::invalid(
                            format!("dpo.pairing[{k}]"),
                            format!("datum {c} cannot be both chosen and rejected"),
                        ));
                    }
                }
                Ok(pairs.clone())
            }
        }
    }

    fn reference_sums(&self, batch: &LogprobBatch<'_>, weights: &[Vec<f64>]) -> Result<Vec<f64>> {
        let sums = match &self.reference {
            ReferenceLogprobs::Sums(sums) => {
                if sums.len() != batch.len() {
                    return Err(Error::invalid(
                        "dpo.reference",
                        format!("{} sums for {} datums", sums.len(), batch.len()),
                    ));
                }
                sums.clone()
            }
            ReferenceLogprobs::PerToken(rows) => Reference::Rows(rows.clone())
                .resolve(batch, "dpo.reference")?
                .iter()
                .zip(weights)
                .map(|(r, w)| dot(r, w))
                .collect(),
        };
        if let Some(i) = sums.iter().position(|v| !v.is_finite()) {
            return Err(Error::invalid(
                format!("dpo.reference[{i}]"),
                format!("{} is not finite", sums[i]),
            ));
        }
        Ok(sums)
    }
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// `−ln σ(z) − ln 2`, exactly 0 at `z = 0` and accurate near it.
fn neg_log_sigmoid_minus_ln2(z: f64) -> f64 {
    if z.abs() <= 1.0 {
        // ln((1 + e⁻ᶻ)/2) = ln(1 + (e⁻ᶻ − 1)/2)
        ((-z).exp_m1() / 2.0).ln_1p()
    } else {
        let u = -z;
        u.max(0.0) + (-u.abs()).exp().ln_1p() - LN_2
    }
}

/// `σ(−z) = 1/(1 + eᶻ)` without overflow.
fn sigmoid_neg(z: f64) -> f64 {
    if z >= 0.0 {
        let e = (-z).exp();
        e / (1.0 + e)
    } else {
        1.0 / (1.0 + z.exp())
    }
}

impl CustomLoss for Dpo {
    fn compute(&self, batch: &LogprobBatch<'_>) -> Result<CustomLossOutput> {
        if !(self.beta.is_finite() && self.beta > 0.0) {
            return Err(Error::invalid(
                "dpo.beta",
                format!("{} is not allowed; β must be finite and > 0", self.beta),
            ));
        }
        let pairs = self.pairs(batch.len())?;
        let weights: Vec<Vec<f64>> = (0..batch.len())
            .map(|i| batch.weights(i))
            .collect::<Result<_>>()?;
        let policy: Vec<f64> = batch
            .logprobs()
            .iter()
            .zip(&weights)
            .map(|(lp, w)| dot(lp, w))
            .collect();
        let reference = self.reference_sums(batch, &weights)?;
        let p = pairs.len() as f64;
        let beta = self.beta;
        let mut gradients = batch.zeros();
        let (mut excess, mut correct, mut margin, mut chosen, mut rejected) =
            (0.0, 0.0, 0.0, 0.0, 0.0);
        for &(c, r) in &pairs {
            let chosen_reward = beta * (policy[c] - reference[c]);
            let rejected_reward = beta * (policy[r] - reference[r]);
            let z = beta * ((policy[c] - policy[r]) - (reference[c] - reference[r]));
            excess += neg_log_sigmoid_minus_ln2(z);
            if z > 0.0 {
                correct += 1.0;
            }
            margin += z;
            chosen += chosen_reward;
            rejected += rejected_reward;
            // ∂loss/∂z = −σ(−z)/P; ∂z/∂logprobₜ = ±β·wₜ.
            let dz = -sigmoid_neg(z) / p * beta;
            for (g, w) in gradients[c].iter_mut().zip(&weights[c]) {
                *g += dz * w;
            }
            for (g, w) in gradients[r].iter_mut().zip(&weights[r]) {
                *g -= dz * w;
            }
        }
        let loss = LN_2 + excess / p;
        Ok(CustomLossOutput {
            loss,
            gradients,
            metrics: BTreeMap::from([
                ("dpo_loss".to_owned(), loss),
                ("accuracy".to_owned(), correct / p),
                ("margin".to_owned(), margin / p),
                ("chosen_reward".to_owned(), chosen / p),
                ("rejected_reward".to_owned(), rejected / p),
            ]),
        })
    }
}
