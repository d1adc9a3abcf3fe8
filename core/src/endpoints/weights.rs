//! Weights endpoints: load/save, sampler and external saves, copies, custom losses,
//! `weights_info` (protocol.md 6.3.5-6.3.10, 6.6.8).

use http::header::HeaderMap;

use super::{header_value, json_body_request, ApiRequest, EndpointId, EndpointSpec, RequestBody};
use crate::error::Result;
use crate::path::TinkerPath;
use crate::types::{
    CopyWeightsRequest, CopyWeightsResponse, CreateCustomLossRequest, LoadWeightsRequest,
    SaveWeightsExternalRequest, SaveWeightsForSamplerRequest, SaveWeightsRequest, UntypedFuture,
    WeightsInfoRequest, WeightsInfoResponse,
};

json_body_request!(LoadWeightsRequest => LoadWeights, UntypedFuture, validate);
json_body_request!(SaveWeightsRequest => SaveWeights, UntypedFuture, validate);
json_body_request!(SaveWeightsForSamplerRequest => SaveWeightsForSampler, UntypedFuture, validate);
json_body_request!(SaveWeightsExternalRequest => SaveWeightsExternal, UntypedFuture, validate);
json_body_request!(CreateCustomLossRequest => CreateCustomLoss, UntypedFuture, validate);
json_body_request!(WeightsInfoRequest => WeightsInfo, WeightsInfoResponse, |r: &WeightsInfoRequest| {
    TinkerPath::parse(&r.tinker_path).map(|_| ())
});

/// `POST /api/v1/copy_weights` [0.38]. The foreign-account token travels as the
/// `X-Tinker-Weights-Access-Token` header (kept out of logs), and the idempotency key is a bare
/// uuid4 reused across every retry (see [`super::bare_uuid`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyWeights {
    /// The body.
    pub body: CopyWeightsRequest,
    /// Token of the account owning the source checkpoint.
    pub weights_access_token: Option<String>,
}

impl ApiRequest for CopyWeights {
    type Response = CopyWeightsResponse;
    fn endpoint(&self) -> &'static EndpointSpec {
        EndpointId::CopyWeights.spec()
    }
    fn body(&self) -> Result<RequestBody> {
        RequestBody::json(&self.body)
    }
    fn validate(&self) -> Result<()> {
        self.body.validate()
    }
    fn extra_headers(&self, headers: &mut HeaderMap) -> Result<()> {
        if let Some(token) = &self.weights_access_token {
            headers.insert(
                "x-tinker-weights-access-token",
                header_value("x-tinker-weights-access-token", token)?,
            );
        }
        Ok(())
    }
}
