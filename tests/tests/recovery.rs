//! Recovery automation (Tinkex F126-F128) against the local server: a run the server reports
//! corrupted mid-training is recreated from its latest checkpoint and training continues; a run
//! whose checkpoint cannot be loaded is given up after the policy's attempts, and the user is
//! told why.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tinker_core::client::{ClientOptions, RecoveryHooks, ServiceClient, TrainingClient};
use tinker_core::recovery::{RecoveryEvent, RecoveryPolicy};
use tinker_core::settings::Settings;
use tinker_core::types::{AdamParams, FinishReason, LoraConfig, LossFn};
use tinker_testkit::scenarios::{batch, mean_nll, BASE_MODEL};
use tinker_testkit::{LocalServer, LocalServerConfig};
use tokio::sync::mpsc;

/// A bound on waiting for the monitor, so a broken monitor fails the test instead of hanging
/// it. Not a speed requirement: recovery takes milliseconds with the test policy.
const PATIENCE: Duration = Duration::from_secs(120);

async fn connect(server: &LocalServer) -> ServiceClient {
    let settings = Settings::default()
        .with_base_url(server.url())
        .with_api_key(server.api_key())
        .unwrap();
    tinker_tokio::connect_with(settings, ClientOptions::default().with_seed(11)).unwrap()
}

/// Short intervals so the story plays out at once.
fn quick_policy() -> RecoveryPolicy {
    RecoveryPolicy::enabled()
        .with_poll_interval(Duration::from_millis(20))
        .with_backoff(Duration::from_millis(10), Duration::from_millis(40))
}

async fn sft_step(training: &TrainingClient, step: usize) -> f64 {
    let data = batch(step, 8);
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

fn stages(events: &Mutex<Vec<RecoveryEvent>>) -> Vec<&'static str> {
    events
        .lock()
        .unwrap()
        .iter()
        .map(RecoveryEvent::stage)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_corrupted_mid_training_resumes_from_its_latest_checkpoint_with_optimizer_state() {
    let server = LocalServer::start(LocalServerConfig::default())
        .await
        .unwrap();
    let service = connect(&server).await;
    let training = service
        .create_lora_training_client(BASE_MODEL, LoraConfig::new(8).with_seed(3))
        .await
        .unwrap();
    for step in 0..4 {
        sft_step(&training, step).await;
    }
    let checkpoint = training
        .save_state("step_4")
        .await
        .unwrap()
        .await
        .unwrap()
        .path;
    // What steps 4 and 5 give when nothing goes wrong: the recovered run must reproduce them.
    let reference = [sft_step(&training, 4).await, sft_step(&training, 5).await];

    let events = Arc::new(Mutex::new(Vec::new()));
    let (tx, mut recovered) = mpsc::unbounded_channel();
    let hooks = RecoveryHooks::default()
        .on_event({
            let events = events.clone();
            move |e| events.lock().unwrap().push(e.clone())
        })
        .on_recovered(move |r| {
            let _ = tx.send(r);
        });
    let monitor = service.start_recovery(quick_policy(), hooks).unwrap();
    monitor.watch(training.model_id()).unwrap();
    server.corrupt_run(training.model_id());

    let r = tokio::time::timeout(PATIENCE, recovered.recv())
        .await
        .expect("the corrupted run is recovered")
        .unwrap();
    assert_eq!(r.run_id, training.model_id());
    assert_eq!(r.checkpoint, checkpoint);
    assert_ne!(r.client.model_id(), training.model_id(), "a new run");
    assert_eq!(
        stages(&events),
        [
            "detected",
            "started",
            "checkpoint_selected",
            "client_created",
            "completed"
        ]
    );
    assert_eq!(
        events.lock().unwrap()[0],
        RecoveryEvent::Detected {
            run_id: training.model_id().to_owned(),
            checkpoint: Some(checkpoint.clone()),
        }
    );
    let loads: Vec<_> = server
        .recording()
        .into_iter()
        .filter(|e| e.endpoint() == "load_weights")
        .collect();
    assert_eq!(loads.len(), 1);
    assert_eq!(
        loads[0].body_field("path").unwrap(),
        &serde_json::json!(checkpoint)
    );
    assert_eq!(
        loads[0].body_field("optimizer").unwrap(),
        &serde_json::json!(true)
    );

    // Training continues on the new run exactly where the checkpoint left off: same weights
    // and the same Adam moments give the same losses as the uninterrupted run.
    let resumed = [sft_step(&r.client, 4).await, sft_step(&r.client, 5).await];
    for (got, want) in resumed.iter().zip(reference) {
        assert!((got - want).abs() < 1e-6, "{resumed:?} vs {reference:?}");
    }
    monitor.stop();
    service.close(FinishReason::Success).await.unwrap();
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_gives_up_after_max_attempts_when_the_checkpoint_cannot_load() {
    let server = LocalServer::start(LocalServerConfig::default())
        .await
        .unwrap();
    let service = connect(&server).await;
    let training = service
        .create_lora_training_client(BASE_MODEL, LoraConfig::new(8))
        .await
        .unwrap();
    sft_step(&training, 0).await;
    let checkpoint = training
        .save_state("step_1")
        .await
        .unwrap()
        .await
        .unwrap()
        .path;
    server.make_checkpoint_unloadable(&checkpoint);

    let events = Arc::new(Mutex::new(Vec::new()));
    let (tx, mut failures) = mpsc::unbounded_channel();
    let hooks = RecoveryHooks::default()
        .on_event({
            let events = events.clone();
            move |e| events.lock().unwrap().push(e.clone())
        })
        .on_recovered(|r| panic!("{} must not be recovered", r.run_id))
        .on_failure(move |run, why| {
            let _ = tx.send((run.to_owned(), why.to_owned()));
        });
    let monitor = service
        .start_recovery(quick_policy().with_max_attempts(3), hooks)
        .unwrap();
    server.corrupt_run(training.model_id());
    monitor.watch(training.model_id()).unwrap();

    let (run, why) = tokio::time::timeout(PATIENCE, failures.recv())
        .await
        .expect("recovery ends")
        .unwrap();
    assert_eq!(run, training.model_id());
    assert!(why.contains("could not be loaded"), "{why}");

    let attempt = ["started", "checkpoint_selected", "failed"];
    let mut expected = vec!["detected"];
    for _ in 0..3 {
        expected.extend(attempt);
    }
    expected.push("exhausted");
    assert_eq!(stages(&events), expected);
    let retries: Vec<_> = events
        .lock()
        .unwrap()
        .iter()
        .filter_map(|e| match e {
            RecoveryEvent::Failed { retry_in, .. } => Some(*retry_in),
            _ => None,
        })
        .collect();
    assert_eq!(
        retries,
        [
            Some(Duration::from_millis(10)),
            Some(Duration::from_millis(20)),
            None
        ],
        "back-off doubles between attempts; none after the last"
    );
    assert!(matches!(
        events.lock().unwrap().last(),
        Some(RecoveryEvent::Exhausted { attempts: 3, error, .. }) if error.contains("could not be loaded")
    ));
    let loads = server
        .recording()
        .iter()
        .filter(|e| e.endpoint() == "load_weights")
        .count();
    assert_eq!(loads, 3, "one load per attempt, none after giving up");
    assert!(monitor.watch("").is_err(), "bad input is refused");
    service.close(FinishReason::Success).await.unwrap();
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_is_off_unless_the_policy_enables_it() {
    let server = LocalServer::start(LocalServerConfig::default())
        .await
        .unwrap();
    let service = connect(&server).await;
    let err = service
        .start_recovery(RecoveryPolicy::default(), RecoveryHooks::default())
        .unwrap_err();
    assert!(err.to_string().contains("policy.enabled"), "{err}");
    server.shutdown().await;
}
