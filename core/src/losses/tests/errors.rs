//! Bad options and bad shapes: each case names where the problem is.

use std::sync::Arc;

use super::gradients::LogSumExp;
use super::{assert_invalid, datum};
use crate::losses::regularizers::{
    Consistency, ElasticNet, Entropy, GradientPenalty, GradientPenaltyMode, KlDivergence,
    Orthogonality, TwiceDifferentiable, L1, L2,
};
use crate::losses::{
    backward_pass_data, evaluate_custom_loss, forward_pass_data, CustomLossOutput, Dpo, DpoPairing,
    LogprobBatch, Reference, ReferenceLogprobs, Regularizer, RegularizerPipeline,
    ReverseKlDistillation,
};
use crate::types::TensorData;

#[test]
fn batches_reject_empty_non_finite_and_misaligned_logprobs() {
    let data = vec![datum(2, None), datum(1, None)];
    let no_targets = vec![crate::types::Datum::new(
        crate::types::ModelInput::from_tokens(vec![1]),
    )];
    let cases: Vec<(crate::Result<LogprobBatch<'_>>, &str)> = vec![
        (LogprobBatch::new(&[]), "logprobs"),
        (
            LogprobBatch::new(&[vec![-1.0, f64::NAN]][..]).map(|_| unreachable!()),
            "logprobs[0][1]",
        ),
        (
            LogprobBatch::with_data(&data, &[vec![-1.0, -1.0]][..]).map(|_| unreachable!()),
            "logprobs",
        ),
        (
            LogprobBatch::with_data(&data, &[vec![-1.0, -1.0], vec![-1.0, -2.0]][..])
                .map(|_| unreachable!()),
            "logprobs[1]",
        ),
        (
            LogprobBatch::with_data(&no_targets, &[vec![-1.0]][..]).map(|_| unreachable!()),
            "data[0].loss_fn_inputs.target_tokens",
        ),
    ];
    for (result, location) in cases {
        assert_invalid(result, location);
    }
}

#[test]
fn custom_loss_outputs_must_match_the_batch_and_be_finite() {
    let rows = vec![vec![-1.0, -2.0], vec![-3.0]];
    let batch = LogprobBatch::new(&rows).unwrap();
    let returning = |out: CustomLossOutput| move |_: &LogprobBatch<'_>| Ok(out.clone());
    let cases = [
        (
            CustomLossOutput {
                loss: 1.0,
                gradients: vec![vec![0.0, 0.0]],
                ..Default::default()
            },
            "custom_loss.gradients",
        ),
        (
            CustomLossOutput {
                loss: 1.0,
                gradients: vec![vec![0.0, 0.0], vec![0.0, 0.0]],
                ..Default::default()
            },
            "custom_loss.gradients[1]",
        ),
        (
            CustomLossOutput {
                loss: f64::NAN,
                gradients: vec![vec![0.0, 0.0], vec![0.0]],
                ..Default::default()
            },
            "custom_loss.loss",
        ),
        (
            CustomLossOutput {
                loss: 1.0,
                gradients: vec![vec![0.0, f64::INFINITY], vec![0.0]],
                ..Default::default()
            },
            "custom_loss.gradients[0][1]",
        ),
    ];
    for (out, location) in cases {
        assert_invalid(evaluate_custom_loss(&returning(out), &batch), location);
    }
}

#[test]
fn wire_helpers_reject_missing_targets_and_unsendable_weights() {
    assert_invalid(forward_pass_data(&[]), "data");
    let untargeted = crate::types::Datum::new(crate::types::ModelInput::from_tokens(vec![1]))
        .with_input("weights", TensorData::from_f32(vec![1.0]));
    assert_invalid(
        forward_pass_data(&[datum(1, None), untargeted]),
        "data[1].loss_fn_inputs.target_tokens",
    );
    let huge = CustomLossOutput {
        loss: 0.0,
        gradients: vec![vec![0.0, 1e300]],
        ..Default::default()
    };
    assert_invalid(
        backward_pass_data(&[datum(2, None)], &huge),
        "custom_loss.gradients[0][1]",
    );
    let short = CustomLossOutput {
        loss: 0.0,
        gradients: vec![vec![0.0]],
        ..Default::default()
    };
    assert_invalid(
        backward_pass_data(&[datum(2, None)], &short),
        "custom_loss.gradients[0]",
    );
    assert_invalid(
        backward_pass_data(&[datum(2, None), datum(1, None)], &short),
        "custom_loss.gradients",
    );
}

/// A function whose gradient has the wrong length.
struct Broken;
impl TwiceDifferentiable for Broken {
    fn gradient(&self, _x: &[f64]) -> Vec<f64> {
        vec![1.0]
    }
    fn hessian_vector_product(&self, x: &[f64], _v: &[f64]) -> Vec<f64> {
        x.to_vec()
    }
}

#[test]
fn regularizer_options_are_checked() {
    let rows = vec![vec![-1.0, -2.0], vec![-3.0]];
    let one_row = vec![vec![-1.0, -2.0]];
    let batch = LogprobBatch::new(&rows).unwrap();
    let single = LogprobBatch::new(&one_row).unwrap();
    let gp = |mode, target_norm, function: Arc<dyn TwiceDifferentiable>| GradientPenalty {
        function,
        mode,
        target_norm,
    };
    let cases: Vec<(Box<dyn Regularizer>, &LogprobBatch<'_>, &str)> = vec![
        (
            Box::new(L1 {
                lambda: -1.0,
                ..L1::default()
            }),
            &batch,
            "l1_sparsity.lambda",
        ),
        (
            Box::new(L2 {
                lambda: f64::NAN,
                ..L2::default()
            }),
            &batch,
            "l2_weight_decay.lambda",
        ),
        (
            Box::new(L2 {
                clip: Some(0.0),
                ..L2::default()
            }),
            &batch,
            "l2_weight_decay.clip",
        ),
        (
            Box::new(ElasticNet {
                l1_ratio: 1.5,
                ..ElasticNet::default()
            }),
            &batch,
            "elastic_net.l1_ratio",
        ),
        (
            Box::new(Entropy {
                temperature: 0.0,
                ..Entropy::default()
            }),
            &batch,
            "entropy.temperature",
        ),
        (
            Box::new(Entropy {
                temperature: -2.0,
                ..Entropy::default()
            }),
            &batch,
            "entropy.temperature",
        ),
        (
            Box::new(Entropy {
                normalize: true,
                ..Entropy::default()
            }),
            &batch,
            "entropy.normalize (logprobs[1])",
        ),
        (
            Box::new(KlDivergence::new(Reference::Rows(vec![vec![-1.0]]))),
            &batch,
            "kl_divergence.reference",
        ),
        (
            Box::new(KlDivergence::new(Reference::Rows(vec![
                vec![-1.0],
                vec![-1.0],
            ]))),
            &batch,
            "kl_divergence.reference[0]",
        ),
        (
            Box::new(KlDivergence::new(Reference::Rows(vec![
                vec![-1.0, f64::NAN],
                vec![-1.0],
            ]))),
            &batch,
            "kl_divergence.reference[0][1]",
        ),
        (
            Box::new(KlDivergence::new(Reference::Field("teacher".into()))),
            &batch,
            "kl_divergence.reference",
        ),
        (
            Box::new(Consistency::default()),
            &batch,
            "consistency.reference",
        ),
        (Box::new(Orthogonality::default()), &single, "orthogonality"),
        (
            Box::new(gp(GradientPenaltyMode::Output, -1.0, Arc::new(LogSumExp))),
            &batch,
            "gradient_penalty.target_norm",
        ),
        (
            Box::new(gp(
                GradientPenaltyMode::Interpolated {
                    epsilon: 1.5,
                    reference: Reference::Rows(rows.clone()),
                },
                1.0,
                Arc::new(LogSumExp),
            )),
            &batch,
            "gradient_penalty.mode.epsilon",
        ),
        (
            Box::new(gp(GradientPenaltyMode::Output, 1.0, Arc::new(Broken))),
            &batch,
            "gradient_penalty.function.gradient",
        ),
    ];
    for (regularizer, batch, location) in cases {
        assert_invalid(regularizer.compute(batch), location);
    }
}

#[test]
fn a_field_reference_needs_the_field_on_every_datum() {
    let data = vec![
        datum(1, None).with_input("original_logprobs", TensorData::from_f32(vec![-1.0])),
        datum(1, None),
    ];
    let rows = vec![vec![-1.0], vec![-2.0]];
    let batch = LogprobBatch::with_data(&data, &rows).unwrap();
    assert_invalid(
        Consistency::default().compute(&batch),
        "data[1].loss_fn_inputs.original_logprobs",
    );
}

#[test]
fn pipeline_rejects_bad_weights_and_names() {
    let base = |b: &LogprobBatch<'_>| {
        Ok(CustomLossOutput {
            loss: 0.0,
            gradients: b.zeros(),
            ..Default::default()
        })
    };
    assert_invalid(
        RegularizerPipeline::new(base).add(-0.1, L1::default()),
        "regularizers[0].weight",
    );
    assert_invalid(
        RegularizerPipeline::new(base).add(f64::INFINITY, L1::default()),
        "regularizers[0].weight",
    );
    assert_invalid(
        RegularizerPipeline::new(base)
            .add(1.0, L1::default())
            .unwrap()
            .add(1.0, L1::default()),
        "regularizers[1].name",
    );
    assert_invalid(
        RegularizerPipeline::new(base).add_named("", 1.0, L1::default()),
        "regularizers[0].name",
    );
    // Options are checked when a regularizer joins, not only when it runs.
    assert_invalid(
        RegularizerPipeline::new(base).add(
            1.0,
            Entropy {
                temperature: 0.0,
                ..Entropy::default()
            },
        ),
        "entropy.temperature",
    );
    // Two of a kind under distinct names are fine.
    let two = RegularizerPipeline::new(base)
        .add_named("l1_a", 1.0, L1::default())
        .unwrap()
        .add_named("l1_b", 0.0, L1::default())
        .unwrap();
    assert_eq!(two.len(), 2);
}

/// A regularizer that returns a gradient of the wrong shape.
struct Misshapen;
impl Regularizer for Misshapen {
    fn name(&self) -> &str {
        "misshapen"
    }
    fn compute(&self, batch: &LogprobBatch<'_>) -> crate::Result<CustomLossOutput> {
        Ok(CustomLossOutput {
            loss: 0.0,
            gradients: vec![vec![]; batch.len()],
            ..Default::default()
        })
    }
}

#[test]
fn pipeline_checks_each_regularizers_output_shape() {
    let base = |b: &LogprobBatch<'_>| {
        Ok(CustomLossOutput {
            loss: 0.0,
            gradients: b.zeros(),
            ..Default::default()
        })
    };
    let pipeline = RegularizerPipeline::new(base).add(1.0, Misshapen).unwrap();
    let rows = vec![vec![-1.0]];
    assert_invalid(
        pipeline.evaluate(&LogprobBatch::new(&rows).unwrap()),
        "regularizers.misshapen.gradients[0]",
    );
}

#[test]
fn dpo_and_distillation_options_are_checked() {
    let rows = vec![vec![-1.0], vec![-2.0], vec![-3.0]];
    let batch = LogprobBatch::new(&rows).unwrap();
    let sums = ReferenceLogprobs::Sums(vec![-1.0, -2.0, -3.0]);
    let with = |pairing| Dpo {
        beta: 0.1,
        pairing,
        reference: sums.clone(),
    };
    let cases = vec![
        (Dpo::new(0.1, sums.clone()), "dpo.pairing"),
        (
            Dpo {
                beta: 0.0,
                ..with(DpoPairing::Explicit(vec![(0, 1)]))
            },
            "dpo.beta",
        ),
        (with(DpoPairing::Explicit(vec![])), "dpo.pairing"),
        (
            with(DpoPairing::Explicit(vec![(0, 1), (2, 3)])),
            "dpo.pairing[1]",
        ),
        (with(DpoPairing::Explicit(vec![(1, 1)])), "dpo.pairing[0]"),
        (
            Dpo::new(0.1, ReferenceLogprobs::Sums(vec![-1.0])),
            "dpo.pairing",
        ),
        (
            Dpo {
                reference: ReferenceLogprobs::Sums(vec![-1.0]),
                ..with(DpoPairing::Explicit(vec![(0, 1)]))
            },
            "dpo.reference",
        ),
        (
            Dpo {
                reference: ReferenceLogprobs::Sums(vec![-1.0, f64::NAN, 0.0]),
                ..with(DpoPairing::Explicit(vec![(0, 1)]))
            },
            "dpo.reference[1]",
        ),
    ];
    for (dpo, location) in cases {
        assert_invalid(evaluate_custom_loss(&dpo, &batch), location);
    }

    let data = vec![
        datum(1, Some(vec![0.0])),
        datum(1, Some(vec![0.0])),
        datum(1, Some(vec![0.0])),
    ];
    let masked = LogprobBatch::with_data(&data, &rows).unwrap();
    let distill = ReverseKlDistillation::new(Reference::Rows(rows.clone()));
    assert_invalid(evaluate_custom_loss(&distill, &masked), "distillation");
    let wrong = ReverseKlDistillation::new(Reference::Rows(vec![
        vec![-1.0, -1.0],
        vec![-2.0],
        vec![-3.0],
    ]));
    assert_invalid(
        evaluate_custom_loss(&wrong, &batch),
        "distillation.teacher[0]",
    );
}
