//! Chaos: a realistic mix of operations (training steps, checkpoint saves, samples, REST reads)
//! on every runtime against the local server under a seeded fault schedule: 503s, 429s with
//! Retry-After, 408 long-poll answers, 410 expired futures, connection resets before and after
//! the handler ran, and bodies cut mid-way.
//!
//! Run: `cargo test -p tinker-testkit --release --test chaos -- --ignored chaos --nocapture`
//! (`CHAOS_OPS=N` changes the 10,000 operations per runtime; also `bench/run.sh --chaos`).
//!
//! Each run prints the operations, faults injected, retries and failures by kind, and checks:
//! no panic anywhere in the process (client or server); no training step applied twice (the
//! server's count of executed jobs never exceeds the seq ids the client used); every call ends
//! with an outcome; no call outlives its deadline.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use tinker_core::client::{ClientOptions, ServiceClient, TrainingClient};
use tinker_core::settings::Settings;
use tinker_core::types::{AdamParams, LoraConfig, LossFn, ModelInput, SamplingParams};
use tinker_testkit::scenarios::{batch, BASE_MODEL};
use tinker_testkit::server::FaultRule;
use tinker_testkit::{LocalServer, LocalServerConfig};

/// Every call's deadline.
const DEADLINE: Duration = Duration::from_secs(60);
/// How late a call may end past its deadline (timer and scheduling slack).
const DEADLINE_SLACK: Duration = Duration::from_secs(2);
/// Training runs driven concurrently, each by its own sequence of rounds.
const LANES: usize = 4;
/// Samples per round of a lane.
const SAMPLES_PER_ROUND: usize = 16;
/// A checkpoint save every this many rounds.
const SAVE_EVERY: usize = 25;

static PANICS: AtomicU64 = AtomicU64::new(0);

fn count_panics() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        PANICS.fetch_add(1, Ordering::SeqCst);
        previous(info);
    }));
}

/// The seeded fault schedule: a few percent of requests meet one of the server's faults.
fn faults() -> Vec<FaultRule> {
    let rules = serde_json::json!([
        {"endpoint": "*", "probability": 0.01, "always": true, "fault": {"kind": "status", "status": 503}},
        {"endpoint": "asample", "probability": 0.01, "always": true,
         "fault": {"kind": "rate_limit", "retry_after": "0.1"}},
        {"endpoint": "asample", "probability": 0.005, "always": true, "fault": {"kind": "reset"}},
        {"endpoint": "retrieve_future", "probability": 0.02, "always": true, "fault": {"kind": "try_again"}},
        {"endpoint": "retrieve_future", "probability": 0.005, "always": true, "fault": {"kind": "reset_mid_body"}},
        {"endpoint": "retrieve_future", "request_type": "Sample", "probability": 0.005, "always": true,
         "fault": {"kind": "gone"}},
        {"endpoint": "forward_backward", "probability": 0.01, "always": true,
         "fault": {"kind": "reset", "after_handler": true}},
        {"endpoint": "optim_step", "probability": 0.01, "always": true,
         "fault": {"kind": "reset", "after_handler": true}},
        {"endpoint": "save_weights", "probability": 0.05, "always": true,
         "fault": {"kind": "reset", "after_handler": true}},
        {"endpoint": "training_runs/*", "probability": 0.02, "always": true,
         "fault": {"kind": "status", "status": 500}}
    ]);
    serde_json::from_value(rules).expect("valid fault rules")
}

/// What the calls of one runtime's run came to.
#[derive(Debug, Default)]
struct Tally {
    operations: u64,
    succeeded: u64,
    failures: BTreeMap<String, u64>,
    past_deadline: Vec<String>,
    /// Per training run: seq ids the client used (training calls issued).
    training_calls: BTreeMap<String, u64>,
}

type Shared = Arc<Mutex<Tally>>;

/// Runs one call under the deadline, recording its outcome and how long it took.
async fn call<T, F: Future<Output = tinker_core::Result<T>>>(
    tally: &Shared,
    what: &str,
    f: F,
) -> Option<T> {
    let start = Instant::now();
    let result = f.await;
    let took = start.elapsed();
    let mut t = tally.lock().unwrap();
    t.operations += 1;
    if took > DEADLINE + DEADLINE_SLACK {
        t.past_deadline.push(format!("{what} took {took:?}"));
    }
    match result {
        Ok(v) => {
            t.succeeded += 1;
            Some(v)
        }
        Err(e) => {
            *t.failures
                .entry(format!("{what}: {:?}", e.kind()))
                .or_default() += 1;
            None
        }
    }
}

async fn lane(service: ServiceClient, lane: usize, rounds: usize, tally: Shared) -> TrainingClient {
    let training = service
        .create_lora_training_client(BASE_MODEL, LoraConfig::new(8))
        .await
        .expect("a training client (create_model is retried through the faults)")
        .with_deadline(DEADLINE);
    let sampler = service
        .create_base_model_sampling_client(BASE_MODEL)
        .await
        .expect("a sampling client")
        .with_deadline(DEADLINE);
    let rest = service.create_rest_client();
    let model = training.model_id().to_owned();
    let params = SamplingParams {
        max_tokens: Some(4),
        ..SamplingParams::default()
    };
    for round in 0..rounds {
        let data = batch(round + lane * 1000, 4);
        // A training step: forward_backward and optim_step submitted back to back.
        let step = async {
            let fb = training.forward_backward(data, LossFn::CrossEntropy).await;
            let opt = training
                .optim_step(AdamParams::with_learning_rate(0.01))
                .await;
            let fb = async { fb?.result().await };
            let opt = async { opt?.result().await };
            futures_util::join!(
                call(&tally, "forward_backward", fb),
                call(&tally, "optim_step", opt)
            );
        };
        let samples = join_all((0..SAMPLES_PER_ROUND).map(|i| {
            call(
                &tally,
                "sample",
                sampler.sample(
                    ModelInput::from_tokens(vec![(round % 50) as i32 + 1, i as i32 + 1]),
                    1,
                    params.clone(),
                ),
            )
        }));
        let read = call(&tally, "get_training_run", rest.get_training_run(&model));
        futures_util::join!(step, samples, read);
        let mut calls = 2;
        if round % SAVE_EVERY == SAVE_EVERY - 1 {
            let save = async {
                training
                    .save_state(&format!("r{round}"))
                    .await?
                    .result()
                    .await
            };
            call(&tally, "save_state", save).await;
            calls += 1;
        }
        *tally
            .lock()
            .unwrap()
            .training_calls
            .entry(model.clone())
            .or_default() += calls;
    }
    training
}

/// The driver future a runtime's `block_on` runs.
type Driver<'a> = std::pin::Pin<Box<dyn Future<Output = ()> + 'a>>;

/// The whole run on one runtime: `connect` builds a service client, `block_on` runs the
/// driver future to completion.
fn run_chaos(
    runtime: &str,
    connect: &dyn Fn(Settings) -> ServiceClient,
    block_on: &dyn Fn(Driver<'_>),
) {
    count_panics();
    let ops: usize = std::env::var("CHAOS_OPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let per_round = 2 + SAMPLES_PER_ROUND + 1;
    let rounds = ops.div_ceil(per_round * LANES);
    let config = LocalServerConfig {
        seed: 0xC4A05,
        faults: faults(),
        session_timeout_secs: None,
        // A seq id whose request never arrived (its submission failed for good) is skipped soon.
        seq_gap_timeout_ms: Some(2_000),
        long_poll_hold_ms: 200,
        record_limit: 200_000,
        ..LocalServerConfig::default()
    };
    let server = LocalServer::start_background(config).expect("the local server starts");
    let settings = Settings::default()
        .with_base_url(server.url())
        .with_api_key(server.api_key())
        .expect("the server's key is valid");
    let tally: Shared = Arc::default();
    let started = Instant::now();
    let executed: Arc<Mutex<BTreeMap<String, f64>>> = Arc::default();
    {
        let service = connect(settings);
        let tally = tally.clone();
        let executed = executed.clone();
        let server = &server;
        block_on(Box::pin(async move {
            let trainings =
                join_all((0..LANES).map(|l| lane(service.clone(), l, rounds, tally.clone()))).await;
            // The faults stop; one last forward_backward per run reports how many jobs the server
            // executed for it (metric `clock_cycle:unique`, this one included).
            server.set_faults(Vec::new());
            for training in trainings {
                let out = async {
                    training
                        .forward_backward(batch(0, 2), LossFn::CrossEntropy)
                        .await?
                        .result()
                        .await
                }
                .await
                .expect("a forward_backward after the storm succeeds");
                executed.lock().unwrap().insert(
                    training.model_id().to_owned(),
                    out.metrics["clock_cycle:unique"] - 1.0,
                );
            }
        }));
    }
    let elapsed = started.elapsed();
    let recording = server.recording();
    let retries = recording
        .iter()
        .filter(|e| {
            e.header("x-stainless-retry-count")
                .is_some_and(|v| v != "0")
        })
        .count();
    let injected: u64 = server.faults().iter().map(|f| f.fired).sum();
    let tally = tally.lock().unwrap();
    let executed = executed.lock().unwrap();
    println!("chaos on {runtime}: {elapsed:.1?}");
    println!(
        "  operations {} ({} succeeded), HTTP requests {}, faults injected {injected}, \
         layer-H retries {retries}",
        tally.operations,
        tally.succeeded,
        recording.len()
    );
    for (kind, n) in &tally.failures {
        println!("  failed: {kind} × {n}");
    }
    let mut twice = Vec::new();
    for (model, jobs) in executed.iter() {
        let issued = tally.training_calls.get(model).copied().unwrap_or(0);
        println!("  {model}: {issued} training calls issued, {jobs} jobs executed by the server");
        if *jobs > issued as f64 {
            twice.push(format!("{model}: {jobs} executed > {issued} issued"));
        }
    }
    let expected = (rounds * per_round * LANES) as u64 + (LANES * (rounds / SAVE_EVERY)) as u64;
    assert_eq!(PANICS.load(Ordering::SeqCst), 0, "panics");
    assert!(twice.is_empty(), "steps applied twice: {twice:?}");
    assert_eq!(tally.operations, expected, "calls without an outcome");
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
        &move |settings| {
            let _guard = handle.enter();
            tinker_tokio::connect_with(settings, ClientOptions::default()).expect("connect")
        },
        &|future| rt.block_on(future),
    );
}

#[test]
#[ignore = "minutes of traffic: run with --ignored chaos (bench/run.sh --chaos)"]
fn chaos_async_std() {
    run_chaos(
        "async-std",
        &|settings| {
            tinker_async_std::connect_with(settings, ClientOptions::default()).expect("connect")
        },
        &|future| async_std::task::block_on(future),
    );
}

#[test]
#[ignore = "minutes of traffic: run with --ignored chaos (bench/run.sh --chaos)"]
fn chaos_blocking() {
    run_chaos(
        "blocking",
        &|settings| {
            tinker_blocking::connect_with(settings, ClientOptions::default())
                .expect("connect")
                .as_async()
                .clone()
        },
        &|future| tinker_blocking::executor::block_on(future),
    );
}
