//! Supervised fine-tuning: 20 steps on a small synthetic dataset, a checkpoint, then sampling
//! from it.
//!
//! ```sh
//! cargo run -p tinker-tokio --example sft_loop
//! ```
//!
//! Offline by default (an embedded local server with a toy model); set `TINKER_API_KEY` (and
//! optionally `TINKER_BASE_URL`) to train on the real service.

mod common;

use tinker_tokio::types::{
    AdamParams, FinishReason, LoraConfig, LossFn, ModelInput, SamplingParams,
};

#[tokio::main]
async fn main() -> tinker_tokio::Result<()> {
    let (settings, _server) = common::settings()?;
    let service = tinker_tokio::connect(settings)?;
    let training = service
        .create_lora_training_client(common::BASE_MODEL, LoraConfig::new(16))
        .await?;
    println!("training run {}", training.model_id());

    for step in 0..20 {
        let batch = common::batch(step, 32);
        // Submit forward_backward and optim_step back to back, then wait for both.
        let fb = training
            .forward_backward(batch.clone(), LossFn::CrossEntropy)
            .await?;
        let opt = training
            .optim_step(AdamParams::with_learning_rate(0.05))
            .await?;
        let out = fb.await?;
        opt.await?;
        println!(
            "step {step:2}  loss {:.4}",
            common::mean_nll(out.loss(), &batch)
        );
    }

    let state = training.save_state("final").await?.await?;
    let sampler_weights = training.save_weights_for_sampler("final").await?.await?;
    println!("saved state {}", state.path);
    let path = sampler_weights.path.unwrap_or_default();
    println!("saved sampler weights {path}");

    let sampler = service.create_sampling_client(&path).await?;
    let params = SamplingParams {
        max_tokens: Some(8),
        temperature: 0.0,
        ..SamplingParams::default()
    };
    let out = sampler
        .sample(ModelInput::from_tokens(vec![10, 11, 12]), 3, params)
        .await?;
    for (i, seq) in out.sequences.iter().enumerate() {
        println!("sample {i}: {:?} (stop: {:?})", seq.tokens, seq.stop_reason);
    }
    service.close(FinishReason::Success).await
}
