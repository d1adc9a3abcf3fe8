//! Checkpoint and resume on plain threads: train 6 steps, save the state with its optimizer,
//! "crash", resume with `create_training_client_from_state_with_optimizer` and continue; the
//! resumed losses match an uninterrupted run. A weights-only restore starts a new stage with a
//! fresh optimizer.
//!
//! ```sh
//! cargo run -p tinker-blocking --example blocking_resume
//! ```

use tinker_blocking::types::{AdamParams, FinishReason, LoraConfig, LossFn};
use tinker_blocking::TrainingClient;
use tinker_testkit::scenarios::{batch, mean_nll, settings_or_local_server, BASE_MODEL};

fn step(training: &TrainingClient, n: usize) -> tinker_blocking::Result<f64> {
    let data = batch(n, 16);
    let fb = training.forward_backward(data.clone(), LossFn::CrossEntropy)?;
    let opt = training.optim_step(AdamParams::with_learning_rate(0.05))?;
    let out = fb.result()?;
    opt.result()?;
    Ok(mean_nll(out.loss(), &data))
}

fn main() -> tinker_blocking::Result<()> {
    let (settings, _server) = settings_or_local_server()?;
    let service = tinker_blocking::connect(settings)?;
    let lora = LoraConfig::new(8).with_seed(42);

    let first = service.create_lora_training_client(BASE_MODEL, lora)?;
    for n in 0..6 {
        println!("run 1, step {n}: loss {:.4}", step(&first, n)?);
    }
    let checkpoint = first.save_state("step_6")?.result()?.path;
    println!("checkpoint {checkpoint}");
    for n in 6..8 {
        println!(
            "run 1, step {n}: loss {:.4} (lost in the crash)",
            step(&first, n)?
        );
    }

    let resumed = service.create_training_client_from_state_with_optimizer(&checkpoint)?;
    for n in 6..8 {
        println!("resumed, step {n}: loss {:.4}", step(&resumed, n)?);
    }

    let new_stage = service.create_training_client_from_state(&checkpoint)?;
    for n in 6..8 {
        println!(
            "new stage (fresh optimizer), step {n}: loss {:.4}",
            step(&new_stage, n)?
        );
    }
    service.close(FinishReason::Success)
}
