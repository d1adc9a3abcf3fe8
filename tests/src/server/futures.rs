//! Server futures: every long-running request gets a request id at once; its result is fetched
//! with `retrieve_future` (long-polled), or awaited for a whole sampling session through
//! `retrieve_futures`, and may be abandoned with `cancel_future` (protocol.md 7).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode};
use serde_json::{json, Value};
use tinker_core::types::{
    CancelFutureRequest, FutureCompletion, FuturesTarget, RetrieveFutureRequest,
    RetrieveFuturesRequest, RetrieveFuturesResponse,
};
use tokio::sync::watch;

use super::codec::{
    encode_forward_output, encode_sample, forward_output_json, sample_json, SampleOutcome,
};
use super::error::{ApiError, ApiResult, JsonBody};
use super::state::{lock, AppState};
use crate::model::{ForwardOutput, ModelError};

/// What a finished request produced.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// A JSON result (create_model, optim_step, saves, loads, …).
    Json(Value),
    /// A forward / forward_backward result (protobuf or JSON by `Accept`).
    ForwardBackward(ForwardOutput),
    /// A sample result (protobuf or JSON by `Accept`).
    Sample(Box<SampleOutcome>),
    /// The request failed: `{"error", "category"}`.
    Failed {
        /// Message.
        error: String,
        /// `"user"` / `"server"`.
        category: String,
    },
}

/// A job whose model work could not run at all (e.g. the model was gone): a server-side failure.
impl From<ApiError> for Outcome {
    fn from(e: ApiError) -> Outcome {
        Outcome::Failed {
            error: e.detail.to_string(),
            category: "server".into(),
        }
    }
}

impl From<ModelError> for Outcome {
    fn from(e: ModelError) -> Outcome {
        Outcome::Failed {
            error: e.message,
            category: e.category.to_string(),
        }
    }
}

/// A finished future, with its encodings computed on first use.
#[derive(Debug)]
pub(crate) struct Done {
    outcome: Outcome,
    proto: OnceLock<Bytes>,
    json: OnceLock<Bytes>,
}

impl Done {
    fn failed(&self) -> bool {
        matches!(self.outcome, Outcome::Failed { .. })
    }

    /// The reply body and whether it is protobuf.
    fn render(&self, accept_proto: bool) -> (Bytes, bool) {
        match &self.outcome {
            Outcome::ForwardBackward(out) if accept_proto => (
                self.proto
                    .get_or_init(|| encode_forward_output(out))
                    .clone(),
                true,
            ),
            Outcome::Sample(s) if accept_proto => {
                (self.proto.get_or_init(|| encode_sample(s)).clone(), true)
            }
            other => {
                let body = self.json.get_or_init(|| {
                    let v = match other {
                        Outcome::Json(v) => v.clone(),
                        Outcome::ForwardBackward(out) => forward_output_json(out),
                        Outcome::Sample(s) => sample_json(s),
                        Outcome::Failed { error, category } => {
                            json!({"error": error, "category": category})
                        }
                    };
                    Bytes::from(serde_json::to_vec(&v).unwrap_or_default())
                });
                (body.clone(), false)
            }
        }
    }

    /// Size of the payload a `retrieve_futures` completion announces (the protobuf form for
    /// protobuf-typed results, which is what the poller's client fetches).
    fn payload_size(&self) -> u64 {
        self.render(true).0.len() as u64
    }
}

/// Per-future instructions from the fault injector.
#[derive(Debug, Clone, Default)]
pub(crate) struct FutureFault {
    /// Never complete.
    pub hang: bool,
    /// Fail with (error, category) instead of the real result.
    pub fail: Option<(String, String)>,
}

/// One server future.
#[derive(Debug)]
pub(crate) struct FutureSlot {
    pub request_id: String,
    /// The sampling session and clone id, for `retrieve_futures`.
    pub sampler: Option<(String, u64)>,
    fault: FutureFault,
    polls: AtomicU32,
    cancelled: AtomicBool,
    done: OnceLock<Arc<Done>>,
    done_at: OnceLock<Instant>,
    tx: watch::Sender<bool>,
}

impl FutureSlot {
    pub fn is_done(&self) -> bool {
        self.done.get().is_some()
    }

    /// Waits up to `hold` for the result.
    async fn wait(&self, hold: Duration) -> Option<Arc<Done>> {
        if let Some(d) = self.done.get() {
            return Some(d.clone());
        }
        let mut rx = self.tx.subscribe();
        let _ = tokio::time::timeout(hold, rx.wait_for(|done| *done)).await;
        self.done.get().cloned()
    }
}

/// The completion events of one sampling session clone, for `retrieve_futures`.
#[derive(Debug)]
pub(crate) struct CompletionLog {
    events: Mutex<VecDeque<(u64, FutureCompletion)>>,
    tx: watch::Sender<u64>,
}

impl Default for CompletionLog {
    fn default() -> CompletionLog {
        CompletionLog {
            events: Mutex::new(VecDeque::new()),
            tx: watch::channel(0).0,
        }
    }
}

/// How often (in created futures) finished futures older than the TTL are dropped.
const SWEEP_EVERY: u64 = 4096;

/// Global cursor of completion events (monotonic across sessions).
static NEXT_CURSOR: AtomicU64 = AtomicU64::new(1);

fn log_key(sampler: &str, clone: u64) -> String {
    format!("{sampler}#{clone}")
}

impl AppState {
    /// Creates a pending future.
    pub fn new_future(
        &self,
        sampler: Option<(String, u64)>,
        fault: FutureFault,
    ) -> Arc<FutureSlot> {
        let slot = Arc::new(FutureSlot {
            request_id: self.next_request_id(),
            sampler,
            fault,
            polls: AtomicU32::new(0),
            cancelled: AtomicBool::new(false),
            done: OnceLock::new(),
            done_at: OnceLock::new(),
            tx: watch::channel(false).0,
        });
        self.futures.insert(slot.request_id.clone(), slot.clone());
        // Forget old finished futures now and then, so long benchmarks do not grow without bound.
        if self
            .ids
            .request
            .load(Ordering::Relaxed)
            .is_multiple_of(SWEEP_EVERY)
        {
            let ttl = Duration::from_secs(self.cfg.future_ttl_secs);
            self.futures
                .retain(|_, f| f.done_at.get().is_none_or(|t| t.elapsed() < ttl));
        }
        slot
    }

    /// Completes a future (once; a hung future stays pending) and wakes its pollers.
    pub fn complete(&self, slot: &FutureSlot, outcome: Outcome) {
        if slot.fault.hang {
            return;
        }
        let outcome = match &slot.fault.fail {
            Some((error, category)) => Outcome::Failed {
                error: error.clone(),
                category: category.clone(),
            },
            None => outcome,
        };
        let done = Arc::new(Done {
            outcome,
            proto: OnceLock::new(),
            json: OnceLock::new(),
        });
        if slot.done.set(done.clone()).is_err() {
            return;
        }
        let _ = slot.done_at.set(Instant::now());
        slot.tx.send_replace(true);
        if let Some((sampler, clone)) = &slot.sampler {
            let completion = if done.failed() {
                FutureCompletion::Failed {
                    request_id: slot.request_id.clone(),
                }
            } else {
                FutureCompletion::Finished {
                    request_id: slot.request_id.clone(),
                    response_payload_uncompressed_size: Some(done.payload_size()),
                }
            };
            let log = self
                .completions
                .entry(log_key(sampler, *clone))
                .or_default()
                .clone();
            let cursor = NEXT_CURSOR.fetch_add(1, Ordering::Relaxed);
            lock(&log.events).push_back((cursor, completion));
            log.tx.send_replace(cursor);
        }
    }
}

fn json_response(status: StatusCode, value: &Value) -> Response {
    let mut resp = Response::new(Body::from(serde_json::to_vec(value).unwrap_or_default()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// `POST /api/v1/retrieve_future`.
pub(crate) async fn retrieve_future(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    JsonBody(req): JsonBody<RetrieveFutureRequest>,
) -> ApiResult {
    let slot = st
        .futures
        .get(&req.request_id)
        .map(|s| s.clone())
        .ok_or_else(|| ApiError::not_found(format!("future {} not found", req.request_id)))?;
    let try_again = || {
        json_response(
            StatusCode::OK,
            &json!({"type": "try_again", "request_id": slot.request_id,
                    "queue_state": st.cfg.queue_state}),
        )
    };
    if slot.polls.fetch_add(1, Ordering::Relaxed) < st.cfg.try_again_polls {
        return Ok(try_again());
    }
    let Some(done) = slot.wait(st.cfg.long_poll_hold()).await else {
        return Ok(try_again());
    };
    let accept_proto = headers
        .get_all(http::header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/x-protobuf"));
    let (body, is_proto) = done.render(accept_proto);
    if req.allow_metadata_only
        && !done.failed()
        && st
            .cfg
            .metadata_only_threshold
            .is_some_and(|limit| body.len() > limit)
    {
        return Ok(json_response(
            StatusCode::OK,
            &json!({"status": "complete_metadata", "response_payload_size": body.len()}),
        ));
    }
    let ctype = if is_proto {
        "application/x-protobuf"
    } else {
        "application/json"
    };
    Ok(([(http::header::CONTENT_TYPE, ctype)], body).into_response())
}

/// `POST /api/v1/retrieve_futures`: completion events of one sampling session clone.
pub(crate) async fn retrieve_futures(
    State(st): State<Arc<AppState>>,
    JsonBody(req): JsonBody<RetrieveFuturesRequest>,
) -> ApiResult {
    let FuturesTarget::SamplingSession {
        sampling_session_id,
        cloned_sampler_id,
    } = &req.target;
    if !st.samplers.contains_key(sampling_session_id) {
        return Err(ApiError::not_found(format!(
            "sampling session {sampling_session_id} not found"
        )));
    }
    let log = st
        .completions
        .entry(log_key(sampling_session_id, *cloned_sampler_id))
        .or_default()
        .clone();
    // Everything at or before prev_cursor is acknowledged.
    let collect = || {
        let mut events = lock(&log.events);
        while events.front().is_some_and(|(c, _)| *c <= req.prev_cursor) {
            events.pop_front();
        }
        events.iter().cloned().collect::<Vec<_>>()
    };
    // Acknowledged payloads may be deleted (protocol.md 7.7).
    for id in &req.retrieved_request_ids {
        st.futures.remove(id);
    }
    let mut rx = log.tx.subscribe();
    let mut pending = collect();
    let hold = match req.timeout {
        Some(t) if t.is_finite() && t >= 0.0 => {
            Duration::from_secs_f64(t).min(Duration::from_millis(st.cfg.retrieve_futures_hold_ms))
        }
        _ => Duration::from_millis(st.cfg.retrieve_futures_hold_ms),
    };
    if pending.is_empty() && !hold.is_zero() {
        let _ = tokio::time::timeout(hold, rx.changed()).await;
        pending = collect();
    }
    let cursor = pending.last().map_or(req.prev_cursor, |(c, _)| *c);
    let body = RetrieveFuturesResponse {
        completions: pending.into_iter().map(|(_, c)| c).collect(),
        cursor,
    };
    Ok(json_response(
        StatusCode::OK,
        &serde_json::to_value(body).unwrap_or(Value::Null),
    ))
}

/// `POST /api/v1/cancel_future`: abandons a pending request (it fails with a user error).
pub(crate) async fn cancel_future(
    State(st): State<Arc<AppState>>,
    JsonBody(req): JsonBody<CancelFutureRequest>,
) -> ApiResult {
    let slot = st
        .futures
        .get(&req.request_id)
        .map(|s| s.clone())
        .ok_or_else(|| ApiError::not_found(format!("future {} not found", req.request_id)))?;
    if !slot.is_done() {
        slot.cancelled.store(true, Ordering::Relaxed);
        st.complete(
            &slot,
            Outcome::Failed {
                error: format!("request {} was cancelled", req.request_id),
                category: "user".into(),
            },
        );
    }
    Ok(json_response(StatusCode::OK, &json!({})))
}
