//! The layer in front of every `/api/v1/` route: record the request, apply a scheduled fault,
//! authenticate, run the handler, record the reply.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::StreamExt as _;
use http::request::Parts;
use http::{HeaderName, HeaderValue, StatusCode};
use serde_json::{json, Value};

use super::codec::{decode_fb_request, fb_request_json};
use super::faults::{Fault, Firing};
use super::futures::FutureFault;
use super::recording::{unix_now, Exchange};
use super::state::AppState;

/// Largest request body read (forward_backward chunks are ≤ ~5 MB by default).
pub(crate) const MAX_BODY: usize = 512 << 20;

/// Marks a response whose connection must be dropped instead of answered.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ResetConnection;

/// Arrival order, so the recording lists requests as they came in even though long polls are
/// recorded when they are answered.
static ARRIVAL: AtomicU64 = AtomicU64::new(0);

fn reset_response() -> Response {
    let mut resp = StatusCode::OK.into_response();
    resp.extensions_mut().insert(ResetConnection);
    resp
}

fn json_value(ctype: Option<&str>, bytes: &[u8]) -> Option<Value> {
    if ctype.is_some_and(|c| c.contains("json")) || ctype.is_none() {
        serde_json::from_slice(bytes).ok()
    } else {
        None
    }
}

fn request_exchange(parts: &Parts, body: &Bytes, t: f64) -> Exchange {
    let ctype = parts
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let (json_body, proto_body) = if ctype.is_some_and(|c| c.contains("protobuf")) {
        let zstd = parts
            .headers
            .get(http::header::CONTENT_ENCODING)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"zstd"));
        (
            None,
            decode_fb_request(body, zstd)
                .ok()
                .map(|r| fb_request_json(&r)),
        )
    } else if body.is_empty() {
        (None, None)
    } else {
        (json_value(ctype, body), None)
    };
    Exchange {
        t,
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().unwrap_or("").to_owned(),
        http_version: format!("{:?}", parts.version),
        headers: parts
            .headers
            .iter()
            .map(|(n, v)| {
                (
                    n.to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body_len: body.len(),
        body: json_body,
        body_proto: proto_body,
        resp_status: 0,
        resp_body: None,
        resp_ctype: None,
        resp_body_len: 0,
        fault: None,
    }
}

fn finish(
    st: &AppState,
    ex: Option<(u64, Exchange)>,
    status: u16,
    ctype: Option<&str>,
    body: &[u8],
    fault: Option<String>,
) {
    let Some((arrival, mut ex)) = ex else { return };
    ex.resp_status = status;
    ex.resp_body_len = body.len();
    ex.resp_body = if body.is_empty() {
        None
    } else {
        json_value(ctype, body)
    };
    if ex.resp_body.is_none() && !body.is_empty() {
        ex.resp_ctype = ctype.map(str::to_owned);
    }
    ex.fault = fault;
    st.recorder.push(arrival, ex);
}

/// The reply a status-type fault sends.
fn fault_response(fault: &Fault, nth: u64, endpoint: &str) -> Response {
    let json_resp = |status: StatusCode, body: &Value| -> Response {
        let mut r = Response::new(Body::from(serde_json::to_vec(body).unwrap_or_default()));
        *r.status_mut() = status;
        r.headers_mut().insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        r
    };
    match fault {
        Fault::Status {
            status,
            body,
            headers,
        } => {
            let code = StatusCode::from_u16(*status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut resp = match body {
                Some(Value::Null) => {
                    let mut r = Response::new(Body::empty());
                    *r.status_mut() = code;
                    r
                }
                Some(b) => json_resp(code, b),
                None => json_resp(
                    code,
                    &json!({"detail": format!("injected fault: {status} on {endpoint}")}),
                ),
            };
            // Every reply of the real service names its server-side log entry; a rule may set
            // its own value.
            if let Ok(v) =
                HeaderValue::try_from(format!("fault-{nth}-{}", endpoint.replace('/', ".")))
            {
                resp.headers_mut().insert("x-request-id", v);
            }
            for (k, v) in headers {
                if let (Ok(n), Ok(v)) = (
                    HeaderName::try_from(k.as_str()),
                    HeaderValue::try_from(v.as_str()),
                ) {
                    resp.headers_mut().insert(n, v);
                }
            }
            resp
        }
        Fault::RateLimit { retry_after } => {
            let mut resp = json_resp(
                StatusCode::TOO_MANY_REQUESTS,
                &json!({"detail": "injected fault: rate limited"}),
            );
            if let Some(v) = retry_after
                .as_deref()
                .and_then(|v| HeaderValue::try_from(v).ok())
            {
                resp.headers_mut().insert(http::header::RETRY_AFTER, v);
            }
            resp
        }
        Fault::TryAgain { queue_states } => {
            let defaults = ["paused_capacity", "paused_rate_limit", "active"].map(String::from);
            let states: &[String] = if queue_states.is_empty() {
                &defaults
            } else {
                queue_states
            };
            let state = &states[(nth as usize) % states.len()];
            json_resp(
                StatusCode::REQUEST_TIMEOUT,
                &json!({"type": "try_again", "queue_state": state,
                        "queue_state_reason": format!("injected fault: {state}")}),
            )
        }
        Fault::Gone => json_resp(
            StatusCode::GONE,
            &json!({"detail": "injected fault: promise expired"}),
        ),
        Fault::EmptyBadRequest => {
            let mut r = Response::new(Body::empty());
            *r.status_mut() = StatusCode::BAD_REQUEST;
            r
        }
        _ => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// Half the body, then either an error (the connection is dropped mid-body) or a stall.
fn truncated_body(body: Bytes, stall: Option<Option<u64>>) -> Body {
    let half = body.slice(..body.len() / 2);
    let head = futures_util::stream::once(async move { Ok::<Bytes, std::io::Error>(half) });
    let tail = futures_util::stream::once(async move {
        match stall {
            Some(Some(ms)) => tokio::time::sleep(Duration::from_millis(ms)).await,
            Some(None) => std::future::pending::<()>().await,
            // A moment of silence first, so hyper flushes the head and the first half before
            // the connection drops (it would otherwise discard them with the error).
            None => tokio::time::sleep(Duration::from_millis(50)).await,
        }
        Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "injected fault: connection dropped mid-body",
        ))
    });
    Body::from_stream(head.chain(tail))
}

/// The middleware.
pub(crate) async fn front(State(st): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let t = unix_now();
    let arrival = ARRIVAL.fetch_add(1, Ordering::Relaxed);
    let (mut parts, body) = req.into_parts();
    let endpoint = parts
        .uri
        .path()
        .strip_prefix("/api/v1/")
        .unwrap_or(parts.uri.path())
        .to_owned();
    // In flight from arrival until the reply is ready (peak per endpoint, for tests).
    let _in_flight = st.enter(&endpoint);
    let bytes = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(e) => {
            return super::error::ApiError::bad_request(format!("could not read the body: {e}"))
                .into_response()
        }
    };
    let request_type = parts
        .headers
        .get("x-tinker-request-type")
        .and_then(|v| v.to_str().ok());
    let firing: Option<Firing> = st
        .faults
        .check(parts.method.as_str(), &endpoint, request_type);
    let label = firing.as_ref().map(|f| f.fault.label());
    let ex = st
        .recorder
        .enabled()
        .then(|| (arrival, request_exchange(&parts, &bytes, t)));

    if let Some(f) = &firing {
        match &f.fault {
            Fault::Delay { ms } => tokio::time::sleep(Duration::from_millis(*ms)).await,
            Fault::HangFuture => {
                parts.extensions.insert(FutureFault {
                    hang: true,
                    fail: None,
                });
            }
            Fault::FailFuture { error, category } => {
                parts.extensions.insert(FutureFault {
                    hang: false,
                    fail: Some((error.clone(), category.clone())),
                });
            }
            Fault::Reset {
                after_handler: false,
            } => {
                finish(&st, ex, 0, None, &[], label);
                return reset_response();
            }
            Fault::Reset { .. } | Fault::ResetMidBody | Fault::StallBody { .. } => {}
            other => {
                let resp = fault_response(other, f.nth, &endpoint);
                let (rparts, rbody) = resp.into_parts();
                let rbytes = axum::body::to_bytes(rbody, usize::MAX)
                    .await
                    .unwrap_or_default();
                let ctype = rparts
                    .headers
                    .get(http::header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok());
                finish(&st, ex, rparts.status.as_u16(), ctype, &rbytes, label);
                return Response::from_parts(rparts, Body::from(rbytes));
            }
        }
    }

    let resp = if endpoint == "healthz" {
        next.run(Request::from_parts(parts, Body::from(bytes)))
            .await
    } else {
        match st.authenticate(&parts.headers) {
            Ok(credential) => {
                parts.extensions.insert(credential);
                next.run(Request::from_parts(parts, Body::from(bytes)))
                    .await
            }
            Err(e) => e.into_response(),
        }
    };
    let (rparts, rbody) = resp.into_parts();
    if is_event_stream(&rparts) && firing.is_none() {
        // Streamed replies pass through unbuffered; the exchange is recorded when they end.
        let status = rparts.status.as_u16();
        return Response::from_parts(rparts, record_when_done(st, ex, status, rbody));
    }
    let rbytes = axum::body::to_bytes(rbody, usize::MAX)
        .await
        .unwrap_or_default();
    let ctype = rparts
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let dropped = matches!(firing.as_ref().map(|f| &f.fault), Some(Fault::Reset { .. }));
    finish(
        &st,
        ex,
        if dropped { 0 } else { rparts.status.as_u16() },
        ctype,
        &rbytes,
        label,
    );
    match firing.map(|f| f.fault) {
        Some(Fault::Reset { .. }) => reset_response(),
        Some(Fault::ResetMidBody) => Response::from_parts(rparts, truncated_body(rbytes, None)),
        Some(Fault::StallBody { stall_ms }) => {
            Response::from_parts(rparts, truncated_body(rbytes, Some(stall_ms)))
        }
        _ => Response::from_parts(rparts, Body::from(rbytes)),
    }
}

fn is_event_stream(parts: &http::response::Parts) -> bool {
    parts
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.starts_with("text/event-stream"))
}

/// Records a streamed exchange once its body is over: finished, failed, or dropped because the
/// client hung up. The recorded body is what was handed to the connection, so a cancelled
/// stream shows how far it got.
struct StreamRecord {
    st: Arc<AppState>,
    ex: Option<(u64, Exchange)>,
    status: u16,
    sent: Vec<u8>,
}

impl Drop for StreamRecord {
    fn drop(&mut self) {
        finish(
            &self.st,
            self.ex.take(),
            self.status,
            Some("text/event-stream"),
            &self.sent,
            None,
        );
    }
}

fn record_when_done(
    st: Arc<AppState>,
    ex: Option<(u64, Exchange)>,
    status: u16,
    body: Body,
) -> Body {
    let record = StreamRecord {
        st,
        ex,
        status,
        sent: Vec::new(),
    };
    let frames = body.into_data_stream();
    let stream =
        futures_util::stream::unfold((frames, record), |(mut frames, mut record)| async move {
            let next = frames.next().await?;
            if let Ok(bytes) = &next {
                record.sent.extend_from_slice(bytes);
            }
            Some((next, (frames, record)))
        });
    Body::from_stream(stream)
}
