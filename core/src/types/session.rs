//! Session lifecycle bodies: `create_session`, `session_heartbeat`, `sessions/{id}/finish`
//! (protocol.md 4.3-4.8).

use serde::{Deserialize, Serialize};

use super::common::{type_tag, Metadata};

/// Body of `POST /api/v1/create_session`.
///
/// ```
/// use tinker_core::types::CreateSessionRequest;
/// let req = CreateSessionRequest::new("0.38.0");
/// assert_eq!(
///     serde_json::to_string(&req).unwrap(),
///     r#"{"tags":[],"user_metadata":{},"sdk_version":"0.38.0","type":"create_session"}"#
/// );
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CreateSessionRequest {
    /// Session tags (from `TINKER_TAGS`), `[]` when none.
    pub tags: Vec<String>,
    /// Always an object (`{}` when none).
    pub user_metadata: Metadata,
    /// The SDK version the client speaks.
    pub sdk_version: String,
    /// Project to file the session under; omitted when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_id: Option<String>,
    /// [0.38] Human-readable session name; omitted when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// Constant `"create_session"`.
    #[serde(rename = "type")]
    pub kind: CreateSessionTag,
}

impl CreateSessionRequest {
    /// A session with no tags, no metadata and no project.
    pub fn new(sdk_version: impl Into<String>) -> CreateSessionRequest {
        CreateSessionRequest {
            tags: Vec::new(),
            user_metadata: Metadata::new(),
            sdk_version: sdk_version.into(),
            project_id: None,
            display_name: None,
            kind: CreateSessionTag::CreateSession,
        }
    }
}

type_tag!(
    /// The `"type": "create_session"` tag.
    CreateSessionTag = CreateSession "create_session"
);
type_tag!(
    /// The `"type": "session_heartbeat"` tag.
    HeartbeatTag = SessionHeartbeat "session_heartbeat"
);

/// Reply of `create_session`. The three messages are logged at their level; the session proceeds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateSessionResponse {
    /// The new session's id.
    pub session_id: String,
    /// Informational message for the user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub info_message: Option<String>,
    /// Warning for the user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning_message: Option<String>,
    /// Error message for the user (the session still proceeds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
}

/// Body of `POST /api/v1/session_heartbeat`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionHeartbeatRequest {
    /// The session being kept alive.
    pub session_id: String,
    /// Constant `"session_heartbeat"`.
    #[serde(rename = "type")]
    pub kind: HeartbeatTag,
}

impl SessionHeartbeatRequest {
    /// A heartbeat for `session_id`.
    pub fn new(session_id: impl Into<String>) -> SessionHeartbeatRequest {
        SessionHeartbeatRequest {
            session_id: session_id.into(),
            kind: HeartbeatTag::SessionHeartbeat,
        }
    }
}

/// Reply of `session_heartbeat`: `{"type": "session_heartbeat"}`; an empty object also validates.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SessionHeartbeatResponse {
    /// `"session_heartbeat"` when present.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
}

/// Why a session ended (`reason.type` of `sessions/{id}/finish`, and of `client_finished` statuses).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// The program completed normally.
    Success,
    /// The program failed with an error.
    Errored,
    /// The program was interrupted (signal, cancellation).
    Interrupted,
}

impl FinishReason {
    /// The wire name.
    pub fn name(self) -> &'static str {
        match self {
            FinishReason::Success => "success",
            FinishReason::Errored => "errored",
            FinishReason::Interrupted => "interrupted",
        }
    }
}

/// The `{"type": "<reason>"}` object of a finish request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FinishReasonObject {
    /// The reason.
    #[serde(rename = "type")]
    pub reason: FinishReason,
}

/// Body of `POST /api/v1/sessions/{session_id}/finish` [0.38]. A hand-built dict in the SDK, so
/// `detail` is sent as an explicit `null` when absent. The session id travels in the path.
///
/// ```
/// use tinker_core::types::{FinishReason, FinishSessionRequest};
/// let body = FinishSessionRequest::new(FinishReason::Success, None);
/// assert_eq!(serde_json::to_string(&body).unwrap(), r#"{"reason":{"type":"success"},"detail":null}"#);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FinishSessionRequest {
    /// Why the session ended.
    pub reason: FinishReasonObject,
    /// Free text, `null` when none.
    pub detail: Option<String>,
}

impl FinishSessionRequest {
    /// A finish body.
    pub fn new(reason: FinishReason, detail: Option<String>) -> FinishSessionRequest {
        FinishSessionRequest {
            reason: FinishReasonObject { reason },
            detail,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn create_session_sends_defaults_and_omits_unset_optionals() {
        let mut req = CreateSessionRequest::new("0.38.0");
        req.user_metadata.insert("exp".into(), json!("capture"));
        assert_eq!(
            serde_json::to_value(&req).unwrap(),
            json!({"tags": [], "user_metadata": {"exp": "capture"}, "sdk_version": "0.38.0", "type": "create_session"})
        );
        req.project_id = Some("proj-1".into());
        req.display_name = Some("nightly".into());
        let v = serde_json::to_value(&req).unwrap();
        assert_eq!(v["project_id"], "proj-1");
        assert_eq!(v["display_name"], "nightly");
    }

    #[test]
    fn create_session_reply_needs_a_session_id_and_accepts_null_messages() {
        let r: CreateSessionResponse = serde_json::from_str(
            r#"{"type": "create_session", "session_id": "sess-0001", "info_message": null, "warning_message": "slow", "error_message": null}"#,
        )
        .unwrap();
        assert_eq!(r.session_id, "sess-0001");
        assert_eq!(r.warning_message.as_deref(), Some("slow"));
        let err = serde_json::from_str::<CreateSessionResponse>(r#"{"type": "create_session"}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("session_id"), "{err}");
    }

    #[test]
    fn heartbeat_body_and_both_reply_shapes() {
        assert_eq!(
            serde_json::to_value(SessionHeartbeatRequest::new("sess-0001")).unwrap(),
            json!({"session_id": "sess-0001", "type": "session_heartbeat"})
        );
        let r: SessionHeartbeatResponse =
            serde_json::from_str(r#"{"type": "session_heartbeat"}"#).unwrap();
        assert_eq!(r.kind.as_deref(), Some("session_heartbeat"));
        let r: SessionHeartbeatResponse = serde_json::from_str("{}").unwrap();
        assert_eq!(r.kind, None);
    }

    #[test]
    fn finish_keeps_an_explicit_null_detail() {
        assert_eq!(
            serde_json::to_value(FinishSessionRequest::new(
                FinishReason::Success,
                Some("done".into())
            ))
            .unwrap(),
            json!({"reason": {"type": "success"}, "detail": "done"})
        );
        assert_eq!(
            serde_json::to_value(FinishSessionRequest::new(FinishReason::Interrupted, None))
                .unwrap(),
            json!({"reason": {"type": "interrupted"}, "detail": null})
        );
    }

    #[test]
    fn a_wrong_type_tag_is_rejected() {
        let err = serde_json::from_str::<SessionHeartbeatRequest>(
            r#"{"session_id": "s", "type": "other"}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("session_heartbeat"), "{err}");
    }
}
