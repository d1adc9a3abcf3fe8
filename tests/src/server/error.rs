//! Error replies shaped like a FastAPI service's: `{"detail": ...}` with a fitting status.
//!
//! A real validation failure always has a non-empty body: an empty-bodied 400 means "Cloudflare
//! rejected the connection" to the SDK and is retried (protocol.md 1.6), so only the fault
//! injector sends those.

use axum::body::Body;
use axum::extract::{FromRequest, Request};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

/// An HTTP error reply.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// The status.
    pub status: StatusCode,
    /// The `detail` value (a string, or FastAPI's list of validation errors for 422).
    pub detail: Value,
    /// Extra response headers (e.g. `WWW-Authenticate`).
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl ApiError {
    /// An error with a string `detail`.
    pub fn new(status: StatusCode, detail: impl Into<String>) -> ApiError {
        ApiError {
            status,
            detail: Value::String(detail.into()),
            headers: Vec::new(),
        }
    }

    /// 400.
    pub fn bad_request(detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, detail)
    }

    /// 404.
    pub fn not_found(detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, detail)
    }

    /// 409.
    pub fn conflict(detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, detail)
    }

    /// 410.
    pub fn gone(detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::GONE, detail)
    }

    /// 401.
    pub fn unauthorized(detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, detail)
    }

    /// 422 in FastAPI's shape: `{"detail": [{"loc": [...], "msg": ..., "type": ...}]}`.
    pub fn unprocessable(loc: &[&str], msg: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            detail: json!([{"loc": loc, "msg": msg.into(), "type": "value_error"}]),
            headers: Vec::new(),
        }
    }

    /// Adds a response header.
    pub fn with_header(mut self, name: HeaderName, value: &'static str) -> ApiError {
        self.headers.push((name, HeaderValue::from_static(value)));
        self
    }
}

impl From<tinker_core::Error> for ApiError {
    /// Core validation errors name the field; they are the request's fault.
    fn from(e: tinker_core::Error) -> ApiError {
        ApiError::bad_request(e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&json!({ "detail": self.detail })).unwrap_or_default();
        let mut resp = Response::new(Body::from(body));
        *resp.status_mut() = self.status;
        resp.headers_mut().insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        for (name, value) in self.headers {
            resp.headers_mut().insert(name, value);
        }
        resp
    }
}

/// A JSON request body; malformed or mistyped bodies are answered 422 like FastAPI does.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|e| ApiError::bad_request(format!("could not read the body: {e}")))?;
        parse_json(&bytes).map(JsonBody)
    }
}

/// Parses a JSON body into `T`, with a FastAPI-shaped 422 naming the problem.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.is_empty() {
        return Err(ApiError::unprocessable(&["body"], "Field required"));
    }
    serde_json::from_slice(bytes).map_err(|e| {
        let kind = if e.is_syntax() || e.is_eof() {
            "JSON decode error"
        } else {
            "invalid body"
        };
        ApiError::unprocessable(&["body"], format!("{kind}: {e}"))
    })
}

/// The result type of handlers.
pub type ApiResult<T = Response> = Result<T, ApiError>;
