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

/// Settings for the examples: the real service when `TINKER_API_KEY` or `TINKER_BASE_URL` is
/// set, otherwise an embedded local server (toy model on loopback) so they run offline. Keep the
/// returned server alive while the client is used.
pub fn settings_or_local_server() -> tinker_core::Result<(
    tinker_core::settings::Settings,
    Option<crate::server::BackgroundServer>,
)> {
    use tinker_core::settings::Settings;
    let configured = ["TINKER_API_KEY", "TINKER_BASE_URL"]
        .iter()
        .any(|k| std::env::var(k).is_ok_and(|v| !v.trim().is_empty()));
    if configured {
        return Ok((Settings::from_env()?, None));
    }
    let server = crate::server::LocalServer::start_background(Default::default()).map_err(|e| {
        tinker_core::Error::Config(format!("could not start the embedded local server: {e}"))
    })?;
    println!(
        "TINKER_API_KEY and TINKER_BASE_URL are unset: using an embedded local server at {}",
        server.url()
    );
    let settings = Settings::default()
        .with_base_url(server.url())
        .with_api_key(server.api_key())?
        .with_telemetry(false);
    Ok((settings, Some(server)))
}
