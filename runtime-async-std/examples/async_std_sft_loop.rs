//! Supervised fine-tuning: 20 steps on a small synthetic dataset (forward_backward and
//! optim_step submitted back to back every step), a checkpoint, then sampling from it.
//!
//! ```sh
//! cargo run -p tinker-async-std --example async_std_sft_loop
//! ```
//!
//! Offline by default (an embedded local server with a toy model); set `TINKER_API_KEY` (and
//! optionally `TINKER_BASE_URL`) to train on the real service.

use tinker_async_std::types::{
    AdamParams, FinishReason, LoraConfig, LossFn, ModelInput, SamplingParams,
};
use tinker_testkit::scenarios::{batch, mean_nll, settings_or_local_server, BASE_MODEL};

fn main() -> tinker_async_std::Result<()> {
    async_std::task::block_on(run())
}

async fn run() -> tinker_async_std::Result<()> {
    let (settings, _server) = settings_or_local_server()?;
    let service = tinker_async_std::connect(settings)?;
    let training = service
        .create_lora_training_client(BASE_MODEL, LoraConfig::new(16))
        .await?;
    println!("training run {}", training.model_id());

    for step in 0..20 {
        let data = batch(step, 32);
        // Submit both requests, then wait for both results.
        let fb = training
            .forward_backward(data.clone(), LossFn::CrossEntropy)
            .await?;
        let opt = training
            .optim_step(AdamParams::with_learning_rate(0.05))
            .await?;
        let out = fb.await?;
        opt.await?;
        println!("step {step:2}  loss {:.4}", mean_nll(out.loss(), &data));
    }

    let state = training.save_state("final").await?.await?;
    let weights = training.save_weights_for_sampler("final").await?.await?;
    let path = weights.path.unwrap_or_default();
    println!("saved state {}\nsaved sampler weights {path}", state.path);

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
