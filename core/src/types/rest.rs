//! REST resources: training runs, checkpoints, sessions, search, trace export, external URLs
//! (protocol.md 6.6, 6.9, 9.9).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::common::{check_ttl, Metadata};
use super::session::FinishReason;
use super::timestamp::Timestamp;
use crate::error::{Error, Result};

/// Whose resources a listing covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccessScope {
    /// The caller's own (default).
    #[default]
    Owned,
    /// Everything the caller can read.
    Accessible,
}

impl AccessScope {
    /// The query-string value.
    pub fn name(self) -> &'static str {
        match self {
            AccessScope::Owned => "owned",
            AccessScope::Accessible => "accessible",
        }
    }
}

/// Offset pagination info.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    /// Offset of this page.
    pub offset: u64,
    /// Page size.
    pub limit: u64,
    /// Total items.
    pub total_count: u64,
}

/// `checkpoint_type` of a [`Checkpoint`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckpointType {
    /// `weights/…` from `save_state`.
    Training,
    /// `sampler_weights/…`.
    Sampler,
    /// [0.38] `external_weights/…`.
    External,
}

/// A stored checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// `"<kind>/<name>"`, e.g. `"weights/step-1"`.
    pub checkpoint_id: String,
    /// What it holds.
    pub checkpoint_type: CheckpointType,
    /// When it was saved.
    pub time: Timestamp,
    /// Its `tinker://` path.
    pub tinker_path: String,
    /// Stored size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<u64>,
    /// Whether other users can read it.
    #[serde(default)]
    pub public: bool,
    /// [0.38] Checkpoint metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_metadata: Option<Metadata>,
    /// When it expires, if ever.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Timestamp>,
}

/// A training run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainingRun {
    /// The run's id.
    pub training_run_id: String,
    /// Its base model.
    pub base_model: String,
    /// Owner URN, e.g. `"tml:org_user:u-123"`.
    pub model_owner: String,
    /// Whether it trains a LoRA adapter.
    pub is_lora: bool,
    /// When it last received a request.
    pub last_request_time: Timestamp,
    /// Whether the run's state is corrupted.
    #[serde(default)]
    pub corrupted: bool,
    /// Adapter rank.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lora_rank: Option<u32>,
    /// Latest training checkpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_checkpoint: Option<Checkpoint>,
    /// Latest sampler checkpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sampler_checkpoint: Option<Checkpoint>,
    /// Run metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_metadata: Option<Metadata>,
}

/// Reply of `GET /api/v1/training_runs` (`cursor` required here).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainingRunsResponse {
    /// This page.
    pub training_runs: Vec<TrainingRun>,
    /// Pagination.
    pub cursor: Cursor,
}

/// Reply of the checkpoint listings (per run: unpaginated, `cursor` null; per user: with cursor).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointsListResponse {
    /// The checkpoints, newest first for the per-user listing.
    pub checkpoints: Vec<Checkpoint>,
    /// Pagination, when paginated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<Cursor>,
}

/// Body of `PUT …/checkpoints/{checkpoint_id}/ttl`: a hand-built dict, so clearing the TTL sends
/// an explicit `{"ttl_seconds": null}`.
///
/// ```
/// use tinker_core::types::SetTtlRequest;
/// assert_eq!(serde_json::to_string(&SetTtlRequest { ttl_seconds: None }).unwrap(), r#"{"ttl_seconds":null}"#);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetTtlRequest {
    /// New TTL in seconds, or `None` to remove the expiry.
    pub ttl_seconds: Option<u64>,
}

impl SetTtlRequest {
    /// Checks a given TTL is in range.
    pub fn validate(&self) -> Result<()> {
        match self.ttl_seconds {
            Some(ttl) => check_ttl("ttl_seconds", ttl),
            None => Ok(()),
        }
    }
}

/// Reply of `GET …/external_weights_urls` [0.38] (both fields required).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExternalWeightsUrls {
    /// Relative file path → signed download URL.
    pub urls: BTreeMap<String, String>,
    /// When the URLs stop working.
    pub expires: Timestamp,
}

/// 200 reply of the 0.25 `GET …/archive` call (the other answer is a 302 with `Location`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointArchiveUrl {
    /// Signed download URL.
    pub url: String,
    /// When it stops working.
    pub expires: Timestamp,
}

/// Reply of `GET /api/v1/sessions`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionsListResponse {
    /// Session ids.
    pub sessions: Vec<String>,
}

/// Reply of `GET /api/v1/sessions/{session_id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GetSessionResponse {
    /// Training runs of the session.
    pub training_run_ids: Vec<String>,
    /// Sampling sessions of the session.
    pub sampler_ids: Vec<String>,
    /// [0.38] Session metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_metadata: Option<Metadata>,
    /// [0.38] Display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
}

/// Body of `PUT /api/v1/sessions/{session_id}/project`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssignProjectRequest {
    /// The project to move the session to.
    pub project_id: String,
}

/// Status of a trace export.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TraceExportStatus {
    /// Still being built; poll again in 5 s.
    Pending,
    /// `url` is ready.
    Ready,
    /// `error` says why.
    Failed,
}

/// Reply of `GET /api/v1/sessions/{session_id}/trace_export`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceExportResponse {
    /// Export status.
    pub status: TraceExportStatus,
    /// Signed download URL (valid ~1 h) once ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Failure reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Whose sessions a search covers.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SessionOwner {
    /// The caller's own (default).
    #[default]
    Own,
    /// Everything the caller can read.
    Accessible,
    /// Sessions of the given users (1-10 URNs).
    User {
        /// Owner URNs.
        owner_urns: Vec<String>,
    },
}

/// A status filter of a session search.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SessionStatusFilter {
    /// Active sessions.
    Active,
    /// Cancelled sessions.
    Cancelled,
    /// Failed sessions.
    Failed,
    /// Sessions the client finished, optionally only for these reasons.
    ClientFinished {
        /// Reasons to match; omitted = any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reasons: Option<Vec<FinishReason>>,
    },
}

/// Keyset cursor of a session search.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SearchCursor {
    /// `created_at` of the last session seen (timezone-aware).
    pub last_created_at: Timestamp,
    /// Id of the last session seen.
    pub last_session_id: String,
}

/// Body of `POST /api/v1/sessions/search` [0.38, experimental]; defaults sent, nulls omitted.
///
/// ```
/// use tinker_core::types::SessionSearchRequest;
/// let req = SessionSearchRequest { display_name: Some("nightly".into()), ..Default::default() };
/// assert_eq!(
///     serde_json::to_string(&req).unwrap(),
///     r#"{"user_metadata":{},"display_name":"nightly","owner":{"type":"own"},"limit":50}"#
/// );
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionSearchRequest {
    /// Match one session id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// Match these projects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_ids: Option<Vec<String>>,
    /// Metadata that must match (always sent, `{}` = any).
    #[serde(default)]
    pub user_metadata: Metadata,
    /// Match a display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// Whose sessions.
    #[serde(default)]
    pub owner: SessionOwner,
    /// Status filters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub statuses: Option<Vec<SessionStatusFilter>>,
    /// Page size, 1-200 (default 50).
    #[serde(default = "default_search_limit")]
    pub limit: u32,
    /// Continue after this cursor (a previous reply's `next_cursor`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<SearchCursor>,
}

fn default_search_limit() -> u32 {
    50
}

impl Default for SessionSearchRequest {
    fn default() -> SessionSearchRequest {
        SessionSearchRequest {
            session_id: None,
            project_ids: None,
            user_metadata: Metadata::new(),
            display_name: None,
            owner: SessionOwner::Own,
            statuses: None,
            limit: default_search_limit(),
            cursor: None,
        }
    }
}

impl SessionSearchRequest {
    /// Checks the page size (1-200) and owner URN count (1-10).
    pub fn validate(&self) -> Result<()> {
        if !(1..=200).contains(&self.limit) {
            return Err(Error::invalid(
                "limit",
                format!("must be between 1 and 200, got {}", self.limit),
            ));
        }
        if let SessionOwner::User { owner_urns } = &self.owner {
            if !(1..=10).contains(&owner_urns.len()) {
                return Err(Error::invalid(
                    "owner.owner_urns",
                    format!("give between 1 and 10 owner URNs, got {}", owner_urns.len()),
                ));
            }
        }
        Ok(())
    }
}

/// Why a failed session failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SessionFailureReason {
    /// A request failed.
    Request {
        /// The failed request.
        request_id: String,
        /// Its type.
        request_type: String,
    },
    /// A training run failed.
    TrainingRun {
        /// The failed run.
        training_run_id: String,
    },
    /// A sampling session failed.
    SamplingSession {
        /// The failed sampling session.
        sampling_session_id: String,
    },
}

/// Status of a searched session, tagged by `type`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SessionStatus {
    /// Still running.
    Active,
    /// Cancelled.
    Cancelled {
        /// Free text.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        detail: Option<String>,
    },
    /// Finished by the client (`sessions/{id}/finish`).
    ClientFinished {
        /// Why.
        reason: super::session::FinishReasonObject,
        /// Free text.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        detail: Option<String>,
    },
    /// Failed.
    Failed {
        /// `"user"` or `"internal"`.
        category: String,
        /// What failed.
        reason: SessionFailureReason,
        /// The failure message.
        message: String,
    },
}

/// One session in a search reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionSummary {
    /// The session id.
    pub session_id: String,
    /// When it was created.
    pub created_at: Timestamp,
    /// Owner URN.
    pub owner: String,
    /// Project, if any (required key, nullable).
    #[serde(deserialize_with = "super::common::nullable")]
    pub project_id: Option<String>,
    /// Number of checkpoints.
    pub checkpoints_count: u64,
    /// Status, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<SessionStatus>,
    /// Display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// Session metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_metadata: Option<Metadata>,
    /// Stored checkpoint bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint_storage_bytes: Option<u64>,
}

/// Reply of `sessions/search`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionSearchResponse {
    /// This page.
    pub sessions: Vec<SessionSummary>,
    /// Pass back as `cursor` for the next page; `None` at the end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<SearchCursor>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_protocol_training_run_listing_decodes() {
        let r: TrainingRunsResponse = serde_json::from_value(json!({
            "training_runs": [{"training_run_id": "sess-0001:train:0", "base_model": "Qwen/Qwen3-8B",
               "model_owner": "tml:org_user:u-123", "is_lora": true, "corrupted": false, "lora_rank": 32,
               "last_request_time": "2026-08-01T12:00:00Z", "last_checkpoint": null,
               "last_sampler_checkpoint": null, "user_metadata": null}],
            "cursor": {"offset": 0, "limit": 20, "total_count": 1}}))
        .unwrap();
        assert_eq!(r.training_runs[0].lora_rank, Some(32));
        assert_eq!(r.cursor.total_count, 1);
        let err = serde_json::from_value::<TrainingRunsResponse>(json!({"training_runs": []}))
            .unwrap_err()
            .to_string();
        assert!(err.contains("cursor"), "{err}");
        let err = serde_json::from_value::<TrainingRun>(
            json!({"training_run_id": "x", "base_model": "b", "model_owner": "o", "is_lora": true}),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("last_request_time"), "{err}");
    }

    #[test]
    fn checkpoints_decode_all_three_types_and_optional_fields() {
        let r: CheckpointsListResponse = serde_json::from_value(json!({"checkpoints": [
            {"checkpoint_id": "weights/step-1", "checkpoint_type": "training", "time": "2026-08-01T12:00:00Z",
             "tinker_path": "tinker://r/weights/step-1", "size_bytes": 10, "public": true, "expires_at": "2026-09-01T00:00:00+00:00"},
            {"checkpoint_id": "sampler_weights/s", "checkpoint_type": "sampler", "time": "2026-08-01T12:00:00Z", "tinker_path": "tinker://r/sampler_weights/s"},
            {"checkpoint_id": "external_weights/e", "checkpoint_type": "external", "time": "2026-08-01T12:00:00Z",
             "tinker_path": "tinker://r/external_weights/e", "user_metadata": {"k": "v"}, "future_field": 1}],
            "cursor": null}))
        .unwrap();
        assert_eq!(r.cursor, None);
        assert!(r.checkpoints[0].public && !r.checkpoints[1].public);
        assert_eq!(r.checkpoints[2].checkpoint_type, CheckpointType::External);
        assert!(r.checkpoints[0].expires_at.is_some());
        let bad = json!({"checkpoints": [{"checkpoint_id": "w/x", "checkpoint_type": "training", "time": "noon", "tinker_path": "t"}]});
        let err = serde_json::from_value::<CheckpointsListResponse>(bad)
            .unwrap_err()
            .to_string();
        assert!(err.contains("noon"), "{err}");
    }

    #[test]
    fn ttl_body_keeps_null_and_checks_range() {
        assert_eq!(
            serde_json::to_value(SetTtlRequest {
                ttl_seconds: Some(7200)
            })
            .unwrap(),
            json!({"ttl_seconds": 7200})
        );
        assert_eq!(
            serde_json::to_value(SetTtlRequest { ttl_seconds: None }).unwrap(),
            json!({"ttl_seconds": null})
        );
        assert!(SetTtlRequest {
            ttl_seconds: Some(10)
        }
        .validate()
        .is_err());
        assert!(SetTtlRequest { ttl_seconds: None }.validate().is_ok());
    }

    #[test]
    fn session_endpoints_decode() {
        let s: GetSessionResponse = serde_json::from_value(
            json!({"training_run_ids": ["a"], "sampler_ids": [], "display_name": "n"}),
        )
        .unwrap();
        assert_eq!(s.display_name.as_deref(), Some("n"));
        let l: SessionsListResponse =
            serde_json::from_value(json!({"sessions": ["sess-0001"]})).unwrap();
        assert_eq!(l.sessions, ["sess-0001"]);
        let t: TraceExportResponse =
            serde_json::from_value(json!({"status": "ready", "url": "https://x"})).unwrap();
        assert_eq!(t.status, TraceExportStatus::Ready);
        let u: ExternalWeightsUrls = serde_json::from_value(
            json!({"urls": {"adapter_config.json": "https://a"}, "expires": "2026-08-01T13:00:00Z"}),
        )
        .unwrap();
        assert_eq!(u.urls.len(), 1);
        let err = serde_json::from_value::<ExternalWeightsUrls>(
            json!({"expires": "2026-08-01T13:00:00Z"}),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("urls"), "{err}");
    }

    #[test]
    fn session_search_request_shapes_and_limits() {
        let req = SessionSearchRequest {
            owner: SessionOwner::User {
                owner_urns: vec!["tml:org_user:u-1".into()],
            },
            statuses: Some(vec![
                SessionStatusFilter::Active,
                SessionStatusFilter::ClientFinished {
                    reasons: Some(vec![FinishReason::Success]),
                },
            ]),
            cursor: Some(SearchCursor {
                last_created_at: Timestamp::parse("2026-08-01T12:00:00Z").unwrap(),
                last_session_id: "s".into(),
            }),
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_value(&req).unwrap(),
            json!({"user_metadata": {}, "owner": {"type": "user", "owner_urns": ["tml:org_user:u-1"]},
                   "statuses": [{"type": "active"}, {"type": "client_finished", "reasons": ["success"]}],
                   "limit": 50, "cursor": {"last_created_at": "2026-08-01T12:00:00Z", "last_session_id": "s"}})
        );
        assert!(req.validate().is_ok());
        assert!(SessionSearchRequest {
            limit: 0,
            ..Default::default()
        }
        .validate()
        .is_err());
        assert!(SessionSearchRequest {
            limit: 201,
            ..Default::default()
        }
        .validate()
        .is_err());
        let none = SessionSearchRequest {
            owner: SessionOwner::User { owner_urns: vec![] },
            ..Default::default()
        };
        assert!(none
            .validate()
            .unwrap_err()
            .to_string()
            .contains("owner_urns"));
    }

    #[test]
    fn session_search_reply_decodes_every_status() {
        let r: SessionSearchResponse = serde_json::from_value(json!({"sessions": [
            {"session_id": "a", "created_at": "2026-08-01T12:00:00Z", "owner": "o", "project_id": null, "checkpoints_count": 0, "status": {"type": "active"}},
            {"session_id": "b", "created_at": "2026-08-01T12:00:00Z", "owner": "o", "project_id": "p", "checkpoints_count": 1,
             "status": {"type": "client_finished", "reason": {"type": "errored"}, "detail": "boom"}},
            {"session_id": "c", "created_at": "2026-08-01T12:00:00Z", "owner": "o", "project_id": null, "checkpoints_count": 0,
             "status": {"type": "failed", "category": "user", "reason": {"type": "request", "request_id": "r", "request_type": "Sample"}, "message": "m"}},
            {"session_id": "d", "created_at": "2026-08-01T12:00:00Z", "owner": "o", "project_id": null, "checkpoints_count": 0,
             "status": {"type": "cancelled"}, "checkpoint_storage_bytes": 5}],
            "next_cursor": {"last_created_at": "2026-08-01T12:00:00Z", "last_session_id": "d"}}))
        .unwrap();
        assert_eq!(r.sessions.len(), 4);
        assert!(matches!(
            r.sessions[1].status,
            Some(SessionStatus::ClientFinished { .. })
        ));
        assert!(matches!(
            r.sessions[2].status,
            Some(SessionStatus::Failed {
                reason: SessionFailureReason::Request { .. },
                ..
            })
        ));
        assert_eq!(r.next_cursor.unwrap().last_session_id, "d");
        let err = serde_json::from_value::<SessionSummary>(json!({"session_id": "a", "created_at": "2026-08-01T12:00:00Z", "owner": "o", "checkpoints_count": 0}))
            .unwrap_err()
            .to_string();
        assert!(err.contains("project_id"), "{err}");
    }
}
