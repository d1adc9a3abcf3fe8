//! `TrainingClient`: one training run (a LoRA adapter on a base model).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use super::exec::CallSite;
use super::pending::Pending;
use super::sampling::SamplingClient;
use super::service::Shared;
use crate::error::{Error, Result};
use crate::ledger::Ledger;
use crate::losses::server_side::CustomLossHandle;
use crate::ops::{
    ForwardBackwardArgs, ForwardBackwardCustomOp, ForwardBackwardOp, IdempotentSave,
    SharedCustomLoss,
};
use crate::path::{CheckpointKind, TinkerPath};
use crate::retry::ClientKind;
use crate::types::{
    Datum, ForwardBackwardOutput, GetInfoResponse, LoadWeightsRequest, LoadWeightsResponse,
    LossConfigValue, LossFn, Metadata, OptimStepResponse, SamplerSaveKind,
    SaveWeightsExternalRequest, SaveWeightsExternalResponse, SaveWeightsForSamplerRequest,
    SaveWeightsForSamplerResponse, SaveWeightsRequest, SaveWeightsResponse, StepParams,
};

/// Options of a save (`save_state`, `save_weights_for_sampler`).
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct SaveOptions {
    /// Delete the checkpoint this many seconds after it is written (none: keep it).
    pub ttl_seconds: Option<u64>,
    /// Replace an existing checkpoint of the same name (`save_state` only).
    pub overwrite: bool,
    /// Free-form metadata stored with the checkpoint.
    pub user_metadata: Option<Metadata>,
}

impl SaveOptions {
    /// Sets the TTL.
    pub fn with_ttl_seconds(mut self, ttl: u64) -> SaveOptions {
        self.ttl_seconds = Some(ttl);
        self
    }

    /// Allows replacing an existing checkpoint.
    pub fn with_overwrite(mut self, overwrite: bool) -> SaveOptions {
        self.overwrite = overwrite;
        self
    }
}

struct Run {
    model_id: String,
    info: GetInfoResponse,
}

/// A training run: forward/backward passes, optimizer steps, checkpoints.
///
/// Requests of one training client reach the server in the order they were *made* (each method
/// reserves its turn synchronously, before its future is first polled; the seq id follows when
/// the turn starts sending, so a call dropped before that leaves no hole), so
/// `forward_backward` and `optim_step` can be submitted back to back and their results awaited
/// afterwards:
///
/// ```no_run
/// # async fn demo(training: tinker_core::client::TrainingClient,
/// #               batch: Vec<tinker_core::types::Datum>) -> tinker_core::Result<()> {
/// use tinker_core::types::{AdamParams, LossFn};
/// let fb = training.forward_backward(batch, LossFn::CrossEntropy).await?;
/// let step = training.optim_step(AdamParams::with_learning_rate(1e-4)).await?;
/// println!("loss {:?}", fb.await?.loss());
/// step.await?;
/// let saved = training.save_state("step_000010").await?.await?;
/// println!("state at {}", saved.path);
/// # Ok(()) }
/// ```
///
/// Clones share the run. [`TrainingClient::with_deadline`] gives a view whose calls have
/// their own deadline.
#[derive(Clone)]
pub struct TrainingClient {
    shared: Arc<Shared>,
    run: Arc<Run>,
    deadline: Option<Duration>,
}

impl std::fmt::Debug for TrainingClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrainingClient")
            .field("model_id", &self.run.model_id)
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}

impl TrainingClient {
    pub(crate) fn new(shared: Arc<Shared>, model_id: String, info: GetInfoResponse) -> Self {
        let deadline = shared.options.default_deadline;
        TrainingClient {
            shared,
            run: Arc::new(Run { model_id, info }),
            deadline,
        }
    }

    /// The training run id, `<session_id>:train:<n>`.
    pub fn model_id(&self) -> &str {
        &self.run.model_id
    }

    /// The run's model information (fetched once when the client was created).
    pub fn get_info(&self) -> &GetInfoResponse {
        &self.run.info
    }

    /// The tokenizer of the run's base model, downloaded from the Hugging Face Hub that
    /// `HF_ENDPOINT` / `HF_TOKEN` name (default: the public Hub) and cached for the process.
    /// The repository follows the SDK's rules ([`crate::tokenizer::TokenizerRef::for_model`]),
    /// preferring the tokenizer id the server reported in `get_info`.
    #[cfg(feature = "tokenizers")]
    pub fn get_tokenizer(
        &self,
    ) -> impl std::future::Future<Output = Result<crate::tokenizer::Tokenizer>> + Send + 'static
    {
        self.get_tokenizer_from(crate::tokenizer::HubSettings::from_env())
    }

    /// [`TrainingClient::get_tokenizer`] from an explicitly configured Hub.
    #[cfg(feature = "tokenizers")]
    pub fn get_tokenizer_from(
        &self,
        hub: crate::tokenizer::HubSettings,
    ) -> impl std::future::Future<Output = Result<crate::tokenizer::Tokenizer>> + Send + 'static
    {
        let info = &self.run.info;
        let data = &info.model_data;
        let model = data.model_name.as_deref().or(info.model_name.as_deref());
        let reference =
            model.map(|m| crate::tokenizer::TokenizerRef::for_model(m, data.tokenizer_name()));
        let load = reference.map(|r| {
            crate::tokenizer::load_for_client(
                self.shared.exec.http.clone(),
                self.shared.settings.timeouts,
                hub,
                r,
            )
        });
        async move {
            match load {
                Some(load) => load.await,
                None => Err(Error::decode(
                    "GetInfoResponse",
                    "model_data.model_name is missing, so the tokenizer is unknown",
                )),
            }
        }
    }

    /// The same run, with every call bounded by `deadline` (submission plus result).
    pub fn with_deadline(&self, deadline: Duration) -> TrainingClient {
        TrainingClient {
            deadline: Some(deadline),
            ..self.clone()
        }
    }

    fn site(&self, method: &'static str) -> CallSite {
        CallSite::new(method, self.deadline)
            .for_client(ClientKind::Training, self.run.model_id.clone())
    }

    /// Builds an operation now (reserving its place in the run's order) and returns the future
    /// that submits it.
    fn submit_op<M, F>(
        &self,
        method: &'static str,
        requests: impl FnOnce(&M) -> usize,
        build: F,
    ) -> impl std::future::Future<Output = Result<Pending<M::Output>>> + Send + 'static
    where
        M: crate::call::Machine + 'static,
        F: FnOnce(&mut Ledger, crate::call::CallOptions) -> Result<M>,
    {
        let site = self.site(method);
        let exec = self.shared.exec.clone();
        let built = self
            .shared
            .check_open()
            .and_then(|()| exec.start(&site, build));
        let n = built.as_ref().map(requests).unwrap_or(1);
        async move { exec.submit(built?, n, site).await }
    }

    /// Computes the loss and its gradient on `data` (accumulated until the next `optim_step`).
    /// Resolves once the batch is submitted; await the [`Pending`] for the output. Large batches
    /// are split into several requests that share one turn.
    pub fn forward_backward(
        &self,
        data: Vec<Datum>,
        loss_fn: LossFn,
    ) -> impl std::future::Future<Output = Result<Pending<ForwardBackwardOutput>>> + Send + 'static
    {
        self.forward_backward_with_config(data, loss_fn, None)
    }

    /// [`TrainingClient::forward_backward`] with a loss config (e.g. PPO clip thresholds).
    pub fn forward_backward_with_config(
        &self,
        data: Vec<Datum>,
        loss_fn: LossFn,
        loss_fn_config: Option<BTreeMap<String, LossConfigValue>>,
    ) -> impl std::future::Future<Output = Result<Pending<ForwardBackwardOutput>>> + Send + 'static
    {
        self.fwdbwd(
            "TrainingClient.forward_backward",
            data,
            loss_fn,
            loss_fn_config,
            false,
        )
    }

    /// Computes the loss (and per-token outputs) on `data` without gradients.
    pub fn forward(
        &self,
        data: Vec<Datum>,
        loss_fn: LossFn,
    ) -> impl std::future::Future<Output = Result<Pending<ForwardBackwardOutput>>> + Send + 'static
    {
        self.fwdbwd("TrainingClient.forward", data, loss_fn, None, true)
    }

    fn fwdbwd(
        &self,
        method: &'static str,
        data: Vec<Datum>,
        loss_fn: LossFn,
        loss_fn_config: Option<BTreeMap<String, LossConfigValue>>,
        forward_only: bool,
    ) -> impl std::future::Future<Output = Result<Pending<ForwardBackwardOutput>>> + Send + 'static
    {
        let args = ForwardBackwardArgs {
            model_id: self.run.model_id.clone(),
            data,
            loss_fn,
            loss_fn_config,
            forward_only,
        };
        self.submit_op(method, ForwardBackwardOp::chunk_count, |ledger, opts| {
            ForwardBackwardOp::new(ledger, args, opts)
        })
    }

    /// Trains on a loss computed on the client (protocol.md 11.3): one forward pass for the
    /// logprobs, `loss` on them (one row per datum, aligned with its `target_tokens`), then one
    /// backward pass with `weights = −∂loss/∂logprobs` under `cross_entropy`, whose gradient is
    /// the custom loss's. The result's `loss:sum` is the custom loss, `surrogate_loss:sum` the
    /// server's surrogate, and the loss's own metrics are merged in.
    ///
    /// Both passes' seq ids are reserved now, so an `optim_step` made right after this call runs
    /// after the backward pass. Resolves once the backward pass is submitted — which takes the
    /// forward pass's round trip and the loss, so the later `optim_step` is never left waiting
    /// for a turn only this call's result would advance; await the [`Pending`] for the output. Any [`crate::losses::CustomLoss`] works, including a
    /// [`crate::losses::RegularizerPipeline`] and [`crate::losses::Dpo`]:
    ///
    /// ```no_run
    /// # async fn demo(training: tinker_core::client::TrainingClient,
    /// #               pairs: Vec<tinker_core::types::Datum>,
    /// #               reference: Vec<Vec<f64>>) -> tinker_core::Result<()> {
    /// use std::sync::Arc;
    /// use tinker_core::losses::{Dpo, ReferenceLogprobs};
    /// use tinker_core::types::AdamParams;
    /// let dpo = Dpo::new(0.1, ReferenceLogprobs::PerToken(reference));
    /// let fb = training.forward_backward_custom(pairs, Arc::new(dpo)).await?;
    /// let step = training.optim_step(AdamParams::with_learning_rate(1e-5)).await?;
    /// println!("dpo loss {:?}", fb.await?.metrics["dpo_loss"]);
    /// step.await?;
    /// # Ok(()) }
    /// ```
    pub fn forward_backward_custom(
        &self,
        data: Vec<Datum>,
        loss: SharedCustomLoss,
    ) -> impl std::future::Future<Output = Result<Pending<ForwardBackwardOutput>>> + Send + 'static
    {
        let model_id = self.run.model_id.clone();
        self.submit_op(
            "TrainingClient.forward_backward_custom",
            ForwardBackwardCustomOp::request_count,
            move |ledger, opts| ForwardBackwardCustomOp::new(ledger, model_id, data, loss, opts),
        )
    }

    /// Trains on a loss made by `ServiceClient::create_custom_loss` (protocol.md 11.4). An
    /// uploaded loss is one ordinary `forward_backward` with `loss_fn = "custom"` and
    /// `loss_fn_config = {"loss_id": …}`, the datums sent unchanged; the result's `loss:sum` is
    /// the loss summed over datums, with the graph's `custom/…` metrics. A client-side handle
    /// runs [`TrainingClient::forward_backward_custom`] with the definition.
    ///
    /// Checked before anything is sent: the handle belongs to this client's session, and every
    /// datum has each declared input at its declared rank (`logprobs` through `target_tokens`).
    pub fn forward_backward_custom_loss(
        &self,
        data: Vec<Datum>,
        handle: &CustomLossHandle,
    ) -> impl std::future::Future<Output = Result<Pending<ForwardBackwardOutput>>> + Send + 'static
    {
        use futures_util::future::{ready, Either};
        let checked = handle
            .check_session(self.shared.started_session_id())
            .and_then(|()| handle.check_data(&data));
        match (checked, handle.loss_fn_config()) {
            (Err(e), _) => Either::Left(ready(Err(e))),
            (Ok(()), Some(config)) => Either::Right(Either::Left(self.fwdbwd(
                "TrainingClient.forward_backward_custom",
                data,
                LossFn::Custom,
                Some(config),
                false,
            ))),
            (Ok(()), None) => Either::Right(Either::Right(
                self.forward_backward_custom(data, handle.loss().clone()),
            )),
        }
    }

    /// Applies the accumulated gradients (Adam by default: pass
    /// [`crate::types::AdamParams`]).
    pub fn optim_step(
        &self,
        params: impl Into<StepParams>,
    ) -> impl std::future::Future<Output = Result<Pending<OptimStepResponse>>> + Send + 'static
    {
        let params = params.into();
        let model_id = self.run.model_id.clone();
        self.submit_op(
            "TrainingClient.optim_step",
            |_| 1,
            move |ledger, opts| crate::ops::optim_step(ledger, &model_id, params, opts),
        )
    }

    /// Saves weights and optimizer state as `tinker://<run>/weights/<name>` (resume with
    /// `create_training_client_from_state_with_optimizer` or [`TrainingClient::load_state`]).
    /// A retry that meets the checkpoint already written (409) is success once the run's
    /// checkpoint listing confirms it; a 409 on the first attempt (the name was taken before)
    /// fails at once with [`crate::ErrorKind::Conflict`] ([`crate::ops::on_save_conflict`]).
    pub fn save_state(
        &self,
        name: &str,
    ) -> impl std::future::Future<Output = Result<Pending<SaveWeightsResponse>>> + Send + 'static
    {
        self.save_state_with(name, SaveOptions::default())
    }

    /// [`TrainingClient::save_state`] with a TTL, overwrite flag or metadata.
    pub fn save_state_with(
        &self,
        name: &str,
        options: SaveOptions,
    ) -> impl std::future::Future<Output = Result<Pending<SaveWeightsResponse>>> + Send + 'static
    {
        let model_id = self.run.model_id.clone();
        let name = name.to_owned();
        self.submit_op(
            "TrainingClient.save_state",
            |_| 1,
            move |ledger, opts| {
                let target = TinkerPath::new(&model_id, CheckpointKind::Weights, &name)?;
                let save = crate::ops::training::<_, SaveWeightsResponse>(
                    ledger,
                    &model_id.clone(),
                    {
                        let mut req = SaveWeightsRequest::new(model_id, 0, name);
                        req.ttl_seconds = options.ttl_seconds;
                        req.overwrite = options.overwrite;
                        req.user_metadata = options.user_metadata.map(stringify_metadata);
                        req
                    },
                    opts.clone(),
                )?;
                Ok(IdempotentSave::new(save, target, opts))
            },
        )
    }

    /// Loads weights only from a state checkpoint into this run (the optimizer state is kept).
    pub fn load_state(
        &self,
        path: &str,
    ) -> impl std::future::Future<Output = Result<Pending<LoadWeightsResponse>>> + Send + 'static
    {
        self.load(path, false, "TrainingClient.load_state")
    }

    /// Loads weights and optimizer state from a state checkpoint into this run.
    pub fn load_state_with_optimizer(
        &self,
        path: &str,
    ) -> impl std::future::Future<Output = Result<Pending<LoadWeightsResponse>>> + Send + 'static
    {
        self.load(path, true, "TrainingClient.load_state_with_optimizer")
    }

    fn load(
        &self,
        path: &str,
        optimizer: bool,
        method: &'static str,
    ) -> impl std::future::Future<Output = Result<Pending<LoadWeightsResponse>>> + Send + 'static
    {
        let model_id = self.run.model_id.clone();
        let path = path.to_owned();
        self.submit_op(
            method,
            |_| 1,
            move |ledger, opts| {
                crate::ops::training::<_, LoadWeightsResponse>(
                    ledger,
                    &model_id.clone(),
                    LoadWeightsRequest::onto_model(model_id, 0, path, optimizer),
                    opts,
                )
            },
        )
    }

    /// Saves sampler weights as `tinker://<run>/sampler_weights/<name>` (load them with
    /// `ServiceClient::create_sampling_client`). A 409 is resolved like [`TrainingClient::save_state`]'s.
    pub fn save_weights_for_sampler(
        &self,
        name: &str,
    ) -> impl std::future::Future<Output = Result<Pending<SaveWeightsForSamplerResponse>>> + Send + 'static
    {
        self.save_weights_for_sampler_with(name, SaveOptions::default())
    }

    /// [`TrainingClient::save_weights_for_sampler`] with a TTL or metadata.
    pub fn save_weights_for_sampler_with(
        &self,
        name: &str,
        options: SaveOptions,
    ) -> impl std::future::Future<Output = Result<Pending<SaveWeightsForSamplerResponse>>> + Send + 'static
    {
        let model_id = self.run.model_id.clone();
        let name = name.to_owned();
        self.submit_op(
            "TrainingClient.save_weights_for_sampler",
            |_| 1,
            move |ledger, opts| {
                let target = TinkerPath::new(&model_id, CheckpointKind::SamplerWeights, &name)?;
                let save = crate::ops::training::<_, SaveWeightsForSamplerResponse>(
                    ledger,
                    &model_id.clone(),
                    {
                        let mut req = SaveWeightsForSamplerRequest::named(model_id, 0, name);
                        req.ttl_seconds = options.ttl_seconds;
                        req.user_metadata = options.user_metadata;
                        req
                    },
                    opts.clone(),
                )?;
                Ok(IdempotentSave::new(save, target, opts))
            },
        )
    }

    /// Saves the current weights for sampling without naming them and returns a sampling client
    /// on them (one request: no `create_sampling_session`). `kind` chooses a durable snapshot or
    /// an in-flight copy.
    pub async fn save_weights_and_get_sampling_client(
        &self,
        kind: SamplerSaveKind,
    ) -> Result<SamplingClient> {
        let model_id = self.run.model_id.clone();
        let pending = self
            .submit_op(
                "TrainingClient.save_weights_and_get_sampling_client",
                |_| 1,
                move |ledger, opts| {
                    let sampling_seq = ledger.next_sampling_session_seq_id();
                    crate::ops::training::<_, SaveWeightsForSamplerResponse>(
                        ledger,
                        &model_id.clone(),
                        SaveWeightsForSamplerRequest::for_sampling_session(
                            model_id,
                            0,
                            sampling_seq,
                            kind,
                        ),
                        opts,
                    )
                },
            )
            .await?;
        let saved = pending.result().await?;
        let session = saved.sampling_session_id.ok_or_else(|| {
            Error::decode(
                "SaveWeightsForSamplerResponse",
                "missing field `sampling_session_id` for an unnamed save",
            )
        })?;
        let base_model = self
            .run
            .info
            .model_data
            .model_name
            .clone()
            .or_else(|| self.run.info.model_name.clone())
            .unwrap_or_default();
        Ok(SamplingClient::new(
            self.shared.clone(),
            session,
            base_model,
            saved.path,
        ))
    }

    /// A sampling client on saved sampler weights (same as
    /// `ServiceClient::create_sampling_client`).
    pub async fn create_sampling_client(&self, model_path: &str) -> Result<SamplingClient> {
        super::ServiceClient {
            shared: self.shared.clone(),
        }
        .sampling_client(
            super::service::CreateSamplingSource::ModelPath(model_path.to_owned()),
            "TrainingClient.create_sampling_client",
        )
        .await
    }

    /// Exports the weights for download as `tinker://<run>/…/<name>` (SDK 0.38), optionally
    /// encrypted to `age` recipients.
    pub fn save_weights_external(
        &self,
        name: &str,
        ttl_seconds: Option<u64>,
        age_recipients: Option<Vec<String>>,
    ) -> impl std::future::Future<Output = Result<Pending<SaveWeightsExternalResponse>>> + Send + 'static
    {
        let model_id = self.run.model_id.clone();
        let name = name.to_owned();
        self.submit_op(
            "TrainingClient.save_weights_external",
            |_| 1,
            move |ledger, opts| {
                crate::ops::training::<_, SaveWeightsExternalResponse>(
                    ledger,
                    &model_id.clone(),
                    {
                        let mut req = SaveWeightsExternalRequest::new(model_id, 0, name);
                        req.ttl_seconds = ttl_seconds;
                        req.age_encryption_recipients = age_recipients;
                        req
                    },
                    opts,
                )
            },
        )
    }
}

/// `save_weights` takes string-valued metadata.
fn stringify_metadata(m: Metadata) -> BTreeMap<String, String> {
    m.into_iter()
        .map(|(k, v)| match v {
            serde_json::Value::String(s) => (k, s),
            other => (k, other.to_string()),
        })
        .collect()
}
