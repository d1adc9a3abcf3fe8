//! Configuration, session and telemetry endpoints (protocol.md 4, 6.1, 6.2, 13).

use std::borrow::Cow;

use serde::Serialize;

use super::{id_segment, json_body_request, ApiRequest, EndpointId, EndpointSpec, RequestBody};
use crate::error::Result;
use crate::types::{
    ClientConfig, ClientConfigRequest, CreateSessionRequest, CreateSessionResponse, DynamicConfig,
    FinishReason, FinishSessionRequest, Ignored, ServerCapabilities, SessionHeartbeatRequest,
    SessionHeartbeatResponse, StatusResponse,
};

/// `POST /api/v1/client/config` with `{"sdk_version": ...}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetClientConfig {
    /// The body.
    pub body: ClientConfigRequest,
}

impl GetClientConfig {
    /// Asks for the config of SDK `sdk_version` (use [`super::RequestContext::sdk_version`]).
    pub fn new(sdk_version: impl Into<String>) -> GetClientConfig {
        GetClientConfig {
            body: ClientConfigRequest {
                sdk_version: sdk_version.into(),
            },
        }
    }
}

impl ApiRequest for GetClientConfig {
    type Response = ClientConfig;
    fn endpoint(&self) -> &'static EndpointSpec {
        EndpointId::ClientConfig.spec()
    }
    fn body(&self) -> Result<RequestBody> {
        RequestBody::json(&self.body)
    }
}

/// `POST /api/v1/client/dynamic_config` with `{"sdk_version": ...}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetDynamicConfig {
    /// The body.
    pub body: ClientConfigRequest,
}

impl GetDynamicConfig {
    /// Asks for the dynamic config of SDK `sdk_version`.
    pub fn new(sdk_version: impl Into<String>) -> GetDynamicConfig {
        GetDynamicConfig {
            body: ClientConfigRequest {
                sdk_version: sdk_version.into(),
            },
        }
    }
}

impl ApiRequest for GetDynamicConfig {
    type Response = DynamicConfig;
    fn endpoint(&self) -> &'static EndpointSpec {
        EndpointId::DynamicConfig.spec()
    }
    fn body(&self) -> Result<RequestBody> {
        RequestBody::json(&self.body)
    }
}

/// `GET /api/v1/healthz` (defined, unused by the SDKs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Healthz;

impl ApiRequest for Healthz {
    type Response = StatusResponse;
    fn endpoint(&self) -> &'static EndpointSpec {
        EndpointId::Healthz.spec()
    }
}

/// `GET /api/v1/get_server_capabilities`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GetServerCapabilities;

impl ApiRequest for GetServerCapabilities {
    type Response = ServerCapabilities;
    fn endpoint(&self) -> &'static EndpointSpec {
        EndpointId::GetServerCapabilities.spec()
    }
}

json_body_request!(CreateSessionRequest => CreateSession, CreateSessionResponse);
json_body_request!(SessionHeartbeatRequest => SessionHeartbeat, SessionHeartbeatResponse);

/// `POST /api/v1/sessions/{session_id}/finish` [0.38].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FinishSession {
    /// The session to finish.
    pub session_id: String,
    /// Reason and detail.
    pub body: FinishSessionRequest,
}

impl FinishSession {
    /// Finishes `session_id` for `reason`.
    pub fn new(
        session_id: impl Into<String>,
        reason: FinishReason,
        detail: Option<String>,
    ) -> FinishSession {
        FinishSession {
            session_id: session_id.into(),
            body: FinishSessionRequest::new(reason, detail),
        }
    }
}

impl ApiRequest for FinishSession {
    type Response = Ignored;
    fn endpoint(&self) -> &'static EndpointSpec {
        EndpointId::FinishSession.spec()
    }
    fn path_params(&self) -> Vec<Cow<'_, str>> {
        vec![Cow::Borrowed(self.session_id.as_str())]
    }
    fn validate(&self) -> Result<()> {
        id_segment("session_id", &self.session_id).map(|_| ())
    }
    fn body(&self) -> Result<RequestBody> {
        RequestBody::json(&self.body)
    }
}

/// `POST /api/v1/telemetry` with a batch built by the telemetry module (any serializable body;
/// its event types live there).
#[derive(Debug, Clone, PartialEq)]
pub struct SendTelemetry<B> {
    /// The `TelemetrySendRequest` batch.
    pub body: B,
}

impl<B: Serialize> ApiRequest for SendTelemetry<B> {
    type Response = StatusResponse;
    fn endpoint(&self) -> &'static EndpointSpec {
        EndpointId::Telemetry.spec()
    }
    fn body(&self) -> Result<RequestBody> {
        RequestBody::json(&self.body)
    }
}
