//! Future endpoints: `retrieve_future`, `retrieve_futures`, `cancel_future` (protocol.md 7).

use http::header::HeaderMap;

use super::{
    header_value, json_body_request, ApiRequest, EndpointId, EndpointSpec, ReadTimeout,
    RequestBody, JSON, PROTOBUF,
};
use crate::error::Result;
use crate::types::{
    CancelFutureRequest, Ignored, RequestType, RetrieveFutureRequest, RetrieveFuturesRequest,
    RetrieveFuturesResponse,
};

/// One poll of `POST /api/v1/retrieve_future`, with its poll headers. Its reply is classified
/// with [`crate::types::FutureReply::classify`], not decoded directly.
#[derive(Debug, Clone, PartialEq)]
pub struct RetrieveFuture {
    /// The body.
    pub body: RetrieveFutureRequest,
    /// What the future produces: `X-Tinker-Request-Type`, and `Accept: application/x-protobuf`
    /// for protobuf results. `None` for futures without a poll type (0.25 `unload_model`).
    pub request_type: Option<RequestType>,
    /// `X-Tinker-Request-Iteration`: 0-based poll counter of this future.
    pub iteration: u64,
    /// `X-Tinker-Create-Promise-Roundtrip-Time` (seconds from the start of the submitting call
    /// to the future's creation), sent on iteration 0 only.
    pub create_roundtrip_secs: Option<f64>,
}

impl RetrieveFuture {
    /// The first poll of `request_id`.
    pub fn first(
        request_id: impl Into<String>,
        request_type: RequestType,
        create_roundtrip_secs: f64,
    ) -> RetrieveFuture {
        RetrieveFuture {
            body: RetrieveFutureRequest {
                request_id: request_id.into(),
                allow_metadata_only: true,
            },
            request_type: Some(request_type),
            iteration: 0,
            create_roundtrip_secs: Some(create_roundtrip_secs),
        }
    }

    /// The next poll (iteration + 1), optionally refusing metadata-only replies.
    pub fn next(&self, allow_metadata_only: bool) -> RetrieveFuture {
        RetrieveFuture {
            body: RetrieveFutureRequest {
                request_id: self.body.request_id.clone(),
                allow_metadata_only,
            },
            request_type: self.request_type,
            iteration: self.iteration + 1,
            create_roundtrip_secs: None,
        }
    }
}

impl ApiRequest for RetrieveFuture {
    type Response = serde_json::Value;
    fn endpoint(&self) -> &'static EndpointSpec {
        EndpointId::RetrieveFuture.spec()
    }
    fn body(&self) -> Result<RequestBody> {
        RequestBody::json(&self.body)
    }
    fn accept(&self) -> &'static str {
        match self.request_type {
            Some(t) if t.result_is_protobuf() => PROTOBUF,
            _ => JSON,
        }
    }
    fn request_type(&self) -> Option<RequestType> {
        self.request_type
    }
    fn extra_headers(&self, h: &mut HeaderMap) -> Result<()> {
        h.insert(
            "x-tinker-request-iteration",
            header_value("x-tinker-request-iteration", &self.iteration.to_string())?,
        );
        if let Some(t) = self.request_type {
            h.insert(
                "x-tinker-request-type",
                header_value("x-tinker-request-type", t.header_value())?,
            );
        }
        if self.iteration == 0 {
            if let Some(secs) = self.create_roundtrip_secs {
                h.insert(
                    "x-tinker-create-promise-roundtrip-time",
                    header_value(
                        "x-tinker-create-promise-roundtrip-time",
                        &format_python_float(secs),
                    )?,
                );
            }
        }
        // An SDK-internal marker that leaks onto the wire; servers ignore it.
        h.insert(
            "x-stainless-raw-response",
            header_value("x-stainless-raw-response", "raw")?,
        );
        Ok(())
    }
}

/// Formats a float the way Python's `repr` does for the values that occur here (always with a
/// decimal point or exponent).
fn format_python_float(x: f64) -> String {
    let s = format!("{x:?}");
    if s.contains(['.', 'e', 'E']) || !x.is_finite() {
        s
    } else {
        format!("{s}.0")
    }
}

impl ApiRequest for RetrieveFuturesRequest {
    type Response = RetrieveFuturesResponse;
    fn endpoint(&self) -> &'static EndpointSpec {
        EndpointId::RetrieveFutures.spec()
    }
    fn body(&self) -> Result<RequestBody> {
        RequestBody::json(self)
    }
    /// Long polls wait up to 45 s; ack-only polls (`timeout: 0.0`) 5 s.
    fn read_timeout(&self) -> ReadTimeout {
        if self.is_ack_only() {
            ReadTimeout::secs_f(5)
        } else {
            self.endpoint().read_timeout
        }
    }
}

json_body_request!(CancelFutureRequest => CancelFuture, Ignored);
