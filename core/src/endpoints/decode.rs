//! Turning a response into a typed value or an [`Error`] (protocol.md 1.5, 1.6).

use http::header::HeaderMap;
use serde::de::DeserializeOwned;

use super::{ApiRequest, EndpointSpec};
use crate::error::{Error, Result, StatusError};
use crate::types::Ignored;

/// How a response type is read from a 2xx body.
pub trait ResponseBody: Sized {
    /// Decodes a successful body of `endpoint`.
    fn from_body(endpoint: &EndpointSpec, body: &[u8]) -> Result<Self>;
}

/// Every JSON response type decodes strictly: required fields enforced, unknown fields ignored.
impl<T: DeserializeOwned> ResponseBody for T {
    fn from_body(_endpoint: &EndpointSpec, body: &[u8]) -> Result<T> {
        decode_json(body)
    }
}

/// Ignored results accept any body, including none.
impl ResponseBody for Ignored {
    fn from_body(_endpoint: &EndpointSpec, _body: &[u8]) -> Result<Ignored> {
        Ok(Ignored)
    }
}

/// Decodes JSON as `T`; failures are [`Error::Decode`] naming the type and serde's description
/// (which names the missing or malformed field).
///
/// ```
/// use tinker_core::endpoints::decode_json;
/// use tinker_core::types::GetInfoResponse;
/// let err = decode_json::<GetInfoResponse>(br#"{"model_id": "m"}"#).unwrap_err();
/// assert_eq!(err.to_string(), "could not decode GetInfoResponse: missing field `model_data` at line 1 column 17");
/// ```
pub fn decode_json<T: DeserializeOwned>(body: &[u8]) -> Result<T> {
    serde_json::from_slice(body).map_err(|e| Error::decode(short_type_name::<T>(), e.to_string()))
}

fn short_type_name<T>() -> &'static str {
    let full = std::any::type_name::<T>();
    // Keep generics readable: strip module paths from the outermost name only.
    let base = full.split('<').next().unwrap_or(full);
    let short = base.rsplit("::").next().unwrap_or(base);
    if base.len() == full.len() {
        short
    } else {
        full
    }
}

/// The error for a non-2xx response: status, body verbatim, the server's log id
/// (`x-request-id`), one attempt (the retry machine updates attempts).
pub fn status_error(endpoint: &str, status: u16, headers: &HeaderMap, body: &[u8]) -> Error {
    Error::Status(Box::new(StatusError {
        status,
        body: String::from_utf8_lossy(body).into_owned(),
        endpoint: endpoint.to_owned(),
        request_id: None,
        server_log_id: headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        attempts: 1,
    }))
}

/// Decodes a complete response to `req`: 2xx → its response type, anything else →
/// [`Error::Status`].
pub fn decode_response<R: ApiRequest + ?Sized>(
    req: &R,
    status: u16,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<R::Response> {
    let spec = req.endpoint();
    if !(200..300).contains(&status) {
        let path =
            super::render_path(spec, &req.path_params()).unwrap_or_else(|_| spec.path.to_owned());
        return Err(status_error(&path, status, headers, body));
    }
    R::Response::from_body(spec, body)
}
