//! Checkpoints: save with optimizer state → load → continue is bit-identical to never stopping;
//! loading weights only restarts the optimizer and diverges; bytes round-trip exactly.

use tinker_core::types::Datum;

use super::super::tokenizer::encode;
use super::super::{AdamParams, LossConfig, ModelSpec, OptimParams, Snapshot, ToyModel};
use super::sft;

fn data() -> Vec<Datum> {
    let full = encode("the cat sat on the mat");
    let input: Vec<i32> = full[..full.len() - 1].to_vec();
    let targets: Vec<i64> = full[1..].iter().map(|&t| i64::from(t)).collect();
    vec![sft(&input, &targets, &vec![1.0; targets.len()])]
}

fn train(model: &mut ToyModel, steps: usize) -> Vec<f64> {
    let adam = OptimParams::Adam(AdamParams {
        learning_rate: 0.02,
        weight_decay: 0.01,
        ..AdamParams::default()
    });
    (0..steps)
        .map(|_| {
            let loss = model
                .forward_backward(&data(), "cross_entropy", &LossConfig::default())
                .unwrap()
                .metrics["loss:sum"];
            model.optim_step(&adam).unwrap();
            loss
        })
        .collect()
}

#[test]
fn resuming_with_optimizer_state_equals_an_uninterrupted_run_bit_for_bit() {
    let mut model = ToyModel::new(ModelSpec::new("Qwen/Qwen3-8B", 4).with_seed(11)).unwrap();
    train(&mut model, 3);
    let saved = model.snapshot().to_bytes();

    let mut uninterrupted = model.clone();
    let losses_a = train(&mut uninterrupted, 3);

    let snapshot = Snapshot::from_bytes(&saved).unwrap();
    assert_eq!(snapshot.step(), Some(3));
    let mut resumed = ToyModel::from_snapshot(&snapshot, true).unwrap();
    let losses_b = train(&mut resumed, 3);

    assert_eq!(losses_a, losses_b, "same losses, to the bit");
    assert_eq!(
        uninterrupted.snapshot().to_bytes(),
        resumed.snapshot().to_bytes()
    );
    assert_eq!(resumed.step(), 6);
}

#[test]
fn loading_weights_only_restarts_the_optimizer_and_diverges() {
    let mut model = ToyModel::new(ModelSpec::new("Qwen/Qwen3-8B", 4).with_seed(11)).unwrap();
    train(&mut model, 3);
    let weights = model.sampler_snapshot();
    assert!(!weights.has_optimizer_state());

    let mut uninterrupted = model.clone();
    train(&mut uninterrupted, 3);
    let mut fresh_optimizer = ToyModel::new(ModelSpec::new("Qwen/Qwen3-8B", 4)).unwrap();
    fresh_optimizer.restore(&weights, false).unwrap();
    assert_eq!(fresh_optimizer.step(), 0);
    // Same starting weights: the first forward agrees exactly…
    assert_eq!(
        fresh_optimizer
            .forward(&data(), "cross_entropy", &LossConfig::default())
            .unwrap(),
        model
            .forward(&data(), "cross_entropy", &LossConfig::default())
            .unwrap()
    );
    train(&mut fresh_optimizer, 3);
    // …but restarted moments (and bias correction) take training elsewhere.
    assert_ne!(
        uninterrupted.sampler_snapshot().to_bytes(),
        fresh_optimizer.sampler_snapshot().to_bytes()
    );
    // Asking for optimizer state that a sampler checkpoint lacks is a user error.
    let err = ToyModel::from_snapshot(&weights, true).unwrap_err();
    assert!(
        err.is_user() && err.message.contains("no optimizer state"),
        "{err}"
    );
}

#[test]
fn restore_drops_pending_gradients_and_checks_compatibility() {
    let mut model = ToyModel::new(ModelSpec::new("base-a", 4)).unwrap();
    let snap = model.snapshot();
    model
        .forward_backward(&data(), "cross_entropy", &LossConfig::default())
        .unwrap();
    model.restore(&snap, true).unwrap();
    assert_eq!(model.pending_backwards(), 0);
    assert_eq!(model.grad_norm(), 0.0);

    for other in [
        ModelSpec::new("base-b", 4),
        ModelSpec::new("base-a", 8),
        ModelSpec::new("base-a", 4).with_vocab_size(300),
    ] {
        let err = ToyModel::new(other)
            .unwrap()
            .restore(&snap, false)
            .unwrap_err();
        assert!(err.is_user(), "{err}");
    }
}

#[test]
fn snapshot_bytes_round_trip_and_corruption_is_an_error_not_a_panic() {
    let mut model = ToyModel::new(ModelSpec::new("Qwen/Qwen3-8B", 2).with_vocab_size(32)).unwrap();
    train_small(&mut model);
    for snap in [model.snapshot(), model.sampler_snapshot()] {
        let bytes = snap.to_bytes();
        assert_eq!(Snapshot::from_bytes(&bytes).unwrap(), snap);
        for cut in [0, 7, 12, 20, bytes.len() - 1] {
            assert!(Snapshot::from_bytes(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut extra = bytes.clone();
        extra.push(0);
        assert!(Snapshot::from_bytes(&extra).is_err());
    }
}

fn train_small(model: &mut ToyModel) {
    let d = sft(&[1, 2, 3], &[2, 3, 4], &[1.0; 3]);
    model
        .forward_backward(&[d], "cross_entropy", &LossConfig::default())
        .unwrap();
    model
        .optim_step(&OptimParams::Adam(AdamParams::default()))
        .unwrap();
}
