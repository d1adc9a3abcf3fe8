//! Request builders and response decoding for every endpoint (protocol.md 2.4, 5, 6).
//!
//! Three pieces fit together:
//!
//! * [`ENDPOINTS`] — the operation table (method, path template, body kind, future or direct,
//!   retry layers, read timeout, versions) that the call and retry machines consult.
//! * [`ApiRequest`] — one typed request per operation (most are the wire types of
//!   [`crate::types`] themselves; operations with path parameters or extra headers have a small
//!   struct in this module's family files). A request knows its endpoint, path, query, body and
//!   endpoint-specific headers, validates the user's input, and names its response type.
//! * [`RequestContext`] — what every request shares (base URL, credential, SDK version,
//!   platform, default and user headers). [`RequestContext::build`] is the one place headers are
//!   assembled, so every request gets the same treatment; [`AttemptHeaders`] carries the values
//!   that change per attempt (idempotency key, retry count, the public method running).
//!
//! ```
//! use tinker_core::endpoints::{AttemptHeaders, RequestContext};
//! use tinker_core::settings::ApiKey;
//! use tinker_core::types::GetInfoRequest;
//!
//! let ctx = RequestContext::new("http://127.0.0.1:8000", ApiKey::new("tml-test-key-0001").unwrap()).unwrap();
//! let attempt = AttemptHeaders::new("tinker-rs-retry-3f0c7a9e-4b1d-4c55-9a43-2d6f0b7e8c11")
//!     .with_sdk_method("TrainingClient.get_info");
//! let req = ctx.build(&GetInfoRequest::new("sess-0001:train:0"), &attempt).unwrap();
//! assert_eq!(req.uri(), "http://127.0.0.1:8000/api/v1/get_info");
//! assert_eq!(req.headers()["x-api-key"], "tml-test-key-0001");
//! assert_eq!(req.body().as_ref(), br#"{"model_id":"sess-0001:train:0","type":"get_info"}"#);
//! ```

mod admin;
mod auth;
mod decode;
mod futures;
mod rest;
mod sampling;
mod session;
mod table;
mod training;
mod weights;

use std::borrow::Cow;

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::settings::{ApiKey, Settings};
use crate::types::RequestType;

pub use admin::{GetAuditLog, GetBillingUsage, GetCheckpointStorageUsage};
pub use auth::{GetApiKey, RevokeApiKey};
pub use decode::{decode_json, decode_response, status_error, ResponseBody};
pub use futures::RetrieveFuture;
pub use rest::{
    AssignSessionProject, DeleteCheckpoint, ExportSessionTrace, GetCheckpointArchiveUrl,
    GetExternalWeightsUrls, GetSession, GetTrainingRun, ListCheckpoints, ListSessions,
    ListTrainingRuns, ListUserCheckpoints, PublishCheckpoint, SetCheckpointTtl,
    UnpublishCheckpoint,
};
pub use sampling::GetSampler;
pub use session::{
    FinishSession, GetClientConfig, GetDynamicConfig, GetServerCapabilities, Healthz, SendTelemetry,
};
pub use table::{
    Availability, BodyKind, EndpointId, EndpointSpec, HttpMethod, IdempotencyRule, ReadTimeout,
    Reply, RetryLayers, ENDPOINTS,
};
pub use training::ForwardBackward;
pub use weights::CopyWeights;

/// `application/json`.
pub const JSON: &str = "application/json";
/// `application/x-protobuf`.
pub const PROTOBUF: &str = "application/x-protobuf";

/// A request body, ready to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestBody {
    /// No body (GET, and bodiless POST/PUT/DELETE).
    Empty,
    /// Serialized JSON.
    Json(Bytes),
    /// Serialized (and possibly zstd-compressed) protobuf.
    Protobuf {
        /// The bytes to send.
        bytes: Bytes,
        /// Whether `bytes` is a zstd frame (`Content-Encoding: zstd`).
        compressed: bool,
    },
}

impl RequestBody {
    /// Serializes a JSON body.
    pub fn json<T: Serialize + ?Sized>(value: &T) -> Result<RequestBody> {
        serde_json::to_vec(value)
            .map(|v| RequestBody::Json(Bytes::from(v)))
            .map_err(|e| {
                Error::invalid("request body", format!("cannot be serialized as JSON: {e}"))
            })
    }
}

/// One typed request of the API.
///
/// Implementors describe *what* to send; [`RequestContext::build`] decides *how* (URL joining,
/// the common headers). Defaults cover the common case of a bodiless, parameterless request.
pub trait ApiRequest {
    /// What a successful direct reply decodes to ([`crate::types::UntypedFuture`] for future
    /// endpoints, [`crate::types::Ignored`] when the content is ignored).
    type Response: ResponseBody;

    /// The operation.
    fn endpoint(&self) -> &'static EndpointSpec;

    /// Values for the `{placeholders}` of the endpoint's path template, in order. Ids with `:`
    /// and checkpoint ids with `/` go in unescaped.
    fn path_params(&self) -> Vec<Cow<'_, str>> {
        Vec::new()
    }

    /// Query parameters in the SDK's order; `None` values are dropped.
    fn query(&self) -> Vec<(&'static str, Option<String>)> {
        Vec::new()
    }

    /// The body.
    fn body(&self) -> Result<RequestBody> {
        Ok(RequestBody::Empty)
    }

    /// Checks the user's input before anything is sent.
    fn validate(&self) -> Result<()> {
        Ok(())
    }

    /// Headers specific to this request (poll headers, weights access token).
    fn extra_headers(&self, _headers: &mut HeaderMap) -> Result<()> {
        Ok(())
    }

    /// The `Accept` header.
    fn accept(&self) -> &'static str {
        JSON
    }

    /// The per-read timeout of this request (the endpoint's default unless overridden).
    fn read_timeout(&self) -> ReadTimeout {
        self.endpoint().read_timeout
    }

    /// For future endpoints: the poll type of the result.
    fn request_type(&self) -> Option<RequestType> {
        match self.endpoint().reply {
            Reply::Future(t) => t,
            _ => None,
        }
    }
}

/// The client platform, reported in the `X-Stainless-*` headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    /// `X-Stainless-OS`: `Linux`, `MacOS`, `Windows`, `FreeBSD`, `OpenBSD`, `iOS`, `Android`,
    /// `Other:<name>`.
    pub os: String,
    /// `X-Stainless-Arch`: `x64`, `arm64`, `arm`, `x32`, `other:<machine>`.
    pub arch: String,
    /// `X-Stainless-Runtime`.
    pub runtime: String,
    /// `X-Stainless-Runtime-Version`.
    pub runtime_version: String,
    /// `X-Stainless-Async`, e.g. `async:tokio` or `false` for a blocking client.
    pub async_label: String,
}

impl Platform {
    /// The platform this binary was compiled for (`std::env::consts`), running on `runtime`
    /// (e.g. `"rustc 1.89.0"`-style version supplied by the adapter) with the given async label.
    pub fn current(runtime_version: impl Into<String>, async_label: impl Into<String>) -> Platform {
        let os = match std::env::consts::OS {
            "linux" => "Linux".to_owned(),
            "macos" => "MacOS".to_owned(),
            "windows" => "Windows".to_owned(),
            "freebsd" => "FreeBSD".to_owned(),
            "openbsd" => "OpenBSD".to_owned(),
            "ios" => "iOS".to_owned(),
            "android" => "Android".to_owned(),
            "" => "Unknown".to_owned(),
            other => format!("Other:{other}"),
        };
        let arch = match std::env::consts::ARCH {
            "x86_64" => "x64".to_owned(),
            "aarch64" => "arm64".to_owned(),
            "arm" => "arm".to_owned(),
            "x86" => "x32".to_owned(),
            "" => "unknown".to_owned(),
            other => format!("other:{other}"),
        };
        Platform {
            os,
            arch,
            runtime: "rust".to_owned(),
            runtime_version: runtime_version.into(),
            async_label: async_label.into(),
        }
    }
}

impl Default for Platform {
    fn default() -> Platform {
        Platform::current("unknown", "async")
    }
}

/// Header values that change from one attempt to the next; the retry machine owns them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AttemptHeaders {
    /// `X-Idempotency-Key`, required on every non-GET (see [`EndpointSpec::idempotency`] for its
    /// lifetime; [`idempotency_key`] and [`bare_uuid`] format one from random bits).
    pub idempotency_key: Option<String>,
    /// `x-stainless-retry-count`: HTTP-layer retries already taken for this logical request.
    pub retry_count: u32,
    /// `x-sdk-method` (with `x-sdk-version`) while a public SDK method runs, e.g.
    /// `TrainingClient.forward_backward`; `None` for construction and background requests.
    pub sdk_method: Option<Cow<'static, str>>,
}

impl AttemptHeaders {
    /// The first attempt, with this idempotency key.
    pub fn new(idempotency_key: impl Into<String>) -> AttemptHeaders {
        AttemptHeaders {
            idempotency_key: Some(idempotency_key.into()),
            retry_count: 0,
            sdk_method: None,
        }
    }

    /// Headers for a GET (no idempotency key).
    pub fn get() -> AttemptHeaders {
        AttemptHeaders::default()
    }

    /// Sets the running public method.
    pub fn with_sdk_method(mut self, method: impl Into<Cow<'static, str>>) -> AttemptHeaders {
        self.sdk_method = Some(method.into());
        self
    }

    /// Sets the retry count.
    pub fn with_retry_count(mut self, n: u32) -> AttemptHeaders {
        self.retry_count = n;
        self
    }
}

/// Formats 128 random bits as a UUID version 4 string.
pub fn bare_uuid(random: u128) -> String {
    let v = (random & !(0xF000 << 64) & !(0xC000_0000_0000_0000))
        | (0x4000 << 64)
        | 0x8000_0000_0000_0000;
    let b = v.to_be_bytes();
    let hex =
        |r: std::ops::Range<usize>| b[r].iter().map(|x| format!("{x:02x}")).collect::<String>();
    format!(
        "{}-{}-{}-{}-{}",
        hex(0..4),
        hex(4..6),
        hex(6..8),
        hex(8..10),
        hex(10..16)
    )
}

/// An idempotency key for the per-logical-call rule: `tinker-rs-retry-<uuid4>` (the Python SDK
/// sends `stainless-python-retry-<uuid4>`; the server treats the value as opaque).
pub fn idempotency_key(random: u128) -> String {
    format!("tinker-rs-retry-{}", bare_uuid(random))
}

/// Everything requests share: where to send them, as whom, and the common headers.
#[derive(Debug, Clone)]
pub struct RequestContext {
    base_url: String,
    credential: ApiKey,
    sdk_version: String,
    platform: Platform,
    default_headers: Vec<(HeaderName, HeaderValue)>,
    header_overrides: Vec<(HeaderName, HeaderValue)>,
}

impl RequestContext {
    /// A context for `base_url` (which may contain a path; a trailing `/` is ignored) speaking
    /// SDK 0.38.0 on the current platform.
    pub fn new(base_url: &str, credential: ApiKey) -> Result<RequestContext> {
        let base_url = base_url.trim().trim_end_matches('/').to_owned();
        let uri: http::Uri = base_url
            .parse()
            .map_err(|e| Error::Config(format!("base URL {base_url:?} is not a valid URL: {e}")))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.authority().is_none() {
            return Err(Error::Config(format!(
                "base URL {base_url:?} must be an absolute http:// or https:// URL"
            )));
        }
        if uri.query().is_some() {
            return Err(Error::Config(format!(
                "base URL {base_url:?} must not have a query"
            )));
        }
        Ok(RequestContext {
            base_url,
            credential,
            sdk_version: crate::settings::DEFAULT_SDK_VERSION.to_owned(),
            platform: Platform::default(),
            default_headers: Vec::new(),
            header_overrides: Vec::new(),
        })
    }

    /// A context from resolved settings: base URL, API key (required), SDK version and the
    /// Cloudflare Access headers.
    pub fn from_settings(settings: &Settings) -> Result<RequestContext> {
        let mut ctx = RequestContext::new(&settings.base_url, settings.require_api_key()?.clone())?
            .with_sdk_version(settings.sdk_version.clone());
        for (name, value) in settings.cf_access_headers() {
            ctx = ctx.with_default_header(name, &value)?;
        }
        Ok(ctx)
    }

    /// Sets the SDK version sent in bodies and headers.
    pub fn with_sdk_version(mut self, version: impl Into<String>) -> RequestContext {
        self.sdk_version = version.into();
        self
    }

    /// Sets the platform reported in `X-Stainless-*` headers.
    pub fn with_platform(mut self, platform: Platform) -> RequestContext {
        self.platform = platform;
        self
    }

    /// Adds a header sent on every request (e.g. `CF-Access-Client-Id`).
    pub fn with_default_header(mut self, name: &str, value: &str) -> Result<RequestContext> {
        self.default_headers.push(header_pair(name, value)?);
        Ok(self)
    }

    /// Adds a user header override (0.38 `default_headers_overrides`), applied over the common
    /// and default headers. Protocol headers computed per request (`X-API-Key`, `Content-Type`,
    /// `Accept`, idempotency and retry headers, `X-Tinker-*`) cannot be overridden.
    pub fn with_header_override(mut self, name: &str, value: &str) -> Result<RequestContext> {
        self.header_overrides.push(header_pair(name, value)?);
        Ok(self)
    }

    /// Replaces the credential (e.g. with the JWT from `auth/token`).
    pub fn set_credential(&mut self, credential: ApiKey) {
        self.credential = credential;
    }

    /// The credential in use.
    pub fn credential(&self) -> &ApiKey {
        &self.credential
    }

    /// The SDK version spoken.
    pub fn sdk_version(&self) -> &str {
        &self.sdk_version
    }

    /// The base URL, without a trailing slash.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The honest `User-Agent`: `tinker-rs/<version> (compatible; tinker-sdk <sdk version>)`.
    pub fn user_agent(&self) -> String {
        format!(
            "tinker-rs/{} (compatible; tinker-sdk {})",
            env!("CARGO_PKG_VERSION"),
            self.sdk_version
        )
    }

    /// The URL path (with query string) of `req`, relative to the base URL.
    pub fn path_and_query<R: ApiRequest + ?Sized>(&self, req: &R) -> Result<String> {
        let mut path = render_path(req.endpoint(), &req.path_params())?;
        let query = encode_query(&req.query());
        if !query.is_empty() {
            path.push('?');
            path.push_str(&query);
        }
        Ok(path)
    }

    /// Validates `req` and builds the HTTP request for one attempt. This is the only place the
    /// common headers are assembled.
    pub fn build<R: ApiRequest + ?Sized>(
        &self,
        req: &R,
        attempt: &AttemptHeaders,
    ) -> Result<http::Request<Bytes>> {
        req.validate()?;
        let spec = req.endpoint();
        let uri = format!("{}{}", self.base_url, self.path_and_query(req)?);
        let body = req.body()?;
        let mut h = HeaderMap::new();
        let put = |h: &mut HeaderMap, name: &'static str, value: &str| -> Result<()> {
            h.insert(HeaderName::from_static(name), header_value(name, value)?);
            Ok(())
        };

        put(&mut h, "user-agent", &self.user_agent())?;
        if spec.bare_client {
            // The CLI's login helper uses a plain HTTP client: only the key and a user agent.
            put(&mut h, "x-api-key", self.credential.expose())?;
            return finish(spec, uri, h, body);
        }
        put(&mut h, "x-stainless-package-version", &self.sdk_version)?;
        put(&mut h, "x-stainless-os", &self.platform.os)?;
        put(&mut h, "x-stainless-arch", &self.platform.arch)?;
        put(&mut h, "x-stainless-runtime", &self.platform.runtime)?;
        put(
            &mut h,
            "x-stainless-runtime-version",
            &self.platform.runtime_version,
        )?;
        put(&mut h, "x-stainless-async", &self.platform.async_label)?;
        for (name, value) in self.default_headers.iter().chain(&self.header_overrides) {
            h.insert(name.clone(), value.clone());
        }

        // Protocol headers come last so neither defaults nor overrides can change them.
        put(&mut h, "accept", req.accept())?;
        if spec.method != HttpMethod::Get {
            let content_type = match body {
                RequestBody::Protobuf { .. } => PROTOBUF,
                _ => JSON,
            };
            put(&mut h, "content-type", content_type)?;
            if let RequestBody::Protobuf {
                compressed: true, ..
            } = body
            {
                put(&mut h, "content-encoding", "zstd")?;
            }
            if spec.idempotency != IdempotencyRule::None {
                let key = attempt.idempotency_key.as_deref().ok_or_else(|| {
                    Error::invalid(
                        "X-Idempotency-Key",
                        format!(
                            "{} {} needs an idempotency key",
                            spec.method.as_str(),
                            spec.path
                        ),
                    )
                })?;
                put(&mut h, "x-idempotency-key", key)?;
            }
        }
        if let Some(method) = &attempt.sdk_method {
            put(&mut h, "x-sdk-version", &self.sdk_version)?;
            put(&mut h, "x-sdk-method", method)?;
        }
        put(
            &mut h,
            "x-stainless-retry-count",
            &attempt.retry_count.to_string(),
        )?;
        put(
            &mut h,
            "x-stainless-read-timeout",
            &req.read_timeout().header_value(),
        )?;
        if spec.sampling_backpressure {
            put(&mut h, "x-tinker-sampling-backpressure", "1")?;
        }
        req.extra_headers(&mut h)?;
        put(&mut h, "x-api-key", self.credential.expose())?;
        finish(spec, uri, h, body)
    }
}

fn finish(
    spec: &EndpointSpec,
    uri: String,
    headers: HeaderMap,
    body: RequestBody,
) -> Result<http::Request<Bytes>> {
    let bytes = match body {
        RequestBody::Empty => Bytes::new(),
        RequestBody::Json(b) | RequestBody::Protobuf { bytes: b, .. } => b,
    };
    let mut req = http::Request::builder()
        .method(spec.method.to_http())
        .uri(&uri)
        .body(bytes)
        .map_err(|e| Error::invalid("request URL", format!("{uri:?} is not a valid URL: {e}")))?;
    *req.headers_mut() = headers;
    // Lets the metrics hook name the endpoint without parsing the URL (cardinality stays fixed).
    req.extensions_mut().insert(spec.id);
    Ok(req)
}

fn header_pair(name: &str, value: &str) -> Result<(HeaderName, HeaderValue)> {
    let n = HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| Error::Config(format!("{name:?} is not a valid header name")))?;
    Ok((n, header_value(name, value)?))
}

fn header_value(name: &str, value: &str) -> Result<HeaderValue> {
    let mut v = HeaderValue::from_str(value).map_err(|_| {
        // Never echo the value: it may be a credential.
        Error::invalid(
            name,
            "header value contains characters not allowed in HTTP headers",
        )
    })?;
    if matches!(
        name.to_ascii_lowercase().as_str(),
        "x-api-key" | "cf-access-client-secret" | "x-tinker-weights-access-token"
    ) {
        v.set_sensitive(true);
    }
    Ok(v)
}

/// Fills the `{placeholders}` of a path template, in order.
fn render_path(spec: &EndpointSpec, params: &[Cow<'_, str>]) -> Result<String> {
    let mut out = String::with_capacity(spec.path.len() + 32);
    let mut rest = spec.path;
    let mut values = params.iter();
    while let Some(open) = rest.find('{') {
        let close = rest[open..]
            .find('}')
            .map(|c| open + c)
            .unwrap_or(rest.len() - 1);
        out.push_str(&rest[..open]);
        let value = values.next().ok_or_else(|| {
            Error::invalid(
                spec.path,
                format!("missing value for {}", &rest[open..=close]),
            )
        })?;
        out.push_str(value);
        rest = &rest[close + 1..];
    }
    out.push_str(rest);
    if values.next().is_some() {
        return Err(Error::invalid(spec.path, "too many path parameters"));
    }
    Ok(out)
}

/// URL-encodes query parameters as the SDK's HTTP client does: unreserved characters kept,
/// space as `+`, everything else `%XX`; `None` values dropped.
pub fn encode_query(params: &[(&str, Option<String>)]) -> String {
    let mut out = String::new();
    for (name, value) in params {
        let Some(value) = value else { continue };
        if !out.is_empty() {
            out.push('&');
        }
        encode_component(name, &mut out);
        out.push('=');
        encode_component(value, &mut out);
    }
    out
}

fn encode_component(s: &str, out: &mut String) {
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(char::from(b))
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
}

/// Checks an id that goes into a URL path as one segment.
pub(crate) fn id_segment<'a>(location: &str, id: &'a str) -> Result<Cow<'a, str>> {
    crate::path::check_segment(location, location, id)?;
    Ok(Cow::Borrowed(id))
}

/// Implements [`ApiRequest`] for a wire type that is itself the JSON body of a
/// parameterless endpoint.
macro_rules! json_body_request {
    ($ty:ty => $id:ident, $resp:ty) => {
        json_body_request!($ty => $id, $resp, |_r: &$ty| Ok(()));
    };
    ($ty:ty => $id:ident, $resp:ty, validate) => {
        json_body_request!($ty => $id, $resp, <$ty>::validate);
    };
    ($ty:ty => $id:ident, $resp:ty, $validate:expr) => {
        impl $crate::endpoints::ApiRequest for $ty {
            type Response = $resp;
            fn endpoint(&self) -> &'static $crate::endpoints::EndpointSpec {
                $crate::endpoints::EndpointId::$id.spec()
            }
            fn body(&self) -> $crate::error::Result<$crate::endpoints::RequestBody> {
                $crate::endpoints::RequestBody::json(self)
            }
            fn validate(&self) -> $crate::error::Result<()> {
                ($validate)(self)
            }
        }
    };
}
pub(crate) use json_body_request;

#[cfg(test)]
mod tests;
