//! Each documented difference from Tinkex, shown.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::datum;
use super::gradients::LogSumExp;
use crate::losses::regularizers::{
    Center, Consistency, GradientPenalty, GradientPenaltyMode, KlDivergence, Orthogonality,
    TwiceDifferentiable, L2,
};
use crate::losses::{CustomLossOutput, LogprobBatch, Reference, Regularizer, RegularizerPipeline};
use crate::types::TensorData;

fn zero_base(b: &LogprobBatch<'_>) -> crate::Result<CustomLossOutput> {
    Ok(CustomLossOutput {
        loss: 0.0,
        gradients: b.zeros(),
        metrics: BTreeMap::new(),
    })
}

/// Tinkex's KL and consistency adapters return zero while traced, so inside a custom loss they add
/// nothing to the gradient. Here a pipeline with only such a term has exactly its gradient.
#[test]
fn kl_divergence_and_consistency_move_the_total_gradient() {
    let rows = vec![vec![-0.2, -1.9], vec![-0.6, -0.8]];
    let reference = vec![vec![-0.7, -0.7], vec![-0.1, -2.4]];
    let batch = LogprobBatch::new(&rows).unwrap();
    let terms: Vec<Box<dyn Fn() -> RegularizerPipeline>> = vec![
        Box::new(|| {
            RegularizerPipeline::new(zero_base)
                .add(0.5, KlDivergence::new(Reference::Rows(reference.clone())))
                .unwrap()
        }),
        Box::new(|| {
            RegularizerPipeline::new(zero_base)
                .add(
                    0.5,
                    Consistency {
                        reference: Reference::Rows(reference.clone()),
                        ..Consistency::default()
                    },
                )
                .unwrap()
        }),
    ];
    for pipeline in terms {
        let out = pipeline().evaluate(&batch).unwrap();
        assert!(
            out.total_grad_norm > 0.1,
            "the term contributes a real gradient: {}",
            out.total_grad_norm
        );
        assert_eq!(out.total_grad_norm, out.regularizers[0].grad_norm_weighted);
    }
}

/// Tinkex makes a 1-D tensor a single row, so orthogonality of a datum's logprobs is always 0.
/// Here the datums' 1-D vectors are the rows: overlap is penalised, orthogonal rows cost nothing,
/// and a lone vector is an error instead of a silent zero.
#[test]
fn orthogonality_compares_the_datums_one_dimensional_logprobs() {
    let overlapping = vec![vec![-1.0, -2.0, -0.5], vec![-1.5, -1.0]];
    let out = Orthogonality::default()
        .compute(&LogprobBatch::new(&overlapping).unwrap())
        .unwrap();
    // Rows zero-padded: cos = (1.5 + 2)/(√5.25·√3.25) ≈ 0.848, soft = 2·cos².
    let cos = 3.5 / (5.25f64.sqrt() * 3.25f64.sqrt());
    assert!((out.loss - 2.0 * cos * cos).abs() < 1e-12, "{}", out.loss);

    let orthogonal = vec![vec![-1.0, 0.0], vec![0.0, -3.0]];
    let out = Orthogonality::default()
        .compute(&LogprobBatch::new(&orthogonal).unwrap())
        .unwrap();
    assert_eq!(out.loss, 0.0);

    let lone = vec![vec![-1.0, -2.0]];
    let err = Orthogonality::default()
        .compute(&LogprobBatch::new(&lone).unwrap())
        .unwrap_err();
    assert!(
        err.to_string().contains("nothing to be orthogonal to"),
        "{err}"
    );
}

/// Tinkex's L2 gradient with `center: mean` drops the mean's own dependence, which only cancels
/// without clipping. With clipping, its formula disagrees with the derivative; ours matches it.
#[test]
fn l2_with_mean_centre_and_clip_has_the_exact_gradient() {
    // Centred on the mean −1.36: two values are clipped at ±0.5, three are not.
    let rows = vec![vec![-0.8, -1.0, -3.0, -0.9, -1.1]];
    let l2 = L2 {
        clip: Some(0.5),
        center: Center::Mean,
        ..L2::default()
    };
    let f = |x: &[Vec<f64>]| l2.compute(&LogprobBatch::new(x).unwrap()).unwrap().loss;
    let out = l2.compute(&LogprobBatch::new(&rows).unwrap()).unwrap();
    let mean = rows[0].iter().sum::<f64>() / 5.0;
    let h = 1e-6;
    for j in 0..5 {
        let (mut plus, mut minus) = (rows.clone(), rows.clone());
        plus[0][j] += h;
        minus[0][j] -= h;
        let numeric = (f(&plus) - f(&minus)) / (2.0 * h);
        let u: f64 = rows[0][j] - mean;
        let tinkex = if u.abs() < 0.5 { 2.0 * u } else { 0.0 };
        assert!(
            (out.gradients[0][j] - numeric).abs() < 1e-6,
            "ours {} vs numeric {numeric}",
            out.gradients[0][j]
        );
        assert!(
            (tinkex - numeric).abs() > 0.1,
            "Tinkex's {tinkex} would be off from {numeric}"
        );
    }
}

/// Tinkex draws the interpolation ε from a fresh random key per call; here ε is an option, so the
/// same inputs give the same penalty, and ε = 1 is the output mode.
#[test]
fn gradient_penalty_is_deterministic_and_states_its_function() {
    let rows = vec![vec![-0.5, -1.5], vec![-2.0]];
    let reference = Reference::Rows(vec![vec![-1.0, -1.0], vec![-1.0]]);
    let batch = LogprobBatch::new(&rows).unwrap();
    let function: Arc<dyn TwiceDifferentiable> = Arc::new(LogSumExp);
    let interpolated = |epsilon| GradientPenalty {
        function: function.clone(),
        mode: GradientPenaltyMode::Interpolated {
            epsilon,
            reference: reference.clone(),
        },
        target_norm: 1.0,
    };
    let a = interpolated(0.3).compute(&batch).unwrap();
    assert_eq!(a, interpolated(0.3).compute(&batch).unwrap());
    assert_ne!(a.loss, interpolated(0.7).compute(&batch).unwrap().loss);
    let output = GradientPenalty::new(function.clone())
        .compute(&batch)
        .unwrap();
    assert_eq!(interpolated(1.0).compute(&batch).unwrap(), output);
    // ‖softmax(x)‖ < 1 = τ here, so the penalty is (1 − ‖p‖)².
    let p = LogSumExp.gradient(&[-0.5, -1.5, -2.0]);
    let norm = p.iter().map(|v| v * v).sum::<f64>().sqrt();
    assert!((output.loss - (norm - 1.0).powi(2)).abs() < 1e-15);
}

/// Tinkex reads a field reference from the first datum only; here each datum uses its own.
#[test]
fn field_references_are_read_per_datum() {
    let data = vec![
        datum(1, None).with_input("original_logprobs", TensorData::from_f32(vec![-1.0])),
        datum(1, None).with_input("original_logprobs", TensorData::from_f32(vec![-4.0])),
    ];
    let rows = vec![vec![-1.0], vec![-4.0]];
    let out = Consistency::default()
        .compute(&LogprobBatch::with_data(&data, &rows).unwrap())
        .unwrap();
    assert_eq!(
        out.loss, 0.0,
        "each datum matches its own reference exactly"
    );
}
