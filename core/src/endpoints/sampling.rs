//! Sampling endpoints: `create_sampling_session`, `join_sampling_session`, `asample`,
//! `samplers/{id}` (protocol.md 6.4).

use std::borrow::Cow;

use super::{id_segment, json_body_request, ApiRequest, EndpointId, EndpointSpec};
use crate::error::Result;
use crate::types::{
    CreateSamplingSessionRequest, CreateSamplingSessionResponse, JoinSamplingSessionRequest,
    JoinSamplingSessionResponse, SampleRequest, SamplerInfo, UntypedFuture,
};

json_body_request!(CreateSamplingSessionRequest => CreateSamplingSession, CreateSamplingSessionResponse, validate);
json_body_request!(JoinSamplingSessionRequest => JoinSamplingSession, JoinSamplingSessionResponse, |r: &JoinSamplingSessionRequest| {
    crate::types::common::check_non_empty("sampling_session_id", &r.sampling_session_id)
});
json_body_request!(SampleRequest => ASample, UntypedFuture, validate);

/// `GET /api/v1/samplers/{sampler_id}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetSampler {
    /// The sampling session id.
    pub sampler_id: String,
}

impl ApiRequest for GetSampler {
    type Response = SamplerInfo;
    fn endpoint(&self) -> &'static EndpointSpec {
        EndpointId::GetSampler.spec()
    }
    fn path_params(&self) -> Vec<Cow<'_, str>> {
        vec![Cow::Borrowed(self.sampler_id.as_str())]
    }
    fn validate(&self) -> Result<()> {
        id_segment("sampler_id", &self.sampler_id).map(|_| ())
    }
}
