//! Custom-loss stories: DPO with a reference sampler through `forward_backward_custom`.

use std::sync::Arc;

use futures_util::future::join_all;
use serde_json::Value;
use tinker_core::losses::{Dpo, ReferenceLogprobs};
use tinker_core::types::{
    AdamParams, Datum, FinishReason, LoraConfig, ModelInput, SamplerSaveKind, TensorData, TokenId,
};

use super::data::BASE_MODEL;
use super::{Env, Runtime};
use crate::server::LocalServerConfig;

/// Preference pairs in the scenario (512 datums: one chunk per pass).
const PAIRS: usize = 256;
/// Tokens of the shared prompt (masked out with weight 0).
const PROMPT: usize = 4;
/// Tokens of each completion (weight 1).
const COMPLETION: usize = 4;

/// The full token sequence of pair `k`'s chosen (`chosen = true`) or rejected completion: both
/// share a counting prompt; the chosen one keeps counting, the rejected one jumps around.
fn sequence(k: usize, chosen: bool) -> Vec<TokenId> {
    let start = (k * 7 % 200 + 1) as TokenId;
    let prompt = (0..PROMPT as TokenId).map(|i| start + i);
    let completion = (0..COMPLETION as TokenId).map(|i| {
        if chosen {
            start + PROMPT as TokenId + i
        } else {
            (start * 13 + 29 * (i + 1)) % 256
        }
    });
    prompt.chain(completion).collect()
}

/// A datum predicting every next token of `tokens`, counting only the completion.
fn pair_datum(tokens: &[TokenId]) -> Datum {
    let n = tokens.len() - 1;
    let targets: Vec<i64> = tokens[1..].iter().map(|&t| i64::from(t)).collect();
    let weights: Vec<f32> = (0..n)
        .map(|j| if j + 1 >= PROMPT { 1.0 } else { 0.0 })
        .collect();
    Datum::new(ModelInput::from_tokens(tokens[..n].to_vec()))
        .with_input("target_tokens", TensorData::from_i64(targets))
        .with_input("weights", TensorData::from_f32(weights))
}

/// The seq id of a recorded training request (protobuf or JSON body).
fn seq_id(body_proto: Option<&Value>, body: Option<&Value>) -> u64 {
    body_proto
        .or(body)
        .and_then(|b| b.get("seq_id"))
        .and_then(Value::as_u64)
        .expect("a training request carries its seq_id")
}

/// DPO: 256 (chosen, rejected) pairs, reference logprobs from a sampler on the initial weights
/// (`compute_logprobs`), 3 steps of `forward_backward_custom` + `optim_step`. The loss starts at
/// ln 2 (policy = reference) and falls; on the wire each step is exactly one forward, one
/// forward_backward (the backward pass) and one optim_step, in seq-id order.
pub async fn custom_dpo_with_reference_sampler<R: Runtime>() {
    let env = Env::<R>::new(LocalServerConfig::default());
    let service = env.connect();
    let training = service
        .create_lora_training_client(BASE_MODEL, LoraConfig::new(8).with_seed(5))
        .await
        .expect("training client");
    let reference = training
        .save_weights_and_get_sampling_client(SamplerSaveKind::Snapshot)
        .await
        .expect("a reference sampler on the initial weights");

    let sequences: Vec<Vec<TokenId>> = (0..PAIRS)
        .flat_map(|k| [sequence(k, true), sequence(k, false)])
        .collect();
    let data: Vec<Datum> = sequences.iter().map(|s| pair_datum(s)).collect();
    // compute_logprobs gives one entry per prompt token (the first has no context); dropping it
    // aligns the rest with the datum's targets.
    let reference_rows: Vec<Vec<f64>> = join_all(
        sequences
            .iter()
            .map(|s| reference.compute_logprobs(ModelInput::from_tokens(s.clone()))),
    )
    .await
    .into_iter()
    .map(|lp| {
        let lp = lp.expect("compute_logprobs");
        lp[1..]
            .iter()
            .map(|v| f64::from(v.expect("every token after the first has a logprob")))
            .collect()
    })
    .collect();
    assert_eq!(reference_rows.len(), 2 * PAIRS);

    let dpo = Arc::new(Dpo::new(
        0.5,
        ReferenceLogprobs::PerToken(reference_rows.clone()),
    ));
    let mut losses = Vec::new();
    for _ in 0..3 {
        let fb = training
            .forward_backward_custom(data.clone(), dpo.clone())
            .await
            .expect("forward_backward_custom is submitted");
        let opt = training
            .optim_step(AdamParams::with_learning_rate(0.05))
            .await
            .expect("optim_step is submitted");
        let out = fb.result().await.expect("forward_backward_custom result");
        opt.result().await.expect("optim_step result");
        let loss = out.loss().expect("loss:sum is the DPO loss");
        assert_eq!(
            Some(&loss),
            out.metrics.get("dpo_loss"),
            "{:?}",
            out.metrics
        );
        assert!(
            out.metrics.contains_key("surrogate_loss:sum"),
            "the server's surrogate is kept: {:?}",
            out.metrics
        );
        assert_eq!(out.loss_fn_outputs.len(), 2 * PAIRS);
        losses.push(loss);
    }
    assert!(
        (losses[0] - std::f64::consts::LN_2).abs() < 0.01,
        "{}: the first loss is ln 2 (policy = reference): {losses:?}",
        R::NAME
    );
    assert!(
        losses[2] < losses[0] - 1e-3,
        "{}: the DPO loss falls: {losses:?}",
        R::NAME
    );

    // On the wire (a forward pass is a `forward_backward` with `forward_only`): per step one
    // forward pass, one backward pass, one optimizer step, with
    // consecutive seq ids (the backward pass's id was reserved before the optim_step's).
    let recording = env.server().recording();
    let training_requests: Vec<(String, u64)> = recording
        .iter()
        .filter(|e| matches!(e.endpoint(), "forward_backward" | "optim_step"))
        .map(|e| {
            let forward_only = e
                .body_proto
                .as_ref()
                .and_then(|b| b.get("forward_only"))
                .and_then(Value::as_bool)
                == Some(true);
            let what = match e.endpoint() {
                "optim_step" => "optim_step",
                _ if forward_only => "forward",
                _ => "backward",
            };
            (
                what.to_owned(),
                seq_id(e.body_proto.as_ref(), e.body.as_ref()),
            )
        })
        .collect();
    let endpoints: Vec<&str> = training_requests.iter().map(|(e, _)| e.as_str()).collect();
    assert_eq!(
        endpoints,
        ["forward", "backward", "optim_step"].repeat(3),
        "{}: {training_requests:?}",
        R::NAME
    );
    for pair in training_requests.windows(2) {
        assert_eq!(pair[1].1, pair[0].1 + 1, "{training_requests:?}");
    }
    // The backward pass carried −∂loss/∂logprobs as weights: zero on the masked prompt, and at
    // initialisation ∓β·σ(0)/P = ∓0.5·0.5/256 on chosen/rejected completion tokens.
    let backward = recording
        .iter()
        .filter(|e| e.endpoint() == "forward_backward")
        .filter_map(|e| e.body_proto.clone())
        .find(|b| b.get("forward_only").is_none())
        .expect("the first backward pass was recorded");
    let weights = |i: usize| -> Vec<f64> {
        let w = &backward["data"][i]["loss_fn_inputs"]["weights"]["_decoded_dense"];
        w.as_array()
            .unwrap_or_else(|| panic!("weights of datum {i}: {w}"))
            .iter()
            .map(|v| v.as_f64().expect("a number"))
            .collect()
    };
    let expected = 0.5 * 0.5 / PAIRS as f64;
    for (i, sign) in [(0, 1.0), (1, -1.0)] {
        for (j, w) in weights(i).into_iter().enumerate() {
            let want = if j + 1 >= PROMPT {
                sign * expected
            } else {
                0.0
            };
            assert!(
                (w - want).abs() < 1e-3 * expected,
                "datum {i} token {j}: weight {w}, expected {want}"
            );
        }
    }
    service.close(FinishReason::Success).await.expect("close");
}
