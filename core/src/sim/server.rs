//! Fake servers: a fixed script, and a seeded server with faults.

use std::collections::{BTreeMap, VecDeque};
use std::io::Read;
use std::time::{Duration, Instant};

use bytes::Bytes;
use prost::Message;

use crate::proto::wire;
use crate::rng::Rng;

/// What the fake server does with one request.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// A complete response, after `delay` of virtual time (a slow server or slow body).
    Response {
        /// Status code.
        status: u16,
        /// Headers (name, value).
        headers: Vec<(String, String)>,
        /// The body.
        body: Bytes,
        /// Virtual time the exchange takes.
        delay: Duration,
    },
    /// No response at all (connect failure, timeout, reset before the head).
    Fail {
        /// The transport error kind.
        kind: crate::io::TransportErrorKind,
        /// Virtual time before the failure.
        delay: Duration,
    },
    /// The head arrives, then the connection resets after `partial` bytes of body.
    ResetMidBody {
        /// Status code.
        status: u16,
        /// Headers.
        headers: Vec<(String, String)>,
        /// The body bytes delivered before the reset.
        partial: Bytes,
        /// Virtual time the exchange takes.
        delay: Duration,
    },
}

impl Reply {
    /// A JSON response.
    pub fn json(status: u16, body: impl Into<String>) -> Reply {
        Reply::Response {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: Bytes::from(body.into()),
            delay: Duration::ZERO,
        }
    }

    /// A protobuf response.
    pub fn protobuf(body: Bytes) -> Reply {
        Reply::Response {
            status: 200,
            headers: vec![("content-type".into(), "application/x-protobuf".into())],
            body,
            delay: Duration::ZERO,
        }
    }

    /// A response with no body and no headers (the proxy's empty 400).
    pub fn empty(status: u16) -> Reply {
        Reply::Response {
            status,
            headers: vec![("content-length".into(), "0".into())],
            body: Bytes::new(),
            delay: Duration::ZERO,
        }
    }

    /// A transport failure.
    pub fn fail(kind: crate::io::TransportErrorKind) -> Reply {
        Reply::Fail {
            kind,
            delay: Duration::ZERO,
        }
    }

    /// Adds a header.
    pub fn with_header(mut self, name: &str, value: &str) -> Reply {
        if let Reply::Response { headers, .. } | Reply::ResetMidBody { headers, .. } = &mut self {
            headers.push((name.to_owned(), value.to_owned()));
        }
        self
    }

    /// Sets the virtual time the exchange takes.
    pub fn with_delay(mut self, d: Duration) -> Reply {
        match &mut self {
            Reply::Response { delay, .. }
            | Reply::Fail { delay, .. }
            | Reply::ResetMidBody { delay, .. } => *delay = d,
        }
        self
    }

    /// The virtual time the exchange takes.
    pub fn delay(&self) -> Duration {
        match self {
            Reply::Response { delay, .. }
            | Reply::Fail { delay, .. }
            | Reply::ResetMidBody { delay, .. } => *delay,
        }
    }
}

/// A fake server.
pub trait Server: Send {
    /// Answers one request arriving at `now`.
    fn respond(&mut self, request: &http::Request<Bytes>, now: Instant) -> Reply;
}

/// Answers with a fixed list of replies, in order, whatever the request; then 500s.
#[derive(Debug, Clone, Default)]
pub struct Scripted {
    replies: VecDeque<Reply>,
}

impl Scripted {
    /// A server that will answer `replies` in order.
    pub fn new(replies: impl IntoIterator<Item = Reply>) -> Scripted {
        Scripted {
            replies: replies.into_iter().collect(),
        }
    }
}

impl Server for Scripted {
    fn respond(&mut self, _request: &http::Request<Bytes>, _now: Instant) -> Reply {
        self.replies
            .pop_front()
            .unwrap_or_else(|| Reply::json(500, r#"{"detail":"script exhausted"}"#))
    }
}

/// Fault probabilities of a [`FaultyServer`] (each in `[0, 1]`, drawn per request).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FaultConfig {
    /// Start a burst of 1-4 consecutive 503s.
    pub server_error_burst: f64,
    /// Answer 429 (half of them with `Retry-After: 1`).
    pub rate_limited: f64,
    /// Answer an empty-bodied 400 (a proxy rejection).
    pub empty_400: f64,
    /// Fail without a response (connection reset / timeout).
    pub transport: f64,
    /// Send the head, then reset mid-body.
    pub reset_mid_body: f64,
    /// Make the exchange slow (1-20 s of virtual time).
    pub slow: f64,
    /// On a sample's poll: the future expired (410).
    pub expired: f64,
    /// Polls answered `try_again` (or 408) before the result: up to this many.
    pub max_pending_polls: u32,
    /// Results larger than this are announced metadata-only first.
    pub metadata_threshold: usize,
}

impl FaultConfig {
    /// No faults at all, results on the first poll.
    pub fn none() -> FaultConfig {
        FaultConfig {
            server_error_burst: 0.0,
            rate_limited: 0.0,
            empty_400: 0.0,
            transport: 0.0,
            reset_mid_body: 0.0,
            slow: 0.0,
            expired: 0.0,
            max_pending_polls: 0,
            metadata_threshold: usize::MAX,
        }
    }

    /// A rough day: every fault kind, a few percent each.
    pub fn rough() -> FaultConfig {
        FaultConfig {
            server_error_burst: 0.03,
            rate_limited: 0.03,
            empty_400: 0.02,
            transport: 0.03,
            reset_mid_body: 0.02,
            slow: 0.05,
            expired: 0.03,
            max_pending_polls: 4,
            metadata_threshold: 64,
        }
    }
}

#[derive(Debug, Clone)]
struct Future {
    pending_polls: u32,
    payload: Reply,
    is_sample: bool,
    expired: bool,
    /// Reported finished by a `retrieve_futures` poll.
    reported: bool,
}

/// A seeded fake Tinker server: accepts submits (forward_backward, optim_step, the save calls,
/// create_model, asample), answers direct calls, serves futures through `retrieve_future` with
/// try-again loops whose queue state changes, and injects the faults of [`FaultConfig`].
///
/// It records every accepted submission of a training run as `(model_id, seq_id)`, in arrival
/// order, so tests can check turn order.
#[derive(Debug)]
pub struct FaultyServer {
    rng: Rng,
    faults: FaultConfig,
    burst: u32,
    next_request: u64,
    futures: BTreeMap<String, Future>,
    accepted: Vec<(String, u64)>,
    cursor: u64,
    batch_polls: u64,
    acknowledged: Vec<String>,
}

impl FaultyServer {
    /// A server whose every decision comes from `seed`.
    pub fn new(seed: u64, faults: FaultConfig) -> FaultyServer {
        FaultyServer {
            rng: Rng::from_seed(seed),
            faults,
            burst: 0,
            next_request: 0,
            futures: BTreeMap::new(),
            accepted: Vec::new(),
            cursor: 0,
            batch_polls: 0,
            acknowledged: Vec::new(),
        }
    }

    /// Accepted training submissions `(model_id, seq_id)`, in arrival order.
    pub fn accepted(&self) -> &[(String, u64)] {
        &self.accepted
    }

    /// `retrieve_futures` polls answered so far.
    pub fn batch_polls(&self) -> u64 {
        self.batch_polls
    }

    /// Request ids acknowledged in `retrieved_request_ids`, in arrival order.
    pub fn acknowledged(&self) -> &[String] {
        &self.acknowledged
    }

    /// One `retrieve_futures` poll: every sample future still pending moves one step closer to
    /// done; those done are reported once, with their payload size. A long poll with nothing to
    /// report is held for two seconds, as the real server holds it.
    fn batch_poll(&mut self, body: &serde_json::Value) -> Reply {
        self.batch_polls += 1;
        if let Some(ids) = body["retrieved_request_ids"].as_array() {
            self.acknowledged
                .extend(ids.iter().filter_map(|v| v.as_str().map(str::to_owned)));
        }
        let ack_only = body["timeout"].as_f64() == Some(0.0);
        let mut completions = Vec::new();
        for (id, future) in self.futures.iter_mut() {
            if !future.is_sample || future.reported {
                continue;
            }
            if future.pending_polls > 0 {
                future.pending_polls -= 1;
                continue;
            }
            future.reported = true;
            self.cursor += 1;
            let size = match &future.payload {
                Reply::Response { body, .. } => body.len(),
                _ => 0,
            };
            completions.push(format!(
                r#"{{"state":"finished","request_id":"{id}","response_payload_uncompressed_size":{size}}}"#
            ));
        }
        let reply = Reply::json(
            200,
            format!(
                r#"{{"completions":[{}],"cursor":{}}}"#,
                completions.join(","),
                self.cursor
            ),
        );
        if completions.is_empty() && !ack_only {
            reply.with_delay(Duration::from_secs(2))
        } else {
            reply
        }
    }

    /// Sets the fault probabilities from now on.
    pub fn set_faults(&mut self, faults: FaultConfig) {
        self.faults = faults;
        self.burst = 0;
    }

    fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && self.rng.next_f64() < p
    }

    /// A transient fault for this request, if one is drawn.
    fn fault(&mut self) -> Option<Reply> {
        if self.burst > 0 {
            self.burst -= 1;
            return Some(Reply::json(503, r#"{"detail":"burst"}"#));
        }
        let f = self.faults;
        if self.chance(f.server_error_burst) {
            self.burst = (self.rng.next_u64() % 4) as u32;
            return Some(Reply::json(503, r#"{"detail":"overloaded"}"#));
        }
        if self.chance(f.rate_limited) {
            let r = Reply::json(429, r#"{"detail":"slow down"}"#);
            return Some(if self.rng.next_u64().is_multiple_of(2) {
                r.with_header("retry-after", "1")
            } else {
                r
            });
        }
        if self.chance(f.empty_400) {
            return Some(Reply::empty(400));
        }
        if self.chance(f.transport) {
            return Some(Reply::fail(crate::io::TransportErrorKind::Io));
        }
        if self.chance(f.reset_mid_body) {
            return Some(Reply::ResetMidBody {
                status: 200,
                headers: vec![("content-type".into(), "application/json".into())],
                partial: Bytes::from_static(b"{\"request_"),
                delay: Duration::ZERO,
            });
        }
        None
    }

    fn slow(&mut self, reply: Reply) -> Reply {
        if self.chance(self.faults.slow) {
            let secs = 1 + self.rng.next_u64() % 20;
            reply.with_delay(Duration::from_secs(secs))
        } else {
            reply
        }
    }

    fn new_future(&mut self, payload: Reply, is_sample: bool, extra: &str) -> Reply {
        let id = format!("req-{:04}", self.next_request);
        self.next_request += 1;
        let pending_polls = if self.faults.max_pending_polls == 0 {
            0
        } else {
            (self.rng.next_u64() % u64::from(self.faults.max_pending_polls + 1)) as u32
        };
        self.futures.insert(
            id.clone(),
            Future {
                pending_polls,
                payload,
                is_sample,
                expired: false,
                reported: false,
            },
        );
        Reply::json(200, format!(r#"{{"request_id":"{id}"{extra}}}"#))
    }

    fn poll(&mut self, body: &serde_json::Value) -> Reply {
        let id = body["request_id"].as_str().unwrap_or_default().to_owned();
        let allow_metadata = body["allow_metadata_only"].as_bool().unwrap_or(false);
        let expire = self.faults.expired;
        let roll_expired = self.chance(expire);
        let roll_state = self.rng.next_u64();
        let threshold = self.faults.metadata_threshold;
        let Some(future) = self.futures.get_mut(&id) else {
            return Reply::json(404, r#"{"detail":"unknown future"}"#);
        };
        if future.is_sample && (future.expired || roll_expired) {
            future.expired = true;
            return Reply::json(410, r#"{"detail":"promise expired"}"#);
        }
        if future.pending_polls > 0 {
            future.pending_polls -= 1;
            let state =
                ["active", "paused_capacity", "paused_rate_limit"][(roll_state % 3) as usize];
            let body = format!(
                r#"{{"type":"try_again","request_id":"{id}","queue_state":"{state}","queue_state_reason":"sim: {state}"}}"#
            );
            // Half of the waits are the server's 408 rather than a 200 try_again.
            return Reply::json(
                if roll_state.is_multiple_of(2) {
                    200
                } else {
                    408
                },
                body,
            );
        }
        let payload = future.payload.clone();
        if let Reply::Response { body, .. } = &payload {
            if allow_metadata && body.len() > threshold {
                return Reply::json(
                    200,
                    format!(
                        r#"{{"status":"complete_metadata","response_payload_size":{}}}"#,
                        body.len()
                    ),
                );
            }
        }
        self.futures.remove(&id);
        payload
    }
}

fn forward_backward_result(datums: usize) -> Bytes {
    let mut data = Vec::new();
    let mut offsets = Vec::new();
    for i in 0..=datums {
        offsets.extend_from_slice(&((i * 4) as i64).to_le_bytes());
    }
    for i in 0..datums {
        data.extend_from_slice(&(-(i as f32) - 0.5).to_le_bytes());
    }
    let out = wire::ForwardBackwardOutput {
        loss_fn_output_type: "CrossEntropyLossReturn".into(),
        loss_fn_outputs: vec![wire::ArrayRecord {
            type_tag: "CrossEntropyLossReturn".into(),
            fields: BTreeMap::from([(
                "logprobs".to_owned(),
                wire::BatchedTensor {
                    data: Bytes::from(data),
                    offsets: Bytes::from(offsets),
                    dtype: wire::DType::Float32 as i32,
                    trailing_shape: vec![],
                },
            )]),
            num_datums: datums as i64,
        }],
        metrics: BTreeMap::from([("loss:sum".to_owned(), datums as f64)]),
    };
    Bytes::from(out.encode_to_vec())
}

fn sample_result(samples: usize) -> Bytes {
    let out = wire::SampleResponse {
        sequences: (0..samples)
            .map(|i| wire::SampledSequence {
                stop_reason: wire::StopReason::Length as i32,
                tokens: Bytes::from((i as i32 + 7).to_le_bytes().to_vec()),
                logprobs: None,
                topk_sampled_logprobs: None,
            })
            .collect(),
        ..Default::default()
    };
    Bytes::from(out.encode_to_vec())
}

impl Server for FaultyServer {
    fn respond(&mut self, request: &http::Request<Bytes>, _now: Instant) -> Reply {
        let path = request
            .uri()
            .path()
            .trim_start_matches("/api/v1/")
            .to_owned();
        if let Some(fault) = self.fault() {
            return fault;
        }
        let json: serde_json::Value = serde_json::from_slice(request.body()).unwrap_or_default();
        let reply = match path.as_str() {
            "retrieve_future" => self.poll(&json),
            "retrieve_futures" => self.batch_poll(&json),
            "telemetry" => Reply::json(200, r#"{"status":"accepted"}"#),
            "forward_backward" => {
                let compressed = request
                    .headers()
                    .get("content-encoding")
                    .is_some_and(|v| v == "zstd");
                let raw = if compressed {
                    let mut out = Vec::new();
                    match zstd::stream::Decoder::new(request.body().as_ref())
                        .and_then(|mut d| d.read_to_end(&mut out))
                    {
                        Ok(_) => Bytes::from(out),
                        Err(_) => return Reply::json(400, r#"{"detail":"bad zstd"}"#),
                    }
                } else {
                    request.body().clone()
                };
                match wire::ForwardBackwardRequest::decode(raw) {
                    Ok(req) => {
                        self.accepted
                            .push((req.model_id.clone(), req.seq_id as u64));
                        let payload = Reply::protobuf(forward_backward_result(req.data.len()));
                        self.new_future(payload, false, "")
                    }
                    Err(_) => Reply::json(400, r#"{"detail":"bad protobuf"}"#),
                }
            }
            "optim_step" | "save_weights" | "save_weights_for_sampler" | "load_weights" => {
                if let (Some(m), Some(s)) = (json["model_id"].as_str(), json["seq_id"].as_u64()) {
                    self.accepted.push((m.to_owned(), s));
                }
                let payload = match path.as_str() {
                    "optim_step" => r#"{"metrics":{"lr":0.0001}}"#.to_owned(),
                    _ => r#"{"path":"tinker://sim/weights/0"}"#.to_owned(),
                };
                self.new_future(Reply::json(200, payload), false, "")
            }
            "create_model" => {
                let seq = json["model_seq_id"].as_u64().unwrap_or(0);
                let payload = Reply::json(200, format!(r#"{{"model_id":"sim:train:{seq}"}}"#));
                self.new_future(payload, false, "")
            }
            "asample" => {
                let n = json["num_samples"].as_u64().unwrap_or(1) as usize;
                let seq = json["seq_id"].as_u64().unwrap_or(0);
                let ids: Vec<String> = (0..n).map(|i| format!("\"seq-{seq}-{i}\"")).collect();
                let extra = format!(r#","sample_sequence_ids":[{}]"#, ids.join(","));
                self.new_future(Reply::protobuf(sample_result(n)), true, &extra)
            }
            "get_info" => Reply::json(
                200,
                r#"{"model_id":"sim:train:0","model_data":{"model_name":"sim"},"optimizer_config":{"type":"adam"}}"#,
            ),
            _ => Reply::json(404, r#"{"detail":"not found"}"#),
        };
        self.slow(reply)
    }
}
