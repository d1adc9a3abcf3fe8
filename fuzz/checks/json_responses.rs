//! Every JSON body the server sends: future replies are classified, and every response type the
//! SDK decodes gives a value or a `Decode` error, never a panic.
use tinker_core::endpoints::decode_json;
use tinker_core::types::*;

macro_rules! decode_all {
    ($data:expr; $($ty:ty),* $(,)?) => {
        $( let _ = decode_json::<$ty>($data); )*
    };
}

/// Runs one input; panics on a finding.
pub fn check(data: &[u8]) {
    let _ = FutureReply::classify(Some("application/json"), data);
    let _ = FutureReply::classify(Some("application/x-protobuf"), data);
    let _ = FutureReply::classify(None, data);
    decode_all!(data;
        // Futures and their envelopes.
        UntypedFuture, TryAgainResponse, RequestFailedResponse, RetrieveFuturesResponse,
        FutureCompletion,
        // Results of training, sampling and weights calls.
        ForwardBackwardOutput, OptimStepResponse, SampleResponse, CreateModelResponse,
        GetInfoResponse, UnloadModelResponse, LoadWeightsResponse, SaveWeightsResponse,
        SaveWeightsForSamplerResponse, SaveWeightsExternalResponse, CopyWeightsResponse,
        CreateCustomLossResponse, WeightsInfoResponse, ExternalWeightsUrls,
        // Sessions, sampling sessions, config, auth.
        CreateSessionResponse, SessionHeartbeatResponse, CreateSamplingSessionResponse,
        JoinSamplingSessionResponse, ClientConfig, DynamicConfig, ServerCapabilities,
        AuthTokenResponse, WhoamiResponse, TelemetrySendResponse, StatusResponse,
        // REST resources.
        TrainingRun, TrainingRunsResponse, Checkpoint, CheckpointsListResponse,
        CheckpointArchiveUrl, CheckpointStorageUsage, SessionsListResponse, GetSessionResponse,
        SessionSearchResponse, TraceExportResponse, AuditLogResponse, BillingUsageResponse,
        SamplerInfo,
        // Values nested in the above.
        TensorData, ModelInput, Datum,
    );
}
