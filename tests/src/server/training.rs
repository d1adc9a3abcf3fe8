//! Training runs: `create_model`, `get_info`, `forward_backward`, `optim_step`, the saves and
//! loads, `unload_model`, `create_custom_loss`, `copy_weights`.
//!
//! Each run has one worker task that executes its requests **in `seq_id` order**: a request with
//! seq n waits until n−1 has executed, whatever order they arrived in (the chunks of one
//! forward_backward may arrive in any order, the first one last). A request without `seq_id`
//! runs when it arrives. If the missing request never comes, the worker skips the gap after
//! `seq_gap_timeout_ms`. The model computation itself runs on the blocking pool, bounded by the
//! server's model permits, so long polls stay responsive.
//!
//! A repeated `(model_id, seq_id)` returns the original future (the SDK reuses the seq id on
//! every retry layer); so does a repeated `X-Idempotency-Key`. A save whose checkpoint name is
//! taken is answered 409 *before* that deduplication, as the real service does (a retried save
//! whose first attempt landed meets its own checkpoint: cookbook#401, tinker#21).
//!
//! A request the server rejects (such as that 409) still *consumes* its seq id: the worker is
//! told the id will never run, so later requests of the run do not wait out the seq-gap timeout
//! for it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime};

use axum::extract::{FromRequestParts, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use dashmap::mapref::entry::Entry;
use dashmap::DashMap;
use http::request::Parts;
use http::HeaderMap;
use serde_json::{json, Value};
use tinker_core::path::{CheckpointKind, TinkerPath};
use tinker_core::proto::wire;
use tinker_core::types::{
    check_ttl, CreateCustomLossRequest, CreateModelRequest, GetInfoRequest, LoadWeightsRequest,
    LoraConfig, Metadata, OptimStepRequest, OptimizerConfig, OptimizerParams,
    SaveWeightsExternalRequest, SaveWeightsForSamplerRequest, SaveWeightsRequest,
    UnloadModelRequest,
};
use tokio::sync::mpsc;

use super::auth::Credential;
use super::codec::{datums_from_wire, decode_fb_request};
use super::custom_loss;
use super::error::{parse_json, ApiError, ApiResult, JsonBody};
use super::futures::{FutureFault, FutureSlot, Outcome};
use super::state::{lock, AppState, CheckpointRecord, RunInfo, Sampler};
use crate::model::{
    self, LossConfig, ModelError, ModelSpec, OptimParams, OptimizerKind, Snapshot, ToyModel,
};

/// Per-request context: headers, the fault injector's instructions, the credential.
pub(crate) struct Ctx {
    pub headers: HeaderMap,
    pub fault: FutureFault,
    #[allow(dead_code)]
    pub credential: Option<Credential>,
}

impl<S: Send + Sync> FromRequestParts<S> for Ctx {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(Ctx {
            headers: parts.headers.clone(),
            fault: parts
                .extensions
                .get::<FutureFault>()
                .cloned()
                .unwrap_or_default(),
            credential: parts.extensions.get::<Credential>().cloned(),
        })
    }
}

impl Ctx {
    pub fn idempotency_key(&self) -> Option<&str> {
        self.headers
            .get("x-idempotency-key")
            .and_then(|v| v.to_str().ok())
            .filter(|k| !k.is_empty())
    }
}

/// What a queued seq id does when its turn comes.
enum Task {
    /// Run the model work and complete the future.
    Run {
        slot: Arc<FutureSlot>,
        work: Box<dyn FnOnce(&mut ToyModel) -> Outcome + Send>,
    },
    /// The request was rejected: nothing runs, the id is merely used up.
    Consumed,
}

/// One queued request of a run.
pub(crate) struct Job {
    seq: Option<u64>,
    /// The endpoint (`forward_backward`, `optim_step`, …), for the executed counts.
    endpoint: String,
    task: Task,
}

/// A training run (a LoRA model being trained).
#[derive(Debug)]
pub(crate) struct TrainingRun {
    pub id: String,
    pub session_id: String,
    pub info: RunInfo,
    pub user_metadata: Option<Metadata>,
    pub created: SystemTime,
    pub last_request: Mutex<SystemTime>,
    pub unloaded: AtomicBool,
    /// seq_id → the future reply first given for it.
    pub seqs: DashMap<u64, Value>,
    executed: AtomicU64,
    /// Requests executed per endpoint (`optim_step` → steps applied), for tests.
    pub executed_by_endpoint: DashMap<String, u64>,
    jobs: mpsc::UnboundedSender<Job>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.task {
            Task::Run { slot, .. } => write!(f, "Job(seq {:?}, {})", self.seq, slot.request_id),
            Task::Consumed => write!(f, "Job(seq {:?}, consumed)", self.seq),
        }
    }
}

impl TrainingRun {
    pub fn touch(&self) {
        *lock(&self.last_request) = SystemTime::now();
    }
}

/// The future reply of a submit.
fn future_reply(slot: &FutureSlot, model_id: Option<&str>) -> Value {
    match model_id {
        Some(m) => json!({"request_id": slot.request_id, "model_id": m}),
        None => json!({"request_id": slot.request_id}),
    }
}

impl AppState {
    /// The reply an earlier request with the same idempotency key got on the same path.
    pub fn replay(&self, ctx: &Ctx, path: &str) -> Option<Value> {
        let key = ctx.idempotency_key()?;
        let e = self.idempotency.get(key)?;
        (e.0 == path).then(|| e.1.clone())
    }

    pub fn remember(&self, ctx: &Ctx, path: &str, reply: &Value) {
        if let Some(key) = ctx.idempotency_key() {
            self.idempotency
                .insert(key.to_owned(), (path.to_owned(), reply.clone()));
        }
    }

    /// Submits a job to a run, deduplicating by seq id. `check` (e.g. the 409 name check) runs
    /// first, for repeats too; when it rejects the request, the seq id is consumed.
    fn submit(
        self: &Arc<Self>,
        ctx: &Ctx,
        path: &str,
        run: &TrainingRun,
        seq: Option<u64>,
        check: impl FnOnce() -> Result<(), ApiError>,
        work: Box<dyn FnOnce(&mut ToyModel) -> Outcome + Send>,
    ) -> ApiResult<Value> {
        if let Some(reply) = self.replay(ctx, path) {
            return Ok(reply);
        }
        if let Err(rejected) = check() {
            if let Some(s) = seq.filter(|s| !run.seqs.contains_key(s)) {
                // Nothing will ever run under this id: let the worker move past it.
                let _ = run.jobs.send(Job {
                    seq: Some(s),
                    endpoint: path.to_owned(),
                    task: Task::Consumed,
                });
            }
            return Err(rejected);
        }
        let enqueue = || -> ApiResult<Value> {
            let slot = self.new_future(None, ctx.fault.clone());
            let reply = future_reply(&slot, Some(&run.id));
            run.touch();
            run.jobs
                .send(Job {
                    seq,
                    endpoint: path.to_owned(),
                    task: Task::Run { slot, work },
                })
                .map_err(|_| ApiError::gone(format!("model {} is no longer running", run.id)))?;
            Ok(reply)
        };
        let reply = match seq {
            Some(s) => match run.seqs.entry(s) {
                Entry::Occupied(o) => return Ok(o.get().clone()),
                Entry::Vacant(v) => {
                    let reply = enqueue()?;
                    v.insert(reply.clone());
                    reply
                }
            },
            None => enqueue()?,
        };
        self.remember(ctx, path, &reply);
        Ok(reply)
    }

    /// Registers a run around a built model and starts its worker.
    fn register_run(
        self: &Arc<Self>,
        id: String,
        session_id: String,
        info: RunInfo,
        user_metadata: Option<Metadata>,
        model: ToyModel,
    ) -> Arc<TrainingRun> {
        let (tx, rx) = mpsc::unbounded_channel();
        let run = Arc::new(TrainingRun {
            id: id.clone(),
            session_id: session_id.clone(),
            info,
            user_metadata,
            created: SystemTime::now(),
            last_request: Mutex::new(SystemTime::now()),
            unloaded: AtomicBool::new(false),
            seqs: DashMap::new(),
            executed: AtomicU64::new(0),
            executed_by_endpoint: DashMap::new(),
            jobs: tx,
        });
        let gap = self.cfg.seq_gap_timeout_ms.map(Duration::from_millis);
        tokio::spawn(run_worker(
            Arc::downgrade(self),
            Arc::downgrade(&run),
            Arc::new(Mutex::new(model)),
            rx,
            gap,
        ));
        self.runs.insert(id.clone(), run.clone());
        if let Some(s) = self.sessions.get(&session_id) {
            lock(&s.runs).push(id);
        }
        run
    }

    /// Runs blocking model work under a model permit.
    pub async fn model_work<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, ApiError> {
        let _permit =
            self.model_permits.acquire().await.map_err(|_| {
                ApiError::new(http::StatusCode::SERVICE_UNAVAILABLE, "shutting down")
            })?;
        tokio::task::spawn_blocking(f)
            .await
            .map_err(|_| ApiError::new(http::StatusCode::INTERNAL_SERVER_ERROR, "model job failed"))
    }
}

/// Executes a run's jobs in seq order.
async fn run_worker(
    st: Weak<AppState>,
    run: Weak<TrainingRun>,
    model: Arc<Mutex<ToyModel>>,
    mut rx: mpsc::UnboundedReceiver<Job>,
    gap: Option<Duration>,
) {
    let mut waiting: BTreeMap<u64, Job> = BTreeMap::new();
    let mut next = 1u64;
    loop {
        while let Some(job) = waiting.remove(&next) {
            next += 1;
            execute(&st, &run, &model, job).await;
        }
        let received = match (gap, waiting.is_empty()) {
            (Some(gap), false) => match tokio::time::timeout(gap, rx.recv()).await {
                Ok(job) => job,
                Err(_) => {
                    // The missing request never came: skip to the first one we have.
                    if let Some((&first, _)) = waiting.first_key_value() {
                        tracing::warn!(skipped_from = next, to = first, "seq gap timed out");
                        next = first;
                    }
                    continue;
                }
            },
            _ => rx.recv().await,
        };
        let Some(job) = received else { break };
        match job.seq {
            Some(s) if s >= next => {
                waiting.insert(s, job);
            }
            // No seq id, or a latecomer behind a skipped gap: run it now.
            _ => execute(&st, &run, &model, job).await,
        }
    }
}

async fn execute(
    st: &Weak<AppState>,
    run: &Weak<TrainingRun>,
    model: &Arc<Mutex<ToyModel>>,
    job: Job,
) {
    let Task::Run { slot, work } = job.task else {
        return;
    };
    let Some(st) = st.upgrade() else { return };
    let model = model.clone();
    let cycle = run.upgrade().map_or(0, |r| {
        *r.executed_by_endpoint.entry(job.endpoint).or_insert(0) += 1;
        r.executed.fetch_add(1, Ordering::Relaxed) + 1
    });
    let outcome = st
        .model_work(move || {
            let mut m = lock(&model);
            let mut outcome = work(&mut m);
            if let Outcome::ForwardBackward(out) = &mut outcome {
                out.metrics
                    .insert("clock_cycle:unique".into(), cycle as f64);
            }
            outcome
        })
        .await
        .unwrap_or_else(|e| Outcome::Failed {
            error: format!("internal error: {}", e.detail),
            category: "server".into(),
        });
    st.complete(&slot, outcome);
}

fn optimizer_kind(config: Option<&OptimizerConfig>) -> Result<OptimizerKind, ApiError> {
    match config {
        None | Some(OptimizerConfig::AdamW) => Ok(OptimizerKind::AdamW),
        Some(OptimizerConfig::Dimuon { .. }) => Ok(OptimizerKind::Dimuon),
        Some(other) => Err(ApiError::bad_request(format!(
            "optimizer_config.type {:?} is not supported (adamw, dimuon)",
            other.type_name()
        ))),
    }
}

/// `POST /api/v1/create_model` (future → `{"model_id"}`).
pub(crate) async fn create_model(
    State(st): State<Arc<AppState>>,
    ctx: Ctx,
    JsonBody(req): JsonBody<CreateModelRequest>,
) -> ApiResult<Json<Value>> {
    st.live_session(&req.session_id)?;
    req.validate()?;
    st.check_base_model(&req.base_model, true)?;
    let kind = optimizer_kind(req.optimizer_config.as_ref())?;
    if let Some(reply) = st.replay(&ctx, "create_model") {
        return Ok(Json(reply));
    }
    let model_id = format!("{}:train:{}", req.session_id, req.model_seq_id);
    let lora = req.lora_config.unwrap_or_default();
    let seed = lora
        .seed
        .map_or_else(|| st.cfg.seed ^ model::hash_name(&model_id), |s| s as u64);
    let spec = ModelSpec::new(req.base_model.clone(), lora.rank as usize)
        .with_vocab_size(st.cfg.vocab_size)
        .with_seed(seed)
        .with_optimizer(kind);
    let info = RunInfo {
        base_model: req.base_model.clone(),
        lora,
        optimizer: req.optimizer_config.clone().unwrap_or_default(),
    };
    let slot = match st.creations.entry(model_id.clone()) {
        Entry::Occupied(o) => return Ok(Json(o.get().clone())),
        Entry::Vacant(v) => {
            let slot = st.new_future(None, ctx.fault.clone());
            v.insert(future_reply(&slot, Some(&model_id)));
            slot
        }
    };
    let reply = future_reply(&slot, Some(&model_id));
    st.remember(&ctx, "create_model", &reply);
    let st2 = st.clone();
    tokio::spawn(async move {
        let built = st2.model_work(move || ToyModel::new(spec)).await;
        let outcome = match built {
            Ok(Ok(model)) => {
                st2.register_run(
                    model_id.clone(),
                    req.session_id,
                    info,
                    req.user_metadata,
                    model,
                );
                Outcome::Json(json!({"model_id": model_id, "type": "create_model"}))
            }
            Ok(Err(e)) => e.into(),
            Err(e) => e.into(),
        };
        st2.complete(&slot, outcome);
    });
    Ok(Json(reply))
}

/// `POST /api/v1/get_info`.
pub(crate) async fn get_info(
    State(st): State<Arc<AppState>>,
    JsonBody(req): JsonBody<GetInfoRequest>,
) -> ApiResult<Json<Value>> {
    let run = st.live_run(&req.model_id)?;
    run.touch();
    Ok(Json(json!({
        "type": "get_info",
        "model_id": run.id,
        "model_data": {"arch": "toy-bigram", "model_name": run.info.base_model,
                       "tokenizer_id": run.info.base_model},
        "is_lora": true,
        "lora_rank": run.info.lora.rank,
        "model_name": run.info.base_model,
        "optimizer_config": run.info.optimizer,
    })))
}

fn loss_config(req: &wire::ForwardBackwardRequest) -> LossConfig {
    let mut cfg = LossConfig::default();
    if req.loss_fn_config_v2.is_empty() {
        cfg.numbers = req.loss_fn_config.clone();
    } else {
        for (k, v) in &req.loss_fn_config_v2 {
            match &v.value {
                Some(wire::loss_config_value::Value::Number(n)) => {
                    cfg.numbers.insert(k.clone(), *n);
                }
                Some(wire::loss_config_value::Value::Text(t)) => {
                    cfg.texts.insert(k.clone(), t.clone());
                }
                None => {}
            }
        }
    }
    cfg
}

/// `POST /api/v1/forward_backward` (protobuf body, optionally zstd; future → protobuf result).
pub(crate) async fn forward_backward(
    State(st): State<Arc<AppState>>,
    ctx: Ctx,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let zstd = ctx
        .headers
        .get(http::header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("zstd"));
    let ctype = ctx
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !ctype.contains("application/x-protobuf") {
        return Err(ApiError::new(
            http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("forward_backward takes an application/x-protobuf body, got {ctype:?}"),
        ));
    }
    let req = decode_fb_request(&body, zstd)?;
    let run = st.live_run(&req.model_id)?;
    if req.seq_id < 1 {
        return Err(ApiError::bad_request(format!(
            "seq_id must be >= 1, got {}",
            req.seq_id
        )));
    }
    let datums = datums_from_wire(&req)?;
    let tokens: usize = datums
        .iter()
        .map(|d| d.model_input.length().unwrap_or(0))
        .sum();
    let cfg = loss_config(&req);
    let forward_only = req.forward_only;
    let loss_fn = req.loss_fn.clone();
    let custom = (loss_fn == "custom").then(|| custom_loss::resolve(&st, &run.session_id, &cfg));
    let work: Box<dyn FnOnce(&mut ToyModel) -> Outcome + Send> = Box::new(move |m| {
        if let Some(custom) = custom {
            return custom_loss::run(m, custom, &datums, forward_only);
        }
        let out = if forward_only {
            m.forward(&datums, &loss_fn, &cfg)
        } else {
            m.forward_backward(&datums, &loss_fn, &cfg)
        };
        out.map_or_else(Outcome::from, Outcome::ForwardBackward)
    });
    let reply = st.submit(
        &ctx,
        "forward_backward",
        &run,
        Some(req.seq_id as u64),
        || Ok(()),
        work,
    )?;
    st.record_usage(
        &run.session_id,
        &run.info.base_model,
        json!({"type": "training", "token_count": tokens}),
    );
    Ok(Json(reply))
}

/// `POST /api/v1/optim_step` (future → `{"metrics"}`).
pub(crate) async fn optim_step(
    State(st): State<Arc<AppState>>,
    ctx: Ctx,
    JsonBody(req): JsonBody<OptimStepRequest>,
) -> ApiResult<Json<Value>> {
    let run = st.live_run(&req.model_id)?;
    req.validate()?;
    let params = match (&req.adam_params, &req.optimizer_params) {
        (Some(a), _) => OptimParams::Adam(model::AdamParams {
            learning_rate: a.learning_rate,
            beta1: a.beta1,
            beta2: a.beta2,
            eps: a.eps,
            weight_decay: a.weight_decay,
            grad_clip_norm: a.grad_clip_norm,
        }),
        (None, Some(OptimizerParams::Dimuon(d))) => OptimParams::Dimuon(model::DimuonParams {
            learning_rate: d.learning_rate,
            grad_clip_norm: d.grad_clip_norm,
            beta1: d.beta1,
        }),
        (None, None) => {
            return Err(ApiError::bad_request(
                "adam_params or optimizer_params is required",
            ))
        }
    };
    let work: Box<dyn FnOnce(&mut ToyModel) -> Outcome + Send> = Box::new(move |m| {
        m.optim_step(&params).map_or_else(Outcome::from, |metrics| {
            Outcome::Json(json!({"metrics": metrics, "type": "optim_step"}))
        })
    });
    Ok(Json(st.submit(
        &ctx,
        "optim_step",
        &run,
        req.seq_id,
        || Ok(()),
        work,
    )?))
}

/// Reserves a checkpoint name for a save: 409 when it exists (or is being saved) and the save
/// does not overwrite.
fn reserve_name(
    st: &AppState,
    run: &str,
    kind: CheckpointKind,
    name: &str,
    overwrite: bool,
) -> Result<(), ApiError> {
    TinkerPath::new(run, kind, name).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let key = (run.to_owned(), format!("{}/{name}", kind.segment()));
    let exists = st.checkpoint(&key.0, &key.1).is_ok();
    let mut reserved = lock(&st.reserved);
    if !overwrite && (exists || reserved.contains(&key)) {
        return Err(ApiError::conflict(format!(
            "checkpoint tinker://{}/{} already exists; save under another name or pass overwrite",
            key.0, key.1
        )));
    }
    reserved.insert(key);
    Ok(())
}

fn ttl_deadline(ttl: Option<u64>, location: &str) -> Result<Option<SystemTime>, ApiError> {
    match ttl {
        None => Ok(None),
        Some(t) => {
            check_ttl(location, t)?;
            Ok(Some(SystemTime::now() + Duration::from_secs(t)))
        }
    }
}

/// A job that snapshots the model into a named checkpoint and answers `{"path", ...extra}`.
fn save_job(
    st: &Arc<AppState>,
    run: &TrainingRun,
    kind: CheckpointKind,
    name: String,
    expires_at: Option<SystemTime>,
    user_metadata: Option<Metadata>,
    result_type: &'static str,
) -> Box<dyn FnOnce(&mut ToyModel) -> Outcome + Send> {
    let st = Arc::downgrade(st);
    let run_id = run.id.clone();
    Box::new(move |m| {
        let snapshot = match kind {
            CheckpointKind::Weights => m.snapshot(),
            _ => m.sampler_snapshot(),
        };
        let bytes = snapshot.to_bytes();
        let size = bytes.len();
        let Some(st) = st.upgrade() else {
            return ModelError::server("server shutting down").into();
        };
        let record = st.store_checkpoint(CheckpointRecord {
            run_id,
            kind,
            name,
            created: SystemTime::now(),
            order: 0,
            snapshot: Arc::new(bytes),
            public: false,
            expires_at,
            user_metadata,
        });
        let mut reply = json!({"path": record.tinker_path(), "type": result_type});
        if kind == CheckpointKind::ExternalWeights {
            reply["size_bytes"] = json!(size);
        }
        Outcome::Json(reply)
    })
}

fn default_name(seq: Option<u64>) -> String {
    format!("checkpoint-{:06}", seq.unwrap_or(0))
}

/// `POST /api/v1/save_weights` (future → `{"path"}`); 409 when the name exists.
pub(crate) async fn save_weights(
    State(st): State<Arc<AppState>>,
    ctx: Ctx,
    JsonBody(req): JsonBody<SaveWeightsRequest>,
) -> ApiResult<Json<Value>> {
    let run = st.live_run(&req.model_id)?;
    let expires_at = ttl_deadline(req.ttl_seconds, "ttl_seconds")?;
    let name = req.path.clone().unwrap_or_else(|| default_name(req.seq_id));
    let metadata = req.user_metadata.as_ref().map(|m| {
        m.iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect()
    });
    let work = save_job(
        &st,
        &run,
        CheckpointKind::Weights,
        name.clone(),
        expires_at,
        metadata,
        "save_weights",
    );
    let reply = st.submit(
        &ctx,
        "save_weights",
        &run,
        req.seq_id,
        || reserve_name(&st, &run.id, CheckpointKind::Weights, &name, req.overwrite),
        work,
    )?;
    Ok(Json(reply))
}

/// `POST /api/v1/save_weights_for_sampler`: named → a sampler checkpoint; unnamed (with
/// `sampling_session_seq_id`) → a new sampling session on the current weights.
pub(crate) async fn save_weights_for_sampler(
    State(st): State<Arc<AppState>>,
    ctx: Ctx,
    JsonBody(req): JsonBody<SaveWeightsForSamplerRequest>,
) -> ApiResult<Json<Value>> {
    let run = st.live_run(&req.model_id)?;
    let path = "save_weights_for_sampler";
    match (&req.path, req.sampling_session_seq_id) {
        (Some(name), _) => {
            let expires_at = ttl_deadline(req.ttl_seconds, "ttl_seconds")?;
            let work = save_job(
                &st,
                &run,
                CheckpointKind::SamplerWeights,
                name.clone(),
                expires_at,
                req.user_metadata.clone(),
                "save_weights_for_sampler",
            );
            let reply = st.submit(
                &ctx,
                path,
                &run,
                req.seq_id,
                || reserve_name(&st, &run.id, CheckpointKind::SamplerWeights, name, false),
                work,
            )?;
            Ok(Json(reply))
        }
        (None, Some(n)) => {
            let sampler_id = format!("{}:sample:{n}", run.session_id);
            let weak = Arc::downgrade(&st);
            let (session_id, base_model) = (run.session_id.clone(), run.info.base_model.clone());
            let work: Box<dyn FnOnce(&mut ToyModel) -> Outcome + Send> = Box::new(move |m| {
                let model = match ToyModel::from_snapshot(&m.sampler_snapshot(), false) {
                    Ok(model) => model,
                    Err(e) => return e.into(),
                };
                let Some(st) = weak.upgrade() else {
                    return ModelError::server("server shutting down").into();
                };
                st.register_sampler(Sampler::new(
                    sampler_id.clone(),
                    session_id,
                    base_model,
                    None,
                    Arc::new(model),
                ));
                Outcome::Json(json!({"path": null, "sampling_session_id": sampler_id,
                                     "type": "save_weights_for_sampler"}))
            });
            Ok(Json(st.submit(
                &ctx,
                path,
                &run,
                req.seq_id,
                || Ok(()),
                work,
            )?))
        }
        (None, None) => Err(ApiError::bad_request(
            "give path (a named sampler checkpoint) or sampling_session_seq_id",
        )),
    }
}

/// `POST /api/v1/save_weights_external` (future → `{"path", "size_bytes"}`).
pub(crate) async fn save_weights_external(
    State(st): State<Arc<AppState>>,
    ctx: Ctx,
    JsonBody(req): JsonBody<SaveWeightsExternalRequest>,
) -> ApiResult<Json<Value>> {
    let run = st.live_run(&req.model_id)?;
    req.validate()?;
    let expires_at = ttl_deadline(req.ttl_seconds, "ttl_seconds")?;
    let work = save_job(
        &st,
        &run,
        CheckpointKind::ExternalWeights,
        req.path.clone(),
        expires_at,
        None,
        "save_weights_external",
    );
    let reply = st.submit(
        &ctx,
        "save_weights_external",
        &run,
        req.seq_id,
        || {
            reserve_name(
                &st,
                &run.id,
                CheckpointKind::ExternalWeights,
                &req.path,
                false,
            )
        },
        work,
    )?;
    Ok(Json(reply))
}

/// Reads a stored snapshot.
fn load_snapshot(st: &AppState, path: &str) -> Result<(CheckpointRecord, Snapshot), ModelError> {
    if st.recovery.is_unloadable(path) {
        return Err(ModelError::user(format!(
            "checkpoint {path} could not be loaded: its data is damaged"
        )));
    }
    let record = st.checkpoint_by_path(path).map_err(|e| {
        ModelError::user(
            e.detail
                .as_str()
                .unwrap_or("checkpoint not found")
                .to_owned(),
        )
    })?;
    let snapshot = Snapshot::from_bytes(&record.snapshot)?;
    st.audit_event("checkpoint_read", Some(&record.run_id), Some(path));
    Ok((record, snapshot))
}

/// `POST /api/v1/load_weights`: onto an existing model (`model_id` + `seq_id`), or creating one
/// from the checkpoint (`session_id` + `model_seq_id`).
pub(crate) async fn load_weights(
    State(st): State<Arc<AppState>>,
    ctx: Ctx,
    JsonBody(req): JsonBody<LoadWeightsRequest>,
) -> ApiResult<Json<Value>> {
    TinkerPath::parse(&req.path).map_err(|e| ApiError::bad_request(e.to_string()))?;
    if let Some(model_id) = &req.model_id {
        let run = st.live_run(model_id)?;
        let weak = Arc::downgrade(&st);
        let (path, optimizer, id) = (req.path.clone(), req.optimizer, run.id.clone());
        let work: Box<dyn FnOnce(&mut ToyModel) -> Outcome + Send> = Box::new(move |m| {
            let Some(st) = weak.upgrade() else {
                return ModelError::server("server shutting down").into();
            };
            let loaded =
                load_snapshot(&st, &path).and_then(|(_, snap)| m.restore(&snap, optimizer));
            match loaded {
                Ok(()) => {
                    Outcome::Json(json!({"path": path, "model_id": id, "type": "load_weights"}))
                }
                Err(e) => e.into(),
            }
        });
        return Ok(Json(st.submit(
            &ctx,
            "load_weights",
            &run,
            req.seq_id,
            || Ok(()),
            work,
        )?));
    }
    let (Some(session_id), Some(model_seq_id)) = (&req.session_id, req.model_seq_id) else {
        return Err(ApiError::bad_request(
            "give model_id + seq_id, or session_id + model_seq_id",
        ));
    };
    st.live_session(session_id)?;
    let kind = optimizer_kind(req.optimizer_config.as_ref())?;
    if let Some(reply) = st.replay(&ctx, "load_weights") {
        return Ok(Json(reply));
    }
    let model_id = format!("{session_id}:train:{model_seq_id}");
    let slot = match st.creations.entry(model_id.clone()) {
        Entry::Occupied(o) => return Ok(Json(o.get().clone())),
        Entry::Vacant(v) => {
            let slot = st.new_future(None, ctx.fault.clone());
            v.insert(future_reply(&slot, Some(&model_id)));
            slot
        }
    };
    let reply = future_reply(&slot, Some(&model_id));
    st.remember(&ctx, "load_weights", &reply);
    let st2 = st.clone();
    tokio::spawn(async move {
        let st3 = st2.clone();
        let req2 = req.clone();
        let built = st2
            .model_work(move || -> Result<(ToyModel, RunInfo), ModelError> {
                let (record, snap) = load_snapshot(&st3, &req2.path)?;
                if let Some(base) = &req2.base_model {
                    if base != snap.base_model() {
                        return Err(ModelError::user(format!(
                            "base_model {base:?} does not match the checkpoint's {:?}",
                            snap.base_model()
                        )));
                    }
                }
                let source = st3.runs.get(&record.run_id).map(|r| r.info.clone());
                let model = if req2.optimizer {
                    ToyModel::from_snapshot(&snap, true)?
                } else {
                    let spec = ModelSpec::new(snap.base_model(), snap.rank())
                        .with_vocab_size(snap.vocab_size())
                        .with_optimizer(kind);
                    let mut m = ToyModel::new(spec)?;
                    m.restore(&snap, false)?;
                    m
                };
                let info = RunInfo {
                    base_model: snap.base_model().to_owned(),
                    lora: source
                        .as_ref()
                        .map_or_else(|| LoraConfig::new(snap.rank() as u32), |s| s.lora),
                    optimizer: match (&req2.optimizer_config, req2.optimizer, &source) {
                        (Some(c), false, _) => c.clone(),
                        (_, _, Some(s)) => s.optimizer.clone(),
                        _ => OptimizerConfig::AdamW,
                    },
                };
                Ok((model, info))
            })
            .await;
        let outcome = match built {
            Ok(Ok((model, info))) => {
                st2.register_run(
                    model_id.clone(),
                    req.session_id.clone().unwrap_or_default(),
                    info,
                    req.user_metadata.clone(),
                    model,
                );
                Outcome::Json(
                    json!({"path": req.path, "model_id": model_id, "type": "load_weights"}),
                )
            }
            Ok(Err(e)) => e.into(),
            Err(e) => e.into(),
        };
        st2.complete(&slot, outcome);
    });
    Ok(Json(reply))
}

/// `POST /api/v1/unload_model` [0.25] (future → `{"model_id"}`).
pub(crate) async fn unload_model(
    State(st): State<Arc<AppState>>,
    ctx: Ctx,
    JsonBody(req): JsonBody<UnloadModelRequest>,
) -> ApiResult<Json<Value>> {
    let run = st.live_run(&req.model_id)?;
    run.unloaded.store(true, Ordering::Relaxed);
    let id = run.id.clone();
    let work: Box<dyn FnOnce(&mut ToyModel) -> Outcome + Send> =
        Box::new(move |_| Outcome::Json(json!({"model_id": id, "type": "unload_model"})));
    Ok(Json(st.submit(
        &ctx,
        "unload_model",
        &run,
        None,
        || Ok(()),
        work,
    )?))
}

/// `POST /api/v1/create_custom_loss` [0.38] (future → `{"loss_id"}`). The graph is checked
/// (a 400 names what is wrong) and stored for the session; `custom` forward_backwards run it
/// (see [`custom_loss`]).
pub(crate) async fn create_custom_loss(
    State(st): State<Arc<AppState>>,
    ctx: Ctx,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let req: CreateCustomLossRequest = parse_json(&body)?;
    st.live_session(&req.session_id)?;
    if let Some(reply) = st.replay(&ctx, "create_custom_loss") {
        return Ok(Json(reply));
    }
    let stored = custom_loss::accept(&req)?;
    let loss_id = format!("loss-{:04}", st.ids.loss.fetch_add(1, Ordering::Relaxed));
    st.custom_losses.insert(loss_id.clone(), stored);
    let slot = st.new_future(None, ctx.fault.clone());
    st.complete(
        &slot,
        Outcome::Json(json!({"loss_id": loss_id, "type": "create_custom_loss"})),
    );
    let reply = future_reply(&slot, None);
    st.remember(&ctx, "create_custom_loss", &reply);
    Ok(Json(reply))
}

/// `POST /api/v1/copy_weights` [0.38] (direct → `{"tinker_path"}`): copies a checkpoint under
/// `<name>-copy-<n>` in the same run (or the run named by `session_id` + `model_seq_id`).
pub(crate) async fn copy_weights(
    State(st): State<Arc<AppState>>,
    ctx: Ctx,
    body: Bytes,
) -> ApiResult<Response> {
    if let Some(reply) = st.replay(&ctx, "copy_weights") {
        return Ok(Json(reply).into_response());
    }
    let req: Value = parse_json(&body)?;
    let source = req
        .get("source_path")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::unprocessable(&["body", "source_path"], "Field required"))?;
    let mut record = st.checkpoint_by_path(source)?;
    if let (Some(s), Some(n)) = (
        req.get("session_id").and_then(Value::as_str),
        req.get("model_seq_id").and_then(Value::as_u64),
    ) {
        record.run_id = format!("{s}:train:{n}");
    }
    let n = st.ids.checkpoint.load(Ordering::Relaxed);
    record.name = format!("{}-copy-{n}", record.name);
    record.public = false;
    record.created = SystemTime::now();
    record.expires_at = ttl_deadline(
        req.get("ttl_seconds").and_then(Value::as_u64),
        "ttl_seconds",
    )?;
    let stored = st.store_checkpoint(record);
    let reply = json!({"tinker_path": stored.tinker_path()});
    st.remember(&ctx, "copy_weights", &reply);
    Ok(Json(reply).into_response())
}

impl Sampler {
    pub fn new(
        id: String,
        session_id: String,
        base_model: String,
        model_path: Option<String>,
        model: Arc<ToyModel>,
    ) -> Sampler {
        Sampler {
            id,
            session_id,
            base_model,
            model_path,
            model,
            next_client: AtomicU64::new(1),
            seqs: DashMap::new(),
        }
    }
}

impl AppState {
    /// Registers (or replaces) a sampling session.
    pub fn register_sampler(&self, sampler: Sampler) -> Arc<Sampler> {
        let sampler = Arc::new(sampler);
        let fresh = self
            .samplers
            .insert(sampler.id.clone(), sampler.clone())
            .is_none();
        if fresh {
            if let Some(s) = self.sessions.get(&sampler.session_id) {
                lock(&s.samplers).push(sampler.id.clone());
            }
        }
        sampler
    }
}
