//! A small plain-HTTP client for the server tests (reqwest, not the tinker-rs clients: the
//! server must be proven independently of them).
#![allow(dead_code)]

use bytes::Bytes;
use prost::Message as _;
use reqwest::StatusCode;
use serde_json::{json, Value};
use tinker_core::proto::wire;
use tinker_testkit::{LocalServer, LocalServerConfig};

pub const PROTOBUF: &str = "application/x-protobuf";

pub struct Api {
    pub http: reqwest::Client,
    pub base: String,
    pub key: String,
}

/// A reply: status, headers, raw body.
pub struct Reply {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "status {}: body is not JSON ({e}): {:?}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn content_type(&self) -> &str {
        self.headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

pub async fn start(config: LocalServerConfig) -> (LocalServer, Api) {
    let server = LocalServer::start(config).await.expect("server starts");
    // The workspace builds reqwest with `rustls-no-provider` (the tokio adapter passes its own
    // provider explicitly); this plain test client needs one, and a test binary may install it.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let api = Api {
        http: reqwest::Client::new(),
        base: server.url().to_owned(),
        key: server.api_key(),
    };
    (server, api)
}

/// A config with a short long-poll hold, so "not ready yet" answers come quickly.
pub fn quick() -> LocalServerConfig {
    LocalServerConfig {
        long_poll_hold_ms: 100,
        retrieve_futures_hold_ms: 100,
        ..LocalServerConfig::default()
    }
}

impl Api {
    pub fn url(&self, path: &str) -> String {
        format!("{}/api/v1/{path}", self.base)
    }

    pub async fn send(&self, req: reqwest::RequestBuilder) -> Reply {
        let resp = req.send().await.expect("request sent");
        Reply {
            status: resp.status(),
            headers: resp.headers().clone(),
            body: resp.bytes().await.expect("body read"),
        }
    }

    pub async fn post(&self, path: &str, body: Value) -> Reply {
        self.send(
            self.http
                .post(self.url(path))
                .header("x-api-key", &self.key)
                .json(&body),
        )
        .await
    }

    pub async fn post_with_key(&self, path: &str, body: Value, idempotency_key: &str) -> Reply {
        self.send(
            self.http
                .post(self.url(path))
                .header("x-api-key", &self.key)
                .header("x-idempotency-key", idempotency_key)
                .json(&body),
        )
        .await
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.send(self.http.get(self.url(path)).header("x-api-key", &self.key))
            .await
    }

    pub async fn session(&self) -> String {
        let r = self
            .post(
                "create_session",
                json!({"tags": [], "user_metadata": {"suite": "server-tests"},
                       "sdk_version": "0.38.0", "type": "create_session"}),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK);
        r.json()["session_id"].as_str().unwrap().to_owned()
    }

    /// create_model + wait: the new model id.
    pub async fn model(&self, session: &str, model_seq_id: u64, rank: u32) -> String {
        let r = self
            .post(
                "create_model",
                json!({"session_id": session, "model_seq_id": model_seq_id,
                       "base_model": "Qwen/Qwen3-8B",
                       "lora_config": {"rank": rank, "seed": 7},
                       "optimizer_config": {"type": "adamw"}, "type": "create_model"}),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        let result = self.result(r.json()["request_id"].as_str().unwrap()).await;
        result["model_id"].as_str().unwrap().to_owned()
    }

    /// One poll of a future.
    pub async fn poll(&self, request_id: &str, allow_metadata_only: bool, accept: &str) -> Reply {
        self.send(
            self.http
                .post(self.url("retrieve_future"))
                .header("x-api-key", &self.key)
                .header("accept", accept)
                .json(&json!({"request_id": request_id,
                              "allow_metadata_only": allow_metadata_only})),
        )
        .await
    }

    /// Polls until the future is no longer `try_again` (JSON results).
    pub async fn result(&self, request_id: &str) -> Value {
        self.result_reply(request_id, "application/json")
            .await
            .json()
    }

    /// Polls until the future is no longer `try_again`, returning the final reply.
    pub async fn result_reply(&self, request_id: &str, accept: &str) -> Reply {
        loop {
            let r = self.poll(request_id, false, accept).await;
            assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
            if r.content_type().contains("json") && r.json()["type"] == "try_again" {
                continue;
            }
            return r;
        }
    }

    /// Submits a forward_backward (or forward) protobuf body; the future's request id.
    pub async fn submit_fb(
        &self,
        model: &str,
        seq_id: i32,
        data: &[(Vec<i32>, Vec<i64>)],
        forward_only: bool,
    ) -> String {
        let r = self
            .fb_raw(fb_body(model, seq_id, data, forward_only), None)
            .await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        r.json()["request_id"].as_str().unwrap().to_owned()
    }

    pub async fn fb_raw(&self, body: Vec<u8>, idempotency_key: Option<&str>) -> Reply {
        let mut req = self
            .http
            .post(self.url("forward_backward"))
            .header("x-api-key", &self.key)
            .header("content-type", PROTOBUF)
            .body(body);
        if let Some(k) = idempotency_key {
            req = req.header("x-idempotency-key", k);
        }
        self.send(req).await
    }

    /// The JSON result of a forward/backward future (asked for without protobuf).
    pub async fn fb_result(&self, request_id: &str) -> Value {
        let r = self.result_reply(request_id, "application/json").await;
        let v = r.json();
        assert!(v.get("error").is_none(), "forward_backward failed: {v}");
        v
    }

    pub async fn optim(&self, model: &str, seq_id: u64, lr: f64) -> String {
        let r = self
            .post(
                "optim_step",
                json!({"model_id": model, "seq_id": seq_id, "type": "optim_step",
                       "adam_params": {"learning_rate": lr, "beta1": 0.9, "beta2": 0.95,
                                       "eps": 1e-12, "weight_decay": 0.0, "grad_clip_norm": 0.0}}),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        r.json()["request_id"].as_str().unwrap().to_owned()
    }
}

/// A cross-entropy `ForwardBackwardRequest`: each datum is (input tokens, target tokens), all
/// weights 1.
pub fn fb_body(
    model: &str,
    seq_id: i32,
    data: &[(Vec<i32>, Vec<i64>)],
    forward_only: bool,
) -> Vec<u8> {
    let tensor = |dtype: wire::DType, bytes: Vec<u8>, n: usize| wire::Tensor {
        encoding: Some(wire::tensor::Encoding::Dense(bytes.into())),
        dtype: dtype as i32,
        shape: vec![n as i64],
    };
    let data = data
        .iter()
        .map(|(input, targets)| wire::Datum {
            model_input: vec![wire::Chunk {
                chunk: Some(wire::chunk::Kind::EncodedText(wire::EncodedTextChunk {
                    tokens: input
                        .iter()
                        .flat_map(|t| t.to_le_bytes())
                        .collect::<Vec<_>>()
                        .into(),
                })),
            }],
            loss_fn_inputs: [
                (
                    "target_tokens".to_owned(),
                    tensor(
                        wire::DType::Int64,
                        targets.iter().flat_map(|t| t.to_le_bytes()).collect(),
                        targets.len(),
                    ),
                ),
                (
                    "weights".to_owned(),
                    tensor(
                        wire::DType::Float32,
                        targets.iter().flat_map(|_| 1f32.to_le_bytes()).collect(),
                        targets.len(),
                    ),
                ),
            ]
            .into_iter()
            .collect(),
            model_input_spans: vec![],
            loss_fn_input_spans: vec![],
        })
        .collect();
    wire::ForwardBackwardRequest {
        model_id: model.to_owned(),
        seq_id,
        data,
        loss_fn: "cross_entropy".into(),
        loss_fn_config: Default::default(),
        forward_only,
        loss_fn_config_v2: Default::default(),
    }
    .encode_to_vec()
}

/// The training batch the tests use: two short sequences.
pub fn batch() -> Vec<(Vec<i32>, Vec<i64>)> {
    vec![
        (vec![1, 2, 3, 4, 5, 6, 7], vec![2, 3, 4, 5, 6, 7, 8]),
        (vec![10, 11, 12, 13], vec![11, 12, 13, 14]),
    ]
}

pub fn loss(result: &Value) -> f64 {
    result["metrics"]["loss:sum"]
        .as_f64()
        .expect("loss:sum metric")
}
