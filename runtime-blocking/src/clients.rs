//! The blocking clients: the async clients of `tinker_core::client`, each method run to
//! completion on the calling thread (see [`crate::executor`] for how).
//!
//! Names, arguments and return types match the async crates, minus `.await`.

use std::collections::BTreeMap;
use std::time::Duration;

use tinker_core::client as core;
use tinker_core::losses::server_side::{CustomLossHandle, ServerLoss};
use tinker_core::ops::{SampleStreamChunk, SharedCustomLoss};
use tinker_core::types::{
    AuditEventType, AuditLogResponse, BillingUsageResponse, CheckpointArchiveUrl,
    CheckpointStorageUsage, CheckpointsListResponse, Datum, ExternalWeightsUrls, FinishReason,
    ForwardBackwardOutput, GetInfoResponse, GetSessionResponse, LoadWeightsResponse, LoraConfig,
    LossConfigValue, LossFn, ModelInput, OptimStepResponse, SampleRequest, SampleResponse,
    SamplerSaveKind, SamplingParams, SaveWeightsExternalResponse, SaveWeightsForSamplerResponse,
    SaveWeightsResponse, ServerCapabilities, SessionSearchRequest, SessionSearchResponse,
    SessionsListResponse, StepParams, Timestamp, TraceExportResponse, TrainingRun,
    TrainingRunsResponse, WeightsInfoResponse, WhoamiResponse,
};
use tinker_core::Result;

use crate::executor::block_on;
use crate::{ClientOptions, SaveOptions, Settings};

/// A submitted request whose result is waited for later ([`Pending::result`] blocks).
///
/// Polling for the result happens inside `result()`, on the thread that calls it, so a step is
/// two submissions followed by two waits, exactly as with the async clients; move a `Pending`
/// to another thread to wait there.
#[must_use = "a Pending does nothing until its result is waited for"]
#[derive(Debug)]
pub struct Pending<T> {
    inner: core::Pending<T>,
}

impl<T: Send + 'static> Pending<T> {
    /// The request id of the server future (the first, for a split `forward_backward`).
    pub fn request_id(&self) -> Option<String> {
        self.inner.request_id()
    }

    /// Every request id of the operation, in submission order.
    pub fn request_ids(&self) -> Vec<String> {
        self.inner.request_ids()
    }

    /// Blocks until the result arrives (bounded by the call's deadline, if any).
    pub fn result(self) -> Result<T> {
        block_on(self.inner.result())
    }

    /// Blocks at most `timeout` for the result; then fails with a timeout naming the request id
    /// and the last queue state.
    pub fn result_with_deadline(self, timeout: Duration) -> Result<T> {
        block_on(self.inner.result_with_deadline(timeout))
    }
}

fn pending<T: Send + 'static>(p: Result<core::Pending<T>>) -> Result<Pending<T>> {
    p.map(|inner| Pending { inner })
}

/// The entry point: creates training, sampling and REST clients over one session.
///
/// Construct it with [`crate::connect`]. The housekeeper (heartbeats, telemetry) runs on its own
/// thread; [`ServiceClient::close`] ends the session and flushes telemetry for at most 2 s;
/// dropping the last clone stops the housekeeper without blocking.
#[derive(Debug, Clone)]
pub struct ServiceClient {
    inner: core::ServiceClient,
}

impl ServiceClient {
    pub(crate) fn from_core(inner: core::ServiceClient) -> ServiceClient {
        ServiceClient { inner }
    }

    /// The async client underneath (to mix blocking and async code).
    pub fn as_async(&self) -> &core::ServiceClient {
        &self.inner
    }

    /// The settings in use.
    pub fn settings(&self) -> &Settings {
        self.inner.settings()
    }

    /// The options in use.
    pub fn options(&self) -> &ClientOptions {
        self.inner.options()
    }

    /// Request counters and latency histograms per endpoint of this client and every client it
    /// created (empty when [`ClientOptions::metrics_enabled`] is off). Reading it never blocks.
    ///
    /// ```no_run
    /// # fn demo(service: tinker_blocking::ServiceClient) {
    /// let snapshot = service.metrics().snapshot();
    /// if let Some(fb) = snapshot.endpoints.get("forward_backward") {
    ///     println!("{} forward_backward, p99 {:?} ms", fb.total, fb.latency.p99_ms);
    /// }
    /// # }
    /// ```
    pub fn metrics(&self) -> &tinker_core::metrics::Metrics {
        self.inner.metrics()
    }

    /// Starts automatic recovery of corrupted training runs for `policy` (which must be enabled
    /// and valid, else [`tinker_core::Error::InvalidInput`]). The monitor runs on a background
    /// thread; its methods (`watch`, `recover_now`, `unwatch`, `stop`) return at once. The hooks
    /// run on that thread too; [`RecoveryHooks::on_recovered`](core::RecoveryHooks::on_recovered)
    /// hands over the async client of the new run, which [`TrainingClient::from_async`] wraps.
    ///
    /// ```no_run
    /// # fn demo(service: tinker_blocking::ServiceClient,
    /// #         training: tinker_blocking::TrainingClient) -> tinker_blocking::Result<()> {
    /// use tinker_blocking::core::client::RecoveryHooks;
    /// use tinker_blocking::core::recovery::RecoveryPolicy;
    /// use tinker_blocking::TrainingClient;
    ///
    /// let hooks = RecoveryHooks::default().on_recovered(|r| {
    ///     let client = TrainingClient::from_async(r.client);
    ///     println!("{} continues as {}", r.run_id, client.model_id());
    /// });
    /// let monitor = service.start_recovery(RecoveryPolicy::enabled(), hooks)?;
    /// monitor.watch(training.model_id())?;
    /// # Ok(()) }
    /// ```
    pub fn start_recovery(
        &self,
        policy: tinker_core::recovery::RecoveryPolicy,
        hooks: core::RecoveryHooks,
    ) -> Result<core::RecoveryMonitor> {
        self.inner.start_recovery(policy, hooks)
    }

    /// The session id, starting the session if needed.
    pub fn session_id(&self) -> Result<String> {
        block_on(self.inner.session_id())
    }

    /// Creates a LoRA training run on `base_model`.
    pub fn create_lora_training_client(
        &self,
        base_model: &str,
        lora: LoraConfig,
    ) -> Result<TrainingClient> {
        block_on(self.inner.create_lora_training_client(base_model, lora))
            .map(|inner| TrainingClient { inner })
    }

    /// A training run from a state checkpoint, weights only (fresh optimizer).
    pub fn create_training_client_from_state(&self, path: &str) -> Result<TrainingClient> {
        block_on(self.inner.create_training_client_from_state(path))
            .map(|inner| TrainingClient { inner })
    }

    /// A training run from a state checkpoint, weights only, with `user_metadata` on the run.
    pub fn create_training_client_from_state_with_metadata(
        &self,
        path: &str,
        user_metadata: tinker_core::types::Metadata,
    ) -> Result<TrainingClient> {
        block_on(
            self.inner
                .create_training_client_from_state_with_metadata(path, user_metadata),
        )
        .map(|inner| TrainingClient { inner })
    }

    /// A training run from a state checkpoint with its optimizer state (exact resume).
    pub fn create_training_client_from_state_with_optimizer(
        &self,
        path: &str,
    ) -> Result<TrainingClient> {
        block_on(
            self.inner
                .create_training_client_from_state_with_optimizer(path),
        )
        .map(|inner| TrainingClient { inner })
    }

    /// A sampling client on saved sampler weights.
    pub fn create_sampling_client(&self, model_path: &str) -> Result<SamplingClient> {
        block_on(self.inner.create_sampling_client(model_path))
            .map(|inner| SamplingClient { inner })
    }

    /// A sampling client on an untrained base model.
    pub fn create_base_model_sampling_client(&self, base_model: &str) -> Result<SamplingClient> {
        block_on(self.inner.create_base_model_sampling_client(base_model))
            .map(|inner| SamplingClient { inner })
    }

    /// Creates a custom loss for this session (uploaded when the server enables
    /// `custom_loss_server_side`; see the async `ServiceClient::create_custom_loss`). The same
    /// definition created twice returns the first handle without a call.
    pub fn create_custom_loss(&self, loss: &ServerLoss) -> Result<CustomLossHandle> {
        block_on(self.inner.create_custom_loss(loss))
    }

    /// The models this deployment serves.
    pub fn get_server_capabilities(&self) -> Result<ServerCapabilities> {
        block_on(self.inner.get_server_capabilities())
    }

    /// A REST client sharing this client's configuration.
    pub fn create_rest_client(&self) -> RestClient {
        RestClient {
            inner: self.inner.create_rest_client(),
        }
    }

    /// Ends the session, flushes telemetry (at most 2 s) and stops the housekeeper.
    pub fn close(&self, reason: FinishReason) -> Result<()> {
        block_on(self.inner.close(reason))
    }

    /// [`ServiceClient::close`] with a detail sent to the server.
    pub fn close_with_detail(&self, reason: FinishReason, detail: Option<String>) -> Result<()> {
        block_on(self.inner.close_with_detail(reason, detail))
    }
}

/// One training run. Requests reach the server in the order the methods are called; methods
/// that start server work return once the request is submitted.
#[derive(Debug, Clone)]
pub struct TrainingClient {
    inner: core::TrainingClient,
}

impl TrainingClient {
    /// Wraps an async training client (such as the one a recovery hook hands over).
    pub fn from_async(inner: core::TrainingClient) -> TrainingClient {
        TrainingClient { inner }
    }

    /// The async client underneath.
    pub fn as_async(&self) -> &core::TrainingClient {
        &self.inner
    }

    /// The training run id.
    pub fn model_id(&self) -> &str {
        self.inner.model_id()
    }

    /// The run's model information (cached).
    pub fn get_info(&self) -> &GetInfoResponse {
        self.inner.get_info()
    }

    /// The base model's tokenizer from the Hub `HF_ENDPOINT` names (cached for the process).
    #[cfg(feature = "tokenizers")]
    pub fn get_tokenizer(&self) -> Result<tinker_core::tokenizer::Tokenizer> {
        block_on(self.inner.get_tokenizer())
    }

    /// The base model's tokenizer from an explicitly configured Hub.
    #[cfg(feature = "tokenizers")]
    pub fn get_tokenizer_from(
        &self,
        hub: tinker_core::tokenizer::HubSettings,
    ) -> Result<tinker_core::tokenizer::Tokenizer> {
        block_on(self.inner.get_tokenizer_from(hub))
    }

    /// The same run with every call bounded by `deadline`.
    pub fn with_deadline(&self, deadline: Duration) -> TrainingClient {
        TrainingClient {
            inner: self.inner.with_deadline(deadline),
        }
    }

    /// Loss and gradients on `data`; returns once submitted.
    pub fn forward_backward(
        &self,
        data: Vec<Datum>,
        loss_fn: LossFn,
    ) -> Result<Pending<ForwardBackwardOutput>> {
        pending(block_on(self.inner.forward_backward(data, loss_fn)))
    }

    /// [`TrainingClient::forward_backward`] with a loss config.
    pub fn forward_backward_with_config(
        &self,
        data: Vec<Datum>,
        loss_fn: LossFn,
        loss_fn_config: Option<BTreeMap<String, LossConfigValue>>,
    ) -> Result<Pending<ForwardBackwardOutput>> {
        pending(block_on(self.inner.forward_backward_with_config(
            data,
            loss_fn,
            loss_fn_config,
        )))
    }

    /// Trains on a loss computed on the client: one forward pass, `loss` on its logprobs, one
    /// backward pass with `weights = −∂loss/∂logprobs` (see the async
    /// `TrainingClient::forward_backward_custom`). Returns once the backward pass is submitted
    /// (after the forward pass's round trip and the loss); [`Pending::result`] waits for its
    /// output.
    pub fn forward_backward_custom(
        &self,
        data: Vec<Datum>,
        loss: SharedCustomLoss,
    ) -> Result<Pending<ForwardBackwardOutput>> {
        pending(block_on(self.inner.forward_backward_custom(data, loss)))
    }

    /// Trains on a loss made by [`ServiceClient::create_custom_loss`]: one `forward_backward`
    /// with `loss_fn = "custom"` when it was uploaded, the two-pass client-side path otherwise
    /// (see the async `TrainingClient::forward_backward_custom_loss`). Returns once submitted.
    pub fn forward_backward_custom_loss(
        &self,
        data: Vec<Datum>,
        handle: &CustomLossHandle,
    ) -> Result<Pending<ForwardBackwardOutput>> {
        pending(block_on(
            self.inner.forward_backward_custom_loss(data, handle),
        ))
    }

    /// Loss without gradients on `data`.
    pub fn forward(
        &self,
        data: Vec<Datum>,
        loss_fn: LossFn,
    ) -> Result<Pending<ForwardBackwardOutput>> {
        pending(block_on(self.inner.forward(data, loss_fn)))
    }

    /// Applies the accumulated gradients.
    pub fn optim_step(&self, params: impl Into<StepParams>) -> Result<Pending<OptimStepResponse>> {
        pending(block_on(self.inner.optim_step(params)))
    }

    /// Saves weights and optimizer state under `name`.
    pub fn save_state(&self, name: &str) -> Result<Pending<SaveWeightsResponse>> {
        pending(block_on(self.inner.save_state(name)))
    }

    /// [`TrainingClient::save_state`] with options.
    pub fn save_state_with(
        &self,
        name: &str,
        options: SaveOptions,
    ) -> Result<Pending<SaveWeightsResponse>> {
        pending(block_on(self.inner.save_state_with(name, options)))
    }

    /// Loads weights only from a state checkpoint into this run.
    pub fn load_state(&self, path: &str) -> Result<Pending<LoadWeightsResponse>> {
        pending(block_on(self.inner.load_state(path)))
    }

    /// Loads weights and optimizer state into this run.
    pub fn load_state_with_optimizer(&self, path: &str) -> Result<Pending<LoadWeightsResponse>> {
        pending(block_on(self.inner.load_state_with_optimizer(path)))
    }

    /// Saves sampler weights under `name`.
    pub fn save_weights_for_sampler(
        &self,
        name: &str,
    ) -> Result<Pending<SaveWeightsForSamplerResponse>> {
        pending(block_on(self.inner.save_weights_for_sampler(name)))
    }

    /// [`TrainingClient::save_weights_for_sampler`] with options.
    pub fn save_weights_for_sampler_with(
        &self,
        name: &str,
        options: SaveOptions,
    ) -> Result<Pending<SaveWeightsForSamplerResponse>> {
        pending(block_on(
            self.inner.save_weights_for_sampler_with(name, options),
        ))
    }

    /// Saves the current weights for sampling and returns a sampling client on them.
    pub fn save_weights_and_get_sampling_client(
        &self,
        kind: SamplerSaveKind,
    ) -> Result<SamplingClient> {
        block_on(self.inner.save_weights_and_get_sampling_client(kind))
            .map(|inner| SamplingClient { inner })
    }

    /// A sampling client on saved sampler weights.
    pub fn create_sampling_client(&self, model_path: &str) -> Result<SamplingClient> {
        block_on(self.inner.create_sampling_client(model_path))
            .map(|inner| SamplingClient { inner })
    }

    /// Exports the weights for download (SDK 0.38).
    pub fn save_weights_external(
        &self,
        name: &str,
        ttl_seconds: Option<u64>,
        age_recipients: Option<Vec<String>>,
    ) -> Result<Pending<SaveWeightsExternalResponse>> {
        pending(block_on(self.inner.save_weights_external(
            name,
            ttl_seconds,
            age_recipients,
        )))
    }
}

/// Samples from one set of weights. Run samples concurrently from several threads (the client is
/// `Clone + Send + Sync`); it queues above the server's limits.
#[derive(Debug, Clone)]
pub struct SamplingClient {
    inner: core::SamplingClient,
}

impl SamplingClient {
    /// The async client underneath.
    pub fn as_async(&self) -> &core::SamplingClient {
        &self.inner
    }

    /// The sampling session id.
    pub fn sampling_session_id(&self) -> &str {
        self.inner.sampling_session_id()
    }

    /// The base model of the weights.
    pub fn get_base_model(&self) -> &str {
        self.inner.get_base_model()
    }

    /// The `tinker://` path of the weights, if any.
    pub fn model_path(&self) -> Option<&str> {
        self.inner.model_path()
    }

    /// The tokenizer of the sampler's base model from the Hub `HF_ENDPOINT` names (cached for
    /// the process).
    #[cfg(feature = "tokenizers")]
    pub fn get_tokenizer(&self) -> Result<tinker_core::tokenizer::Tokenizer> {
        block_on(self.inner.get_tokenizer())
    }

    /// The tokenizer of the sampler's base model from an explicitly configured Hub.
    #[cfg(feature = "tokenizers")]
    pub fn get_tokenizer_from(
        &self,
        hub: tinker_core::tokenizer::HubSettings,
    ) -> Result<tinker_core::tokenizer::Tokenizer> {
        block_on(self.inner.get_tokenizer_from(hub))
    }

    /// The same sampler with every call bounded by `deadline`.
    pub fn with_deadline(&self, deadline: Duration) -> SamplingClient {
        SamplingClient {
            inner: self.inner.with_deadline(deadline),
        }
    }

    /// Generates `num_samples` completions of `prompt`.
    pub fn sample(
        &self,
        prompt: ModelInput,
        num_samples: u32,
        params: SamplingParams,
    ) -> Result<SampleResponse> {
        block_on(self.inner.sample(prompt, num_samples, params))
    }

    /// Generates completions for a fully specified request.
    pub fn sample_request(&self, request: SampleRequest) -> Result<SampleResponse> {
        block_on(self.inner.sample_request(request))
    }

    /// The log-probability of every prompt token.
    pub fn compute_logprobs(&self, prompt: ModelInput) -> Result<Vec<Option<f32>>> {
        block_on(self.inner.compute_logprobs(prompt))
    }

    /// Generates one completion and returns its tokens as an iterator that yields each token as
    /// the server sends it (server-sent events; see the async `SamplingClient::sample_stream`).
    /// Returns once the server accepted the stream. Dropping the iterator stops the request.
    ///
    /// ```no_run
    /// # fn demo(sampler: tinker_blocking::SamplingClient) -> tinker_blocking::Result<()> {
    /// use tinker_blocking::types::{ModelInput, SamplingParams};
    /// let params = SamplingParams { max_tokens: Some(16), ..SamplingParams::default() };
    /// for chunk in sampler.sample_stream(ModelInput::from_tokens(vec![1, 2, 3]), params)? {
    ///     let chunk = chunk?;
    ///     if chunk.is_done() { break; }
    ///     println!("{:?}", chunk.token_id);
    /// }
    /// # Ok(()) }
    /// ```
    pub fn sample_stream(
        &self,
        prompt: ModelInput,
        params: SamplingParams,
    ) -> Result<SampleStream> {
        block_on(self.inner.sample_stream(prompt, params)).map(|inner| SampleStream { inner })
    }
}

/// The tokens of one streamed sample ([`SamplingClient::sample_stream`]): each `next()` blocks
/// until the server's next event. Ends after the `done` chunk (or after one error).
#[derive(Debug)]
pub struct SampleStream {
    inner: core::SampleStream,
}

impl Iterator for SampleStream {
    type Item = Result<SampleStreamChunk>;

    fn next(&mut self) -> Option<Self::Item> {
        block_on(self.inner.next_chunk())
    }
}

/// The REST resources of the account.
#[derive(Debug, Clone)]
pub struct RestClient {
    inner: core::RestClient,
}

impl RestClient {
    /// The async client underneath.
    pub fn as_async(&self) -> &core::RestClient {
        &self.inner
    }

    /// One page of training runs.
    pub fn list_training_runs(&self, limit: u32, offset: u64) -> Result<TrainingRunsResponse> {
        block_on(self.inner.list_training_runs(limit, offset))
    }

    /// One training run.
    pub fn get_training_run(&self, training_run_id: &str) -> Result<TrainingRun> {
        block_on(self.inner.get_training_run(training_run_id))
    }

    /// The training run a `tinker://` path belongs to.
    pub fn get_training_run_by_tinker_path(&self, path: &str) -> Result<TrainingRun> {
        block_on(self.inner.get_training_run_by_tinker_path(path))
    }

    /// Every checkpoint of one run.
    pub fn list_checkpoints(&self, training_run_id: &str) -> Result<CheckpointsListResponse> {
        block_on(self.inner.list_checkpoints(training_run_id))
    }

    /// One page of the user's checkpoints.
    pub fn list_user_checkpoints(
        &self,
        limit: u32,
        offset: u64,
    ) -> Result<CheckpointsListResponse> {
        block_on(self.inner.list_user_checkpoints(limit, offset))
    }

    /// Deletes a checkpoint.
    pub fn delete_checkpoint(&self, path: &str) -> Result<()> {
        block_on(self.inner.delete_checkpoint(path))
    }

    /// Deletes several checkpoints and reports each outcome.
    pub fn delete_checkpoints(&self, paths: &[&str]) -> Vec<(String, Result<()>)> {
        block_on(self.inner.delete_checkpoints(paths))
    }

    /// Makes a checkpoint public.
    pub fn publish_checkpoint(&self, path: &str) -> Result<()> {
        block_on(self.inner.publish_checkpoint(path))
    }

    /// Makes a checkpoint private.
    pub fn unpublish_checkpoint(&self, path: &str) -> Result<()> {
        block_on(self.inner.unpublish_checkpoint(path))
    }

    /// Sets or removes a checkpoint's TTL.
    pub fn set_checkpoint_ttl(&self, path: &str, ttl_seconds: Option<u64>) -> Result<()> {
        block_on(self.inner.set_checkpoint_ttl(path, ttl_seconds))
    }

    /// Base model and LoRA settings of saved weights.
    pub fn get_weights_info(&self, path: &str) -> Result<WeightsInfoResponse> {
        block_on(self.inner.get_weights_info(path))
    }

    /// Signed URLs of an external-weights export.
    pub fn get_external_weights_urls(&self, path: &str) -> Result<ExternalWeightsUrls> {
        block_on(self.inner.get_external_weights_urls(path))
    }

    /// A signed archive URL (SDK 0.25 servers).
    pub fn get_checkpoint_archive_url(&self, path: &str) -> Result<CheckpointArchiveUrl> {
        block_on(self.inner.get_checkpoint_archive_url(path))
    }

    /// One page of session ids.
    pub fn list_sessions(&self, limit: u32, offset: u64) -> Result<SessionsListResponse> {
        block_on(self.inner.list_sessions(limit, offset))
    }

    /// A session's runs and samplers.
    pub fn get_session(&self, session_id: &str) -> Result<GetSessionResponse> {
        block_on(self.inner.get_session(session_id))
    }

    /// Moves a session to another project.
    pub fn assign_session_project(&self, session_id: &str, project_id: &str) -> Result<()> {
        block_on(self.inner.assign_session_project(session_id, project_id))
    }

    /// A session's trace export status.
    pub fn export_session_trace(&self, session_id: &str) -> Result<TraceExportResponse> {
        block_on(self.inner.export_session_trace(session_id))
    }

    /// Searches sessions.
    pub fn search_sessions(&self, request: SessionSearchRequest) -> Result<SessionSearchResponse> {
        block_on(self.inner.search_sessions(request))
    }

    /// The audit log.
    pub fn get_audit_log(
        &self,
        event_type: AuditEventType,
        day: Option<&str>,
    ) -> Result<AuditLogResponse> {
        block_on(self.inner.get_audit_log(event_type, day))
    }

    /// Billing usage events.
    pub fn get_billing_usage(
        &self,
        starting_on: Timestamp,
        ending_before: Timestamp,
    ) -> Result<BillingUsageResponse> {
        block_on(self.inner.get_billing_usage(starting_on, ending_before))
    }

    /// Current checkpoint storage.
    pub fn get_checkpoint_storage_usage(
        &self,
        project_id: Option<&str>,
    ) -> Result<CheckpointStorageUsage> {
        block_on(self.inner.get_checkpoint_storage_usage(project_id))
    }

    /// Who the credential belongs to (JWT servers).
    pub fn whoami(&self) -> Result<WhoamiResponse> {
        block_on(self.inner.whoami())
    }
}
