//! Authentication endpoints: the JWT exchange and the CLI's key endpoints (protocol.md 2.3, 6.8).

use super::{json_body_request, ApiRequest, EndpointId, EndpointSpec};
use crate::types::{ApiKeyInfo, AuthTokenRequest, AuthTokenResponse, Ignored};

json_body_request!(AuthTokenRequest => AuthToken, AuthTokenResponse);

/// `GET /api/v1/auth/apikey/me` [0.38 CLI]: who the presented key belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GetApiKey;

impl ApiRequest for GetApiKey {
    type Response = ApiKeyInfo;
    fn endpoint(&self) -> &'static EndpointSpec {
        EndpointId::GetApiKey.spec()
    }
}

/// `DELETE /api/v1/auth/apikey/me` [0.38 CLI]: revoke the presented (CLI-generated) key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RevokeApiKey;

impl ApiRequest for RevokeApiKey {
    type Response = Ignored;
    fn endpoint(&self) -> &'static EndpointSpec {
        EndpointId::RevokeApiKey.spec()
    }
}
