//! The `retrieve_futures` session poller (protocol.md 7.7) as shared, sans-IO state.
//!
//! With client config `sample_use_retrieve_futures`, a sample's future does not long-poll
//! `retrieve_future` on its own: every waiting sample of one (sampling session, clone) registers
//! here, and one `retrieve_futures` long poll at a time asks the server which of them are done.
//! The poll is sent by whichever waiting call takes the lease ([`CompletionPoller::lease_long_poll`]);
//! if that call is cancelled mid-poll it hands the lease back ([`CompletionPoller::release`]) and
//! another waiter polls again from the same cursor, so nothing depends on one call surviving.
//! Acknowledgements left over when nobody waits are sent by the housekeeper as ack-only polls
//! ([`CompletionPoller::lease_ack_poll`]).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use crate::retry::batch_poll::{BatchPollAction, BatchPollErrors};
use crate::retry::{BillingPause, Failure};
use crate::types::{FutureCompletion, RetrieveFuturesRequest, RetrieveFuturesResponse};

/// How many completions of requests nobody (yet) waits for are kept; older ones are dropped and
/// acknowledged. A call registers in the same ledger scope in which it learns its request id,
/// so only completions of calls abandoned at that very moment end up here.
const MAX_UNCLAIMED: usize = 4096;

/// What the poller learnt about one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Completion {
    /// Done: fetch the payload with `retrieve_future` (`allow_metadata_only: false`), first
    /// reserving `payload_bytes` from the inflight budget when known and non-zero.
    Finished {
        /// `response_payload_uncompressed_size`, if the server sent it.
        payload_bytes: Option<u64>,
    },
    /// Failed: fetch the error with `retrieve_future`.
    Failed,
}

/// What a lease produced.
#[derive(Debug, Clone, PartialEq)]
pub enum Lease {
    /// Send this poll as attempt `attempt`, then feed the outcome to
    /// [`CompletionPoller::on_reply`] or [`CompletionPoller::on_failure`].
    Send(RetrieveFuturesRequest),
    /// Someone else is polling; wait for the ledger to change.
    Busy,
    /// The poller sleeps after an error until this instant.
    SleepUntil(Instant),
    /// Nothing to poll for.
    Idle,
}

/// What happened to a failed poll, for the caller's events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PollerFailure {
    /// The poller retries at the given instant.
    Retrying(Instant),
    /// A billing pause; log the warning when `log_now`.
    BillingPaused {
        /// When polling resumes.
        until: Instant,
        /// Log "The job is paused due to billing status" now.
        log_now: bool,
    },
    /// The poller has stopped for good; every waiter fails.
    Stopped,
}

/// One (sampling session, clone)'s completion poller.
///
/// ```
/// use std::time::Instant;
/// use tinker_core::flow::{Completion, CompletionPoller, Lease};
/// use tinker_core::types::RetrieveFuturesResponse;
///
/// # #[allow(clippy::disallowed_methods)]
/// let now = Instant::now();
/// let mut poller = CompletionPoller::new("sess:sample:0", 0);
/// poller.watch("req-8");
/// let Lease::Send(poll) = poller.lease_long_poll(1, now) else { panic!() };
/// assert_eq!((poll.prev_cursor, poll.timeout), (0, None));
/// let reply: RetrieveFuturesResponse = serde_json::from_str(
///     r#"{"completions": [{"state": "finished", "request_id": "req-8", "response_payload_uncompressed_size": 134}], "cursor": 9}"#,
/// ).unwrap();
/// poller.on_reply(1, reply);
/// assert_eq!(poller.take("req-8"), Some(Completion::Finished { payload_bytes: Some(134) }));
/// poller.retrieved("req-8");
/// // Nobody waits any more: the acknowledgement goes out as an ack-only poll.
/// let Some(ack) = poller.lease_ack_poll(2, now) else { panic!() };
/// assert_eq!((ack.prev_cursor, ack.timeout, ack.retrieved_request_ids), (9, Some(0.0), vec!["req-8".to_owned()]));
/// ```
#[derive(Debug, Clone)]
pub struct CompletionPoller {
    sampling_session_id: String,
    cloned_sampler_id: u64,
    cursor: u64,
    waiters: BTreeSet<String>,
    completions: BTreeMap<String, Completion>,
    /// Arrival order of completions, to bound the unclaimed ones.
    arrivals: Vec<String>,
    acks: Vec<String>,
    in_flight: Option<(u64, Vec<String>)>,
    resume_at: Option<Instant>,
    errors: BatchPollErrors,
    stopped: Option<String>,
    polls: u64,
}

impl CompletionPoller {
    /// The poller of `sampling_session_id`'s clone `cloned_sampler_id`.
    pub fn new(sampling_session_id: impl Into<String>, cloned_sampler_id: u64) -> CompletionPoller {
        CompletionPoller {
            sampling_session_id: sampling_session_id.into(),
            cloned_sampler_id,
            cursor: 0,
            waiters: BTreeSet::new(),
            completions: BTreeMap::new(),
            arrivals: Vec::new(),
            acks: Vec::new(),
            in_flight: None,
            resume_at: None,
            errors: BatchPollErrors::default(),
            stopped: None,
            polls: 0,
        }
    }

    /// A sample's future `request_id` now waits for its completion.
    pub fn watch(&mut self, request_id: &str) {
        self.waiters.insert(request_id.to_owned());
    }

    /// The completion of `request_id`, if it arrived (the request stops waiting).
    pub fn take(&mut self, request_id: &str) -> Option<Completion> {
        let c = self.completions.remove(request_id)?;
        self.waiters.remove(request_id);
        self.arrivals.retain(|r| r != request_id);
        Some(c)
    }

    /// The waiter gave up (cancelled, deadline): forget it. A completion that already arrived is
    /// acknowledged, since nobody will fetch it.
    pub fn unwatch(&mut self, request_id: &str) {
        self.waiters.remove(request_id);
        if self.completions.remove(request_id).is_some() {
            self.arrivals.retain(|r| r != request_id);
            self.acks.push(request_id.to_owned());
        }
    }

    /// The payload (or error) of `request_id` was fetched: acknowledge it in the next poll.
    pub fn retrieved(&mut self, request_id: &str) {
        self.acks.push(request_id.to_owned());
    }

    /// Why the poller stopped for good, if it did.
    pub fn stopped(&self) -> Option<&str> {
        self.stopped.as_deref()
    }

    /// Whether anyone waits.
    pub fn has_waiters(&self) -> bool {
        !self.waiters.is_empty()
    }

    /// Whether acknowledgements are waiting to be sent.
    pub fn has_acks(&self) -> bool {
        !self.acks.is_empty()
    }

    /// Whether a poll is out.
    pub fn is_polling(&self) -> bool {
        self.in_flight.is_some()
    }

    /// Polls sent so far (long and ack-only).
    pub fn polls(&self) -> u64 {
        self.polls
    }

    /// No waiter and no poll out: what a quiet session looks like.
    pub fn is_idle(&self) -> bool {
        self.waiters.is_empty() && self.in_flight.is_none()
    }

    /// A waiting call asks to send the next long poll as `attempt`.
    pub fn lease_long_poll(&mut self, attempt: u64, now: Instant) -> Lease {
        if self.in_flight.is_some() {
            return Lease::Busy;
        }
        if let Some(at) = self.resume_at.filter(|at| now < *at) {
            return Lease::SleepUntil(at);
        }
        if self.waiters.is_empty() || self.stopped.is_some() {
            return Lease::Idle;
        }
        Lease::Send(self.begin(attempt, false))
    }

    /// The housekeeper asks to send an ack-only poll as `attempt`: only when nobody waits (a
    /// waiter's long poll carries the acknowledgements), nothing is out and something is
    /// unacknowledged.
    pub fn lease_ack_poll(&mut self, attempt: u64, now: Instant) -> Option<RetrieveFuturesRequest> {
        let ready = self.in_flight.is_none()
            && self.waiters.is_empty()
            && !self.acks.is_empty()
            && self.resume_at.is_none_or(|at| now >= at);
        ready.then(|| self.begin(attempt, true))
    }

    fn begin(&mut self, attempt: u64, ack_only: bool) -> RetrieveFuturesRequest {
        let acks = std::mem::take(&mut self.acks);
        self.in_flight = Some((attempt, acks.clone()));
        self.polls += 1;
        let poll = RetrieveFuturesRequest::long_poll(
            self.sampling_session_id.clone(),
            self.cloned_sampler_id,
            self.cursor,
            acks,
        );
        if ack_only {
            poll.ack_only()
        } else {
            poll
        }
    }

    /// Whether `attempt` is the poll out.
    pub fn owns(&self, attempt: u64) -> bool {
        self.in_flight.as_ref().is_some_and(|(a, _)| *a == attempt)
    }

    /// The holder of the lease gave up before the reply: its acknowledgements go back to the
    /// queue and the next waiter polls again from the same cursor.
    pub fn release(&mut self, attempt: u64) {
        if let Some((a, acks)) = self.in_flight.take() {
            if a == attempt {
                self.return_acks(acks);
            } else {
                self.in_flight = Some((a, acks));
            }
        }
    }

    fn return_acks(&mut self, mut acks: Vec<String>) {
        acks.append(&mut self.acks);
        self.acks = acks;
    }

    /// The 2xx reply of poll `attempt`: records completions and the new cursor. Returns whether
    /// it was the poll out (a stale reply is ignored).
    pub fn on_reply(&mut self, attempt: u64, reply: RetrieveFuturesResponse) -> bool {
        if !self.owns(attempt) {
            return false;
        }
        self.in_flight = None;
        self.errors.on_success();
        self.resume_at = None;
        self.cursor = reply.cursor;
        for completion in reply.completions {
            let id = completion.request_id().to_owned();
            let c = match completion {
                FutureCompletion::Finished {
                    response_payload_uncompressed_size,
                    ..
                } => Completion::Finished {
                    payload_bytes: response_payload_uncompressed_size,
                },
                FutureCompletion::Failed { .. } => Completion::Failed,
            };
            if self.completions.insert(id.clone(), c).is_none() {
                self.arrivals.push(id);
            }
        }
        while self.completions.len() > MAX_UNCLAIMED {
            let Some(oldest) = self.arrivals.iter().position(|r| !self.waiters.contains(r)) else {
                break;
            };
            let id = self.arrivals.remove(oldest);
            self.completions.remove(&id);
            self.acks.push(id);
        }
        true
    }

    /// Poll `attempt` failed with `failure` at `now` (status, transport error, or an undecodable
    /// reply as [`Failure::Permanent`]). `detail` names it for the waiters' error if the poller
    /// stops. `None` for a stale attempt.
    pub fn on_failure(
        &mut self,
        attempt: u64,
        failure: Failure,
        detail: &str,
        now: Instant,
        billing: &mut BillingPause,
    ) -> Option<PollerFailure> {
        if !self.owns(attempt) {
            return None;
        }
        if let Some((_, acks)) = self.in_flight.take() {
            self.return_acks(acks);
        }
        Some(match self.errors.on_failure(failure, now, billing) {
            BatchPollAction::RetryAfter(d) => {
                self.resume_at = Some(now + d);
                PollerFailure::Retrying(now + d)
            }
            BatchPollAction::BillingPause { sleep, log_now } => {
                self.resume_at = Some(now + sleep);
                PollerFailure::BillingPaused {
                    until: now + sleep,
                    log_now,
                }
            }
            BatchPollAction::Fatal => {
                self.stopped = Some(format!(
                    "the retrieve_futures poller of {} stopped: {detail}",
                    self.sampling_session_id
                ));
                PollerFailure::Stopped
            }
        })
    }

    /// When polling resumes after an error, if it sleeps.
    pub fn resume_at(&self) -> Option<Instant> {
        self.resume_at
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn reply(json: &str) -> RetrieveFuturesResponse {
        serde_json::from_str(json).unwrap()
    }

    #[allow(clippy::disallowed_methods)]
    fn t0() -> Instant {
        Instant::now()
    }

    #[test]
    fn one_poll_at_a_time_serves_every_waiter() {
        let now = t0();
        let mut p = CompletionPoller::new("s", 0);
        p.watch("a");
        p.watch("b");
        assert!(matches!(p.lease_long_poll(1, now), Lease::Send(_)));
        assert_eq!(p.lease_long_poll(2, now), Lease::Busy);
        p.on_reply(
            1,
            reply(r#"{"completions": [{"state": "failed", "request_id": "b"}], "cursor": 3}"#),
        );
        assert_eq!(p.take("b"), Some(Completion::Failed));
        assert_eq!(p.take("a"), None);
        let Lease::Send(next) = p.lease_long_poll(2, now) else {
            panic!("a still waits")
        };
        assert_eq!(next.prev_cursor, 3);
    }

    #[test]
    fn a_cancelled_lease_holder_returns_its_acknowledgements_and_another_waiter_repolls() {
        let now = t0();
        let mut p = CompletionPoller::new("s", 0);
        p.watch("a");
        p.retrieved("old");
        let Lease::Send(first) = p.lease_long_poll(1, now) else {
            panic!()
        };
        assert_eq!(first.retrieved_request_ids, vec!["old".to_owned()]);
        p.release(1);
        // The late reply of the released poll is ignored.
        assert!(!p.on_reply(1, reply(r#"{"completions": [], "cursor": 5}"#)));
        let Lease::Send(again) = p.lease_long_poll(2, now) else {
            panic!()
        };
        assert_eq!(
            (again.prev_cursor, again.retrieved_request_ids),
            (0, vec!["old".to_owned()])
        );
    }

    #[test]
    fn a_transient_failure_sleeps_one_second_and_a_fatal_one_stops_the_poller() {
        let now = t0();
        let mut billing = BillingPause::default();
        let mut p = CompletionPoller::new("s", 0);
        p.watch("a");
        let _ = p.lease_long_poll(1, now);
        let got = p.on_failure(1, Failure::Status(503), "HTTP 503", now, &mut billing);
        assert_eq!(
            got,
            Some(PollerFailure::Retrying(now + Duration::from_secs(1)))
        );
        assert_eq!(
            p.lease_long_poll(2, now),
            Lease::SleepUntil(now + Duration::from_secs(1))
        );
        let later = now + Duration::from_secs(1);
        let _ = p.lease_long_poll(2, later);
        let got = p.on_failure(2, Failure::Status(403), "HTTP 403", later, &mut billing);
        assert_eq!(got, Some(PollerFailure::Stopped));
        assert!(p.stopped().unwrap().contains("HTTP 403"));
        assert_eq!(p.lease_long_poll(3, later), Lease::Idle);
    }

    #[test]
    fn an_abandoned_waiter_s_completion_is_acknowledged_unfetched() {
        let now = t0();
        let mut p = CompletionPoller::new("s", 0);
        p.watch("a");
        let _ = p.lease_long_poll(1, now);
        p.on_reply(
            1,
            reply(r#"{"completions": [{"state": "finished", "request_id": "a"}], "cursor": 1}"#),
        );
        p.unwatch("a");
        assert!(p.is_idle());
        let ack = p.lease_ack_poll(2, now).unwrap();
        assert_eq!(ack.retrieved_request_ids, vec!["a".to_owned()]);
        assert!(ack.is_ack_only());
    }

    #[test]
    fn no_ack_only_poll_while_someone_waits() {
        let now = t0();
        let mut p = CompletionPoller::new("s", 0);
        p.retrieved("x");
        p.watch("a");
        assert_eq!(p.lease_ack_poll(1, now), None);
    }

    mod conservation {
        use super::*;
        use crate::io::TransportErrorKind;
        use proptest::prelude::*;

        #[derive(Debug, Clone)]
        enum Op {
            Watch(u8),
            Lease,
            Reply(Vec<u8>),
            Fail,
            Release,
            Take(u8),
            Unwatch(u8),
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                (0u8..12).prop_map(Op::Watch),
                Just(Op::Lease),
                proptest::collection::vec(0u8..12, 0..4).prop_map(Op::Reply),
                Just(Op::Fail),
                Just(Op::Release),
                (0u8..12).prop_map(Op::Take),
                (0u8..12).prop_map(Op::Unwatch),
            ]
        }

        proptest! {
            /// Whatever happens to polls (replies, failures, lease holders giving up), every
            /// request whose payload was fetched or abandoned after completing is acknowledged
            /// to the server exactly once, and nothing else is.
            #[test]
            fn every_acknowledgement_reaches_the_server_exactly_once(
                ops in proptest::collection::vec(op(), 0..120)
            ) {
                let t0 = t0();
                let mut billing = BillingPause::default();
                let mut p = CompletionPoller::new("s", 0);
                let mut attempt = 0u64;
                let mut out: Option<u64> = None;
                let mut owed: Vec<String> = Vec::new();
                let mut delivered: Vec<String> = Vec::new();
                let mut sent_acks: BTreeMap<u64, Vec<String>> = BTreeMap::new();
                let mut now = t0;
                for op in ops {
                    now += Duration::from_millis(300);
                    match op {
                        Op::Watch(i) => p.watch(&format!("r{i}")),
                        Op::Lease => {
                            attempt += 1;
                            if let Lease::Send(poll) = p.lease_long_poll(attempt, now) {
                                sent_acks.insert(attempt, poll.retrieved_request_ids);
                                out = Some(attempt);
                            }
                        }
                        Op::Reply(ids) => if let Some(a) = out.take() {
                            let completions = ids.iter().map(|i| format!(
                                r#"{{"state": "finished", "request_id": "r{i}"}}"#)).collect::<Vec<_>>();
                            let body = format!(r#"{{"completions": [{}], "cursor": {a}}}"#, completions.join(","));
                            prop_assert!(p.on_reply(a, reply(&body)));
                            delivered.extend(sent_acks.remove(&a).unwrap_or_default());
                        },
                        Op::Fail => if let Some(a) = out.take() {
                            let f = Failure::Transport(TransportErrorKind::Io);
                            prop_assert!(p.on_failure(a, f, "reset", now, &mut billing).is_some());
                        },
                        Op::Release => if let Some(a) = out.take() { p.release(a) },
                        Op::Take(i) => {
                            let id = format!("r{i}");
                            if p.take(&id).is_some() {
                                p.retrieved(&id);
                                owed.push(id);
                            }
                        }
                        Op::Unwatch(i) => {
                            let id = format!("r{i}");
                            let had = p.completions.contains_key(&id);
                            p.unwatch(&id);
                            if had {
                                owed.push(id);
                            }
                        }
                    }
                }
                // Wind down: the last poll answers, everyone leaves, the housekeeper acks.
                if let Some(a) = out.take() {
                    p.on_reply(a, reply(r#"{"completions": [], "cursor": 0}"#));
                    delivered.extend(sent_acks.remove(&a).unwrap_or_default());
                }
                let waiting: Vec<String> = p.waiters.iter().cloned().collect();
                for id in waiting {
                    let had = p.completions.contains_key(&id);
                    p.unwatch(&id);
                    if had {
                        owed.push(id);
                    }
                }
                let later = now + Duration::from_secs(10);
                while let Some(poll) = p.lease_ack_poll(attempt + 1, later) {
                    attempt += 1;
                    delivered.extend(poll.retrieved_request_ids);
                    p.on_reply(attempt, reply(r#"{"completions": [], "cursor": 0}"#));
                }
                prop_assert!(p.is_idle());
                owed.sort();
                delivered.sort();
                prop_assert_eq!(owed, delivered);
            }
        }
    }
}
