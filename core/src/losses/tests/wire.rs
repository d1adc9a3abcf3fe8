//! The custom-loss round trip as a client runs it, known values of the ready-made losses, and
//! the pipeline's executor contract.

use std::collections::BTreeMap;
use std::f64::consts::LN_2;

use proptest::prelude::*;

use super::{datum, rows_in};
use crate::losses::regularizers::{ElasticNet, Entropy, KlDivergence, L2};
use crate::losses::{
    backward_pass_data, evaluate_custom_loss, extract_logprobs, forward_pass_data,
    merge_custom_metrics, CustomLossOutput, Dpo, Executor, LogprobBatch, Reference,
    ReferenceLogprobs, RegularizerJob, RegularizerPipeline, ReverseKlDistillation, Sequential,
};
use crate::types::{ForwardBackwardOutput, TensorData};
use crate::ErrorKind;

/// What a server's forward pass would answer: the given rows as `logprobs` outputs.
fn forward_output(rows: &[Vec<f64>]) -> ForwardBackwardOutput {
    ForwardBackwardOutput {
        loss_fn_output_type: "CrossEntropyLossReturn".into(),
        loss_fn_outputs: rows
            .iter()
            .map(|r| {
                let v: Vec<f32> = r.iter().map(|x| *x as f32).collect();
                BTreeMap::from([("logprobs".to_string(), TensorData::from_f32(v))])
            })
            .collect(),
        metrics: BTreeMap::from([("loss:sum".to_string(), 0.0)]),
    }
}

#[test]
fn a_dpo_step_round_trips_from_forward_output_to_backward_weights() {
    // Two preference pairs; the prompt positions of each datum are masked out by its weights.
    let data = vec![
        datum(3, Some(vec![0.0, 1.0, 1.0])),
        datum(3, Some(vec![0.0, 1.0, 1.0])),
        datum(2, Some(vec![0.0, 1.0])),
        datum(2, Some(vec![0.0, 1.0])),
    ]
    .into_iter()
    .map(|d| {
        let n = d.loss_fn_inputs["target_tokens"].first_dim();
        d.with_input("advantages", TensorData::from_f32(vec![0.0; n]))
    })
    .collect::<Vec<_>>();

    // 1. The forward pass sends only target_tokens and weights.
    let forward = forward_pass_data(&data).unwrap();
    for (f, d) in forward.iter().zip(&data) {
        assert_eq!(
            f.loss_fn_inputs.keys().collect::<Vec<_>>(),
            ["target_tokens", "weights"]
        );
        assert_eq!(f.loss_fn_inputs["weights"], d.loss_fn_inputs["weights"]);
        assert_eq!(f.model_input, d.model_input);
    }

    // 2. The server answers logprobs; they become the loss's rows.
    let policy = vec![
        vec![-9.0, -0.5, -1.0],
        vec![-9.0, -2.0, -2.5],
        vec![-7.0, -0.25],
        vec![-7.0, -0.75],
    ];
    let rows = extract_logprobs(&data, &forward_output(&policy)).unwrap();
    assert_eq!(rows, policy);

    // 3. The loss: the reference is a bit worse on the chosen answers than the policy.
    let reference = ReferenceLogprobs::Sums(vec![-2.0, -4.0, -0.5, -0.75]);
    let dpo = Dpo::new(0.5, reference);
    let out = evaluate_custom_loss(&dpo, &LogprobBatch::with_data(&data, &rows).unwrap()).unwrap();
    assert!(
        out.loss < LN_2,
        "the policy already prefers the chosen answers: {}",
        out.loss
    );
    assert_eq!(out.metrics["accuracy"], 1.0);
    // Masked positions get no gradient; chosen tokens are pushed up (negative gradient).
    assert_eq!(out.gradients[0][0], 0.0);
    assert!(out.gradients[0][1] < 0.0 && out.gradients[1][1] > 0.0);

    // 4. The backward pass carries weights = −gradient, same targets and inputs.
    let backward = backward_pass_data(&data, &out).unwrap();
    for ((b, d), g) in backward.iter().zip(&data).zip(&out.gradients) {
        assert_eq!(
            b.loss_fn_inputs["target_tokens"],
            d.loss_fn_inputs["target_tokens"]
        );
        let w = b.loss_fn_inputs["weights"].as_f32().unwrap();
        let expected: Vec<f32> = g.iter().map(|v| -*v as f32).collect();
        assert_eq!(w, expected.as_slice());
    }

    // 5. The result's metrics: loss:sum is the DPO loss, the surrogate moved aside.
    let server = BTreeMap::from([
        ("loss:sum".to_string(), -0.31),
        ("tokens:sum".to_string(), 6.0),
    ]);
    let merged = merge_custom_metrics(server, &out);
    assert_eq!(merged["loss:sum"], out.loss);
    assert_eq!(merged["surrogate_loss:sum"], -0.31);
    assert_eq!(merged["tokens:sum"], 6.0);
    assert_eq!(merged["dpo_loss"], out.loss);
}

#[test]
fn forward_pass_fills_missing_weights_with_zeros_shaped_like_two_dimensional_targets() {
    let targets = TensorData::from_i64(vec![1, 2, 3, 4, 5, 6])
        .with_shape(vec![3, 2])
        .unwrap();
    let d = datum(3, None).with_input("target_tokens", targets);
    let forward = forward_pass_data(&[d]).unwrap();
    let w = &forward[0].loss_fn_inputs["weights"];
    assert_eq!(w.shape(), vec![3, 2]);
    assert_eq!(w.as_f32().unwrap(), &[0.0; 6]);

    // Logprobs of 2-D targets come back flattened row-major and go back out with the shape.
    let out = CustomLossOutput {
        loss: 1.0,
        gradients: vec![vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]],
        ..Default::default()
    };
    let backward = backward_pass_data(&forward, &out).unwrap();
    assert_eq!(backward[0].loss_fn_inputs["weights"].shape(), vec![3, 2]);
}

#[test]
fn a_malformed_forward_output_is_a_decode_error_naming_the_field() {
    let data = vec![datum(2, None), datum(1, None)];
    let cases: Vec<(ForwardBackwardOutput, &str)> = vec![
        (
            forward_output(&[vec![-1.0, -1.0]]),
            "loss_fn_outputs has 1 entries for 2 datums",
        ),
        (
            forward_output(&[vec![-1.0], vec![-1.0]]),
            "loss_fn_outputs[0].logprobs has 1 values",
        ),
        (
            forward_output(&[vec![-1.0, f64::NEG_INFINITY], vec![-1.0]]),
            "loss_fn_outputs[0].logprobs[1]",
        ),
        (
            ForwardBackwardOutput {
                loss_fn_outputs: vec![BTreeMap::new(), BTreeMap::new()],
                ..Default::default()
            },
            "loss_fn_outputs[0].logprobs is missing",
        ),
    ];
    for (output, expected) in cases {
        let err = extract_logprobs(&data, &output).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Decode);
        assert!(
            err.to_string().contains(expected),
            "{err} lacks {expected:?}"
        );
    }
}

#[test]
fn without_a_server_loss_no_surrogate_is_invented() {
    let merged = merge_custom_metrics(
        BTreeMap::new(),
        &CustomLossOutput {
            loss: 2.0,
            ..Default::default()
        },
    );
    assert_eq!(merged, BTreeMap::from([("loss:sum".to_string(), 2.0)]));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// At initialisation the policy is the reference, so every pair's log-ratio difference is
    /// exactly 0 and the loss is ln 2 to the last bit, however many pairs.
    #[test]
    fn dpo_at_initialisation_is_exactly_ln_2(
        policy in rows_in(2..=64, 1..=6, -9.0..0.0),
        beta in 0.01..5.0f64,
    ) {
        let pairs = policy.len() / 2 * 2;
        let policy = &policy[..pairs];
        let per_token = Dpo::new(beta, ReferenceLogprobs::PerToken(policy.to_vec()));
        let sums = Dpo::new(beta, ReferenceLogprobs::Sums(policy.iter().map(|r| r.iter().sum()).collect()));
        let batch = LogprobBatch::new(policy).unwrap();
        for dpo in [per_token, sums] {
            let out = evaluate_custom_loss(&dpo, &batch).unwrap();
            prop_assert_eq!(out.loss, LN_2);
            prop_assert_eq!(out.metrics["margin"], 0.0);
            prop_assert_eq!(out.metrics["accuracy"], 0.0);
            // σ(0) = ½: each token's gradient is ∓β/(2P).
            let expected = beta * 0.5 / (pairs / 2) as f64;
            prop_assert!((out.gradients[0][0] + expected).abs() <= 1e-15 * expected);
            prop_assert!((out.gradients[1][0] - expected).abs() <= 1e-15 * expected);
        }
    }
}

#[test]
fn dpo_at_initialisation_with_256_pairs_is_ln_2() {
    let policy: Vec<Vec<f64>> = (0..512)
        .map(|i| vec![-(i as f64) * 0.013 - 0.1, -1.7])
        .collect();
    let dpo = Dpo::new(0.1, ReferenceLogprobs::PerToken(policy.clone()));
    let out = evaluate_custom_loss(&dpo, &LogprobBatch::new(&policy).unwrap()).unwrap();
    assert_eq!(out.loss, LN_2);
}

#[test]
fn tinkex_worked_examples_give_the_documented_values() {
    // Elastic net: t = [1, −2, 3], λ 0.1, α 0.5 → 0.1·(0.5·6 + 0.5·14) = 1.0.
    let rows = vec![vec![1.0, -2.0, 3.0]];
    let batch = LogprobBatch::new(&rows).unwrap();
    let en = ElasticNet {
        lambda: 0.1,
        ..ElasticNet::default()
    };
    use crate::losses::Regularizer;
    assert!((en.compute(&batch).unwrap().loss - 1.0).abs() < 1e-15);

    // Entropy of ln[¼,¼,¼,¼] is ln 4; normalised 1; maximised −ln 4.
    let uniform = vec![vec![0.25f64.ln(); 4]];
    let batch = LogprobBatch::new(&uniform).unwrap();
    let h = Entropy::default().compute(&batch).unwrap().loss;
    assert!((h - 4f64.ln()).abs() < 1e-15);
    let normalised = Entropy {
        normalize: true,
        ..Entropy::default()
    }
    .compute(&batch)
    .unwrap()
    .loss;
    assert!((normalised - 1.0).abs() < 1e-15);
    let maximised = Entropy {
        mode: crate::losses::regularizers::EntropyMode::Maximize,
        ..Entropy::default()
    };
    assert!((maximised.compute(&batch).unwrap().loss + 4f64.ln()).abs() < 1e-15);
    // A temperature re-normalises and changes the value of a non-uniform row.
    let skewed = vec![vec![0.7f64.ln(), 0.2f64.ln(), 0.1f64.ln()]];
    let batch = LogprobBatch::new(&skewed).unwrap();
    let cold = Entropy {
        temperature: 0.5,
        ..Entropy::default()
    }
    .compute(&batch)
    .unwrap()
    .loss;
    let plain = Entropy::default().compute(&batch).unwrap().loss;
    assert!(
        cold < plain,
        "a colder distribution has less entropy: {cold} vs {plain}"
    );

    // KL of a distribution with itself is 0; against a shifted one it is positive.
    let p = vec![vec![0.5f64.ln(), 0.5f64.ln()]];
    let batch = LogprobBatch::new(&p).unwrap();
    assert_eq!(
        KlDivergence::new(Reference::Rows(p.clone()))
            .compute(&batch)
            .unwrap()
            .loss,
        0.0
    );
    let q = Reference::Rows(vec![vec![0.9f64.ln(), 0.1f64.ln()]]);
    assert!(KlDivergence::new(q).compute(&batch).unwrap().loss > 0.0);
}

#[test]
fn k2_distillation_gradient_is_the_cookbook_policy_gradient_per_token() {
    // The cookbook uses advantage Aₜ = −(student − teacher) with the importance-sampling loss
    // −Σₜ ratioₜ·Aₜ; on-policy (ratio 1) its gradient per token is −Aₜ = kₜ. Ours is kₜ·wₜ/W.
    let student = vec![vec![-0.2, -1.5, -3.0], vec![-0.7]];
    let teacher = vec![vec![-0.4, -0.5, -3.0], vec![-2.0]];
    let data = vec![datum(3, Some(vec![1.0, 1.0, 0.0])), datum(1, None)];
    let loss = ReverseKlDistillation::new(Reference::Rows(teacher.clone()));
    let out =
        evaluate_custom_loss(&loss, &LogprobBatch::with_data(&data, &student).unwrap()).unwrap();
    let tokens = out.metrics["distill_tokens"];
    assert_eq!(tokens, 3.0);
    for (i, row) in student.iter().enumerate() {
        for (t, s) in row.iter().enumerate() {
            let w = if (i, t) == (0, 2) { 0.0 } else { 1.0 };
            let advantage = -(s - teacher[i][t]);
            assert!((out.gradients[i][t] * tokens - (-advantage * w)).abs() < 1e-15);
        }
    }
    assert!((out.metrics["reverse_kl"] - (0.2 - 1.0 + 1.3) / 3.0).abs() < 1e-15);
}

/// An executor that runs every job on its own scoped thread, as a runtime adapter might.
fn threaded(jobs: Vec<RegularizerJob<'_>>) -> Vec<crate::Result<CustomLossOutput>> {
    std::thread::scope(|s| {
        let handles: Vec<_> = jobs.into_iter().map(|job| s.spawn(job)).collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("job panicked"))
            .collect()
    })
}

#[test]
fn parallel_and_sequential_evaluation_give_identical_results() {
    let rows = vec![vec![-0.3, -1.2, -2.0], vec![-0.9, -0.1, -4.0]];
    let reference = vec![vec![-0.5, -1.0, -2.5], vec![-1.0, -0.2, -3.0]];
    let pipeline = RegularizerPipeline::new(ReverseKlDistillation::new(Reference::Rows(
        reference.clone(),
    )))
    .add(0.1, L2::default())
    .unwrap()
    .add(0.5, Entropy::default())
    .unwrap()
    .add(2.0, KlDivergence::new(Reference::Rows(reference)))
    .unwrap();
    let batch = LogprobBatch::new(&rows).unwrap();
    let sequential = pipeline.evaluate_with(&batch, &Sequential).unwrap();
    let parallel = pipeline.evaluate_with(&batch, &threaded).unwrap();
    assert_eq!(sequential, parallel);
    assert_eq!(
        sequential
            .regularizers
            .iter()
            .map(|r| r.name.as_str())
            .collect::<Vec<_>>(),
        ["l2_weight_decay", "entropy", "kl_divergence"]
    );
    let metrics = sequential.metrics();
    for key in [
        "loss_total",
        "regularizer_total",
        "total_grad_norm",
        "entropy/value",
        "entropy/weight",
        "entropy/contribution",
        "entropy/grad_norm",
        "entropy/grad_norm_weighted",
        "entropy/temperature",
        "kl_divergence/kl_max",
        "reverse_kl",
    ] {
        assert!(metrics.contains_key(key), "missing metric {key}");
    }
    assert_eq!(metrics["kl_divergence/weight"], 2.0);
    // The tracked norms are the norms of the gradients actually combined.
    let total: f64 = sequential
        .gradients
        .iter()
        .flatten()
        .map(|g| g * g)
        .sum::<f64>()
        .sqrt();
    assert_eq!(sequential.total_grad_norm, total);
}

#[test]
fn the_first_failing_regularizer_in_order_is_the_error() {
    let rows = vec![vec![-1.0]];
    let pipeline = RegularizerPipeline::new(|b: &LogprobBatch<'_>| {
        Ok(CustomLossOutput {
            loss: 0.0,
            gradients: b.zeros(),
            ..Default::default()
        })
    })
    .add(1.0, KlDivergence::new(Reference::Field("first".into())))
    .unwrap()
    .add(1.0, crate::losses::regularizers::Orthogonality::default())
    .unwrap();
    let err = pipeline
        .evaluate(&LogprobBatch::new(&rows).unwrap())
        .unwrap_err();
    assert!(err.to_string().contains("kl_divergence.reference"), "{err}");
    // An executor that loses a result is caught.
    let lossy = |jobs: Vec<RegularizerJob<'_>>| {
        let mut out = Sequential.run_all(jobs);
        out.pop();
        out
    };
    super::assert_invalid(
        pipeline.evaluate_with(&LogprobBatch::new(&rows).unwrap(), &lossy),
        "regularizers",
    );
}
