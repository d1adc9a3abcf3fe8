//! Replays every request the official Python SDK sent in the captured runs
//! (`shared/spec/captures/*.jsonl`) through tinker-core's request builders and checks that
//! tinker-rs would send the same thing: method, path, query, JSON body (floats within 1e-6
//! relative) and every protocol header. Per-run values (idempotency keys, timing, platform,
//! user agent) are checked by shape.
//!
//! Each captured request is rebuilt the way a client would build it: from the *inputs* of the
//! call (ids, names, counters, the user's parameters) through the public constructors, so
//! defaults, omitted optionals and constant tags come from tinker-core, not from the capture.
//!
//! The captures live in `shared/` beside the repository checkout (`../../shared/spec/captures`
//! from this crate); `TINKER_CAPTURES_DIR` overrides the location.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::PathBuf;

use base64::Engine as _;
use bytes::Bytes;
use serde_json::Value;
use tinker_core::endpoints::{
    bare_uuid, idempotency_key, AssignSessionProject, AttemptHeaders, CopyWeights,
    DeleteCheckpoint, ExportSessionTrace, FinishSession, ForwardBackward, GetAuditLog,
    GetBillingUsage, GetCheckpointStorageUsage, GetClientConfig, GetDynamicConfig,
    GetExternalWeightsUrls, GetSampler, GetServerCapabilities, GetSession, GetTrainingRun,
    ListCheckpoints, ListSessions, ListTrainingRuns, ListUserCheckpoints, PublishCheckpoint,
    RequestContext, RetrieveFuture, SendTelemetry, SetCheckpointTtl, UnpublishCheckpoint,
};
use tinker_core::path::{CheckpointKind, TinkerPath};
use tinker_core::proto::{
    compress_body, encode_forward_backward, wire, ForwardBackwardRequestRef, ZSTD_LEVEL,
};
use tinker_core::settings::ApiKey;
use tinker_core::types::*;

/// One line of a capture file.
struct Captured {
    file: String,
    line: usize,
    method: String,
    path: String,
    query: String,
    headers: Vec<(String, String)>,
    body: Option<Value>,
    body_proto: Option<Value>,
}

impl Captured {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn body(&self) -> &Value {
        self.body.as_ref().unwrap_or(&Value::Null)
    }

    fn label(&self) -> String {
        let q = if self.query.is_empty() {
            String::new()
        } else {
            format!("?{}", self.query)
        };
        format!(
            "{}:{} {} {}{}",
            self.file, self.line, self.method, self.path, q
        )
    }

    fn query_param(&self, name: &str) -> Option<String> {
        self.query
            .split('&')
            .filter(|p| !p.is_empty())
            .find_map(|pair| {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                (k == name).then(|| percent_decode(v))
            })
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).expect("hex escape"));
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).expect("utf-8 query")
}

fn captures_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("TINKER_CAPTURES_DIR") {
        return PathBuf::from(dir);
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/spec/captures")
}

fn load() -> Vec<Captured> {
    let dir = captures_dir();
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| {
        panic!(
            "capture directory {} is missing ({e}). The captures live in shared/spec/captures beside the \
             repository checkout; set TINKER_CAPTURES_DIR to point elsewhere.",
            dir.display()
        )
    });
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    files.sort();
    assert_eq!(
        files.len(),
        8,
        "expected the 8 capture files in {}",
        dir.display()
    );
    let mut out = Vec::new();
    for f in files {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&f).expect("read capture");
        for (i, line) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            let v: Value = serde_json::from_str(line).expect("capture line is JSON");
            out.push(Captured {
                file: name.clone(),
                line: i + 1,
                method: v["method"].as_str().unwrap().to_owned(),
                path: v["path"].as_str().unwrap().to_owned(),
                query: v["query"].as_str().unwrap_or("").to_owned(),
                headers: v["headers"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|h| {
                        (
                            h[0].as_str().unwrap().to_owned(),
                            h[1].as_str().unwrap().to_owned(),
                        )
                    })
                    .collect(),
                body: v.get("body").cloned(),
                body_proto: v.get("body_proto").cloned(),
            });
        }
    }
    out
}

/// The request tinker-core builds for a captured one, and how to compare its body.
enum Rebuilt {
    /// Compare the JSON body (or its absence) exactly, floats with tolerance.
    Json(http::Request<Bytes>),
    /// Compare the body's structure only (telemetry events belong to another module).
    Structure(http::Request<Bytes>),
    /// Protobuf body (forward_backward): our encoder's bytes, decoded, must equal the message the
    /// SDK sent (transliterated from the capture's decoded form).
    Proto(http::Request<Bytes>, wire::ForwardBackwardRequest),
}

fn b64(v: &Value) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(v.as_str().unwrap_or(""))
        .expect("captured bytes are base64")
}

fn shape_of(t: &Value) -> Vec<i64> {
    t["shape"]
        .as_array()
        .map(|a| a.iter().map(|d| s(d).parse().unwrap()).collect())
        .unwrap_or_default()
}

/// Our datums, rebuilt from the capture's decoded protobuf (the user's data as the SDK saw it),
/// encoded by tinker-core's encoder, zstd-compressed when the SDK compressed.
fn encode_forward_backward_like(proto: &Value, compressed: bool) -> Vec<u8> {
    let data: Vec<Datum> = proto["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            let chunks = d["model_input"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| {
                    let raw = b64(&c["encoded_text"]["tokens"]);
                    Chunk::tokens(
                        raw.chunks_exact(4)
                            .map(|b| i32::from_le_bytes(b.try_into().unwrap()))
                            .collect::<Vec<_>>(),
                    )
                })
                .collect();
            let mut datum = Datum::new(ModelInput::from_chunks(chunks));
            for (key, t) in d["loss_fn_inputs"].as_object().unwrap() {
                let raw = b64(&t["dense"]);
                let shape: Vec<usize> = shape_of(t).iter().map(|&x| x as usize).collect();
                let values = match t["dtype"].as_str().unwrap() {
                    "DTYPE_FLOAT32" => TensorValues::Float32(
                        raw.chunks_exact(4)
                            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                            .collect(),
                    ),
                    "DTYPE_INT64" => TensorValues::Int64(
                        raw.chunks_exact(8)
                            .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
                            .collect(),
                    ),
                    other => panic!("unexpected captured dtype {other}"),
                };
                datum = datum.with_input(key, TensorData::dense(values, Some(shape)).unwrap());
            }
            datum
        })
        .collect();
    let config: BTreeMap<String, LossConfigValue> = proto["loss_fn_config_v2"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| {
                    let value = match v.get("number") {
                        Some(n) => LossConfigValue::Number(n.as_f64().unwrap()),
                        None => LossConfigValue::Text(s(&v["text"])),
                    };
                    (k.clone(), value)
                })
                .collect()
        })
        .unwrap_or_default();
    let loss_fn: LossFn = s(&proto["loss_fn"]).parse().unwrap();
    let mut request = ForwardBackwardRequestRef::new(
        proto["model_id"].as_str().unwrap(),
        u(&proto["seq_id"]) as i32,
        &data,
        loss_fn,
    );
    request.forward_only = proto["forward_only"].as_bool().unwrap_or(false);
    if !config.is_empty() {
        request.loss_fn_config = Some(&config);
    }
    let mut body = Vec::new();
    encode_forward_backward(&request, &mut body).unwrap();
    if compressed {
        compress_body(&body, ZSTD_LEVEL).unwrap()
    } else {
        body
    }
}

/// The message the SDK sent, transliterated field by field from the capture.
fn expected_wire_request(proto: &Value) -> wire::ForwardBackwardRequest {
    let data = proto["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| wire::Datum {
            model_input: d["model_input"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| wire::Chunk {
                    chunk: Some(wire::chunk::Kind::EncodedText(wire::EncodedTextChunk {
                        tokens: Bytes::from(b64(&c["encoded_text"]["tokens"])),
                    })),
                })
                .collect(),
            loss_fn_inputs: d["loss_fn_inputs"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, t)| {
                    let dtype = match t["dtype"].as_str().unwrap() {
                        "DTYPE_FLOAT32" => wire::DType::Float32,
                        _ => wire::DType::Int64,
                    };
                    let tensor = wire::Tensor {
                        encoding: Some(wire::tensor::Encoding::Dense(Bytes::from(
                            b64(&t["dense"]),
                        ))),
                        dtype: dtype as i32,
                        shape: shape_of(t),
                    };
                    (k.clone(), tensor)
                })
                .collect(),
            ..Default::default()
        })
        .collect();
    let numbers = |key: &str| -> BTreeMap<String, f64> {
        proto[key]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.as_f64().unwrap()))
                    .collect()
            })
            .unwrap_or_default()
    };
    let v2 = proto["loss_fn_config_v2"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| {
                    let value = match v.get("number") {
                        Some(n) => wire::loss_config_value::Value::Number(n.as_f64().unwrap()),
                        None => wire::loss_config_value::Value::Text(s(&v["text"])),
                    };
                    (k.clone(), wire::LossConfigValue { value: Some(value) })
                })
                .collect()
        })
        .unwrap_or_default();
    wire::ForwardBackwardRequest {
        model_id: s(&proto["model_id"]),
        seq_id: u(&proto["seq_id"]) as i32,
        data,
        loss_fn: s(&proto["loss_fn"]),
        loss_fn_config: numbers("loss_fn_config"),
        forward_only: proto["forward_only"].as_bool().unwrap_or(false),
        loss_fn_config_v2: v2,
    }
}

fn compare_proto_body(
    built: &http::Request<Bytes>,
    expected: &wire::ForwardBackwardRequest,
    problems: &mut Vec<String>,
) {
    let raw = if built.headers().get("content-encoding").is_some() {
        match zstd::stream::decode_all(built.body().as_ref()) {
            Ok(raw) => raw,
            Err(e) => return problems.push(format!("our zstd body does not decompress: {e}")),
        }
    } else {
        built.body().to_vec()
    };
    match <wire::ForwardBackwardRequest as prost::Message>::decode(raw.as_slice()) {
        Ok(ours) if &ours == expected => {}
        Ok(ours) => problems.push(format!(
            "protobuf body differs:\n      theirs {expected:?}\n      ours   {ours:?}"
        )),
        Err(e) => problems.push(format!("our protobuf body does not decode: {e}")),
    }
}

fn s(v: &Value) -> String {
    v.as_str()
        .unwrap_or_else(|| panic!("expected a string, got {v}"))
        .to_owned()
}

fn u(v: &Value) -> u64 {
    v.as_u64()
        .unwrap_or_else(|| panic!("expected an integer, got {v}"))
}

fn opt_s(v: &Value) -> Option<String> {
    v.as_str().map(str::to_owned)
}

fn checkpoint_path(rest: &str) -> (TinkerPath, String) {
    // "<run>/checkpoints/<kind>/<name>[/<suffix>]"
    let parts: Vec<&str> = rest.split('/').collect();
    assert_eq!(parts[1], "checkpoints", "{rest}");
    let kind = CheckpointKind::from_segment(parts[2]).expect("kind");
    let path = TinkerPath::new(parts[0], kind, parts[3]).expect("tinker path");
    (path, parts[4..].join("/"))
}

fn access_scope(c: &Captured) -> AccessScope {
    match c.query_param("access_scope").as_deref() {
        Some("accessible") => AccessScope::Accessible,
        _ => AccessScope::Owned,
    }
}

/// Builds the call the SDK made, from its inputs.
fn rebuild(c: &Captured, ctx: &RequestContext, attempt: &AttemptHeaders) -> Option<Rebuilt> {
    let b = c.body();
    let is_025 = ctx.sdk_version() == "0.25.0";
    let build = |r: &dyn Fn() -> Result<http::Request<Bytes>, tinker_core::Error>| {
        r().unwrap_or_else(|e| panic!("{}: building failed: {e}", c.label()))
    };
    macro_rules! built {
        ($req:expr) => {{
            let req = $req;
            Some(Rebuilt::Json(build(&|| ctx.build(&req, attempt))))
        }};
    }
    let path = c.path.strip_prefix("/api/v1/")?;
    match (c.method.as_str(), path) {
        ("POST", "client/config") => built!(GetClientConfig::new(ctx.sdk_version())),
        ("POST", "client/dynamic_config") => built!(GetDynamicConfig::new(ctx.sdk_version())),
        ("POST", "auth/token") => built!(AuthTokenRequest {}),
        ("POST", "create_session") => {
            let mut req = CreateSessionRequest::new(ctx.sdk_version());
            req.tags = serde_json::from_value(b["tags"].clone()).unwrap();
            req.user_metadata = b["user_metadata"].as_object().cloned().unwrap_or_default();
            req.project_id = opt_s(&b["project_id"]);
            req.display_name = opt_s(&b["display_name"]);
            built!(req)
        }
        ("POST", "create_model") => {
            let l = &b["lora_config"];
            let mut lora = LoraConfig::new(u(&l["rank"]) as u32);
            if let Some(seed) = l["seed"].as_i64() {
                lora = lora.with_seed(seed);
            }
            let mut req = CreateModelRequest::new(
                s(&b["session_id"]),
                u(&b["model_seq_id"]),
                s(&b["base_model"]),
                lora,
            );
            req.user_metadata = b["user_metadata"].as_object().cloned();
            built!(if is_025 { req.as_sdk_025() } else { req })
        }
        ("POST", "get_info") => built!(GetInfoRequest::new(s(&b["model_id"]))),
        ("POST", "optim_step") => {
            let adam =
                AdamParams::with_learning_rate(b["adam_params"]["learning_rate"].as_f64().unwrap());
            built!(OptimStepRequest::new(
                s(&b["model_id"]),
                u(&b["seq_id"]),
                StepParams::Adam(adam)
            ))
        }
        ("POST", "save_weights") => {
            let mut req =
                SaveWeightsRequest::new(s(&b["model_id"]), u(&b["seq_id"]), s(&b["path"]));
            req.ttl_seconds = b["ttl_seconds"].as_u64();
            req.overwrite = b["overwrite"].as_bool().unwrap_or(false);
            built!(req)
        }
        ("POST", "save_weights_for_sampler") => {
            let (model, seq) = (s(&b["model_id"]), u(&b["seq_id"]));
            let req = match opt_s(&b["path"]) {
                Some(name) => SaveWeightsForSamplerRequest::named(model, seq, name),
                None => SaveWeightsForSamplerRequest::for_sampling_session(
                    model,
                    seq,
                    u(&b["sampling_session_seq_id"]),
                    SamplerSaveKind::Snapshot,
                ),
            };
            built!(if is_025 { req.as_sdk_025() } else { req })
        }
        ("POST", "asample") => {
            let tokens: Vec<i32> = b["prompt"]["chunks"]
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|c| {
                    c["tokens"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|t| t.as_i64().unwrap() as i32)
                })
                .collect();
            let p = &b["sampling_params"];
            let params = SamplingParams {
                max_tokens: p["max_tokens"].as_u64().map(|m| m as u32),
                seed: p["seed"].as_i64(),
                stop: (!p["stop"].is_null())
                    .then(|| serde_json::from_value(p["stop"].clone()).unwrap()),
                temperature: p["temperature"].as_f64().unwrap(),
                ..SamplingParams::default()
            };
            let mut req = SampleRequest::new(
                s(&b["sampling_session_id"]),
                u(&b["seq_id"]),
                ModelInput::from_tokens(tokens),
                params,
            );
            req.num_samples = u(&b["num_samples"]) as u32;
            req.prompt_logprobs = b["prompt_logprobs"].as_bool();
            req.topk_prompt_logprobs = u(&b["topk_prompt_logprobs"]) as u32;
            built!(if is_025 { req.as_sdk_025() } else { req })
        }
        ("POST", "create_sampling_session") => {
            let (sid, n) = (s(&b["session_id"]), u(&b["sampling_session_seq_id"]));
            built!(match opt_s(&b["model_path"]) {
                Some(p) => CreateSamplingSessionRequest::for_model_path(sid, n, p),
                None => CreateSamplingSessionRequest::for_base_model(sid, n, s(&b["base_model"])),
            })
        }
        ("POST", "join_sampling_session") => built!(JoinSamplingSessionRequest::new(s(
            &b["sampling_session_id"]
        ))),
        ("POST", "retrieve_future") => {
            let iteration: u64 = c
                .header("x-tinker-request-iteration")
                .unwrap()
                .parse()
                .unwrap();
            built!(RetrieveFuture {
                body: RetrieveFutureRequest {
                    request_id: s(&b["request_id"]),
                    allow_metadata_only: b["allow_metadata_only"].as_bool().unwrap(),
                },
                request_type: c
                    .header("x-tinker-request-type")
                    .and_then(RequestType::from_header_value),
                iteration,
                create_roundtrip_secs: (iteration == 0).then_some(0.0123),
            })
        }
        ("POST", "retrieve_futures") => {
            let t = &b["target"];
            let ids: Vec<String> =
                serde_json::from_value(b["retrieved_request_ids"].clone()).unwrap();
            let req = RetrieveFuturesRequest::long_poll(
                s(&t["sampling_session_id"]),
                u(&t["cloned_sampler_id"]),
                u(&b["prev_cursor"]),
                ids,
            );
            built!(if b["timeout"].as_f64() == Some(0.0) {
                req.ack_only()
            } else {
                req
            })
        }
        ("POST", "session_heartbeat") => built!(SessionHeartbeatRequest::new(s(&b["session_id"]))),
        ("POST", "telemetry") => {
            let req = SendTelemetry { body: b.clone() };
            Some(Rebuilt::Structure(build(&|| ctx.build(&req, attempt))))
        }
        ("POST", "weights_info") => built!(WeightsInfoRequest {
            tinker_path: s(&b["tinker_path"])
        }),
        ("POST", "copy_weights") => {
            let mut body = CopyWeightsRequest::to_project(
                s(&b["destination_project_id"]),
                s(&b["source_path"]),
            );
            body.ttl_seconds = b["ttl_seconds"].as_u64();
            built!(CopyWeights {
                body,
                weights_access_token: c.header("x-tinker-weights-access-token").map(str::to_owned),
            })
        }
        ("POST", "sessions/search") => built!(SessionSearchRequest {
            display_name: opt_s(&b["display_name"]),
            ..SessionSearchRequest::default()
        }),
        ("POST", "forward_backward") => {
            let proto = c.body_proto.as_ref().expect("decoded proto");
            let compressed = c.header("content-encoding") == Some("zstd");
            let body = encode_forward_backward_like(proto, compressed);
            let req = ForwardBackward {
                body: Bytes::from(body),
                compressed,
                forward_only: proto["forward_only"].as_bool().unwrap_or(false),
            };
            Some(Rebuilt::Proto(
                build(&|| ctx.build(&req, attempt)),
                expected_wire_request(proto),
            ))
        }
        ("GET", "get_server_capabilities") => built!(GetServerCapabilities),
        ("GET", "training_runs") => built!(ListTrainingRuns {
            limit: c.query_param("limit").unwrap().parse().unwrap(),
            offset: c.query_param("offset").unwrap().parse().unwrap(),
            access_scope: access_scope(c),
            project_id: c.query_param("project_id"),
        }),
        ("GET", "checkpoints") => built!(ListUserCheckpoints {
            limit: c.query_param("limit").unwrap().parse().unwrap(),
            offset: c.query_param("offset").unwrap().parse().unwrap(),
        }),
        ("GET", "sessions") => built!(ListSessions {
            limit: c.query_param("limit").unwrap().parse().unwrap(),
            offset: c.query_param("offset").unwrap().parse().unwrap(),
            access_scope: access_scope(c),
        }),
        ("GET", "audit") => built!(GetAuditLog {
            event_type: serde_json::from_value(Value::String(c.query_param("event_type").unwrap()))
                .unwrap(),
            day: c.query_param("day"),
        }),
        ("GET", "billing/usage/events") => built!(GetBillingUsage {
            starting_on: Timestamp::parse(&c.query_param("starting_on").unwrap()).unwrap(),
            ending_before: Timestamp::parse(&c.query_param("ending_before").unwrap()).unwrap(),
        }),
        ("GET", "billing/usage/checkpoints/current") => built!(GetCheckpointStorageUsage {
            project_id: c.query_param("project_id"),
        }),
        (method, p) => {
            if let Some(rest) = p.strip_prefix("samplers/") {
                return built!(GetSampler {
                    sampler_id: rest.to_owned()
                });
            }
            if let Some(rest) = p.strip_prefix("sessions/") {
                let (id, suffix) = rest.split_once('/').unwrap_or((rest, ""));
                let id = id.to_owned();
                return match (method, suffix) {
                    ("GET", "") => built!(GetSession {
                        session_id: id,
                        access_scope: access_scope(c)
                    }),
                    ("GET", "trace_export") => built!(ExportSessionTrace { session_id: id }),
                    ("PUT", "project") => built!(AssignSessionProject {
                        session_id: id,
                        body: AssignProjectRequest {
                            project_id: s(&b["project_id"])
                        },
                    }),
                    ("POST", "finish") => {
                        let reason: FinishReason =
                            serde_json::from_value(b["reason"]["type"].clone()).unwrap();
                        built!(FinishSession::new(id, reason, opt_s(&b["detail"])))
                    }
                    _ => None,
                };
            }
            if let Some(rest) = p.strip_prefix("training_runs/") {
                if !rest.contains('/') {
                    return built!(GetTrainingRun {
                        training_run_id: rest.to_owned(),
                        access_scope: access_scope(c)
                    });
                }
                if let Some(run) = rest.strip_suffix("/checkpoints") {
                    return built!(ListCheckpoints {
                        training_run_id: run.to_owned()
                    });
                }
                let (path, suffix) = checkpoint_path(rest);
                return match (method, suffix.as_str()) {
                    ("DELETE", "") => built!(DeleteCheckpoint { path }),
                    ("POST", "publish") => built!(PublishCheckpoint { path }),
                    ("DELETE", "publish") => built!(UnpublishCheckpoint { path }),
                    ("PUT", "ttl") => built!(SetCheckpointTtl {
                        path,
                        body: SetTtlRequest {
                            ttl_seconds: b["ttl_seconds"].as_u64()
                        },
                    }),
                    ("GET", "external_weights_urls") => built!(GetExternalWeightsUrls { path }),
                    _ => None,
                };
            }
            None
        }
    }
}

/// Headers whose values must match exactly.
const EXACT: &[&str] = &[
    "accept",
    "content-type",
    "content-encoding",
    "x-api-key",
    "x-sdk-version",
    "x-sdk-method",
    "x-stainless-retry-count",
    "x-stainless-read-timeout",
    "x-stainless-package-version",
    "x-stainless-raw-response",
    "x-tinker-request-iteration",
    "x-tinker-request-type",
    "x-tinker-sampling-backpressure",
    "x-tinker-weights-access-token",
    "cf-access-client-id",
    "cf-access-client-secret",
];

/// Headers whose values differ per run or per client implementation: compared by shape.
const SHAPE: &[&str] = &[
    "x-idempotency-key",
    "x-tinker-create-promise-roundtrip-time",
    "user-agent",
    "x-stainless-os",
    "x-stainless-arch",
    "x-stainless-runtime",
    "x-stainless-runtime-version",
    "x-stainless-async",
];

/// Set by the HTTP stack, not by the protocol core.
const TRANSPORT: &[&str] = &["host", "accept-encoding", "connection", "content-length"];

fn is_uuid4(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() == 5
        && [8, 4, 4, 4, 12]
            .iter()
            .zip(&parts)
            .all(|(n, p)| p.len() == *n && p.chars().all(|c| c.is_ascii_hexdigit()))
        && parts[2].starts_with('4')
}

fn compare_headers(c: &Captured, built: &http::Request<Bytes>, problems: &mut Vec<String>) {
    let theirs: BTreeMap<String, &str> = c
        .headers
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.as_str()))
        .collect();
    let ours: BTreeMap<String, &str> = built
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap()))
        .collect();
    let names: std::collections::BTreeSet<&String> = theirs.keys().chain(ours.keys()).collect();
    for name in names {
        let n = name.as_str();
        if TRANSPORT.contains(&n) {
            continue;
        }
        let (t, o) = (theirs.get(n), ours.get(n));
        if !EXACT.contains(&n) && !SHAPE.contains(&n) {
            problems.push(format!(
                "header {n} is not a known protocol header (theirs {t:?}, ours {o:?})"
            ));
            continue;
        }
        match (t, o) {
            (Some(_), None) => problems.push(format!("header {n} missing (theirs {t:?})")),
            (None, Some(_)) => {
                problems.push(format!("header {n} not sent by the SDK (ours {o:?})"))
            }
            (Some(t), Some(o)) if EXACT.contains(&n) && t != o => {
                problems.push(format!("header {n}: theirs {t:?}, ours {o:?}"))
            }
            (Some(t), Some(o)) if SHAPE.contains(&n) => {
                let ok = match n {
                    "x-idempotency-key" if is_uuid4(t) => is_uuid4(o),
                    "x-idempotency-key" => o.len() > 36 && is_uuid4(&o[o.len() - 36..]),
                    "x-tinker-create-promise-roundtrip-time" => {
                        o.parse::<f64>().is_ok_and(|x| x >= 0.0)
                    }
                    "user-agent" => o.starts_with("tinker-rs/") && o.contains("tinker-sdk"),
                    _ => !o.is_empty(),
                };
                if !ok {
                    problems.push(format!(
                        "header {n}: ours {o:?} does not have the shape of theirs {t:?}"
                    ));
                }
            }
            _ => {}
        }
    }
}

fn floats_close(a: f64, b: f64) -> bool {
    a == b || (a - b).abs() <= 1e-6 * a.abs().max(b.abs())
}

/// Compares JSON values; `structure_only` checks keys and value kinds, not values.
fn compare_json(
    at: &str,
    theirs: &Value,
    ours: &Value,
    structure_only: bool,
    problems: &mut Vec<String>,
) {
    match (theirs, ours) {
        (Value::Object(t), Value::Object(o)) => {
            for k in t.keys().chain(o.keys().filter(|k| !t.contains_key(*k))) {
                match (t.get(k), o.get(k)) {
                    (Some(tv), Some(ov)) => {
                        compare_json(&format!("{at}.{k}"), tv, ov, structure_only, problems)
                    }
                    (Some(_), None) => problems.push(format!("body {at}.{k} missing")),
                    (None, Some(_)) => problems.push(format!("body {at}.{k} not sent by the SDK")),
                    (None, None) => {}
                }
            }
        }
        (Value::Array(t), Value::Array(o)) => {
            if t.len() != o.len() {
                problems.push(format!("body {at}: {} items vs {}", t.len(), o.len()));
            }
            for (i, (tv, ov)) in t.iter().zip(o).enumerate() {
                compare_json(&format!("{at}[{i}]"), tv, ov, structure_only, problems);
            }
        }
        (Value::Number(t), Value::Number(o)) => {
            let same_kind = t.is_f64() == o.is_f64();
            let close = floats_close(t.as_f64().unwrap(), o.as_f64().unwrap());
            if !same_kind || (!structure_only && !close) {
                problems.push(format!("body {at}: theirs {t}, ours {o}"));
            }
        }
        (t, o) if structure_only => {
            if std::mem::discriminant(t) != std::mem::discriminant(o) {
                problems.push(format!("body {at}: theirs {t}, ours {o}"));
            }
        }
        (t, o) => {
            if t != o {
                problems.push(format!("body {at}: theirs {t}, ours {o}"));
            }
        }
    }
}

#[test]
fn every_captured_request_is_rebuilt_identically() {
    let captured = load();
    let mut covered = 0;
    let mut proto_bodies = 0;
    let mut structure_only = 0;
    let mut uncovered = Vec::new();
    let mut failures = Vec::new();

    for (n, c) in captured.iter().enumerate() {
        let credential =
            ApiKey::new(c.header("x-api-key").expect("x-api-key")).expect("captured key is valid");
        let sdk_version = c
            .header("x-stainless-package-version")
            .expect("package version");
        let ctx = RequestContext::new("http://127.0.0.1:18038", credential)
            .unwrap()
            .with_sdk_version(sdk_version);
        // The retry machine's choices, as the SDK made them on this attempt.
        let random = 0x1234_5678_9abc_def0_0fed_cba9_8765_4321u128 ^ n as u128;
        let key = if c.path == "/api/v1/copy_weights" {
            bare_uuid(random)
        } else {
            idempotency_key(random)
        };
        let mut attempt = if c.method == "GET" {
            AttemptHeaders::get()
        } else {
            AttemptHeaders::new(key)
        };
        attempt.retry_count = c
            .header("x-stainless-retry-count")
            .unwrap()
            .parse()
            .unwrap();
        if let Some(m) = c.header("x-sdk-method") {
            attempt = attempt.with_sdk_method(Cow::Owned(m.to_owned()));
        }

        let mut problems_early = Vec::new();
        let Some(rebuilt) = rebuild(c, &ctx, &attempt) else {
            uncovered.push(c.label());
            continue;
        };
        covered += 1;
        let (built, body_mode) = match rebuilt {
            Rebuilt::Json(r) => (r, Some(false)),
            Rebuilt::Structure(r) => {
                structure_only += 1;
                (r, Some(true))
            }
            Rebuilt::Proto(r, expected) => {
                proto_bodies += 1;
                compare_proto_body(&r, &expected, &mut problems_early);
                (r, None)
            }
        };

        let mut problems = problems_early;
        if built.method().as_str() != c.method {
            problems.push(format!("method {} vs {}", c.method, built.method()));
        }
        let uri = built.uri();
        if uri.path() != c.path {
            problems.push(format!("path: theirs {}, ours {}", c.path, uri.path()));
        }
        if uri.query().unwrap_or("") != c.query {
            problems.push(format!(
                "query: theirs {:?}, ours {:?}",
                c.query,
                uri.query().unwrap_or("")
            ));
        }
        compare_headers(c, &built, &mut problems);
        if let Some(structure) = body_mode {
            match &c.body {
                Some(theirs) => match serde_json::from_slice::<Value>(built.body()) {
                    Ok(ours) => compare_json("$", theirs, &ours, structure, &mut problems),
                    Err(e) => problems.push(format!("our body is not JSON: {e}")),
                },
                None if !built.body().is_empty() => {
                    problems.push("the SDK sent no body; ours has one".into())
                }
                None => {}
            }
        }
        if !problems.is_empty() {
            failures.push(format!("{}\n    {}", c.label(), problems.join("\n    ")));
        }
    }

    println!("captures: covered {covered} of {} requests", captured.len());
    println!(
        "  bodies compared exactly: {}",
        covered - proto_bodies - structure_only
    );
    println!("  telemetry bodies compared by structure: {structure_only}");
    println!("  forward_backward protobuf bodies compared message for message: {proto_bodies}");
    for u in &uncovered {
        println!("  uncovered: {u}");
    }
    assert!(
        failures.is_empty(),
        "{} request(s) differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(
        uncovered.is_empty(),
        "{} captured request(s) have no replay",
        uncovered.len()
    );
}
