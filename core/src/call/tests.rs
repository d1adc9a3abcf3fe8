//! Table tests: one row per rule of protocol.md 7.5 (polls) and 8 (submits), observed through a
//! [`Call`]: the reply fed in, and the call's next output.

use std::time::{Duration, Instant};

use super::{Call, CallOptions, CallResult, Event, Gates, Machine, Output, Transmit};
use crate::error::{Error, ErrorKind};
use crate::io::TransportErrorKind;
use crate::ledger::Ledger;
use crate::retry::{Failure, RetryBudgetConfig};
use crate::sim::{Reply, Sim};
use crate::types::{
    AdamParams, CreateModelRequest, ModelInput, OptimStepRequest, SampleRequest, SamplingParams,
    SaveWeightsRequest, StepParams,
};

struct Harness {
    ledger: Ledger,
    t0: Instant,
    now: Instant,
    call: Call,
    events: Vec<Event>,
}

/// What the call does next, in a form a table can state.
#[derive(Debug, PartialEq)]
enum Next {
    /// Sends at once: endpoint (last path segment), `x-stainless-retry-count`, same key as the
    /// previous attempt.
    SendNow(&'static str, u32, bool),
    /// Waits this long, then sends.
    SendAfter(Duration, &'static str, u32, bool),
    /// Finished with this error kind.
    Fails(ErrorKind),
    /// Finished with a result.
    Succeeds,
    /// Blocked on the ledger.
    Blocked,
}

fn step() -> OptimStepRequest {
    OptimStepRequest::new(
        "s:train:0",
        1,
        StepParams::Adam(AdamParams::with_learning_rate(1e-4)),
    )
}

impl Harness {
    fn new<S: super::Submission + 'static>(request: S, gates: Gates, opts: CallOptions) -> Harness {
        let mut ledger = Sim::ledger(5);
        #[allow(clippy::disallowed_methods)]
        let t0 = Instant::now();
        let call = Call::new(&mut ledger, request, opts, gates).expect("valid request");
        Harness {
            ledger,
            t0,
            now: t0,
            call,
            events: Vec::new(),
        }
    }

    fn output(&mut self) -> Output<CallResult> {
        loop {
            match self.call.poll_output(&mut self.ledger, self.now) {
                Output::Event(e) => self.events.push(e),
                other => return other,
            }
        }
    }

    fn transmit(&mut self) -> Transmit {
        match self.output() {
            Output::Transmit(t) => t,
            other => panic!("expected a request, got {other:?}"),
        }
    }

    fn answer(&mut self, t: &Transmit, reply: Reply) {
        let mut unit = crate::sim::harness_unit(&mut self.call);
        crate::sim::harness_deliver(&mut unit, t.attempt, reply, self.now);
    }

    /// Feeds `reply` to `t` and says what happens next (advancing the clock through a wait).
    fn next_after(&mut self, t: &Transmit, reply: Reply) -> (Next, Option<Transmit>) {
        let key = header(t, "x-idempotency-key");
        self.answer(t, reply);
        let at = self.now;
        loop {
            match self.output() {
                Output::Transmit(n) => {
                    let what = (
                        endpoint(&n),
                        header(&n, "x-stainless-retry-count").parse().unwrap_or(99),
                        header(&n, "x-idempotency-key") == key,
                    );
                    let next = if self.now == at {
                        Next::SendNow(what.0, what.1, what.2)
                    } else {
                        Next::SendAfter(self.now - at, what.0, what.1, what.2)
                    };
                    return (next, Some(n));
                }
                Output::Wait(w) => match w.until {
                    Some(until) if w.blocked.is_none() => self.now = until,
                    _ => return (Next::Blocked, None),
                },
                Output::Done(Ok(_)) => return (Next::Succeeds, None),
                Output::Done(Err(e)) => return (Next::Fails(e.kind()), None),
                Output::Event(_) => unreachable!(),
            }
        }
    }

    /// Submits and returns the first poll.
    fn submitted(&mut self) -> Transmit {
        let t = self.transmit();
        let (next, poll) = self.next_after(&t, Reply::json(200, r#"{"request_id":"req-7"}"#));
        assert_eq!(next, Next::SendNow("retrieve_future", 0, false));
        poll.expect("a poll")
    }
}

fn header(t: &Transmit, name: &str) -> String {
    t.request
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

fn endpoint(t: &Transmit) -> &'static str {
    let path = t.request.uri().path();
    [
        "retrieve_future",
        "optim_step",
        "save_weights",
        "asample",
        "create_model",
    ]
    .into_iter()
    .find(|e| path.ends_with(e))
    .unwrap_or("other")
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

fn try_again(state: &str) -> String {
    format!(r#"{{"type":"try_again","request_id":"req-7","queue_state":"{state}"}}"#)
}

/// protocol.md 7.2-7.5, one row per rule, each from a fresh poll loop.
#[test]
fn each_rule_of_the_poll_loop() {
    use Next::*;
    let rf = "retrieve_future";
    let table: Vec<(&str, Reply, Next)> = vec![
        (
            "200 try_again: poll again at once",
            Reply::json(200, try_again("active")),
            SendNow(rf, 0, false),
        ),
        (
            "408: poll again at once",
            Reply::json(408, try_again("paused_capacity")),
            SendNow(rf, 0, false),
        ),
        (
            "500: poll again at once",
            Reply::json(500, "{}"),
            SendNow(rf, 0, false),
        ),
        (
            "503: poll again at once",
            Reply::json(503, "{}"),
            SendNow(rf, 0, false),
        ),
        (
            "429: back off 1 s",
            Reply::json(429, "{}"),
            SendAfter(secs(1.0), rf, 0, false),
        ),
        (
            "connection error: back off 1 s",
            Reply::fail(TransportErrorKind::Connect),
            SendAfter(secs(1.0), rf, 0, false),
        ),
        (
            "read timeout: back off 1 s",
            Reply::fail(TransportErrorKind::Timeout),
            SendAfter(secs(1.0), rf, 0, false),
        ),
        (
            "empty 400 is a connection error: back off 1 s",
            Reply::empty(400),
            SendAfter(secs(1.0), rf, 0, false),
        ),
        (
            "400 with a body: poll again at once",
            Reply::json(400, r#"{"detail":"x"}"#),
            SendNow(rf, 0, false),
        ),
        (
            "402 in the billing window: 5 s",
            Reply::json(402, "{}"),
            SendAfter(secs(5.0), rf, 0, false),
        ),
        (
            "410: the future expired",
            Reply::json(410, "{}"),
            Fails(ErrorKind::Gone),
        ),
        (
            "401: fatal",
            Reply::json(401, "{}"),
            Fails(ErrorKind::Authentication),
        ),
        (
            "404: fatal",
            Reply::json(404, "{}"),
            Fails(ErrorKind::NotFound),
        ),
        (
            "409: fatal",
            Reply::json(409, "{}"),
            Fails(ErrorKind::Conflict),
        ),
        (
            "422: fatal",
            Reply::json(422, "{}"),
            Fails(ErrorKind::Unprocessable),
        ),
        (
            "failed future",
            Reply::json(200, r#"{"error":"bad lr","category":"user"}"#),
            Fails(ErrorKind::RequestFailed),
        ),
        (
            "JSON result",
            Reply::json(200, r#"{"metrics":{}}"#),
            Succeeds,
        ),
        (
            "undecodable reply",
            Reply::json(200, "not json"),
            Fails(ErrorKind::Decode),
        ),
        (
            "metadata only: re-poll at once without metadata",
            Reply::json(
                200,
                r#"{"status":"complete_metadata","response_payload_size":10}"#,
            ),
            SendNow(rf, 0, false),
        ),
    ];
    for (name, reply, expected) in table {
        let mut h = Harness::new(step(), Gates::default(), CallOptions::default());
        let poll = h.submitted();
        assert_eq!(h.next_after(&poll, reply).0, expected, "{name}");
    }
}

#[test]
fn polls_carry_the_iteration_the_request_type_and_the_metadata_flag() {
    let mut h = Harness::new(step(), Gates::default(), CallOptions::default());
    let first = h.submitted();
    assert_eq!(header(&first, "x-tinker-request-iteration"), "0");
    assert_eq!(header(&first, "x-tinker-request-type"), "OptimStep");
    assert!(!header(&first, "x-tinker-create-promise-roundtrip-time").is_empty());
    let meta = Reply::json(
        200,
        r#"{"status":"complete_metadata","response_payload_size":150}"#,
    );
    let (_, second) = h.next_after(&first, meta);
    let second = second.unwrap();
    assert_eq!(header(&second, "x-tinker-request-iteration"), "1");
    assert!(
        String::from_utf8_lossy(second.request.body()).contains(r#""allow_metadata_only":false"#)
    );
    // The announced bytes are held until the result arrives, then returned.
    assert_eq!(h.ledger.inflight_budget().balance(), 200 - 150);
    // A second metadata-only reply is a protocol error.
    let (next, _) = h.next_after(
        &second,
        Reply::json(
            200,
            r#"{"status":"complete_metadata","response_payload_size":1}"#,
        ),
    );
    assert_eq!(next, Next::Fails(ErrorKind::Decode));
    assert!(h.ledger.is_quiescent());
}

#[test]
fn a_metadata_only_reply_waits_for_the_inflight_budget() {
    let mut h = Harness::new(step(), Gates::default(), CallOptions::default());
    let poll = h.submitted();
    let hog = h.ledger.acquire_inflight_bytes(500).expect("admitted"); // balance now negative
    let meta = Reply::json(
        200,
        r#"{"status":"complete_metadata","response_payload_size":50}"#,
    );
    assert_eq!(h.next_after(&poll, meta).0, Next::Blocked);
    h.ledger.release_inflight_bytes(hog);
    let next = h.transmit();
    assert_eq!(endpoint(&next), "retrieve_future");
}

#[test]
fn a_fourth_400_in_a_row_is_fatal_and_a_408_resets_the_count() {
    let mut h = Harness::new(step(), Gates::default(), CallOptions::default());
    let mut poll = h.submitted();
    let bad = || Reply::json(400, r#"{"detail":"bad"}"#);
    for _ in 0..3 {
        let (next, t) = h.next_after(&poll, bad());
        assert_eq!(next, Next::SendNow("retrieve_future", 0, false));
        poll = t.unwrap();
    }
    let (_, t) = h.next_after(&poll, Reply::json(408, try_again("active")));
    poll = t.unwrap();
    for _ in 0..3 {
        poll = h.next_after(&poll, bad()).1.unwrap();
    }
    assert_eq!(
        h.next_after(&poll, bad()).0,
        Next::Fails(ErrorKind::BadRequest)
    );
}

#[test]
fn connection_back_off_doubles_to_30_s_and_resets_after_a_reply() {
    let mut h = Harness::new(step(), Gates::default(), CallOptions::default());
    let mut poll = h.submitted();
    let mut waits = Vec::new();
    for _ in 0..7 {
        let (next, t) = h.next_after(&poll, Reply::json(429, "{}"));
        let Next::SendAfter(d, ..) = next else {
            panic!("{next:?}")
        };
        waits.push(d.as_secs());
        poll = t.unwrap();
    }
    assert_eq!(waits, [1, 2, 4, 8, 16, 30, 30]);
    poll = h
        .next_after(&poll, Reply::json(200, try_again("active")))
        .1
        .unwrap();
    assert_eq!(
        h.next_after(&poll, Reply::fail(TransportErrorKind::Io)).0,
        Next::SendAfter(secs(1.0), "retrieve_future", 0, false)
    );
}

#[test]
fn queue_state_changes_become_events_and_a_deadline_names_the_last_one() {
    let deadline = CallOptions::default();
    let mut h = Harness::new(step(), Gates::default(), deadline);
    h.call.opts.deadline = Some(h.t0 + Duration::from_secs(30));
    let poll = h.submitted();
    let (_, t) = h.next_after(&poll, Reply::json(200, try_again("paused_capacity")));
    h.now += Duration::from_secs(31);
    h.answer(&t.unwrap(), Reply::json(200, try_again("paused_capacity")));
    let Output::Done(Err(e)) = h.output() else {
        panic!()
    };
    let Error::Timeout {
        waiting_for,
        request_id,
        queue_state,
        elapsed,
    } = &e
    else {
        panic!("{e}")
    };
    assert_eq!(waiting_for, "the result of optim_step");
    assert_eq!(request_id.as_deref(), Some("req-7"));
    assert_eq!(queue_state.as_deref(), Some("paused_capacity"));
    assert_eq!(*elapsed, Duration::from_secs(31));
    assert!(h
        .events
        .iter()
        .any(|e| matches!(e, Event::Submitted { .. })));
    assert!(h.events.iter().any(|e| matches!(
        e,
        Event::QueueState {
            state: crate::types::QueueState::PausedCapacity,
            ..
        }
    )));
}

/// protocol.md 8.2-8.3 and 8.7-8.8 on `optim_step` (layers H and X), one row per rule.
#[test]
fn each_submit_rule_of_layers_h_and_x() {
    use Next::*;
    let os = "optim_step";
    let table: Vec<(&str, Reply, Next)> = vec![
        (
            "503: layer H, same key, retry 1",
            Reply::json(503, "{}"),
            SendAfter(secs(0.5), os, 1, true),
        ),
        (
            "408: layer H",
            Reply::json(408, "{}"),
            SendAfter(secs(0.5), os, 1, true),
        ),
        (
            "409: layer H",
            Reply::json(409, "{}"),
            SendAfter(secs(0.5), os, 1, true),
        ),
        (
            "429 with Retry-After: 2 s exactly",
            Reply::json(429, "{}").with_header("retry-after", "2"),
            SendAfter(secs(2.0), os, 1, true),
        ),
        (
            "Retry-After beyond 60 s is ignored",
            Reply::json(429, "{}").with_header("retry-after", "61"),
            SendAfter(secs(0.5), os, 1, true),
        ),
        (
            "retry-after-ms",
            Reply::json(503, "{}").with_header("retry-after-ms", "250"),
            SendAfter(secs(0.25), os, 1, true),
        ),
        (
            "transport error: layer H",
            Reply::fail(TransportErrorKind::Connect),
            SendAfter(secs(0.5), os, 1, true),
        ),
        (
            "x-should-retry: false on 503 leaves it to layer X: new key after 1 s",
            Reply::json(503, "{}").with_header("x-should-retry", "false"),
            SendAfter(secs(1.0), os, 0, false),
        ),
        (
            "x-should-retry: true on 400 forces layer H",
            Reply::json(400, "{}").with_header("x-should-retry", "true"),
            SendAfter(secs(0.5), os, 1, true),
        ),
        (
            "empty 400: proxy rejection, layer X",
            Reply::empty(400),
            SendAfter(secs(1.0), os, 0, false),
        ),
        (
            "402: billing pause 5 s, new key",
            Reply::json(402, "{}"),
            SendAfter(secs(5.0), os, 0, false),
        ),
        (
            "400 with a body: fatal",
            Reply::json(400, r#"{"detail":"x"}"#),
            Fails(ErrorKind::BadRequest),
        ),
        (
            "401: fatal",
            Reply::json(401, "{}"),
            Fails(ErrorKind::Authentication),
        ),
        (
            "404: fatal",
            Reply::json(404, "{}"),
            Fails(ErrorKind::NotFound),
        ),
        (
            "422: fatal",
            Reply::json(422, "{}"),
            Fails(ErrorKind::Unprocessable),
        ),
        (
            "2xx without a request id: decode error",
            Reply::json(200, "{}"),
            Fails(ErrorKind::Decode),
        ),
    ];
    for (name, reply, expected) in table {
        let mut h = Harness::new(step(), Gates::default(), CallOptions::default());
        let t = h.transmit();
        let got = match h.next_after(&t, reply).0 {
            // Layer H's jitter shortens the wait by up to 25 %: compare the nominal wait.
            Next::SendAfter(d, e, k, same) if same && d < secs(0.5) && d >= secs(0.375) => {
                Next::SendAfter(secs(0.5), e, k, same)
            }
            other => other,
        };
        assert_eq!(got, expected, "{name}");
    }
}

#[test]
fn layer_h_gives_eleven_attempts_then_layer_x_takes_over_with_a_new_key() {
    let mut h = Harness::new(step(), Gates::default(), CallOptions::default());
    let mut t = h.transmit();
    for k in 1..=10 {
        let (next, n) = h.next_after(&t, Reply::json(503, "{}"));
        assert!(
            matches!(next, Next::SendAfter(_, "optim_step", r, true) if r == k),
            "{next:?}"
        );
        t = n.unwrap();
    }
    let (next, _) = h.next_after(&t, Reply::json(503, "{}"));
    assert_eq!(next, Next::SendAfter(secs(1.0), "optim_step", 0, false));
    assert_eq!(
        h.call.attempts(),
        12,
        "eleven layer-H attempts, then layer X's first"
    );
}

#[test]
fn endpoints_without_layer_h_go_straight_to_layer_x_and_those_without_x_fail() {
    let save = SaveWeightsRequest::new("s:train:0", 1, "ckpt");
    let mut h = Harness::new(save, Gates::default(), CallOptions::default());
    let t = h.transmit();
    assert_eq!(
        h.next_after(&t, Reply::json(503, "{}")).0,
        Next::SendAfter(secs(1.0), "save_weights", 0, false)
    );
    // create_model has layer H only: after 11 attempts the 503 surfaces.
    let create =
        CreateModelRequest::new("sess", 0, "Qwen/Qwen3-8B", crate::types::LoraConfig::new(8));
    let mut h = Harness::new(create, Gates::default(), CallOptions::default());
    let mut t = h.transmit();
    for _ in 0..10 {
        t = h.next_after(&t, Reply::json(503, "{}")).1.unwrap();
    }
    assert_eq!(
        h.next_after(&t, Reply::json(503, "{}")).0,
        Next::Fails(ErrorKind::Server)
    );
    assert_eq!(h.call.attempts(), 11);
}

#[test]
fn layer_x_stops_after_300_s_and_the_retry_budget_stops_a_storm_sooner() {
    let mut h = Harness::new(step(), Gates::default(), CallOptions::default());
    let mut t = h.transmit();
    let forbid = || Reply::json(503, "{}").with_header("x-should-retry", "false");
    loop {
        match h.next_after(&t, forbid()) {
            (Next::SendAfter(..), Some(n)) => t = n,
            (next, _) => {
                assert_eq!(next, Next::Fails(ErrorKind::Server));
                break;
            }
        }
    }
    assert_eq!(h.now - h.t0, Duration::from_secs(300));

    let mut h = Harness::new(step(), Gates::default(), CallOptions::default());
    h.ledger.set_retry_budget(RetryBudgetConfig {
        capacity: 10,
        ..Default::default()
    });
    let mut t = h.transmit();
    for _ in 0..2 {
        t = h.next_after(&t, Reply::json(503, "{}")).1.unwrap();
    }
    // Two retries spent the bucket; layer X is refused too.
    assert_eq!(
        h.next_after(&t, Reply::json(503, "{}")).0,
        Next::Fails(ErrorKind::Server)
    );
}

#[test]
fn a_pushed_back_sample_is_resent_after_the_back_off_with_the_same_seq_id_and_a_new_key() {
    let request = SampleRequest::new(
        "s:sample:0",
        4,
        ModelInput::from_tokens(vec![1, 2]),
        SamplingParams::default(),
    );
    let gates = Gates {
        sampling_estimate: Some(20),
        ..Gates::default()
    };
    let mut h = Harness::new(request, gates, CallOptions::default());
    let t = h.transmit();
    let (next, again) = h.next_after(&t, Reply::json(429, "{}"));
    assert_eq!(next, Next::SendAfter(secs(1.0), "asample", 0, false));
    let again = again.unwrap();
    assert!(String::from_utf8_lossy(again.request.body()).contains(r#""seq_id":4"#));
    assert_eq!(header(&again, "x-tinker-sampling-backpressure"), "1");
    // The dispatch gates are held during the POST and released with the future.
    assert_eq!(h.ledger.sampling_dispatch_state().in_flight(), 1);
    let (_, poll) = h.next_after(&again, Reply::json(200, r#"{"request_id":"req-7"}"#));
    assert_eq!(h.ledger.sampling_dispatch_state().in_flight(), 0);
    // A 410 while polling a sample is reported as an expired future for layer R.
    let poll = poll.expect("a poll");
    assert_eq!(
        h.next_after(&poll, Reply::json(410, "{}")).0,
        Next::Fails(ErrorKind::Gone)
    );
    assert_eq!(h.call.failure(), Some(Failure::FutureExpired));
}

#[test]
fn cancelling_refunds_what_the_call_holds() {
    let request = SampleRequest::new(
        "s:sample:0",
        0,
        ModelInput::from_tokens(vec![1]),
        SamplingParams::default(),
    );
    let gates = Gates {
        sampling_estimate: Some(20),
        ..Gates::default()
    };
    let mut h = Harness::new(request, gates, CallOptions::default());
    let _ = h.transmit();
    assert!(!h.ledger.is_quiescent());
    h.call.cancel(&mut h.ledger, h.now);
    assert!(h.ledger.is_quiescent());
    assert!(matches!(h.output(), Output::Done(Err(_))));
}
