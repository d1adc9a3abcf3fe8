//! Chaos: a realistic mix of operations (training steps, checkpoint saves, samples, REST reads)
//! on every runtime against the local server under a seeded fault schedule: 5xx (with and
//! without a body), 429 with and without Retry-After, try-again (408) answers and two try-again
//! storms, 410 expired futures (samples and training), connection resets before and after the
//! handler ran, bodies cut mid-way or stalled (closed later, or never), a 503 outage window, and
//! futures that never complete.
//!
//! Run: `cargo test -p tinker-testkit --release --test chaos -- --ignored chaos --nocapture`
//! (`CHAOS_OPS=N` changes the 10,000 operations per runtime; also `bench/run.sh --chaos`).
//!
//! Each run prints the operations, the faults injected by kind, the retries and the failures by
//! call and kind, and checks:
//! - no panic anywhere in the process (client or server);
//! - no training step applied twice: for each run and endpoint the server's count of executed
//!   requests never exceeds the calls made (and covers every call that succeeded), and no
//!   operation (its payload is unique) reached the server under two different seq ids — the
//!   server deduplicates by seq id, so that would execute it twice;
//! - every call ends with an outcome: a watchdog stops the run (exit status 1) when a call is
//!   still running well past its deadline, and at the end every call started has ended;
//! - no call outlives its deadline: each call is timed from the moment its method is called
//!   (when its deadline starts) to its outcome, and may end at most `DEADLINE_SLACK` late.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use serde_json::Value;
use tinker_core::client::{ClientOptions, ServiceClient, TrainingClient};
use tinker_core::settings::Settings;
use tinker_core::types::{AdamParams, Datum, LoraConfig, LossFn, ModelInput, SamplingParams};
use tinker_testkit::scenarios::{batch, counting_datum, BASE_MODEL};
use tinker_testkit::server::{Exchange, FaultRule};
use tinker_testkit::{LocalServer, LocalServerConfig};

/// Every call's deadline (training, sampling and REST calls alike).
const DEADLINE: Duration = Duration::from_secs(30);
/// How late a call may end past its deadline (timer and scheduling slack).
const DEADLINE_SLACK: Duration = Duration::from_secs(2);
/// A call still running this long past its deadline has no outcome: the watchdog ends the run.
const NO_OUTCOME_AFTER: Duration = Duration::from_secs(30);
/// Training runs driven concurrently, each by its own sequence of rounds.
const LANES: usize = 4;
/// Samples per round of a lane.
const SAMPLES_PER_ROUND: usize = 16;
/// A checkpoint save every this many rounds.
const SAVE_EVERY: usize = 25;
/// The training endpoints whose executions the server counts.
const TRAINING_ENDPOINTS: [&str; 3] = ["forward_backward", "optim_step", "save_weights"];

static PANICS: AtomicU64 = AtomicU64::new(0);

fn count_panics() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        PANICS.fetch_add(1, Ordering::SeqCst);
        previous(info);
    }));
}

/// The seeded fault schedule (the server draws each rule's probability from its seeded PRNG):
/// a few percent of requests meet one of the server's faults.
fn faults() -> Vec<FaultRule> {
    let rules = serde_json::json!([
        // Transient server errors anywhere, with the default body or none at all.
        {"endpoint": "*", "probability": 0.01, "always": true, "fault": {"kind": "status", "status": 503}},
        {"endpoint": "*", "probability": 0.003, "always": true,
         "fault": {"kind": "status", "status": 502, "body": null}},
        // Back-pressure: 429 with and without Retry-After.
        {"endpoint": "asample", "probability": 0.01, "always": true,
         "fault": {"kind": "rate_limit", "retry_after": "0.1"}},
        {"endpoint": "asample", "probability": 0.005, "always": true, "fault": {"kind": "rate_limit"}},
        {"endpoint": "forward_backward", "probability": 0.01, "always": true,
         "fault": {"kind": "rate_limit"}},
        // A short outage of sampling: every asample answers 503 for 2 s.
        {"endpoint": "asample", "after": 3000, "duration_ms": 2000,
         "fault": {"kind": "status", "status": 503}},
        // Connections dropped before the request ran, and after (only the reply is lost).
        {"endpoint": "asample", "probability": 0.005, "always": true, "fault": {"kind": "reset"}},
        {"endpoint": "forward_backward", "probability": 0.005, "always": true, "fault": {"kind": "reset"}},
        {"endpoint": "forward_backward", "probability": 0.01, "always": true,
         "fault": {"kind": "reset", "after_handler": true}},
        {"endpoint": "optim_step", "probability": 0.01, "always": true,
         "fault": {"kind": "reset", "after_handler": true}},
        {"endpoint": "save_weights", "probability": 0.05, "always": true,
         "fault": {"kind": "reset", "after_handler": true}},
        // Polls: try-again answers, two storms of them (every poll for 3 s), bodies cut or
        // stalled, expired promises, futures that never complete.
        {"endpoint": "retrieve_future", "probability": 0.02, "always": true, "fault": {"kind": "try_again"}},
        {"endpoint": "retrieve_future", "after": 2000, "duration_ms": 3000, "fault": {"kind": "try_again"}},
        {"endpoint": "retrieve_future", "after": 6000, "duration_ms": 3000, "fault": {"kind": "try_again"}},
        {"endpoint": "retrieve_future", "probability": 0.005, "always": true, "fault": {"kind": "reset_mid_body"}},
        {"endpoint": "retrieve_future", "probability": 0.002, "always": true,
         "fault": {"kind": "stall_body", "stall_ms": 2000}},
        {"endpoint": "retrieve_future", "probability": 0.0002, "always": true, "fault": {"kind": "stall_body"}},
        {"endpoint": "retrieve_future", "request_type": "Sample", "probability": 0.005, "always": true,
         "fault": {"kind": "gone"}},
        {"endpoint": "retrieve_future", "request_type": "ForwardBackward", "probability": 0.001,
         "always": true, "fault": {"kind": "gone"}},
        {"endpoint": "asample", "probability": 0.0005, "always": true, "fault": {"kind": "hang_future"}},
        // REST reads.
        {"endpoint": "training_runs/*", "probability": 0.02, "always": true,
         "fault": {"kind": "status", "status": 500}}
    ]);
    serde_json::from_value(rules).expect("valid fault rules")
}

/// What the calls of one runtime's run came to.
#[derive(Debug, Default)]
struct Tally {
    started: u64,
    ended: u64,
    succeeded: u64,
    failures: BTreeMap<String, u64>,
    past_deadline: Vec<String>,
    /// Calls running now: id → (what, when its method was called).
    in_flight: BTreeMap<u64, (&'static str, Instant)>,
    /// Per (training run, endpoint): calls made, calls that succeeded.
    training: BTreeMap<(String, &'static str), (u64, u64)>,
}

type Shared = Arc<Mutex<Tally>>;

/// One call, from the moment its method is called (its deadline starts then) to its outcome.
struct Call {
    tally: Shared,
    id: u64,
    what: &'static str,
    /// The training run and server endpoint, for training calls.
    training: Option<(String, &'static str)>,
    start: Instant,
}

impl Call {
    /// Starts timing a call; create it *before* calling the client method.
    fn begin(tally: &Shared, what: &'static str) -> Call {
        let start = Instant::now();
        let mut t = tally.lock().unwrap();
        t.started += 1;
        let id = t.started;
        t.in_flight.insert(id, (what, start));
        Call {
            tally: tally.clone(),
            id,
            what,
            training: None,
            start,
        }
    }

    /// A training call of run `model`, executed by the server as `endpoint`.
    fn training(tally: &Shared, what: &'static str, model: &str, endpoint: &'static str) -> Call {
        let mut call = Call::begin(tally, what);
        let key = (model.to_owned(), endpoint);
        tally
            .lock()
            .unwrap()
            .training
            .entry(key.clone())
            .or_default()
            .0 += 1;
        call.training = Some(key);
        call
    }

    /// Waits for the call's outcome and records it.
    async fn finish<T>(self, f: impl Future<Output = tinker_core::Result<T>>) -> Option<T> {
        let result = f.await;
        let took = self.start.elapsed();
        let mut t = self.tally.lock().unwrap();
        t.ended += 1;
        t.in_flight.remove(&self.id);
        if took > DEADLINE + DEADLINE_SLACK {
            t.past_deadline.push(format!("{} took {took:?}", self.what));
        }
        match result {
            Ok(v) => {
                t.succeeded += 1;
                if let Some(key) = self.training {
                    t.training.entry(key).or_default().1 += 1;
                }
                Some(v)
            }
            Err(e) => {
                *t.failures
                    .entry(format!("{}: {:?}", self.what, e.kind()))
                    .or_default() += 1;
                None
            }
        }
    }
}

/// Ends the process when a call has had no outcome long after its deadline: such a call would
/// hang the run forever, and it is exactly what the run exists to catch.
fn watchdog(tally: Shared, done: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        while !done.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_secs(1));
            let t = tally.lock().unwrap();
            let stuck: Vec<String> = t
                .in_flight
                .values()
                .filter(|(_, start)| start.elapsed() > DEADLINE + NO_OUTCOME_AFTER)
                .map(|(what, start)| format!("{what} running for {:?}", start.elapsed()))
                .collect();
            if !stuck.is_empty() {
                eprintln!(
                    "chaos: {} calls without an outcome ({} of {} ended): {stuck:?}",
                    stuck.len(),
                    t.ended,
                    t.started
                );
                std::process::exit(1);
            }
        }
    })
}

/// The batch of a lane's round. `batch` repeats itself every 64 rounds, so the first example is
/// made unique to the round (its first token and length): every forward_backward of a run then
/// has its own payload, and one seen under two seq ids was sent twice.
fn step_batch(lane: usize, round: usize) -> Vec<Datum> {
    let mut data = batch(round + lane * 1000, 4);
    data[0] = counting_datum((round % 256) as i32, 16 + round / 256);
    data
}

/// The learning rate of a round: unique per round, so every optim_step has its own payload.
fn learning_rate(round: usize) -> f64 {
    0.001 + round as f64 * 1e-5
}

async fn lane(service: ServiceClient, lane: usize, rounds: usize, tally: Shared) -> TrainingClient {
    let training = service
        .create_lora_training_client(BASE_MODEL, LoraConfig::new(8))
        .await
        .expect("a training client (create_model is retried through the faults)");
    let sampler = service
        .create_base_model_sampling_client(BASE_MODEL)
        .await
        .expect("a sampling client");
    let rest = service.create_rest_client();
    let model = training.model_id().to_owned();
    let params = SamplingParams {
        max_tokens: Some(4),
        ..SamplingParams::default()
    };
    for round in 0..rounds {
        let data = step_batch(lane, round);
        // A training step: forward_backward and optim_step submitted back to back, then both
        // results awaited.
        let step = async {
            let fb_call = Call::training(&tally, "forward_backward", &model, "forward_backward");
            let fb = training.forward_backward(data, LossFn::CrossEntropy).await;
            let opt_call = Call::training(&tally, "optim_step", &model, "optim_step");
            let opt = training
                .optim_step(AdamParams::with_learning_rate(learning_rate(round)))
                .await;
            futures_util::join!(
                fb_call.finish(async { fb?.result().await }),
                opt_call.finish(async { opt?.result().await })
            );
        };
        let samples = join_all((0..SAMPLES_PER_ROUND).map(|i| {
            Call::begin(&tally, "sample").finish(sampler.sample(
                ModelInput::from_tokens(vec![(round % 50) as i32 + 1, i as i32 + 1]),
                1,
                params.clone(),
            ))
        }));
        let read = Call::begin(&tally, "get_training_run").finish(rest.get_training_run(&model));
        futures_util::join!(step, samples, read);
        if round % SAVE_EVERY == SAVE_EVERY - 1 {
            let call = Call::training(&tally, "save_state", &model, "save_weights");
            let save = training.save_state(&format!("r{round}"));
            call.finish(async { save.await?.result().await }).await;
        }
    }
    training
}

/// The operation a training request carries: its body without the seq id (and the model id
/// the grouping already uses). Each call of the run sends a different one.
fn payload(e: &Exchange) -> Option<String> {
    let mut body = e.body_proto.clone().or_else(|| e.body.clone())?;
    let map = body.as_object_mut()?;
    map.remove("seq_id");
    map.remove("model_id");
    Some(Value::Object(map.clone()).to_string())
}

/// The driver future a runtime's `block_on` runs.
type Driver<'a> = std::pin::Pin<Box<dyn Future<Output = ()> + 'a>>;

/// The whole run on one runtime: `connect` builds a service client, `block_on` runs the
/// driver future to completion.
fn run_chaos(
    runtime: &str,
    connect: &dyn Fn(Settings, ClientOptions) -> ServiceClient,
    block_on: &dyn Fn(Driver<'_>),
) {
    count_panics();
    let ops: usize = std::env::var("CHAOS_OPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let per_round = 2 + SAMPLES_PER_ROUND + 1;
    let rounds = ops.div_ceil(per_round * LANES);
    let record_limit = 400_000;
    let config = LocalServerConfig {
        seed: 0xC4A05,
        faults: faults(),
        session_timeout_secs: None,
        // A seq id whose request never arrived (its submission failed for good) is skipped soon.
        seq_gap_timeout_ms: Some(2_000),
        long_poll_hold_ms: 200,
        record_limit,
        ..LocalServerConfig::default()
    };
    let server = LocalServer::start_background(config).expect("the local server starts");
    let settings = Settings::default()
        .with_base_url(server.url())
        .with_api_key(server.api_key())
        .expect("the server's key is valid");
    let options = ClientOptions::default().with_default_deadline(DEADLINE);
    let tally: Shared = Arc::default();
    let done = Arc::new(AtomicBool::new(false));
    let watchdog = watchdog(tally.clone(), done.clone());
    let started = Instant::now();
    let mut models = Vec::new();
    {
        let service = connect(settings, options);
        let tally = tally.clone();
        let server = &server;
        let models = &mut models;
        block_on(Box::pin(async move {
            let trainings =
                join_all((0..LANES).map(|l| lane(service.clone(), l, rounds, tally.clone()))).await;
            // The faults stop; one last step per run must go through.
            server.set_faults(Vec::new());
            for training in trainings {
                let model = training.model_id().to_owned();
                let call = Call::training(
                    &tally,
                    "forward_backward (after)",
                    &model,
                    "forward_backward",
                );
                let fb = training.forward_backward(batch(0, 2), LossFn::CrossEntropy);
                call.finish(async { fb.await?.result().await })
                    .await
                    .expect("a forward_backward after the storm succeeds");
                models.push(model);
            }
        }));
    }
    let elapsed = started.elapsed();
    done.store(true, Ordering::SeqCst);
    watchdog.join().expect("the watchdog thread");
    let recording = server.recording();
    assert!(
        recording.len() < record_limit,
        "the recording is full: raise record_limit"
    );
    let retries = recording
        .iter()
        .filter(|e| {
            e.header("x-stainless-retry-count")
                .is_some_and(|v| v != "0")
        })
        .count();
    let mut injected: BTreeMap<&str, u64> = BTreeMap::new();
    for e in &recording {
        if let Some(f) = &e.fault {
            *injected.entry(f).or_default() += 1;
        }
    }
    // Operations that reached the server under more than one seq id.
    let mut seqs: BTreeMap<(String, &str, String), BTreeSet<u64>> = BTreeMap::new();
    for e in &recording {
        let endpoint = e.endpoint();
        let Some(&endpoint) = TRAINING_ENDPOINTS.iter().find(|&&t| t == endpoint) else {
            continue;
        };
        let body = e.body_proto.as_ref().or(e.body.as_ref());
        let model = body.and_then(|b| b.get("model_id")).and_then(Value::as_str);
        let seq = body.and_then(|b| b.get("seq_id")).and_then(Value::as_u64);
        if let (Some(model), Some(seq), Some(payload)) = (model, seq, payload(e)) {
            seqs.entry((model.to_owned(), endpoint, payload))
                .or_default()
                .insert(seq);
        }
    }
    let resent: Vec<String> = seqs
        .iter()
        .filter(|(_, s)| s.len() > 1)
        .map(|((model, endpoint, _), s)| format!("{model} {endpoint} under seq ids {s:?}"))
        .collect();

    let tally = tally.lock().unwrap();
    println!("chaos on {runtime}: {elapsed:.1?}");
    println!(
        "  operations {} ({} succeeded, {} failed), HTTP requests {}, layer-H retries {retries}",
        tally.started,
        tally.succeeded,
        tally.ended - tally.succeeded,
        recording.len()
    );
    println!(
        "  faults injected {}: {}",
        injected.values().sum::<u64>(),
        injected
            .iter()
            .map(|(k, n)| format!("{k} × {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    for (kind, n) in &tally.failures {
        println!("  failed: {kind} × {n}");
    }
    let mut twice = Vec::new();
    for model in &models {
        let mut line = format!("  {model}:");
        for endpoint in TRAINING_ENDPOINTS {
            let (made, ok) = tally
                .training
                .get(&(model.clone(), endpoint))
                .copied()
                .unwrap_or_default();
            let executed = server.executed(model, endpoint);
            line += &format!(" {endpoint} {made} calls, {ok} succeeded, {executed} executed;");
            if executed > made {
                twice.push(format!(
                    "{model} {endpoint}: {executed} executed > {made} calls"
                ));
            }
            assert!(
                executed >= ok,
                "{model} {endpoint}: {ok} calls succeeded but the server executed {executed}"
            );
        }
        println!("{line}");
    }
    twice.extend(resent);
    let expected = (LANES * (rounds * per_round + rounds / SAVE_EVERY) + LANES) as u64;
    let panics = PANICS.load(Ordering::SeqCst);
    println!(
        "  checks: panics {panics}, steps applied twice {}, calls without an outcome {}, \
         calls past their deadline {}",
        twice.len(),
        tally.started - tally.ended,
        tally.past_deadline.len()
    );
    assert_eq!(panics, 0, "panics");
    assert!(twice.is_empty(), "steps applied twice: {twice:?}");
    assert_eq!(tally.started, expected, "every planned call was made");
    assert_eq!(tally.ended, tally.started, "calls without an outcome");
    assert!(
        tally.past_deadline.is_empty(),
        "past their deadline: {:?}",
        tally.past_deadline
    );
}

#[test]
#[ignore = "minutes of traffic: run with --ignored chaos (bench/run.sh --chaos)"]
fn chaos_tokio() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let handle = rt.handle().clone();
    run_chaos(
        "tokio",
        &move |settings, options| {
            let _guard = handle.enter();
            tinker_tokio::connect_with(settings, options).expect("connect")
        },
        &|future| rt.block_on(future),
    );
}

#[test]
#[ignore = "minutes of traffic: run with --ignored chaos (bench/run.sh --chaos)"]
fn chaos_async_std() {
    run_chaos(
        "async-std",
        &|settings, options| tinker_async_std::connect_with(settings, options).expect("connect"),
        &|future| async_std::task::block_on(future),
    );
}

#[test]
#[ignore = "minutes of traffic: run with --ignored chaos (bench/run.sh --chaos)"]
fn chaos_blocking() {
    run_chaos(
        "blocking",
        &|settings, options| {
            tinker_blocking::connect_with(settings, options)
                .expect("connect")
                .as_async()
                .clone()
        },
        &|future| tinker_blocking::executor::block_on(future),
    );
}
