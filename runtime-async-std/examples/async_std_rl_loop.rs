//! Reinforcement learning (GRPO-style): each step takes a fresh sampler from the current weights,
//! samples groups of completions concurrently, scores them (reward: how many sampled tokens
//! continue the prompt's counting pattern), and trains with `importance_sampling`.
//!
//! ```sh
//! cargo run -p tinker-async-std --example async_std_rl_loop
//! ```

use futures_util::future::join_all;
use tinker_async_std::types::{
    AdamParams, Datum, FinishReason, LoraConfig, LossFn, ModelInput, SamplerSaveKind,
    SamplingParams, TensorData,
};
use tinker_testkit::scenarios::{settings_or_local_server, BASE_MODEL};

const PROMPTS: usize = 16;
const GROUP: u32 = 8;

fn reward(prompt: &[i32], tokens: &[i32]) -> f32 {
    let mut expected = prompt[prompt.len() - 1];
    let mut hits = 0;
    for &t in tokens {
        expected = (expected + 1) % 256;
        if t == expected {
            hits += 1;
        }
    }
    hits as f32 / tokens.len().max(1) as f32
}

fn datum(prompt: &[i32], tokens: &[i32], logprobs: &[f32], advantage: f32) -> Datum {
    let all: Vec<i32> = prompt.iter().chain(tokens).copied().collect();
    let n = all.len() - 1;
    let pad = n - tokens.len();
    let mut lp = vec![0.0; pad];
    lp.extend_from_slice(logprobs);
    let mut adv = vec![0.0; pad];
    adv.extend(std::iter::repeat_n(advantage, tokens.len()));
    Datum::new(ModelInput::from_tokens(all[..n].to_vec()))
        .with_input(
            "target_tokens",
            TensorData::from_i64(all[1..].iter().map(|&t| i64::from(t)).collect::<Vec<_>>()),
        )
        .with_input("logprobs", TensorData::from_f32(lp))
        .with_input("advantages", TensorData::from_f32(adv))
}

fn main() -> tinker_async_std::Result<()> {
    async_std::task::block_on(run())
}

async fn run() -> tinker_async_std::Result<()> {
    let (settings, _server) = settings_or_local_server()?;
    let service = tinker_async_std::connect(settings)?;
    let training = service
        .create_lora_training_client(BASE_MODEL, LoraConfig::new(16))
        .await?;
    let params = SamplingParams {
        max_tokens: Some(8),
        temperature: 1.0,
        ..SamplingParams::default()
    };
    for step in 0..5 {
        let sampler = training
            .save_weights_and_get_sampling_client(SamplerSaveKind::Snapshot)
            .await?;
        let prompts: Vec<Vec<i32>> = (0..PROMPTS)
            .map(|i| {
                let s = ((step * PROMPTS + i) * 13 % 200) as i32;
                vec![s, s + 1, s + 2]
            })
            .collect();
        // All groups in flight at once; the client queues above the server's limits.
        let groups =
            join_all(prompts.iter().map(|p| {
                sampler.sample(ModelInput::from_tokens(p.clone()), GROUP, params.clone())
            }))
            .await;
        let mut data = Vec::new();
        let mut mean_reward = 0.0;
        for (prompt, group) in prompts.iter().zip(groups) {
            let group = group?;
            let rewards: Vec<f32> = group
                .sequences
                .iter()
                .map(|s| reward(prompt, &s.tokens))
                .collect();
            let baseline = rewards.iter().sum::<f32>() / rewards.len() as f32;
            mean_reward += baseline / PROMPTS as f32;
            for (seq, r) in group.sequences.iter().zip(&rewards) {
                let logprobs = seq.logprobs.clone().unwrap_or_default();
                data.push(datum(prompt, &seq.tokens, &logprobs, r - baseline));
            }
        }
        let fb = training
            .forward_backward(data, LossFn::ImportanceSampling)
            .await?;
        let opt = training
            .optim_step(AdamParams::with_learning_rate(0.02))
            .await?;
        fb.await?;
        opt.await?;
        println!("step {step}  mean reward {mean_reward:.3}");
    }
    service.close(FinishReason::Success).await
}
