//! Training stories: SFT with checkpoints (A1), resume (A2), idempotent saves (A10), RL fan-out
//! (A3), and cancellation.

use std::time::Duration;

use std::sync::atomic::{AtomicUsize, Ordering};

use futures_util::future::{join_all, Either};
use tinker_core::client::TrainingClient;
use tinker_core::flow::SamplingDispatchConfig;
use tinker_core::types::{
    AdamParams, Datum, FinishReason, LoraConfig, LossFn, ModelInput, SamplerSaveKind,
    SamplingParams, TensorData,
};
use tinker_core::ErrorKind;

use super::data::{batch, mean_nll, BASE_MODEL};
use super::{Env, Runtime};
use crate::model::SplitMix64;
use crate::server::{Fault, FaultRule, LocalServerConfig};

const LR: f64 = 0.05;

/// One pipelined SFT step: forward_backward and optim_step submitted back to back, then both
/// results awaited. Returns the batch's mean NLL.
async fn sft_step(training: &TrainingClient, step: usize) -> f64 {
    let data = batch(step, 16);
    let fb = training
        .forward_backward(data.clone(), LossFn::CrossEntropy)
        .await
        .expect("forward_backward is submitted");
    let opt = training
        .optim_step(AdamParams::with_learning_rate(LR))
        .await
        .expect("optim_step is submitted");
    let out = fb.result().await.expect("forward_backward result");
    opt.result().await.expect("optim_step result");
    mean_nll(out.loss(), &data)
}

/// A1: 20 SFT steps with a state checkpoint at step 10 and a `final` state + sampler checkpoint;
/// the loss falls, forward_backward and optim_step reach the server back to back every step, both
/// paths load, and sampling 3 completions from `final` works.
pub async fn a1_sft_checkpoint_sample<R: Runtime>() {
    let env = Env::<R>::new(LocalServerConfig::default());
    let service = env.connect();
    let training = service
        .create_lora_training_client(BASE_MODEL, LoraConfig::new(8).with_seed(1))
        .await
        .expect("training client");
    let mut losses = Vec::new();
    let mut step10 = None;
    for step in 0..20 {
        losses.push(sft_step(&training, step).await);
        if step == 9 {
            step10 = Some(
                training
                    .save_state("step_000010")
                    .await
                    .unwrap()
                    .await
                    .unwrap(),
            );
        }
    }
    let first: f64 = losses[..3].iter().sum::<f64>() / 3.0;
    let last: f64 = losses[17..].iter().sum::<f64>() / 3.0;
    assert!(
        last < first * 0.8,
        "{}: loss should fall: {losses:?}",
        R::NAME
    );

    let state = training.save_state("final").await.unwrap().await.unwrap();
    let sampler = training
        .save_weights_for_sampler("final")
        .await
        .unwrap()
        .await
        .unwrap();
    let step10 = step10.unwrap();
    assert!(
        step10.path.ends_with("/weights/step_000010"),
        "{}",
        step10.path
    );
    assert!(state.path.ends_with("/weights/final"), "{}", state.path);
    let sampler_path = sampler.path.expect("a named save returns its path");
    assert!(
        sampler_path.starts_with("tinker://") && sampler_path.ends_with("/sampler_weights/final"),
        "{sampler_path}"
    );

    // Every step's forward_backward was followed directly by its optim_step on the wire.
    let wire: Vec<String> = env
        .server()
        .recording()
        .iter()
        .map(|e| e.endpoint().to_owned())
        .filter(|e| e == "forward_backward" || e == "optim_step")
        .collect();
    assert_eq!(wire.len(), 40, "{wire:?}");
    for pair in wire.chunks(2) {
        assert_eq!(pair, ["forward_backward", "optim_step"]);
    }

    // Both checkpoints load.
    let restored = service
        .create_training_client_from_state(&state.path)
        .await
        .expect("the state checkpoint loads");
    assert_ne!(restored.model_id(), training.model_id());
    let sampling = service
        .create_sampling_client(&sampler_path)
        .await
        .expect("the sampler checkpoint loads");
    assert_eq!(sampling.get_base_model(), BASE_MODEL);
    let params = SamplingParams {
        max_tokens: Some(6),
        ..SamplingParams::default()
    };
    let out = sampling
        .sample(ModelInput::from_tokens(vec![10, 11, 12]), 3, params)
        .await
        .expect("sample");
    assert_eq!(out.sequences.len(), 3);
    for seq in &out.sequences {
        assert!(!seq.tokens.is_empty() && seq.tokens.len() <= 6, "{seq:?}");
    }
    service.close(FinishReason::Success).await.expect("close");
}

/// A2: a run checkpointed with its optimizer after 10 steps and resumed gives the same step-10
/// and step-11 losses as the run that was never interrupted; a weights-only restore (a fresh
/// optimizer) gives a different step-11 loss, and starting a new stage that way works.
pub async fn a2_resume_with_optimizer<R: Runtime>() {
    let env = Env::<R>::new(LocalServerConfig::default());
    let service = env.connect();
    let lora = LoraConfig::new(8).with_seed(3);
    let uninterrupted = service
        .create_lora_training_client(BASE_MODEL, lora)
        .await
        .unwrap();
    let mut reference = Vec::new();
    let mut checkpoint = None;
    for step in 0..12 {
        if step == 10 {
            checkpoint = Some(
                uninterrupted
                    .save_state("step_10")
                    .await
                    .unwrap()
                    .await
                    .unwrap(),
            );
        }
        reference.push(sft_step(&uninterrupted, step).await);
    }
    let path = checkpoint.unwrap().path;

    let resumed = service
        .create_training_client_from_state_with_optimizer(&path)
        .await
        .expect("resume with optimizer");
    let r10 = sft_step(&resumed, 10).await;
    let r11 = sft_step(&resumed, 11).await;
    assert!(
        (r10 - reference[10]).abs() < 1e-6,
        "{r10} vs {}",
        reference[10]
    );
    assert!(
        (r11 - reference[11]).abs() < 1e-6,
        "{r11} vs {}",
        reference[11]
    );

    let new_stage = service
        .create_training_client_from_state(&path)
        .await
        .expect("a new stage from a state checkpoint needs no optimizer state");
    let w10 = sft_step(&new_stage, 10).await;
    let w11 = sft_step(&new_stage, 11).await;
    assert!(
        (w10 - reference[10]).abs() < 1e-6,
        "same weights, same first loss"
    );
    assert!(
        (w11 - reference[11]).abs() > 1e-4,
        "a fresh optimizer must change step 11: {w11} vs {}",
        reference[11]
    );
    service.close(FinishReason::Success).await.unwrap();
}

/// A10: the connection drops after `save_state("step_000020")` succeeded on the server. The
/// retry is answered 409 (the name now exists); the client lists the run's checkpoints, finds
/// it, and the call succeeds with its path. Saving again under the taken name is a 409 on the
/// first attempt: a `Conflict` at once, no retry loop, and the run goes on without waiting for
/// the rejected request's seq id.
pub async fn a10_save_is_idempotent<R: Runtime>() {
    let env = Env::<R>::new(LocalServerConfig::default());
    let service = env.connect();
    let training = service
        .create_lora_training_client(BASE_MODEL, LoraConfig::new(4))
        .await
        .unwrap();
    sft_step(&training, 0).await;
    env.server().clear_recording();
    env.server().add_faults(vec![FaultRule::once(
        "save_weights",
        Fault::Reset {
            after_handler: true,
        },
    )]);
    let saved = training
        .save_state("step_000020")
        .await
        .expect("the save is submitted")
        .await
        .expect("a save that already happened is success");
    assert!(
        saved.path.ends_with("/weights/step_000020"),
        "{}",
        saved.path
    );
    let wire: Vec<(String, u16)> = env
        .server()
        .recording()
        .iter()
        .filter(|e| e.endpoint() == "save_weights" || e.endpoint().starts_with("training_runs/"))
        .map(|e| (e.endpoint().to_owned(), e.resp_status))
        .collect();
    let listing = format!("training_runs/{}/checkpoints", training.model_id());
    assert_eq!(
        wire,
        [
            // The first attempt ran on the server; its connection was dropped (status 0).
            ("save_weights".to_owned(), 0),
            // The retry met the checkpoint it had written.
            ("save_weights".to_owned(), 409),
            // And the client confirmed it exists.
            (listing, 200),
        ],
        "{wire:?}"
    );

    // Another save under the taken name: one request, answered 409, a typed Conflict.
    env.server().clear_recording();
    let again = async { training.save_state("step_000020").await?.result().await }.await;
    let err = again.expect_err("saving another request under a taken name fails");
    assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
    assert_eq!(err.status(), Some(409), "{err}");
    let saves: Vec<u16> = env
        .server()
        .recording()
        .iter()
        .filter(|e| e.endpoint() == "save_weights")
        .map(|e| e.resp_status)
        .collect();
    assert_eq!(saves, [409], "one attempt, not retried");
    // The run goes on: the rejected save's seq id was consumed, so this step does not wait for
    // it (the server's seq-gap timeout is its default 30 s; the deadline is below it).
    let next = async {
        let training = training.with_deadline(Duration::from_secs(20));
        let fb = training
            .forward_backward(batch(1, 4), LossFn::CrossEntropy)
            .await?;
        fb.result().await
    }
    .await
    .expect("the next step runs without waiting on a seq gap");
    assert!(next.loss().is_some());
    assert_eq!(
        env.server().executed(training.model_id(), "save_weights"),
        1
    );
    service.close(FinishReason::Success).await.unwrap();
}

/// A3: an RL step at scale: a fresh sampler from `save_weights_and_get_sampling_client`, many
/// concurrent single samples (`R::RL_SAMPLES`) plus groups of 16, all with tokens and logprobs
/// and no errors, never more `asample` requests in flight at the server than the client's
/// sampling dispatch limit (protocol.md 8.5), then one importance-sampling forward_backward over
/// every sample (chunked by the client within the server's limits) and an optimizer step.
pub async fn a3_rl_fan_out<R: Runtime>() {
    let mut config = LocalServerConfig::default();
    // Small chunk limits so the batch is split into several requests.
    config.client_config.fwdbwd_max_chunk_len = 100;
    let env = Env::<R>::new(config);
    let service = env.connect();
    let training = service
        .create_lora_training_client(BASE_MODEL, LoraConfig::new(8))
        .await
        .unwrap();
    let sampler = training
        .save_weights_and_get_sampling_client(SamplerSaveKind::Snapshot)
        .await
        .expect("ephemeral sampler");
    let params = SamplingParams {
        max_tokens: Some(8),
        ..SamplingParams::default()
    };
    let prompts: Vec<Vec<i32>> = (0..R::RL_SAMPLES)
        .map(|i| vec![(i % 200) as i32, (i % 200) as i32 + 1])
        .collect();
    let singles = join_all(
        prompts
            .iter()
            .map(|p| sampler.sample(ModelInput::from_tokens(p.clone()), 1, params.clone())),
    )
    .await;
    let groups = join_all((0..R::RL_SAMPLES / 16).map(|i| {
        sampler.sample(
            ModelInput::from_tokens(vec![i as i32, 1]),
            16,
            params.clone(),
        )
    }))
    .await;
    let mut data = Vec::new();
    for (prompt, result) in prompts.iter().zip(singles) {
        let out = result.expect("every single sample succeeds");
        assert_eq!(out.sequences.len(), 1);
        let seq = &out.sequences[0];
        assert!(!seq.tokens.is_empty(), "{seq:?}");
        let logprobs = seq.logprobs.clone().expect("sampled logprobs");
        assert_eq!(logprobs.len(), seq.tokens.len());
        data.push(rl_datum(prompt, &seq.tokens, &logprobs, 1.0));
    }
    for result in groups {
        let out = result.expect("every group sample succeeds");
        assert_eq!(out.sequences.len(), 16);
        for seq in &out.sequences {
            assert!(!seq.tokens.is_empty(), "{seq:?}");
            let logprobs = seq.logprobs.as_ref().expect("sampled logprobs");
            assert_eq!(logprobs.len(), seq.tokens.len());
        }
    }
    // Measured by the server: the sample submissions it handled at once.
    let limit = SamplingDispatchConfig::default().count_limit;
    let peak = env.server().peak_in_flight("asample");
    assert!(
        (1..=limit).contains(&peak),
        "{}: {peak} asample requests in flight at once (limit {limit})",
        R::NAME
    );
    let fb = training
        .forward_backward(data, LossFn::ImportanceSampling)
        .await
        .expect("submitted");
    let chunks = fb.request_ids().len();
    let opt = training
        .optim_step(AdamParams::with_learning_rate(1e-3))
        .await
        .unwrap();
    let out = fb.result().await.expect("importance sampling result");
    opt.result().await.unwrap();
    assert_eq!(out.loss_fn_outputs.len(), R::RL_SAMPLES);
    assert!(
        chunks > 1,
        "{} datums in {chunks} request(s)",
        R::RL_SAMPLES
    );
    // Zero request errors: every reply was a success or a long poll's "not yet" (408).
    let errors: Vec<(String, u16)> = env
        .server()
        .recording()
        .iter()
        .filter(|e| !(200..300).contains(&e.resp_status) && e.resp_status != 408)
        .map(|e| (e.endpoint().to_owned(), e.resp_status))
        .collect();
    assert!(errors.is_empty(), "no request failed: {errors:?}");
    service.close(FinishReason::Success).await.unwrap();
}

fn rl_datum(prompt: &[i32], completion: &[i32], logprobs: &[f32], advantage: f32) -> Datum {
    let mut tokens = prompt.to_vec();
    tokens.extend_from_slice(completion);
    let input: Vec<i32> = tokens[..tokens.len() - 1].to_vec();
    let targets: Vec<i64> = tokens[1..].iter().map(|&t| i64::from(t)).collect();
    let n = targets.len();
    let mut lp = vec![0.0f32; n - completion.len()];
    lp.extend_from_slice(logprobs);
    let mut adv = vec![0.0f32; n - completion.len()];
    adv.extend(std::iter::repeat_n(advantage, completion.len()));
    Datum::new(ModelInput::from_tokens(input))
        .with_input("target_tokens", TensorData::from_i64(targets))
        .with_input("logprobs", TensorData::from_f32(lp))
        .with_input("advantages", TensorData::from_f32(adv))
}

/// Cancellation: 1,000 calls on one training run (forward_backward submissions, optimizer
/// steps, waits for results), each raced against a timer drawn from a seeded PRNG and dropped
/// when the timer wins — before submission, while submitting, while waiting — and afterwards a
/// forward_backward on the same client still completes.
///
/// The server keeps its default 30 s seq-gap timeout: a call dropped before it was sent takes
/// no seq id, and one dropped after its turn started sending is finished in the background, so
/// the run receives exactly the ids 1..=N and never waits for a missing one.
pub async fn cancellation_leaves_the_client_usable<R: Runtime>() {
    let env = Env::<R>::new(LocalServerConfig::default());
    let service = env.connect();
    let training = service
        .create_lora_training_client(BASE_MODEL, LoraConfig::new(4))
        .await
        .unwrap();
    let mut rng = SplitMix64::new(2024);
    let (made, dropped) = (AtomicUsize::new(0), AtomicUsize::new(0));
    for wave in 0..20 {
        let calls = (0..50).map(|i| {
            let delay = Duration::from_micros(rng.next_u64() % 20_000);
            let kind = (rng.next_u64() % 3) as usize;
            let training = training.clone();
            let (made, dropped) = (&made, &dropped);
            async move {
                made.fetch_add(1, Ordering::SeqCst);
                let call: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> =
                    match kind {
                        0 => Box::pin(async move {
                            let _ = training
                                .forward_backward(batch(wave * 50 + i, 2), LossFn::CrossEntropy)
                                .await;
                        }),
                        1 => Box::pin(async move {
                            let _ = training
                                .optim_step(AdamParams::with_learning_rate(LR))
                                .await;
                        }),
                        _ => Box::pin(async move {
                            if let Ok(p) = training
                                .forward_backward(batch(i, 2), LossFn::CrossEntropy)
                                .await
                            {
                                let _ = p.result().await;
                            }
                        }),
                    };
                // Whichever finishes first; the loser is dropped (cancelled).
                let sleep = R::sleep(delay);
                if let Either::Right(_) = futures_util::future::select(call, sleep).await {
                    dropped.fetch_add(1, Ordering::SeqCst);
                }
            }
        });
        join_all(calls).await;
    }
    let (made, dropped) = (made.into_inner(), dropped.into_inner());
    assert_eq!(made, 1_000);
    assert!(
        dropped > 0,
        "the timers cut calls off ({dropped} of {made})"
    );
    let fb = training
        .with_deadline(Duration::from_secs(120))
        .forward_backward(batch(0, 4), LossFn::CrossEntropy)
        .await
        .expect("a forward_backward after 1,000 cancellations is submitted");
    let out = fb.result().await.expect("and completes");
    assert!(out.loss().is_some());
    // The seq ids the run received, from the server's recording: every training request that
    // reached it (a retry or a background resend repeats an id; the server deduplicates).
    let mut received: Vec<u64> = env
        .server()
        .recording()
        .iter()
        .filter(|e| matches!(e.endpoint(), "forward_backward" | "optim_step"))
        .filter_map(|e| {
            e.body_proto
                .as_ref()
                .or(e.body.as_ref())
                .and_then(|b| b.get("seq_id"))
                .and_then(serde_json::Value::as_u64)
        })
        .collect();
    received.sort_unstable();
    received.dedup();
    let n = received.len() as u64;
    assert!(n > 0);
    assert_eq!(
        received,
        (1..=n).collect::<Vec<u64>>(),
        "the run received seq ids 1..={n} without a hole"
    );
    service.close(FinishReason::Success).await.unwrap();
}
