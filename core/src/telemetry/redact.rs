//! Keeping credentials out of telemetry.

use serde_json::Value;

/// Header and field names whose values are credentials (compared case-insensitively).
const SECRET_KEYS: &[&str] = &[
    "x-api-key",
    "api_key",
    "api-key",
    "apikey",
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    "jwt",
];

const REDACTED: &str = "<redacted>";

/// Replaces credentials inside event data, recursively: the values of keys such as `X-API-Key`,
/// `Authorization` or `jwt`, and any string that looks like a Tinker API key (`tml-…`).
///
/// The official SDK sends request headers (with the API key) in some error events; tinker-rs
/// never does, and this is the last line of defence for data a caller passes in.
///
/// ```
/// use serde_json::json;
/// use tinker_core::telemetry::redact_credentials;
///
/// let mut data = json!({"request_headers": {"X-API-Key": "tml-secret"}, "detail": "key tml-abc leaked"});
/// redact_credentials(&mut data);
/// assert_eq!(data, json!({"request_headers": {"X-API-Key": "<redacted>"}, "detail": "<redacted>"}));
/// ```
pub fn redact_credentials(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                if SECRET_KEYS.iter().any(|s| key.eq_ignore_ascii_case(s)) {
                    *v = Value::String(REDACTED.into());
                } else {
                    redact_credentials(v);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact_credentials),
        Value::String(s) if s.contains("tml-") => *s = REDACTED.into(),
        _ => {}
    }
}
