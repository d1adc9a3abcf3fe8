//! One logical call as a sans-IO state machine: submit (with the retry layers the endpoint has)
//! → for future endpoints, the poll loop of protocol.md 7.2-7.5 → a raw result.
//!
//! # The machine contract
//!
//! Every machine of this crate that talks to the server ([`Call`], and the operations of
//! [`crate::ops`], which combine calls) implements [`Machine`]:
//!
//! 1. Call [`Machine::poll_output`] with the ledger locked and the current instant, and keep
//!    calling it until it answers [`Output::Wait`] or [`Output::Done`]. Along the way it may hand
//!    out [`Output::Transmit`] (send this request) and [`Output::Event`] (tell the user).
//! 2. Perform every transmit (concurrently or one after another) and feed each outcome back with
//!    [`Machine::handle_response`] or [`Machine::handle_transport_error`], naming its
//!    [`AttemptId`]. These only record the input; the next `poll_output` acts on it.
//! 3. While waiting, honour the [`Wait`]: wake at `until`, when a transmit completes, or when the
//!    ledger's generation moves past the one in `blocked`.
//! 4. After [`Output::Done`], stop. If the caller gives up earlier, call [`Machine::cancel`]:
//!    it refunds budgets, finishes the call's training turn and forgets outstanding attempts —
//!    except that a call whose training turn has started (its seq ids are taken) is handed to
//!    the background ([`crate::ledger::Ledger::detach_call`]) to finish its POST, so the server
//!    never waits for an id nobody sends.
//!
//! The two drivers in [`crate::drive`] implement this contract once for async code and once for
//! blocking code.

mod machine;
mod submission;

#[cfg(test)]
mod jwt_tests;
#[cfg(test)]
mod tests;

pub use machine::Call;
pub use machine::DetachedSubmission;
pub use submission::{Sequenced, Submission, TrainingRequest, WithCredential};

use std::borrow::Cow;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::HeaderMap;

use crate::error::Result;
use crate::io::{Timeouts, TransportError};
use crate::ledger::{Ledger, TurnSlot};
use crate::retry::{ClientKind, QueueState};
use crate::types::UntypedFuture;

/// Identifies one HTTP attempt handed out by a machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AttemptId(pub u64);

/// One request to perform.
#[derive(Debug)]
pub struct Transmit {
    /// Feed the outcome back under this id.
    pub attempt: AttemptId,
    /// The request, headers and body complete.
    pub request: http::Request<Bytes>,
    /// Connect and per-read timeouts for this attempt (no total timeout).
    pub timeouts: Timeouts,
}

/// What a blocked machine waits for in the ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BlockReason {
    /// An earlier request of the same training run has not been submitted yet (turn order).
    Turn,
    /// The forward/backward dispatch byte budget is exhausted.
    FwdBwdBytes,
    /// A sampling dispatch gate (count, throttled count or bytes) is full.
    SamplingDispatch,
    /// The inflight response byte budget is exhausted (metadata-only reply, 7.4).
    InflightBytes,
    /// Waiting for the session's `retrieve_futures` poller (another call holds its lease, 7.7).
    Completion,
    /// Waiting for another request's JWT exchange before replaying (2.3).
    Credential,
}

/// How long a machine has nothing to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wait {
    /// Wake at this instant at the latest (a back-off ends, a deadline passes). `None` = no timer.
    pub until: Option<Instant>,
    /// Also wake when the ledger's generation differs from this one.
    pub blocked: Option<(BlockReason, u64)>,
}

impl Wait {
    /// Nothing to do before `until` (besides outstanding responses).
    pub fn until(until: Instant) -> Wait {
        Wait {
            until: Some(until),
            blocked: None,
        }
    }

    /// Only outstanding responses can move the machine on.
    pub fn responses() -> Wait {
        Wait {
            until: None,
            blocked: None,
        }
    }

    /// Blocked on the ledger at generation `generation`.
    pub fn blocked(reason: BlockReason, generation: u64) -> Wait {
        Wait {
            until: None,
            blocked: Some((reason, generation)),
        }
    }

    /// Also wake at `deadline`, if given.
    pub fn or_deadline(mut self, deadline: Option<Instant>) -> Wait {
        self.until = match (self.until, deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self
    }

    /// The wait that ends as soon as either ends (for machines made of several calls).
    pub fn merge(self, other: Wait) -> Wait {
        Wait {
            until: match (self.until, other.until) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            },
            blocked: self.blocked.or(other.blocked),
        }
    }
}

/// Something worth telling the user (or a log) while a call runs.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// The server accepted the request and returned a future.
    Submitted {
        /// The future's request id.
        request_id: String,
    },
    /// The queue state of a waiting request changed, or a rate-limited warning is due (7.9).
    QueueState {
        /// The new state.
        state: QueueState,
        /// The server's reason, if any.
        reason: Option<String>,
        /// A warning to log now, if one is due.
        log: Option<String>,
    },
    /// An attempt failed and will be retried.
    Retrying {
        /// The endpoint path.
        endpoint: &'static str,
        /// Attempts made so far in this call.
        attempt: u32,
        /// How long until the next attempt.
        delay: Duration,
        /// What failed (status or transport error).
        reason: String,
    },
    /// The billing pause is in force (402): "The job is paused due to billing status".
    BillingPaused,
    /// The server reported this call's queue state again, unchanged for its client (the
    /// tracker only reports changes); kept by handles so a timeout can name it.
    StillQueued {
        /// The state and its reason, e.g. `paused_capacity (reason)`.
        queue_state: String,
    },
}

/// What a machine wants next.
// An output is produced and consumed once per step, never stored in bulk: boxing the request
// would cost an allocation per attempt for nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
#[must_use]
pub enum Output<T> {
    /// Perform this request and feed back its outcome.
    Transmit(Transmit),
    /// Nothing to do until the wait ends.
    Wait(Wait),
    /// Tell the user; then poll again.
    Event(Event),
    /// Finished. Polling again returns an error.
    Done(Result<T>),
}

/// A sans-IO machine driven by [`crate::drive`] (see the module documentation for the contract).
pub trait Machine: Send {
    /// The result of the whole machine.
    type Output: Send;

    /// The next thing to do, given the ledger and the current instant.
    fn poll_output(&mut self, ledger: &mut Ledger, now: Instant) -> Output<Self::Output>;

    /// Records the complete response to `attempt` (head and whole body).
    fn handle_response(
        &mut self,
        attempt: AttemptId,
        head: http::response::Parts,
        body: Bytes,
        now: Instant,
    );

    /// Records that `attempt` produced no complete response.
    fn handle_transport_error(&mut self, attempt: AttemptId, error: TransportError, now: Instant);

    /// Gives up: refunds budgets, finishes training turns, forgets outstanding attempts.
    /// Idempotent, and harmless after [`Output::Done`].
    fn cancel(&mut self, ledger: &mut Ledger, now: Instant);
}

/// A machine can be driven through a mutable reference (the caller keeps ownership).
impl<M: Machine> Machine for &mut M {
    type Output = M::Output;
    fn poll_output(&mut self, ledger: &mut Ledger, now: Instant) -> Output<M::Output> {
        (**self).poll_output(ledger, now)
    }
    fn handle_response(
        &mut self,
        attempt: AttemptId,
        head: http::response::Parts,
        body: Bytes,
        now: Instant,
    ) {
        (**self).handle_response(attempt, head, body, now);
    }
    fn handle_transport_error(&mut self, attempt: AttemptId, error: TransportError, now: Instant) {
        (**self).handle_transport_error(attempt, error, now);
    }
    fn cancel(&mut self, ledger: &mut Ledger, now: Instant) {
        (**self).cancel(ledger, now);
    }
}

/// Per-call settings chosen by the client.
#[derive(Debug, Clone, Default)]
pub struct CallOptions {
    /// Give up with [`crate::Error::Timeout`] at this instant (none by default; the retry
    /// policies still bound every wait).
    pub deadline: Option<Instant>,
    /// The public SDK method running (`x-sdk-method`), e.g. `TrainingClient.forward_backward`.
    pub sdk_method: Option<Cow<'static, str>>,
    /// Whose queue state the polls report (training run or sampling session); defaults to a
    /// training client named after the endpoint.
    pub queue_client: Option<(ClientKind, String)>,
    /// Connect timeout override (default 5 s); the read timeout is the endpoint's.
    pub connect_timeout: Option<Duration>,
    /// The (sampling session, clone id) whose `retrieve_futures` poller reports this sample's
    /// completion when client config `sample_use_retrieve_futures` is on (protocol.md 7.7).
    pub completions: Option<(String, u64)>,
}

impl CallOptions {
    /// Options with a deadline.
    pub fn with_deadline(mut self, deadline: Option<Instant>) -> CallOptions {
        self.deadline = deadline;
        self
    }

    /// Options naming the public method.
    pub fn with_sdk_method(mut self, method: impl Into<Cow<'static, str>>) -> CallOptions {
        self.sdk_method = Some(method.into());
        self
    }

    /// Options naming the client whose queue state polls report.
    pub fn with_queue_client(
        mut self,
        kind: ClientKind,
        identifier: impl Into<String>,
    ) -> CallOptions {
        self.queue_client = Some((kind, identifier.into()));
        self
    }
}

/// Shared-state gates a call passes before its first POST and holds until its submission is
/// over (a future obtained, a final failure, or cancellation).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Gates {
    /// Wait for this training-run turn (3.3, 8.9).
    pub turn: Option<TurnSlot>,
    /// Take this many bytes from the forward/backward dispatch budget (8.9).
    pub fwdbwd_bytes: Option<u64>,
    /// Pass the sampling dispatch gates with this prompt estimate (8.5); also turns a 429 on the
    /// submit into the back-pressure loop.
    pub sampling_estimate: Option<u64>,
}

/// A successful future's payload.
#[derive(Debug, Clone, PartialEq)]
pub enum FuturePayload {
    /// A JSON result, to decode as the type the submit expects.
    Json(serde_json::Value),
    /// A protobuf result (`ForwardBackwardOutput`, `SampleResponse`).
    Protobuf(Bytes),
}

/// What a call produced.
#[derive(Debug, Clone)]
pub enum CallResult {
    /// A direct endpoint's 2xx reply.
    Direct {
        /// The status (2xx).
        status: u16,
        /// The response headers.
        headers: HeaderMap,
        /// The whole body.
        body: Bytes,
    },
    /// A future endpoint's result.
    Future {
        /// The submit's reply (request id, `sample_sequence_ids`).
        future: UntypedFuture,
        /// The result.
        payload: FuturePayload,
    },
}
