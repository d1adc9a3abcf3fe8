//! `RestClient`: the resource endpoints (training runs, checkpoints, sessions, billing), which
//! need no session.

use std::sync::Arc;

use super::exec::CallSite;
use super::service::Shared;
use crate::endpoints::{
    ApiRequest, AssignSessionProject, DeleteCheckpoint, ExportSessionTrace, GetAuditLog,
    GetBillingUsage, GetCheckpointArchiveUrl, GetCheckpointStorageUsage, GetExternalWeightsUrls,
    GetSession, GetTrainingRun, ListCheckpoints, ListSessions, ListTrainingRuns,
    ListUserCheckpoints, PublishCheckpoint, SetCheckpointTtl, UnpublishCheckpoint,
};
use crate::error::{Error, Result};
use crate::path::TinkerPath;
use crate::types::{
    AccessScope, AssignProjectRequest, AuditEventType, AuditLogResponse, BillingUsageResponse,
    CheckpointArchiveUrl, CheckpointStorageUsage, CheckpointsListResponse, ExternalWeightsUrls,
    GetSessionResponse, SessionSearchRequest, SessionSearchResponse, SessionsListResponse,
    SetTtlRequest, Timestamp, TraceExportResponse, TrainingRun, TrainingRunsResponse,
    WeightsInfoRequest, WeightsInfoResponse, WhoamiResponse,
};

/// The REST resources of the account: one request per method (after the client's one-time
/// configuration fetch). Obtained from `ServiceClient::create_rest_client`.
///
/// ```no_run
/// # async fn demo(rest: tinker_core::client::RestClient) -> tinker_core::Result<()> {
/// let page = rest.list_user_checkpoints(100, 0).await?;
/// for checkpoint in &page.checkpoints {
///     println!("{}", checkpoint.tinker_path);
/// }
/// rest.set_checkpoint_ttl("tinker://run-1:train:0/weights/step_10", Some(86_400)).await?;
/// rest.publish_checkpoint("tinker://run-1:train:0/weights/step_10").await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RestClient {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for RestClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RestClient")
            .field("base_url", &self.shared.settings.base_url)
            .finish_non_exhaustive()
    }
}

impl RestClient {
    pub(crate) fn new(shared: Arc<Shared>) -> RestClient {
        RestClient { shared }
    }

    /// Sends any typed request of [`crate::endpoints`] with the client's retries and deadline
    /// and decodes its reply (an escape hatch for endpoints without a dedicated method).
    pub async fn execute<R>(&self, method: &'static str, request: R) -> Result<R::Response>
    where
        R: ApiRequest + Send + Sync + 'static,
        R::Response: Send + 'static,
    {
        self.shared.holder().await?;
        let site = CallSite::new(method, self.shared.options.default_deadline);
        self.shared.exec.direct(request, site).await
    }

    /// One page of the user's training runs, newest first.
    pub async fn list_training_runs(
        &self,
        limit: u32,
        offset: u64,
    ) -> Result<TrainingRunsResponse> {
        let request = ListTrainingRuns {
            limit,
            offset,
            ..ListTrainingRuns::default()
        };
        self.execute("RestClient.list_training_runs", request).await
    }

    /// One training run (owned by the user).
    pub async fn get_training_run(&self, training_run_id: &str) -> Result<TrainingRun> {
        let request = GetTrainingRun {
            training_run_id: training_run_id.to_owned(),
            access_scope: AccessScope::Owned,
        };
        self.execute("RestClient.get_training_run", request).await
    }

    /// The training run a `tinker://` path belongs to.
    pub async fn get_training_run_by_tinker_path(&self, path: &str) -> Result<TrainingRun> {
        let path = TinkerPath::parse(path)?;
        self.get_training_run(path.training_run_id()).await
    }

    /// Every checkpoint of one training run.
    pub async fn list_checkpoints(&self, training_run_id: &str) -> Result<CheckpointsListResponse> {
        let request = ListCheckpoints {
            training_run_id: training_run_id.to_owned(),
        };
        self.execute("RestClient.list_checkpoints", request).await
    }

    /// One page of the user's checkpoints across runs, newest first (`limit` up to 1000).
    pub async fn list_user_checkpoints(
        &self,
        limit: u32,
        offset: u64,
    ) -> Result<CheckpointsListResponse> {
        self.execute(
            "RestClient.list_user_checkpoints",
            ListUserCheckpoints { limit, offset },
        )
        .await
    }

    /// Deletes a checkpoint.
    pub async fn delete_checkpoint(&self, path: &str) -> Result<()> {
        let path = TinkerPath::parse(path)?;
        self.execute("RestClient.delete_checkpoint", DeleteCheckpoint { path })
            .await
            .map(|_| ())
    }

    /// Deletes several checkpoints, one request each, and reports every outcome (in order)
    /// instead of stopping at the first failure.
    pub async fn delete_checkpoints(&self, paths: &[&str]) -> Vec<(String, Result<()>)> {
        let mut out = Vec::with_capacity(paths.len());
        for p in paths {
            out.push(((*p).to_owned(), self.delete_checkpoint(p).await));
        }
        out
    }

    /// Makes a checkpoint public.
    pub async fn publish_checkpoint(&self, path: &str) -> Result<()> {
        let path = TinkerPath::parse(path)?;
        self.execute("RestClient.publish_checkpoint", PublishCheckpoint { path })
            .await
            .map(|_| ())
    }

    /// Makes a checkpoint private again.
    pub async fn unpublish_checkpoint(&self, path: &str) -> Result<()> {
        let path = TinkerPath::parse(path)?;
        self.execute(
            "RestClient.unpublish_checkpoint",
            UnpublishCheckpoint { path },
        )
        .await
        .map(|_| ())
    }

    /// Sets (or with `None` removes) a checkpoint's time to live, in seconds from now.
    pub async fn set_checkpoint_ttl(&self, path: &str, ttl_seconds: Option<u64>) -> Result<()> {
        let path = TinkerPath::parse(path)?;
        let request = SetCheckpointTtl {
            path,
            body: SetTtlRequest { ttl_seconds },
        };
        self.execute("RestClient.set_checkpoint_ttl", request)
            .await
            .map(|_| ())
    }

    /// The base model and LoRA settings of saved weights.
    pub async fn get_weights_info(&self, path: &str) -> Result<WeightsInfoResponse> {
        let request = WeightsInfoRequest {
            tinker_path: path.to_owned(),
        };
        self.execute("RestClient.get_weights_info_by_tinker_path", request)
            .await
    }

    /// Signed download URLs of an external-weights export (SDK 0.38).
    pub async fn get_external_weights_urls(&self, path: &str) -> Result<ExternalWeightsUrls> {
        let path = TinkerPath::parse(path)?;
        self.execute(
            "RestClient.get_external_weights_urls",
            GetExternalWeightsUrls { path },
        )
        .await
    }

    /// A signed archive URL of a checkpoint (SDK 0.25 servers).
    pub async fn get_checkpoint_archive_url(&self, path: &str) -> Result<CheckpointArchiveUrl> {
        let path = TinkerPath::parse(path)?;
        self.execute(
            "RestClient.get_checkpoint_archive_url",
            GetCheckpointArchiveUrl { path },
        )
        .await
    }

    /// One page of the user's session ids.
    pub async fn list_sessions(&self, limit: u32, offset: u64) -> Result<SessionsListResponse> {
        let request = ListSessions {
            limit,
            offset,
            access_scope: AccessScope::Owned,
        };
        self.execute("RestClient.list_sessions", request).await
    }

    /// The training runs and samplers of a session.
    pub async fn get_session(&self, session_id: &str) -> Result<GetSessionResponse> {
        let request = GetSession {
            session_id: session_id.to_owned(),
            access_scope: AccessScope::Owned,
        };
        self.execute("RestClient.get_session", request).await
    }

    /// Moves a session to another project.
    pub async fn assign_session_project(&self, session_id: &str, project_id: &str) -> Result<()> {
        let request = AssignSessionProject {
            session_id: session_id.to_owned(),
            body: AssignProjectRequest {
                project_id: project_id.to_owned(),
            },
        };
        self.execute("RestClient.assign_session_project", request)
            .await
            .map(|_| ())
    }

    /// The status of a session's trace export (poll until it is ready).
    pub async fn export_session_trace(&self, session_id: &str) -> Result<TraceExportResponse> {
        let request = ExportSessionTrace {
            session_id: session_id.to_owned(),
        };
        self.execute("RestClient.export_session_trace", request)
            .await
    }

    /// Searches sessions (SDK 0.38, experimental).
    pub async fn search_sessions(
        &self,
        request: SessionSearchRequest,
    ) -> Result<SessionSearchResponse> {
        self.execute("RestClient.search_sessions", request).await
    }

    /// The audit log for one event type, optionally one day (`YYYY-MM-DD`).
    pub async fn get_audit_log(
        &self,
        event_type: AuditEventType,
        day: Option<&str>,
    ) -> Result<AuditLogResponse> {
        let request = GetAuditLog {
            event_type,
            day: day.map(str::to_owned),
        };
        self.execute("RestClient.get_audit_log", request).await
    }

    /// Billing usage events in a window of at most 14 days.
    pub async fn get_billing_usage(
        &self,
        starting_on: Timestamp,
        ending_before: Timestamp,
    ) -> Result<BillingUsageResponse> {
        let request = GetBillingUsage {
            starting_on,
            ending_before,
        };
        self.execute("RestClient.get_billing_usage", request).await
    }

    /// Current checkpoint storage, per project (SDK 0.38).
    pub async fn get_checkpoint_storage_usage(
        &self,
        project_id: Option<&str>,
    ) -> Result<CheckpointStorageUsage> {
        let request = GetCheckpointStorageUsage {
            project_id: project_id.map(str::to_owned),
        };
        self.execute("RestClient.get_checkpoint_storage_usage", request)
            .await
    }

    /// Who the credential belongs to. There is no endpoint: the JWT obtained at startup is
    /// decoded, so this needs a server with JWT auth enabled.
    pub async fn whoami(&self) -> Result<WhoamiResponse> {
        self.shared.holder().await?;
        let ledger = self.shared.exec.ledger.lock();
        let claims = ledger.context().credential().jwt_claims().ok_or_else(|| {
            Error::Config(
                "whoami needs a JWT credential; this server does not use JWT auth (pjwt_auth_enabled is false)".into(),
            )
        })?;
        claims.whoami()
    }
}
