//! Checkpoint and resume: train 6 steps, save the state with its optimizer, "crash", resume from
//! the checkpoint with `create_training_client_from_state_with_optimizer` and continue; the
//! resumed losses match an uninterrupted run. A weights-only restore starts a new stage with a
//! fresh optimizer.
//!
//! ```sh
//! cargo run -p tinker-async-std --example async_std_resume
//! ```

use tinker_async_std::types::{AdamParams, FinishReason, LoraConfig, LossFn};
use tinker_async_std::TrainingClient;
use tinker_testkit::scenarios::{batch, mean_nll, settings_or_local_server, BASE_MODEL};

async fn step(training: &TrainingClient, n: usize) -> tinker_async_std::Result<f64> {
    let data = batch(n, 16);
    let fb = training
        .forward_backward(data.clone(), LossFn::CrossEntropy)
        .await?;
    let opt = training
        .optim_step(AdamParams::with_learning_rate(0.05))
        .await?;
    let out = fb.await?;
    opt.await?;
    Ok(mean_nll(out.loss(), &data))
}

fn main() -> tinker_async_std::Result<()> {
    async_std::task::block_on(run())
}

async fn run() -> tinker_async_std::Result<()> {
    let (settings, _server) = settings_or_local_server()?;
    let service = tinker_async_std::connect(settings)?;
    let lora = LoraConfig::new(8).with_seed(42);

    let first = service
        .create_lora_training_client(BASE_MODEL, lora)
        .await?;
    for n in 0..6 {
        println!("run 1, step {n}: loss {:.4}", step(&first, n).await?);
    }
    let checkpoint = first.save_state("step_6").await?.await?.path;
    println!("checkpoint {checkpoint}");
    for n in 6..8 {
        println!(
            "run 1, step {n}: loss {:.4} (lost in the crash)",
            step(&first, n).await?
        );
    }

    let resumed = service
        .create_training_client_from_state_with_optimizer(&checkpoint)
        .await?;
    for n in 6..8 {
        println!("resumed, step {n}: loss {:.4}", step(&resumed, n).await?);
    }

    let new_stage = service
        .create_training_client_from_state(&checkpoint)
        .await?;
    for n in 6..8 {
        println!(
            "new stage (fresh optimizer), step {n}: loss {:.4}",
            step(&new_stage, n).await?
        );
    }
    service.close(FinishReason::Success).await
}
