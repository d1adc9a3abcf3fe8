//! Reverse-KL on-policy distillation (the tinker-cookbook's `distillation` recipe) as a
//! ready-made custom loss.

use std::collections::BTreeMap;

use super::custom::{CustomLoss, CustomLossOutput, LogprobBatch};
use super::regularizers::Reference;
use crate::error::{Error, Result};

/// Which sampled-token estimator of `KL(student‖teacher)` is the loss.
///
/// With `kₜ = logprob_studentₜ − logprob_teacherₜ` on tokens sampled from the student:
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KlEstimator {
    /// `loss = mean kₜ` (the "k1" estimator). Its value is an unbiased KL estimate, but its
    /// gradient `wₜ/W` does not involve the teacher and is zero in expectation on-policy: it
    /// measures, it does not teach. For reporting or for combining with other terms.
    K1,
    /// `loss = mean ½kₜ²` (the "k2" estimator), gradient `wₜ·kₜ/W`. This is the cookbook's
    /// training signal: it uses `−kₜ` as each token's advantage in a policy-gradient step, whose
    /// gradient on-policy is `Σₜ kₜ·∇logprobₜ` — exactly the gradient of this loss (and, in
    /// expectation, the gradient of the reverse KL). The default.
    K2,
}

/// On-policy distillation: the student (the model being trained) samples, the teacher scores the
/// same tokens, and the loss pulls the student's token logprobs towards the teacher's on the
/// tokens that count. Masks come from each datum's `weights` (all ones when absent); `W = Σ wₜ`.
///
/// `loss` depends on the [`KlEstimator`] (default k2); the metrics always hold both:
/// `reverse_kl` (mean `kₜ`, the usual KL estimate the cookbook reports), `reverse_kl_k2`
/// (mean `½kₜ²`) and `distill_tokens` (W).
///
/// ```
/// use tinker_core::losses::{evaluate_custom_loss, LogprobBatch, Reference, ReverseKlDistillation};
/// let student = vec![vec![-1.0, -2.0]];
/// let teacher = Reference::Rows(vec![vec![-1.5, -1.0]]);
/// let out = evaluate_custom_loss(&ReverseKlDistillation::new(teacher), &LogprobBatch::new(&student).unwrap())
///     .unwrap();
/// assert_eq!(out.metrics["reverse_kl"], (0.5 + -1.0) / 2.0);
/// assert_eq!(out.gradients, vec![vec![0.5 / 2.0, -1.0 / 2.0]]); // kₜ/W: lower token 1, raise token 2
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct ReverseKlDistillation {
    /// The teacher's logprobs of each datum's target tokens.
    pub teacher: Reference,
    /// k2 (default) or k1.
    pub estimator: KlEstimator,
}

impl ReverseKlDistillation {
    /// The k2 loss against `teacher` (e.g. [`Reference::Field`]`("teacher_logprobs")`).
    pub fn new(teacher: Reference) -> ReverseKlDistillation {
        ReverseKlDistillation {
            teacher,
            estimator: KlEstimator::K2,
        }
    }
}

impl CustomLoss for ReverseKlDistillation {
    fn compute(&self, batch: &LogprobBatch<'_>) -> Result<CustomLossOutput> {
        let teacher = self.teacher.resolve(batch, "distillation.teacher")?;
        let weights: Vec<Vec<f64>> = (0..batch.len())
            .map(|i| batch.weights(i))
            .collect::<Result<_>>()?;
        let total: f64 = weights.iter().flatten().sum();
        if total.is_nan() || total <= 0.0 {
            return Err(Error::invalid(
                "distillation",
                format!("the weights sum to {total}; at least one token must count"),
            ));
        }
        let (mut k1, mut k2) = (0.0, 0.0);
        let mut gradients = batch.zeros();
        for (i, lp) in batch.logprobs().iter().enumerate() {
            for (t, (&s, &q)) in lp.iter().zip(&teacher[i]).enumerate() {
                let (w, k) = (weights[i][t], s - q);
                k1 += w * k;
                k2 += w * 0.5 * k * k;
                gradients[i][t] = match self.estimator {
                    KlEstimator::K1 => w / total,
                    KlEstimator::K2 => w * k / total,
                };
            }
        }
        let (k1, k2) = (k1 / total, k2 / total);
        Ok(CustomLossOutput {
            loss: match self.estimator {
                KlEstimator::K1 => k1,
                KlEstimator::K2 => k2,
            },
            gradients,
            metrics: BTreeMap::from([
                ("reverse_kl".to_owned(), k1),
                ("reverse_kl_k2".to_owned(), k2),
                ("distill_tokens".to_owned(), total),
            ]),
        })
    }
}
