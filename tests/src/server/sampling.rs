//! Sampling: `create_sampling_session`, `join_sampling_session`, `samplers/{id}`, `asample`,
//! and Tinkex's `stream_sample` (server-sent events).
//!
//! A sampling session holds fixed weights (a base model, a checkpoint, or a training run's
//! weights at an unnamed `save_weights_for_sampler`). Samples run concurrently on the blocking
//! pool, bounded by the model permits; nothing is locked across the computation.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::Json;
use dashmap::mapref::entry::Entry;
use futures_util::StreamExt as _;
use serde_json::{json, Value};
use tinker_core::types::{
    CreateSamplingSessionRequest, JoinSamplingSessionRequest, SampleRequest, StopCondition,
    TensorData, TensorValues,
};

use super::codec::SampleOutcome;
use super::error::{ApiError, ApiResult, JsonBody};
use super::futures::Outcome;
use super::state::{AppState, Sampler};
use super::training::Ctx;
use crate::model::{hash_name, positions, ModelError, SampleSettings, Snapshot, Stop, ToyModel};

/// `tinker://` checkpoint → a model to sample from.
async fn model_from_path(
    st: &Arc<AppState>,
    path: &str,
) -> Result<(Arc<ToyModel>, String), ApiError> {
    let record = st.checkpoint_by_path(path)?;
    st.audit_event("checkpoint_read", Some(&record.run_id), Some(path));
    let built = st
        .model_work(move || -> Result<ToyModel, ModelError> {
            let snap = Snapshot::from_bytes(&record.snapshot)?;
            ToyModel::from_snapshot(&snap, false)
        })
        .await?
        .map_err(|e| ApiError::bad_request(e.message))?;
    let base = built.spec().base_model.clone();
    Ok((Arc::new(built), base))
}

/// `POST /api/v1/create_sampling_session` → `{"sampling_session_id"}`.
pub(crate) async fn create_sampling_session(
    State(st): State<Arc<AppState>>,
    JsonBody(req): JsonBody<CreateSamplingSessionRequest>,
) -> ApiResult<Json<Value>> {
    st.live_session(&req.session_id)?;
    let id = format!("{}:sample:{}", req.session_id, req.sampling_session_seq_id);
    let reply = json!({"type": "create_sampling_session", "sampling_session_id": id});
    if st.samplers.contains_key(&id) {
        // A retried create (same session counter value) gets the same session.
        return Ok(Json(reply));
    }
    let (model, base_model) = match (&req.model_path, &req.base_model) {
        (Some(path), _) => model_from_path(&st, path).await?,
        (None, Some(base)) => {
            st.check_base_model(base, false)?;
            (st.base_model(base)?, base.clone())
        }
        (None, None) => {
            return Err(ApiError::bad_request(
                "give model_path (a tinker:// checkpoint) or base_model",
            ))
        }
    };
    st.register_sampler(Sampler::new(
        id,
        req.session_id.clone(),
        base_model,
        req.model_path.clone(),
        model,
    ));
    Ok(Json(reply))
}

/// `POST /api/v1/join_sampling_session` → `{"client_counter"}` (1, 2, … — the original is 0).
pub(crate) async fn join_sampling_session(
    State(st): State<Arc<AppState>>,
    JsonBody(req): JsonBody<JoinSamplingSessionRequest>,
) -> ApiResult<Json<Value>> {
    let sampler = st.live_sampler(&req.sampling_session_id)?;
    let n = sampler.next_client.fetch_add(1, Ordering::Relaxed);
    Ok(Json(
        json!({"type": "join_sampling_session", "client_counter": n}),
    ))
}

/// `GET /api/v1/samplers/{sampler_id}`.
pub(crate) async fn get_sampler(
    State(st): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let s = st
        .samplers
        .get(&id)
        .map(|s| s.clone())
        .ok_or_else(|| ApiError::not_found(format!("sampler {id} not found")))?;
    Ok(Json(json!({"sampler_id": s.id, "base_model": s.base_model,
                    "model_path": s.model_path})))
}

fn settings(req: &SampleRequest) -> SampleSettings {
    let p = &req.sampling_params;
    SampleSettings {
        max_tokens: p.max_tokens.map(|n| n as usize),
        temperature: p.temperature,
        top_k: p.top_k,
        top_p: p.top_p,
        stop: match &p.stop {
            None => Stop::Default,
            Some(StopCondition::Text(s)) => Stop::Strings(vec![s.clone()]),
            Some(StopCondition::Strings(s)) => Stop::Strings(s.clone()),
            Some(StopCondition::Tokens(t)) => Stop::Tokens(t.clone()),
        },
        prompt_logprobs: req.prompt_logprobs == Some(true),
        topk_prompt_logprobs: req.topk_prompt_logprobs as usize,
        topk_sample_logprobs: req.topk_sample_logprobs.unwrap_or(0) as usize,
    }
}

/// Runs one sample request on the blocking pool, with the 0.38 extras.
fn run_sample(
    model: &ToyModel,
    req: &SampleRequest,
    seed: u64,
) -> Result<SampleOutcome, ModelError> {
    let mut result = model.sample(&req.prompt, &settings(req), req.num_samples as usize, seed)?;
    let pos = positions(&req.prompt)?;
    let rows = pos.len().saturating_sub(1);
    if let (Some(n), Some(lps)) = (req.prompt_logprobs_last_n, result.prompt_logprobs.as_mut()) {
        let keep_from = pos.len().saturating_sub(n as usize);
        for lp in lps.iter_mut().take(keep_from) {
            *lp = None;
        }
    }
    // The distribution each prompt row was drawn from (row i: after position i).
    let needs_rows =
        req.target_prompt_logprobs.is_some() || req.prompt_alt_tokens_k.unwrap_or(0) > 0;
    let dists: Vec<Vec<f64>> = if needs_rows {
        pos.iter()
            .take(rows)
            .map(|p| model.next_token_logprobs(*p))
            .collect::<Result<_, _>>()?
    } else {
        Vec::new()
    };
    let target_prompt_logprobs = match &req.target_prompt_logprobs {
        None => None,
        Some(t) => Some(target_logprobs(t, &dists)?),
    };
    let prompt_alt_tokens = match req.prompt_alt_tokens_k.unwrap_or(0) as usize {
        0 => None,
        k => {
            let k = k.min(model.vocab_size());
            let mut ids = Vec::with_capacity(rows * k);
            let mut lps = Vec::with_capacity(rows * k);
            for d in &dists {
                let mut order: Vec<usize> = (0..d.len()).collect();
                order.sort_by(|&a, &b| d[b].total_cmp(&d[a]).then(a.cmp(&b)));
                for &t in order.iter().take(k) {
                    ids.push(t as i64);
                    lps.push(d[t] as f32);
                }
            }
            let shape = vec![rows, k];
            Some((
                TensorData::dense(TensorValues::Int64(ids), Some(shape.clone()))?,
                TensorData::dense(TensorValues::Float32(lps), Some(shape))?,
            ))
        }
    };
    Ok(SampleOutcome {
        result,
        target_prompt_logprobs,
        prompt_alt_tokens,
    })
}

/// Logprobs of the requested prompt targets, same layout as the request, 0.0 where it had −1.
fn target_logprobs(t: &TensorData, dists: &[Vec<f64>]) -> Result<TensorData, ModelError> {
    let ids = t
        .as_i64()
        .ok_or_else(|| ModelError::user("target_prompt_logprobs must be int64 token ids"))?;
    let shape = t.shape();
    let lookup = |row: usize, id: i64| -> Result<f32, ModelError> {
        if id < 0 {
            return Ok(0.0);
        }
        let d = dists.get(row).ok_or_else(|| {
            ModelError::user(format!(
                "target_prompt_logprobs: row {row} is past the prompt"
            ))
        })?;
        d.get(id as usize).map(|&v| v as f32).ok_or_else(|| {
            ModelError::user(format!(
                "target_prompt_logprobs: token id {id} is outside the vocabulary"
            ))
        })
    };
    let values: Vec<f32> = match t.sparse() {
        None => {
            let cols = shape.get(1).copied().unwrap_or(1).max(1);
            ids.iter()
                .enumerate()
                .map(|(i, &id)| lookup(i / cols, id))
                .collect::<Result<_, _>>()?
        }
        Some(csr) => {
            let mut out = Vec::with_capacity(ids.len());
            for row in 0..csr.crow_indices.len().saturating_sub(1) {
                let (a, b) = (
                    csr.crow_indices[row] as usize,
                    csr.crow_indices[row + 1] as usize,
                );
                for &id in ids.get(a..b).unwrap_or(&[]) {
                    out.push(lookup(row, id)?);
                }
            }
            out
        }
    };
    let out = match t.sparse() {
        None => TensorData::dense(TensorValues::Float32(values), Some(shape))?,
        Some(csr) => TensorData::csr(
            TensorValues::Float32(values),
            [shape[0], shape[1]],
            csr.crow_indices.clone(),
            csr.col_indices.clone(),
        )?,
    };
    Ok(out)
}

/// `POST /api/v1/asample` (future → protobuf `SampleResponse`; reply carries
/// `sample_sequence_ids`, one per sample).
pub(crate) async fn asample(
    State(st): State<Arc<AppState>>,
    ctx: Ctx,
    JsonBody(req): JsonBody<SampleRequest>,
) -> ApiResult<Json<Value>> {
    req.validate()?;
    if let Some(reply) = st.replay(&ctx, "asample") {
        return Ok(Json(reply));
    }
    let (sampler, seq) = match (&req.sampling_session_id, req.seq_id) {
        (Some(id), seq) => (st.live_sampler(id)?, seq),
        (None, _) => {
            let (model, base) = match (&req.model_path, &req.base_model) {
                (Some(path), _) => model_from_path(&st, path).await?,
                (None, Some(base)) => {
                    st.check_base_model(base, false)?;
                    (st.base_model(base)?, base.clone())
                }
                (None, None) => return Err(ApiError::bad_request("no sampler given")),
            };
            let id = format!("adhoc:{}", st.ids.sample.fetch_add(1, Ordering::Relaxed));
            (
                Arc::new(Sampler::new(
                    id,
                    String::new(),
                    base,
                    req.model_path.clone(),
                    model,
                )),
                None,
            )
        }
    };
    let clone_id = seq.map_or(0, |s| s / 1_000_000_000);
    let new_request = || {
        let slot = st.new_future(Some((sampler.id.clone(), clone_id)), ctx.fault.clone());
        let first = st
            .ids
            .sequence
            .fetch_add(u64::from(req.num_samples), Ordering::Relaxed);
        let ids: Vec<String> = (0..u64::from(req.num_samples))
            .map(|i| format!("seq-{}", first + i))
            .collect();
        (
            slot.clone(),
            json!({"request_id": slot.request_id, "sample_sequence_ids": ids}),
        )
    };
    let (slot, reply) = match seq {
        Some(s) => match sampler.seqs.entry(s) {
            Entry::Occupied(o) => return Ok(Json(o.get().clone())),
            Entry::Vacant(v) => {
                let (slot, reply) = new_request();
                v.insert(reply.clone());
                (slot, reply)
            }
        },
        None => new_request(),
    };
    st.remember(&ctx, "asample", &reply);
    let seed = req.sampling_params.seed.map_or_else(
        || st.cfg.seed ^ hash_name(&slot.request_id) ^ hash_name(&sampler.id),
        |s| s as u64,
    );
    let st2 = st.clone();
    tokio::spawn(async move {
        let model = sampler.model.clone();
        let req = Arc::new(req);
        let req2 = req.clone();
        let outcome = match st2
            .model_work(move || run_sample(&model, &req2, seed))
            .await
        {
            Ok(Ok(out)) => {
                let prompt_tokens = req.prompt.length().unwrap_or(0);
                let sampled: usize = out.result.sequences.iter().map(|s| s.tokens.len()).sum();
                st2.record_usage(&sampler.session_id, &sampler.base_model,
                    json!({"type": "sampling_prefill", "cached": false, "token_count": prompt_tokens}));
                st2.record_usage(
                    &sampler.session_id,
                    &sampler.base_model,
                    json!({"type": "sampling_sample", "token_count": sampled}),
                );
                Outcome::Sample(Box::new(out))
            }
            Ok(Err(e)) => e.into(),
            Err(e) => e.into(),
        };
        st2.complete(&slot, outcome);
    });
    Ok(Json(reply))
}

/// Pause between two streamed tokens: the toy model is instant, so without it a whole stream
/// would sit in the socket buffer before the client read its first event, and a client that
/// hangs up early could not stop anything.
const STREAM_TOKEN_INTERVAL: std::time::Duration = std::time::Duration::from_millis(5);

/// One server-sent event with a JSON payload.
fn sse_event(payload: &Value) -> bytes::Bytes {
    bytes::Bytes::from(format!("data: {payload}\n\n"))
}

/// `POST /api/v1/stream_sample` [Tinkex F76, F87]: one completion of a sampling session,
/// streamed as server-sent events (`text/event-stream`) — per token
/// `{"token", "token_id", "index", "logprob"}`, then `{"finish_reason", "total_tokens"}`.
///
/// The body is the `asample` JSON (`num_samples` must be 1). The tokens are the ones `asample`
/// returns for the same request and `sampling_params.seed`. Events are paced
/// ([`STREAM_TOKEN_INTERVAL`]); when the client hangs up, the stream is dropped and generation
/// of further events stops (the recording then holds only the events that were sent).
pub(crate) async fn stream_sample(
    State(st): State<Arc<AppState>>,
    JsonBody(req): JsonBody<SampleRequest>,
) -> ApiResult<axum::response::Response> {
    req.validate()?;
    if req.num_samples != 1 {
        return Err(ApiError::bad_request(format!(
            "stream_sample streams one completion; num_samples is {}",
            req.num_samples
        )));
    }
    let Some(session) = &req.sampling_session_id else {
        return Err(ApiError::bad_request(
            "stream_sample needs a sampling_session_id",
        ));
    };
    let sampler = st.live_sampler(session)?;
    let seed = req.sampling_params.seed.map_or_else(
        || {
            st.cfg.seed
                ^ hash_name(&format!("stream:{}", req.seq_id.unwrap_or(0)))
                ^ hash_name(&sampler.id)
        },
        |s| s as u64,
    );
    let model = sampler.model.clone();
    let settings = settings(&req);
    let prompt = req.prompt.clone();
    let result = st
        .model_work(move || model.sample(&prompt, &settings, 1, seed))
        .await?
        .map_err(|e| ApiError::bad_request(e.message))?;
    let Some(seq) = result.sequences.into_iter().next() else {
        return Err(ApiError::bad_request("the model produced no sequence"));
    };
    st.record_usage(
        &sampler.session_id,
        &sampler.base_model,
        json!({"type": "sampling_sample", "token_count": seq.tokens.len()}),
    );
    let mut events: Vec<bytes::Bytes> = seq
        .tokens
        .iter()
        .zip(&seq.logprobs)
        .enumerate()
        .map(|(i, (&t, &lp))| {
            sse_event(&json!({"token": crate::model::tokenizer::decode(&[t]),
                              "token_id": t, "index": i, "logprob": lp}))
        })
        .collect();
    events.push(sse_event(
        &json!({"finish_reason": seq.stop_reason.as_str(),
                                  "total_tokens": seq.tokens.len()}),
    ));
    let paced =
        futures_util::stream::iter(events.into_iter().enumerate()).then(|(i, e)| async move {
            if i > 0 {
                tokio::time::sleep(STREAM_TOKEN_INTERVAL).await;
            }
            Ok::<_, std::convert::Infallible>(e)
        });
    axum::response::Response::builder()
        .header(http::header::CONTENT_TYPE, "text/event-stream")
        .header(http::header::CACHE_CONTROL, "no-cache")
        .body(axum::body::Body::from_stream(paced))
        .map_err(|e| ApiError::bad_request(e.to_string()))
}
