//! Training endpoints: `create_model`, `get_info`, `forward_backward`, `optim_step`,
//! `unload_model` (protocol.md 6.3).

use bytes::Bytes;

use super::{json_body_request, ApiRequest, EndpointId, EndpointSpec, RequestBody};
use crate::error::{Error, Result};
use crate::types::{
    CreateModelRequest, GetInfoRequest, GetInfoResponse, OptimStepRequest, RequestType,
    UnloadModelRequest, UntypedFuture,
};

json_body_request!(CreateModelRequest => CreateModel, UntypedFuture, validate);
json_body_request!(GetInfoRequest => GetInfo, GetInfoResponse, |r: &GetInfoRequest| {
    crate::types::common::check_non_empty("model_id", &r.model_id)
});
json_body_request!(OptimStepRequest => OptimStep, UntypedFuture, validate);
json_body_request!(UnloadModelRequest => UnloadModel, UntypedFuture);

/// `POST /api/v1/forward_backward`: a protobuf `ForwardBackwardRequest` encoded elsewhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardBackward {
    /// The encoded body (zstd frame when `compressed`).
    pub body: Bytes,
    /// Whether `body` is zstd-compressed (`Content-Encoding: zstd`).
    pub compressed: bool,
    /// `forward()` rather than `forward_backward()`: polls say `Forward`.
    pub forward_only: bool,
}

impl ApiRequest for ForwardBackward {
    type Response = UntypedFuture;
    fn endpoint(&self) -> &'static EndpointSpec {
        EndpointId::ForwardBackward.spec()
    }
    fn body(&self) -> Result<RequestBody> {
        Ok(RequestBody::Protobuf {
            bytes: self.body.clone(),
            compressed: self.compressed,
        })
    }
    fn validate(&self) -> Result<()> {
        if self.body.is_empty() {
            return Err(Error::invalid(
                "forward_backward",
                "the encoded request is empty",
            ));
        }
        Ok(())
    }
    fn request_type(&self) -> Option<RequestType> {
        Some(if self.forward_only {
            RequestType::Forward
        } else {
            RequestType::ForwardBackward
        })
    }
}
