//! The server's requested delay: `Retry-After-Ms` / `Retry-After` (protocol.md 8.2).

use std::time::{Duration, SystemTime};

use http::HeaderMap;

/// The longest `Retry-After` the SDK honours; anything longer (or non-positive) falls back to the
/// layer's own back-off.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// The delay the server asked for, if it is usable.
///
/// Mirrors the generated client: the first header that *parses* wins: `retry-after-ms`
/// (milliseconds, float), then `retry-after` as float seconds, then `retry-after` as an HTTP date
/// (minus `now_unix`). The value is used only if it lies in (0, 60] seconds; `None` means "use
/// the normal back-off". A parsable but out-of-range `retry-after-ms` is *not* overridden by a
/// `retry-after` header, as in the SDK.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use tinker_core::retry::retry_after;
///
/// let mut h = http::HeaderMap::new();
/// h.insert("retry-after", "1.5".parse().unwrap());
/// assert_eq!(retry_after(&h, SystemTime::UNIX_EPOCH), Some(Duration::from_millis(1500)));
/// ```
pub fn retry_after(headers: &HeaderMap, now_unix: SystemTime) -> Option<Duration> {
    let secs = requested_seconds(headers, now_unix)?;
    if secs > 0.0 && secs <= MAX_RETRY_AFTER.as_secs_f64() {
        Some(Duration::from_secs_f64(secs))
    } else {
        None
    }
}

fn header_str<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name)?.to_str().ok().map(str::trim)
}

fn requested_seconds(headers: &HeaderMap, now_unix: SystemTime) -> Option<f64> {
    if let Some(ms) = header_str(headers, "retry-after-ms").and_then(|v| v.parse::<f64>().ok()) {
        return Some(ms / 1000.0);
    }
    let value = header_str(headers, "retry-after")?;
    if let Ok(secs) = value.parse::<f64>() {
        return Some(secs);
    }
    let date = httpdate::parse_http_date(value).ok()?;
    Some(match date.duration_since(now_unix) {
        Ok(ahead) => ahead.as_secs_f64(),
        Err(behind) => -behind.duration().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn each_header_form_is_honoured_only_inside_zero_to_sixty_seconds() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let in_30s = httpdate::fmt_http_date(now + Duration::from_secs(30));
        let in_90s = httpdate::fmt_http_date(now + Duration::from_secs(90));
        let ago_5s = httpdate::fmt_http_date(now - Duration::from_secs(5));
        let ms = |m| Some(Duration::from_millis(m));
        type Row<'a> = (&'a [(&'a str, &'a str)], Option<Duration>);
        let table: &[Row<'_>] = &[
            (&[("retry-after-ms", "250")], ms(250)),
            (&[("retry-after", "1.5")], ms(1500)),
            (&[("retry-after", "60")], ms(60_000)),
            (&[("retry-after", "60.5")], None),
            (&[("retry-after", "0")], None),
            (&[("retry-after", "-3")], None),
            (&[("retry-after", in_30s.as_str())], ms(30_000)),
            (&[("retry-after", in_90s.as_str())], None),
            (&[("retry-after", ago_5s.as_str())], None),
            (&[("retry-after", "soon")], None),
            (&[], None),
            // The ms header wins when it parses, even when it is out of range.
            (&[("retry-after-ms", "120000"), ("retry-after", "2")], None),
            // An unparsable ms header falls through to retry-after.
            (&[("retry-after-ms", "x"), ("retry-after", "2")], ms(2000)),
            (&[("retry-after", "NaN")], None),
        ];
        for (pairs, expected) in table {
            assert_eq!(retry_after(&headers(pairs), now), *expected, "{pairs:?}");
        }
    }
}
