//! `ServiceClient`: the entry point. Owns the session (started lazily), the shared ledger and the
//! background housekeeper, and creates the other clients.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Instant, SystemTime};

use futures_util::lock::Mutex as AsyncMutex;

use super::exec::{CallSite, Exec};
use super::housekeeping::{Housekeeping, TelemetryInbox};
use super::instrumented_http::instrument;
use super::options::ClientOptions;
use super::rest::RestClient;
use super::sampling::SamplingClient;
use super::training::TrainingClient;
use crate::endpoints::{
    FinishSession, GetClientConfig, GetDynamicConfig, GetSampler, GetServerCapabilities, Platform,
    RequestContext,
};
use crate::error::{Error, ErrorKind, Result};
use crate::io::{AsyncHttp, AsyncRuntime};
use crate::ledger::{Ledger, SharedLedger};
use crate::losses::server_side::{CustomLossHandle, ServerLoss};
use crate::metrics::Metrics;
use crate::retry::ClientKind;
use crate::settings::Settings;
use crate::types::{
    ClientConfig, CreateCustomLossResponse, CreateModelRequest, CreateSamplingSessionRequest,
    CreateSessionRequest, DynamicConfig, FinishReason, GetInfoRequest, LoadWeightsRequest,
    LoadWeightsResponse, LoraConfig, Metadata, ServerCapabilities,
};

/// What a runtime crate hands the client layer: its HTTP stack, its timers and spawner, and the
/// wall clock read once (the core reads no clock itself).
#[derive(Clone)]
pub struct ClientIo {
    /// The HTTP stack.
    pub http: Arc<dyn AsyncHttp>,
    /// Timers, clock and spawning.
    pub runtime: Arc<dyn AsyncRuntime>,
    /// An instant and the wall-clock time at that instant, read together (for telemetry
    /// timestamps and HTTP-date `Retry-After` values).
    pub wall_clock: (Instant, SystemTime),
    /// The platform reported in the `X-Stainless-*` headers (its async label names the runtime).
    pub platform: Platform,
}

impl std::fmt::Debug for ClientIo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientIo")
            .field("platform", &self.platform)
            .finish_non_exhaustive()
    }
}

/// The PRNG seed when neither the user nor the runtime crate chose one.
const DEFAULT_SEED: u64 = 0x7469_6e6b_6572_2d72;

/// The server's configuration has been fetched (once per service client).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Holder;

/// The session, created on first use.
#[derive(Debug, Clone)]
pub(crate) struct Session {
    pub(crate) id: String,
}

#[derive(Debug, Clone)]
enum Lifecycle {
    Open,
    Closed(String),
}

/// State shared by a service client and every client it created.
pub(crate) struct Shared {
    pub(crate) exec: Exec,
    /// Request counters and latencies (empty forever when `metrics_enabled` is off).
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) settings: Settings,
    pub(crate) options: ClientOptions,
    startup: AsyncMutex<()>,
    holder: OnceLock<Holder>,
    session: OnceLock<Session>,
    lifecycle: Mutex<Lifecycle>,
    housekeeping: Mutex<Option<Housekeeping>>,
    /// Custom losses created in the session, by [`ServerLoss::key`]: each is created once.
    custom_losses: AsyncMutex<BTreeMap<String, CustomLossHandle>>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        // No async drop: tell the housekeeper to flush what it can and stop. Never blocks.
        if let Some(h) = self
            .housekeeping
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            h.stop(self.exec.runtime.now() + self.options.close_flush_timeout);
        }
    }
}

impl Shared {
    pub(crate) fn check_open(&self) -> Result<()> {
        match &*self.lifecycle.lock().unwrap_or_else(|p| p.into_inner()) {
            Lifecycle::Open => {}
            Lifecycle::Closed(why) => return Err(Error::Closed(why.clone())),
        }
        if let Some(h) = &*self.housekeeping.lock().unwrap_or_else(|p| p.into_inner()) {
            if let Some(why) = h.session_gone() {
                return Err(Error::Closed(why));
            }
        }
        Ok(())
    }

    /// `client/config` → [`auth/token`] → `client/dynamic_config`, once (protocol.md 4.2).
    pub(crate) async fn holder(&self) -> Result<Holder> {
        self.check_open()?;
        if let Some(h) = self.holder.get() {
            return Ok(*h);
        }
        let _startup = self.startup.lock().await;
        if let Some(h) = self.holder.get() {
            return Ok(*h);
        }
        let version = self.settings.sdk_version.clone();
        let exec = &self.exec;
        // Each start-up request is bounded like any other call: with a default deadline an
        // unreachable server fails within it instead of after the retry policy's minutes.
        let startup_site = || CallSite::new("ServiceClient.startup", self.options.default_deadline);
        let config: ClientConfig = exec
            .direct(GetClientConfig::new(version.clone()), startup_site())
            .await?;
        if config.pjwt_auth_enabled {
            // From now on the ledger keeps the token fresh: the housekeeper refreshes it at
            // half-life, and a request whose token is rejected exchanges and replays once.
            let site = startup_site();
            let op = exec.start(&site, |ledger, opts| {
                ledger.enable_jwt();
                crate::ops::exchange_token(ledger, opts)
            })?;
            let result = exec.run(op, site).await;
            let now = exec.runtime.now();
            let mut ledger = exec.ledger.lock();
            match result {
                Ok(token) => ledger.install_jwt(token.jwt, now)?,
                Err(e) => {
                    if let Some(jwt) = ledger.jwt_mut() {
                        jwt.on_exchange_failed(now, e.status() == Some(401));
                    }
                    return Err(e);
                }
            }
        }
        let dynamic = match exec
            .direct(GetDynamicConfig::new(version), startup_site())
            .await
        {
            Ok(d) => d,
            // A server that predates the endpoint: use the defaults.
            Err(e) if e.kind() == ErrorKind::NotFound => DynamicConfig::default(),
            Err(e) => return Err(e),
        };
        {
            let mut ledger = exec.ledger.lock();
            ledger.set_client_config(config);
            ledger.set_dynamic_config(dynamic);
        }
        let _ = self.holder.set(Holder);
        Ok(Holder)
    }

    /// The session, created on first use; starts the housekeeper.
    pub(crate) async fn session(&self) -> Result<Session> {
        self.holder().await?;
        if let Some(s) = self.session.get() {
            return Ok(s.clone());
        }
        let _startup = self.startup.lock().await;
        if let Some(s) = self.session.get() {
            return Ok(s.clone());
        }
        let mut request = CreateSessionRequest::new(self.settings.sdk_version.clone());
        request.tags = self.settings.tags.clone();
        request.project_id = self.settings.project_id.clone();
        request.user_metadata = self.options.session_metadata.clone();
        request.display_name = self.options.display_name.clone();
        let reply = self
            .exec
            .direct(request, CallSite::new("ServiceClient.create_session", None))
            .await?;
        for (level, message) in [
            (tracing::Level::INFO, &reply.info_message),
            (tracing::Level::WARN, &reply.warning_message),
            (tracing::Level::ERROR, &reply.error_message),
        ] {
            if let Some(m) = message {
                match level {
                    tracing::Level::INFO => tracing::info!("{m}"),
                    tracing::Level::WARN => tracing::warn!("{m}"),
                    _ => tracing::error!("{m}"),
                }
            }
        }
        let session = Session {
            id: reply.session_id,
        };
        let refresh = self.exec.ledger.lock().dynamic_config().refresh_period();
        let housekeeping = Housekeeping::start(self, &session.id, refresh);
        *self.housekeeping.lock().unwrap_or_else(|p| p.into_inner()) = Some(housekeeping);
        let _ = self.session.set(session.clone());
        Ok(session)
    }

    /// The session id, if the session has been started.
    pub(crate) fn started_session_id(&self) -> Option<&str> {
        self.session.get().map(|s| s.id.as_str())
    }

    fn take_housekeeping(&self) -> Option<Housekeeping> {
        self.housekeeping
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }
}

/// The entry point of the SDK: creates training, sampling and REST clients over one session.
///
/// Constructing it sends nothing. The first call that needs a session performs the startup
/// sequence (`client/config`, [`auth/token`], `client/dynamic_config`, `create_session`) and
/// starts one background housekeeper (heartbeats every 10 s, config refresh, telemetry flushes).
/// [`ServiceClient::close`] ends the session; dropping the last clone stops the housekeeper
/// without blocking.
///
/// Users reach it through a runtime crate, which supplies the I/O (`tinker_tokio::connect`,
/// `tinker_async_std::connect`, or the blocking wrapper in `tinker_blocking`). The same
/// `ServiceClient` type is re-exported by both async runtime crates.
///
/// Clones share everything; it is `Send + Sync`.
#[derive(Clone)]
pub struct ServiceClient {
    pub(crate) shared: Arc<Shared>,
}

impl std::fmt::Debug for ServiceClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceClient")
            .field("base_url", &self.shared.settings.base_url)
            .field("session_id", &self.shared.session.get().map(|s| &s.id))
            .finish_non_exhaustive()
    }
}

impl ServiceClient {
    /// A client for `settings` (an API key is required) doing its I/O through `io`. Nothing is
    /// sent until the first call. Runtime crates call this; users call their `connect`.
    pub fn new(settings: Settings, io: ClientIo, options: ClientOptions) -> Result<ServiceClient> {
        let context = RequestContext::from_settings(&settings)?.with_platform(io.platform.clone());
        let mut ledger = Ledger::new(context, options.seed.unwrap_or(DEFAULT_SEED));
        ledger.set_wall_clock(io.wall_clock.0, io.wall_clock.1);
        let metrics = options.metrics_enabled.then(|| Arc::new(Metrics::new()));
        let http = instrument(
            io.http,
            io.runtime.clone(),
            metrics.clone(),
            options.header_injector.clone(),
        );
        let exec = Exec {
            http,
            runtime: io.runtime,
            ledger: SharedLedger::new(ledger),
            observer: options.queue_state_observer.clone(),
            telemetry: Arc::new(TelemetryInbox::new(settings.telemetry_enabled)),
        };
        Ok(ServiceClient {
            shared: Arc::new(Shared {
                exec,
                metrics: metrics.unwrap_or_default(),
                settings,
                options,
                startup: AsyncMutex::new(()),
                holder: OnceLock::new(),
                session: OnceLock::new(),
                lifecycle: Mutex::new(Lifecycle::Open),
                housekeeping: Mutex::new(None),
                custom_losses: AsyncMutex::new(BTreeMap::new()),
            }),
        })
    }

    /// The settings in use.
    pub fn settings(&self) -> &Settings {
        &self.shared.settings
    }

    /// The options in use.
    pub fn options(&self) -> &ClientOptions {
        &self.shared.options
    }

    /// Request counters and latency histograms per endpoint of this client and every client it
    /// created (empty when [`ClientOptions::metrics_enabled`] is off).
    ///
    /// ```no_run
    /// # fn demo(service: tinker_core::client::ServiceClient) {
    /// let snapshot = service.metrics().snapshot();
    /// if let Some(fb) = snapshot.endpoints.get("forward_backward") {
    ///     println!("{} forward_backward, p99 {:?} ms", fb.total, fb.latency.p99_ms);
    /// }
    /// # }
    /// ```
    pub fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    /// The session id, starting the session if needed.
    pub async fn session_id(&self) -> Result<String> {
        Ok(self.shared.session().await?.id)
    }

    /// Creates a LoRA training run on `base_model` (`create_model`, wait for it, `get_info`).
    ///
    /// ```no_run
    /// # async fn demo(service: tinker_core::client::ServiceClient) -> tinker_core::Result<()> {
    /// use tinker_core::types::LoraConfig;
    /// let training = service
    ///     .create_lora_training_client("Qwen/Qwen3-8B", LoraConfig::new(32))
    ///     .await?;
    /// println!("training run {}", training.model_id());
    /// # Ok(()) }
    /// ```
    pub async fn create_lora_training_client(
        &self,
        base_model: &str,
        lora: LoraConfig,
    ) -> Result<TrainingClient> {
        lora.validate()?;
        if base_model.trim().is_empty() {
            return Err(Error::invalid("base_model", "must not be empty"));
        }
        let session = self.shared.session().await?;
        let site = self.site("ServiceClient.create_lora_training_client");
        let exec = &self.shared.exec;
        let base = base_model.to_owned();
        let session_id = session.id.clone();
        let op = exec.start(&site, |ledger, opts| {
            crate::ops::create_model(
                ledger,
                |seq| CreateModelRequest::new(session_id, seq, base, lora),
                opts,
            )
        })?;
        let created = exec.run(op, site).await?;
        self.training_client_for(created.model_id).await
    }

    /// Creates a training run from a `tinker://` state checkpoint, weights only: the optimizer
    /// starts fresh (a new stage of training).
    pub async fn create_training_client_from_state(&self, path: &str) -> Result<TrainingClient> {
        self.training_from_state(
            path,
            false,
            None,
            "ServiceClient.create_training_client_from_state",
        )
        .await
    }

    /// [`ServiceClient::create_training_client_from_state`] with `user_metadata` on the new run
    /// (the CLI's download marks its temporary run `{"created_by": "tinker checkpoint download"}`).
    pub async fn create_training_client_from_state_with_metadata(
        &self,
        path: &str,
        user_metadata: Metadata,
    ) -> Result<TrainingClient> {
        self.training_from_state(
            path,
            false,
            Some(user_metadata),
            "ServiceClient.create_training_client_from_state",
        )
        .await
    }

    /// Creates a training run from a `tinker://` state checkpoint with its optimizer state, to
    /// resume an interrupted run exactly.
    pub async fn create_training_client_from_state_with_optimizer(
        &self,
        path: &str,
    ) -> Result<TrainingClient> {
        self.training_from_state(
            path,
            true,
            None,
            "ServiceClient.create_training_client_from_state_with_optimizer",
        )
        .await
    }

    async fn training_from_state(
        &self,
        path: &str,
        optimizer: bool,
        user_metadata: Option<Metadata>,
        method: &'static str,
    ) -> Result<TrainingClient> {
        let session = self.shared.session().await?;
        let site = self.site(method);
        let exec = &self.shared.exec;
        let mut model_id = String::new();
        let op = exec.start(&site, |ledger, opts| {
            let seq = ledger.next_model_seq_id();
            let mut request =
                LoadWeightsRequest::create_via_load(&session.id, seq, path, optimizer);
            request.user_metadata = user_metadata;
            model_id = request.created_model_id().unwrap_or_default();
            crate::ops::future::<_, LoadWeightsResponse>(ledger, request, opts)
        })?;
        let loaded = exec.run(op, site).await?;
        self.training_client_for(loaded.model_id.unwrap_or(model_id))
            .await
    }

    async fn training_client_for(&self, model_id: String) -> Result<TrainingClient> {
        let info = self
            .shared
            .exec
            .direct(
                GetInfoRequest::new(model_id.clone()),
                self.site("TrainingClient.get_info")
                    .for_client(ClientKind::Training, model_id.clone()),
            )
            .await?;
        Ok(TrainingClient::new(self.shared.clone(), model_id, info))
    }

    /// A sampling client for the weights at `model_path` (a `tinker://…/sampler_weights/…`
    /// path): `create_sampling_session`, then `samplers/{id}` to learn the base model.
    pub async fn create_sampling_client(&self, model_path: &str) -> Result<SamplingClient> {
        self.sampling_client(
            CreateSamplingSource::ModelPath(model_path.to_owned()),
            "ServiceClient.create_sampling_client",
        )
        .await
    }

    /// A sampling client for the untrained `base_model`.
    pub async fn create_base_model_sampling_client(
        &self,
        base_model: &str,
    ) -> Result<SamplingClient> {
        self.sampling_client(
            CreateSamplingSource::BaseModel(base_model.to_owned()),
            "ServiceClient.create_sampling_client",
        )
        .await
    }

    pub(crate) async fn sampling_client(
        &self,
        source: CreateSamplingSource,
        method: &'static str,
    ) -> Result<SamplingClient> {
        let session = self.shared.session().await?;
        let site = self.site(method);
        let exec = &self.shared.exec;
        let op = exec.start(&site, |ledger, opts| {
            let seq = ledger.next_sampling_session_seq_id();
            let request = match &source {
                CreateSamplingSource::ModelPath(p) => {
                    CreateSamplingSessionRequest::for_model_path(&session.id, seq, p)
                }
                CreateSamplingSource::BaseModel(b) => {
                    CreateSamplingSessionRequest::for_base_model(&session.id, seq, b)
                }
            };
            crate::ops::direct(ledger, request, opts)
        })?;
        let created = exec.run(op, site).await?;
        let (base_model, model_path) = match source {
            CreateSamplingSource::BaseModel(b) => (b, None),
            CreateSamplingSource::ModelPath(p) => {
                let info = exec
                    .direct(
                        GetSampler {
                            sampler_id: created.sampling_session_id.clone(),
                        },
                        self.site("SamplingClient.get_base_model"),
                    )
                    .await?;
                (info.base_model, Some(p))
            }
        };
        Ok(SamplingClient::new(
            self.shared.clone(),
            created.sampling_session_id,
            base_model,
            model_path,
        ))
    }

    /// The models this deployment serves (`get_server_capabilities`; no session needed).
    pub async fn get_server_capabilities(&self) -> Result<ServerCapabilities> {
        self.shared.holder().await?;
        self.shared
            .exec
            .direct(
                GetServerCapabilities,
                self.site("ServiceClient.get_server_capabilities"),
            )
            .await
    }

    /// Creates a custom loss for this session (protocol.md 11.4). When the server's client
    /// config enables `custom_loss_server_side`, the graph is uploaded (`create_custom_loss`,
    /// with the session's next `custom_loss_seq_id`) and the handle carries the server's
    /// `loss_id`; otherwise nothing is sent and the handle runs the loss on the client (11.3).
    /// Creating the same definition (graph and inputs) again returns the first handle without a
    /// call. Train with it through `TrainingClient::forward_backward_custom_loss`.
    ///
    /// ```no_run
    /// # async fn demo(service: tinker_core::client::ServiceClient,
    /// #               training: tinker_core::client::TrainingClient,
    /// #               batch: Vec<tinker_core::types::Datum>) -> tinker_core::Result<()> {
    /// use tinker_core::losses::server_side::ServerLossBuilder;
    /// let b = ServerLossBuilder::new("neg_ll", 1)?;
    /// let weights = b.input("weights", 1);
    /// let loss = -(b.logprobs() * weights).sum();
    /// let nll = b.build(&loss, &[("custom/neg_ll:sum", &loss)])?;
    /// let handle = service.create_custom_loss(&nll).await?;
    /// let out = training.forward_backward_custom_loss(batch, &handle).await?.await?;
    /// println!("loss {:?}", out.loss());
    /// # Ok(()) }
    /// ```
    pub async fn create_custom_loss(&self, loss: &ServerLoss) -> Result<CustomLossHandle> {
        let session = self.shared.session().await?;
        let key = loss.key();
        // Held across the upload so two concurrent creations of one loss make one call.
        let mut created = self.shared.custom_losses.lock().await;
        if let Some(handle) = created.get(&key) {
            return Ok(handle.clone());
        }
        let exec = &self.shared.exec;
        let upload = exec.ledger.lock().client_config().custom_loss_server_side;
        let definition = Arc::new(loss.clone());
        let handle = if upload {
            let site = self.site("ServiceClient.create_custom_loss");
            let op = exec.start(&site, |ledger, opts| {
                let seq = ledger.next_custom_loss_seq_id();
                crate::ops::future::<_, CreateCustomLossResponse>(
                    ledger,
                    loss.request(&session.id, seq),
                    opts,
                )
            })?;
            let reply = exec.run(op, site).await?;
            CustomLossHandle::uploaded(reply.loss_id, session.id, definition)
        } else {
            CustomLossHandle::client_side(session.id, definition)
        };
        created.insert(key, handle.clone());
        Ok(handle)
    }

    /// A client for the REST resources (training runs, checkpoints, sessions, billing), sharing
    /// this client's connection and configuration but needing no session.
    pub fn create_rest_client(&self) -> RestClient {
        RestClient::new(self.shared.clone())
    }

    /// Ends the session (`sessions/{id}/finish` with `reason`), flushes telemetry for at most
    /// [`ClientOptions::close_flush_timeout`] (2 s) and stops the housekeeper. Later calls on
    /// this client or its children fail with [`Error::Closed`]. Closing twice is harmless; the
    /// first reason wins.
    pub async fn close(&self, reason: FinishReason) -> Result<()> {
        self.close_with_detail(reason, None).await
    }

    /// [`ServiceClient::close`] with a free-form detail sent to the server.
    pub async fn close_with_detail(
        &self,
        reason: FinishReason,
        detail: Option<String>,
    ) -> Result<()> {
        {
            let mut lifecycle = self
                .shared
                .lifecycle
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if let Lifecycle::Closed(_) = *lifecycle {
                return Ok(());
            }
            *lifecycle =
                Lifecycle::Closed(format!("the service client was closed ({})", reason.name()));
        }
        let exec = &self.shared.exec;
        let mut result = Ok(());
        if let Some(session) = self.shared.session.get() {
            let gone = self
                .shared
                .housekeeping
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .as_ref()
                .and_then(Housekeeping::session_gone);
            if gone.is_none() {
                let mut site = CallSite::new("ServiceClient.close", None);
                site.deadline = Some(self.shared.options.close_flush_timeout * 5);
                result = exec
                    .direct(FinishSession::new(&session.id, reason, detail), site)
                    .await
                    .map(|_| ());
                // A session the server already ended is closed all the same.
                if let Err(e) = &result {
                    if matches!(e.kind(), ErrorKind::Gone | ErrorKind::NotFound) {
                        result = Ok(());
                    }
                }
            }
        }
        if let Some(h) = self.shared.take_housekeeping() {
            h.end_session(exec);
            let deadline = exec.runtime.now() + self.shared.options.close_flush_timeout;
            h.stop(deadline);
            h.wait_stopped(&*exec.runtime, deadline).await;
        }
        result
    }

    pub(crate) fn site(&self, method: &'static str) -> CallSite {
        CallSite::new(method, self.shared.options.default_deadline)
    }
}

/// Where a new sampling session's weights come from.
pub(crate) enum CreateSamplingSource {
    ModelPath(String),
    BaseModel(String),
}
