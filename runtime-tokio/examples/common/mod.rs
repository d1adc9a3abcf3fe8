//! Shared by the examples: where to connect, and a small synthetic dataset.

use tinker_testkit::{BackgroundServer, LocalServer, LocalServerConfig};
use tinker_tokio::types::{Datum, ModelInput, TensorData, TokenId};
use tinker_tokio::Settings;

/// The base model the examples train (any trainable model of the server works).
pub const BASE_MODEL: &str = "Qwen/Qwen3-8B";

/// Settings for the real service when `TINKER_API_KEY` or `TINKER_BASE_URL` is set; otherwise an
/// embedded local Tinker server (a toy model on loopback) so the example runs offline. Keep the
/// returned server alive for as long as the client is used.
pub fn settings() -> tinker_tokio::Result<(Settings, Option<BackgroundServer>)> {
    let configured = ["TINKER_API_KEY", "TINKER_BASE_URL"]
        .iter()
        .any(|k| std::env::var(k).is_ok_and(|v| !v.trim().is_empty()));
    if configured {
        return Ok((Settings::from_env()?, None));
    }
    let server = LocalServer::start_background(LocalServerConfig::default()).map_err(|e| {
        tinker_tokio::Error::Config(format!("could not start the local server: {e}"))
    })?;
    println!(
        "no TINKER_API_KEY/TINKER_BASE_URL: using the embedded local server at {}",
        server.url()
    );
    let settings = Settings::default()
        .with_base_url(server.url())
        .with_api_key(server.api_key())?
        .with_telemetry(false);
    Ok((settings, Some(server)))
}

/// One supervised example: a run of consecutive token ids starting at `start`, trained to
/// predict each next id (a pattern the toy bigram model can learn).
pub fn counting_datum(start: TokenId, len: usize) -> Datum {
    let tokens: Vec<TokenId> = (0..=len as TokenId).map(|i| (start + i) % 256).collect();
    let input = tokens[..len].to_vec();
    let targets: Vec<i64> = tokens[1..].iter().map(|&t| i64::from(t)).collect();
    Datum::new(ModelInput::from_tokens(input))
        .with_input("target_tokens", TensorData::from_i64(targets))
        .with_input("weights", TensorData::from_f32(vec![1.0; len]))
}

/// Batch `step` of the synthetic dataset: `size` examples with different starting ids.
pub fn batch(step: usize, size: usize) -> Vec<Datum> {
    (0..size)
        .map(|i| counting_datum(((step * size + i) * 7 % 256) as TokenId, 16))
        .collect()
}

/// The mean loss per weighted token of a batch.
pub fn mean_nll(loss_sum: Option<f64>, batch: &[Datum]) -> f64 {
    let tokens: usize = batch
        .iter()
        .map(|d| d.model_input.length().unwrap_or(0))
        .sum();
    loss_sum.unwrap_or(f64::NAN) / tokens.max(1) as f64
}
