//! Everything the server knows: sessions, training runs, samplers, futures, checkpoints.
//!
//! Maps are `DashMap`s (sharded locks held only for a lookup or insert); per-entity state has its
//! own small mutex. No lock is ever held across model work or an `.await`.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use dashmap::DashMap;
use serde_json::Value;
use tinker_core::path::{CheckpointKind, TinkerPath};
use tinker_core::types::{
    AuditLogEntry, Checkpoint, CheckpointType, ClientConfig, DynamicConfig, FinishReason,
    LoraConfig, Metadata, OptimizerConfig, Timestamp,
};
use tokio::sync::Semaphore;

use super::auth::AuthState;
use super::config::LocalServerConfig;
use super::error::ApiError;
use super::faults::FaultSchedule;
use super::futures::{CompletionLog, FutureSlot};
use super::recording::Recorder;
use super::training::TrainingRun;
use crate::model::ToyModel;

/// Locks a mutex, recovering from poisoning (a panicked model job must not wedge the server).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Wall-clock seconds since the Unix epoch.
pub(crate) fn unix_secs(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// `t` as an ISO-8601 timestamp.
pub(crate) fn timestamp(t: SystemTime) -> Timestamp {
    Timestamp::from_unix_seconds(unix_secs(t))
}

/// How many requests of one endpoint are being handled now, and the most ever at once.
#[derive(Debug, Default)]
pub(crate) struct EndpointLoad {
    in_flight: AtomicUsize,
    peak: AtomicUsize,
}

/// Holds one request's place in its endpoint's in-flight count until dropped.
pub(crate) struct InFlight(Arc<EndpointLoad>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A client session.
#[derive(Debug)]
pub(crate) struct Session {
    pub id: String,
    pub created: SystemTime,
    pub user_metadata: Metadata,
    pub display_name: Option<String>,
    pub project_id: Mutex<Option<String>>,
    pub last_heartbeat: Mutex<Instant>,
    pub finished: Mutex<Option<(FinishReason, Option<String>)>>,
    pub runs: Mutex<Vec<String>>,
    pub samplers: Mutex<Vec<String>>,
}

/// A sampling session: fixed weights to sample from.
#[derive(Debug)]
pub(crate) struct Sampler {
    pub id: String,
    pub session_id: String,
    pub base_model: String,
    pub model_path: Option<String>,
    pub model: Arc<ToyModel>,
    /// Next `client_counter` for `join_sampling_session` (the original client is 0).
    pub next_client: AtomicU64,
    /// seq_id → the future reply first given for it (duplicate submissions get it again).
    pub seqs: DashMap<u64, Value>,
}

/// A stored checkpoint.
#[derive(Debug, Clone)]
pub(crate) struct CheckpointRecord {
    pub run_id: String,
    pub kind: CheckpointKind,
    pub name: String,
    pub created: SystemTime,
    /// Creation order (timestamps have one-second resolution).
    pub order: u64,
    pub snapshot: Arc<Vec<u8>>,
    pub public: bool,
    pub expires_at: Option<SystemTime>,
    pub user_metadata: Option<Metadata>,
}

impl CheckpointRecord {
    pub fn checkpoint_id(&self) -> String {
        format!("{}/{}", self.kind.segment(), self.name)
    }

    pub fn tinker_path(&self) -> String {
        TinkerPath::new(self.run_id.clone(), self.kind, self.name.clone())
            .map(|p| p.to_string())
            .unwrap_or_else(|_| format!("tinker://{}/{}", self.run_id, self.checkpoint_id()))
    }

    pub fn expired(&self, now: SystemTime) -> bool {
        self.expires_at.is_some_and(|e| e <= now)
    }

    pub fn to_wire(&self) -> Checkpoint {
        Checkpoint {
            checkpoint_id: self.checkpoint_id(),
            checkpoint_type: match self.kind {
                CheckpointKind::Weights => CheckpointType::Training,
                CheckpointKind::SamplerWeights => CheckpointType::Sampler,
                CheckpointKind::ExternalWeights => CheckpointType::External,
            },
            time: timestamp(self.created),
            tinker_path: self.tinker_path(),
            size_bytes: Some(self.snapshot.len() as u64),
            public: self.public,
            user_metadata: self.user_metadata.clone(),
            expires_at: self.expires_at.map(timestamp),
        }
    }
}

/// A downloadable file behind `/_files/{token}/{name}` (external weights, archives, traces).
#[derive(Debug, Clone)]
pub(crate) struct FileEntry {
    pub files: BTreeMap<String, Arc<Vec<u8>>>,
}

/// A usage record for billing.
#[derive(Debug, Clone)]
pub(crate) struct UsageRecord {
    pub time: SystemTime,
    pub session_id: String,
    pub base_model: String,
    pub info: Value,
}

/// Id counters.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub session: AtomicU64,
    pub request: AtomicU64,
    pub sequence: AtomicU64,
    pub loss: AtomicU64,
    pub file: AtomicU64,
    pub checkpoint: AtomicU64,
    pub sample: AtomicU64,
}

/// The whole server state.
#[derive(Debug)]
pub(crate) struct AppState {
    pub cfg: LocalServerConfig,
    pub flags: RwLock<(ClientConfig, DynamicConfig)>,
    pub base_url: OnceLock<String>,
    pub ids: Counters,
    pub auth: AuthState,
    pub sessions: DashMap<String, Arc<Session>>,
    pub runs: DashMap<String, Arc<TrainingRun>>,
    /// model id → the future reply of the create_model / create-via-load that makes it.
    pub creations: DashMap<String, Value>,
    pub samplers: DashMap<String, Arc<Sampler>>,
    pub futures: DashMap<String, Arc<FutureSlot>>,
    /// X-Idempotency-Key → (path, the reply first given).
    pub idempotency: DashMap<String, (String, Value)>,
    pub checkpoints: Mutex<BTreeMap<(String, String), CheckpointRecord>>,
    /// Names reserved by accepted, not yet executed saves: (run, checkpoint id).
    pub reserved: Mutex<HashSet<(String, String)>>,
    pub completions: DashMap<String, Arc<CompletionLog>>,
    pub audit: Mutex<Vec<AuditLogEntry>>,
    pub usage: Mutex<Vec<UsageRecord>>,
    pub files: DashMap<String, FileEntry>,
    pub archives: DashMap<String, Instant>,
    pub custom_losses: DashMap<String, super::custom_loss::StoredLoss>,
    pub base_models: DashMap<String, Arc<ToyModel>>,
    pub faults: FaultSchedule,
    pub recorder: Recorder,
    pub model_permits: Semaphore,
    /// Runs reported corrupted and checkpoints that fail to load (`/_admin/`, recovery tests).
    pub recovery: super::admin_recovery::RecoveryFaults,
    /// Requests in flight per endpoint (from arrival to reply), with their peak.
    pub load: DashMap<String, Arc<EndpointLoad>>,
}

impl AppState {
    pub fn new(cfg: LocalServerConfig) -> std::io::Result<AppState> {
        let workers = if cfg.model_workers == 0 {
            std::thread::available_parallelism().map_or(2, |n| n.get())
        } else {
            cfg.model_workers
        };
        Ok(AppState {
            flags: RwLock::new((cfg.client_config.clone(), cfg.dynamic_config.clone())),
            base_url: OnceLock::new(),
            ids: Counters::default(),
            auth: AuthState::default(),
            sessions: DashMap::new(),
            runs: DashMap::new(),
            creations: DashMap::new(),
            samplers: DashMap::new(),
            futures: DashMap::new(),
            idempotency: DashMap::new(),
            checkpoints: Mutex::new(BTreeMap::new()),
            reserved: Mutex::new(HashSet::new()),
            completions: DashMap::new(),
            audit: Mutex::new(Vec::new()),
            usage: Mutex::new(Vec::new()),
            files: DashMap::new(),
            archives: DashMap::new(),
            custom_losses: DashMap::new(),
            base_models: DashMap::new(),
            faults: FaultSchedule::new(cfg.faults.clone(), cfg.seed),
            recorder: Recorder::new(cfg.record_limit, cfg.record_path.as_deref())?,
            model_permits: Semaphore::new(workers.max(1)),
            recovery: Default::default(),
            load: DashMap::new(),
            cfg,
        })
    }

    /// Counts a request of `endpoint` as in flight until the returned guard is dropped.
    pub(crate) fn enter(&self, endpoint: &str) -> InFlight {
        let load = self.load.entry(endpoint.to_owned()).or_default().clone();
        let now = load.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        load.peak.fetch_max(now, Ordering::SeqCst);
        InFlight(load)
    }

    /// Every endpoint seen so far: `(endpoint, requests in flight now, peak)`.
    pub fn in_flight_table(&self) -> Vec<(String, usize, usize)> {
        let mut rows: Vec<_> = self
            .load
            .iter()
            .map(|e| {
                let l = e.value();
                (
                    e.key().clone(),
                    l.in_flight.load(Ordering::SeqCst),
                    l.peak.load(Ordering::SeqCst),
                )
            })
            .collect();
        rows.sort();
        rows
    }

    /// Lowers every endpoint's peak to its current count, so the next peak measures a new phase.
    pub fn reset_in_flight_peaks(&self) {
        for e in self.load.iter() {
            e.value()
                .peak
                .store(e.value().in_flight.load(Ordering::SeqCst), Ordering::SeqCst);
        }
    }

    /// The most requests of `endpoint` ever handled at once.
    pub fn peak_in_flight(&self, endpoint: &str) -> usize {
        self.load
            .get(endpoint)
            .map_or(0, |l| l.peak.load(Ordering::SeqCst))
    }

    /// How many requests of `endpoint` the training run `model_id` has executed.
    pub fn executed(&self, model_id: &str, endpoint: &str) -> u64 {
        self.runs
            .get(model_id)
            .and_then(|r| r.executed_by_endpoint.get(endpoint).map(|n| *n))
            .unwrap_or(0)
    }

    pub fn client_config(&self) -> ClientConfig {
        self.flags
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .0
            .clone()
    }

    pub fn dynamic_config(&self) -> DynamicConfig {
        self.flags
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .1
            .clone()
    }

    pub fn base_url(&self) -> &str {
        self.base_url
            .get()
            .map_or("http://127.0.0.1", |s| s.as_str())
    }

    pub fn next_request_id(&self) -> String {
        format!(
            "req-{:04}",
            self.ids.request.fetch_add(1, Ordering::Relaxed)
        )
    }

    /// A live session, or the reason it cannot be used.
    pub fn live_session(&self, id: &str) -> Result<Arc<Session>, ApiError> {
        let s = self
            .sessions
            .get(id)
            .map(|s| s.clone())
            .ok_or_else(|| ApiError::not_found(format!("session {id} not found")))?;
        if let Some((reason, _)) = *lock(&s.finished) {
            return Err(ApiError::gone(format!(
                "session {id} has finished ({})",
                reason.name()
            )));
        }
        if let Some(idle) = self.session_idle_too_long(&s) {
            return Err(ApiError::gone(format!(
                "session {id} expired: no heartbeat for {:.1} s (timeout {:.1} s)",
                idle.as_secs_f64(),
                self.cfg.session_timeout().unwrap_or_default().as_secs_f64()
            )));
        }
        Ok(s)
    }

    /// How long the session has been silent, when that exceeds the timeout.
    pub fn session_idle_too_long(&self, s: &Session) -> Option<Duration> {
        let timeout = self.cfg.session_timeout()?;
        let idle = lock(&s.last_heartbeat).elapsed();
        (idle > timeout).then_some(idle)
    }

    /// A training run whose session is live.
    pub fn live_run(&self, model_id: &str) -> Result<Arc<TrainingRun>, ApiError> {
        let run = self
            .runs
            .get(model_id)
            .map(|r| r.clone())
            .ok_or_else(|| ApiError::not_found(format!("model {model_id} not found")))?;
        self.live_session(&run.session_id)?;
        Ok(run)
    }

    /// A sampler whose session is live.
    pub fn live_sampler(&self, id: &str) -> Result<Arc<Sampler>, ApiError> {
        let s = self
            .samplers
            .get(id)
            .map(|s| s.clone())
            .ok_or_else(|| ApiError::not_found(format!("sampling session {id} not found")))?;
        self.live_session(&s.session_id)?;
        Ok(s)
    }

    /// Looks up a checkpoint by `tinker://` path (404 when missing or expired).
    pub fn checkpoint_by_path(&self, path: &str) -> Result<CheckpointRecord, ApiError> {
        let p = TinkerPath::parse(path).map_err(|e| ApiError::bad_request(e.to_string()))?;
        self.checkpoint(p.training_run_id(), &p.checkpoint_id())
    }

    /// Looks up a checkpoint by run and checkpoint id (404 when missing or expired).
    pub fn checkpoint(&self, run: &str, checkpoint_id: &str) -> Result<CheckpointRecord, ApiError> {
        let g = lock(&self.checkpoints);
        match g.get(&(run.to_owned(), checkpoint_id.to_owned())) {
            Some(c) if !c.expired(SystemTime::now()) => Ok(c.clone()),
            _ => Err(ApiError::not_found(format!(
                "checkpoint tinker://{run}/{checkpoint_id} not found"
            ))),
        }
    }

    /// Stores a checkpoint (replacing one of the same name) and releases its reservation.
    pub fn store_checkpoint(&self, mut record: CheckpointRecord) -> CheckpointRecord {
        record.order = self.ids.checkpoint.fetch_add(1, Ordering::Relaxed);
        let key = (record.run_id.clone(), record.checkpoint_id());
        lock(&self.reserved).remove(&key);
        lock(&self.checkpoints).insert(key, record.clone());
        self.audit_event(
            "checkpoint_created",
            Some(&record.run_id),
            Some(&record.tinker_path()),
        );
        if let Some(run) = self.runs.get(&record.run_id) {
            run.touch();
        }
        record
    }

    pub fn audit_event(&self, event: &str, model_id: Option<&str>, tinker_path: Option<&str>) {
        let entry = AuditLogEntry {
            timestamp: timestamp(SystemTime::now()),
            event: event.to_owned(),
            event_details: None,
            model_id: model_id.map(str::to_owned),
            tinker_path: tinker_path.map(str::to_owned),
            purpose: None,
        };
        lock(&self.audit).push(entry);
    }

    pub fn record_usage(&self, session_id: &str, base_model: &str, info: Value) {
        lock(&self.usage).push(UsageRecord {
            time: SystemTime::now(),
            session_id: session_id.to_owned(),
            base_model: base_model.to_owned(),
            info,
        });
    }

    /// Registers files for download and returns their URLs.
    pub fn publish_files(&self, files: BTreeMap<String, Arc<Vec<u8>>>) -> BTreeMap<String, String> {
        let token = format!(
            "f{:06}x{:08x}",
            self.ids.file.fetch_add(1, Ordering::Relaxed),
            crate::model::hash_name(&format!("{}{:?}", self.cfg.seed, Instant::now())) as u32
        );
        let urls = files
            .keys()
            .map(|name| {
                (
                    name.clone(),
                    format!("{}/_files/{token}/{name}", self.base_url()),
                )
            })
            .collect();
        self.files.insert(token, FileEntry { files });
        urls
    }

    /// The toy model of a base model (rank 0), shared by every sampler of that base model.
    pub fn base_model(&self, name: &str) -> Result<Arc<ToyModel>, ApiError> {
        if let Some(m) = self.base_models.get(name) {
            return Ok(m.clone());
        }
        let spec = crate::model::ModelSpec::new(name, 0).with_vocab_size(self.cfg.vocab_size);
        let model = Arc::new(ToyModel::new(spec).map_err(|e| ApiError::bad_request(e.message))?);
        self.base_models.insert(name.to_owned(), model.clone());
        Ok(model)
    }

    /// Checks a base model is served and may be used for `purpose` ("training" / "sampling").
    pub fn check_base_model(&self, name: &str, training: bool) -> Result<(), ApiError> {
        let m = self.cfg.model(name).ok_or_else(|| {
            ApiError::bad_request(format!(
                "base model {name:?} is not served here; see get_server_capabilities"
            ))
        })?;
        if training && m.trainable == Some(false) {
            return Err(ApiError::bad_request(format!(
                "base model {name:?} cannot be trained (sampling only)"
            )));
        }
        Ok(())
    }
}

/// What `weights_info` and `get_info` say about a run's adapter.
#[derive(Debug, Clone)]
pub(crate) struct RunInfo {
    pub base_model: String,
    pub lora: LoraConfig,
    pub optimizer: OptimizerConfig,
}
