//! Every wire type of the Tinker API (SDK 0.38, and the 0.25 variants a server may still send).
//!
//! Serialization follows the official SDK (protocol.md 1.4-1.5): unset optional fields are
//! omitted, fields with defaults are always sent, request models carry their `type` tag, and
//! responses tolerate unknown fields while enforcing required ones.

mod datum;
mod forward_backward;
mod model_input;
mod sample_output;
mod telemetry;
mod tensor;

mod admin;
mod auth;
pub(crate) mod common;
mod config;
mod futures;
mod rest;
mod sampling;
mod session;
mod timestamp;
mod training;
mod weights;

pub use datum::{expected_dtype, Datum, ProvenanceSpan};
pub use forward_backward::{ForwardBackwardOutput, LossConfigValue, LossFn};
pub use model_input::{Chunk, ImageFormat, ModelInput, TokenId};
pub use sample_output::{
    PromptAltTokens, SampleResponse, SampledSequence, StopReason, TopkLogprobs, TopkRow,
};
pub use telemetry::{
    format_timedelta, format_timestamp, Severity, TelemetryEvent, TelemetryEventKind,
    TelemetrySendRequest, TelemetrySendResponse,
};
pub use tensor::{CsrIndices, DType, TensorData, TensorValues};

pub use admin::{
    AuditEventType, AuditLogEntry, AuditLogResponse, BillingSessionInfo, BillingUsageEvent,
    BillingUsageResponse, CheckpointStorageRow, CheckpointStorageUsage, EventInfo,
};
pub use auth::{
    ApiKeyDetails, ApiKeyInfo, AuthTokenRequest, AuthTokenResponse, OrgDetails, UserDetails,
    WhoamiResponse,
};
pub use common::{check_ttl, Ignored, Metadata, StatusResponse, MAX_TTL_SECONDS, MIN_TTL_SECONDS};
pub use config::{
    ClientConfig, ClientConfigRequest, DynamicConfig, ServerCapabilities, SupportedModel,
};
pub use futures::{
    CancelFutureRequest, FutureCompletion, FutureReply, FuturesTarget, QueueState,
    RequestFailedResponse, RequestType, RetrieveFutureRequest, RetrieveFuturesRequest,
    RetrieveFuturesResponse, TryAgainResponse, UntypedFuture,
};
pub use rest::{
    AccessScope, AssignProjectRequest, Checkpoint, CheckpointArchiveUrl, CheckpointType,
    CheckpointsListResponse, Cursor, ExternalWeightsUrls, GetSessionResponse, SearchCursor,
    SessionFailureReason, SessionOwner, SessionSearchRequest, SessionSearchResponse, SessionStatus,
    SessionStatusFilter, SessionSummary, SessionsListResponse, SetTtlRequest, TraceExportResponse,
    TraceExportStatus, TrainingRun, TrainingRunsResponse,
};
pub use sampling::{
    CreateSamplingSessionRequest, CreateSamplingSessionResponse, CreateSamplingSessionTag,
    JoinSamplingSessionRequest, JoinSamplingSessionResponse, JoinSamplingSessionTag, SampleRequest,
    SampleTag, SamplerInfo, SamplingParams, StopCondition,
};
pub use session::{
    CreateSessionRequest, CreateSessionResponse, CreateSessionTag, FinishReason,
    FinishReasonObject, FinishSessionRequest, HeartbeatTag, SessionHeartbeatRequest,
    SessionHeartbeatResponse,
};
pub use timestamp::Timestamp;
pub use training::{
    AdamParams, CreateModelRequest, CreateModelResponse, CreateModelTag, DimuonParams,
    GetInfoRequest, GetInfoResponse, GetInfoTag, LoraConfig, ModelData, OptimStepRequest,
    OptimStepResponse, OptimStepTag, OptimizerConfig, OptimizerParams, StepParams,
    UnloadModelRequest, UnloadModelResponse, UnloadModelTag,
};
pub use weights::{
    expect_kind, CopyWeightsRequest, CopyWeightsResponse, CreateCustomLossRequest,
    CreateCustomLossResponse, CreateCustomLossTag, CustomLossGraph, CustomLossInput,
    LoadWeightsRequest, LoadWeightsResponse, LoadWeightsTag, SamplerSaveKind,
    SaveWeightsExternalRequest, SaveWeightsExternalResponse, SaveWeightsExternalTag,
    SaveWeightsForSamplerRequest, SaveWeightsForSamplerResponse, SaveWeightsForSamplerTag,
    SaveWeightsRequest, SaveWeightsResponse, SaveWeightsTag, WeightsInfoRequest,
    WeightsInfoResponse,
};

/// Serde adapter: `Bytes` as standard base64 with padding (how JSON carries image and dmel bytes).
pub(crate) mod base64_bytes {
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine as _;
    use bytes::Bytes;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &Bytes, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Bytes, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        STANDARD
            .decode(text.as_bytes())
            .map(Bytes::from)
            .map_err(serde::de::Error::custom)
    }
}
