//! Sessions: create, heartbeat, finish, telemetry, and the REST views (list, get, project, trace
//! export, search).
//!
//! A session is alive while heartbeats keep coming: after `session_timeout_secs` without one (or
//! after `finish`) its heartbeats answer 410 and requests naming it fail with 410 and a `detail`
//! that says why.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use http::StatusCode;
use serde::Deserialize;
use serde_json::{json, Value};
use tinker_core::types::{
    CreateSessionRequest, FinishReasonObject, FinishSessionRequest, SearchCursor,
    SessionHeartbeatRequest, SessionSearchRequest, SessionStatus, SessionStatusFilter,
    SessionSummary,
};

use super::error::{ApiError, ApiResult, JsonBody};
use super::state::{lock, timestamp, unix_secs, AppState, Session};
use super::training::Ctx;

/// `POST /api/v1/create_session`.
pub(crate) async fn create_session(
    State(st): State<Arc<AppState>>,
    ctx: Ctx,
    JsonBody(req): JsonBody<CreateSessionRequest>,
) -> ApiResult<Json<Value>> {
    if let Some(reply) = st.replay(&ctx, "create_session") {
        return Ok(Json(reply));
    }
    let n = st.ids.session.fetch_add(1, Ordering::Relaxed) + 1;
    let id = format!("sess-{n:04}");
    let session = Session {
        id: id.clone(),
        created: SystemTime::now(),
        user_metadata: req.user_metadata,
        display_name: req.display_name,
        project_id: Mutex::new(req.project_id),
        last_heartbeat: Mutex::new(Instant::now()),
        finished: Mutex::new(None),
        runs: Mutex::new(Vec::new()),
        samplers: Mutex::new(Vec::new()),
    };
    st.sessions.insert(id.clone(), Arc::new(session));
    let reply = json!({"type": "create_session", "session_id": id});
    st.remember(&ctx, "create_session", &reply);
    Ok(Json(reply))
}

/// `POST /api/v1/session_heartbeat`: 410 once the session finished or expired.
pub(crate) async fn session_heartbeat(
    State(st): State<Arc<AppState>>,
    JsonBody(req): JsonBody<SessionHeartbeatRequest>,
) -> ApiResult<Json<Value>> {
    let s = st.live_session(&req.session_id)?;
    *lock(&s.last_heartbeat) = Instant::now();
    Ok(Json(json!({"type": "session_heartbeat"})))
}

/// `POST /api/v1/sessions/{id}/finish` (first reason wins).
pub(crate) async fn finish_session(
    State(st): State<Arc<AppState>>,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<FinishSessionRequest>,
) -> ApiResult<Json<Value>> {
    let s = session(&st, &id)?;
    lock(&s.finished).get_or_insert((req.reason.reason, req.detail));
    Ok(Json(json!({})))
}

/// `POST /api/v1/telemetry` → exactly `{"status": "accepted"}`.
pub(crate) async fn telemetry(JsonBody(body): JsonBody<Value>) -> ApiResult<Json<Value>> {
    if !body.get("events").is_some_and(Value::is_array) {
        return Err(ApiError::unprocessable(
            &["body", "events"],
            "Field required",
        ));
    }
    Ok(Json(json!({"status": "accepted"})))
}

fn session(st: &AppState, id: &str) -> Result<Arc<Session>, ApiError> {
    st.sessions
        .get(id)
        .map(|s| s.clone())
        .ok_or_else(|| ApiError::not_found(format!("session {id} not found")))
}

/// `limit` / `offset` query parameters.
#[derive(Debug, Deserialize)]
pub(crate) struct Page {
    pub limit: Option<usize>,
    pub offset: Option<usize>,
}

/// Sessions newest first.
fn sessions_newest_first(st: &AppState) -> Vec<Arc<Session>> {
    let mut all: Vec<Arc<Session>> = st.sessions.iter().map(|s| s.clone()).collect();
    all.sort_by(|a, b| b.created.cmp(&a.created).then_with(|| b.id.cmp(&a.id)));
    all
}

/// `GET /api/v1/sessions?limit=&offset=`.
pub(crate) async fn list_sessions(
    State(st): State<Arc<AppState>>,
    Query(page): Query<Page>,
) -> Json<Value> {
    let ids: Vec<String> = sessions_newest_first(&st)
        .into_iter()
        .skip(page.offset.unwrap_or(0))
        .take(page.limit.unwrap_or(20))
        .map(|s| s.id.clone())
        .collect();
    Json(json!({"sessions": ids}))
}

/// `GET /api/v1/sessions/{id}`.
pub(crate) async fn get_session(
    State(st): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let s = session(&st, &id)?;
    let mut reply = json!({
        "training_run_ids": *lock(&s.runs),
        "sampler_ids": *lock(&s.samplers),
        "user_metadata": s.user_metadata,
    });
    if let Some(d) = &s.display_name {
        reply["display_name"] = json!(d);
    }
    Ok(Json(reply))
}

/// `PUT /api/v1/sessions/{id}/project`.
pub(crate) async fn assign_project(
    State(st): State<Arc<AppState>>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<Value>,
) -> ApiResult<Response> {
    let s = session(&st, &id)?;
    let project = body
        .get("project_id")
        .and_then(Value::as_str)
        .filter(|p| !p.is_empty())
        .ok_or_else(|| ApiError::bad_request("project_id is required"))?;
    *lock(&s.project_id) = Some(project.to_owned());
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /api/v1/sessions/{id}/trace_export`: ready at once, a URL to the session's recorded
/// requests as JSONL.
pub(crate) async fn trace_export(
    State(st): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    session(&st, &id)?;
    let mut lines = Vec::new();
    for ex in st.recorder.snapshot() {
        let mentions = ex.path.contains(&id)
            || ex
                .body
                .as_ref()
                .is_some_and(|b| b.to_string().contains(&id))
            || ex
                .body_proto
                .as_ref()
                .is_some_and(|b| b.to_string().contains(&id));
        if mentions {
            lines.extend(serde_json::to_vec(&ex).unwrap_or_default());
            lines.push(b'\n');
        }
    }
    let urls = st.publish_files(BTreeMap::from([(
        "trace.jsonl".to_owned(),
        Arc::new(lines),
    )]));
    Ok(Json(json!({"status": "ready", "url": urls["trace.jsonl"]})))
}

impl AppState {
    pub fn session_status(&self, s: &Session) -> SessionStatus {
        if let Some((reason, detail)) = lock(&s.finished).clone() {
            return SessionStatus::ClientFinished {
                reason: FinishReasonObject { reason },
                detail,
            };
        }
        if self.session_idle_too_long(s).is_some() {
            return SessionStatus::Cancelled {
                detail: Some("heartbeats stopped".into()),
            };
        }
        SessionStatus::Active
    }

    fn session_checkpoints(&self, s: &Session) -> (u64, u64) {
        let runs = lock(&s.runs).clone();
        let g = lock(&self.checkpoints);
        let mut count = 0;
        let mut bytes = 0;
        for c in g.values().filter(|c| runs.contains(&c.run_id)) {
            count += 1;
            bytes += c.snapshot.len() as u64;
        }
        (count, bytes)
    }
}

fn status_matches(status: &SessionStatus, filters: &[SessionStatusFilter]) -> bool {
    filters.iter().any(|f| match (f, status) {
        (SessionStatusFilter::Active, SessionStatus::Active) => true,
        (SessionStatusFilter::Cancelled, SessionStatus::Cancelled { .. }) => true,
        (SessionStatusFilter::Failed, SessionStatus::Failed { .. }) => true,
        (
            SessionStatusFilter::ClientFinished { reasons },
            SessionStatus::ClientFinished { reason, .. },
        ) => reasons.as_ref().is_none_or(|r| r.contains(&reason.reason)),
        _ => false,
    })
}

/// `POST /api/v1/sessions/search`: filters, newest first, keyset pagination.
pub(crate) async fn search_sessions(
    State(st): State<Arc<AppState>>,
    JsonBody(req): JsonBody<SessionSearchRequest>,
) -> ApiResult<Json<Value>> {
    req.validate()?;
    let after = req
        .cursor
        .as_ref()
        .map(|c| (c.last_created_at.unix_seconds(), c.last_session_id.clone()));
    let mut matched = Vec::new();
    for s in sessions_newest_first(&st) {
        let key = (unix_secs(s.created), s.id.clone());
        if let Some(a) = &after {
            // Strictly after the cursor in newest-first order.
            if key >= *a {
                continue;
            }
        }
        let project = lock(&s.project_id).clone();
        let status = st.session_status(&s);
        let ok = req.session_id.as_ref().is_none_or(|id| *id == s.id)
            && req
                .project_ids
                .as_ref()
                .is_none_or(|p| project.as_ref().is_some_and(|x| p.contains(x)))
            && req
                .display_name
                .as_ref()
                .is_none_or(|d| s.display_name.as_ref() == Some(d))
            && req
                .user_metadata
                .iter()
                .all(|(k, v)| s.user_metadata.get(k) == Some(v))
            && req
                .statuses
                .as_ref()
                .is_none_or(|f| status_matches(&status, f));
        if !ok {
            continue;
        }
        let (count, bytes) = st.session_checkpoints(&s);
        matched.push(SessionSummary {
            session_id: s.id.clone(),
            created_at: timestamp(s.created),
            owner: st.cfg.user_urn.clone(),
            project_id: project,
            checkpoints_count: count,
            status: Some(status),
            display_name: s.display_name.clone(),
            user_metadata: Some(s.user_metadata.clone()),
            checkpoint_storage_bytes: Some(bytes),
        });
        if matched.len() > req.limit as usize {
            break;
        }
    }
    let more = matched.len() > req.limit as usize;
    matched.truncate(req.limit as usize);
    let next_cursor = if more {
        matched.last().map(|s| SearchCursor {
            last_created_at: s.created_at.clone(),
            last_session_id: s.session_id.clone(),
        })
    } else {
        None
    };
    Ok(Json(
        json!({"sessions": matched, "next_cursor": next_cursor}),
    ))
}
