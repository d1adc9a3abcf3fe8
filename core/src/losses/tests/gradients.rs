//! Every analytic gradient against central finite differences at random inputs.
//!
//! Inputs are logprob-like (negative) unless a case needs mixed signs; cases that would put a
//! kink of a piecewise function (|x| at 0, a clip edge, the KL clamp) within a few steps of the
//! evaluation point are skipped, since no derivative exists there.

use std::sync::Arc;

use proptest::prelude::*;

use super::{check_gradient, datum, on_rows, rows_in, rows_like};
use crate::losses::regularizers::{
    Center, Consistency, ConsistencyMetric, ElasticNet, Entropy, EntropyMode, GradientPenalty,
    GradientPenaltyMode, KlDirection, KlDivergence, Orthogonality, OrthogonalityAxis,
    OrthogonalityMode, Reduction, Target, TwiceDifferentiable, L1, L2,
};
use crate::losses::{
    evaluate_custom_loss, Dpo, DpoPairing, KlEstimator, LogprobBatch, Reference, ReferenceLogprobs,
    Regularizer, RegularizerPipeline, ReverseKlDistillation,
};

fn reduction() -> impl Strategy<Value = Reduction> {
    prop_oneof![Just(Reduction::Sum), Just(Reduction::Mean)]
}

fn norm_target() -> impl Strategy<Value = Target> {
    prop_oneof![Just(Target::Logprobs), Just(Target::Probs)]
}

/// A regularizer's value as a function of the rows.
fn reg<R: Regularizer>(
    r: &R,
) -> impl Fn(&[Vec<f64>]) -> crate::Result<crate::losses::CustomLossOutput> + '_ {
    move |rows| r.compute(&LogprobBatch::new(rows)?)
}

/// `f(x) = ln Σ eˣ`: ∇f = softmax(x), H·v = p∘v − p(p·v).
pub(super) struct LogSumExp;

impl TwiceDifferentiable for LogSumExp {
    fn gradient(&self, x: &[f64]) -> Vec<f64> {
        let max = x.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = x.iter().map(|v| (v - max).exp()).collect();
        let s: f64 = e.iter().sum();
        e.iter().map(|v| v / s).collect()
    }
    fn hessian_vector_product(&self, x: &[f64], v: &[f64]) -> Vec<f64> {
        let p = self.gradient(x);
        let pv: f64 = p.iter().zip(v).map(|(a, b)| a * b).sum();
        p.iter().zip(v).map(|(pi, vi)| pi * vi - pi * pv).collect()
    }
}

/// `f(x) = ¼Σx⁴`: ∇f = x³, H·v = 3x²∘v.
pub(super) struct Quartic;

impl TwiceDifferentiable for Quartic {
    fn gradient(&self, x: &[f64]) -> Vec<f64> {
        x.iter().map(|v| v * v * v).collect()
    }
    fn hessian_vector_product(&self, x: &[f64], v: &[f64]) -> Vec<f64> {
        x.iter().zip(v).map(|(a, b)| 3.0 * a * a * b).collect()
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn l1_gradient_is_exact(
        x in rows_in(1..=3, 1..=5, -6.0..-0.05),
        lambda in 0.0..3.0f64,
        reduction in reduction(),
        target in norm_target(),
    ) {
        let r = L1 { lambda, reduction, target };
        check_gradient(reg(&r), &x)?;
    }

    #[test]
    fn l2_gradient_is_exact_with_centring_and_clipping(
        x in rows_in(1..=3, 1..=5, -6.0..-0.05),
        lambda in 0.0..3.0f64,
        reduction in reduction(),
        target in norm_target(),
        clip in prop::option::of(0.2..3.0f64),
        center in prop_oneof![Just(Center::Zero), Just(Center::Mean), (-3.0..0.0f64).prop_map(Center::Value)],
    ) {
        let r = L2 { lambda, reduction, target: target.clone(), clip, center };
        // Skip points within a few steps of a clip edge, where the derivative jumps.
        if let Some(k) = clip {
            let t: Vec<f64> = x.iter().flatten().map(|v| if target == Target::Probs { v.exp() } else { *v }).collect();
            let c = match center {
                Center::Zero => 0.0,
                Center::Mean => t.iter().sum::<f64>() / t.len() as f64,
                Center::Value(c) => c,
            };
            prop_assume!(t.iter().all(|v| ((v - c).abs() - k).abs() > 1e-3));
        }
        check_gradient(reg(&r), &x)?;
    }

    #[test]
    fn elastic_net_gradient_is_exact(
        x in rows_in(1..=3, 1..=5, -6.0..-0.05),
        lambda in 0.0..3.0f64,
        l1_ratio in 0.0..=1.0f64,
        reduction in reduction(),
        target in norm_target(),
    ) {
        let r = ElasticNet { lambda, reduction, target, l1_ratio };
        check_gradient(reg(&r), &x)?;
    }

    #[test]
    fn entropy_gradient_is_exact_at_any_temperature(
        x in rows_in(1..=3, 2..=5, -8.0..0.0),
        temperature in prop_oneof![Just(1.0), 0.2..3.0f64],
        maximize in any::<bool>(),
        normalize in any::<bool>(),
        reduction in reduction(),
    ) {
        let mode = if maximize { EntropyMode::Maximize } else { EntropyMode::Minimize };
        let r = Entropy { mode, reduction, normalize, temperature };
        check_gradient(reg(&r), &x)?;
    }

    #[test]
    fn kl_divergence_gradient_is_exact_in_every_direction_including_the_clamp(
        (x, reference) in rows_in(1..=3, 1..=5, -6.0..0.0)
            .prop_flat_map(|x| { let r = rows_like(&x, -200.0..0.0); (Just(x), r) }),
        direction in prop_oneof![Just(KlDirection::Forward), Just(KlDirection::Reverse)],
        symmetric in any::<bool>(),
        reduction in reduction(),
    ) {
        // Differences beyond 100 exercise the clamp; stay clear of its edge.
        prop_assume!(x.iter().flatten().zip(reference.iter().flatten())
            .all(|(a, b)| ((a - b).abs() - 100.0).abs() > 1e-3));
        let r = KlDivergence { reference: Reference::Rows(reference), reduction, direction, symmetric };
        check_gradient(reg(&r), &x)?;
    }

    #[test]
    fn consistency_gradient_is_exact_for_every_metric(
        (x, reference) in rows_in(1..=3, 1..=5, -3.0..3.0)
            .prop_flat_map(|x| { let r = rows_like(&x, -3.0..3.0); (Just(x), r) }),
        metric in prop_oneof![
            Just(ConsistencyMetric::Mse), Just(ConsistencyMetric::L1),
            Just(ConsistencyMetric::Cosine), Just(ConsistencyMetric::Kl),
        ],
        reduction in reduction(),
    ) {
        prop_assume!(x.iter().flatten().zip(reference.iter().flatten()).all(|(a, b)| (a - b).abs() > 1e-3));
        let r = Consistency { reference: Reference::Rows(reference), metric, reduction };
        check_gradient(reg(&r), &x)?;
    }

    #[test]
    fn orthogonality_gradient_is_exact_for_every_mode_and_axis(
        x in rows_in(2..=4, 1..=5, -3.0..3.0),
        mode in prop_oneof![
            Just(OrthogonalityMode::Soft), Just(OrthogonalityMode::Hard), Just(OrthogonalityMode::Spectral),
        ],
        normalize in any::<bool>(),
        positions in any::<bool>(),
    ) {
        let axis = if positions { OrthogonalityAxis::Positions } else { OrthogonalityAxis::Datums };
        if positions {
            prop_assume!(x.iter().map(Vec::len).max().unwrap_or(0) >= 2);
        }
        let r = Orthogonality { mode, normalize, axis };
        check_gradient(reg(&r), &x)?;
    }

    #[test]
    fn gradient_penalty_gradient_is_exact_in_both_modes(
        (x, reference) in rows_in(1..=3, 1..=4, -2.0..0.0)
            .prop_flat_map(|x| { let r = rows_like(&x, -2.0..0.0); (Just(x), r) }),
        quartic in any::<bool>(),
        target_norm in 0.0..2.0f64,
        epsilon in prop::option::of(0.0..=1.0f64),
    ) {
        let function: Arc<dyn TwiceDifferentiable> = if quartic { Arc::new(Quartic) } else { Arc::new(LogSumExp) };
        let mode = match epsilon {
            None => GradientPenaltyMode::Output,
            Some(epsilon) => GradientPenaltyMode::Interpolated { epsilon, reference: Reference::Rows(reference) },
        };
        let r = GradientPenalty { function, mode, target_norm };
        check_gradient(reg(&r), &x)?;
    }

    #[test]
    fn dpo_gradient_is_exact_with_masks_and_explicit_pairs(
        (x, reference, masks) in rows_in(2..=6, 1..=4, -6.0..0.0).prop_flat_map(|x| {
            let r = rows_like(&x, -6.0..0.0);
            let m: Vec<_> = x.iter().map(|row| prop::collection::vec(prop_oneof![Just(0.0f32), Just(1.0f32), 0.0..1.0f32], row.len())).collect();
            (Just(x), r, m)
        }),
        beta in 0.05..2.0f64,
        explicit in any::<bool>(),
    ) {
        let n = x.len();
        let pairing = if explicit {
            // Every datum chosen against the next, wrapping: datums appear in two pairs.
            DpoPairing::Explicit((0..n).map(|i| (i, (i + 1) % n)).collect())
        } else {
            prop_assume!(n % 2 == 0);
            DpoPairing::Consecutive
        };
        let data: Vec<_> = masks.iter().map(|m| datum(m.len(), Some(m.clone()))).collect();
        let dpo = Dpo { beta, pairing, reference: ReferenceLogprobs::PerToken(reference) };
        check_gradient(|rows| evaluate_custom_loss(&dpo, &LogprobBatch::with_data(&data, rows)?), &x)?;
    }

    #[test]
    fn reverse_kl_distillation_gradient_is_exact_for_both_estimators(
        (x, teacher, masks) in rows_in(1..=3, 1..=5, -6.0..0.0).prop_flat_map(|x| {
            let t = rows_like(&x, -6.0..0.0);
            let m: Vec<_> = x.iter().map(|row| prop::collection::vec(prop_oneof![Just(0.0f32), Just(1.0f32)], row.len())).collect();
            (Just(x), t, m)
        }),
        k1 in any::<bool>(),
    ) {
        prop_assume!(masks.iter().flatten().any(|w| *w > 0.0));
        let data: Vec<_> = masks.iter().map(|m| datum(m.len(), Some(m.clone()))).collect();
        let loss = ReverseKlDistillation {
            teacher: Reference::Rows(teacher),
            estimator: if k1 { KlEstimator::K1 } else { KlEstimator::K2 },
        };
        check_gradient(|rows| evaluate_custom_loss(&loss, &LogprobBatch::with_data(&data, rows)?), &x)?;
    }

    #[test]
    fn pipeline_total_gradient_is_exact_and_parts_add_up(
        (x, reference) in rows_in(2..=4, 2..=4, -5.0..-0.05)
            .prop_flat_map(|x| { let r = rows_like(&x, -5.0..0.0); (Just(x), r) }),
        weights in prop::collection::vec(0.0..2.0f64, 5),
    ) {
        let n = x.len();
        let pairs = DpoPairing::Explicit((0..n).map(|i| (i, (i + 1) % n)).collect());
        let base = Dpo { beta: 0.5, pairing: pairs, reference: ReferenceLogprobs::PerToken(reference.clone()) };
        let pipeline = RegularizerPipeline::new(base)
            .add(weights[0], L1::default()).unwrap()
            .add(weights[1], Entropy { temperature: 0.7, ..Entropy::default() }).unwrap()
            .add(weights[2], KlDivergence::new(Reference::Rows(reference.clone()))).unwrap()
            .add(weights[3], Consistency { reference: Reference::Rows(reference), ..Consistency::default() }).unwrap()
            .add(weights[4], Orthogonality::default()).unwrap();
        check_gradient(on_rows(&pipeline), &x)?;

        let out = pipeline.evaluate(&LogprobBatch::new(&x).unwrap()).unwrap();
        let sum: f64 = out.regularizers.iter().map(|r| r.contribution).sum();
        prop_assert_eq!(out.regularizer_total, sum);
        prop_assert_eq!(out.loss_total, out.base_loss + sum);
        for (r, w) in out.regularizers.iter().zip(&weights) {
            prop_assert_eq!(r.contribution, w * r.value);
            prop_assert!((r.grad_norm_weighted - w * r.grad_norm).abs() <= 1e-12 * (1.0 + r.grad_norm_weighted));
        }
    }
}

/// The norm of the central-difference gradient of `f` at `x` (the gradient tracker's reference).
fn numeric_gradient_norm(f: impl Fn(&[Vec<f64>]) -> f64, x: &[Vec<f64>]) -> f64 {
    const H: f64 = 1e-5;
    let mut sum = 0.0;
    for i in 0..x.len() {
        for j in 0..x[i].len() {
            let at = |d: f64| {
                let mut y = x.to_vec();
                y[i][j] += d;
                f(&y)
            };
            let g = (at(H) - at(-H)) / (2.0 * H);
            sum += g * g;
        }
    }
    sum.sqrt()
}

#[test]
fn gradient_norm_of_a_sum_is_the_square_root_of_the_element_count() {
    // Tinkex's GradientTracker example: f = Σx on [1, 2, 3] → √3.
    assert_eq!(
        crate::losses::gradient_norm(&[vec![1.0, 1.0], vec![1.0]]),
        3f64.sqrt()
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// The gradient tracker: every norm a pipeline reports (base, each regularizer, total)
    /// equals the norm of that part's finite-difference gradient.
    #[test]
    fn pipeline_gradient_norms_match_finite_differences(
        x in rows_in(1..=3, 2..=4, -4.0..-0.1),
        weights in prop::collection::vec(0.0..2.0f64, 2),
    ) {
        let base = |b: &LogprobBatch<'_>| -> crate::Result<crate::losses::CustomLossOutput> {
            let g = b.logprobs().iter().map(|r| r.iter().map(|v| 2.0 * v).collect()).collect();
            let loss = b.logprobs().iter().flatten().map(|v| v * v).sum();
            Ok(crate::losses::CustomLossOutput { loss, gradients: g, ..Default::default() })
        };
        let entropy = Entropy { temperature: 0.8, ..Entropy::default() };
        let l2 = L2 { reduction: Reduction::Mean, ..L2::default() };
        let pipeline = RegularizerPipeline::new(base)
            .add(weights[0], entropy.clone()).unwrap()
            .add(weights[1], l2.clone()).unwrap();
        let out = pipeline.evaluate(&LogprobBatch::new(&x).unwrap()).unwrap();
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-4 * a.abs().max(b.abs()) + 1e-8;
        let base_numeric = numeric_gradient_norm(|r| base(&LogprobBatch::new(r).unwrap()).unwrap().loss, &x);
        prop_assert!(close(out.base_grad_norm, base_numeric), "base {} vs {}", out.base_grad_norm, base_numeric);
        let entropy_numeric = numeric_gradient_norm(|r| entropy.compute(&LogprobBatch::new(r).unwrap()).unwrap().loss, &x);
        prop_assert!(close(out.regularizers[0].grad_norm, entropy_numeric), "entropy {} vs {}", out.regularizers[0].grad_norm, entropy_numeric);
        let l2_numeric = numeric_gradient_norm(|r| l2.compute(&LogprobBatch::new(r).unwrap()).unwrap().loss, &x);
        prop_assert!(close(out.regularizers[1].grad_norm, l2_numeric), "l2 {} vs {}", out.regularizers[1].grad_norm, l2_numeric);
        let total_numeric = numeric_gradient_norm(|rows: &[Vec<f64>]| {
            pipeline.evaluate(&LogprobBatch::new(rows).unwrap()).unwrap().loss_total
        }, &x);
        prop_assert!(close(out.total_grad_norm, total_numeric), "total {} vs {}", out.total_grad_norm, total_numeric);
    }
}
