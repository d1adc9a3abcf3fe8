//! The endpoint table: every operation of protocol.md section 5, as data the call and retry
//! machines consult.

use std::time::Duration;

use crate::types::RequestType;

/// HTTP method of an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HttpMethod {
    /// GET (no body, no `Content-Type`, no idempotency key).
    Get,
    /// POST.
    Post,
    /// PUT.
    Put,
    /// DELETE.
    Delete,
}

impl HttpMethod {
    /// The `http` crate's method.
    pub fn to_http(self) -> http::Method {
        match self {
            HttpMethod::Get => http::Method::GET,
            HttpMethod::Post => http::Method::POST,
            HttpMethod::Put => http::Method::PUT,
            HttpMethod::Delete => http::Method::DELETE,
        }
    }

    /// The method name.
    pub fn as_str(self) -> &'static str {
        match self {
            HttpMethod::Get => "GET",
            HttpMethod::Post => "POST",
            HttpMethod::Put => "PUT",
            HttpMethod::Delete => "DELETE",
        }
    }
}

/// What a request body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BodyKind {
    /// JSON (`Content-Type: application/json`).
    Json,
    /// Protobuf (`Content-Type: application/x-protobuf`), possibly zstd-compressed.
    Protobuf,
    /// No body. Non-GET bodiless requests still send `Content-Type: application/json`.
    None,
}

/// What a successful reply is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reply {
    /// A JSON document to decode into the request's response type.
    Json,
    /// Content ignored; any 2xx with or without a body is success.
    Ignored,
    /// An untyped future (`{"request_id": ...}`) to poll; the result will be of this type.
    Future(Option<RequestType>),
    /// The reply of a future poll (`retrieve_future`, `retrieve_futures`).
    Poll,
}

/// Which retry layers apply (protocol.md 8.1). `http` = layer H (10 retries with back-off);
/// `holder` = layer X (`execute_with_retries`); `sampling` = layer R; `own` describes an
/// endpoint-specific loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RetryLayers {
    /// Layer H: HTTP-level retries (false = H0, disabled).
    pub http: bool,
    /// Layer X: holder-level retries with a new idempotency key.
    pub holder: bool,
    /// Layer R: the sampling retry handler (whole-sample resubmission).
    pub sampling: bool,
    /// An endpoint-specific loop, described.
    pub own: Option<&'static str>,
}

/// Which SDK versions have the endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Availability {
    /// 0.25 and 0.38.
    Both,
    /// 0.38 only.
    Since038,
    /// 0.25 only (removed in 0.38).
    Only025,
}

/// How the idempotency key of a non-GET request lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IdempotencyRule {
    /// `stainless-…-retry-<uuid4>`: one per logical call, kept across HTTP-layer retries, new for
    /// each holder-level retry.
    PerAttemptChain,
    /// `copy_weights`: a bare uuid4 reused across every retry layer.
    FixedBareUuid,
    /// Not sent (GET requests and the CLI's bare-client calls).
    None,
}

/// A per-read timeout, plus how the SDK formats it in `x-stainless-read-timeout` (`60` for an
/// integer setting, `5.0` for a float one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ReadTimeout {
    /// Whole seconds.
    pub seconds: u32,
    /// Format as a float (`45.0`) rather than an integer (`45`).
    pub float_style: bool,
}

impl ReadTimeout {
    /// An integer-formatted timeout.
    pub const fn secs(seconds: u32) -> ReadTimeout {
        ReadTimeout {
            seconds,
            float_style: false,
        }
    }

    /// A float-formatted timeout.
    pub const fn secs_f(seconds: u32) -> ReadTimeout {
        ReadTimeout {
            seconds,
            float_style: true,
        }
    }

    /// The duration.
    pub fn duration(self) -> Duration {
        Duration::from_secs(u64::from(self.seconds))
    }

    /// The `x-stainless-read-timeout` header value.
    pub fn header_value(self) -> String {
        if self.float_style {
            format!("{}.0", self.seconds)
        } else {
            self.seconds.to_string()
        }
    }
}

/// One operation of the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EndpointSpec {
    /// Which operation.
    pub id: EndpointId,
    /// HTTP method.
    pub method: HttpMethod,
    /// Path template relative to the base URL, with `{placeholders}` filled in order.
    pub path: &'static str,
    /// Request body encoding.
    pub body: BodyKind,
    /// What a successful reply is.
    pub reply: Reply,
    /// Retry layers.
    pub retries: RetryLayers,
    /// Default per-read timeout.
    pub read_timeout: ReadTimeout,
    /// Versions having it.
    pub availability: Availability,
    /// Idempotency key rule.
    pub idempotency: IdempotencyRule,
    /// Sends `X-Tinker-Sampling-Backpressure: 1` (asample).
    pub sampling_backpressure: bool,
    /// Sent by the CLI through a bare HTTP client: only `X-API-Key` and a user agent.
    pub bare_client: bool,
}

macro_rules! endpoints {
    ($($(#[$doc:meta])* $id:ident => $method:ident $path:literal, $body:ident, $reply:expr, [$($layer:ident)*] $own:expr, $timeout:expr, $avail:ident;)*) => {
        /// Every operation of the API (48; protocol.md section 5, in its order).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum EndpointId {
            $($(#[$doc])* $id,)*
        }

        /// The endpoint table, indexed by [`EndpointId`].
        pub static ENDPOINTS: &[EndpointSpec] = &[
            $(EndpointSpec {
                id: EndpointId::$id,
                method: HttpMethod::$method,
                path: $path,
                body: BodyKind::$body,
                reply: $reply,
                retries: layers(&[$(Layer::$layer),*], $own),
                read_timeout: $timeout,
                availability: Availability::$avail,
                idempotency: idempotency(HttpMethod::$method, EndpointId::$id),
                sampling_backpressure: matches!(EndpointId::$id, EndpointId::ASample),
                bare_client: matches!(EndpointId::$id, EndpointId::GetApiKey | EndpointId::RevokeApiKey),
            },)*
        ];
    };
}

#[derive(Clone, Copy)]
enum Layer {
    H,
    X,
    R,
}

const fn layers(list: &[Layer], own: Option<&'static str>) -> RetryLayers {
    let mut r = RetryLayers {
        http: false,
        holder: false,
        sampling: false,
        own,
    };
    let mut i = 0;
    while i < list.len() {
        match list[i] {
            Layer::H => r.http = true,
            Layer::X => r.holder = true,
            Layer::R => r.sampling = true,
        }
        i += 1;
    }
    r
}

const fn idempotency(method: HttpMethod, id: EndpointId) -> IdempotencyRule {
    match (method, id) {
        (_, EndpointId::CopyWeights) => IdempotencyRule::FixedBareUuid,
        (_, EndpointId::GetApiKey | EndpointId::RevokeApiKey) | (HttpMethod::Get, _) => {
            IdempotencyRule::None
        }
        _ => IdempotencyRule::PerAttemptChain,
    }
}

const fn future(t: RequestType) -> Reply {
    Reply::Future(Some(t))
}

const S60: ReadTimeout = ReadTimeout::secs(60);

endpoints! {
    /// `POST /api/v1/client/config` — server flags (6.1).
    ClientConfig => Post "/api/v1/client/config", Json, Reply::Json, [H X] None, S60, Both;
    /// `POST /api/v1/client/dynamic_config` — refreshable flags; holder retries only initially.
    DynamicConfig => Post "/api/v1/client/dynamic_config", Json, Reply::Json, [] Some("holder retries on the initial fetch only; 404 means defaults"), ReadTimeout::secs(10), Both;
    /// `POST /api/v1/auth/token` — JWT exchange (0.25 also holder retries at init).
    AuthToken => Post "/api/v1/auth/token", Json, Reply::Json, [H] None, S60, Both;
    /// `GET /api/v1/healthz` — defined, unused.
    Healthz => Get "/api/v1/healthz", None, Reply::Json, [H] None, S60, Both;
    /// `GET /api/v1/get_server_capabilities`.
    GetServerCapabilities => Get "/api/v1/get_server_capabilities", None, Reply::Json, [H X] None, S60, Both;
    /// `POST /api/v1/create_session`.
    CreateSession => Post "/api/v1/create_session", Json, Reply::Json, [H] None, S60, Both;
    /// `POST /api/v1/session_heartbeat` — no retries at any layer.
    SessionHeartbeat => Post "/api/v1/session_heartbeat", Json, Reply::Json, [] None, ReadTimeout::secs(10), Both;
    /// `POST /api/v1/sessions/{session_id}/finish` [0.38].
    FinishSession => Post "/api/v1/sessions/{session_id}/finish", Json, Reply::Ignored, [H X] None, S60, Since038;
    /// `POST /api/v1/telemetry` (0.25 also retried forever every 1 s).
    Telemetry => Post "/api/v1/telemetry", Json, Reply::Json, [H] None, ReadTimeout::secs_f(5), Both;
    /// `POST /api/v1/create_model` — future `CreateModel`.
    CreateModel => Post "/api/v1/create_model", Json, future(RequestType::CreateModel), [H] None, S60, Both;
    /// `POST /api/v1/get_info`.
    GetInfo => Post "/api/v1/get_info", Json, Reply::Json, [H X] None, S60, Both;
    /// `POST /api/v1/unload_model` [0.25, unused] — future without a poll type.
    UnloadModel => Post "/api/v1/unload_model", Json, Reply::Future(None), [H] None, S60, Only025;
    /// `POST /api/v1/forward_backward` — protobuf (+zstd), future `ForwardBackward`/`Forward`.
    ForwardBackward => Post "/api/v1/forward_backward", Protobuf, future(RequestType::ForwardBackward), [H X] None, S60, Both;
    /// `POST /api/v1/optim_step` — future `OptimStep`.
    OptimStep => Post "/api/v1/optim_step", Json, future(RequestType::OptimStep), [H X] None, S60, Both;
    /// `POST /api/v1/load_weights` — future `LoadWeights`.
    LoadWeights => Post "/api/v1/load_weights", Json, future(RequestType::LoadWeights), [H X] None, S60, Both;
    /// `POST /api/v1/save_weights` — future `SaveWeights`; HTTP retries disabled.
    SaveWeights => Post "/api/v1/save_weights", Json, future(RequestType::SaveWeights), [X] None, S60, Both;
    /// `POST /api/v1/save_weights_for_sampler` — future `SaveWeightsForSampler`; HTTP retries disabled.
    SaveWeightsForSampler => Post "/api/v1/save_weights_for_sampler", Json, future(RequestType::SaveWeightsForSampler), [X] None, S60, Both;
    /// `POST /api/v1/save_weights_external` [0.38] — future `SaveWeightsExternal`; HTTP retries disabled.
    SaveWeightsExternal => Post "/api/v1/save_weights_external", Json, future(RequestType::SaveWeightsExternal), [X] None, S60, Since038;
    /// `POST /api/v1/create_custom_loss` [0.38] — future `CreateCustomLoss`.
    CreateCustomLoss => Post "/api/v1/create_custom_loss", Json, future(RequestType::CreateCustomLoss), [H X] None, S60, Since038;
    /// `POST /api/v1/copy_weights` [0.38] — one bare-uuid idempotency key across all retries.
    CopyWeights => Post "/api/v1/copy_weights", Json, Reply::Json, [H X] None, S60, Since038;
    /// `POST /api/v1/create_sampling_session`.
    CreateSamplingSession => Post "/api/v1/create_sampling_session", Json, Reply::Json, [H] None, S60, Both;
    /// `POST /api/v1/join_sampling_session` [0.38].
    JoinSamplingSession => Post "/api/v1/join_sampling_session", Json, Reply::Json, [H X] None, S60, Since038;
    /// `POST /api/v1/asample` — future `Sample`; 429 is back-pressure.
    ASample => Post "/api/v1/asample", Json, future(RequestType::Sample), [X R] Some("429 (and 402 in the billing window) back off and resend"), S60, Both;
    /// `GET /api/v1/samplers/{sampler_id}`.
    GetSampler => Get "/api/v1/samplers/{sampler_id}", None, Reply::Json, [H X] None, S60, Both;
    /// `POST /api/v1/retrieve_future` — the poll loop of 7.2.
    RetrieveFuture => Post "/api/v1/retrieve_future", Json, Reply::Poll, [] Some("poll loop: try_again/408/5xx re-poll, 429/transport back off, 400 ×3, 410 expired"), ReadTimeout::secs(45), Both;
    /// `POST /api/v1/retrieve_futures` [0.38] — session completion poller (45 s, ack-only 5 s).
    RetrieveFutures => Post "/api/v1/retrieve_futures", Json, Reply::Poll, [] Some("poller: retryable errors sleep 1 s, 400 ×3, 402 billing pause"), ReadTimeout::secs_f(45), Since038;
    /// `POST /api/v1/cancel_future` [0.38].
    CancelFuture => Post "/api/v1/cancel_future", Json, Reply::Ignored, [X] None, ReadTimeout::secs(30), Since038;
    /// `GET /api/v1/training_runs`.
    ListTrainingRuns => Get "/api/v1/training_runs", None, Reply::Json, [H X] None, S60, Both;
    /// `GET /api/v1/training_runs/{training_run_id}`.
    GetTrainingRun => Get "/api/v1/training_runs/{training_run_id}", None, Reply::Json, [H X] None, S60, Both;
    /// `GET /api/v1/training_runs/{training_run_id}/checkpoints`.
    ListCheckpoints => Get "/api/v1/training_runs/{training_run_id}/checkpoints", None, Reply::Json, [H X] None, S60, Both;
    /// `DELETE /api/v1/training_runs/{training_run_id}/checkpoints/{checkpoint_id}`.
    DeleteCheckpoint => Delete "/api/v1/training_runs/{training_run_id}/checkpoints/{checkpoint_id}", None, Reply::Ignored, [H X] None, S60, Both;
    /// `GET …/checkpoints/{checkpoint_id}/archive` [0.25] — 302/200; 503 = still building (30 s × 6).
    CheckpointArchiveUrl => Get "/api/v1/training_runs/{training_run_id}/checkpoints/{checkpoint_id}/archive", None, Reply::Json, [H X] Some("503: wait 30 s, up to 6 attempts; redirects not followed"), S60, Only025;
    /// `GET …/checkpoints/{checkpoint_id}/external_weights_urls` [0.38].
    ExternalWeightsUrls => Get "/api/v1/training_runs/{training_run_id}/checkpoints/{checkpoint_id}/external_weights_urls", None, Reply::Json, [H X] None, S60, Since038;
    /// `POST …/checkpoints/{checkpoint_id}/publish`.
    PublishCheckpoint => Post "/api/v1/training_runs/{training_run_id}/checkpoints/{checkpoint_id}/publish", None, Reply::Ignored, [H X] None, S60, Both;
    /// `DELETE …/checkpoints/{checkpoint_id}/publish`.
    UnpublishCheckpoint => Delete "/api/v1/training_runs/{training_run_id}/checkpoints/{checkpoint_id}/publish", None, Reply::Ignored, [H X] None, S60, Both;
    /// `PUT …/checkpoints/{checkpoint_id}/ttl`.
    SetCheckpointTtl => Put "/api/v1/training_runs/{training_run_id}/checkpoints/{checkpoint_id}/ttl", Json, Reply::Ignored, [H X] None, S60, Both;
    /// `GET /api/v1/checkpoints` — the user's checkpoints across runs.
    ListUserCheckpoints => Get "/api/v1/checkpoints", None, Reply::Json, [H X] None, S60, Both;
    /// `POST /api/v1/weights_info`.
    WeightsInfo => Post "/api/v1/weights_info", Json, Reply::Json, [H X] None, S60, Both;
    /// `GET /api/v1/sessions`.
    ListSessions => Get "/api/v1/sessions", None, Reply::Json, [H X] None, S60, Both;
    /// `GET /api/v1/sessions/{session_id}`.
    GetSession => Get "/api/v1/sessions/{session_id}", None, Reply::Json, [H X] None, S60, Both;
    /// `PUT /api/v1/sessions/{session_id}/project`.
    AssignSessionProject => Put "/api/v1/sessions/{session_id}/project", Json, Reply::Ignored, [H X] None, S60, Both;
    /// `GET /api/v1/sessions/{session_id}/trace_export` — polled every 5 s until ready.
    TraceExport => Get "/api/v1/sessions/{session_id}/trace_export", None, Reply::Json, [H X] Some("poll every 5 s until ready or failed"), S60, Both;
    /// `POST /api/v1/sessions/search` [0.38].
    SearchSessions => Post "/api/v1/sessions/search", Json, Reply::Json, [H X] None, S60, Since038;
    /// `GET /api/v1/audit`.
    AuditLog => Get "/api/v1/audit", None, Reply::Json, [H X] None, S60, Both;
    /// `GET /api/v1/billing/usage/events`.
    BillingUsage => Get "/api/v1/billing/usage/events", None, Reply::Json, [H X] None, S60, Both;
    /// `GET /api/v1/billing/usage/checkpoints/current` [0.38].
    CheckpointStorageUsage => Get "/api/v1/billing/usage/checkpoints/current", None, Reply::Json, [H X] None, S60, Since038;
    /// `GET /api/v1/auth/apikey/me` [0.38 CLI] — bare client, no retries, 30 s.
    GetApiKey => Get "/api/v1/auth/apikey/me", None, Reply::Json, [] None, ReadTimeout::secs(30), Since038;
    /// `DELETE /api/v1/auth/apikey/me` [0.38 CLI] — bare client, no retries, 30 s.
    RevokeApiKey => Delete "/api/v1/auth/apikey/me", None, Reply::Ignored, [] None, ReadTimeout::secs(30), Since038;
}

impl EndpointId {
    /// This endpoint's row of [`ENDPOINTS`].
    pub fn spec(self) -> &'static EndpointSpec {
        &ENDPOINTS[self as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_has_the_48_operations_of_the_protocol_in_index_order() {
        assert_eq!(ENDPOINTS.len(), 48);
        for (i, spec) in ENDPOINTS.iter().enumerate() {
            assert_eq!(spec.id as usize, i, "{:?}", spec.id);
            assert!(spec.path.starts_with("/api/v1/"), "{}", spec.path);
        }
        let v025 = ENDPOINTS
            .iter()
            .filter(|s| s.availability != Availability::Since038)
            .count();
        let v038 = ENDPOINTS
            .iter()
            .filter(|s| s.availability != Availability::Only025)
            .count();
        assert_eq!((v025, v038), (36, 46));
        let mut pairs: Vec<(&str, &str)> = ENDPOINTS
            .iter()
            .map(|s| (s.method.as_str(), s.path))
            .collect();
        pairs.sort();
        pairs.dedup();
        assert_eq!(pairs.len(), 48, "method+path pairs are distinct");
    }

    #[test]
    fn gets_have_no_body_and_no_idempotency_key() {
        for spec in ENDPOINTS {
            if spec.method == HttpMethod::Get {
                assert_eq!(spec.body, BodyKind::None, "{:?}", spec.id);
                assert_eq!(spec.idempotency, IdempotencyRule::None, "{:?}", spec.id);
            }
        }
        assert_eq!(
            EndpointId::CopyWeights.spec().idempotency,
            IdempotencyRule::FixedBareUuid
        );
        assert_eq!(
            EndpointId::OptimStep.spec().idempotency,
            IdempotencyRule::PerAttemptChain
        );
    }

    #[test]
    fn retry_layers_follow_the_section_5_codes() {
        let h_x = RetryLayers {
            http: true,
            holder: true,
            sampling: false,
            own: None,
        };
        assert_eq!(EndpointId::ForwardBackward.spec().retries, h_x);
        let save = EndpointId::SaveWeights.spec().retries;
        assert!(!save.http && save.holder);
        let heartbeat = EndpointId::SessionHeartbeat.spec().retries;
        assert!(!heartbeat.http && !heartbeat.holder && !heartbeat.sampling);
        let sample = EndpointId::ASample.spec().retries;
        assert!(!sample.http && sample.holder && sample.sampling && sample.own.is_some());
        assert!(EndpointId::RetrieveFuture.spec().retries.own.is_some());
    }

    #[test]
    fn read_timeouts_format_like_the_sdk() {
        assert_eq!(
            EndpointId::CreateModel.spec().read_timeout.header_value(),
            "60"
        );
        assert_eq!(
            EndpointId::DynamicConfig.spec().read_timeout.header_value(),
            "10"
        );
        assert_eq!(
            EndpointId::Telemetry.spec().read_timeout.header_value(),
            "5.0"
        );
        assert_eq!(
            EndpointId::RetrieveFuture
                .spec()
                .read_timeout
                .header_value(),
            "45"
        );
        assert_eq!(
            EndpointId::RetrieveFutures
                .spec()
                .read_timeout
                .header_value(),
            "45.0"
        );
        assert_eq!(
            EndpointId::CancelFuture.spec().read_timeout.duration(),
            Duration::from_secs(30)
        );
    }

    #[test]
    fn futures_name_their_poll_type() {
        assert_eq!(
            EndpointId::ASample.spec().reply,
            Reply::Future(Some(RequestType::Sample))
        );
        assert!(EndpointId::ASample.spec().sampling_backpressure);
        assert_eq!(EndpointId::UnloadModel.spec().reply, Reply::Future(None));
        let futures = ENDPOINTS
            .iter()
            .filter(|s| matches!(s.reply, Reply::Future(_)))
            .count();
        assert_eq!(futures, 10);
    }
}
