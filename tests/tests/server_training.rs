//! Training over HTTP: seq ordering, deduplication, save conflicts, a loop that learns, and
//! resume-with-optimizer equals an uninterrupted run.

mod common;

use common::{batch, loss, quick, start};
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_execute_in_seq_order_whatever_order_they_arrive_in() {
    let (_server, api) = start(quick()).await;
    let session = api.session().await;
    let model = api.model(&session, 0, 8).await;

    // The optim_step (seq 3) arrives first, then the second chunk (seq 2) of a forward_backward,
    // and the first chunk (seq 1) last.
    let optim = api.optim(&model, 3, 0.01).await;
    let chunk2 = api.submit_fb(&model, 2, &batch()[1..], false).await;
    let chunk1 = api.submit_fb(&model, 1, &batch()[..1], false).await;

    let r1 = api.fb_result(&chunk1).await;
    let r2 = api.fb_result(&chunk2).await;
    let step = api.result(&optim).await;
    // clock_cycle counts executed requests of the run: chunk 1 ran first, chunk 2 second.
    assert_eq!(r1["metrics"]["clock_cycle:unique"], json!(1.0));
    assert_eq!(r2["metrics"]["clock_cycle:unique"], json!(2.0));
    // The step saw both chunks' gradients (it would be 0 had it run first).
    assert!(
        step["metrics"]["grad_norm:mean"].as_f64().unwrap() > 0.0,
        "{step}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_seq_id_or_idempotency_key_returns_the_original_future() {
    let (_server, api) = start(quick()).await;
    let session = api.session().await;
    let model = api.model(&session, 0, 8).await;

    let fb = api.submit_fb(&model, 1, &batch(), false).await;
    // A holder-level retry: same seq id, new idempotency key.
    let again = api
        .fb_raw(
            common::fb_body(&model, 1, &batch(), false),
            Some("another-key"),
        )
        .await;
    assert_eq!(again.json()["request_id"], json!(fb));

    let first = api.optim(&model, 2, 0.01).await;
    let second = api.optim(&model, 2, 0.01).await;
    assert_eq!(first, second);
    let deduped = api.result(&first).await["metrics"]["grad_norm:mean"].clone();

    // Applied once: a twin model (same seed) that got the batch once sees the same gradient
    // (twice the batch would double it).
    let twin = api.model(&session, 1, 8).await;
    let fb = api.submit_fb(&twin, 1, &batch(), false).await;
    api.fb_result(&fb).await;
    let once = api.optim(&twin, 2, 0.01).await;
    assert_eq!(
        api.result(&once).await["metrics"]["grad_norm:mean"],
        deduped
    );

    // The same X-Idempotency-Key on create_session returns the first session.
    let body =
        json!({"tags": [], "user_metadata": {}, "sdk_version": "0.38.0", "type": "create_session"});
    let a = api
        .post_with_key("create_session", body.clone(), "idem-1")
        .await
        .json();
    let b = api
        .post_with_key("create_session", body, "idem-1")
        .await
        .json();
    assert_eq!(a["session_id"], b["session_id"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saving_under_an_existing_name_is_a_conflict_unless_overwriting() {
    let (_server, api) = start(quick()).await;
    let session = api.session().await;
    let model = api.model(&session, 0, 8).await;
    let save = |seq: u64, overwrite: bool| {
        json!({"model_id": model, "path": "step-1", "seq_id": seq, "overwrite": overwrite,
               "type": "save_weights"})
    };
    let first = api.post("save_weights", save(1, false)).await;
    assert_eq!(first.status, StatusCode::OK);
    let saved = api
        .result(first.json()["request_id"].as_str().unwrap())
        .await;
    assert_eq!(
        saved["path"],
        json!(format!("tinker://{model}/weights/step-1"))
    );

    let clash = api.post("save_weights", save(2, false)).await;
    assert_eq!(clash.status, StatusCode::CONFLICT);
    assert!(clash.json()["detail"]
        .as_str()
        .unwrap()
        .contains("already exists"));

    let overwrite = api.post("save_weights", save(2, true)).await;
    assert_eq!(overwrite.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_training_steps_over_http_lower_the_loss() {
    let (_server, api) = start(quick()).await;
    let session = api.session().await;
    let model = api.model(&session, 0, 8).await;
    let mut losses = Vec::new();
    for step in 0..20u64 {
        let fb = api
            .submit_fb(&model, (2 * step + 1) as i32, &batch(), false)
            .await;
        let opt = api.optim(&model, 2 * step + 2, 0.05).await;
        losses.push(loss(&api.fb_result(&fb).await));
        api.result(&opt).await;
    }
    assert!(
        losses[19] < 0.5 * losses[0],
        "loss did not fall enough: {losses:?}"
    );
}

/// Trains `steps` steps starting at `seq`; returns the next seq id.
async fn train(api: &common::Api, model: &str, mut seq: u64, steps: usize) -> u64 {
    for _ in 0..steps {
        let fb = api.submit_fb(model, seq as i32, &batch(), false).await;
        let opt = api.optim(model, seq + 1, 0.05).await;
        api.fb_result(&fb).await;
        api.result(&opt).await;
        seq += 2;
    }
    seq
}

async fn forward_loss(api: &common::Api, model: &str, seq: u64) -> f64 {
    let fwd = api.submit_fb(model, seq as i32, &batch(), true).await;
    loss(&api.fb_result(&fwd).await)
}

async fn load(
    api: &common::Api,
    session: &str,
    model_seq_id: u64,
    path: &str,
    optimizer: bool,
) -> String {
    let r = api
        .post(
            "load_weights",
            json!({"session_id": session, "model_seq_id": model_seq_id, "path": path,
                   "optimizer": optimizer, "type": "load_weights"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let done = api.result(r.json()["request_id"].as_str().unwrap()).await;
    done["model_id"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resuming_with_the_optimizer_state_equals_the_uninterrupted_run() {
    let (_server, api) = start(quick()).await;
    let session = api.session().await;
    let original = api.model(&session, 0, 8).await;

    // Uninterrupted: 3 steps, save, 3 more steps.
    let seq = train(&api, &original, 1, 3).await;
    let save = api
        .post(
            "save_weights",
            json!({"model_id": original, "path": "mid", "seq_id": seq, "overwrite": false,
                   "type": "save_weights"}),
        )
        .await;
    let path = api
        .result(save.json()["request_id"].as_str().unwrap())
        .await["path"]
        .as_str()
        .unwrap()
        .to_owned();
    let seq = train(&api, &original, seq + 1, 3).await;
    let uninterrupted = forward_loss(&api, &original, seq).await;

    // Resumed from the checkpoint with its optimizer state: the same 3 steps, the same loss.
    let resumed = load(&api, &session, 1, &path, true).await;
    let seq = train(&api, &resumed, 1, 3).await;
    assert_eq!(forward_loss(&api, &resumed, seq).await, uninterrupted);

    // Without the optimizer state Adam restarts, and the run diverges.
    let fresh_optimizer = load(&api, &session, 2, &path, false).await;
    let seq = train(&api, &fresh_optimizer, 1, 3).await;
    assert_ne!(
        forward_loss(&api, &fresh_optimizer, seq).await,
        uninterrupted
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_errors_fail_the_future_with_a_user_category() {
    let (_server, api) = start(quick()).await;
    let session = api.session().await;
    let model = api.model(&session, 0, 8).await;
    // Token 100000 is outside the toy model's vocabulary.
    let fb = api
        .submit_fb(&model, 1, &[(vec![1, 100_000], vec![2, 3])], false)
        .await;
    let r = api.result(&fb).await;
    assert_eq!(r["category"], json!("user"));
    assert!(r["error"].as_str().unwrap().contains("vocabulary"), "{r}");
}
