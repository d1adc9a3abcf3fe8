//! `Timestamp`: an ISO-8601 datetime as the server sends it (protocol.md 1.5).
//!
//! The wire carries datetimes as strings (`"2026-08-01T12:00:00Z"`, or with an offset such as
//! `"2026-08-01T14:00:00+02:00"`). The SDK only displays them, compares them and sends some back
//! (billing windows, search cursors), so the string is kept verbatim — a round trip never changes
//! a byte — and validated once, when it is built or decoded. A calendar library would be a large
//! dependency for that; the parser below handles exactly the forms the Python SDK (pydantic)
//! accepts from this API.

use std::cmp::Ordering;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Result};

/// An ISO-8601 datetime kept verbatim, validated on construction.
///
/// Accepted forms: `YYYY-MM-DD`, `YYYY-MM-DDTHH:MM[:SS[.fraction]]` with `T`, `t` or a space as
/// separator, followed by `Z`, `z`, `±HH:MM`, `±HHMM`, `±HH`, or nothing (a naive time, read as UTC).
///
/// ```
/// use tinker_core::types::Timestamp;
///
/// let a = Timestamp::parse("2026-08-01T12:00:00Z").unwrap();
/// let b = Timestamp::parse("2026-08-01T14:00:00+02:00").unwrap();
/// assert_eq!(a.unix_seconds(), b.unix_seconds());
/// assert_eq!(a.as_str(), "2026-08-01T12:00:00Z");
/// assert!(Timestamp::parse("yesterday").is_err());
/// ```
#[derive(Clone, Eq)]
pub struct Timestamp {
    text: String,
    /// Nanoseconds since the Unix epoch, UTC.
    unix_nanos: i128,
    /// The offset east of UTC in seconds, `None` for a naive or date-only value.
    offset_seconds: Option<i32>,
}

impl Timestamp {
    /// Parses and validates an ISO-8601 datetime.
    pub fn parse(text: &str) -> Result<Timestamp> {
        parse(text)
            .map(|(unix_nanos, offset_seconds)| Timestamp {
                text: text.to_owned(),
                unix_nanos,
                offset_seconds,
            })
            .map_err(|why| {
                Error::invalid(
                    "timestamp",
                    format!("{text:?} is not an ISO-8601 datetime: {why}"),
                )
            })
    }

    /// The UTC instant `secs` seconds after the Unix epoch, formatted `YYYY-MM-DDTHH:MM:SSZ`
    /// (how the SDK writes billing windows).
    pub fn from_unix_seconds(secs: i64) -> Timestamp {
        let days = secs.div_euclid(86_400);
        let rem = secs.rem_euclid(86_400);
        let (y, m, d) = civil_from_days(days);
        let text = format!(
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
            rem / 3600,
            (rem / 60) % 60,
            rem % 60
        );
        Timestamp {
            text,
            unix_nanos: i128::from(secs) * 1_000_000_000,
            offset_seconds: Some(0),
        }
    }

    /// The text exactly as received or built.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whole seconds since the Unix epoch (UTC), rounded towards negative infinity.
    pub fn unix_seconds(&self) -> i64 {
        // Range-checked at parse time (years 0..=9999), so this always fits.
        self.unix_nanos.div_euclid(1_000_000_000) as i64
    }

    /// Nanoseconds since the Unix epoch (UTC).
    pub fn unix_nanos(&self) -> i128 {
        self.unix_nanos
    }

    /// The UTC offset in seconds, or `None` when the text carried no offset (naive or date-only).
    pub fn offset_seconds(&self) -> Option<i32> {
        self.offset_seconds
    }
}

/// Timestamps compare by instant, not by text: `12:00Z` equals `14:00+02:00`.
impl PartialEq for Timestamp {
    fn eq(&self, other: &Timestamp) -> bool {
        self.unix_nanos == other.unix_nanos
    }
}

impl PartialOrd for Timestamp {
    fn partial_cmp(&self, other: &Timestamp) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Timestamp {
    fn cmp(&self, other: &Timestamp) -> Ordering {
        self.unix_nanos.cmp(&other.unix_nanos)
    }
}

impl std::hash::Hash for Timestamp {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.unix_nanos.hash(state);
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Timestamp({})", self.text)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::str::FromStr for Timestamp {
    type Err = Error;
    fn from_str(s: &str) -> Result<Timestamp> {
        Timestamp::parse(s)
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Timestamp, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        match parse(&text) {
            Ok((unix_nanos, offset_seconds)) => Ok(Timestamp {
                text: text.into_owned(),
                unix_nanos,
                offset_seconds,
            }),
            Err(why) => Err(serde::de::Error::custom(format!(
                "invalid datetime {text:?}: {why}"
            ))),
        }
    }
}

/// A tiny cursor over ASCII bytes.
struct Cursor<'a> {
    b: &'a [u8],
    i: usize,
}

impl Cursor<'_> {
    fn digits(&mut self, n: usize, what: &str) -> std::result::Result<u32, String> {
        let end = self.i + n;
        let slice = self
            .b
            .get(self.i..end)
            .filter(|s| s.iter().all(u8::is_ascii_digit))
            .ok_or_else(|| format!("expected {n} digits for the {what}"))?;
        self.i = end;
        Ok(slice
            .iter()
            .fold(0, |acc, d| acc * 10 + u32::from(d - b'0')))
    }

    fn eat(&mut self, c: u8) -> bool {
        if self.b.get(self.i) == Some(&c) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn done(&self) -> bool {
        self.i == self.b.len()
    }
}

fn parse(text: &str) -> std::result::Result<(i128, Option<i32>), String> {
    let mut c = Cursor {
        b: text.as_bytes(),
        i: 0,
    };
    let year = c.digits(4, "year")?;
    if !c.eat(b'-') {
        return Err("expected '-' after the year".into());
    }
    let month = c.digits(2, "month")?;
    if !c.eat(b'-') {
        return Err("expected '-' after the month".into());
    }
    let day = c.digits(2, "day")?;
    if !(1..=12).contains(&month) {
        return Err(format!("month {month} out of range"));
    }
    if day == 0 || day > days_in_month(year, month) {
        return Err(format!("day {day} out of range for {year:04}-{month:02}"));
    }
    let days = days_from_civil(i64::from(year), month, day);
    if c.done() {
        return Ok((i128::from(days) * 86_400 * 1_000_000_000, None));
    }
    if !(c.eat(b'T') || c.eat(b't') || c.eat(b' ')) {
        return Err("expected 'T' between date and time".into());
    }
    let hour = c.digits(2, "hour")?;
    if !c.eat(b':') {
        return Err("expected ':' after the hour".into());
    }
    let minute = c.digits(2, "minute")?;
    let mut second = 0;
    let mut nanos: u32 = 0;
    if c.eat(b':') {
        second = c.digits(2, "second")?;
        if c.eat(b'.') || c.eat(b',') {
            let start = c.i;
            while c.peek().is_some_and(|d| d.is_ascii_digit()) {
                let d = u32::from(c.b[c.i] - b'0');
                if c.i - start < 9 {
                    nanos = nanos * 10 + d;
                }
                c.i += 1;
            }
            let n = c.i - start;
            if n == 0 {
                return Err("expected digits after the decimal point".into());
            }
            for _ in n..9 {
                nanos *= 10;
            }
        }
    }
    if hour > 23 || minute > 59 || second > 59 {
        return Err(format!(
            "time {hour:02}:{minute:02}:{second:02} out of range"
        ));
    }
    let offset = match c.peek() {
        None => None,
        Some(b'Z' | b'z') => {
            c.i += 1;
            Some(0)
        }
        Some(sign @ (b'+' | b'-')) => {
            c.i += 1;
            let oh = c.digits(2, "offset hours")?;
            let om = if c.eat(b':') || c.peek().is_some_and(|d| d.is_ascii_digit()) {
                c.digits(2, "offset minutes")?
            } else {
                0
            };
            if oh > 23 || om > 59 {
                return Err(format!("offset {oh:02}:{om:02} out of range"));
            }
            let secs = (oh * 3600 + om * 60) as i32;
            Some(if sign == b'-' { -secs } else { secs })
        }
        Some(other) => return Err(format!("unexpected character {:?}", char::from(other))),
    };
    if !c.done() {
        return Err("unexpected text after the datetime".into());
    }
    let local = days * 86_400 + i64::from(hour * 3600 + minute * 60 + second);
    let utc = local - i64::from(offset.unwrap_or(0));
    Ok((i128::from(utc) * 1_000_000_000 + i128::from(nanos), offset))
}

fn is_leap(year: u32) -> bool {
    (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400)
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The inverse of [`days_from_civil`].
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn z_and_offsets_name_the_same_instant_and_the_text_is_kept() {
        let z = Timestamp::parse("2026-08-01T12:00:00Z").unwrap();
        let plus = Timestamp::parse("2026-08-01T14:00:00+02:00").unwrap();
        let minus = Timestamp::parse("2026-08-01T07:30:00-0430").unwrap();
        assert_eq!(z, plus);
        assert_eq!(z, minus);
        assert_eq!(z.unix_seconds(), 1_785_585_600);
        assert_eq!(plus.as_str(), "2026-08-01T14:00:00+02:00");
        assert_eq!(plus.offset_seconds(), Some(7200));
        assert_eq!(minus.offset_seconds(), Some(-16200));
    }

    #[test]
    fn fractions_naive_times_and_dates_parse() {
        let f = Timestamp::parse("2026-11-28T14:10:41.033476Z").unwrap();
        assert_eq!(f.unix_nanos() % 1_000_000_000, 33_476_000);
        let naive = Timestamp::parse("2026-08-01T12:00:00").unwrap();
        assert_eq!(naive.offset_seconds(), None);
        assert_eq!(naive.unix_seconds(), 1_785_585_600);
        let date = Timestamp::parse("2026-08-01").unwrap();
        assert_eq!(date.unix_seconds(), 1_785_542_400);
    }

    #[test]
    fn malformed_datetimes_are_rejected_with_a_reason() {
        for bad in [
            "",
            "2026-13-01T00:00:00Z",
            "2026-02-30T00:00:00Z",
            "2025-02-29T00:00:00Z",
            "2026-08-01T24:00:00Z",
            "2026-08-01T12:00:00Q",
            "2026-08-01T12:00:00Z trailing",
            "2026-08-01T12:00:00.Z",
            "1785585600",
        ] {
            let err = Timestamp::parse(bad).unwrap_err();
            assert!(err.to_string().contains("ISO-8601"), "{bad}: {err}");
        }
        assert!(Timestamp::parse("2024-02-29T00:00:00Z").is_ok());
    }

    #[test]
    fn formatting_from_unix_round_trips_through_the_parser() {
        for secs in [0, 1_783_900_800, 951_782_400, -86_400, 4_102_444_799] {
            let t = Timestamp::from_unix_seconds(secs);
            let back = Timestamp::parse(t.as_str()).unwrap();
            assert_eq!(back.unix_seconds(), secs, "{t}");
        }
        assert_eq!(
            Timestamp::from_unix_seconds(1_783_900_800).as_str(),
            "2026-07-13T00:00:00Z"
        );
    }

    #[test]
    fn serde_keeps_the_text_and_names_the_bad_value() {
        let t: Timestamp = serde_json::from_str("\"2026-08-01T12:00:00+00:00\"").unwrap();
        assert_eq!(
            serde_json::to_string(&t).unwrap(),
            "\"2026-08-01T12:00:00+00:00\""
        );
        let err = serde_json::from_str::<Timestamp>("\"soon\"").unwrap_err();
        assert!(err.to_string().contains("soon"), "{err}");
    }
}
