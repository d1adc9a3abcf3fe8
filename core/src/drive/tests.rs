//! The two drive loops produce the same request trace for the same seed, script and clock.

use std::time::{Duration, Instant};

use super::{drive_async, drive_blocking};
use crate::call::{CallOptions, DetachedSubmission, Event, Machine};
use crate::endpoints::RequestContext;
use crate::io::TransportErrorKind;
use crate::ledger::{Ledger, SharedLedger};
use crate::ops::{self, ForwardBackwardArgs, ForwardBackwardOp};
use crate::settings::ApiKey;
use crate::sim::{FakeHttp, FaultConfig, FaultyServer, Reply, Scripted, Server, VirtualClock};
use crate::types::{AdamParams, Datum, LossFn, ModelInput, StepParams, TensorData};

pub(crate) fn ledger(seed: u64) -> SharedLedger {
    let ctx = RequestContext::new(
        "http://sim.local",
        ApiKey::new("tml-test-key-0001").expect("valid key"),
    )
    .expect("valid url");
    SharedLedger::new(Ledger::new(ctx, seed))
}

#[allow(clippy::disallowed_methods)]
pub(crate) fn start() -> Instant {
    Instant::now()
}

pub(crate) fn datums(n: usize, tokens: usize) -> Vec<Datum> {
    (0..n)
        .map(|i| {
            Datum::new(ModelInput::from_tokens(vec![i as i32 + 1; tokens]))
                .with_input("target_tokens", TensorData::from_i64(vec![2; tokens]))
                .with_input("weights", TensorData::from_f32(vec![1.0; tokens]))
        })
        .collect()
}

/// Runs the machine `make` builds through both loops, each against a fresh copy of the server,
/// and returns both traces, both results' debug text and both virtual elapsed times.
fn both<M, S>(
    seed: u64,
    server: impl Fn() -> S,
    make: impl Fn(&mut Ledger) -> M,
) -> [(Vec<String>, String, Duration, Vec<Event>); 2]
where
    M: Machine,
    M::Output: std::fmt::Debug,
    S: Server + 'static,
{
    let t0 = start();
    let run_async = {
        let shared = ledger(seed);
        let clock = VirtualClock::new(t0);
        let http = FakeHttp::new(server(), clock.clone());
        let machine = make(&mut shared.lock());
        let mut events = Vec::new();
        let result =
            futures::executor::block_on(drive_async(machine, &shared, &http, &clock, |e| {
                events.push(e)
            }));
        assert!(shared.lock().is_quiescent());
        (http.trace(), format!("{result:?}"), clock.elapsed(), events)
    };
    let run_blocking = {
        let shared = ledger(seed);
        let clock = VirtualClock::new(t0);
        let http = FakeHttp::new(server(), clock.clone());
        let machine = make(&mut shared.lock());
        let mut events = Vec::new();
        let result = drive_blocking(machine, &shared, &http, &clock, |e| events.push(e));
        assert!(shared.lock().is_quiescent());
        (http.trace(), format!("{result:?}"), clock.elapsed(), events)
    };
    [run_async, run_blocking]
}

#[test]
fn connect_error_then_408_then_503_then_result_gives_the_same_trace_in_both_loops() {
    let script = || {
        Scripted::new([
            Reply::fail(TransportErrorKind::Connect),
            Reply::json(200, r#"{"request_id":"req-1"}"#),
            Reply::json(
                408,
                r#"{"type":"try_again","queue_state":"paused_capacity"}"#,
            ),
            Reply::json(503, "{}"),
            Reply::json(200, r#"{"metrics":{"lr":1.0}}"#),
        ])
    };
    let make = |l: &mut Ledger| {
        let params = StepParams::Adam(AdamParams::with_learning_rate(1e-4));
        ops::optim_step(l, "s:train:0", params, CallOptions::default()).expect("valid")
    };
    let [a, b] = both(42, script, make);
    assert_eq!(a.0, b.0, "request traces differ");
    assert_eq!(a.1, b.1);
    assert_eq!(a.2, b.2, "virtual elapsed time differs");
    assert_eq!(a.3, b.3, "events differ");
    let trace = a.0;
    assert_eq!(trace.len(), 5, "{trace:#?}");
    // The connect error is retried by layer H after a jittered 0.5 s: same key, retry=1.
    assert!(trace[0].contains("/optim_step") && trace[0].contains("retry=0"));
    assert!(trace[1].contains("/optim_step") && trace[1].contains("retry=1"));
    let key = |l: &str| {
        l.split("key=")
            .nth(1)
            .unwrap()
            .split(' ')
            .next()
            .unwrap()
            .to_owned()
    };
    assert_eq!(key(&trace[0]), key(&trace[1]));
    assert!(trace[1].contains(r#""seq_id":1"#));
    // The polls follow at once: no sleep after 408 or 503.
    for line in &trace[2..] {
        assert!(line.contains("/retrieve_future"), "{line}");
    }
    let ms = |l: &str| l[1..l.find("ms").unwrap()].parse::<u64>().unwrap();
    assert!((375..=500).contains(&ms(&trace[1])), "{trace:#?}");
    assert_eq!(ms(&trace[4]), ms(&trace[1]));
    assert!(a.1.contains("lr"), "{}", a.1);
    assert!(a
        .3
        .iter()
        .any(|e| matches!(e, Event::Submitted { request_id } if request_id == "req-1")));
}

#[test]
fn a_three_chunk_forward_backward_gives_the_same_trace_in_both_loops_under_faults() {
    for seed in 0..20 {
        let server = move || FaultyServer::new(seed, FaultConfig::rough());
        let make = |l: &mut Ledger| {
            let mut config = l.client_config().clone();
            config.fwdbwd_max_chunk_len = 2;
            l.set_client_config(config);
            let args = ForwardBackwardArgs {
                model_id: "sim:train:0".into(),
                data: datums(5, 8),
                loss_fn: LossFn::CrossEntropy,
                loss_fn_config: None,
                forward_only: false,
            };
            ForwardBackwardOp::new(l, args, CallOptions::default()).expect("valid")
        };
        let [a, b] = both(seed, server, make);
        assert_eq!(a.0, b.0, "seed {seed}: request traces differ");
        assert_eq!(a.1, b.1, "seed {seed}");
        assert_eq!(a.2, b.2, "seed {seed}");
    }
}

#[test]
fn chunks_two_and_three_are_posted_before_chunk_one() {
    let server = || FaultyServer::new(1, FaultConfig::none());
    let make = |l: &mut Ledger| {
        let mut config = l.client_config().clone();
        config.fwdbwd_max_chunk_len = 2;
        l.set_client_config(config);
        let args = ForwardBackwardArgs {
            model_id: "sim:train:0".into(),
            data: datums(5, 8),
            loss_fn: LossFn::CrossEntropy,
            loss_fn_config: None,
            forward_only: false,
        };
        ForwardBackwardOp::new(l, args, CallOptions::default()).expect("valid")
    };
    let [a, _] = both(3, server, make);
    let submits: Vec<&String> =
        a.0.iter()
            .filter(|l| l.contains("/forward_backward"))
            .collect();
    assert_eq!(submits.len(), 3, "{:#?}", a.0);
    // The result combines the three chunks' outputs in datum order: 5 outputs, loss 2+2+1.
    assert!(a.1.contains("\"loss:sum\": 5.0"), "{}", a.1);
    assert_eq!(a.1.matches("logprobs").count(), 5, "{}", a.1);
}

/// A transport whose requests never get an answer.
struct Silent;

#[async_trait::async_trait]
impl crate::io::AsyncHttp for Silent {
    async fn send(
        &self,
        _request: http::Request<bytes::Bytes>,
        _timeouts: crate::io::Timeouts,
    ) -> Result<crate::io::AsyncResponse, crate::io::TransportError> {
        std::future::pending().await
    }
}

#[test]
fn dropping_an_async_call_mid_flight_hands_its_chunk_to_the_background_and_the_turn_advances() {
    use std::future::Future;
    let shared = ledger(1);
    let clock = VirtualClock::new(start());
    let first = {
        let mut l = shared.lock();
        let args = ForwardBackwardArgs {
            model_id: "m".into(),
            data: datums(1, 8),
            loss_fn: LossFn::CrossEntropy,
            loss_fn_config: None,
            forward_only: false,
        };
        ForwardBackwardOp::new(&mut l, args, CallOptions::default()).unwrap()
    };
    let params = StepParams::Adam(AdamParams::with_learning_rate(1e-4));
    let second = ops::optim_step(&mut shared.lock(), "m", params, CallOptions::default()).unwrap();
    let mut fut = Box::pin(drive_async(first, &shared, &Silent, &clock, |_| {}));
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    assert!(fut.as_mut().poll(&mut cx).is_pending());
    assert_eq!(
        shared.lock().fwdbwd_budget().outstanding(),
        1,
        "the chunk's bytes are held"
    );
    drop(fut);
    // Its POST (seq 1) may or may not have reached the server: the chunk is handed to the
    // background, still holding its bytes, and sent again.
    let detached = shared.lock().take_detached_calls();
    assert_eq!(detached.len(), 1);
    assert_eq!(shared.lock().fwdbwd_budget().outstanding(), 1);
    let http = FakeHttp::new(FaultyServer::new(1, FaultConfig::none()), clock.clone());
    for call in detached {
        let sent = drive_blocking(DetachedSubmission(call), &shared, &http, &clock, |_| {});
        assert!(sent.is_ok(), "{sent:?}");
    }
    assert_eq!(shared.lock().fwdbwd_budget().outstanding(), 0);
    // The optim_step behind it follows with the next id.
    let result = drive_blocking(second, &shared, &http, &clock, |_| {});
    assert!(result.is_ok(), "{result:?}");
    let trace = http.trace();
    assert_eq!(trace.len(), 3, "chunk, step, the step's poll: {trace:#?}");
    assert!(trace[0].contains("/forward_backward") && trace[0].contains("retry=1"));
    assert!(trace[1].contains(r#""seq_id":2"#), "{trace:#?}");
    assert!(shared.lock().is_quiescent());
}

#[test]
fn a_blocking_call_waits_for_the_turn_of_a_call_on_another_thread() {
    let shared = ledger(1);
    let clock = VirtualClock::new(start());
    let params = || StepParams::Adam(AdamParams::with_learning_rate(1e-4));
    let first = ops::optim_step(&mut shared.lock(), "m", params(), CallOptions::default()).unwrap();
    let second =
        ops::optim_step(&mut shared.lock(), "m", params(), CallOptions::default()).unwrap();
    let http = FakeHttp::new(FaultyServer::new(1, FaultConfig::none()), clock.clone());
    std::thread::scope(|s| {
        let waiter = s.spawn(|| drive_blocking(second, &shared, &http, &clock, |_| {}));
        // The second step cannot be sent before the first: it is parked on the condvar.
        let first = drive_blocking(first, &shared, &http, &clock, |_| {});
        assert!(first.is_ok());
        assert!(waiter.join().unwrap().is_ok());
    });
    let trace = http.trace();
    let submits: Vec<_> = trace.iter().filter(|l| l.contains("/optim_step")).collect();
    assert!(submits[0].contains(r#""seq_id":1"#) && submits[1].contains(r#""seq_id":2"#));
}
