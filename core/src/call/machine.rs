//! The [`Call`] state machine.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::HeaderMap;

use super::{
    AttemptId, BlockReason, CallOptions, CallResult, Event, FuturePayload, Gates, Machine, Output,
    Submission, Transmit, Wait,
};
use crate::auth::InvalidTokenAction;
use crate::endpoints::{
    bare_uuid, idempotency_key, status_error, AttemptHeaders, EndpointId, EndpointSpec,
    IdempotencyRule, Reply, RetrieveFuture,
};
use crate::error::{Error, Result, StatusError};
use crate::flow::{BytePermit, Completion, DispatchEntry, DispatchProgress, PollerFailure};
use crate::io::{Timeouts, TransportError};
use crate::ledger::Ledger;
use crate::retry::holder_layer::{HolderDecision, HolderRetry};
use crate::retry::http_layer::{self, HttpDecision};
use crate::retry::poll::{PollAction, PollErrors, PollFatal};
use crate::retry::{BillingVerdict, ClientKind, DelaySource, Failure, QueueState};
use crate::types::{
    FutureReply, RetrieveFutureRequest, RetrieveFuturesResponse, TryAgainResponse, UntypedFuture,
};

/// The read timeout of one `retrieve_future` poll (7.1).
const POLL_READ_TIMEOUT: Duration = Duration::from_secs(45);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// POST the submitting request.
    Submit,
    /// Re-POST a sample the server pushed back (429): wait for the holder-wide back-off first.
    Resend,
    /// POST `retrieve_future`.
    Poll,
    /// POST `retrieve_futures` for every waiting sample of the session (this call holds the
    /// poller's lease, 7.7).
    BatchPoll,
    /// POST `auth/token` after the server rejected this call's JWT, then replay (2.3).
    Exchange,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Passing the shared-state gates.
    Gates,
    /// Send the next attempt of this step now.
    Ready(Step),
    /// An attempt is out.
    InFlight(AttemptId, Step),
    /// Back-off: nothing before the instant.
    Sleeping(Instant, Step),
    /// Reserving a metadata-only payload's bytes from the inflight budget (7.4).
    Reserve(u64),
    /// Waiting for the session's `retrieve_futures` poller to report this future (7.7).
    AwaitCompletion,
    /// Waiting for another request's JWT exchange, then replaying the submit (2.3).
    AwaitCredential,
    /// Result handed out (or about to be).
    Finished,
}

#[derive(Debug)]
enum Input {
    Response(http::response::Parts, Bytes),
    Transport(TransportError),
}

/// What the call holds from the ledger, refunded exactly once.
#[derive(Debug, Default)]
struct Held {
    turn: bool,
    fwdbwd: Option<BytePermit>,
    dispatch: Option<DispatchEntry>,
    inflight: Option<BytePermit>,
}

/// One logical call: submit → retries → (server future → polls) → raw result.
///
/// Built by the operations of [`crate::ops`]; most users never touch it. It implements
/// [`Machine`]: drain [`Machine::poll_output`], perform transmits, feed their outcomes back.
///
/// Retry layers come from the endpoint table ([`crate::endpoints::ENDPOINTS`]): layer H (same
/// idempotency key, `x-stainless-retry-count` = k, `Retry-After`, `x-should-retry`), the
/// connection pool's empty-400 rule, layer X (new key, 300 s), the 402 billing pause, the
/// `asample` back-pressure loop and the shared retry budget. Futures are polled by the rules of
/// protocol.md 7.2-7.5.
///
/// ```
/// use std::time::Instant;
/// use tinker_core::call::{Call, CallOptions, Gates, Machine, Output};
/// use tinker_core::endpoints::RequestContext;
/// use tinker_core::ledger::Ledger;
/// use tinker_core::settings::ApiKey;
/// use tinker_core::types::GetInfoRequest;
///
/// let ctx = RequestContext::new("http://127.0.0.1:8000", ApiKey::new("tml-test-key-0001").unwrap()).unwrap();
/// let mut ledger = Ledger::new(ctx, 7);
/// # #[allow(clippy::disallowed_methods)]
/// let now = Instant::now();
/// let mut call = Call::new(&mut ledger, GetInfoRequest::new("sess:train:0"), CallOptions::default(), Gates::default()).unwrap();
/// let Output::Transmit(t) = call.poll_output(&mut ledger, now) else { panic!() };
/// assert_eq!(t.request.uri().path(), "/api/v1/get_info");
/// let head = http::Response::builder().status(200).body(()).unwrap().into_parts().0;
/// call.handle_response(t.attempt, head, r#"{"model_id":"m","model_data":{}}"#.into(), now);
/// assert!(matches!(call.poll_output(&mut ledger, now), Output::Done(Ok(_))));
/// ```
#[derive(Debug)]
pub struct Call {
    submission: Box<dyn Submission>,
    spec: &'static EndpointSpec,
    pub(super) opts: CallOptions,
    gates: Gates,
    held: Held,
    started: Option<Instant>,
    submit_started: Option<Instant>,
    key: Option<String>,
    http_retries: u32,
    attempts: u32,
    holder: Option<HolderRetry>,
    future: Option<UntypedFuture>,
    poll_last: Option<RetrieveFuture>,
    allow_metadata_only: bool,
    poll_errors: PollErrors,
    stage: Stage,
    input: Option<(AttemptId, Input)>,
    events: VecDeque<Event>,
    result: Option<Result<CallResult>>,
    done: bool,
    failure: Option<Failure>,
    last_queue_state: Option<String>,
    /// The completion poller this call waits on, while registered with it.
    poller: Option<(String, u64)>,
    /// The poller reported this future: it is acknowledged once the call ends.
    completion_seen: bool,
    /// A fingerprint of the credential the last submit was sent with (never the credential).
    sent_credential: u64,
    /// The one replay after an `invalid_token` rejection has been used.
    replayed: bool,
    /// The rejection being answered by an exchange, surfaced if the exchange fails.
    rejection: Option<Error>,
    /// The training-run seq id this call's request carries, once its turn started.
    seq_id: Option<u64>,
}

impl std::fmt::Debug for dyn Submission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.spec().method.as_str(), self.spec().path)
    }
}

impl Call {
    /// A call of `request`, passing `gates` before its first POST. Validates the request now:
    /// invalid input is an error before anything is sent.
    pub fn new<S: Submission + 'static>(
        ledger: &mut Ledger,
        request: S,
        opts: CallOptions,
        gates: Gates,
    ) -> Result<Call> {
        Call::from_boxed(ledger, Box::new(request), opts, gates)
    }

    /// Same, with an already boxed request.
    pub fn from_boxed(
        ledger: &mut Ledger,
        submission: Box<dyn Submission>,
        opts: CallOptions,
        gates: Gates,
    ) -> Result<Call> {
        submission.check()?;
        let spec = submission.spec();
        let key = new_key(ledger, spec.idempotency);
        Ok(Call {
            held: Held {
                turn: gates.turn.is_some(),
                ..Held::default()
            },
            submission,
            spec,
            opts,
            gates,
            started: None,
            submit_started: None,
            key,
            http_retries: 0,
            attempts: 0,
            holder: None,
            future: None,
            poll_last: None,
            allow_metadata_only: true,
            poll_errors: PollErrors::default(),
            stage: Stage::Gates,
            input: None,
            events: VecDeque::new(),
            result: None,
            done: false,
            failure: None,
            last_queue_state: None,
            poller: None,
            completion_seen: false,
            sent_credential: 0,
            replayed: false,
            rejection: None,
            seq_id: None,
        })
    }

    /// The endpoint being called.
    pub fn endpoint(&self) -> &'static EndpointSpec {
        self.spec
    }

    /// The server future's request id, once submitted.
    pub fn request_id(&self) -> Option<&str> {
        self.future.as_ref().map(|f| f.request_id.as_str())
    }

    /// How the last attempt failed, as the retry layers classify it (after an error result:
    /// what layer R decides on). `None` for errors no layer could retry (timeouts, decoding).
    pub fn failure(&self) -> Option<Failure> {
        self.failure
    }

    /// The training-run seq id the request carries, once its turn started (`None` before, and
    /// for requests outside a training run).
    pub fn seq_id(&self) -> Option<u64> {
        self.seq_id
    }

    /// The training run whose turn this call waits for, if any.
    pub fn turn_model_id(&self) -> Option<&str> {
        self.gates.turn.as_ref().map(|slot| slot.model_id.as_str())
    }

    /// Whether the call still holds its place in a training run's turn: its POST has not
    /// returned a future, failed for good, or been cancelled.
    pub fn holds_turn(&self) -> bool {
        self.held.turn
    }

    /// The server answered this call's POST, but an operation took the reply itself (a save's
    /// 409): the submission is over, so the call's turn is finished rather than handed to the
    /// background when the call is then cancelled.
    pub fn submission_answered(&mut self, ledger: &mut Ledger) {
        self.release_submission(ledger);
    }

    /// HTTP attempts sent so far (submits and polls).
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    fn label(&self) -> &'static str {
        self.spec.path.trim_start_matches("/api/v1/")
    }

    fn finish(&mut self, ledger: &mut Ledger, result: Result<CallResult>) {
        self.release_all(ledger);
        self.stage = Stage::Finished;
        self.result = Some(result);
    }

    /// Refunds what the submission holds (turn, dispatch gates): its POST is over.
    fn release_submission(&mut self, ledger: &mut Ledger) {
        if self.held.turn {
            self.held.turn = false;
            if let Some(slot) = &self.gates.turn {
                ledger.finish_chunk(slot);
            }
        }
        if let Some(p) = self.held.fwdbwd.take() {
            ledger.release_fwdbwd_bytes(p);
        }
        if let Some(e) = self.held.dispatch.take() {
            ledger.sampling_dispatch().release(e);
            ledger.bump();
        }
    }

    fn release_all(&mut self, ledger: &mut Ledger) {
        self.release_submission(ledger);
        self.leave_poller(ledger);
        if let Stage::InFlight(_, Step::Exchange) = self.stage {
            if let Some(jwt) = ledger.jwt_mut() {
                jwt.abort_exchange();
            }
            ledger.bump();
        }
        if let Some(p) = self.held.inflight.take() {
            ledger.release_inflight_bytes(p);
        }
    }

    /// Deregisters from the completion poller (once): hands back its lease if this call holds
    /// it, and acknowledges the future if the poller reported it.
    fn leave_poller(&mut self, ledger: &mut Ledger) {
        let Some((session, clone)) = self.poller.take() else {
            return;
        };
        let id = self.request_id().unwrap_or_default().to_owned();
        let poller = ledger.completion_poller(&session, clone);
        if let Stage::InFlight(attempt, Step::BatchPoll) = self.stage {
            poller.release(attempt.0);
        }
        if self.completion_seen {
            poller.retrieved(&id);
        } else {
            poller.unwatch(&id);
        }
        ledger.bump();
    }

    fn timeout_error(&self, now: Instant) -> Error {
        let waiting_for = if self.poller.is_some() && !self.completion_seen {
            format!(
                "the completion of {} (retrieve_futures poller)",
                self.label()
            )
        } else if self.future.is_some() {
            format!("the result of {}", self.label())
        } else {
            format!("the submission of {}", self.label())
        };
        Error::Timeout {
            waiting_for,
            request_id: self.request_id().map(str::to_owned),
            queue_state: self.last_queue_state.clone(),
            elapsed: self
                .started
                .map_or(Duration::ZERO, |s| now.saturating_duration_since(s)),
        }
    }

    /// Passes the gates in order: turn, forward/backward bytes, sampling dispatch.
    fn pass_gates(&mut self, ledger: &mut Ledger, now: Instant) -> Option<BlockReason> {
        if let Some(slot) = &self.gates.turn {
            if !ledger.may_submit(slot) {
                return Some(BlockReason::Turn);
            }
        }
        if let Some(bytes) = self.gates.fwdbwd_bytes {
            if self.held.fwdbwd.is_none() {
                match ledger.acquire_fwdbwd_bytes(bytes) {
                    Some(p) => self.held.fwdbwd = Some(p),
                    None => return Some(BlockReason::FwdBwdBytes),
                }
            }
        }
        if let Some(estimate) = self.gates.sampling_estimate {
            let dispatch = ledger.sampling_dispatch();
            let entry = self
                .held
                .dispatch
                .get_or_insert_with(|| dispatch.begin(estimate, now));
            if let DispatchProgress::Waiting(_) = dispatch.advance(entry) {
                return Some(BlockReason::SamplingDispatch);
            }
        }
        None
    }

    /// Every gate is passed and the first POST is next: a call of a training run takes its seq
    /// id now (starting its turn if it is the turn's first chunk to go) and puts it into its
    /// request. Nothing to do for other calls, or when the id is already bound.
    fn start_turn(&mut self, ledger: &mut Ledger) -> Result<()> {
        let Some(slot) = &self.gates.turn else {
            return Ok(());
        };
        if self.seq_id.is_some() || !self.held.turn {
            return Ok(());
        }
        let Some(seq_id) = ledger.start_chunk(slot) else {
            return Err(Error::Closed(format!(
                "the training-run turn of this {} call was given up",
                self.label()
            )));
        };
        self.seq_id = Some(seq_id);
        self.submission.bind_seq_id(seq_id)
    }

    /// Whether giving up on this call now would leave a hole in its training run's seq ids: it
    /// still holds its place in a turn that has started.
    fn must_still_send(&self, ledger: &Ledger) -> bool {
        self.held.turn
            && self
                .gates
                .turn
                .as_ref()
                .is_some_and(|slot| ledger.turn_started(&slot.model_id, slot.turn))
    }

    /// Hands this call to the background ([`Ledger::detach_call`]) to finish its POST, leaving
    /// in its place a finished call that holds nothing. An attempt that was in flight is sent
    /// again (same idempotency key and seq id: the server deduplicates); no deadline applies.
    pub(crate) fn hand_to_background(&mut self, ledger: &mut Ledger) {
        let husk = Call {
            submission: Box::new(super::submission::Handed(self.spec)),
            spec: self.spec,
            opts: self.opts.clone(),
            gates: Gates::default(),
            held: Held::default(),
            started: self.started,
            submit_started: self.submit_started,
            key: None,
            http_retries: 0,
            attempts: self.attempts,
            holder: None,
            future: None,
            poll_last: None,
            allow_metadata_only: false,
            poll_errors: PollErrors::default(),
            stage: Stage::Finished,
            input: None,
            events: VecDeque::new(),
            result: None,
            done: false,
            failure: self.failure,
            last_queue_state: self.last_queue_state.clone(),
            poller: None,
            completion_seen: false,
            sent_credential: 0,
            replayed: false,
            rejection: None,
            seq_id: self.seq_id,
        };
        let mut orphan = std::mem::replace(self, husk);
        orphan.opts.deadline = None;
        orphan.events.clear();
        if orphan.input.is_none() {
            match orphan.stage {
                Stage::InFlight(_, Step::Exchange) => {
                    if let Some(jwt) = ledger.jwt_mut() {
                        jwt.abort_exchange();
                    }
                    ledger.bump();
                    orphan.stage = Stage::Ready(Step::Submit);
                }
                Stage::InFlight(_, step) => {
                    // Sent again with the same key: a retry as far as the server can tell.
                    orphan.http_retries += 1;
                    orphan.stage = Stage::Ready(step);
                }
                _ => {}
            }
        }
        ledger.detach_call(orphan);
    }

    fn transmit(&mut self, ledger: &mut Ledger, step: Step, now: Instant) -> Output<CallResult> {
        let attempt = AttemptId(ledger.next_id());
        let connect = self.opts.connect_timeout.unwrap_or(Duration::from_secs(5));
        let built = match step {
            Step::Submit | Step::Resend => {
                self.submit_started.get_or_insert(now);
                self.sent_credential = fingerprint(ledger.context().credential().expose());
                let headers = AttemptHeaders {
                    idempotency_key: self.key.clone(),
                    retry_count: self.http_retries,
                    sdk_method: self.opts.sdk_method.clone(),
                };
                self.submission
                    .build_attempt(ledger.context(), &headers)
                    .map(|r| (r, self.submission.read_timeout_duration()))
            }
            Step::Exchange => {
                let Some(key) = ledger.jwt_api_key().cloned() else {
                    return Output::Done(Err(Error::Closed("no JWT auth".into())));
                };
                if let Some(jwt) = ledger.jwt_mut() {
                    jwt.begin_exchange();
                }
                let exchange = super::WithCredential {
                    request: crate::types::AuthTokenRequest {},
                    credential: key,
                };
                let headers = AttemptHeaders {
                    idempotency_key: new_key(ledger, EndpointId::AuthToken.spec().idempotency),
                    retry_count: 0,
                    sdk_method: self.opts.sdk_method.clone(),
                };
                exchange
                    .build_attempt(ledger.context(), &headers)
                    .map(|r| (r, exchange.read_timeout_duration()))
            }
            Step::BatchPoll => {
                let Some((session, clone)) = self.poller.clone() else {
                    return Output::Done(Err(Error::Closed("no completion poller".into())));
                };
                let lease = ledger
                    .completion_poller(&session, clone)
                    .lease_long_poll(attempt.0, now);
                let crate::flow::Lease::Send(poll) = lease else {
                    // Someone else took the lease meanwhile: wait for them.
                    self.stage = Stage::AwaitCompletion;
                    return self.poll_output(ledger, now);
                };
                let headers = AttemptHeaders {
                    idempotency_key: new_key(
                        ledger,
                        EndpointId::RetrieveFutures.spec().idempotency,
                    ),
                    retry_count: 0,
                    sdk_method: self.opts.sdk_method.clone(),
                };
                let read = crate::endpoints::ApiRequest::read_timeout(&poll).duration();
                let built = ledger.context().build(&poll, &headers);
                if built.is_err() {
                    ledger.completion_poller(&session, clone).release(attempt.0);
                }
                built.map(|r| (r, read))
            }
            Step::Poll => {
                let next = self.next_poll(now);
                let headers = AttemptHeaders {
                    idempotency_key: new_key(ledger, IdempotencyRule::PerAttemptChain),
                    retry_count: 0,
                    sdk_method: self.opts.sdk_method.clone(),
                };
                let built = ledger.context().build(&next, &headers);
                self.poll_last = Some(next);
                built.map(|r| (r, POLL_READ_TIMEOUT))
            }
        };
        match built {
            Ok((request, read)) => {
                self.attempts += 1;
                self.stage = Stage::InFlight(attempt, step);
                Output::Transmit(Transmit {
                    attempt,
                    request,
                    timeouts: Timeouts { connect, read },
                })
            }
            Err(e) => {
                self.finish(ledger, Err(e));
                self.poll_output(ledger, now)
            }
        }
    }

    fn next_poll(&self, now: Instant) -> RetrieveFuture {
        if let Some(last) = &self.poll_last {
            return last.next(self.allow_metadata_only);
        }
        let request_id = self
            .future
            .as_ref()
            .map(|f| f.request_id.clone())
            .unwrap_or_default();
        let roundtrip = self
            .submit_started
            .map_or(0.0, |s| now.saturating_duration_since(s).as_secs_f64());
        RetrieveFuture {
            body: RetrieveFutureRequest {
                request_id,
                // False when the retrieve_futures poller already reported the result (7.7).
                allow_metadata_only: self.allow_metadata_only,
            },
            request_type: self.submission.result_type(),
            iteration: 0,
            create_roundtrip_secs: Some(roundtrip),
        }
    }

    fn queue_client(&self) -> (ClientKind, String) {
        self.opts
            .queue_client
            .clone()
            .unwrap_or((ClientKind::Training, self.label().to_owned()))
    }

    fn observe_queue(
        &mut self,
        ledger: &mut Ledger,
        state: QueueState,
        reason: Option<&str>,
        now: Instant,
    ) {
        let (kind, id) = self.queue_client();
        let obs = ledger.queue_state(kind, &id).observe(state, reason, now);
        let shown = match reason.filter(|r| !r.is_empty()) {
            Some(r) => format!("{} ({r})", state.name()),
            None => state.name().to_owned(),
        };
        let new_to_call = self.last_queue_state.as_deref() != Some(shown.as_str());
        self.last_queue_state = Some(shown.clone());
        if obs.changed.is_none() && obs.log.is_none() && new_to_call {
            // This call has not seen the state yet, though its client has.
            self.events
                .push_back(Event::StillQueued { queue_state: shown });
        }
        if obs.changed.is_some() || obs.log.is_some() {
            let (state, reason) = match obs.changed {
                Some(c) => (c.state, c.reason),
                None => (state, reason.map(str::to_owned)),
            };
            self.events.push_back(Event::QueueState {
                state,
                reason,
                log: obs.log,
            });
        }
    }

    fn result_arrived(&mut self, ledger: &mut Ledger, now: Instant) {
        let (kind, id) = self.queue_client();
        if let Some(change) = ledger.queue_state(kind, &id).on_result(now) {
            self.events.push_back(Event::QueueState {
                state: change.state,
                reason: change.reason,
                log: None,
            });
        }
    }

    // ------------------------------------------------------------------ submit outcomes

    fn on_submit_input(&mut self, ledger: &mut Ledger, input: Input, now: Instant) {
        let (status, headers, body) = match input {
            Input::Response(parts, body) => (Some(parts.status.as_u16()), parts.headers, body),
            Input::Transport(e) => {
                return self.on_submit_failure(
                    ledger,
                    None,
                    HeaderMap::new(),
                    Bytes::new(),
                    Some(e),
                    now,
                )
            }
        };
        let status = status.unwrap_or(0);
        if !(200..300).contains(&status) {
            return self.on_submit_failure(ledger, Some(status), headers, body, None, now);
        }
        ledger.proxy_credits().on_success();
        ledger.retry_budget().on_success();
        match self.spec.reply {
            Reply::Future(_) => match crate::endpoints::decode_json::<UntypedFuture>(&body) {
                Ok(future) => {
                    self.release_submission(ledger);
                    self.events.push_back(Event::Submitted {
                        request_id: future.request_id.clone(),
                    });
                    self.future = Some(future);
                    self.stage = Stage::Ready(Step::Poll);
                    self.watch_completion(ledger);
                }
                Err(e) => self.finish(ledger, Err(e)),
            },
            _ => self.finish(
                ledger,
                Ok(CallResult::Direct {
                    status,
                    headers,
                    body,
                }),
            ),
        }
    }

    fn on_submit_failure(
        &mut self,
        ledger: &mut Ledger,
        status: Option<u16>,
        headers: HeaderMap,
        body: Bytes,
        transport: Option<TransportError>,
        now: Instant,
    ) {
        if status == Some(401) && self.on_rejected_token(ledger, &headers, &body) {
            return;
        }
        let raw = match (&transport, status) {
            (Some(e), _) => Failure::Transport(e.kind),
            (None, Some(s)) => Failure::Status(s),
            (None, None) => Failure::Permanent,
        };
        // Layer H: the same request again, same key, retry count k + 1.
        if self.spec.retries.http {
            let attempt = match (&transport, status) {
                (Some(e), _) => http_layer::Attempt::Transport(e.kind),
                (None, s) => http_layer::Attempt::Response {
                    status: s.unwrap_or(0),
                    headers: &headers,
                },
            };
            let draw = ledger.rng().next_f64();
            let wall = ledger.wall_time(now);
            if let HttpDecision::Retry(plan) = http_layer::decide(
                attempt,
                self.http_retries,
                http_layer::DEFAULT_MAX_RETRIES,
                wall,
                draw,
            ) {
                if ledger.retry_budget().try_spend(raw) {
                    self.http_retries += 1;
                    self.schedule_retry(plan.delay, Step::Submit, raw, now);
                    return;
                }
            }
        }
        // The connection pool turns an empty-bodied 400 into a connection error (8.7).
        let failure = match status {
            Some(s) if transport.is_none() => {
                Failure::from_response(s, &headers, body.is_empty(), ledger.proxy_credits())
                    .unwrap_or(raw)
            }
            _ => raw,
        };
        self.failure = Some(failure);
        // asample back-pressure (8.5): 429, or 402 inside the billing window.
        if let Some(estimate) = self.gates.sampling_estimate {
            let pushed_back = match failure {
                Failure::Status(429) => true,
                Failure::Status(402) => match ledger.billing().on_402(now) {
                    BillingVerdict::Pause { .. } => true,
                    BillingVerdict::GiveUp => false,
                },
                _ => false,
            };
            if pushed_back {
                ledger.sampling_dispatch().on_rejected(estimate, now);
                ledger.bump();
                self.key = new_key(ledger, self.spec.idempotency);
                self.http_retries = 0;
                let wait = ledger
                    .sampling_dispatch_state()
                    .resend_wait(now)
                    .unwrap_or(Duration::ZERO);
                self.schedule_retry(wait, Step::Resend, failure, now);
                return;
            }
        }
        // Layer X: a new request (new key) until 300 s have passed; 402 pauses.
        if self.spec.retries.holder {
            let start = self.submit_started.unwrap_or(now);
            let holder = self.holder.get_or_insert_with(|| HolderRetry::new(start));
            let draw = ledger.rng().next_f64();
            if let HolderDecision::Retry(plan) =
                holder.on_failure(failure, now, ledger.billing(), draw)
            {
                let allowed = plan.source == DelaySource::BillingPause
                    || ledger.retry_budget().try_spend(failure);
                if allowed {
                    if plan.source == DelaySource::BillingPause {
                        self.events.push_back(Event::BillingPaused);
                    }
                    if self.spec.idempotency != IdempotencyRule::FixedBareUuid {
                        self.key = new_key(ledger, self.spec.idempotency);
                    }
                    self.http_retries = 0;
                    self.schedule_retry(plan.delay, Step::Submit, failure, now);
                    return;
                }
            }
        }
        let error = match (transport, status) {
            (Some(e), _) => Error::Transport {
                endpoint: self.submission.rendered_path(ledger.context()),
                message: e.message,
                attempts: self.attempts,
            },
            (None, Some(s)) => self.status_error(ledger, s, &headers, &body),
            (None, None) => Error::Closed("no response".into()),
        };
        self.finish(ledger, Err(error));
    }

    fn schedule_retry(&mut self, delay: Duration, step: Step, failure: Failure, now: Instant) {
        self.events.push_back(Event::Retrying {
            endpoint: self.spec.path,
            attempt: self.attempts,
            delay,
            reason: describe(failure),
        });
        self.stage = Stage::Sleeping(now + delay, step);
    }

    fn status_error(
        &self,
        ledger: &Ledger,
        status: u16,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Error {
        let mut e = status_error(
            &self.submission.rendered_path(ledger.context()),
            status,
            headers,
            body,
        );
        if let Error::Status(s) = &mut e {
            let s: &mut StatusError = s;
            s.attempts = self.attempts;
            s.request_id = self.request_id().map(str::to_owned);
        }
        e
    }

    // ------------------------------------------------------------------ JWT rejection (2.3)

    /// A 401 on the submit: if it rejects this call's JWT (`invalid_token`) and the one replay
    /// is unused, arrange the replay (exchanging first unless another request already did) and
    /// return `true`.
    fn on_rejected_token(&mut self, ledger: &mut Ledger, headers: &HeaderMap, body: &[u8]) -> bool {
        if self.replayed
            || ledger.jwt().is_none()
            || !crate::auth::is_invalid_token_challenge(headers)
        {
            return false;
        }
        self.replayed = true;
        let current = ledger.context().credential().expose().to_owned();
        let action = if fingerprint(&current) != self.sent_credential {
            InvalidTokenAction::ReplayWithCurrent
        } else {
            match ledger.jwt_mut() {
                Some(jwt) => jwt.on_invalid_token(&current),
                None => InvalidTokenAction::Fail,
            }
        };
        self.http_retries = 0;
        match action {
            InvalidTokenAction::ReplayWithCurrent => self.stage = Stage::Ready(Step::Submit),
            InvalidTokenAction::WaitForExchange => self.stage = Stage::AwaitCredential,
            InvalidTokenAction::ExchangeThenReplay => {
                self.rejection = Some(self.status_error(ledger, 401, headers, body));
                self.stage = Stage::Ready(Step::Exchange);
            }
            InvalidTokenAction::Fail => return false,
        }
        true
    }

    fn on_exchange_input(&mut self, ledger: &mut Ledger, input: Input, now: Instant) {
        let token = match input {
            Input::Response(parts, body) if parts.status.is_success() => {
                crate::endpoints::decode_json::<crate::types::AuthTokenResponse>(&body)
                    .and_then(|t| ledger.install_jwt(t.jwt, now))
                    .map_err(|e| (e, false))
            }
            Input::Response(parts, body) => {
                let status = parts.status.as_u16();
                let e = status_error("/api/v1/auth/token", status, &parts.headers, &body);
                Err((e, status == 401))
            }
            Input::Transport(e) => Err((
                Error::Transport {
                    endpoint: "/api/v1/auth/token".into(),
                    message: e.message,
                    attempts: 1,
                },
                false,
            )),
        };
        ledger.bump();
        match token {
            Ok(()) => self.stage = Stage::Ready(Step::Submit),
            Err((e, unauthorized)) => {
                if let Some(jwt) = ledger.jwt_mut() {
                    jwt.on_exchange_failed(now, unauthorized);
                }
                tracing::debug!(error = %e, "JWT exchange after a rejected token failed");
                let error = self.rejection.take().unwrap_or(e);
                self.failure = None;
                self.finish(ledger, Err(error));
            }
        }
    }

    // ------------------------------------------------------------------ retrieve_futures (7.7)

    /// After the submit: a sample whose session uses the `retrieve_futures` poller registers
    /// with it instead of long-polling its own future.
    fn watch_completion(&mut self, ledger: &mut Ledger) {
        if self.spec.id != EndpointId::ASample
            || !ledger.client_config().sample_use_retrieve_futures
        {
            return;
        }
        let Some((session, clone)) = self.opts.completions.clone() else {
            return;
        };
        let id = self.request_id().unwrap_or_default().to_owned();
        ledger.completion_poller(&session, clone).watch(&id);
        self.poller = Some((session, clone));
        self.stage = Stage::AwaitCompletion;
    }

    fn await_completion(&mut self, ledger: &mut Ledger, now: Instant) -> Output<CallResult> {
        let Some((session, clone)) = self.poller.clone() else {
            self.stage = Stage::Ready(Step::Poll);
            return self.poll_output(ledger, now);
        };
        let id = self.request_id().unwrap_or_default().to_owned();
        let deadline = self.opts.deadline;
        let poller = ledger.completion_poller(&session, clone);
        if let Some(completion) = poller.take(&id) {
            // Fetch the payload (or the error) with ordinary polls that refuse metadata-only
            // replies, reserving the announced size first (7.7).
            self.completion_seen = true;
            self.allow_metadata_only = false;
            self.stage = match completion {
                Completion::Finished {
                    payload_bytes: Some(n),
                } if n > 0 => Stage::Reserve(n),
                _ => Stage::Ready(Step::Poll),
            };
            return self.poll_output(ledger, now);
        }
        if let Some(why) = poller.stopped() {
            let e = Error::Transport {
                endpoint: "/api/v1/retrieve_futures".into(),
                message: format!("{why}; request {id} is still unfinished"),
                attempts: self.attempts,
            };
            self.failure = None;
            self.finish(ledger, Err(e));
            return self.poll_output(ledger, now);
        }
        if poller.is_polling() {
            return Output::Wait(
                Wait::blocked(BlockReason::Completion, ledger.generation()).or_deadline(deadline),
            );
        }
        match poller.resume_at().filter(|at| now < *at) {
            Some(at) => Output::Wait(
                Wait::until(at)
                    .merge(Wait::blocked(BlockReason::Completion, ledger.generation()))
                    .or_deadline(deadline),
            ),
            // Nobody polls: this call takes the lease.
            None => self.transmit(ledger, Step::BatchPoll, now),
        }
    }

    fn on_batch_poll_input(
        &mut self,
        ledger: &mut Ledger,
        attempt: AttemptId,
        input: Input,
        now: Instant,
    ) {
        self.stage = Stage::AwaitCompletion;
        let Some((session, clone)) = self.poller.clone() else {
            return;
        };
        let (failure, detail) = match input {
            Input::Transport(e) => (
                Failure::Transport(e.kind),
                format!("transport error: {}", e.message),
            ),
            Input::Response(parts, body) => {
                let status = parts.status.as_u16();
                match Failure::from_response(
                    status,
                    &parts.headers,
                    body.is_empty(),
                    ledger.proxy_credits(),
                ) {
                    None => match crate::endpoints::decode_json::<RetrieveFuturesResponse>(&body) {
                        Ok(reply) => {
                            ledger
                                .completion_poller(&session, clone)
                                .on_reply(attempt.0, reply);
                            ledger.bump();
                            return;
                        }
                        Err(e) => (Failure::Permanent, e.to_string()),
                    },
                    Some(f) => (
                        f,
                        format!("HTTP {status}: {}", String::from_utf8_lossy(&body)),
                    ),
                }
            }
        };
        let mut billing = std::mem::take(ledger.billing());
        let outcome = ledger.completion_poller(&session, clone).on_failure(
            attempt.0,
            failure,
            &detail,
            now,
            &mut billing,
        );
        *ledger.billing() = billing;
        ledger.bump();
        match outcome {
            Some(PollerFailure::Retrying(at)) => self.events.push_back(Event::Retrying {
                endpoint: "/api/v1/retrieve_futures",
                attempt: self.attempts,
                delay: at.saturating_duration_since(now),
                reason: describe(failure),
            }),
            Some(PollerFailure::BillingPaused { log_now: true, .. }) => {
                self.events.push_back(Event::BillingPaused);
            }
            _ => {}
        }
    }

    // ------------------------------------------------------------------ poll outcomes

    fn on_poll_input(&mut self, ledger: &mut Ledger, input: Input, now: Instant) {
        let request_id = self.request_id().unwrap_or_default().to_owned();
        let (parts, body) = match input {
            Input::Response(parts, body) => (Some(parts), body),
            Input::Transport(e) => {
                let f = Failure::Transport(e.kind);
                return self.on_poll_failure(ledger, f, None, Bytes::new(), now);
            }
        };
        let Some(parts) = parts else { return };
        let status = parts.status.as_u16();
        if !(200..300).contains(&status) {
            let failure = Failure::from_response(
                status,
                &parts.headers,
                body.is_empty(),
                ledger.proxy_credits(),
            )
            .unwrap_or(Failure::Status(status));
            return self.on_poll_failure(ledger, failure, Some(&parts.headers), body, now);
        }
        ledger.proxy_credits().on_success();
        ledger.retry_budget().on_success();
        self.poll_errors.on_complete();
        let content_type = parts
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok());
        match FutureReply::classify(content_type, &body) {
            Err(e) => {
                self.failure = None;
                self.finish(ledger, Err(e));
            }
            Ok(FutureReply::TryAgain(t)) => {
                self.observe_queue(
                    ledger,
                    t.queue_state(),
                    t.queue_state_reason.as_deref(),
                    now,
                );
                self.stage = Stage::Ready(Step::Poll);
            }
            Ok(FutureReply::MetadataOnly {
                response_payload_size,
            }) => {
                if !self.allow_metadata_only {
                    self.finish(
                        ledger,
                        Err(Error::decode(
                            "retrieve_future reply",
                            format!("a second metadata-only reply for {request_id} after allow_metadata_only=false"),
                        )),
                    );
                } else {
                    self.allow_metadata_only = false;
                    self.stage = Stage::Reserve(response_payload_size);
                }
            }
            Ok(FutureReply::Failed(f)) => {
                self.result_arrived(ledger, now);
                self.failure = Some(Failure::RequestFailed);
                self.finish(ledger, Err(f.into_error(&request_id)));
            }
            Ok(FutureReply::Protobuf(bytes)) => {
                self.result_arrived(ledger, now);
                let future = self
                    .future
                    .clone()
                    .unwrap_or_else(|| empty_future(&request_id));
                self.finish(
                    ledger,
                    Ok(CallResult::Future {
                        future,
                        payload: FuturePayload::Protobuf(bytes),
                    }),
                );
            }
            Ok(FutureReply::Json(value)) => {
                self.result_arrived(ledger, now);
                if self
                    .submission
                    .result_type()
                    .is_some_and(|t| t.result_is_protobuf())
                {
                    self.failure = None;
                    return self.finish(
                        ledger,
                        Err(Error::decode(
                            "retrieve_future reply",
                            format!("a JSON result for {request_id} where protobuf was expected: the server predates proto response serialization"),
                        )),
                    );
                }
                let future = self
                    .future
                    .clone()
                    .unwrap_or_else(|| empty_future(&request_id));
                self.finish(
                    ledger,
                    Ok(CallResult::Future {
                        future,
                        payload: FuturePayload::Json(value),
                    }),
                );
            }
        }
    }

    fn on_poll_failure(
        &mut self,
        ledger: &mut Ledger,
        failure: Failure,
        headers: Option<&HeaderMap>,
        body: Bytes,
        now: Instant,
    ) {
        let action = self.poll_errors.on_failure(failure, now, ledger.billing());
        match action {
            PollAction::TryAgain => {
                // A 408 carries a try-again body with the queue state.
                let parsed: Option<TryAgainResponse> = serde_json::from_slice(&body).ok();
                let (state, reason) = parsed
                    .map(|t| (t.queue_state(), t.queue_state_reason))
                    .unwrap_or((QueueState::Unknown, None));
                self.observe_queue(ledger, state, reason.as_deref(), now);
                self.stage = Stage::Ready(Step::Poll);
            }
            PollAction::PollNow => self.stage = Stage::Ready(Step::Poll),
            PollAction::PollAfter(d) => self.schedule_retry(d, Step::Poll, failure, now),
            PollAction::BillingPause { sleep, log_now } => {
                if log_now {
                    self.events.push_back(Event::BillingPaused);
                }
                self.stage = Stage::Sleeping(now + sleep, Step::Poll);
            }
            PollAction::Expired => {
                self.failure = Some(Failure::FutureExpired);
                let headers = headers.cloned().unwrap_or_default();
                let e = self.status_error(ledger, 410, &headers, &body);
                self.finish(ledger, Err(e));
            }
            PollAction::Fatal(fatal) => {
                self.failure = Some(failure);
                let headers = headers.cloned().unwrap_or_default();
                let e = match (fatal, failure) {
                    (_, Failure::Status(s)) => self.status_error(ledger, s, &headers, &body),
                    (PollFatal::BadRequest, _) => self.status_error(ledger, 400, &headers, &body),
                    _ => Error::decode("retrieve_future reply", describe(failure)),
                };
                self.finish(ledger, Err(e));
            }
        }
    }
}

impl Machine for Call {
    type Output = CallResult;

    fn poll_output(&mut self, ledger: &mut Ledger, now: Instant) -> Output<CallResult> {
        if let Some(event) = self.events.pop_front() {
            return Output::Event(event);
        }
        if self.done {
            return Output::Done(Err(Error::Closed(format!(
                "the {} call already finished",
                self.label()
            ))));
        }
        if let Some(result) = self.result.take() {
            self.done = true;
            return Output::Done(result);
        }
        self.started.get_or_insert(now);
        if self.opts.deadline.is_some_and(|d| now >= d) && self.stage != Stage::Finished {
            let e = self.timeout_error(now);
            self.failure = None;
            if let Some(id) = self.request_id() {
                if self.spec.id == EndpointId::ASample {
                    ledger.record_abandoned_future(id.to_owned());
                }
            }
            if self.must_still_send(ledger) {
                self.hand_to_background(ledger);
            }
            self.finish(ledger, Err(e));
            return self.poll_output(ledger, now);
        }
        if let Some((attempt, input)) = self.input.take() {
            match self.stage {
                Stage::InFlight(expected, step) if expected == attempt => match step {
                    Step::Submit | Step::Resend => self.on_submit_input(ledger, input, now),
                    Step::Poll => self.on_poll_input(ledger, input, now),
                    Step::BatchPoll => self.on_batch_poll_input(ledger, attempt, input, now),
                    Step::Exchange => self.on_exchange_input(ledger, input, now),
                },
                _ => {} // a stale attempt (after a timeout or cancel): ignore it
            }
            return self.poll_output(ledger, now);
        }
        let deadline = self.opts.deadline;
        match self.stage {
            Stage::Gates => match self.pass_gates(ledger, now) {
                Some(reason) => {
                    Output::Wait(Wait::blocked(reason, ledger.generation()).or_deadline(deadline))
                }
                None => {
                    if let Err(e) = self.start_turn(ledger) {
                        self.finish(ledger, Err(e));
                        return self.poll_output(ledger, now);
                    }
                    self.stage = Stage::Ready(Step::Submit);
                    self.poll_output(ledger, now)
                }
            },
            Stage::Ready(step) => self.transmit(ledger, step, now),
            Stage::InFlight(..) => Output::Wait(Wait::responses().or_deadline(deadline)),
            Stage::Sleeping(until, _) if now < until => {
                Output::Wait(Wait::until(until).or_deadline(deadline))
            }
            Stage::Sleeping(_, Step::Resend) => {
                match ledger.sampling_dispatch_state().resend_wait(now) {
                    Some(d) => {
                        self.stage = Stage::Sleeping(now + d, Step::Resend);
                        Output::Wait(Wait::until(now + d).or_deadline(deadline))
                    }
                    None => self.transmit(ledger, Step::Resend, now),
                }
            }
            Stage::Sleeping(_, step) => self.transmit(ledger, step, now),
            Stage::Reserve(bytes) => match ledger.acquire_inflight_bytes(bytes) {
                Some(p) => {
                    self.held.inflight = Some(p);
                    self.transmit(ledger, Step::Poll, now)
                }
                None => Output::Wait(
                    Wait::blocked(BlockReason::InflightBytes, ledger.generation())
                        .or_deadline(deadline),
                ),
            },
            Stage::AwaitCompletion => self.await_completion(ledger, now),
            Stage::AwaitCredential => match ledger.jwt() {
                Some(jwt) if jwt.is_exchanging() => Output::Wait(
                    Wait::blocked(BlockReason::Credential, ledger.generation())
                        .or_deadline(deadline),
                ),
                _ => {
                    self.stage = Stage::Ready(Step::Submit);
                    self.poll_output(ledger, now)
                }
            },
            Stage::Finished => {
                // finish() always leaves a result; reaching here means it was taken above.
                self.done = true;
                Output::Done(Err(Error::Closed("call finished".into())))
            }
        }
    }

    fn handle_response(
        &mut self,
        attempt: AttemptId,
        head: http::response::Parts,
        body: Bytes,
        _now: Instant,
    ) {
        if matches!(self.stage, Stage::InFlight(a, _) if a == attempt) {
            self.input = Some((attempt, Input::Response(head, body)));
        }
    }

    fn handle_transport_error(&mut self, attempt: AttemptId, error: TransportError, _now: Instant) {
        if matches!(self.stage, Stage::InFlight(a, _) if a == attempt) {
            self.input = Some((attempt, Input::Transport(error)));
        }
    }

    fn cancel(&mut self, ledger: &mut Ledger, _now: Instant) {
        if self.done || self.stage == Stage::Finished {
            self.release_all(ledger);
            return;
        }
        if let Some(id) = self.request_id() {
            if self.spec.id == EndpointId::ASample {
                ledger.record_abandoned_future(id.to_owned());
            }
        }
        if self.spec.id == EndpointId::AuthToken {
            // An abandoned exchange must not leave others waiting for it.
            if let Some(jwt) = ledger.jwt_mut() {
                jwt.abort_exchange();
            }
            ledger.bump();
        }
        if self.must_still_send(ledger) {
            self.hand_to_background(ledger);
        }
        self.release_all(ledger);
        self.stage = Stage::Finished;
        self.input = None;
        self.events.clear();
        self.done = true;
    }
}

/// Drives a call handed to the background ([`Ledger::detach_call`]) until its POST is over —
/// the server returned a future, or the submission failed for good — and then drops it: the
/// result nobody waits for is never polled. Done at once for a call that holds no turn.
///
/// Its purpose is the training run's seq ids: a turn that started sending is sent in full, so
/// the server, which runs a run's requests strictly in seq order, never waits for a missing id.
#[derive(Debug)]
pub struct DetachedSubmission(pub Call);

impl DetachedSubmission {
    /// The seq id the call carries.
    pub fn seq_id(&self) -> Option<u64> {
        self.0.seq_id
    }
}

impl Machine for DetachedSubmission {
    type Output = ();

    fn poll_output(&mut self, ledger: &mut Ledger, now: Instant) -> Output<()> {
        loop {
            if !self.0.holds_turn() {
                self.0.cancel(ledger, now);
                return Output::Done(Ok(()));
            }
            match self.0.poll_output(ledger, now) {
                // A poll of the future after the submission was accepted is never sent: the
                // check at the top of the loop ends the machine first.
                Output::Transmit(t) if self.0.holds_turn() => return Output::Transmit(t),
                Output::Transmit(_) | Output::Event(_) => {}
                Output::Wait(w) => return Output::Wait(w),
                Output::Done(r) => return Output::Done(r.map(|_| ())),
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
        self.0.handle_response(attempt, head, body, now);
    }

    fn handle_transport_error(&mut self, attempt: AttemptId, error: TransportError, now: Instant) {
        self.0.handle_transport_error(attempt, error, now);
    }

    fn cancel(&mut self, ledger: &mut Ledger, now: Instant) {
        self.0.cancel(ledger, now);
    }
}

/// A fingerprint of a credential, to tell whether the token changed since a request was sent
/// without keeping a copy of it in the machine (which is `Debug`).
fn fingerprint(credential: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    credential.hash(&mut h);
    h.finish()
}

fn new_key(ledger: &mut Ledger, rule: IdempotencyRule) -> Option<String> {
    let mut random = || {
        let rng = ledger.rng();
        (u128::from(rng.next_u64()) << 64) | u128::from(rng.next_u64())
    };
    match rule {
        IdempotencyRule::PerAttemptChain => Some(idempotency_key(random())),
        IdempotencyRule::FixedBareUuid => Some(bare_uuid(random())),
        IdempotencyRule::None => None,
    }
}

fn empty_future(request_id: &str) -> UntypedFuture {
    UntypedFuture {
        request_id: request_id.to_owned(),
        model_id: None,
        sample_sequence_ids: None,
    }
}

fn describe(failure: Failure) -> String {
    match failure {
        Failure::Status(s) => format!("HTTP {s}"),
        Failure::Transport(kind) => format!("transport error ({kind:?})"),
        Failure::ProxyRejection => "empty-bodied 400 from a proxy".to_owned(),
        Failure::FutureExpired => "the server future expired (410)".to_owned(),
        Failure::RequestFailed => "the request failed".to_owned(),
        _ => "permanent failure".to_owned(),
    }
}
