//! The model's backward pass: gradients with respect to every LoRA parameter match central
//! finite differences of `loss:sum`, for every loss whose value is differentiable, on batches that
//! mix text, media positions and 2-D (top-K) targets; and gradients accumulate until optim_step.

use bytes::Bytes;
use nalgebra::DMatrix;
use tinker_core::types::{Chunk, Datum, ImageFormat, ModelInput, TensorData, TensorValues};

use super::super::{LossConfig, ToyModel};
use super::{f32s, logprobs, rl, sft, small_model};

/// A text + image + text input of 6 positions: tokens 3 1 4, two media positions, token 1.
fn mixed_input() -> ModelInput {
    ModelInput::from_chunks(vec![
        Chunk::tokens(vec![3, 1, 4]),
        Chunk::Image {
            data: Bytes::from_static(b"\x89PNG"),
            format: ImageFormat::Png,
            expected_tokens: Some(2),
        },
        Chunk::tokens(vec![1]),
    ])
}

/// Compares the accumulated gradient of one forward_backward with central differences of the
/// loss value, parameter by parameter.
fn check_gradient(model: &ToyModel, data: &[Datum], loss: &str, config: &LossConfig) {
    let mut trained = model.clone();
    trained.forward_backward(data, loss, config).unwrap();
    let loss_at = |m: &ToyModel| m.forward(data, loss, config).unwrap().metrics["loss:sum"];
    let h = 1e-5;
    let mut checked = 0;
    for which in ["A", "B"] {
        let (params, grads) = match which {
            "A" => (&model.lora_a, &trained.grad_a),
            _ => (&model.lora_b, &trained.grad_b),
        };
        for idx in 0..params.len() {
            let perturbed = |delta: f64| {
                let mut m = model.clone();
                let p: &mut DMatrix<f64> = if which == "A" {
                    &mut m.lora_a
                } else {
                    &mut m.lora_b
                };
                p[idx] += delta;
                loss_at(&m)
            };
            let numeric = (perturbed(h) - perturbed(-h)) / (2.0 * h);
            let analytic = grads[idx];
            assert!(
                (numeric - analytic).abs() <= 1e-6 * (1.0 + analytic.abs()),
                "{loss}: ∂L/∂{which}[{idx}] analytic {analytic} vs numeric {numeric}"
            );
            checked += usize::from(analytic != 0.0);
        }
    }
    assert!(
        checked > 20,
        "{loss}: only {checked} non-zero gradient entries; the check is too weak"
    );
}

#[test]
fn cross_entropy_gradients_match_finite_differences_with_media_positions() {
    let model = small_model();
    let data = vec![
        sft(&[1, 2, 3, 4], &[2, 3, 4, 5], &[0.0, 1.0, 1.0, 1.0]),
        // Repeated contexts (1 twice) and the media context; weights of any sign and size, as the
        // custom-loss path sends.
        Datum::new(mixed_input())
            .with_input(
                "target_tokens",
                TensorData::from_i64(vec![1, 4, 9, 9, 2, 7]),
            )
            .with_input("weights", f32s(&[1.0, -0.5, 2.0, 0.25, 1.0, 3.0])),
    ];
    check_gradient(&model, &data, "cross_entropy", &LossConfig::default());
}

#[test]
fn top_k_distillation_gradients_match_with_sparse_two_dimensional_targets() {
    let model = small_model();
    // 3 positions × K = 2 candidates, as CSR: row 0 has both, row 1 only column 1, row 2 none
    // (unlisted cells are token 0 with weight 0).
    let crow = vec![0, 2, 3, 3];
    let cols = vec![0, 1, 1];
    let targets = TensorData::csr(
        TensorValues::Int64(vec![5, 6, 7]),
        [3, 2],
        crow.clone(),
        cols.clone(),
    )
    .unwrap();
    let weights = TensorData::csr(
        TensorValues::Float32(vec![0.7, 0.3, 1.0]),
        [3, 2],
        crow,
        cols,
    )
    .unwrap();
    let datum = Datum::new(ModelInput::from_tokens(vec![2, 8, 2]))
        .with_input("target_tokens", targets)
        .with_input("weights", weights);
    let out = model
        .forward(
            std::slice::from_ref(&datum),
            "cross_entropy",
            &LossConfig::default(),
        )
        .unwrap();
    // Outputs keep the (N, K) shape, and the CSR pad cell (token 0) still gets its logprob.
    let lp = &out.loss_fn_outputs[0]["logprobs"];
    assert_eq!(lp.shape(), vec![3, 2]);
    let after_2 = model
        .next_token_logprobs(super::super::Position::Token(2))
        .unwrap();
    assert_eq!(lp.to_dense_f64(0.0)[4], after_2[0] as f32 as f64);
    check_gradient(&model, &[datum], "cross_entropy", &LossConfig::default());
}

/// An RL batch whose sampler logprobs put each ratio r = exp(lp − sp) at a chosen value, away from
/// every clip boundary (where the loss has kinks).
fn rl_batch(model: &ToyModel) -> Vec<Datum> {
    let shape = vec![
        (
            ModelInput::from_tokens(vec![1, 2, 3, 4]),
            vec![2i64, 3, 4, 5],
        ),
        (mixed_input(), vec![1i64, 4, 9, 9, 2, 7]),
    ];
    let probes: Vec<Datum> = shape
        .iter()
        .map(|(input, targets)| sft_probe(input, targets))
        .collect();
    let lps = logprobs(model, &probes);
    let log_ratios = [0.0, 0.3, -0.4, 0.05, -0.1, 0.5];
    let advantages = [0.0, 1.0, -1.0, 0.5, -2.0, 1.5];
    shape
        .into_iter()
        .zip(lps)
        .map(|((input, targets), lp)| {
            let n = targets.len();
            let sp: Vec<f64> = (0..n).map(|t| lp[t] - log_ratios[t % 6]).collect();
            rl(input, &targets, &sp, &advantages[..n])
        })
        .collect()
}

fn sft_probe(input: &ModelInput, targets: &[i64]) -> Datum {
    Datum::new(input.clone())
        .with_input("target_tokens", TensorData::from_i64(targets.to_vec()))
        .with_input("weights", TensorData::from_f32(vec![0.0; targets.len()]))
}

#[test]
fn rl_loss_gradients_match_finite_differences() {
    let model = small_model();
    let data = rl_batch(&model);
    for (loss, config) in [
        ("importance_sampling", LossConfig::default()),
        ("ppo", LossConfig::default()),
        (
            "ppo",
            LossConfig::default()
                .with_number("clip_low_threshold", 0.9)
                .with_number("clip_high_threshold", 1.1),
        ),
        ("dro", LossConfig::default().with_number("beta", 0.3)),
        (
            "stable_reinforce",
            LossConfig::default().with_number("kl_coeff", 0.2),
        ),
    ] {
        check_gradient(&model, &data, loss, &config);
    }
}

#[test]
fn cispo_and_gspo_back_propagate_exactly_their_per_token_gradient() {
    // Their loss values contain stop-gradients, so finite differences do not apply; instead the
    // model gradient must equal that of cross_entropy with weights −g (whose ∂L/∂lp is g).
    let model = small_model();
    let mut data = rl_batch(&model);
    for d in &mut data {
        let n = d.loss_fn_inputs["target_tokens"].first_dim();
        let mask: Vec<f64> = (0..n).map(|t| if t == 0 { 0.0 } else { 1.0 }).collect();
        d.loss_fn_inputs
            .insert("sequence_ratio_mask".into(), f32s(&mask));
    }
    for loss in ["cispo", "gspo"] {
        let rl_data: Vec<Datum> = data
            .iter()
            .map(|d| {
                let mut d = d.clone();
                if loss == "cispo" {
                    d.loss_fn_inputs.remove("sequence_ratio_mask");
                }
                d
            })
            .collect();
        let mut m = model.clone();
        let out = m
            .forward_backward(&rl_data, loss, &LossConfig::default())
            .unwrap();
        let equivalent: Vec<Datum> = rl_data
            .iter()
            .zip(&out.loss_fn_outputs)
            .map(|(d, o)| {
                let lp = o["logprobs"].to_dense_f64(0.0);
                let sp = d.loss_fn_inputs["logprobs"].to_dense_f64(0.0);
                let a = d.loss_fn_inputs["advantages"].to_dense_f64(0.0);
                let n = lp.len();
                let g: Vec<f64> = if loss == "cispo" {
                    (0..n)
                        .map(|t| -(lp[t] - sp[t]).exp().clamp(0.0, 4.0) * a[t])
                        .collect()
                } else {
                    let s = ((1..n).map(|t| lp[t] - sp[t]).sum::<f64>() / (n - 1) as f64).exp();
                    (0..n)
                        .map(|t| {
                            let clipped = (a[t] > 0.0 && s > 1.2) || (a[t] < 0.0 && s < 0.8);
                            if clipped {
                                0.0
                            } else {
                                -s * a[t]
                            }
                        })
                        .collect()
                };
                Datum::new(d.model_input.clone())
                    .with_input("target_tokens", d.loss_fn_inputs["target_tokens"].clone())
                    .with_input("weights", f32s(&g.iter().map(|g| -g).collect::<Vec<_>>()))
            })
            .collect();
        let mut reference = model.clone();
        reference
            .forward_backward(&equivalent, "cross_entropy", &LossConfig::default())
            .unwrap();
        // lp passes through float32 outputs and weights through float32 inputs: compare at that
        // precision.
        let diff = (&m.grad_a - &reference.grad_a).norm() + (&m.grad_b - &reference.grad_b).norm();
        assert!(m.grad_norm() > 0.1, "{loss}: gradient should not vanish");
        assert!(
            diff < 1e-5 * m.grad_norm(),
            "{loss}: gradients differ by {diff}"
        );
    }
}

#[test]
fn gradients_accumulate_across_calls_until_optim_step() {
    let model = small_model();
    let d1 = sft(&[1, 2, 3], &[2, 3, 4], &[1.0, 1.0, 1.0]);
    let d2 = sft(&[3, 5], &[5, 6], &[0.5, 2.0]);
    let ce = LossConfig::default();

    let mut split = model.clone();
    split
        .forward_backward(std::slice::from_ref(&d1), "cross_entropy", &ce)
        .unwrap();
    split
        .forward_backward(std::slice::from_ref(&d2), "cross_entropy", &ce)
        .unwrap();
    // A forward-only call in between changes nothing.
    split
        .forward(std::slice::from_ref(&d1), "cross_entropy", &ce)
        .unwrap();
    let mut joint = model.clone();
    joint
        .forward_backward(&[d1, d2], "cross_entropy", &ce)
        .unwrap();

    assert_eq!(split.pending_backwards(), 2);
    assert!(
        ((&split.grad_a - &joint.grad_a).norm() + (&split.grad_b - &joint.grad_b).norm()) < 1e-12
    );
    assert!(split.grad_norm() > 0.0);

    split
        .optim_step(&super::super::OptimParams::Adam(Default::default()))
        .unwrap();
    assert_eq!(
        split.grad_norm(),
        0.0,
        "optim_step clears the accumulated gradients"
    );
    assert_eq!(split.pending_backwards(), 0);
}

#[test]
fn forward_logprobs_are_log_softmax_of_the_bigram_logits() {
    let model = small_model();
    let data = [sft(&[7, 7, 2], &[7, 2, 15], &[1.0, 1.0, 1.0])];
    let out = model
        .forward(&data, "cross_entropy", &LossConfig::default())
        .unwrap();
    let lp = out.loss_fn_outputs[0]["logprobs"].to_dense_f64(0.0);
    let expect = |prev: i32, next: usize| {
        let z = model.logits(prev as usize);
        let lse = z.iter().map(|x| x.exp()).sum::<f64>().ln();
        z[next] - lse
    };
    for (i, (prev, next)) in [(7, 7), (7, 2), (2, 15)].into_iter().enumerate() {
        assert!((lp[i] - expect(prev, next)).abs() < 1e-6, "position {i}");
    }
    // loss:sum = −Σ w·lp, and elementwise_loss sums to it.
    let e = out.loss_fn_outputs[0]["elementwise_loss"].to_dense_f64(0.0);
    assert!((out.metrics["loss:sum"] + lp.iter().sum::<f64>()).abs() < 1e-5);
    assert!((out.metrics["loss:sum"] - e.iter().sum::<f64>()).abs() < 1e-5);
    assert_eq!(out.loss_fn_output_type, "CrossEntropyLossReturn");
}
