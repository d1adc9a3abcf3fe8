//! Training: cross_entropy on a small repeated dataset learns it; the optimizer's knobs (bias
//! correction, weight decay, clipping, Dimuon) behave as documented.

use tinker_core::types::Datum;

use super::super::tokenizer::encode;
use super::super::{
    AdamParams, DimuonParams, LossConfig, ModelSpec, OptimParams, OptimizerKind, ToyModel,
};
use super::{sft, small_model};

/// Supervised datums for a few short strings: predict every next byte.
fn dataset() -> Vec<Datum> {
    ["hello world", "hello there", "help me"]
        .iter()
        .map(|s| {
            let full = encode(s);
            let input: Vec<i32> = full[..full.len() - 1].to_vec();
            let targets: Vec<i64> = full[1..].iter().map(|&t| i64::from(t)).collect();
            sft(&input, &targets, &vec![1.0; targets.len()])
        })
        .collect()
}

#[test]
fn twenty_steps_of_cross_entropy_learn_a_small_dataset() {
    let mut model = ToyModel::new(ModelSpec::new("Qwen/Qwen3-8B", 8)).unwrap();
    let data = dataset();
    let adam = OptimParams::Adam(AdamParams {
        learning_rate: 0.1,
        ..AdamParams::default()
    });
    let ce = LossConfig::default();
    let mut losses = Vec::new();
    for _ in 0..20 {
        let out = model.forward_backward(&data, "cross_entropy", &ce).unwrap();
        losses.push(out.metrics["loss:sum"]);
        let metrics = model.optim_step(&adam).unwrap();
        assert!(metrics["grad_norm:mean"] > 0.0);
    }
    let last = model.forward(&data, "cross_entropy", &ce).unwrap().metrics["loss:sum"];
    let tokens = 10.0 + 10.0 + 6.0;
    // The random base model starts near its entropy (several nats per token)…
    assert!(
        losses[0] / tokens > 3.0,
        "initial loss per token {}",
        losses[0] / tokens
    );
    // …and 20 steps take the loss below a fifth of that.
    assert!(
        last < losses[0] / 5.0,
        "loss went from {} to {last}",
        losses[0]
    );
    assert_eq!(model.step(), 20);
}

#[test]
fn the_first_adam_step_moves_every_parameter_by_the_learning_rate_against_its_gradient() {
    // Bias correction makes the first update m̂/√v̂ = g/|g|: exactly lr·sign(g).
    let mut model = small_model();
    let before = model.clone();
    model
        .forward_backward(&dataset_small(), "cross_entropy", &LossConfig::default())
        .unwrap();
    let (ga, gb) = (model.grad_a.clone(), model.grad_b.clone());
    let lr = 0.01;
    model
        .optim_step(&OptimParams::Adam(AdamParams {
            learning_rate: lr,
            ..AdamParams::default()
        }))
        .unwrap();
    for (after, before, g) in [
        (&model.lora_a, &before.lora_a, &ga),
        (&model.lora_b, &before.lora_b, &gb),
    ] {
        for i in 0..g.len() {
            let expected = if g[i] == 0.0 {
                0.0
            } else {
                -lr * g[i].signum()
            };
            // eps = 1e-12 in the denominator shifts the step by a relative ~1e-10.
            assert!(
                (after[i] - before[i] - expected).abs() < lr * 1e-8,
                "entry {i}: moved {} for gradient {}",
                after[i] - before[i],
                g[i]
            );
        }
    }
}

fn dataset_small() -> Vec<Datum> {
    vec![sft(&[1, 2, 3, 4], &[2, 3, 4, 5], &[1.0; 4])]
}

#[test]
fn weight_decay_is_decoupled_from_the_gradient() {
    // No gradient at all: Adam's update is 0, and AdamW still shrinks θ by (1 − lr·wd).
    let mut model = small_model();
    let before = model.lora_b.clone();
    model
        .optim_step(&OptimParams::Adam(AdamParams {
            learning_rate: 0.1,
            weight_decay: 0.5,
            ..AdamParams::default()
        }))
        .unwrap();
    assert!((&model.lora_b - before * 0.95).norm() < 1e-12);
}

#[test]
fn gradient_clipping_caps_the_global_norm() {
    // Dimuon's stand-in is SGD with momentum, so the first update is exactly lr · clipped g.
    let spec = ModelSpec::new("toy/small", 3)
        .with_vocab_size(16)
        .with_optimizer(OptimizerKind::Dimuon);
    let mut model = ToyModel::new(spec).unwrap();
    model.lora_b = small_model().lora_b;
    model
        .forward_backward(&dataset_small(), "cross_entropy", &LossConfig::default())
        .unwrap();
    let norm = model.grad_norm();
    let clip = norm / 4.0;
    let before = (model.lora_a.clone(), model.lora_b.clone());
    let lr = 0.1;
    let metrics = model
        .optim_step(&OptimParams::Dimuon(DimuonParams {
            learning_rate: lr,
            grad_clip_norm: clip,
            beta1: 0.9,
        }))
        .unwrap();
    assert_eq!(
        metrics["grad_norm:mean"], norm,
        "the metric reports the norm before clipping"
    );
    let moved = ((&model.lora_a - &before.0).norm_squared()
        + (&model.lora_b - &before.1).norm_squared())
    .sqrt();
    assert!(
        (moved - lr * clip).abs() < 1e-12,
        "moved {moved}, expected {}",
        lr * clip
    );
}

#[test]
fn optimizer_parameters_must_fit_the_model() {
    let mut model = small_model();
    let err = model
        .optim_step(&OptimParams::Dimuon(DimuonParams::default()))
        .unwrap_err();
    assert!(err.is_user());
    assert!(err.message.contains("adamw"), "{err}");
    for bad in [
        AdamParams {
            learning_rate: -1.0,
            ..AdamParams::default()
        },
        AdamParams {
            beta1: 1.0,
            ..AdamParams::default()
        },
        AdamParams {
            beta2: f64::NAN,
            ..AdamParams::default()
        },
        AdamParams {
            weight_decay: -0.1,
            ..AdamParams::default()
        },
    ] {
        let err = model.optim_step(&OptimParams::Adam(bad)).unwrap_err();
        assert!(err.is_user(), "{err}");
    }
    assert_eq!(model.step(), 0, "rejected steps change nothing");
}
