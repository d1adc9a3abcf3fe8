//! The synthetic supervised dataset the scenarios train on.

use tinker_core::types::{Datum, ModelInput, TensorData, TokenId};

/// A trainable model of the local server.
pub const BASE_MODEL: &str = "Qwen/Qwen3-8B";

/// One example: `len` consecutive token ids from `start`, trained to predict each next id (a
/// pattern the toy bigram model learns quickly).
pub fn counting_datum(start: TokenId, len: usize) -> Datum {
    let tokens: Vec<TokenId> = (0..=len as TokenId).map(|i| (start + i) % 256).collect();
    let targets: Vec<i64> = tokens[1..].iter().map(|&t| i64::from(t)).collect();
    Datum::new(ModelInput::from_tokens(tokens[..len].to_vec()))
        .with_input("target_tokens", TensorData::from_i64(targets))
        .with_input("weights", TensorData::from_f32(vec![1.0; len]))
}

/// Batch `step`: `size` examples with different starting ids (deterministic).
pub fn batch(step: usize, size: usize) -> Vec<Datum> {
    (0..size)
        .map(|i| counting_datum(((step * size + i) * 7 % 256) as TokenId, 16))
        .collect()
}

/// Mean loss per weighted token of a batch (`loss:sum` over the tokens).
pub fn mean_nll(loss_sum: Option<f64>, batch: &[Datum]) -> f64 {
    let tokens: usize = batch
        .iter()
        .map(|d| d.model_input.length().unwrap_or(0))
        .sum();
    loss_sum.expect("forward_backward reports loss:sum") / tokens.max(1) as f64
}
