//! Failure stories: an error storm (A7), session expiry (A8), hung and stalled requests (A9),
//! and an evaluation with per-example timeouts (A12).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::stream::{self, StreamExt};
use tinker_core::client::{ClientOptions, TrainingClient};
use tinker_core::retry::QueueState;
use tinker_core::types::{
    AdamParams, FinishReason, LoraConfig, LossFn, ModelInput, SamplingParams,
};
use tinker_core::ErrorKind;

use super::data::{batch, mean_nll, BASE_MODEL};
use super::{Env, Runtime};
use crate::server::{Fault, FaultRule, LocalServerConfig};

async fn step(training: &TrainingClient, n: usize) -> f64 {
    let data = batch(n, 8);
    let fb = training
        .forward_backward(data.clone(), LossFn::CrossEntropy)
        .await
        .unwrap();
    let opt = training
        .optim_step(AdamParams::with_learning_rate(0.05))
        .await
        .unwrap();
    let out = fb.result().await.unwrap();
    opt.result().await.unwrap();
    mean_nll(out.loss(), &data)
}

/// A7: during step 3 of a 10-step run the server answers 503 for a while, then 429 with and
/// without `Retry-After`, then 500 on `retrieve_future`. The run finishes; the server executed
/// each of its 10 forward_backward and 10 optim_step requests exactly once, and its losses equal
/// those of an undisturbed run with the same seed. The retries waited: at least the
/// `Retry-After` after that 429, and at least layer H's smallest back-off (0.5 s × 0.75)
/// after the others.
pub async fn a7_error_storm<R: Runtime>() {
    let env = Env::<R>::new(LocalServerConfig::default());
    let service = env.connect();
    let lora = LoraConfig::new(8).with_seed(11);
    let calm = service
        .create_lora_training_client(BASE_MODEL, lora)
        .await
        .unwrap();
    let stormy = service
        .create_lora_training_client(BASE_MODEL, lora)
        .await
        .unwrap();
    let mut expected = Vec::new();
    for n in 0..10 {
        expected.push(step(&calm, n).await);
    }
    let mut observed = Vec::new();
    for n in 0..10 {
        if n == 3 {
            let mut unavailable = FaultRule::times(
                "forward_backward",
                4,
                Fault::Status {
                    status: 503,
                    body: None,
                    headers: Default::default(),
                },
            );
            unavailable.count = None;
            unavailable.duration_ms = Some(1_500);
            env.server().add_faults(vec![
                unavailable,
                FaultRule::once(
                    "optim_step",
                    Fault::RateLimit {
                        retry_after: Some("0.5".into()),
                    },
                ),
                FaultRule::once("optim_step", Fault::RateLimit { retry_after: None }).after(1),
                FaultRule::times(
                    "retrieve_future",
                    2,
                    Fault::Status {
                        status: 500,
                        body: None,
                        headers: Default::default(),
                    },
                ),
            ]);
        }
        observed.push(step(&stormy, n).await);
    }
    for (n, (a, b)) in expected.iter().zip(&observed).enumerate() {
        assert!(
            (a - b).abs() < 1e-9,
            "step {n}: {b} after the storm vs {a} undisturbed"
        );
    }
    let fired: u64 = env.server().faults().iter().map(|f| f.fired).sum();
    assert!(fired >= 4, "the storm happened ({fired} faults fired)");
    // The server counts: retried on the wire, applied once.
    for endpoint in ["forward_backward", "optim_step"] {
        assert_eq!(
            env.server().executed(stormy.model_id(), endpoint),
            10,
            "{endpoint} requests executed by the stormy run"
        );
    }
    // Back-off honoured, read from the server's arrival times (lower bounds only).
    let recording = env.server().recording();
    let mut rate_limited = 0;
    for (i, e) in recording.iter().enumerate() {
        let retried = e.fault.is_some() && matches!(e.resp_status, 429 | 503);
        if !retried || !matches!(e.endpoint(), "optim_step" | "forward_backward") {
            continue;
        }
        let next = recording[i + 1..]
            .iter()
            .find(|n| n.endpoint() == e.endpoint())
            .expect("the rejected request was sent again");
        let waited = next.t - e.t;
        // The first 429 carried `Retry-After: 0.5`; everything else falls back to layer H.
        let at_least = if e.resp_status == 429 && rate_limited == 0 {
            0.5
        } else {
            0.375
        };
        if e.resp_status == 429 {
            rate_limited += 1;
        }
        assert!(
            waited >= at_least - 0.01,
            "{} answered {} was re-sent after {waited:.3} s (at least {at_least} s)",
            e.endpoint(),
            e.resp_status
        );
    }
    assert_eq!(rate_limited, 2, "both 429s were answered");

    // When retries run out, the error is typed and names the request and the server's log
    // entry (feedback#80). A 5xx on a poll is retried without limit (protocol.md 7.5) and a
    // submission's holder retries last 300 s, so the budget that runs out here is the poll's:
    // `retrieve_future` answers 500 (re-polled), then 400 until its three re-polls are spent.
    let log_header = |id: &str| [("x-request-id".to_owned(), id.to_owned())].into();
    let mut rejected = FaultRule::once(
        "retrieve_future",
        Fault::Status {
            status: 400,
            body: None,
            headers: log_header("log-a7-400"),
        },
    )
    .after(2);
    rejected.count = None;
    rejected.always = true;
    env.server().set_faults(vec![
        FaultRule::times(
            "retrieve_future",
            2,
            Fault::Status {
                status: 500,
                body: None,
                headers: log_header("log-a7-500"),
            },
        ),
        rejected,
    ]);
    let fb = stormy
        .forward_backward(batch(0, 8), LossFn::CrossEntropy)
        .await
        .expect("the submission itself is accepted");
    let request_id = fb.request_id().expect("a submitted call has a request id");
    let err = fb.result().await.expect_err("the poll's retries run out");
    assert_eq!(err.kind(), ErrorKind::BadRequest, "{err}");
    assert_eq!(err.status(), Some(400));
    assert_eq!(err.request_id(), Some(request_id.as_str()), "{err}");
    let tinker_core::Error::Status(status) = &err else {
        panic!("a status error, got {err:?}")
    };
    assert_eq!(status.server_log_id.as_deref(), Some("log-a7-400"));
    let polls = env
        .server()
        .recording()
        .iter()
        .filter(|e| {
            e.endpoint() == "retrieve_future"
                && e.body.as_ref().and_then(|b| b["request_id"].as_str()) == Some(&request_id)
        })
        .count();
    assert_eq!(
        polls,
        2 + 4,
        "two 500s re-polled, then a 400 and its three re-polls"
    );
    env.server().set_faults(Vec::new());
    service.close(FinishReason::Success).await.unwrap();
}

/// Warnings the client logs through `tracing`, captured process-wide (the housekeeper logs from
/// its own task, on whatever thread the runtime runs it), so a scenario can count its own by
/// session id.
mod warnings {
    use std::fmt::Debug;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Mutex, Once};

    use tracing::field::{Field, Visit};
    use tracing::span::{Attributes, Id, Record};
    use tracing::{Event, Level, Metadata, Subscriber};

    static CAPTURED: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());
    static INSTALL: Once = Once::new();

    /// Keeps WARN and ERROR events (their `session_id` field and message); no spans.
    struct Capture;

    #[derive(Default)]
    struct Fields {
        session_id: String,
        message: String,
    }

    impl Visit for Fields {
        fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
            match field.name() {
                "session_id" => self.session_id = format!("{value:?}"),
                "message" => self.message = format!("{value:?}"),
                _ => {}
            }
        }
    }

    impl Subscriber for Capture {
        fn enabled(&self, metadata: &Metadata<'_>) -> bool {
            metadata.is_event() && *metadata.level() <= Level::WARN
        }
        fn new_span(&self, _: &Attributes<'_>) -> Id {
            Id::from_u64(1)
        }
        fn record(&self, _: &Id, _: &Record<'_>) {}
        fn record_follows_from(&self, _: &Id, _: &Id) {}
        fn event(&self, event: &Event<'_>) {
            let mut fields = Fields::default();
            event.record(&mut fields);
            CAPTURED
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((fields.session_id, fields.message));
        }
        fn enter(&self, _: &Id) {}
        fn exit(&self, _: &Id) {}
    }

    /// Starts capturing (once per process). Returns whether the capture is in place: another
    /// global subscriber installed first wins.
    pub(super) fn capture() -> bool {
        INSTALL.call_once(|| {
            let _ = tracing::subscriber::set_global_default(Capture);
        });
        tracing::dispatcher::get_default(|d| d.is::<Capture>())
    }

    /// Local servers number their sessions alike, so two runs of this scenario in one process
    /// (one per executor) would see each other's warnings: they take turns.
    static WATCHING: AtomicBool = AtomicBool::new(false);

    /// Held while a scenario counts warnings; released on drop.
    pub(super) struct Watch;

    impl Watch {
        /// Waits until no other run of the scenario is counting.
        pub(super) async fn acquire<R: super::Runtime>() -> Watch {
            while WATCHING
                .compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst)
                .is_err()
            {
                R::sleep(std::time::Duration::from_millis(20)).await;
            }
            Watch
        }
    }

    impl Drop for Watch {
        fn drop(&mut self) {
            WATCHING.store(false, Ordering::SeqCst);
        }
    }

    /// The captured warnings of `session_id` whose message contains `needle`.
    pub(super) fn count(session_id: &str, needle: &str) -> usize {
        CAPTURED
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(s, m)| s == session_id && m.contains(needle))
            .count()
    }
}

/// A8: heartbeats fail and the server expires the session; the next call fails with a typed
/// error (410 Gone, or `Closed` once the client knows) instead of hanging, and `close` returns
/// within its flush budget.
///
/// Before that, with a short warning threshold: heartbeats failing for five thresholds give
/// exactly one warning, and a second comes only after a heartbeat succeeded in between.
pub async fn a8_session_expiry<R: Runtime>() {
    heartbeat_loss_warns_once_per_outage::<R>().await;
    let config = LocalServerConfig {
        session_timeout_secs: Some(1.0),
        faults: vec![heartbeats_always_fail()],
        ..LocalServerConfig::default()
    };
    let env = Env::<R>::new(config);
    let service = env.connect();
    let training = service
        .create_lora_training_client(BASE_MODEL, LoraConfig::new(4))
        .await
        .unwrap();
    R::sleep(Duration::from_millis(1_500)).await;
    let err = async {
        training
            .forward_backward(batch(0, 2), LossFn::CrossEntropy)
            .await?
            .result()
            .await
    }
    .await
    .expect_err("a call on an expired session fails");
    assert!(
        matches!(err.kind(), ErrorKind::Gone | ErrorKind::Closed),
        "typed expiry error, got {err}"
    );
    service
        .close(FinishReason::Errored)
        .await
        .expect("closing an expired session is not an error");
    let after = training
        .forward_backward(batch(0, 2), LossFn::CrossEntropy)
        .await
        .expect_err("a closed client refuses new calls");
    assert_eq!(after.kind(), ErrorKind::Closed);
}

/// A9: a sample whose future stays queued (`paused_capacity`) ends at the user's deadline with a
/// timeout naming the request id and the queue state, after the observer heard the reason; a
/// poll whose body stalls mid-way is retried on the same future and succeeds.
pub async fn a9_hung_and_stalled<R: Runtime>() {
    let config = LocalServerConfig {
        long_poll_hold_ms: 50,
        ..LocalServerConfig::default()
    };
    let env = Env::<R>::new(config);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let observer = seen.clone();
    let service = env.connect_with(
        ClientOptions::default().on_queue_state(move |e| observer.lock().unwrap().push(e.clone())),
    );
    let sampler = service
        .create_base_model_sampling_client(BASE_MODEL)
        .await
        .unwrap();
    let params = SamplingParams {
        max_tokens: Some(4),
        ..SamplingParams::default()
    };
    let mut paused = FaultRule::once(
        "retrieve_future",
        Fault::TryAgain {
            queue_states: vec!["paused_capacity".into()],
        },
    );
    paused.count = None;
    paused.always = true;
    env.server().set_faults(vec![paused]);
    let err = sampler
        .with_deadline(Duration::from_millis(1_500))
        .sample(ModelInput::from_tokens(vec![1, 2]), 1, params.clone())
        .await
        .expect_err("the deadline ends the wait");
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    assert!(err.request_id().is_some(), "names the request: {err}");
    assert!(
        err.to_string().contains("paused_capacity"),
        "names the queue state: {err}"
    );
    assert!(
        seen.lock()
            .unwrap()
            .iter()
            .any(|e| e.state == QueueState::PausedCapacity),
        "the observer heard the pause"
    );

    // The abandoned call's last poll may still be on the wire (the blocking runtime cannot
    // abort a request in flight): let it land before arming the next fault.
    env.server().set_faults(Vec::new());
    R::sleep(Duration::from_millis(300)).await;
    env.server().set_faults(vec![FaultRule::once(
        "retrieve_future",
        Fault::StallBody {
            stall_ms: Some(300),
        },
    )
    .for_request_type("Sample")]);
    env.server().clear_recording();
    let out = sampler
        .sample(ModelInput::from_tokens(vec![3, 4]), 1, params)
        .await
        .expect("a stalled body is retried");
    assert_eq!(out.sequences.len(), 1);
    let polls: Vec<_> = env
        .server()
        .recording()
        .into_iter()
        .filter(|e| e.endpoint() == "retrieve_future")
        .filter_map(|e| e.body_field("request_id").cloned())
        .collect();
    assert!(polls.len() >= 2, "{polls:?}");
    assert!(
        polls.windows(2).any(|w| w[0] == w[1]),
        "the same future was polled again: {polls:?}"
    );
    service.close(FinishReason::Success).await.unwrap();
}

/// A12: an evaluation of 500 prompts at concurrency 64 with a per-example timeout; the server
/// never finishes 5 of them. 495 results and 5 recorded timeouts, nothing crashes, and at most 64
/// examples are in flight at once, counted by the caller and by the server (sample submissions
/// and result polls it handled at once).
pub async fn a12_eval_with_per_example_timeouts<R: Runtime>() {
    let env = Env::<R>::new(LocalServerConfig::default());
    let service = env.connect();
    let sampler = service
        .create_base_model_sampling_client(BASE_MODEL)
        .await
        .unwrap();
    env.server().add_faults(vec![
        FaultRule::times("asample", 5, Fault::HangFuture).after(20)
    ]);
    let per_example = sampler.with_deadline(Duration::from_secs(3));
    let in_flight = AtomicUsize::new(0);
    let peak = AtomicUsize::new(0);
    let params = SamplingParams {
        max_tokens: Some(4),
        ..SamplingParams::default()
    };
    let results: Vec<_> = stream::iter(0..500)
        .map(|i| {
            let call =
                per_example.sample(ModelInput::from_tokens(vec![i % 100, 1]), 1, params.clone());
            let (in_flight, peak) = (&in_flight, &peak);
            async move {
                let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                let r = call.await;
                in_flight.fetch_sub(1, Ordering::SeqCst);
                r
            }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    let ok = results.iter().filter(|r| r.is_ok()).count();
    let timeouts = results
        .iter()
        .filter(|r| r.as_ref().is_err_and(|e| e.kind() == ErrorKind::Timeout))
        .count();
    assert_eq!(
        (ok, timeouts),
        (495, 5),
        "{:?}",
        results
            .iter()
            .filter_map(|r| r.as_ref().err())
            .collect::<Vec<_>>()
    );
    let peak = peak.load(Ordering::SeqCst);
    assert!(
        (1..=64).contains(&peak),
        "{peak} examples in flight at once"
    );
    for endpoint in ["asample", "retrieve_future"] {
        let at_server = env.server().peak_in_flight(endpoint);
        assert!(
            (1..=64).contains(&at_server),
            "{at_server} {endpoint} requests at the server at once"
        );
    }
    service.close(FinishReason::Success).await.unwrap();
}

/// Every heartbeat answered 503 until the rule is removed.
fn heartbeats_always_fail() -> FaultRule {
    let mut r = FaultRule::once(
        "session_heartbeat",
        Fault::Status {
            status: 503,
            body: None,
            headers: Default::default(),
        },
    );
    r.count = None;
    r.always = true;
    r
}

async fn heartbeat_loss_warns_once_per_outage<R: Runtime>() {
    const OVERDUE: &str = "no heartbeat has succeeded";
    let config = LocalServerConfig {
        faults: vec![heartbeats_always_fail()],
        ..LocalServerConfig::default()
    };
    let _watch = warnings::Watch::acquire::<R>().await;
    assert!(
        warnings::capture(),
        "the suite's binaries install no global tracing subscriber of their own"
    );
    let env = Env::<R>::new(config);
    let threshold = Duration::from_millis(200);
    let service = env.connect_with(
        ClientOptions::default().with_heartbeat(Duration::from_millis(40), threshold),
    );
    let session = service.session_id().await.unwrap();
    let before = warnings::count(&session, OVERDUE);
    let overdue = || warnings::count(&session, OVERDUE) - before;
    let heartbeat_ok = || {
        env.server()
            .recording()
            .iter()
            .any(|e| e.endpoint() == "session_heartbeat" && e.resp_status == 200)
    };
    // Heartbeats keep failing: a warning once the threshold passes, and no other for five
    // more thresholds of failures.
    assert!(
        eventually::<R>(|| overdue() >= 1).await,
        "the outage is reported"
    );
    R::sleep(threshold * 5).await;
    assert_eq!(overdue(), 1, "one warning per outage");
    // A heartbeat succeeds again: no warning; then a second outage warns once more.
    env.server().set_faults(Vec::new());
    assert!(
        eventually::<R>(heartbeat_ok).await,
        "a heartbeat succeeded in between"
    );
    assert_eq!(overdue(), 1, "no warning while heartbeats succeed");
    env.server().set_faults(vec![heartbeats_always_fail()]);
    assert!(
        eventually::<R>(|| overdue() >= 2).await,
        "the second outage is reported"
    );
    R::sleep(threshold * 5).await;
    assert_eq!(overdue(), 2, "a second outage, after a success, warns once");
    service.close(FinishReason::Success).await.unwrap();
}

/// Waits (up to 30 s, checking every 20 ms) until `condition` holds; returns whether it did. A
/// bound for a slow machine, not a timing assertion.
async fn eventually<R: Runtime>(condition: impl Fn() -> bool) -> bool {
    for _ in 0..1_500 {
        if condition() {
            return true;
        }
        R::sleep(Duration::from_millis(20)).await;
    }
    condition()
}
