//! Supervised fine-tuning on plain threads with a client-side loss: a mean negative
//! log-likelihood plus three weighted regularizers (L1, L2, entropy) as one
//! `RegularizerPipeline`, trained through `forward_backward_custom`. Every step prints the total,
//! the base loss and each regularizer's value, contribution (`weight · value`) and gradient norm.
//!
//! ```sh
//! cargo run -p tinker-blocking --example blocking_regularized_sft
//! ```
//!
//! Offline by default (an embedded local server with a toy model); set `TINKER_API_KEY` (and
//! optionally `TINKER_BASE_URL`) to train on the real service.

use std::collections::BTreeMap;
use std::sync::Arc;

use tinker_blocking::core::losses::regularizers::{Entropy, L1, L2};
use tinker_blocking::core::losses::{CustomLossOutput, LogprobBatch, RegularizerPipeline};
use tinker_blocking::types::{AdamParams, FinishReason, LoraConfig};
use tinker_testkit::scenarios::{batch, settings_or_local_server, BASE_MODEL};

/// Mean NLL over the weighted target tokens, with its exact gradient `−wₜ / Σw`.
fn mean_nll(batch: &LogprobBatch<'_>) -> tinker_blocking::Result<CustomLossOutput> {
    let weights: Vec<Vec<f64>> = (0..batch.len())
        .map(|i| batch.weights(i))
        .collect::<tinker_blocking::Result<_>>()?;
    let total_weight: f64 = weights.iter().flatten().sum::<f64>().max(f64::MIN_POSITIVE);
    let nll: f64 = batch
        .logprobs()
        .iter()
        .zip(&weights)
        .flat_map(|(lp, w)| lp.iter().zip(w).map(|(l, w)| -l * w))
        .sum();
    let gradients = weights
        .iter()
        .map(|w| w.iter().map(|w| -w / total_weight).collect())
        .collect();
    Ok(CustomLossOutput {
        loss: nll / total_weight,
        gradients,
        metrics: BTreeMap::from([("nll".to_owned(), nll / total_weight)]),
    })
}

fn main() -> tinker_blocking::Result<()> {
    let (settings, _server) = settings_or_local_server()?;
    let service = tinker_blocking::connect(settings)?;
    let training = service.create_lora_training_client(BASE_MODEL, LoraConfig::new(16))?;
    println!("training run {}", training.model_id());

    let pipeline = RegularizerPipeline::new(mean_nll)
        .add(1e-3, L1::default())?
        .add(1e-3, L2::default())?
        .add(1e-2, Entropy::default())?;
    let names = ["l1_sparsity", "l2_weight_decay", "entropy"];
    let loss = Arc::new(pipeline);

    for step in 0..10 {
        let data = batch(step, 32);
        // Both submitted before either result is waited for; the optimizer step runs after the
        // custom loss's backward pass (its seq ids were reserved first).
        let fb = training.forward_backward_custom(data, loss.clone())?;
        let opt = training.optim_step(AdamParams::with_learning_rate(0.05))?;
        let out = fb.result()?;
        opt.result()?;
        let m = |k: &str| out.metrics.get(k).copied().unwrap_or(f64::NAN);
        println!(
            "step {step:2}  total {:.4}  nll {:.4}  regularizers {:.5}  |grad| {:.4}",
            m("loss_total"),
            m("base_loss"),
            m("regularizer_total"),
            m("total_grad_norm"),
        );
        for name in names {
            println!(
                "         {name:<16} value {:>10.4}  contribution {:>9.5}  |grad| {:.4}",
                m(&format!("{name}/value")),
                m(&format!("{name}/contribution")),
                m(&format!("{name}/grad_norm")),
            );
        }
    }
    service.close(FinishReason::Success)
}
