//! `sample` / `compute_logprobs`: the dispatch gates, the 429 back-pressure loop (inside the
//! call) and layer R's whole-sample retries with a new seq id each (protocol.md 8.4, 8.5).

use std::time::Instant;

use bytes::Bytes;

use crate::call::{
    AttemptId, Call, CallOptions, CallResult, Event, FuturePayload, Gates, Machine, Output, Wait,
};
use crate::error::{Error, Result};
use crate::io::TransportError;
use crate::ledger::{Ledger, SamplerHandle, CLONE_SEQ_BLOCK};
use crate::proto::decode_sample_response;
use crate::retry::sampling_layer::{SamplingDecision, SamplingRetry};
use crate::retry::ClientKind;
use crate::types::{SampleRequest, SampleResponse};

/// One `sample()` (or `compute_logprobs()`) as a machine.
///
/// Each attempt takes the sampling client's next seq id, passes the dispatch gates (held during
/// the `asample` POST, its layer-X retries and its 429 loop), polls the future and decodes the
/// protobuf result, copying the reply's `sample_sequence_ids` into each
/// [`crate::types::SampledSequence::sequence_id`]. With layer R on, a transient failure or an
/// expired future (410) resubmits the whole sample with a new seq id after 0.5·2^k ≤ 10 s ± 25 %;
/// stuck detection fails it when no sample of the session completed for the progress timeout.
#[derive(Debug)]
pub struct SampleOp {
    template: SampleRequest,
    sampler: SamplerHandle,
    session: String,
    estimate: u64,
    retry: Option<SamplingRetry>,
    opts: CallOptions,
    call: Option<Call>,
    backoff_until: Option<Instant>,
    started: Option<Instant>,
    watching: bool,
    seq_ids: Vec<u64>,
    last_request_id: Option<String>,
    last_queue_state: Option<String>,
    done: bool,
}

impl SampleOp {
    /// A sample of `request` (its `seq_id` is replaced by the sampler's next one per attempt).
    /// `retries` = run under layer R (`sample()` unless client config `sample_no_retries`;
    /// always for `compute_logprobs()`). Validates the request now.
    pub fn new(
        ledger: &mut Ledger,
        sampler: SamplerHandle,
        mut request: SampleRequest,
        retries: bool,
        mut opts: CallOptions,
    ) -> Result<SampleOp> {
        request.seq_id = Some(request.seq_id.unwrap_or(0));
        request.validate()?;
        let session = request.sampling_session_id.clone().unwrap_or_default();
        if opts.queue_client.is_none() {
            opts.queue_client = Some((ClientKind::Sampling, session.clone()));
        }
        let estimate = request.prompt.estimated_sample_bytes() as u64;
        let retry = retries.then(|| SamplingRetry::new(ledger.sampling_retry_config()));
        Ok(SampleOp {
            template: request,
            sampler,
            session,
            estimate,
            retry,
            opts,
            call: None,
            backoff_until: None,
            started: None,
            watching: false,
            seq_ids: Vec::new(),
            last_request_id: None,
            last_queue_state: None,
            done: false,
        })
    }

    /// The seq ids used so far, one per whole-sample attempt.
    pub fn seq_ids(&self) -> &[u64] {
        &self.seq_ids
    }

    fn finish(
        &mut self,
        ledger: &mut Ledger,
        now: Instant,
        result: Result<SampleResponse>,
    ) -> Output<SampleResponse> {
        if self.watching {
            ledger
                .progress_watch(&self.session, now)
                .on_finish(now, result.is_ok());
            self.watching = false;
        }
        if let Some(call) = &mut self.call {
            call.cancel(ledger, now);
        }
        self.call = None;
        self.done = true;
        Output::Done(result)
    }

    fn decode(&self, result: CallResult) -> Result<SampleResponse> {
        let CallResult::Future {
            future,
            payload: FuturePayload::Protobuf(bytes),
        } = result
        else {
            return Err(Error::decode(
                "SampleResponse",
                "expected a protobuf result",
            ));
        };
        let mut response = decode_sample_response(bytes)?;
        if future.sample_sequence_ids.is_some() {
            let ids = future.expect_sequence_ids(self.template.num_samples)?;
            for (seq, id) in response.sequences.iter_mut().zip(ids) {
                seq.sequence_id = Some(id.clone());
            }
        }
        Ok(response)
    }
}

impl Machine for SampleOp {
    type Output = SampleResponse;

    fn poll_output(&mut self, ledger: &mut Ledger, now: Instant) -> Output<SampleResponse> {
        if self.done {
            return Output::Done(Err(Error::Closed("the sample already finished".into())));
        }
        let started = *self.started.get_or_insert(now);
        if !self.watching {
            ledger.progress_watch(&self.session, now).on_start(now);
            self.watching = true;
        }
        let watch = ledger.progress_watch(&self.session, now);
        if watch.is_stuck(now) {
            let secs = ledger
                .sampling_retry_config()
                .progress_timeout
                .as_secs_f64();
            let e = Error::Transport {
                endpoint: "/api/v1/asample".into(),
                message: format!("No progress made in {secs:?}s. Requests appear to be stuck."),
                attempts: self.seq_ids.len() as u32,
            };
            return self.finish(ledger, now, Err(e));
        }
        let stuck_at = watch.deadline();
        if self.call.is_none() {
            if self.opts.deadline.is_some_and(|d| now >= d) {
                let e = Error::Timeout {
                    waiting_for: match self.seq_ids.len() {
                        0 => "a sample".into(),
                        n => format!("a sample (backing off after attempt {n})"),
                    },
                    request_id: self.last_request_id.clone(),
                    queue_state: self.last_queue_state.clone(),
                    elapsed: now.saturating_duration_since(started),
                };
                return self.finish(ledger, now, Err(e));
            }
            if let Some(until) = self.backoff_until.filter(|u| now < *u) {
                return Output::Wait(
                    Wait::until(until)
                        .or_deadline(self.opts.deadline)
                        .or_deadline(stuck_at),
                );
            }
            let seq = ledger.next_sample_seq_id(self.sampler);
            self.seq_ids.push(seq);
            let mut request = self.template.clone();
            request.seq_id = Some(seq);
            let gates = Gates {
                sampling_estimate: Some(self.estimate),
                ..Gates::default()
            };
            let mut opts = self.opts.clone();
            opts.completions = Some((self.session.clone(), seq / CLONE_SEQ_BLOCK));
            match Call::new(ledger, request, opts, gates) {
                Ok(call) => self.call = Some(call),
                Err(e) => return self.finish(ledger, now, Err(e)),
            }
        }
        let Some(call) = self.call.as_mut() else {
            return Output::Done(Err(Error::Closed("no sample call".into())));
        };
        match call.poll_output(ledger, now) {
            Output::Transmit(t) => Output::Transmit(t),
            Output::Event(e) => {
                // Kept for the timeout error of a later back-off.
                match &e {
                    Event::Submitted { request_id } => {
                        self.last_request_id = Some(request_id.clone());
                    }
                    Event::StillQueued { queue_state } => {
                        self.last_queue_state = Some(queue_state.clone());
                    }
                    Event::QueueState { state, reason, .. } => {
                        self.last_queue_state = Some(match reason {
                            Some(r) => format!("{} ({r})", state.name()),
                            None => state.name().to_owned(),
                        });
                    }
                    _ => {}
                }
                Output::Event(e)
            }
            Output::Wait(w) => Output::Wait(w.or_deadline(stuck_at)),
            Output::Done(Ok(result)) => {
                self.call = None;
                let decoded = self.decode(result);
                self.finish(ledger, now, decoded)
            }
            Output::Done(Err(e)) => {
                let failure = call.failure();
                let attempts = call.attempts();
                self.call = None;
                let decision = match (&mut self.retry, failure) {
                    (Some(retry), Some(f)) => {
                        let draw = ledger.rng().next_f64();
                        retry.on_failure(f, draw)
                    }
                    _ => SamplingDecision::GiveUp,
                };
                match decision {
                    SamplingDecision::Resubmit(plan) => {
                        self.backoff_until = Some(now + plan.delay);
                        Output::Event(Event::Retrying {
                            endpoint: "/api/v1/asample",
                            attempt: attempts,
                            delay: plan.delay,
                            reason: e.to_string(),
                        })
                    }
                    SamplingDecision::GiveUp => self.finish(ledger, now, Err(e)),
                }
            }
        }
    }

    fn handle_response(
        &mut self,
        attempt: AttemptId,
        head: http::response::Parts,
        body: Bytes,
        now: Instant,
    ) {
        if let Some(call) = &mut self.call {
            call.handle_response(attempt, head, body, now);
        }
    }

    fn handle_transport_error(&mut self, attempt: AttemptId, error: TransportError, now: Instant) {
        if let Some(call) = &mut self.call {
            call.handle_transport_error(attempt, error, now);
        }
    }

    fn cancel(&mut self, ledger: &mut Ledger, now: Instant) {
        if !self.done {
            let _ = self.finish(ledger, now, Err(Error::Cancelled("sample".into())));
        }
    }
}
