//! Configuration, auth, health and the REST resources: training runs, checkpoints (list, delete,
//! publish, TTL, archive, external URLs), weights_info, audit, billing, API-key info, downloads.
//!
//! Run ids contain `:` and checkpoint ids a `/` (`weights/step-1`), so everything under
//! `/api/v1/training_runs/` goes through one wildcard route split by hand.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use http::{header, HeaderMap, Method, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};
use tinker_core::path::CheckpointKind;
use tinker_core::types::{
    AccessScope, CheckpointsListResponse, Cursor, SetTtlRequest, Timestamp, TrainingRun,
    WeightsInfoRequest,
};

use super::auth::Credential;
use super::error::{parse_json, ApiError, ApiResult, JsonBody};
use super::sessions::Page;
use super::state::{lock, timestamp, unix_secs, AppState, CheckpointRecord};
use crate::model::Snapshot;

/// `POST /api/v1/client/config`.
pub(crate) async fn client_config(State(st): State<Arc<AppState>>) -> Json<Value> {
    Json(serde_json::to_value(st.client_config()).unwrap_or_default())
}

/// `POST /api/v1/client/dynamic_config`.
pub(crate) async fn dynamic_config(State(st): State<Arc<AppState>>) -> Json<Value> {
    Json(serde_json::to_value(st.dynamic_config()).unwrap_or_default())
}

/// `POST /api/v1/auth/token` → `{"jwt"}`.
pub(crate) async fn auth_token(State(st): State<Arc<AppState>>) -> Json<Value> {
    Json(json!({"jwt": st.issue_jwt()}))
}

/// `GET /api/v1/healthz`.
pub(crate) async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// `GET /api/v1/get_server_capabilities`.
pub(crate) async fn capabilities(State(st): State<Arc<AppState>>) -> Json<Value> {
    Json(json!({"supported_models": st.cfg.models}))
}

/// `GET /api/v1/auth/apikey/me`.
pub(crate) async fn apikey_me(State(st): State<Arc<AppState>>) -> Json<Value> {
    Json(json!({
        "key_id": 1, "name": "local-server key", "note": "accepted by tinker-local-server",
        "details": {"org_details": {"name": st.cfg.org_id}, "user_details": {"email": st.cfg.email}},
    }))
}

/// `DELETE /api/v1/auth/apikey/me`: revokes the presented API key.
pub(crate) async fn revoke_apikey(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    match st.authenticate(&headers)? {
        Credential::ApiKey(key) => {
            st.auth.revoke_key(&key);
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        Credential::Jwt(_) => Err(ApiError::bad_request("only API keys can be revoked")),
    }
}

/// The query of `GET /training_runs`.
#[derive(Debug, Deserialize)]
pub(crate) struct RunsQuery {
    limit: Option<u64>,
    offset: Option<u64>,
    access_scope: Option<AccessScope>,
    project_id: Option<String>,
}

impl AppState {
    fn latest_checkpoint(&self, run: &str, kind: CheckpointKind) -> Option<CheckpointRecord> {
        let now = SystemTime::now();
        lock(&self.checkpoints)
            .values()
            .filter(|c| c.run_id == run && c.kind == kind && !c.expired(now))
            .max_by_key(|c| c.order)
            .cloned()
    }

    fn training_run_wire(&self, id: &str) -> Result<TrainingRun, ApiError> {
        let run = self
            .runs
            .get(id)
            .map(|r| r.clone())
            .ok_or_else(|| ApiError::not_found(format!("training run {id} not found")))?;
        let last = *lock(&run.last_request);
        Ok(TrainingRun {
            training_run_id: run.id.clone(),
            base_model: run.info.base_model.clone(),
            model_owner: self.cfg.user_urn.clone(),
            is_lora: true,
            last_request_time: timestamp(last),
            corrupted: self.recovery.is_corrupted(id),
            lora_rank: Some(run.info.lora.rank),
            last_checkpoint: self
                .latest_checkpoint(id, CheckpointKind::Weights)
                .map(|c| c.to_wire()),
            last_sampler_checkpoint: self
                .latest_checkpoint(id, CheckpointKind::SamplerWeights)
                .map(|c| c.to_wire()),
            user_metadata: run.user_metadata.clone(),
        })
    }
}

/// `GET /api/v1/training_runs?limit=&offset=&access_scope=[&project_id=]` (newest first).
pub(crate) async fn list_training_runs(
    State(st): State<Arc<AppState>>,
    Query(q): Query<RunsQuery>,
) -> ApiResult<Json<Value>> {
    let _ = q.access_scope;
    let mut runs: Vec<(SystemTime, String)> = st
        .runs
        .iter()
        .filter(|r| {
            q.project_id.as_ref().is_none_or(|p| {
                st.sessions
                    .get(&r.session_id)
                    .is_some_and(|s| lock(&s.project_id).as_ref() == Some(p))
            })
        })
        .map(|r| (r.created, r.id.clone()))
        .collect();
    runs.sort_by(|a, b| b.cmp(a));
    let (limit, offset) = (q.limit.unwrap_or(20), q.offset.unwrap_or(0));
    let page = runs
        .iter()
        .skip(offset as usize)
        .take(limit as usize)
        .map(|(_, id)| st.training_run_wire(id))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Json(json!({
        "training_runs": page,
        "cursor": Cursor { offset, limit, total_count: runs.len() as u64 },
    })))
}

/// Everything under `/api/v1/training_runs/{run}/…`.
pub(crate) async fn training_run_resource(
    State(st): State<Arc<AppState>>,
    method: Method,
    headers: HeaderMap,
    Path(rest): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    let parts: Vec<&str> = rest.split('/').collect();
    let not_allowed = || ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed");
    match parts.as_slice() {
        [run] => match method {
            Method::GET => Ok(Json(st.training_run_wire(run)?).into_response()),
            _ => Err(not_allowed()),
        },
        [run, "checkpoints"] => match method {
            Method::GET => {
                if !st.runs.contains_key(*run) {
                    return Err(ApiError::not_found(format!("training run {run} not found")));
                }
                let now = SystemTime::now();
                let mut list: Vec<CheckpointRecord> = lock(&st.checkpoints)
                    .values()
                    .filter(|c| c.run_id == *run && !c.expired(now))
                    .cloned()
                    .collect();
                list.sort_by_key(|c| c.order);
                let reply = CheckpointsListResponse {
                    checkpoints: list.iter().map(CheckpointRecord::to_wire).collect(),
                    cursor: None,
                };
                Ok(Json(reply).into_response())
            }
            _ => Err(not_allowed()),
        },
        [run, "checkpoints", kind, name, tail @ ..] => {
            let kind = CheckpointKind::from_segment(kind).ok_or_else(|| {
                ApiError::bad_request(format!(
                    "invalid checkpoint id {kind}/{name}: the kind must be weights, sampler_weights or external_weights"
                ))
            })?;
            let checkpoint_id = format!("{}/{name}", kind.segment());
            checkpoint_action(&st, &method, &headers, run, &checkpoint_id, tail, &body).await
        }
        _ => Err(ApiError::not_found("Not Found")),
    }
}

async fn checkpoint_action(
    st: &Arc<AppState>,
    method: &Method,
    headers: &HeaderMap,
    run: &str,
    checkpoint_id: &str,
    tail: &[&str],
    body: &Bytes,
) -> ApiResult<Response> {
    let key = (run.to_owned(), checkpoint_id.to_owned());
    let record = st.checkpoint(run, checkpoint_id)?;
    let not_allowed = || ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed");
    match (tail, method) {
        ([], &Method::DELETE) => {
            lock(&st.checkpoints).remove(&key);
            st.audit_event("checkpoint_deleted", Some(run), Some(&record.tinker_path()));
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        ([], &Method::GET) => Ok(Json(record.to_wire()).into_response()),
        (["publish"], &Method::POST | &Method::DELETE) => {
            let publish = method == Method::POST;
            let mut g = lock(&st.checkpoints);
            let c = g
                .get_mut(&key)
                .ok_or_else(|| ApiError::not_found("checkpoint not found"))?;
            if c.public == publish {
                return Err(ApiError::conflict(if publish {
                    "checkpoint is already public"
                } else {
                    "checkpoint is already private"
                }));
            }
            c.public = publish;
            drop(g);
            st.audit_event(
                if publish {
                    "checkpoint_published"
                } else {
                    "checkpoint_unpublished"
                },
                Some(run),
                Some(&record.tinker_path()),
            );
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        (["ttl"], &Method::PUT) => {
            let req: SetTtlRequest = parse_json(body)?;
            req.validate()?;
            let mut g = lock(&st.checkpoints);
            if let Some(c) = g.get_mut(&key) {
                c.expires_at = req
                    .ttl_seconds
                    .map(|t| SystemTime::now() + Duration::from_secs(t));
            }
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        (["external_weights_urls"], &Method::GET) => {
            if record.kind != CheckpointKind::ExternalWeights {
                return Err(ApiError::bad_request(
                    "external_weights_urls is only available for external_weights/ checkpoints",
                ));
            }
            let urls = st.publish_files(checkpoint_files(st, &record)?);
            let expires = timestamp(SystemTime::now() + Duration::from_secs(3600));
            Ok(Json(json!({"urls": urls, "expires": expires})).into_response())
        }
        (["archive"], &Method::GET) => archive(st, headers, &record),
        (_, m) if [Method::GET, Method::POST, Method::PUT, Method::DELETE].contains(m) => {
            match tail {
                [] | ["publish"] | ["ttl"] | ["external_weights_urls"] | ["archive"] => {
                    Err(not_allowed())
                }
                _ => Err(ApiError::not_found("Not Found")),
            }
        }
        _ => Err(not_allowed()),
    }
}

/// The files of a checkpoint export: the adapter config, the toy model's snapshot, and that
/// snapshot again as a one-tensor safetensors file, so the export has the layout of a PEFT
/// adapter (what the Hugging Face upload checks for).
fn checkpoint_files(
    st: &AppState,
    record: &CheckpointRecord,
) -> Result<BTreeMap<String, Arc<Vec<u8>>>, ApiError> {
    let snap = Snapshot::from_bytes(&record.snapshot)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.message))?;
    let run = st.runs.get(&record.run_id).map(|r| r.info.clone());
    let config = json!({
        "base_model_name_or_path": snap.base_model(),
        "peft_type": "LORA",
        "r": snap.rank(),
        "toy_model": {"vocab_size": snap.vocab_size(), "format": "tinker-testkit snapshot"},
        "train_mlp": run.as_ref().is_none_or(|r| r.lora.train_mlp),
        "train_attn": run.as_ref().is_none_or(|r| r.lora.train_attn),
        "train_unembed": run.as_ref().is_none_or(|r| r.lora.train_unembed),
    });
    Ok(BTreeMap::from([
        (
            "adapter_config.json".to_owned(),
            Arc::new(serde_json::to_vec_pretty(&config).unwrap_or_default()),
        ),
        (
            "adapter_model.safetensors".to_owned(),
            Arc::new(safetensors_of(&record.snapshot)),
        ),
        ("toy_model.snapshot".to_owned(), record.snapshot.clone()),
    ]))
}

/// `bytes` as a safetensors file holding one `U8` tensor named `snapshot`.
fn safetensors_of(bytes: &[u8]) -> Vec<u8> {
    let header = json!({"snapshot": {
        "dtype": "U8", "shape": [bytes.len()], "data_offsets": [0, bytes.len()]}})
    .to_string();
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(bytes);
    out
}

/// The 0.25 archive URL: 503 while "building", then 302 (or 200 JSON) to a tar download.
fn archive(
    st: &Arc<AppState>,
    _headers: &HeaderMap,
    record: &CheckpointRecord,
) -> ApiResult<Response> {
    let started = *st
        .archives
        .entry(record.tinker_path())
        .or_insert_with(Instant::now);
    if started.elapsed() < Duration::from_millis(st.cfg.archive_build_ms) {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the checkpoint archive is being built; retry later",
        ));
    }
    // The archive is laid out (not built) here and streamed by `archive_download`, so its size
    // can be far larger than memory (`archive_padding_bytes`).
    let urls = st.publish_files(checkpoint_files(st, record)?);
    let url = urls
        .values()
        .next()
        .and_then(|u| u.rsplit_once('/'))
        .map(|(dir, _)| format!("{}/archive.tar", dir.replacen("/_files/", "/_archives/", 1)))
        .ok_or_else(|| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "no checkpoint files"))?;
    let expires = SystemTime::now() + Duration::from_secs(900);
    if st.cfg.archive_redirect {
        Ok((
            StatusCode::FOUND,
            [
                (header::LOCATION, url),
                (header::EXPIRES, httpdate::fmt_http_date(expires)),
            ],
        )
            .into_response())
    } else {
        Ok(Json(json!({"url": url, "expires": timestamp(expires)})).into_response())
    }
}

/// One piece of a streamed tar archive.
#[derive(Debug, Clone)]
enum Segment {
    /// Literal bytes (headers, file contents, zero padding).
    Bytes(Arc<Vec<u8>>),
    /// `len` bytes of the padding pattern: byte i of the member is `i % 251`.
    Pattern { len: u64 },
}

impl Segment {
    fn len(&self) -> u64 {
        match self {
            Segment::Bytes(b) => b.len() as u64,
            Segment::Pattern { len } => *len,
        }
    }
}

/// The name of the synthetic member `archive_padding_bytes` adds to checkpoint archives.
pub(crate) const ARCHIVE_PADDING_MEMBER: &str = "padding.bin";

/// A ustar header block for a regular file.
fn tar_header(name: &str, size: u64, mtime: u64) -> Vec<u8> {
    let mut h = vec![0u8; 512];
    let put = |h: &mut [u8], at: usize, s: &[u8]| h[at..at + s.len()].copy_from_slice(s);
    put(&mut h, 0, &name.as_bytes()[..name.len().min(99)]);
    put(&mut h, 100, b"0000644\0");
    put(&mut h, 108, b"0000000\0");
    put(&mut h, 116, b"0000000\0");
    put(&mut h, 124, format!("{size:011o}\0").as_bytes());
    put(&mut h, 136, format!("{mtime:011o}\0").as_bytes());
    put(&mut h, 148, b"        ");
    h[156] = b'0';
    put(&mut h, 257, b"ustar\0");
    put(&mut h, 263, b"00");
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    put(&mut h, 148, format!("{sum:06o}\0 ").as_bytes());
    h
}

/// The layout of a ustar archive of `files` plus, when `padding > 0`, a `padding.bin` member of
/// that many pattern bytes: a list of segments, so any byte range can be produced on demand.
fn tar_layout(files: &BTreeMap<String, Arc<Vec<u8>>>, padding: u64) -> Vec<Segment> {
    let mtime = unix_secs(SystemTime::now()).max(0) as u64;
    let zeros = |n: u64| Segment::Bytes(Arc::new(vec![0u8; n as usize]));
    let mut out = Vec::new();
    let member = |out: &mut Vec<Segment>, name: &str, body: Segment| {
        let size = body.len();
        out.push(Segment::Bytes(Arc::new(tar_header(name, size, mtime))));
        out.push(body);
        let pad = size.div_ceil(512) * 512 - size;
        if pad > 0 {
            out.push(zeros(pad));
        }
    };
    for (name, data) in files {
        member(&mut out, name, Segment::Bytes(data.clone()));
    }
    if padding > 0 {
        member(
            &mut out,
            ARCHIVE_PADDING_MEMBER,
            Segment::Pattern { len: padding },
        );
    }
    out.push(zeros(1024));
    out
}

/// Copies the layout's bytes `[from, from + buf.len())` into `buf`.
fn read_layout(layout: &[Segment], from: u64, buf: &mut [u8]) {
    let mut seg_start = 0u64;
    let mut filled = 0usize;
    for seg in layout {
        let seg_end = seg_start + seg.len();
        let pos = from + filled as u64;
        if filled == buf.len() {
            break;
        }
        if pos < seg_end {
            let off = pos - seg_start;
            let n = ((seg_end - pos) as usize).min(buf.len() - filled);
            match seg {
                Segment::Bytes(b) => {
                    buf[filled..filled + n].copy_from_slice(&b[off as usize..off as usize + n]);
                }
                Segment::Pattern { .. } => {
                    for (i, byte) in buf[filled..filled + n].iter_mut().enumerate() {
                        *byte = ((off + i as u64) % 251) as u8;
                    }
                }
            }
            filled += n;
        }
        seg_start = seg_end;
    }
}

/// A `Range: bytes=a-b` / `bytes=a-` header → the inclusive span within `total`; `Err` when
/// unsatisfiable. Multiple ranges are not supported (answered as the whole file).
fn parse_range(value: &str, total: u64) -> Option<Result<(u64, u64), ()>> {
    let spec = value.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let span = match (a.trim(), b.trim()) {
        ("", suffix) => {
            let n: u64 = suffix.parse().ok()?;
            (total.saturating_sub(n), total.checked_sub(1)?)
        }
        (start, "") => (start.parse().ok()?, total.saturating_sub(1)),
        (start, end) => (start.parse().ok()?, end.parse::<u64>().ok()?.min(total - 1)),
    };
    Some(if span.0 >= total || span.0 > span.1 {
        Err(())
    } else {
        Ok(span)
    })
}

/// `GET /_archives/{token}/archive.tar`: the tar archive of a published checkpoint export, streamed
/// (constant memory whatever its size), with single-range `Range` support (206 / 416).
///
/// Faults: rules whose endpoint matches `_archives/{token}/archive.tar` (e.g. `"_archives/*"`)
/// apply here; `reset_mid_body` sends half of the requested bytes, then breaks the connection.
pub(crate) async fn archive_download(
    State(st): State<Arc<AppState>>,
    Path((token, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    if name != "archive.tar" {
        return Err(ApiError::not_found("no such archive"));
    }
    let files = st
        .files
        .get(&token)
        .map(|e| e.files.clone())
        .ok_or_else(|| ApiError::not_found("no such archive"))?;
    let layout = Arc::new(tar_layout(&files, st.cfg.archive_padding_bytes));
    let total: u64 = layout.iter().map(Segment::len).sum();
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_range(v, total));
    let (status, start, end) = match range {
        None => (StatusCode::OK, 0, total),
        Some(Ok((a, b))) => (StatusCode::PARTIAL_CONTENT, a, b + 1),
        Some(Err(())) => {
            return Ok((
                StatusCode::RANGE_NOT_SATISFIABLE,
                [(header::CONTENT_RANGE, format!("bytes */{total}"))],
            )
                .into_response())
        }
    };
    let firing = st
        .faults
        .check("GET", &format!("_archives/{token}/{name}"), None);
    let cut = match firing.map(|f| f.fault) {
        Some(super::faults::Fault::ResetMidBody) => Some(start + (end - start) / 2),
        _ => None,
    };
    const CHUNK: u64 = 256 * 1024;
    let stream = futures_util::stream::unfold(start, move |pos| {
        let layout = layout.clone();
        async move {
            let stop = cut.unwrap_or(end);
            if pos >= stop {
                return cut.filter(|_| pos < end).map(|_| {
                    let e = std::io::Error::new(
                        std::io::ErrorKind::ConnectionReset,
                        "injected fault: reset_mid_body",
                    );
                    (Err(e), end)
                });
            }
            let n = (stop - pos).min(CHUNK);
            let mut buf = vec![0u8; n as usize];
            read_layout(&layout, pos, &mut buf);
            Some((Ok(Bytes::from(buf)), pos + n))
        }
    });
    let mut response = Response::new(axum::body::Body::from_stream(stream));
    *response.status_mut() = status;
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/x-tar"),
    );
    h.insert(
        header::ACCEPT_RANGES,
        http::HeaderValue::from_static("bytes"),
    );
    h.insert(header::CONTENT_LENGTH, http::HeaderValue::from(end - start));
    if status == StatusCode::PARTIAL_CONTENT {
        if let Ok(v) = http::HeaderValue::from_str(&format!("bytes {start}-{}/{total}", end - 1)) {
            h.insert(header::CONTENT_RANGE, v);
        }
    }
    Ok(response)
}

#[cfg(test)]
mod archive_tests {
    use super::*;

    #[test]
    fn any_byte_range_of_the_layout_matches_the_whole() {
        let files = BTreeMap::from([("a.json".to_owned(), Arc::new(b"{\"k\":1}".to_vec()))]);
        let layout = tar_layout(&files, 3000);
        let total: u64 = layout.iter().map(Segment::len).sum();
        assert_eq!(total % 512, 0, "a tar archive is made of 512-byte blocks");
        let mut whole = vec![0u8; total as usize];
        read_layout(&layout, 0, &mut whole);
        let mut part = vec![0u8; 700];
        read_layout(&layout, 1000, &mut part);
        assert_eq!(&whole[1000..1700], &part[..]);
        assert_eq!(
            &whole[1536..1539],
            &[0, 1, 2],
            "the padding member starts its pattern after its header"
        );
    }

    #[test]
    fn ranges_parse_open_closed_suffix_and_unsatisfiable() {
        assert_eq!(parse_range("bytes=10-", 100), Some(Ok((10, 99))));
        assert_eq!(parse_range("bytes=10-19", 100), Some(Ok((10, 19))));
        assert_eq!(parse_range("bytes=-5", 100), Some(Ok((95, 99))));
        assert_eq!(parse_range("bytes=100-", 100), Some(Err(())));
        assert_eq!(parse_range("bytes=1-2,4-5", 100), None);
    }
}

/// `GET /api/v1/checkpoints?limit=&offset=`: all the user's checkpoints, newest first.
pub(crate) async fn list_user_checkpoints(
    State(st): State<Arc<AppState>>,
    Query(page): Query<Page>,
) -> Json<Value> {
    let now = SystemTime::now();
    let mut all: Vec<CheckpointRecord> = lock(&st.checkpoints)
        .values()
        .filter(|c| !c.expired(now))
        .cloned()
        .collect();
    all.sort_by_key(|c| std::cmp::Reverse(c.order));
    let (limit, offset) = (page.limit.unwrap_or(100), page.offset.unwrap_or(0));
    let checkpoints: Vec<_> = all
        .iter()
        .skip(offset)
        .take(limit)
        .map(CheckpointRecord::to_wire)
        .collect();
    Json(json!({
        "checkpoints": checkpoints,
        "cursor": Cursor { offset: offset as u64, limit: limit as u64, total_count: all.len() as u64 },
    }))
}

/// `POST /api/v1/weights_info` → base model, LoRA rank and flags, optimizer config.
pub(crate) async fn weights_info(
    State(st): State<Arc<AppState>>,
    JsonBody(req): JsonBody<WeightsInfoRequest>,
) -> ApiResult<Json<Value>> {
    let record = st.checkpoint_by_path(&req.tinker_path)?;
    let snap = Snapshot::from_bytes(&record.snapshot)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.message))?;
    let info = st.runs.get(&record.run_id).map(|r| r.info.clone());
    let lora = info.as_ref().map(|i| i.lora);
    Ok(Json(json!({
        "base_model": snap.base_model(),
        "is_lora": true,
        "lora_rank": snap.rank(),
        "train_unembed": lora.is_none_or(|l| l.train_unembed),
        "train_mlp": lora.is_none_or(|l| l.train_mlp),
        "train_attn": lora.is_none_or(|l| l.train_attn),
        "optimizer_config": info.map(|i| i.optimizer).unwrap_or_default(),
    })))
}

/// The query of `GET /audit`.
#[derive(Debug, Deserialize)]
pub(crate) struct AuditQuery {
    event_type: Option<String>,
    day: Option<String>,
}

/// `GET /api/v1/audit?event_type=&day=`.
pub(crate) async fn audit(
    State(st): State<Arc<AppState>>,
    Query(q): Query<AuditQuery>,
) -> ApiResult<Json<Value>> {
    let event_type = q.event_type.as_deref().unwrap_or("all");
    if !["all", "checkpoints", "projects", "teams", "organizations"].contains(&event_type) {
        return Err(ApiError::unprocessable(
            &["query", "event_type"],
            format!("unknown event_type {event_type:?}"),
        ));
    }
    let today = timestamp(SystemTime::now()).as_str()[..10].to_owned();
    let day = q.day.unwrap_or(today);
    let entries: Vec<_> = lock(&st.audit)
        .iter()
        .filter(|e| e.timestamp.as_str().starts_with(&day))
        .filter(|e| match event_type {
            "all" => true,
            "checkpoints" => e.event.starts_with("checkpoint_"),
            _ => false,
        })
        .cloned()
        .collect();
    Ok(Json(json!({ "entries": entries })))
}

/// The query of `GET /billing/usage/events`.
#[derive(Debug, Deserialize)]
pub(crate) struct UsageQuery {
    starting_on: Option<String>,
    ending_before: Option<String>,
}

/// `GET /api/v1/billing/usage/events`: usage aggregated per hour, session, model and kind.
pub(crate) async fn billing_usage(
    State(st): State<Arc<AppState>>,
    Query(q): Query<UsageQuery>,
) -> ApiResult<Json<Value>> {
    let parse = |v: Option<String>, name: &str| -> Result<i64, ApiError> {
        let v = v.ok_or_else(|| ApiError::unprocessable(&["query", name], "Field required"))?;
        Timestamp::parse(&v)
            .map(|t| t.unix_seconds())
            .map_err(|e| ApiError::unprocessable(&["query", name], e.to_string()))
    };
    let start = parse(q.starting_on, "starting_on")?;
    let end = parse(q.ending_before, "ending_before")?;
    if start % 3600 != 0 || end % 3600 != 0 {
        return Err(ApiError::bad_request(
            "the window must be aligned to whole hours",
        ));
    }
    if end <= start || end - start > 14 * 86_400 {
        return Err(ApiError::bad_request(
            "ending_before must be after starting_on, at most 14 days later",
        ));
    }
    if start > unix_secs(SystemTime::now()) {
        return Err(ApiError::bad_request("starting_on is in the future"));
    }
    let mut buckets: BTreeMap<(i64, String, String, String), Value> = BTreeMap::new();
    for u in lock(&st.usage).iter() {
        let t = unix_secs(u.time);
        if t < start || t >= end {
            continue;
        }
        let kind = u.info["type"].as_str().unwrap_or("").to_owned();
        let key = (
            t - t.rem_euclid(3600),
            u.session_id.clone(),
            u.base_model.clone(),
            kind,
        );
        let entry = buckets.entry(key).or_insert_with(|| {
            let mut v = u.info.clone();
            for f in ["token_count", "count"] {
                if v.get(f).is_some() {
                    v[f] = json!(0);
                }
            }
            v
        });
        for f in ["token_count", "count"] {
            if let Some(n) = u.info.get(f).and_then(Value::as_u64) {
                entry[f] = json!(entry[f].as_u64().unwrap_or(0) + n);
            }
        }
    }
    let mut sessions = serde_json::Map::new();
    let data: Vec<Value> = buckets
        .into_iter()
        .map(|((bucket, session, model, _), info)| {
            if let Some(s) = st.sessions.get(&session) {
                sessions.insert(session.clone(), json!({"user_metadata": s.user_metadata}));
            }
            json!({
                "bucket_start": Timestamp::from_unix_seconds(bucket),
                "bucket_end": Timestamp::from_unix_seconds(bucket + 3600),
                "base_model": model, "user_id": st.cfg.user_urn, "user_name": null,
                "session_id": session, "project_id": null,
                "estimated_cost_usd": null, "effective_rate_usd_per_million_tokens": null,
                "effective_rate_usd_per_gigabyte_month": null,
                "event_info": info,
            })
        })
        .collect();
    Ok(Json(
        json!({"data": data, "sessions": sessions, "cost_data_through": null}),
    ))
}

/// `GET /api/v1/billing/usage/checkpoints/current`.
pub(crate) async fn checkpoint_storage(State(st): State<Arc<AppState>>) -> Json<Value> {
    let now = SystemTime::now();
    let (count, bytes) = lock(&st.checkpoints)
        .values()
        .filter(|c| !c.expired(now))
        .fold((0u64, 0u64), |(n, b), c| {
            (n + 1, b + c.snapshot.len() as u64)
        });
    Json(json!({
        "effective_rate_usd_per_gigabyte_month": 0.0,
        "data": [{
            "org_user_urn": st.cfg.user_urn, "user_email": st.cfg.email,
            "checkpoint_count": count, "size_bytes": bytes,
            "size_gigabytes": bytes as f64 / 1e9, "estimated_monthly_cost_usd": 0.0,
        }],
    }))
}

/// `GET /_files/{token}/{name}`: downloads (no auth, like a signed URL).
pub(crate) async fn download(
    State(st): State<Arc<AppState>>,
    Path((token, name)): Path<(String, String)>,
) -> ApiResult<Response> {
    let entry = st
        .files
        .get(&token)
        .ok_or_else(|| ApiError::not_found("no such download"))?;
    let data = entry
        .files
        .get(&name)
        .cloned()
        .ok_or_else(|| ApiError::not_found("no such file"))?;
    let ctype = if name.ends_with(".json") {
        "application/json"
    } else if name.ends_with(".tar") {
        "application/x-tar"
    } else if name.ends_with(".jsonl") {
        "application/x-ndjson"
    } else {
        "application/octet-stream"
    };
    Ok(([(header::CONTENT_TYPE, ctype)], data.as_ref().clone()).into_response())
}
