//! Which telemetry event a call's failure or retry becomes (protocol.md 13.3).

use std::time::Duration;

use serde_json::{json, Map, Value};

use crate::error::{Error, FailureCategory};
use crate::types::{Severity, TelemetryEventKind};

fn data(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

/// Whether the server blames the caller: a 4xx other than 408, or a request that failed with
/// category `user` (the SDK's `is_user_error`).
pub fn is_user_error(error: &Error) -> bool {
    match error {
        Error::Status(s) => (400..500).contains(&s.status) && s.status != 408,
        Error::RequestFailed { category, .. } => *category == FailureCategory::User,
        _ => false,
    }
}

/// The event for an error that escaped the public method `method`, or `None` for errors that
/// never left the process (invalid input, cancellation, a closed client):
///
/// | Error | Event | Severity |
/// |---|---|---|
/// | user error ([`is_user_error`]) | `GENERIC_EVENT user_error` | WARNING |
/// | a deadline ran out | `GENERIC_EVENT APIFuture.result_async.timeout` | ERROR |
/// | anything else | `UNHANDLED_EXCEPTION` | ERROR |
///
/// ```
/// use tinker_core::telemetry::error_event;
/// use tinker_core::types::{Severity, TelemetryEventKind};
/// use tinker_core::Error;
///
/// let e = Error::Transport { endpoint: "/api/v1/asample".into(), message: "reset".into(), attempts: 3 };
/// let (kind, severity) = error_event("SamplingClient.sample", &e).unwrap();
/// assert!(matches!(kind, TelemetryEventKind::UnhandledException { .. }));
/// assert_eq!(severity, Severity::Error);
/// assert!(error_event("x", &Error::invalid("data[0]", "empty")).is_none());
/// ```
pub fn error_event(method: &str, error: &Error) -> Option<(TelemetryEventKind, Severity)> {
    match error {
        Error::InvalidInput { .. } | Error::Cancelled(_) | Error::Closed(_) => None,
        e if is_user_error(e) => Some((
            TelemetryEventKind::GenericEvent {
                event_name: "user_error".into(),
                event_data: data(json!({
                    "error_type": format!("{:?}", e.kind()),
                    "message": e.to_string(),
                    "status_code": e.status(),
                    "method": method,
                })),
            },
            Severity::Warning,
        )),
        Error::Timeout {
            waiting_for,
            request_id,
            elapsed,
            ..
        } => Some((
            TelemetryEventKind::GenericEvent {
                event_name: "APIFuture.result_async.timeout".into(),
                event_data: data(json!({
                    "request_id": request_id,
                    "waiting_for": waiting_for,
                    "elapsed_time": elapsed.as_secs_f64(),
                    "method": method,
                })),
            },
            Severity::Error,
        )),
        e => Some((
            TelemetryEventKind::UnhandledException {
                error_type: format!("{:?}", e.kind()),
                error_message: e.to_string(),
                traceback: None,
            },
            Severity::Error,
        )),
    }
}

/// The event for a failed attempt that will be retried: `RetryHandler.execute.exception` for
/// samples (layer R), `InternalClientHolder.execute_with_retries.exception` otherwise; WARNING,
/// since a retryable failure is not yet an error.
pub fn retry_event(
    method: &str,
    endpoint: &str,
    attempt: u32,
    delay: Duration,
    reason: &str,
) -> (TelemetryEventKind, Severity) {
    let name = if method.starts_with("SamplingClient.") {
        "RetryHandler.execute.exception"
    } else {
        "InternalClientHolder.execute_with_retries.exception"
    };
    (
        TelemetryEventKind::GenericEvent {
            event_name: name.into(),
            event_data: data(json!({
                "func": method,
                "endpoint": endpoint,
                "exception": reason,
                "is_retryable": true,
                "attempt_count": attempt,
                "delay": delay.as_secs_f64(),
            })),
        },
        Severity::Warning,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: u16) -> Error {
        crate::endpoints::status_error("/api/v1/x", code, &http::HeaderMap::new(), b"{}")
    }

    fn name(kind: &TelemetryEventKind) -> String {
        match kind {
            TelemetryEventKind::GenericEvent { event_name, .. } => event_name.clone(),
            TelemetryEventKind::UnhandledException { .. } => "UNHANDLED_EXCEPTION".into(),
            other => format!("{other:?}"),
        }
    }

    /// One row per error class of protocol.md 13.3.
    #[test]
    fn each_error_class_becomes_its_event() {
        let failed = |category| Error::RequestFailed {
            message: "bad".into(),
            request_id: "req-1".into(),
            category,
        };
        let timeout = Error::Timeout {
            waiting_for: "the result of forward_backward".into(),
            request_id: Some("req-2".into()),
            queue_state: None,
            elapsed: Duration::from_secs(3),
        };
        let rows: Vec<(Error, Option<(&str, Severity)>)> = vec![
            (status(400), Some(("user_error", Severity::Warning))),
            (status(404), Some(("user_error", Severity::Warning))),
            (status(422), Some(("user_error", Severity::Warning))),
            (status(408), Some(("UNHANDLED_EXCEPTION", Severity::Error))),
            (status(500), Some(("UNHANDLED_EXCEPTION", Severity::Error))),
            (
                failed(FailureCategory::User),
                Some(("user_error", Severity::Warning)),
            ),
            (
                failed(FailureCategory::Server),
                Some(("UNHANDLED_EXCEPTION", Severity::Error)),
            ),
            (
                timeout,
                Some(("APIFuture.result_async.timeout", Severity::Error)),
            ),
            (
                Error::Transport {
                    endpoint: "/api/v1/asample".into(),
                    message: "reset".into(),
                    attempts: 2,
                },
                Some(("UNHANDLED_EXCEPTION", Severity::Error)),
            ),
            (Error::invalid("data[0]", "empty"), None),
            (Error::Cancelled("sample".into()), None),
            (Error::Closed("closed".into()), None),
        ];
        for (error, expected) in rows {
            let got =
                error_event("TrainingClient.forward_backward", &error).map(|(k, s)| (name(&k), s));
            assert_eq!(got, expected.map(|(n, s)| (n.to_owned(), s)), "{error}");
        }
    }

    #[test]
    fn retries_of_samples_and_of_other_calls_have_the_sdk_s_names() {
        let d = Duration::from_secs(1);
        let (k, s) = retry_event("SamplingClient.sample", "/api/v1/asample", 1, d, "HTTP 503");
        assert_eq!(
            (name(&k), s),
            ("RetryHandler.execute.exception".into(), Severity::Warning)
        );
        let (k, _) = retry_event(
            "TrainingClient.optim_step",
            "/api/v1/optim_step",
            1,
            d,
            "HTTP 503",
        );
        assert_eq!(
            name(&k),
            "InternalClientHolder.execute_with_retries.exception"
        );
    }
}
