//! Auth, sessions, REST resources and error shapes; starting the server on its own thread.

mod common;

use base64::Engine as _;
use common::{quick, start};
use reqwest::StatusCode;
use serde_json::{json, Value};
use tinker_testkit::{LocalServer, LocalServerConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_credentials_are_rejected_and_jwts_work_until_they_expire() {
    let (server, api) = start(LocalServerConfig::all_flags()).await;
    let anon = api
        .send(
            api.http
                .post(api.url("client/config"))
                .json(&json!({"sdk_version": "0.38.0"})),
        )
        .await;
    assert_eq!(anon.status, StatusCode::UNAUTHORIZED);
    let wrong = api
        .send(
            api.http
                .post(api.url("client/config"))
                .header("x-api-key", "sk-nope")
                .json(&json!({})),
        )
        .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert!(wrong.json()["detail"].is_string());

    let config = api
        .post("client/config", json!({"sdk_version": "0.38.0"}))
        .await
        .json();
    assert_eq!(config["pjwt_auth_enabled"], json!(true));
    let jwt = api.post("auth/token", json!({})).await.json()["jwt"]
        .as_str()
        .unwrap()
        .to_owned();
    let payload = jwt.split('.').nth(1).unwrap();
    let claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(claims["sub"], json!("tml:org_user:local-user"));
    assert!(claims["exp"].as_i64().unwrap() > claims["iat"].as_i64().unwrap());

    let with_jwt = |path: &str| api.http.get(api.url(path)).header("x-api-key", jwt.clone());
    assert_eq!(
        api.send(with_jwt("get_server_capabilities")).await.status,
        StatusCode::OK
    );
    server.expire_jwts();
    let expired = api.send(with_jwt("get_server_capabilities")).await;
    assert_eq!(expired.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        expired.headers["www-authenticate"],
        "Bearer error=\"invalid_token\""
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_or_silent_sessions_answer_410() {
    let (_server, api) = start(quick()).await;
    let finished = api.session().await;
    let beat = |id: &str| json!({"session_id": id, "type": "session_heartbeat"});
    assert_eq!(
        api.post("session_heartbeat", beat(&finished)).await.status,
        StatusCode::OK
    );
    let r = api
        .post(
            &format!("sessions/{finished}/finish"),
            json!({"reason": {"type": "success"}, "detail": null}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        api.post("session_heartbeat", beat(&finished)).await.status,
        StatusCode::GONE
    );

    let silent = api.session().await;
    let expire = api
        .http
        .post(format!("{}/_admin/sessions/{silent}/expire", api.base))
        .send()
        .await
        .unwrap();
    assert_eq!(expire.status(), StatusCode::OK);
    let r = api
        .post(
            "create_model",
            json!({"session_id": silent, "model_seq_id": 0, "base_model": "Qwen/Qwen3-8B",
                     "lora_config": {"rank": 4}, "type": "create_model"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::GONE);
    assert!(
        r.json()["detail"].as_str().unwrap().contains("expired"),
        "{:?}",
        r.body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_are_listed_published_given_ttls_and_deleted_by_their_slashed_ids() {
    let (_server, api) = start(quick()).await;
    let session = api.session().await;
    let model = api.model(&session, 0, 8).await;
    for (seq, name) in [(1, "first"), (2, "second")] {
        let r = api
            .post(
                "save_weights",
                json!({"model_id": model, "path": name, "seq_id": seq, "overwrite": false,
                         "type": "save_weights"}),
            )
            .await;
        api.result(r.json()["request_id"].as_str().unwrap()).await;
    }
    let ckpt = format!("training_runs/{model}/checkpoints/weights/first");

    let listed = api
        .get(&format!("training_runs/{model}/checkpoints"))
        .await
        .json();
    let ids: Vec<_> = listed["checkpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["checkpoint_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, ["weights/first", "weights/second"]);
    let user = api.get("checkpoints?limit=1&offset=0").await.json();
    assert_eq!(
        user["checkpoints"][0]["checkpoint_id"],
        json!("weights/second"),
        "newest first"
    );
    assert_eq!(
        user["cursor"],
        json!({"offset": 0, "limit": 1, "total_count": 2})
    );

    let put_ttl = |ttl: Value| {
        api.http
            .put(api.url(&format!("{ckpt}/ttl")))
            .header("x-api-key", &api.key)
            .json(&json!({"ttl_seconds": ttl}))
    };
    assert_eq!(
        api.send(put_ttl(json!(7200))).await.status,
        StatusCode::NO_CONTENT
    );
    let run = api.get(&format!("training_runs/{model}")).await.json();
    assert_eq!(run["training_run_id"], json!(model));
    assert_eq!(
        run["last_checkpoint"]["checkpoint_id"],
        json!("weights/second")
    );
    let listed = api
        .get(&format!("training_runs/{model}/checkpoints"))
        .await
        .json();
    assert!(listed["checkpoints"][0]["expires_at"].is_string());
    assert_eq!(
        api.send(put_ttl(Value::Null)).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        api.send(put_ttl(json!(5))).await.status,
        StatusCode::BAD_REQUEST
    );

    let publish = || {
        api.http
            .post(api.url(&format!("{ckpt}/publish")))
            .header("x-api-key", &api.key)
    };
    assert_eq!(api.send(publish()).await.status, StatusCode::NO_CONTENT);
    assert_eq!(api.send(publish()).await.status, StatusCode::CONFLICT);
    let unpublish = api
        .http
        .delete(api.url(&format!("{ckpt}/publish")))
        .header("x-api-key", &api.key);
    assert_eq!(api.send(unpublish).await.status, StatusCode::NO_CONTENT);

    let info = api
        .post(
            "weights_info",
            json!({"tinker_path": format!("tinker://{model}/weights/first")}),
        )
        .await;
    assert_eq!(info.json()["lora_rank"], json!(8));

    let delete = || {
        api.http
            .delete(api.url(&ckpt))
            .header("x-api-key", &api.key)
    };
    assert_eq!(api.send(delete()).await.status, StatusCode::NO_CONTENT);
    assert_eq!(api.send(delete()).await.status, StatusCode::NOT_FOUND);

    let runs = api
        .get("training_runs?limit=5&offset=0&access_scope=owned")
        .await
        .json();
    assert_eq!(runs["cursor"]["total_count"], json!(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_weights_and_archives_are_downloadable_from_the_same_server() {
    let config = LocalServerConfig {
        archive_build_ms: 60_000,
        ..quick()
    };
    let (_server, api) = start(config).await;
    let session = api.session().await;
    let model = api.model(&session, 0, 8).await;
    let r = api
        .post(
            "save_weights_external",
            json!({"model_id": model, "path": "hf", "seq_id": 1, "type": "save_weights_external"}),
        )
        .await;
    let saved = api.result(r.json()["request_id"].as_str().unwrap()).await;
    assert_eq!(
        saved["path"],
        json!(format!("tinker://{model}/external_weights/hf"))
    );

    let urls = api
        .get(&format!(
            "training_runs/{model}/checkpoints/external_weights/hf/external_weights_urls"
        ))
        .await
        .json();
    let config_url = urls["urls"]["adapter_config.json"].as_str().unwrap();
    let adapter: Value = api
        .http
        .get(config_url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(adapter["r"], json!(8));

    // The 0.25 archive is "being built" for the configured time.
    let archive = api
        .get(&format!(
            "training_runs/{model}/checkpoints/external_weights/hf/archive"
        ))
        .await;
    assert_eq!(archive.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(archive.json()["detail"].is_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_fastapi_shaped_errors() {
    let (_server, api) = start(quick()).await;
    let not_json = api
        .send(
            api.http
                .post(api.url("create_session"))
                .header("x-api-key", &api.key)
                .header("content-type", "application/json")
                .body("{nope"),
        )
        .await;
    assert_eq!(not_json.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(not_json.json()["detail"][0]["loc"], json!(["body"]));

    let unknown_model = api
        .post(
            "get_info",
            json!({"model_id": "s:train:9", "type": "get_info"}),
        )
        .await;
    assert_eq!(unknown_model.status, StatusCode::NOT_FOUND);
    assert!(unknown_model.json()["detail"]
        .as_str()
        .unwrap()
        .contains("s:train:9"));

    let no_route = api.get("no_such_endpoint").await;
    assert_eq!(no_route.status, StatusCode::NOT_FOUND);
    assert_eq!(no_route.json(), json!({"detail": "Not Found"}));

    let garbage_proto = api.fb_raw(vec![0xff, 0xff, 0xff], None).await;
    assert_eq!(garbage_proto.status, StatusCode::BAD_REQUEST);
    assert!(garbage_proto.json()["detail"]
        .as_str()
        .unwrap()
        .contains("protobuf"));

    let telemetry = api
        .post(
            "telemetry",
            json!({"events": [], "platform": "Linux",
        "sdk_version": "0.38.0", "session_id": "x", "process_uuid": "y"}),
        )
        .await;
    assert_eq!(telemetry.json(), json!({"status": "accepted"}));
}

#[test]
fn a_background_server_serves_callers_without_a_runtime_and_stops_when_dropped() {
    let server = LocalServer::start_background(LocalServerConfig::default()).unwrap();
    let addr = server.addr();
    // This test may run before any other in the binary has installed the rustls provider.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = tokio::runtime::Runtime::new().unwrap();
    let health = client.block_on(async {
        reqwest::get(format!("{}/api/v1/healthz", server.url()))
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()
    });
    assert_eq!(health, json!({"status": "ok"}));
    drop(server);
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "still listening after drop"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_can_be_listed_searched_traced_and_billed() {
    let (_server, api) = start(quick()).await;
    let first = api.session().await;
    let second = api.session().await;
    let model = api.model(&second, 0, 4).await;
    let fb = api.submit_fb(&model, 1, &common::batch(), false).await;
    api.fb_result(&fb).await;

    let listed = api
        .get("sessions?limit=20&offset=0&access_scope=owned")
        .await
        .json();
    assert_eq!(listed["sessions"], json!([second, first]), "newest first");
    let got = api
        .get(&format!("sessions/{second}?access_scope=owned"))
        .await
        .json();
    assert_eq!(got["training_run_ids"], json!([model]));

    let finish = json!({"reason": {"type": "errored"}, "detail": "boom"});
    api.post(&format!("sessions/{first}/finish"), finish).await;
    let search = |body: Value| api.post("sessions/search", body);
    let active = search(
        json!({"user_metadata": {}, "owner": {"type": "own"}, "limit": 50,
                               "statuses": [{"type": "active"}]}),
    )
    .await
    .json();
    assert_eq!(active["sessions"][0]["session_id"], json!(second));
    assert_eq!(active["sessions"].as_array().unwrap().len(), 1);
    let page = search(json!({"user_metadata": {}, "owner": {"type": "own"}, "limit": 1}))
        .await
        .json();
    assert_eq!(page["sessions"][0]["session_id"], json!(second));
    let next = search(
        json!({"user_metadata": {}, "owner": {"type": "own"}, "limit": 1,
                             "cursor": page["next_cursor"]}),
    )
    .await
    .json();
    assert_eq!(next["sessions"][0]["session_id"], json!(first));
    assert_eq!(
        next["sessions"][0]["status"]["reason"]["type"],
        json!("errored")
    );
    assert!(next["next_cursor"].is_null());

    let trace = api
        .get(&format!("sessions/{second}/trace_export"))
        .await
        .json();
    assert_eq!(trace["status"], json!("ready"));
    let lines = api
        .http
        .get(trace["url"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(lines.lines().any(|l| l.contains("create_model")), "{lines}");

    let hour = |t: i64| tinker_core::types::Timestamp::from_unix_seconds(t - t.rem_euclid(3600));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let usage = api
        .get(&format!(
            "billing/usage/events?starting_on={}&ending_before={}",
            hour(now),
            hour(now + 3600)
        ))
        .await
        .json();
    let training: Vec<_> = usage["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event_info"]["type"] == "training")
        .collect();
    assert_eq!(training[0]["event_info"]["token_count"], json!(11));
    assert_eq!(training[0]["session_id"], json!(second));
}
