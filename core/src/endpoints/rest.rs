//! REST resource endpoints: training runs, checkpoints, sessions (protocol.md 6.6, 6.9).

use std::borrow::Cow;

use super::{id_segment, json_body_request, ApiRequest, EndpointId, EndpointSpec, RequestBody};
use crate::error::{Error, Result};
use crate::path::{CheckpointKind, TinkerPath};
use crate::types::{
    expect_kind, AccessScope, AssignProjectRequest, CheckpointArchiveUrl, CheckpointsListResponse,
    ExternalWeightsUrls, GetSessionResponse, Ignored, SessionSearchRequest, SessionSearchResponse,
    SessionsListResponse, SetTtlRequest, TraceExportResponse, TrainingRun, TrainingRunsResponse,
};

fn check_limit(limit: u32) -> Result<()> {
    if limit == 0 {
        return Err(Error::invalid("limit", "must be at least 1"));
    }
    Ok(())
}

/// `GET /api/v1/training_runs?limit=&offset=&access_scope=[&project_id=]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListTrainingRuns {
    /// Page size (default 20).
    pub limit: u32,
    /// Offset (default 0).
    pub offset: u64,
    /// Whose runs (default owned).
    pub access_scope: AccessScope,
    /// Only this project's runs.
    pub project_id: Option<String>,
}

impl Default for ListTrainingRuns {
    fn default() -> ListTrainingRuns {
        ListTrainingRuns {
            limit: 20,
            offset: 0,
            access_scope: AccessScope::Owned,
            project_id: None,
        }
    }
}

impl ApiRequest for ListTrainingRuns {
    type Response = TrainingRunsResponse;
    fn endpoint(&self) -> &'static EndpointSpec {
        EndpointId::ListTrainingRuns.spec()
    }
    fn query(&self) -> Vec<(&'static str, Option<String>)> {
        vec![
            ("limit", Some(self.limit.to_string())),
            ("offset", Some(self.offset.to_string())),
            ("access_scope", Some(self.access_scope.name().to_owned())),
            ("project_id", self.project_id.clone()),
        ]
    }
    fn validate(&self) -> Result<()> {
        check_limit(self.limit)
    }
}

/// `GET /api/v1/training_runs/{training_run_id}?access_scope=`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetTrainingRun {
    /// The run.
    pub training_run_id: String,
    /// Whose runs to look in.
    pub access_scope: AccessScope,
}

impl ApiRequest for GetTrainingRun {
    type Response = TrainingRun;
    fn endpoint(&self) -> &'static EndpointSpec {
        EndpointId::GetTrainingRun.spec()
    }
    fn path_params(&self) -> Vec<Cow<'_, str>> {
        vec![Cow::Borrowed(self.training_run_id.as_str())]
    }
    fn query(&self) -> Vec<(&'static str, Option<String>)> {
        vec![("access_scope", Some(self.access_scope.name().to_owned()))]
    }
    fn validate(&self) -> Result<()> {
        id_segment("training_run_id", &self.training_run_id).map(|_| ())
    }
}

/// `GET /api/v1/training_runs/{training_run_id}/checkpoints` (unpaginated).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListCheckpoints {
    /// The run.
    pub training_run_id: String,
}

impl ApiRequest for ListCheckpoints {
    type Response = CheckpointsListResponse;
    fn endpoint(&self) -> &'static EndpointSpec {
        EndpointId::ListCheckpoints.spec()
    }
    fn path_params(&self) -> Vec<Cow<'_, str>> {
        vec![Cow::Borrowed(self.training_run_id.as_str())]
    }
    fn validate(&self) -> Result<()> {
        id_segment("training_run_id", &self.training_run_id).map(|_| ())
    }
}

/// Declares a request addressing one checkpoint by its `tinker://` path, with the run id and the
/// `"<kind>/<name>"` checkpoint id as path parameters.
macro_rules! checkpoint_request {
    ($(#[$doc:meta])* $name:ident => $id:ident, $resp:ty $(, kind $kind:ident)?) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub struct $name {
            /// The checkpoint.
            pub path: TinkerPath,
        }

        impl ApiRequest for $name {
            type Response = $resp;
            fn endpoint(&self) -> &'static EndpointSpec {
                EndpointId::$id.spec()
            }
            fn path_params(&self) -> Vec<Cow<'_, str>> {
                vec![
                    Cow::Borrowed(self.path.training_run_id()),
                    Cow::Owned(self.path.checkpoint_id()),
                ]
            }
            fn validate(&self) -> Result<()> {
                $(expect_kind(stringify!($name), &self.path, CheckpointKind::$kind)?;)?
                Ok(())
            }
        }
    };
}

checkpoint_request!(
    /// `DELETE /api/v1/training_runs/{id}/checkpoints/{checkpoint_id}`.
    DeleteCheckpoint => DeleteCheckpoint, Ignored
);
checkpoint_request!(
    /// `POST …/checkpoints/{checkpoint_id}/publish` (bodiless; still `Content-Type: application/json`).
    PublishCheckpoint => PublishCheckpoint, Ignored
);
checkpoint_request!(
    /// `DELETE …/checkpoints/{checkpoint_id}/publish`.
    UnpublishCheckpoint => UnpublishCheckpoint, Ignored
);
checkpoint_request!(
    /// `GET …/checkpoints/{checkpoint_id}/external_weights_urls` [0.38]; only for
    /// `external_weights/…` checkpoints.
    GetExternalWeightsUrls => ExternalWeightsUrls, ExternalWeightsUrls, kind ExternalWeights
);
checkpoint_request!(
    /// `GET …/checkpoints/{checkpoint_id}/archive` [0.25]: a 302 with `Location` (read by the
    /// caller, redirects must not be followed) or a 200 [`CheckpointArchiveUrl`].
    GetCheckpointArchiveUrl => CheckpointArchiveUrl, CheckpointArchiveUrl
);

/// `PUT …/checkpoints/{checkpoint_id}/ttl` with `{"ttl_seconds": n | null}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetCheckpointTtl {
    /// The checkpoint.
    pub path: TinkerPath,
    /// The new TTL (`None` removes the expiry).
    pub body: SetTtlRequest,
}

impl ApiRequest for SetCheckpointTtl {
    type Response = Ignored;
    fn endpoint(&self) -> &'static EndpointSpec {
        EndpointId::SetCheckpointTtl.spec()
    }
    fn path_params(&self) -> Vec<Cow<'_, str>> {
        vec![
            Cow::Borrowed(self.path.training_run_id()),
            Cow::Owned(self.path.checkpoint_id()),
        ]
    }
    fn body(&self) -> Result<RequestBody> {
        RequestBody::json(&self.body)
    }
    fn validate(&self) -> Result<()> {
        self.body.validate()
    }
}

/// `GET /api/v1/checkpoints?limit=&offset=` — the user's checkpoints across runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListUserCheckpoints {
    /// Page size (default 100; the CLI uses at most 1000).
    pub limit: u32,
    /// Offset (default 0).
    pub offset: u64,
}

impl Default for ListUserCheckpoints {
    fn default() -> ListUserCheckpoints {
        ListUserCheckpoints {
            limit: 100,
            offset: 0,
        }
    }
}

impl ApiRequest for ListUserCheckpoints {
    type Response = CheckpointsListResponse;
    fn endpoint(&self) -> &'static EndpointSpec {
        EndpointId::ListUserCheckpoints.spec()
    }
    fn query(&self) -> Vec<(&'static str, Option<String>)> {
        vec![
            ("limit", Some(self.limit.to_string())),
            ("offset", Some(self.offset.to_string())),
        ]
    }
    fn validate(&self) -> Result<()> {
        check_limit(self.limit)
    }
}

/// `GET /api/v1/sessions?limit=&offset=&access_scope=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListSessions {
    /// Page size (default 20).
    pub limit: u32,
    /// Offset (default 0).
    pub offset: u64,
    /// Whose sessions (default owned).
    pub access_scope: AccessScope,
}

impl Default for ListSessions {
    fn default() -> ListSessions {
        ListSessions {
            limit: 20,
            offset: 0,
            access_scope: AccessScope::Owned,
        }
    }
}

impl ApiRequest for ListSessions {
    type Response = SessionsListResponse;
    fn endpoint(&self) -> &'static EndpointSpec {
        EndpointId::ListSessions.spec()
    }
    fn query(&self) -> Vec<(&'static str, Option<String>)> {
        vec![
            ("limit", Some(self.limit.to_string())),
            ("offset", Some(self.offset.to_string())),
            ("access_scope", Some(self.access_scope.name().to_owned())),
        ]
    }
    fn validate(&self) -> Result<()> {
        check_limit(self.limit)
    }
}

/// `GET /api/v1/sessions/{session_id}?access_scope=`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetSession {
    /// The session.
    pub session_id: String,
    /// Whose sessions to look in.
    pub access_scope: AccessScope,
}

impl ApiRequest for GetSession {
    type Response = GetSessionResponse;
    fn endpoint(&self) -> &'static EndpointSpec {
        EndpointId::GetSession.spec()
    }
    fn path_params(&self) -> Vec<Cow<'_, str>> {
        vec![Cow::Borrowed(self.session_id.as_str())]
    }
    fn query(&self) -> Vec<(&'static str, Option<String>)> {
        vec![("access_scope", Some(self.access_scope.name().to_owned()))]
    }
    fn validate(&self) -> Result<()> {
        id_segment("session_id", &self.session_id).map(|_| ())
    }
}

/// `PUT /api/v1/sessions/{session_id}/project` with `{"project_id": ...}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssignSessionProject {
    /// The session.
    pub session_id: String,
    /// The destination project.
    pub body: AssignProjectRequest,
}

impl ApiRequest for AssignSessionProject {
    type Response = Ignored;
    fn endpoint(&self) -> &'static EndpointSpec {
        EndpointId::AssignSessionProject.spec()
    }
    fn path_params(&self) -> Vec<Cow<'_, str>> {
        vec![Cow::Borrowed(self.session_id.as_str())]
    }
    fn body(&self) -> Result<RequestBody> {
        RequestBody::json(&self.body)
    }
    fn validate(&self) -> Result<()> {
        id_segment("session_id", &self.session_id)?;
        crate::types::common::check_non_empty("project_id", &self.body.project_id)
    }
}

/// `GET /api/v1/sessions/{session_id}/trace_export` (poll every 5 s until ready).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportSessionTrace {
    /// The session.
    pub session_id: String,
}

impl ApiRequest for ExportSessionTrace {
    type Response = TraceExportResponse;
    fn endpoint(&self) -> &'static EndpointSpec {
        EndpointId::TraceExport.spec()
    }
    fn path_params(&self) -> Vec<Cow<'_, str>> {
        vec![Cow::Borrowed(self.session_id.as_str())]
    }
    fn validate(&self) -> Result<()> {
        id_segment("session_id", &self.session_id).map(|_| ())
    }
}

json_body_request!(SessionSearchRequest => SearchSessions, SessionSearchResponse, validate);
