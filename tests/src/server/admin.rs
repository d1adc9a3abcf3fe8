//! Test-control endpoints under `/_admin/` (not part of the Tinker API, never recorded, no auth):
//!
//! | route | what |
//! |---|---|
//! | `GET /_admin/requests` | the recording, a JSON array of exchanges in arrival order |
//! | `DELETE /_admin/requests` | clears the recording |
//! | `GET /_admin/faults` | the fault rules with their `seen` / `fired` counters |
//! | `POST /_admin/faults` | adds rules: a rule, an array of rules, or `{"rules": [...], "replace": true}` |
//! | `DELETE /_admin/faults` | removes every rule |
//! | `GET /_admin/config` | `{"client_config": ..., "dynamic_config": ...}` as served now |
//! | `POST /_admin/config` | merges `{"client_config": {...}, "dynamic_config": {...}}` into the served flags |
//! | `GET /_admin/in_flight` | per endpoint: `{"now": n, "peak": n}` requests being handled |
//! | `DELETE /_admin/in_flight` | resets the peaks to the current counts |
//! | `POST /_admin/jwt/expire` | every JWT issued so far is expired from now on |
//! | `POST /_admin/sessions/{id}/expire` | the session expires now, as if heartbeats had stopped |

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::Json;
use serde_json::{json, Value};

use super::error::{ApiError, ApiResult, JsonBody};
use super::faults::FaultRule;
use super::state::{lock, AppState};

pub(crate) async fn get_requests(State(st): State<Arc<AppState>>) -> Json<Value> {
    Json(serde_json::to_value(st.recorder.snapshot()).unwrap_or_default())
}

pub(crate) async fn clear_requests(State(st): State<Arc<AppState>>) -> Json<Value> {
    st.recorder.clear();
    Json(json!({}))
}

pub(crate) async fn get_faults(State(st): State<Arc<AppState>>) -> Json<Value> {
    Json(serde_json::to_value(st.faults.status()).unwrap_or_default())
}

pub(crate) async fn post_faults(
    State(st): State<Arc<AppState>>,
    JsonBody(body): JsonBody<Value>,
) -> ApiResult<Json<Value>> {
    let bad = |e: serde_json::Error| ApiError::unprocessable(&["body"], e.to_string());
    let (rules, replace): (Vec<FaultRule>, bool) = match &body {
        Value::Array(_) => (serde_json::from_value(body).map_err(bad)?, false),
        Value::Object(o) if o.contains_key("rules") => (
            serde_json::from_value(o["rules"].clone()).map_err(bad)?,
            o.get("replace").and_then(Value::as_bool).unwrap_or(false),
        ),
        _ => (vec![serde_json::from_value(body).map_err(bad)?], false),
    };
    if replace {
        st.faults.replace(rules);
    } else {
        st.faults.add(rules);
    }
    Ok(Json(
        serde_json::to_value(st.faults.status()).unwrap_or_default(),
    ))
}

pub(crate) async fn clear_faults(State(st): State<Arc<AppState>>) -> Json<Value> {
    st.faults.replace(Vec::new());
    Json(json!([]))
}

pub(crate) async fn get_config(State(st): State<Arc<AppState>>) -> Json<Value> {
    Json(json!({"client_config": st.client_config(), "dynamic_config": st.dynamic_config()}))
}

fn merge(target: &mut Value, patch: &Value) {
    if let (Value::Object(t), Value::Object(p)) = (target, patch) {
        for (k, v) in p {
            t.insert(k.clone(), v.clone());
        }
    }
}

pub(crate) async fn post_config(
    State(st): State<Arc<AppState>>,
    JsonBody(body): JsonBody<Value>,
) -> ApiResult<Json<Value>> {
    let bad = |e: serde_json::Error| ApiError::unprocessable(&["body"], e.to_string());
    {
        let mut flags = st.flags.write().unwrap_or_else(|e| e.into_inner());
        let mut client = serde_json::to_value(&flags.0).map_err(bad)?;
        let mut dynamic = serde_json::to_value(&flags.1).map_err(bad)?;
        if let Some(p) = body.get("client_config") {
            merge(&mut client, p);
        }
        if let Some(p) = body.get("dynamic_config") {
            merge(&mut dynamic, p);
        }
        flags.0 = serde_json::from_value(client).map_err(bad)?;
        flags.1 = serde_json::from_value(dynamic).map_err(bad)?;
    }
    Ok(get_config(State(st)).await)
}

pub(crate) async fn expire_jwts(State(st): State<Arc<AppState>>) -> Json<Value> {
    st.auth.expire_all();
    Json(json!({}))
}

pub(crate) async fn expire_session(
    State(st): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let s = st
        .sessions
        .get(&id)
        .map(|s| s.clone())
        .ok_or_else(|| ApiError::not_found(format!("session {id} not found")))?;
    let timeout = st.cfg.session_timeout().unwrap_or(Duration::ZERO) + Duration::from_secs(1);
    let now = Instant::now();
    *lock(&s.last_heartbeat) = now.checked_sub(timeout).unwrap_or(now);
    Ok(Json(json!({})))
}

pub(crate) async fn get_in_flight(State(st): State<Arc<AppState>>) -> Json<Value> {
    Json(Value::Object(
        st.in_flight_table()
            .into_iter()
            .map(|(endpoint, now, peak)| (endpoint, json!({"now": now, "peak": peak})))
            .collect(),
    ))
}

pub(crate) async fn reset_in_flight(State(st): State<Arc<AppState>>) -> Json<Value> {
    st.reset_in_flight_peaks();
    Json(json!({}))
}
