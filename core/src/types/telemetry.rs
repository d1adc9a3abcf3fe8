//! Telemetry wire types: the body of `POST /api/v1/telemetry` (protocol.md 13.3).

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

/// How serious an event is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Severity {
    /// `DEBUG`.
    Debug,
    /// `INFO`.
    Info,
    /// `WARNING`.
    Warning,
    /// `ERROR`.
    Error,
    /// `CRITICAL`.
    Critical,
}

/// The event-specific part of a telemetry event, tagged by `event`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TelemetryEventKind {
    /// `SESSION_START`: a holder started.
    SessionStart,
    /// `SESSION_END`: sent after a fatal exception.
    SessionEnd {
        /// Python `timedelta` text, e.g. `"0:00:12.345678"` (see [`format_timedelta`]).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        duration: Option<String>,
    },
    /// `UNHANDLED_EXCEPTION`: a non-user error escaped a public call.
    UnhandledException {
        /// The error's type name.
        error_type: String,
        /// The error's message.
        error_message: String,
        /// A formatted backtrace, when available.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        traceback: Option<String>,
    },
    /// `GENERIC_EVENT`: a named event with free-form data.
    GenericEvent {
        /// Low-cardinality name, e.g. `user_error`.
        event_name: String,
        /// The event's data.
        event_data: serde_json::Map<String, serde_json::Value>,
    },
}

/// One telemetry event as sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TelemetryEvent {
    /// The kind and its fields (`event`, plus e.g. `event_name`).
    #[serde(flatten)]
    pub kind: TelemetryEventKind,
    /// A random UUID v4.
    pub event_id: String,
    /// 0, 1, 2, … per holder.
    pub event_session_index: u64,
    /// Severity.
    pub severity: Severity,
    /// ISO-8601 UTC with microseconds and `Z` (see [`format_timestamp`]).
    pub timestamp: String,
}

/// The body of `POST /api/v1/telemetry` (`TelemetrySendRequest`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TelemetrySendRequest {
    /// Up to 100 events.
    pub events: Vec<TelemetryEvent>,
    /// `Linux`, `Darwin`, `Windows`, … (Python's `platform.system()`).
    pub platform: String,
    /// The SDK version.
    pub sdk_version: String,
    /// The session id (`sessionless-<uuid4>` for session-less holders).
    pub session_id: String,
    /// A UUID v4 drawn once per process.
    pub process_uuid: String,
}

/// The reply to a telemetry POST (`{"status": "accepted"}`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TelemetrySendResponse {
    /// `accepted`.
    #[serde(default)]
    pub status: Option<String>,
}

/// Formats a wall-clock time as the SDK does: `2026-11-28T14:10:41.033476Z`.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use tinker_core::types::format_timestamp;
///
/// let t = SystemTime::UNIX_EPOCH + Duration::from_micros(1_795_875_041_033_476);
/// assert_eq!(format_timestamp(t), "2026-11-28T14:10:41.033476Z");
/// ```
pub fn format_timestamp(time: SystemTime) -> String {
    let since = time
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    let secs = since.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_micros()
    )
}

/// Howard Hinnant's `civil_from_days`: days since 1970-01-01 to (year, month, day).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Formats a duration like Python's `str(timedelta)`: `H:MM:SS`, `.ffffff` appended when there
/// are microseconds, and `N day(s), ` in front for a day or more.
///
/// ```
/// use std::time::Duration;
/// use tinker_core::types::format_timedelta;
///
/// assert_eq!(format_timedelta(Duration::from_micros(12_345_678)), "0:00:12.345678");
/// assert_eq!(format_timedelta(Duration::from_secs(90_061)), "1 day, 1:01:01");
/// ```
pub fn format_timedelta(d: Duration) -> String {
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let mut s = String::new();
    if days > 0 {
        s.push_str(&format!("{days} day{}, ", if days == 1 { "" } else { "s" }));
    }
    s.push_str(&format!(
        "{}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    ));
    let micros = d.subsec_micros();
    if micros != 0 {
        s.push_str(&format!(".{micros:06}"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_captured_body_round_trips() {
        let captured = json!({"events": [
            {"event": "SESSION_START", "event_id": "c744c193-634d-42b3-ad33-f805631ee45e",
             "event_session_index": 0, "severity": "INFO", "timestamp": "2026-11-28T14:10:41.033476Z"}],
         "platform": "Linux", "sdk_version": "0.38.0", "session_id": "sess-0001",
         "process_uuid": "d10efba0-0d50-4fd5-9dc0-cc72d907e911"});
        let body: TelemetrySendRequest = serde_json::from_value(captured.clone()).unwrap();
        assert_eq!(body.events[0].kind, TelemetryEventKind::SessionStart);
        assert_eq!(body.events[0].severity, Severity::Info);
        assert_eq!(serde_json::to_value(&body).unwrap(), captured);
    }

    #[test]
    fn each_event_kind_has_the_wire_shape() {
        let wrap = |kind| TelemetryEvent {
            kind,
            event_id: "id".into(),
            event_session_index: 3,
            severity: Severity::Error,
            timestamp: "t".into(),
        };
        let common = |mut v: serde_json::Value| {
            let m = v.as_object_mut().unwrap();
            m.insert("event_id".into(), json!("id"));
            m.insert("event_session_index".into(), json!(3));
            m.insert("severity".into(), json!("ERROR"));
            m.insert("timestamp".into(), json!("t"));
            v
        };
        let mut data = serde_json::Map::new();
        data.insert("status_code".into(), json!(400));
        let cases = [
            (
                TelemetryEventKind::SessionEnd {
                    duration: Some("0:00:01".into()),
                },
                json!({"event": "SESSION_END", "duration": "0:00:01"}),
            ),
            (
                TelemetryEventKind::SessionEnd { duration: None },
                json!({"event": "SESSION_END"}),
            ),
            (
                TelemetryEventKind::UnhandledException {
                    error_type: "Decode".into(),
                    error_message: "bad".into(),
                    traceback: None,
                },
                json!({"event": "UNHANDLED_EXCEPTION", "error_type": "Decode", "error_message": "bad"}),
            ),
            (
                TelemetryEventKind::GenericEvent {
                    event_name: "user_error".into(),
                    event_data: data,
                },
                json!({"event": "GENERIC_EVENT", "event_name": "user_error", "event_data": {"status_code": 400}}),
            ),
        ];
        for (kind, shape) in cases {
            let event = wrap(kind);
            let value = serde_json::to_value(&event).unwrap();
            assert_eq!(value, common(shape));
            assert_eq!(
                serde_json::from_value::<TelemetryEvent>(value).unwrap(),
                event
            );
        }
    }

    #[test]
    fn timestamps_and_durations_match_python() {
        let t =
            |micros: u64| format_timestamp(SystemTime::UNIX_EPOCH + Duration::from_micros(micros));
        assert_eq!(t(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(t(951_782_400_000_000), "2000-02-29T00:00:00.000000Z");
        assert_eq!(t(4_102_444_799_999_999), "2099-12-31T23:59:59.999999Z");
        assert_eq!(format_timedelta(Duration::ZERO), "0:00:00");
        assert_eq!(
            format_timedelta(Duration::from_secs(3 * 86_400 + 3599)),
            "3 days, 0:59:59"
        );
        assert_eq!(
            format_timedelta(Duration::from_millis(100)),
            "0:00:00.100000"
        );
    }
}
