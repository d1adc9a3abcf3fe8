//! Scenario tests of the toy model. Shared builders live here; each file tells one story.

mod checkpoint;
mod gradients;
mod loss_vectors;
mod sampling;
mod timing;
mod training;
mod validation;

use nalgebra::DMatrix;
use tinker_core::types::{Datum, ModelInput, TensorData};

use super::{LossConfig, ModelSpec, SplitMix64, ToyModel};

/// A small model (V = 16, rank 3) whose `B` is random, so gradients reach both LoRA factors
/// (with the LoRA initialisation B = 0, ∂L/∂A is identically zero).
fn small_model() -> ToyModel {
    let mut model = ToyModel::new(
        ModelSpec::new("toy/small", 3)
            .with_vocab_size(16)
            .with_seed(5),
    )
    .expect("valid spec");
    let mut rng = SplitMix64::new(99);
    model.lora_b = DMatrix::from_fn(16, 3, |_, _| 0.5 * rng.next_normal());
    model
}

/// A supervised datum.
fn sft(tokens: &[i32], targets: &[i64], weights: &[f32]) -> Datum {
    Datum::new(ModelInput::from_tokens(tokens.to_vec()))
        .with_input("target_tokens", TensorData::from_i64(targets.to_vec()))
        .with_input("weights", TensorData::from_f32(weights.to_vec()))
}

/// An RL datum (`target_tokens`, sampler `logprobs`, `advantages`).
fn rl(input: ModelInput, targets: &[i64], sp: &[f64], advantages: &[f64]) -> Datum {
    Datum::new(input)
        .with_input("target_tokens", TensorData::from_i64(targets.to_vec()))
        .with_input("logprobs", f32s(sp))
        .with_input("advantages", f32s(advantages))
}

fn f32s(values: &[f64]) -> TensorData {
    TensorData::from_f32(values.iter().map(|&x| x as f32).collect::<Vec<_>>())
}

/// The `logprobs` output of each datum, as f64.
fn logprobs(model: &ToyModel, data: &[Datum]) -> Vec<Vec<f64>> {
    // All-zero weights: the forward pass the SDK's forward_backward_custom makes.
    let probe: Vec<Datum> = data
        .iter()
        .map(|d| {
            let targets = d.loss_fn_inputs["target_tokens"].clone();
            let zeros = TensorData::from_f32(vec![0.0f32; targets.values().len()]);
            let zeros = match targets.sparse() {
                Some(csr) => {
                    let shape = targets.shape();
                    TensorData::csr(
                        zeros.into_values(),
                        [shape[0], shape[1]],
                        csr.crow_indices.clone(),
                        csr.col_indices.clone(),
                    )
                    .unwrap()
                }
                None => zeros.with_shape(targets.shape()).unwrap(),
            };
            Datum::new(d.model_input.clone())
                .with_input("target_tokens", targets)
                .with_input("weights", zeros)
        })
        .collect();
    model
        .forward(&probe, "cross_entropy", &LossConfig::default())
        .unwrap()
        .loss_fn_outputs
        .iter()
        .map(|o| o["logprobs"].to_dense_f64(0.0))
        .collect()
}

fn assert_close(actual: f64, expected: f64, tol: f64, what: &str) {
    assert!(
        (actual - expected).abs() <= tol,
        "{what}: got {actual}, expected {expected} (tolerance {tol})"
    );
}

fn assert_all_close(actual: &[f64], expected: &[f64], tol: f64, what: &str) {
    assert_eq!(actual.len(), expected.len(), "{what}: lengths differ");
    for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
        assert_close(*a, *e, tol, &format!("{what}[{i}]"));
    }
}
