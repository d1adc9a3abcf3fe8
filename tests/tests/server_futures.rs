//! Futures over HTTP: long polls, metadata-only replies, protobuf or JSON by `Accept`, the
//! sampling completion poller and sampling results.

mod common;

use bytes::Bytes;
use common::{batch, quick, start, PROTOBUF};
use reqwest::StatusCode;
use serde_json::json;
use tinker_core::proto::{decode_forward_backward_output, decode_sample_response};
use tinker_testkit::server::{Fault, FaultRule};
use tinker_testkit::LocalServerConfig;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poll_answers_try_again_before_the_result() {
    let config = LocalServerConfig {
        try_again_polls: 1,
        queue_state: "paused_capacity".into(),
        ..quick()
    };
    let (_server, api) = start(config).await;
    let session = api.session().await;
    let model = api.model(&session, 0, 8).await;
    let fb = api.submit_fb(&model, 1, &batch(), false).await;

    let first = api.poll(&fb, true, PROTOBUF).await;
    assert_eq!(
        first.json(),
        json!({"type": "try_again", "request_id": fb, "queue_state": "paused_capacity"})
    );
    let second = api.poll(&fb, true, PROTOBUF).await;
    assert_eq!(second.content_type(), PROTOBUF);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_future_that_never_completes_is_answered_try_again_after_the_hold() {
    let (server, api) = start(quick()).await;
    let session = api.session().await;
    let model = api.model(&session, 0, 8).await;
    server.add_faults(vec![FaultRule::once("optim_step", Fault::HangFuture)]);
    let opt = api.optim(&model, 1, 0.01).await;
    for _ in 0..3 {
        let r = api.poll(&opt, true, "application/json").await;
        assert_eq!(r.json()["type"], json!("try_again"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_results_come_as_metadata_first_then_in_full() {
    let config = LocalServerConfig {
        metadata_only_threshold: Some(16),
        ..quick()
    };
    let (_server, api) = start(config).await;
    let session = api.session().await;
    let model = api.model(&session, 0, 8).await;
    let fb = api.submit_fb(&model, 1, &batch(), false).await;

    let meta = loop {
        let r = api.poll(&fb, true, PROTOBUF).await;
        let v = r.json();
        if v["type"] != json!("try_again") {
            break v;
        }
    };
    assert_eq!(meta["status"], json!("complete_metadata"));
    let size = meta["response_payload_size"].as_u64().unwrap();

    let full = api.poll(&fb, false, PROTOBUF).await;
    assert_eq!(full.content_type(), PROTOBUF);
    assert_eq!(full.body.len() as u64, size);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_backward_results_are_protobuf_only_when_asked_for() {
    let (_server, api) = start(quick()).await;
    let session = api.session().await;
    let model = api.model(&session, 0, 8).await;
    let fb = api.submit_fb(&model, 1, &batch(), false).await;

    let proto = api.result_reply(&fb, PROTOBUF).await;
    assert_eq!(proto.content_type(), PROTOBUF);
    let decoded = decode_forward_backward_output(proto.body.clone()).unwrap();
    assert_eq!(decoded.loss_fn_outputs.len(), 2);
    assert_eq!(decoded.logprobs(0).unwrap().as_f32().unwrap().len(), 7);

    let json = api.result_reply(&fb, "application/json").await;
    assert!(json.content_type().contains("application/json"));
    let v = json.json();
    assert_eq!(v["loss_fn_outputs"].as_array().unwrap().len(), 2);
    assert_eq!(v["metrics"]["loss:sum"].as_f64(), decoded.loss());

    // Other result types are JSON even when protobuf is accepted.
    let opt = api.optim(&model, 2, 0.01).await;
    let r = api.result_reply(&opt, PROTOBUF).await;
    assert!(r.content_type().contains("application/json"));
    assert!(r.json()["metrics"]["grad_norm:mean"].as_f64().unwrap() > 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sampling_returns_sequence_ids_and_true_logprobs_and_reports_completions() {
    let (_server, api) = start(quick()).await;
    let session = api.session().await;
    let created = api
        .post(
            "create_sampling_session",
            json!({"session_id": session, "sampling_session_seq_id": 0,
                   "base_model": "Qwen/Qwen3-8B", "type": "create_sampling_session"}),
        )
        .await
        .json();
    let sampler = created["sampling_session_id"].as_str().unwrap().to_owned();
    assert_eq!(sampler, format!("{session}:sample:0"));

    let sample = api
        .post(
            "asample",
            json!({"num_samples": 3, "prompt": {"chunks": [{"tokens": [1, 2, 3], "type": "encoded_text"}]},
                   "sampling_params": {"max_tokens": 4, "seed": 11, "temperature": 1.0, "top_k": -1, "top_p": 1.0},
                   "sampling_session_id": sampler, "seq_id": 0, "prompt_logprobs": true,
                   "topk_prompt_logprobs": 2, "topk_sample_logprobs": 0, "prompt_alt_tokens_k": 0,
                   "record_stability_info": false, "type": "sample"}),
        )
        .await
        .json();
    assert_eq!(sample["sample_sequence_ids"].as_array().unwrap().len(), 3);
    let request_id = sample["request_id"].as_str().unwrap();

    // The completion poller reports the finished request with its payload size.
    let completions = api
        .post(
            "retrieve_futures",
            json!({"target": {"type": "sampling_session", "sampling_session_id": sampler, "cloned_sampler_id": 0},
                   "prev_cursor": 0, "retrieved_request_ids": []}),
        )
        .await
        .json();
    let event = &completions["completions"][0];
    assert_eq!(event["state"], json!("finished"));
    assert_eq!(event["request_id"], json!(request_id));
    let size = event["response_payload_uncompressed_size"]
        .as_u64()
        .unwrap();

    let reply = api.result_reply(request_id, PROTOBUF).await;
    assert_eq!(reply.body.len() as u64, size);
    let decoded = decode_sample_response(Bytes::clone(&reply.body)).unwrap();
    assert_eq!(decoded.sequences.len(), 3);
    let prompt_lps = decoded.prompt_logprobs.unwrap();
    assert_eq!(prompt_lps[0], None);
    assert!(prompt_lps[1..].iter().all(|lp| lp.is_some_and(|x| x < 0.0)));

    // Acknowledged events are not reported again.
    let cursor = completions["cursor"].as_u64().unwrap();
    let again = api
        .post(
            "retrieve_futures",
            json!({"target": {"type": "sampling_session", "sampling_session_id": sampler, "cloned_sampler_id": 0},
                   "prev_cursor": cursor, "timeout": 0.0, "retrieved_request_ids": [request_id]}),
        )
        .await
        .json();
    assert_eq!(again["completions"], json!([]));
    assert_eq!(again["cursor"], json!(cursor));

    // A clone joins and gets the next client counter.
    let join = api
        .post(
            "join_sampling_session",
            json!({"sampling_session_id": sampler, "type": "join_sampling_session"}),
        )
        .await;
    assert_eq!(join.status, StatusCode::OK);
    assert_eq!(join.json()["client_counter"], json!(1));
}
