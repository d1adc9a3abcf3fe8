//! `SamplingClient`: text generation and prompt log-probabilities from one sampling session.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;

use super::exec::CallSite;
use super::pending::race;
use super::service::Shared;
use crate::error::{Error, Result};
use crate::io::{AsyncBody, BoxFuture, TransportError};
use crate::ledger::SamplerHandle;
use crate::ops::{
    SampleOp, SampleStreamChunk, SampleStreamDecoder, SampleStreamStart, STREAM_SAMPLE_PATH,
};
use crate::retry::ClientKind;
use crate::types::{ModelInput, SampleRequest, SampleResponse, SamplingParams};

struct Sampler {
    session_id: String,
    handle: SamplerHandle,
    base_model: String,
    model_path: Option<String>,
}

/// Samples from one set of weights (a sampling session).
///
/// Many samples may be in flight at once: the client queues requests above the server's
/// concurrency limits instead of failing, retries transient failures, and never lets more
/// requests be in flight than the server allows.
///
/// ```no_run
/// # async fn demo(sampler: tinker_core::client::SamplingClient) -> tinker_core::Result<()> {
/// use tinker_core::types::{ModelInput, SamplingParams};
/// let params = SamplingParams { max_tokens: Some(32), ..SamplingParams::default() };
/// let out = sampler.sample(ModelInput::from_tokens(vec![1, 2, 3]), 3, params).await?;
/// for seq in &out.sequences {
///     println!("{:?} ({:?})", seq.tokens, seq.stop_reason);
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct SamplingClient {
    shared: Arc<Shared>,
    sampler: Arc<Sampler>,
    deadline: Option<Duration>,
}

impl std::fmt::Debug for SamplingClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SamplingClient")
            .field("sampling_session_id", &self.sampler.session_id)
            .field("base_model", &self.sampler.base_model)
            .field("model_path", &self.sampler.model_path)
            .finish_non_exhaustive()
    }
}

impl SamplingClient {
    pub(crate) fn new(
        shared: Arc<Shared>,
        session_id: String,
        base_model: String,
        model_path: Option<String>,
    ) -> SamplingClient {
        let handle = shared.exec.ledger.lock().register_sampler(0);
        let deadline = shared.options.default_deadline;
        SamplingClient {
            shared,
            sampler: Arc::new(Sampler {
                session_id,
                handle,
                base_model,
                model_path,
            }),
            deadline,
        }
    }

    /// The sampling session id.
    pub fn sampling_session_id(&self) -> &str {
        &self.sampler.session_id
    }

    /// The base model the weights belong to.
    pub fn get_base_model(&self) -> &str {
        &self.sampler.base_model
    }

    /// The tokenizer of the sampler's base model, downloaded from the Hugging Face Hub that
    /// `HF_ENDPOINT` / `HF_TOKEN` name (default: the public Hub) and cached for the process
    /// (repository per [`crate::tokenizer::TokenizerRef::for_model`]).
    #[cfg(feature = "tokenizers")]
    pub fn get_tokenizer(
        &self,
    ) -> impl std::future::Future<Output = Result<crate::tokenizer::Tokenizer>> + Send + 'static
    {
        self.get_tokenizer_from(crate::tokenizer::HubSettings::from_env())
    }

    /// [`SamplingClient::get_tokenizer`] from an explicitly configured Hub.
    #[cfg(feature = "tokenizers")]
    pub fn get_tokenizer_from(
        &self,
        hub: crate::tokenizer::HubSettings,
    ) -> impl std::future::Future<Output = Result<crate::tokenizer::Tokenizer>> + Send + 'static
    {
        crate::tokenizer::load_for_client(
            self.shared.exec.http.clone(),
            self.shared.settings.timeouts,
            hub,
            crate::tokenizer::TokenizerRef::for_model(&self.sampler.base_model, None),
        )
    }

    /// The `tinker://` path of the weights, when the client was made from one.
    pub fn model_path(&self) -> Option<&str> {
        self.sampler.model_path.as_deref()
    }

    /// The same sampler, with every call bounded by `deadline` (e.g. a per-example timeout of an
    /// evaluation); a call that runs out fails with a timeout naming its request id and the last
    /// queue state.
    pub fn with_deadline(&self, deadline: Duration) -> SamplingClient {
        SamplingClient {
            deadline: Some(deadline),
            ..self.clone()
        }
    }

    fn site(&self, method: &'static str) -> CallSite {
        CallSite::new(method, self.deadline)
            .for_client(ClientKind::Sampling, self.sampler.session_id.clone())
    }

    /// Generates `num_samples` completions of `prompt`.
    pub fn sample(
        &self,
        prompt: ModelInput,
        num_samples: u32,
        params: SamplingParams,
    ) -> impl std::future::Future<Output = Result<SampleResponse>> + Send + 'static {
        let mut request = SampleRequest::new(&self.sampler.session_id, 0, prompt, params);
        request.num_samples = num_samples;
        self.run_sample("SamplingClient.sample", request)
    }

    /// Generates completions for a fully specified request (top-k log-probabilities, prompt
    /// log-probabilities, stop conditions …). Its `sampling_session_id` and `seq_id` are set by
    /// the client.
    pub fn sample_request(
        &self,
        mut request: SampleRequest,
    ) -> impl std::future::Future<Output = Result<SampleResponse>> + Send + 'static {
        request.sampling_session_id = Some(self.sampler.session_id.clone());
        request.base_model = None;
        request.model_path = None;
        self.run_sample("SamplingClient.sample", request)
    }

    /// Generates one completion of `prompt` and yields its tokens as the server produces them
    /// (`POST /api/v1/stream_sample`, server-sent events; Tinkex F76). Resolves once the server
    /// has accepted the stream (bounded by the client's deadline, if any); then read the
    /// [`SampleStream`] until its `done` chunk. A stream is never retried. Dropping the stream
    /// closes the connection, which stops the generation on the server.
    ///
    /// ```no_run
    /// # async fn demo(sampler: tinker_core::client::SamplingClient) -> tinker_core::Result<()> {
    /// use futures_util::StreamExt;
    /// use tinker_core::types::{ModelInput, SamplingParams};
    /// let params = SamplingParams { max_tokens: Some(32), seed: Some(1), ..SamplingParams::default() };
    /// let mut stream = sampler.sample_stream(ModelInput::from_tokens(vec![1, 2, 3]), params).await?;
    /// while let Some(chunk) = stream.next().await {
    ///     let chunk = chunk?;
    ///     if chunk.is_done() { break; }
    ///     print!("{:?} ", chunk.token_id);
    /// }
    /// # Ok(()) }
    /// ```
    pub fn sample_stream(
        &self,
        prompt: ModelInput,
        params: SamplingParams,
    ) -> impl std::future::Future<Output = Result<SampleStream>> + Send + 'static {
        let request = SampleRequest::new(&self.sampler.session_id, 0, prompt, params);
        let site = self.site("SamplingClient.sample_stream");
        let exec = self.shared.exec.clone();
        let handle = self.sampler.handle;
        let start = self.shared.check_open().and_then(|()| {
            let opts = exec.call_options(&site);
            let start = SampleStreamStart::new(&mut exec.ledger.lock(), handle, request, &opts)?;
            Ok((start, opts.deadline))
        });
        async move {
            let (start, deadline) = start?;
            let http = exec.http.clone();
            let open: BoxFuture<'static, Result<SampleStream>> = Box::pin(async move {
                let response = http
                    .send(start.request, start.timeouts)
                    .await
                    .map_err(|e| transport_error(&e))?;
                let mut body = response.body;
                if !response.head.status.is_success() {
                    let mut bytes = Vec::new();
                    while let Some(chunk) = body.next_chunk().await {
                        bytes.extend_from_slice(&chunk.map_err(|e| transport_error(&e))?);
                    }
                    return Err(SampleStreamStart::status_error(&response.head, &bytes));
                }
                Ok(SampleStream::new(body))
            });
            match deadline {
                None => open.await,
                Some(deadline) => {
                    let started = exec.runtime.now();
                    match race(open, exec.runtime.sleep_until(deadline)).await {
                        Some(result) => result,
                        None => Err(Error::Timeout {
                            waiting_for: "the head of a sample stream".into(),
                            request_id: None,
                            queue_state: None,
                            elapsed: exec.runtime.now().saturating_duration_since(started),
                        }),
                    }
                }
            }
        }
    }

    /// The log-probability of every prompt token under the model (the first is `None`).
    pub fn compute_logprobs(
        &self,
        prompt: ModelInput,
    ) -> impl std::future::Future<Output = Result<Vec<Option<f32>>>> + Send + 'static {
        let request = SampleRequest::compute_logprobs(&self.sampler.session_id, 0, prompt);
        let run = self.run_sample("SamplingClient.compute_logprobs", request);
        async move { Ok(run.await?.prompt_logprobs.unwrap_or_default()) }
    }

    fn run_sample(
        &self,
        method: &'static str,
        request: SampleRequest,
    ) -> impl std::future::Future<Output = Result<SampleResponse>> + Send + 'static {
        let site = self.site(method);
        let exec = self.shared.exec.clone();
        let handle = self.sampler.handle;
        let retries = method == "SamplingClient.compute_logprobs"
            || !exec.ledger.lock().client_config().sample_no_retries;
        let op = self
            .shared
            .check_open()
            .and_then(|()| exec.start(&site, |l, o| SampleOp::new(l, handle, request, retries, o)));
        async move { exec.run(op?, site).await }
    }
}

fn transport_error(e: &TransportError) -> Error {
    Error::Transport {
        endpoint: STREAM_SAMPLE_PATH.into(),
        message: e.to_string(),
        attempts: 1,
    }
}

type BodyRead = BoxFuture<
    'static,
    (
        Box<dyn AsyncBody>,
        Option<std::result::Result<Bytes, TransportError>>,
    ),
>;

/// The tokens of one streamed sample, as they arrive ([`SamplingClient::sample_stream`]).
///
/// A [`futures_util::Stream`] of [`SampleStreamChunk`]s (also readable with
/// [`SampleStream::next_chunk`]): one chunk per token, then a `done` chunk, then the end. A
/// transport failure or a body that ends before `done` is one `Err` item, then the end.
/// Dropping the stream closes the connection, which stops the generation on the server.
pub struct SampleStream {
    decoder: SampleStreamDecoder,
    body: Option<Box<dyn AsyncBody>>,
    reading: Option<BodyRead>,
    finished: bool,
}

impl std::fmt::Debug for SampleStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SampleStream")
            .field("finished", &self.finished)
            .finish_non_exhaustive()
    }
}

impl SampleStream {
    fn new(body: Box<dyn AsyncBody>) -> SampleStream {
        SampleStream {
            decoder: SampleStreamDecoder::new(),
            body: Some(body),
            reading: None,
            finished: false,
        }
    }

    /// The next chunk; `None` once the stream is over.
    pub async fn next_chunk(&mut self) -> Option<Result<SampleStreamChunk>> {
        std::future::poll_fn(|cx| self.poll_chunk(cx)).await
    }

    fn stop(&mut self) {
        self.finished = true;
        // Closing the connection is what stops the server.
        self.reading = None;
        self.body = None;
    }

    fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<SampleStreamChunk>>> {
        loop {
            if self.finished {
                return Poll::Ready(None);
            }
            if let Some(chunk) = self.decoder.next_chunk() {
                if chunk.is_err() || self.decoder.is_done() {
                    self.stop();
                }
                return Poll::Ready(Some(chunk));
            }
            if self.reading.is_none() {
                let Some(mut body) = self.body.take() else {
                    self.stop();
                    return Poll::Ready(None);
                };
                self.reading = Some(Box::pin(async move {
                    let chunk = body.next_chunk().await;
                    (body, chunk)
                }));
            }
            let Some(reading) = self.reading.as_mut() else {
                continue;
            };
            let Poll::Ready((body, chunk)) = reading.as_mut().poll(cx) else {
                return Poll::Pending;
            };
            self.reading = None;
            self.body = Some(body);
            match chunk {
                Some(Ok(bytes)) => self.decoder.push(&bytes),
                Some(Err(e)) => {
                    self.stop();
                    return Poll::Ready(Some(Err(transport_error(&e))));
                }
                None => self.decoder.finish(),
            }
        }
    }
}

impl futures_util::Stream for SampleStream {
    type Item = Result<SampleStreamChunk>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().poll_chunk(cx)
    }
}
