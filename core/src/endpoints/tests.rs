//! Request building and response decoding, scenario by scenario.

use std::borrow::Cow;

use bytes::Bytes;
use http::header::HeaderMap;
use serde_json::json;

use super::*;
use crate::path::TinkerPath;
use crate::types::*;

fn ctx(base: &str) -> RequestContext {
    RequestContext::new(base, ApiKey::new("tml-test-key-0001").unwrap()).unwrap()
}

fn attempt() -> AttemptHeaders {
    AttemptHeaders::new(idempotency_key(7))
}

fn header<'a>(r: &'a http::Request<Bytes>, name: &str) -> Option<&'a str> {
    r.headers().get(name).map(|v| v.to_str().unwrap())
}

#[test]
fn a_base_url_with_a_path_and_trailing_slash_is_joined_once() {
    let c = ctx("https://tinker.example.dev/services/tinker-prod/");
    let r = c.build(&GetInfoRequest::new("m"), &attempt()).unwrap();
    assert_eq!(
        r.uri(),
        "https://tinker.example.dev/services/tinker-prod/api/v1/get_info"
    );
}

#[test]
fn malformed_base_urls_are_configuration_errors() {
    for bad in [
        "",
        "tinker.example.dev",
        "ftp://x/y",
        "http://",
        "http://h/p?q=1",
    ] {
        let err = RequestContext::new(bad, ApiKey::new("tml-k").unwrap()).unwrap_err();
        assert!(matches!(err, Error::Config(_)), "{bad}: {err}");
    }
}

#[test]
fn ids_with_colons_and_checkpoint_ids_with_slashes_go_in_unescaped() {
    let path = TinkerPath::parse("tinker://sess-0001:train:0/weights/step-1").unwrap();
    let r = ctx("http://h")
        .build(&PublishCheckpoint { path }, &attempt())
        .unwrap();
    assert_eq!(
        r.uri().path(),
        "/api/v1/training_runs/sess-0001:train:0/checkpoints/weights/step-1/publish"
    );
    assert_eq!(r.method(), http::Method::POST);
    // Bodiless POST: empty body but still a JSON content type and an idempotency key.
    assert!(r.body().is_empty());
    assert_eq!(header(&r, "content-type"), Some("application/json"));
    assert!(header(&r, "x-idempotency-key").is_some());
}

#[test]
fn ids_that_would_break_the_url_are_rejected_before_sending() {
    let err = ctx("http://h")
        .build(
            &GetSession {
                session_id: "a/b".into(),
                access_scope: AccessScope::Owned,
            },
            &AttemptHeaders::get(),
        )
        .unwrap_err();
    assert!(
        matches!(err, Error::InvalidInput { .. }) && err.to_string().contains("session_id"),
        "{err}"
    );
    let err = ctx("http://h")
        .build(
            &GetSampler {
                sampler_id: String::new(),
            },
            &AttemptHeaders::get(),
        )
        .unwrap_err();
    assert!(err.to_string().contains("sampler_id"), "{err}");
}

#[test]
fn queries_are_encoded_like_the_sdk_and_nulls_dropped() {
    let r = ctx("http://h")
        .build(
            &GetBillingUsage {
                starting_on: Timestamp::parse("2026-07-13T00:00:00Z").unwrap(),
                ending_before: Timestamp::parse("2026-07-14T00:00:00Z").unwrap(),
            },
            &AttemptHeaders::get(),
        )
        .unwrap();
    assert_eq!(
        r.uri().query(),
        Some("starting_on=2026-07-13T00%3A00%3A00Z&ending_before=2026-07-14T00%3A00%3A00Z")
    );
    let r = ctx("http://h")
        .build(&ListTrainingRuns::default(), &AttemptHeaders::get())
        .unwrap();
    assert_eq!(
        r.uri().query(),
        Some("limit=20&offset=0&access_scope=owned")
    );
    let r = ctx("http://h")
        .build(
            &GetCheckpointStorageUsage::default(),
            &AttemptHeaders::get(),
        )
        .unwrap();
    assert_eq!(r.uri().query(), None);
    assert_eq!(
        encode_query(&[("q", Some("a b&c=d/é".into())), ("x", None)]),
        "q=a+b%26c%3Dd%2F%C3%A9"
    );
}

#[test]
fn gets_carry_no_content_type_and_no_idempotency_key() {
    let r = ctx("http://h")
        .build(&GetServerCapabilities, &AttemptHeaders::get())
        .unwrap();
    assert_eq!(r.method(), http::Method::GET);
    assert_eq!(header(&r, "content-type"), None);
    assert_eq!(header(&r, "x-idempotency-key"), None);
    assert_eq!(header(&r, "accept"), Some("application/json"));
    assert_eq!(header(&r, "x-stainless-read-timeout"), Some("60"));
}

#[test]
fn a_non_get_without_an_idempotency_key_is_refused() {
    let err = ctx("http://h")
        .build(&GetInfoRequest::new("m"), &AttemptHeaders::get())
        .unwrap_err();
    assert!(err.to_string().contains("idempotency"), "{err}");
}

#[test]
fn the_common_headers_name_tinker_rs_honestly_and_carry_the_sdk_version() {
    let c = ctx("http://h")
        .with_sdk_version("0.38.0")
        .with_platform(Platform::current("1.89.0", "async:tokio"));
    let r = c
        .build(
            &GetInfoRequest::new("m"),
            &attempt()
                .with_sdk_method("TrainingClient.get_info")
                .with_retry_count(2),
        )
        .unwrap();
    assert_eq!(
        header(&r, "user-agent"),
        Some(&*format!(
            "tinker-rs/{} (compatible; tinker-sdk 0.38.0)",
            env!("CARGO_PKG_VERSION")
        ))
    );
    assert_eq!(header(&r, "x-stainless-package-version"), Some("0.38.0"));
    assert_eq!(header(&r, "x-stainless-runtime"), Some("rust"));
    assert_eq!(header(&r, "x-stainless-runtime-version"), Some("1.89.0"));
    assert_eq!(header(&r, "x-stainless-async"), Some("async:tokio"));
    assert_eq!(header(&r, "x-sdk-version"), Some("0.38.0"));
    assert_eq!(header(&r, "x-sdk-method"), Some("TrainingClient.get_info"));
    assert_eq!(header(&r, "x-stainless-retry-count"), Some("2"));
    assert!(r.headers()["x-api-key"].is_sensitive());
    let background = c
        .build(&SessionHeartbeatRequest::new("s"), &attempt())
        .unwrap();
    assert_eq!(header(&background, "x-sdk-method"), None);
    assert_eq!(header(&background, "x-sdk-version"), None);
    assert_eq!(header(&background, "x-stainless-read-timeout"), Some("10"));
}

#[test]
fn defaults_and_overrides_apply_but_cannot_replace_protocol_headers() {
    let c = ctx("http://h")
        .with_default_header("CF-Access-Client-Id", "cf-id")
        .unwrap()
        .with_header_override("X-Team", "research")
        .unwrap()
        .with_header_override("x-api-key", "tml-hijack")
        .unwrap()
        .with_header_override("x-stainless-os", "Plan9")
        .unwrap();
    let r = c.build(&GetInfoRequest::new("m"), &attempt()).unwrap();
    assert_eq!(header(&r, "cf-access-client-id"), Some("cf-id"));
    assert_eq!(header(&r, "x-team"), Some("research"));
    assert_eq!(header(&r, "x-api-key"), Some("tml-test-key-0001"));
    assert_eq!(header(&r, "x-stainless-os"), Some("Plan9"));
    assert!(c.clone().with_header_override("bad header", "v").is_err());
}

#[test]
fn settings_feed_the_context() {
    let settings = crate::settings::Settings::from_env_with(|k| match k {
        "TINKER_API_KEY" => Some("tml-env-key".into()),
        "TINKER_BASE_URL" => Some("http://127.0.0.1:9/".into()),
        "CLOUDFLARE_ACCESS_CLIENT_SECRET" => Some("cf-secret".into()),
        _ => None,
    })
    .unwrap()
    .with_sdk_version("0.25.0");
    let c = RequestContext::from_settings(&settings).unwrap();
    let r = c
        .build(&GetClientConfig::new(c.sdk_version()), &attempt())
        .unwrap();
    assert_eq!(r.uri(), "http://127.0.0.1:9/api/v1/client/config");
    assert_eq!(r.body().as_ref(), br#"{"sdk_version":"0.25.0"}"#);
    assert!(r.headers()["cf-access-client-secret"].is_sensitive());
    assert!(RequestContext::from_settings(&crate::settings::Settings::default()).is_err());
}

#[test]
fn forward_backward_sends_protobuf_and_zstd_when_compressed() {
    let plain = ForwardBackward {
        body: Bytes::from_static(b"\x0a\x02hi"),
        compressed: false,
        forward_only: false,
    };
    let r = ctx("http://h").build(&plain, &attempt()).unwrap();
    assert_eq!(header(&r, "content-type"), Some("application/x-protobuf"));
    assert_eq!(header(&r, "content-encoding"), None);
    assert_eq!(header(&r, "accept"), Some("application/json"));
    assert_eq!(r.body().as_ref(), b"\x0a\x02hi");
    assert_eq!(plain.request_type(), Some(RequestType::ForwardBackward));
    let zstd = ForwardBackward {
        compressed: true,
        forward_only: true,
        ..plain
    };
    let r = ctx("http://h").build(&zstd, &attempt()).unwrap();
    assert_eq!(header(&r, "content-encoding"), Some("zstd"));
    assert_eq!(zstd.request_type(), Some(RequestType::Forward));
}

#[test]
fn polls_carry_iteration_type_roundtrip_and_protobuf_accept() {
    let first = RetrieveFuture::first("req-0001", RequestType::Sample, 0.012891769409179688);
    let r = ctx("http://h").build(&first, &attempt()).unwrap();
    assert_eq!(
        r.body().as_ref(),
        br#"{"request_id":"req-0001","allow_metadata_only":true}"#
    );
    assert_eq!(header(&r, "accept"), Some("application/x-protobuf"));
    assert_eq!(header(&r, "x-tinker-request-iteration"), Some("0"));
    assert_eq!(header(&r, "x-tinker-request-type"), Some("Sample"));
    assert_eq!(
        header(&r, "x-tinker-create-promise-roundtrip-time"),
        Some("0.012891769409179688")
    );
    assert_eq!(header(&r, "x-stainless-raw-response"), Some("raw"));
    assert_eq!(header(&r, "x-stainless-read-timeout"), Some("45"));
    let second = first.next(false);
    let r = ctx("http://h").build(&second, &attempt()).unwrap();
    assert_eq!(header(&r, "x-tinker-request-iteration"), Some("1"));
    assert_eq!(header(&r, "x-tinker-create-promise-roundtrip-time"), None);
    assert!(r.body().ends_with(br#""allow_metadata_only":false}"#));
    let json_poll = RetrieveFuture::first("req-2", RequestType::OptimStep, 1.0);
    let r = ctx("http://h").build(&json_poll, &attempt()).unwrap();
    assert_eq!(header(&r, "accept"), Some("application/json"));
    assert_eq!(
        header(&r, "x-tinker-create-promise-roundtrip-time"),
        Some("1.0")
    );
}

#[test]
fn ack_only_polls_use_the_short_timeout() {
    let poll = RetrieveFuturesRequest::long_poll("s:sample:0", 0, 0, vec![]);
    let r = ctx("http://h").build(&poll, &attempt()).unwrap();
    assert_eq!(header(&r, "x-stainless-read-timeout"), Some("45.0"));
    let r = ctx("http://h").build(&poll.ack_only(), &attempt()).unwrap();
    assert_eq!(header(&r, "x-stainless-read-timeout"), Some("5.0"));
}

#[test]
fn asample_asks_for_backpressure_and_copy_weights_sends_the_access_token() {
    let sample = SampleRequest::new(
        "s:sample:0",
        0,
        ModelInput::from_tokens(vec![1]),
        SamplingParams::default(),
    );
    let r = ctx("http://h").build(&sample, &attempt()).unwrap();
    assert_eq!(header(&r, "x-tinker-sampling-backpressure"), Some("1"));
    let copy = CopyWeights {
        body: CopyWeightsRequest::to_project("proj-1", "tinker://run/weights/x"),
        weights_access_token: Some("tml-other-key".into()),
    };
    let key = bare_uuid(42);
    let r = ctx("http://h")
        .build(&copy, &AttemptHeaders::new(key.clone()))
        .unwrap();
    assert_eq!(
        header(&r, "x-tinker-weights-access-token"),
        Some("tml-other-key")
    );
    assert!(r.headers()["x-tinker-weights-access-token"].is_sensitive());
    assert_eq!(header(&r, "x-idempotency-key"), Some(key.as_str()));
    assert!(header(&r, "x-tinker-sampling-backpressure").is_none());
}

#[test]
fn the_cli_key_endpoints_use_a_bare_client() {
    let r = ctx("http://h")
        .build(&GetApiKey, &AttemptHeaders::get())
        .unwrap();
    let names: Vec<&str> = r.headers().keys().map(|k| k.as_str()).collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert_eq!(header(&r, "x-api-key"), Some("tml-test-key-0001"));
    let r = ctx("http://h")
        .build(&RevokeApiKey, &AttemptHeaders::get())
        .unwrap();
    assert_eq!(r.method(), http::Method::DELETE);
    assert_eq!(header(&r, "x-idempotency-key"), None);
}

#[test]
fn explicit_nulls_survive_in_hand_built_bodies() {
    let path = TinkerPath::parse("tinker://run/weights/x").unwrap();
    let r = ctx("http://h")
        .build(
            &SetCheckpointTtl {
                path,
                body: SetTtlRequest { ttl_seconds: None },
            },
            &attempt(),
        )
        .unwrap();
    assert_eq!(r.method(), http::Method::PUT);
    assert_eq!(r.body().as_ref(), br#"{"ttl_seconds":null}"#);
    let r = ctx("http://h")
        .build(
            &FinishSession::new("sess-0001", FinishReason::Errored, None),
            &attempt(),
        )
        .unwrap();
    assert_eq!(r.uri().path(), "/api/v1/sessions/sess-0001/finish");
    assert_eq!(
        r.body().as_ref(),
        br#"{"reason":{"type":"errored"},"detail":null}"#
    );
}

/// A deferred build, so each case can fail on its own.
type BuildFn<'a> = dyn Fn() -> Result<http::Request<Bytes>> + 'a;

#[test]
fn user_input_is_validated_before_anything_is_built() {
    let c = ctx("http://h");
    let cases: Vec<(Box<BuildFn<'_>>, &str)> = vec![
        (
            Box::new(|| {
                c.build(
                    &CreateModelRequest::new("s", 0, "Qwen/Qwen3-8B", LoraConfig::new(0)),
                    &attempt(),
                )
            }),
            "lora_config.rank",
        ),
        (
            Box::new(|| {
                let p = SamplingParams {
                    top_p: 0.0,
                    ..SamplingParams::default()
                };
                c.build(
                    &SampleRequest::new("s:sample:0", 0, ModelInput::from_tokens(vec![1]), p),
                    &attempt(),
                )
            }),
            "top_p",
        ),
        (
            Box::new(|| {
                c.build(
                    &CreateSamplingSessionRequest::for_model_path("s", 0, "/tmp/weights"),
                    &attempt(),
                )
            }),
            "tinker://",
        ),
        (
            Box::new(|| {
                c.build(
                    &WeightsInfoRequest {
                        tinker_path: "tinker://r/bad/x".into(),
                    },
                    &attempt(),
                )
            }),
            "checkpoint kind",
        ),
        (
            Box::new(|| {
                let path = TinkerPath::parse("tinker://r/weights/x").unwrap();
                c.build(
                    &SetCheckpointTtl {
                        path,
                        body: SetTtlRequest {
                            ttl_seconds: Some(59),
                        },
                    },
                    &attempt(),
                )
            }),
            "ttl_seconds",
        ),
        (
            Box::new(|| {
                let path = TinkerPath::parse("tinker://r/weights/x").unwrap();
                c.build(&GetExternalWeightsUrls { path }, &AttemptHeaders::get())
            }),
            "external_weights",
        ),
        (
            Box::new(|| {
                let t = |s: &str| Timestamp::parse(s).unwrap();
                c.build(
                    &GetBillingUsage {
                        starting_on: t("2026-07-01T00:00:00Z"),
                        ending_before: t("2026-07-20T00:00:00Z"),
                    },
                    &AttemptHeaders::get(),
                )
            }),
            "14 days",
        ),
        (
            Box::new(|| {
                let t = |s: &str| Timestamp::parse(s).unwrap();
                c.build(
                    &GetBillingUsage {
                        starting_on: t("2026-07-01T00:30:00Z"),
                        ending_before: t("2026-07-02T00:00:00Z"),
                    },
                    &AttemptHeaders::get(),
                )
            }),
            "whole hour",
        ),
        (
            Box::new(|| {
                c.build(
                    &GetAuditLog {
                        event_type: AuditEventType::All,
                        day: Some("yesterday".into()),
                    },
                    &AttemptHeaders::get(),
                )
            }),
            "YYYY-MM-DD",
        ),
        (
            Box::new(|| {
                c.build(
                    &ListTrainingRuns {
                        limit: 0,
                        ..Default::default()
                    },
                    &AttemptHeaders::get(),
                )
            }),
            "limit",
        ),
        (
            Box::new(|| {
                c.build(
                    &ForwardBackward {
                        body: Bytes::new(),
                        compressed: false,
                        forward_only: false,
                    },
                    &attempt(),
                )
            }),
            "empty",
        ),
    ];
    for (build, expected) in cases {
        let err = build().unwrap_err();
        assert!(
            matches!(err, Error::InvalidInput { .. }),
            "{expected}: {err}"
        );
        assert!(
            err.to_string().contains(expected),
            "expected {expected:?} in {err}"
        );
    }
}

#[test]
fn error_statuses_keep_the_body_verbatim_and_the_server_log_id() {
    let mut headers = HeaderMap::new();
    headers.insert("x-request-id", "log-abc".parse().unwrap());
    let req = GetSession {
        session_id: "sess-0001".into(),
        access_scope: AccessScope::Owned,
    };
    let err =
        decode_response(&req, 404, &headers, br#"{"detail": "no such session"}"#).unwrap_err();
    match &err {
        Error::Status(s) => {
            assert_eq!(s.status, 404);
            assert_eq!(s.body, r#"{"detail": "no such session"}"#);
            assert_eq!(s.endpoint, "/api/v1/sessions/sess-0001");
            assert_eq!(s.server_log_id.as_deref(), Some("log-abc"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(err.kind(), crate::ErrorKind::NotFound);
    let empty_400 = decode_response(&req, 400, &HeaderMap::new(), b"").unwrap_err();
    assert_eq!(empty_400.kind(), crate::ErrorKind::Transport);
}

#[test]
fn ignored_results_accept_any_2xx_with_or_without_a_body() {
    let path = TinkerPath::parse("tinker://r/weights/x").unwrap();
    let del = DeleteCheckpoint { path };
    for (status, body) in [(204, &b""[..]), (200, b"{}"), (200, b"not even json")] {
        assert_eq!(
            decode_response(&del, status, &HeaderMap::new(), body).unwrap(),
            Ignored
        );
    }
    let cancel = CancelFutureRequest {
        request_id: "r".into(),
    };
    assert_eq!(
        decode_response(&cancel, 200, &HeaderMap::new(), b"").unwrap(),
        Ignored
    );
}

#[test]
fn direct_replies_decode_strictly_and_name_the_missing_field() {
    let req = GetSampler {
        sampler_id: "s:sample:0".into(),
    };
    let ok = decode_response(
        &req,
        200,
        &HeaderMap::new(),
        br#"{"sampler_id": "s:sample:0", "base_model": "b", "extra": 1}"#,
    )
    .unwrap();
    assert_eq!(ok.base_model, "b");
    let err = decode_response(
        &req,
        200,
        &HeaderMap::new(),
        br#"{"sampler_id": "s:sample:0"}"#,
    )
    .unwrap_err();
    assert!(matches!(err, Error::Decode { .. }));
    assert!(
        err.to_string().contains("SamplerInfo") && err.to_string().contains("base_model"),
        "{err}"
    );
    let fut = decode_response(
        &CreateModelRequest::new("s", 0, "b", LoraConfig::default()),
        200,
        &HeaderMap::new(),
        br#"{"request_id": "req-0"}"#,
    )
    .unwrap();
    assert_eq!(fut.request_id, "req-0");
    let token = decode_response(&AuthTokenRequest {}, 200, &HeaderMap::new(), b"{}").unwrap_err();
    assert!(token.to_string().contains("jwt"), "{token}");
}

#[test]
fn uuids_have_the_version_and_variant_bits() {
    for r in [0u128, u128::MAX, 0x0123_4567_89ab_cdef_0123_4567_89ab_cdef] {
        let u = bare_uuid(r);
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4", "{u}");
        assert!(matches!(&u[19..20], "8" | "9" | "a" | "b"), "{u}");
    }
    assert_ne!(bare_uuid(1), bare_uuid(2));
    assert!(idempotency_key(3).starts_with("tinker-rs-retry-"));
}

#[test]
fn every_endpoint_has_a_typed_request_whose_path_fills_its_template() {
    let path = || TinkerPath::parse("tinker://run:train:0/sampler_weights/s1").unwrap();
    let ext = || TinkerPath::parse("tinker://run:train:0/external_weights/e1").unwrap();
    let t = |s: &str| Timestamp::parse(s).unwrap();
    let requests: Vec<Box<dyn ApiRequestDyn>> = vec![
        Box::new(GetClientConfig::new("0.38.0")),
        Box::new(GetDynamicConfig::new("0.38.0")),
        Box::new(AuthTokenRequest {}),
        Box::new(Healthz),
        Box::new(GetServerCapabilities),
        Box::new(CreateSessionRequest::new("0.38.0")),
        Box::new(SessionHeartbeatRequest::new("s")),
        Box::new(FinishSession::new("s", FinishReason::Success, None)),
        Box::new(SendTelemetry {
            body: json!({"events": []}),
        }),
        Box::new(CreateModelRequest::new("s", 0, "b", LoraConfig::default())),
        Box::new(GetInfoRequest::new("m")),
        Box::new(UnloadModelRequest::new("m")),
        Box::new(ForwardBackward {
            body: Bytes::from_static(b"x"),
            compressed: false,
            forward_only: false,
        }),
        Box::new(OptimStepRequest::new(
            "m",
            1,
            StepParams::Adam(AdamParams::default()),
        )),
        Box::new(LoadWeightsRequest::onto_model(
            "m",
            1,
            "tinker://r/weights/x",
            true,
        )),
        Box::new(SaveWeightsRequest::new("m", 1, "n")),
        Box::new(SaveWeightsForSamplerRequest::named("m", 1, "n")),
        Box::new(SaveWeightsExternalRequest::new("m", 1, "n")),
        Box::new(CreateCustomLossRequest {
            session_id: "s".into(),
            custom_loss_seq_id: 0,
            name: "l".into(),
            inputs: vec![CustomLossInput {
                name: "logprobs".into(),
                rank: 1,
            }],
            graph: CustomLossGraph {
                format: 1,
                nodes: vec![],
            },
            kind: Default::default(),
        }),
        Box::new(CopyWeights {
            body: CopyWeightsRequest::to_project("p", "tinker://r/weights/x"),
            weights_access_token: None,
        }),
        Box::new(CreateSamplingSessionRequest::for_base_model("s", 0, "b")),
        Box::new(JoinSamplingSessionRequest::new("s:sample:0")),
        Box::new(SampleRequest::new(
            "s:sample:0",
            0,
            ModelInput::from_tokens(vec![1]),
            SamplingParams::default(),
        )),
        Box::new(GetSampler {
            sampler_id: "s:sample:0".into(),
        }),
        Box::new(RetrieveFuture::first("r", RequestType::CreateModel, 0.1)),
        Box::new(RetrieveFuturesRequest::long_poll(
            "s:sample:0",
            0,
            0,
            vec![],
        )),
        Box::new(CancelFutureRequest {
            request_id: "r".into(),
        }),
        Box::new(ListTrainingRuns::default()),
        Box::new(GetTrainingRun {
            training_run_id: "run:train:0".into(),
            access_scope: AccessScope::Owned,
        }),
        Box::new(ListCheckpoints {
            training_run_id: "run:train:0".into(),
        }),
        Box::new(DeleteCheckpoint { path: path() }),
        Box::new(GetCheckpointArchiveUrl { path: path() }),
        Box::new(GetExternalWeightsUrls { path: ext() }),
        Box::new(PublishCheckpoint { path: path() }),
        Box::new(UnpublishCheckpoint { path: path() }),
        Box::new(SetCheckpointTtl {
            path: path(),
            body: SetTtlRequest {
                ttl_seconds: Some(3600),
            },
        }),
        Box::new(ListUserCheckpoints::default()),
        Box::new(WeightsInfoRequest {
            tinker_path: "tinker://r/weights/x".into(),
        }),
        Box::new(ListSessions::default()),
        Box::new(GetSession {
            session_id: "s".into(),
            access_scope: AccessScope::Owned,
        }),
        Box::new(AssignSessionProject {
            session_id: "s".into(),
            body: AssignProjectRequest {
                project_id: "p".into(),
            },
        }),
        Box::new(ExportSessionTrace {
            session_id: "s".into(),
        }),
        Box::new(SessionSearchRequest::default()),
        Box::new(GetAuditLog::default()),
        Box::new(GetBillingUsage {
            starting_on: t("2026-07-13T00:00:00Z"),
            ending_before: t("2026-07-14T00:00:00Z"),
        }),
        Box::new(GetCheckpointStorageUsage::default()),
        Box::new(GetApiKey),
        Box::new(RevokeApiKey),
    ];
    let c = ctx("http://h");
    let mut seen = std::collections::BTreeSet::new();
    for req in &requests {
        let spec = req.spec();
        let attempt = if spec.method == HttpMethod::Get || spec.bare_client {
            AttemptHeaders::get()
        } else {
            attempt()
        };
        let built = req
            .build_with(&c, &attempt)
            .unwrap_or_else(|e| panic!("{:?}: {e}", spec.id));
        assert_eq!(built.method(), spec.method.to_http(), "{:?}", spec.id);
        // Every `{placeholder}` was filled and the literal parts of the template are kept.
        let path = built.uri().path().to_owned();
        let literal: Vec<&str> = spec.path.split(['{', '}']).step_by(2).collect();
        let mut rest = path.as_str();
        for part in literal {
            let at = rest
                .find(part)
                .unwrap_or_else(|| panic!("{:?}: {path} lacks {part}", spec.id));
            rest = &rest[at + part.len()..];
        }
        assert!(!path.contains('{'), "{path}");
        let has_body = !built.body().is_empty();
        assert_eq!(has_body, spec.body != BodyKind::None, "{:?} body", spec.id);
        seen.insert(spec.id as usize);
    }
    assert_eq!(
        seen.len(),
        ENDPOINTS.len(),
        "one typed request per endpoint"
    );
}

/// Object-safe view of [`ApiRequest`] for the table-wide test above.
trait ApiRequestDyn {
    fn spec(&self) -> &'static EndpointSpec;
    fn build_with(&self, c: &RequestContext, a: &AttemptHeaders) -> Result<http::Request<Bytes>>;
}

impl<R: ApiRequest> ApiRequestDyn for R {
    fn spec(&self) -> &'static EndpointSpec {
        self.endpoint()
    }
    fn build_with(&self, c: &RequestContext, a: &AttemptHeaders) -> Result<http::Request<Bytes>> {
        c.build(self, a)
    }
}

#[test]
fn render_path_reports_missing_and_extra_parameters() {
    let spec = EndpointId::GetSession.spec();
    assert!(render_path(spec, &[]).is_err());
    assert!(render_path(spec, &[Cow::Borrowed("a"), Cow::Borrowed("b")]).is_err());
    assert_eq!(
        render_path(spec, &[Cow::Borrowed("a")]).unwrap(),
        "/api/v1/sessions/a"
    );
}
