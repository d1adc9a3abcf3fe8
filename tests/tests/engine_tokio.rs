//! The engine's background duties and wait rules, end to end on tokio against the local server:
//! the `retrieve_futures` session poller (protocol.md 7.7), `cancel_future` for abandoned
//! samples (7.8), telemetry beyond `SESSION_START` (13), and what a timeout error says for every
//! kind of wait.

use std::time::Duration;

use futures_util::future::join_all;
use serde_json::Value;
use tinker_core::client::{ClientOptions, ServiceClient};
use tinker_core::settings::Settings;
use tinker_core::types::{
    AdamParams, FinishReason, LoraConfig, LossFn, ModelInput, SamplingParams,
};
use tinker_core::ErrorKind;
use tinker_testkit::scenarios::{batch, Env, Runtime, Sleep, BASE_MODEL};
use tinker_testkit::server::{Exchange, Fault, FaultRule, LocalServerConfig};

struct Tokio;

impl Runtime for Tokio {
    const NAME: &'static str = "tokio";
    const RL_SAMPLES: usize = 64;
    fn connect(settings: Settings, options: ClientOptions) -> tinker_core::Result<ServiceClient> {
        tinker_tokio::connect_with(settings, options)
    }
    fn sleep(duration: Duration) -> Sleep {
        Box::pin(tokio::time::sleep(duration))
    }
}

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
        .block_on(future)
}

fn params() -> SamplingParams {
    SamplingParams {
        max_tokens: Some(4),
        ..SamplingParams::default()
    }
}

fn exchanges<'a>(rec: &'a [Exchange], endpoint: &'a str) -> impl Iterator<Item = &'a Exchange> {
    rec.iter().filter(move |e| e.endpoint() == endpoint)
}

fn request_ids_of(rec: &[Exchange], endpoint: &str) -> Vec<String> {
    exchanges(rec, endpoint)
        .filter_map(|e| e.resp_body.as_ref()?.get("request_id")?.as_str())
        .map(str::to_owned)
        .collect()
}

/// Waits (bounded) until the server has recorded a request matching `pred`; the background
/// task sends it on its own schedule.
async fn eventually_recorded(env: &Env<Tokio>, what: &str, pred: impl Fn(&Exchange) -> bool) {
    for _ in 0..200 {
        if env.server().recording().iter().any(&pred) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the server never saw {what}");
}

fn retrieve_futures_config() -> LocalServerConfig {
    let mut cfg = LocalServerConfig {
        retrieve_futures_hold_ms: 200,
        long_poll_hold_ms: 100,
        ..LocalServerConfig::default()
    };
    cfg.client_config.sample_use_retrieve_futures = true;
    cfg
}

/// Eight concurrent samples on a server that enables the session poller: all complete; their
/// "is it done?" waiting went through `retrieve_futures`, each payload was fetched once with
/// `allow_metadata_only: false`, and every fetched request id was acknowledged to the server.
#[test]
fn samples_wait_on_the_session_poller_and_acknowledge_their_payloads() {
    block_on(async {
        let env = Env::<Tokio>::new(retrieve_futures_config());
        let service = env.connect();
        let sampler = service
            .create_base_model_sampling_client(BASE_MODEL)
            .await
            .unwrap();
        let results = join_all(
            (0..8).map(|i| sampler.sample(ModelInput::from_tokens(vec![i + 1, 2]), 1, params())),
        )
        .await;
        for r in &results {
            assert!(r.is_ok(), "{r:?}");
        }
        service.close(FinishReason::Success).await.unwrap();

        let rec = env.server().recording();
        let samples = request_ids_of(&rec, "asample");
        assert_eq!(samples.len(), 8);
        let polls: Vec<&Exchange> = exchanges(&rec, "retrieve_futures").collect();
        assert!(!polls.is_empty());
        for poll in &polls {
            let target = poll.body_field("target").unwrap();
            assert_eq!(target["type"], "sampling_session");
            assert_eq!(target["cloned_sampler_id"], 0);
        }
        let fetches: Vec<&Exchange> = exchanges(&rec, "retrieve_future").collect();
        for id in &samples {
            let of_id: Vec<&&Exchange> = fetches
                .iter()
                .filter(|e| e.body_field("request_id").and_then(Value::as_str) == Some(id))
                .collect();
            assert_eq!(of_id.len(), 1, "{id} fetched {} times", of_id.len());
            assert_eq!(
                of_id[0].body_field("allow_metadata_only"),
                Some(&Value::Bool(false))
            );
        }
        let acked: Vec<String> = polls
            .iter()
            .filter_map(|p| p.body_field("retrieved_request_ids")?.as_array().cloned())
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect();
        for id in &samples {
            assert!(acked.contains(id), "{id} never acknowledged: {acked:?}");
        }
    });
}

/// A sample whose deadline passes after the server accepted it is abandoned: the timeout names
/// its request id, and the housekeeper tells the server with `cancel_future` (dynamic config
/// `sample_cancel_enabled`), without the caller waiting for that.
#[test]
fn an_abandoned_sample_is_cancelled_on_the_server() {
    block_on(async {
        let mut cfg = LocalServerConfig {
            long_poll_hold_ms: 100,
            ..LocalServerConfig::default()
        };
        cfg.dynamic_config.sample_cancel_enabled = true;
        let env = Env::<Tokio>::new(cfg);
        let service = env.connect();
        let sampler = service
            .create_base_model_sampling_client(BASE_MODEL)
            .await
            .unwrap();
        env.server()
            .add_faults(vec![FaultRule::once("asample", Fault::HangFuture)]);
        let err = sampler
            .with_deadline(Duration::from_millis(600))
            .sample(ModelInput::from_tokens(vec![1, 2]), 1, params())
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
        let rec = env.server().recording();
        let id = request_ids_of(&rec, "asample")
            .pop()
            .expect("the sample was accepted");
        assert!(err.to_string().contains(&id), "{err}");
        eventually_recorded(&env, "cancel_future for the abandoned sample", |e| {
            e.endpoint() == "cancel_future"
                && e.body_field("request_id").and_then(Value::as_str) == Some(id.as_str())
                && e.resp_status == 200
        })
        .await;
        // The client is still usable afterwards.
        sampler
            .sample(ModelInput::from_tokens(vec![3, 4]), 1, params())
            .await
            .unwrap();
        service.close(FinishReason::Success).await.unwrap();
    });
}

/// Telemetry carries more than `SESSION_START`: a user error escaping a call becomes a
/// `user_error` event, a retried failure a retry event, and closing the session sends
/// `SESSION_END` with its duration in the final flush.
#[test]
fn errors_retries_and_the_session_end_reach_telemetry() {
    block_on(async {
        let env = Env::<Tokio>::new(LocalServerConfig::default());
        let service = env.connect();
        let sampler = service
            .create_base_model_sampling_client(BASE_MODEL)
            .await
            .unwrap();
        env.server().add_faults(vec![
            FaultRule::once(
                "asample",
                Fault::Status {
                    status: 422,
                    body: None,
                    headers: Default::default(),
                },
            ),
            FaultRule::once(
                "retrieve_future",
                Fault::Status {
                    status: 503,
                    body: None,
                    headers: Default::default(),
                },
            )
            .after(0),
        ]);
        let err = sampler
            .sample(ModelInput::from_tokens(vec![1, 2]), 1, params())
            .await
            .unwrap_err();
        assert_eq!(err.status(), Some(422), "{err}");
        sampler
            .sample(ModelInput::from_tokens(vec![1, 2]), 1, params())
            .await
            .unwrap();
        service.close(FinishReason::Success).await.unwrap();

        let events: Vec<Value> = exchanges(&env.server().recording(), "telemetry")
            .filter_map(|e| e.body_field("events")?.as_array().cloned())
            .flatten()
            .collect();
        let named = |event: &str, name: Option<&str>| {
            events.iter().find(|e| {
                e["event"] == event && name.is_none_or(|n| e["event_name"].as_str() == Some(n))
            })
        };
        assert!(named("SESSION_START", None).is_some(), "{events:#?}");
        let user = named("GENERIC_EVENT", Some("user_error")).expect("a user_error event");
        assert_eq!(user["severity"], "WARNING");
        assert_eq!(user["event_data"]["status_code"], 422);
        let end = named("SESSION_END", None).expect("SESSION_END on close");
        assert!(end["duration"]
            .as_str()
            .is_some_and(|d| d.starts_with("0:00:")));
        // SESSION_END is the last event of the session.
        let last_index = events
            .iter()
            .filter_map(|e| e["event_session_index"].as_u64())
            .max();
        assert_eq!(end["event_session_index"].as_u64(), last_index);
    });
}

fn assert_timeout_names(
    err: &tinker_core::Error,
    waiting_for: &str,
    id: Option<&str>,
    queue: Option<&str>,
) {
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    let text = err.to_string();
    assert!(text.contains(waiting_for), "{text}");
    if let Some(id) = id {
        assert!(text.contains(id), "{text} does not name {id}");
    }
    if let Some(q) = queue {
        assert!(text.contains(q), "{text} does not name the queue state {q}");
    }
}

/// Every kind of wait that runs out says what it waited for, the request id and the last queue
/// state: a training result (engine deadline and `result_with_deadline`), a submission the
/// server is slow to accept, a sample's result, and a sample waiting on the session poller.
#[test]
fn every_wait_that_runs_out_names_its_request_and_queue_state() {
    block_on(async {
        let cfg = LocalServerConfig {
            long_poll_hold_ms: 50,
            queue_state: "paused_capacity".into(),
            ..LocalServerConfig::default()
        };
        let env = Env::<Tokio>::new(cfg);
        let service = env.connect();
        let training = service
            .create_lora_training_client(BASE_MODEL, LoraConfig::new(8).with_seed(1))
            .await
            .unwrap();
        let sampler = service
            .create_base_model_sampling_client(BASE_MODEL)
            .await
            .unwrap();

        // A training result that never comes, bounded by the client's deadline.
        env.server().add_faults(vec![FaultRule::times(
            "forward_backward",
            2,
            Fault::HangFuture,
        )]);
        let fb = training
            .with_deadline(Duration::from_millis(800))
            .forward_backward(batch(0, 2), LossFn::CrossEntropy)
            .await
            .unwrap();
        let id = fb.request_id().unwrap();
        let err = fb.result().await.unwrap_err();
        assert_timeout_names(
            &err,
            "the result of forward_backward",
            Some(&id),
            Some("paused_capacity"),
        );

        // The same, bounded when the result is awaited.
        let fb = training
            .forward_backward(batch(1, 2), LossFn::CrossEntropy)
            .await
            .unwrap();
        let id = fb.request_id().unwrap();
        let err = fb
            .result_with_deadline(Duration::from_millis(800))
            .await
            .unwrap_err();
        assert_timeout_names(&err, "forward_backward", Some(&id), Some("paused_capacity"));

        // A submission the server holds longer than the deadline.
        env.server().add_faults(vec![FaultRule::once(
            "optim_step",
            Fault::Delay { ms: 3_000 },
        )]);
        let err = training
            .with_deadline(Duration::from_millis(500))
            .optim_step(AdamParams::with_learning_rate(1e-3))
            .await
            .unwrap_err();
        assert_timeout_names(&err, "the submission of optim_step", None, None);

        // A sample's result.
        env.server()
            .add_faults(vec![FaultRule::once("asample", Fault::HangFuture)]);
        let err = sampler
            .with_deadline(Duration::from_millis(800))
            .sample(ModelInput::from_tokens(vec![1, 2]), 1, params())
            .await
            .unwrap_err();
        let id = request_ids_of(&env.server().recording(), "asample")
            .pop()
            .unwrap();
        assert_timeout_names(
            &err,
            "the result of asample",
            Some(&id),
            Some("paused_capacity"),
        );
        service.close(FinishReason::Success).await.unwrap();

        // A sample waiting on the retrieve_futures poller.
        let env = Env::<Tokio>::new(retrieve_futures_config());
        let service = env.connect();
        let sampler = service
            .create_base_model_sampling_client(BASE_MODEL)
            .await
            .unwrap();
        env.server()
            .add_faults(vec![FaultRule::once("asample", Fault::HangFuture)]);
        let err = sampler
            .with_deadline(Duration::from_millis(800))
            .sample(ModelInput::from_tokens(vec![1, 2]), 1, params())
            .await
            .unwrap_err();
        let id = request_ids_of(&env.server().recording(), "asample")
            .pop()
            .unwrap();
        assert_timeout_names(
            &err,
            "the completion of asample (retrieve_futures poller)",
            Some(&id),
            None,
        );
        service.close(FinishReason::Success).await.unwrap();
    });
}

fn jwt_config(lifetime_secs: u64) -> LocalServerConfig {
    let mut cfg = LocalServerConfig {
        jwt_lifetime_secs: lifetime_secs,
        ..LocalServerConfig::default()
    };
    cfg.client_config.pjwt_auth_enabled = true;
    cfg
}

fn sent_with_jwt(e: &Exchange) -> bool {
    e.header("x-api-key").is_some_and(|k| k.starts_with("eyJ"))
}

/// JWT mode: the housekeeper refreshes the token at about half its lifetime, so a session that
/// outlives several lifetimes keeps working; every exchange is sent with the API key, and every
/// other request with a JWT.
#[test]
fn the_jwt_is_refreshed_in_the_background_before_it_expires() {
    block_on(async {
        let env = Env::<Tokio>::new(jwt_config(4));
        let service = env.connect();
        let sampler = service
            .create_base_model_sampling_client(BASE_MODEL)
            .await
            .unwrap();
        // Three lifetimes later, with no request in between, the token in use is still valid.
        tokio::time::sleep(Duration::from_secs(9)).await;
        sampler
            .sample(ModelInput::from_tokens(vec![1, 2]), 1, params())
            .await
            .unwrap();
        service.close(FinishReason::Success).await.unwrap();

        let rec = env.server().recording();
        let exchanges_sent: Vec<&Exchange> = exchanges(&rec, "auth/token").collect();
        assert!(
            exchanges_sent.len() >= 3,
            "{} exchanges in 9 s of 4 s tokens",
            exchanges_sent.len()
        );
        assert!(exchanges_sent
            .iter()
            .all(|e| !sent_with_jwt(e) && e.resp_status == 200));
        let others: Vec<&Exchange> = rec
            .iter()
            .filter(|e| !matches!(e.endpoint(), "auth/token" | "client/config"))
            .collect();
        assert!(others.iter().all(|e| sent_with_jwt(e)));
        assert!(
            others.iter().all(|e| e.resp_status != 401),
            "a request was rejected"
        );
    });
}

/// A token the server stops accepting (401 `invalid_token`) is exchanged once and the rejected
/// request is replayed once with the new token; the caller never sees the rejection.
#[test]
fn a_rejected_jwt_is_exchanged_and_the_request_replayed_once() {
    block_on(async {
        let env = Env::<Tokio>::new(jwt_config(3600));
        let service = env.connect();
        let sampler = service
            .create_base_model_sampling_client(BASE_MODEL)
            .await
            .unwrap();
        env.server().expire_jwts();
        env.server().clear_recording();
        sampler
            .sample(ModelInput::from_tokens(vec![1, 2]), 1, params())
            .await
            .unwrap();
        let rec = env.server().recording();
        let order: Vec<(&str, u16)> = rec
            .iter()
            .filter(|e| !matches!(e.endpoint(), "session_heartbeat" | "telemetry"))
            .map(|e| (e.endpoint(), e.resp_status))
            .collect();
        assert_eq!(
            &order[..3],
            &[("asample", 401), ("auth/token", 200), ("asample", 200)],
            "{order:?}"
        );
        assert_eq!(exchanges(&rec, "auth/token").count(), 1);
        service.close(FinishReason::Success).await.unwrap();
    });
}
