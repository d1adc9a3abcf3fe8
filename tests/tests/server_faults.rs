//! Fault injection fires as scheduled, and the recording shows every exchange and fault.

mod common;

use common::{quick, start};
use reqwest::StatusCode;
use serde_json::json;
use tinker_testkit::server::{Fault, FaultRule};

fn session_body() -> serde_json::Value {
    json!({"tags": [], "user_metadata": {}, "sdk_version": "0.38.0", "type": "create_session"})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_503_burst_then_success_is_recorded_request_by_request() {
    let (server, api) = start(quick()).await;
    server.add_faults(vec![FaultRule::times(
        "create_session",
        2,
        Fault::Status {
            status: 503,
            body: None,
            headers: Default::default(),
        },
    )]);
    let statuses = [
        api.post("create_session", session_body()).await.status,
        api.post("create_session", session_body()).await.status,
        api.post("create_session", session_body()).await.status,
    ];
    assert_eq!(
        statuses,
        [
            StatusCode::SERVICE_UNAVAILABLE,
            StatusCode::SERVICE_UNAVAILABLE,
            StatusCode::OK
        ]
    );
    let recorded: Vec<_> = server
        .recording()
        .into_iter()
        .filter(|e| e.endpoint() == "create_session")
        .map(|e| (e.resp_status, e.fault))
        .collect();
    assert_eq!(
        recorded,
        vec![
            (503, Some("status 503".into())),
            (503, Some("status 503".into())),
            (200, None)
        ]
    );
    assert_eq!(server.faults()[0].fired, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_come_with_and_without_retry_after() {
    let (server, api) = start(quick()).await;
    server.add_faults(vec![
        FaultRule::once(
            "create_session",
            Fault::RateLimit {
                retry_after: Some("1.5".into()),
            },
        ),
        FaultRule::once("create_session", Fault::RateLimit { retry_after: None }).after(1),
    ]);
    let first = api.post("create_session", session_body()).await;
    assert_eq!(first.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(first.headers["retry-after"], "1.5");
    let second = api.post("create_session", session_body()).await;
    assert_eq!(second.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(second.headers.get("retry-after").is_none());
    assert_eq!(
        api.post("create_session", session_body()).await.status,
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polls_get_408s_with_changing_queue_states_then_410() {
    let (server, api) = start(quick()).await;
    let session = api.session().await;
    let model = api.model(&session, 0, 8).await;
    let opt = api.optim(&model, 1, 0.01).await;
    server.add_faults(vec![
        FaultRule::times(
            "retrieve_future",
            3,
            Fault::TryAgain {
                queue_states: vec!["paused_capacity".into(), "paused_rate_limit".into()],
            },
        ),
        FaultRule::once("retrieve_future", Fault::Gone).after(3),
    ]);
    let mut states = Vec::new();
    for _ in 0..3 {
        let r = api.poll(&opt, true, "application/json").await;
        assert_eq!(r.status, StatusCode::REQUEST_TIMEOUT);
        assert_eq!(r.json()["type"], json!("try_again"));
        states.push(r.json()["queue_state"].as_str().unwrap().to_owned());
    }
    assert_eq!(
        states,
        ["paused_capacity", "paused_rate_limit", "paused_capacity"]
    );
    assert_eq!(
        api.poll(&opt, true, "application/json").await.status,
        StatusCode::GONE
    );
    // The schedule is spent: the next poll gets the result.
    assert!(api.result(&opt).await["metrics"].is_object());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_400_has_no_body_unlike_real_validation_errors() {
    let (server, api) = start(quick()).await;
    server.add_faults(vec![FaultRule::once(
        "create_session",
        Fault::EmptyBadRequest,
    )]);
    let injected = api.post("create_session", session_body()).await;
    assert_eq!(injected.status, StatusCode::BAD_REQUEST);
    assert!(injected.body.is_empty());

    // A real validation failure always says what is wrong.
    let invalid = api
        .post("create_session", json!({"tags": "not a list"}))
        .await;
    assert_eq!(invalid.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(invalid.json()["detail"][0]["msg"].as_str().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_faults_drop_or_stall_the_reply() {
    let (server, api) = start(quick()).await;
    server.add_faults(vec![
        FaultRule::once(
            "create_session",
            Fault::Reset {
                after_handler: false,
            },
        ),
        FaultRule::once("get_server_capabilities", Fault::ResetMidBody),
        FaultRule::once(
            "healthz",
            Fault::StallBody {
                stall_ms: Some(200),
            },
        ),
    ]);
    let reset = api
        .http
        .post(api.url("create_session"))
        .header("x-api-key", &api.key)
        .json(&session_body())
        .send()
        .await;
    assert!(
        reset.is_err(),
        "the connection should have been dropped: {reset:?}"
    );

    for path in ["get_server_capabilities", "healthz"] {
        let resp = api
            .http
            .get(api.url(path))
            .header("x-api-key", &api.key)
            .send()
            .await
            .expect("the head arrives");
        assert_eq!(resp.status(), StatusCode::OK);
        assert!(
            resp.bytes().await.is_err(),
            "{path}: the body should break off"
        );
    }

    let faults: Vec<_> = server
        .recording()
        .into_iter()
        .filter_map(|e| {
            e.fault
                .clone()
                .map(|f| (e.endpoint().to_owned(), f, e.resp_status))
        })
        .collect();
    assert_eq!(
        faults,
        vec![
            ("create_session".to_owned(), "reset".to_owned(), 0),
            (
                "get_server_capabilities".to_owned(),
                "reset_mid_body".to_owned(),
                200
            ),
            ("healthz".to_owned(), "stall_body".to_owned(), 200),
        ]
    );
    // The server still serves normally afterwards.
    assert_eq!(
        api.post("create_session", session_body()).await.status,
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_future_fault_replaces_the_result_with_an_error() {
    let (server, api) = start(quick()).await;
    let session = api.session().await;
    let model = api.model(&session, 0, 8).await;
    server.add_faults(vec![FaultRule::once(
        "optim_step",
        Fault::FailFuture {
            error: "learning rate must be positive".into(),
            category: "user".into(),
        },
    )]);
    let opt = api.optim(&model, 1, 0.01).await;
    assert_eq!(
        api.result(&opt).await,
        json!({"error": "learning rate must be positive", "category": "user"})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_can_be_scheduled_through_the_admin_endpoint() {
    let (server, api) = start(quick()).await;
    let rules = json!([{"endpoint": "create_session", "count": 1,
                        "fault": {"kind": "status", "status": 500}}]);
    let added = api
        .http
        .post(format!("{}/_admin/faults", api.base))
        .json(&rules)
        .send()
        .await
        .unwrap();
    assert_eq!(added.status(), StatusCode::OK);
    assert_eq!(
        api.post("create_session", session_body()).await.status,
        StatusCode::INTERNAL_SERVER_ERROR
    );
    assert_eq!(
        api.post("create_session", session_body()).await.status,
        StatusCode::OK
    );

    let recorded: serde_json::Value = api
        .http
        .get(format!("{}/_admin/requests", api.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let statuses: Vec<_> = recorded
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["resp_status"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses, [500, 200]);
    assert_eq!(recorded[0]["body"]["type"], json!("create_session"));
    assert_eq!(server.faults()[0].fired, 1);
}
