//! Small pieces shared by many wire types: metadata maps, TTL limits, numeric checks.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Free-form user metadata (`user_metadata` on sessions, models and checkpoints): a JSON object.
pub type Metadata = serde_json::Map<String, serde_json::Value>;

/// Shortest checkpoint time-to-live the service accepts, in seconds (one hour).
pub const MIN_TTL_SECONDS: u64 = 3600;

/// Longest checkpoint time-to-live, in seconds: ten years of 365.25 days. The service documents
/// "10 years"; using the longer year keeps the local check from rejecting a value it accepts.
pub const MAX_TTL_SECONDS: u64 = 315_576_000;

/// Checks a checkpoint TTL is within `[MIN_TTL_SECONDS, MAX_TTL_SECONDS]`.
pub fn check_ttl(location: &str, ttl_seconds: u64) -> Result<()> {
    if !(MIN_TTL_SECONDS..=MAX_TTL_SECONDS).contains(&ttl_seconds) {
        return Err(Error::invalid(
            location,
            format!(
                "ttl_seconds must be between {MIN_TTL_SECONDS} (1 hour) and {MAX_TTL_SECONDS} (10 years), got {ttl_seconds}"
            ),
        ));
    }
    Ok(())
}

/// Checks a float is finite (the SDK never sends NaN or infinities).
pub(crate) fn check_finite(location: &str, value: f64) -> Result<()> {
    if !value.is_finite() {
        return Err(Error::invalid(
            location,
            format!("must be a finite number, got {value}"),
        ));
    }
    Ok(())
}

/// Checks a string the server uses as an identifier is non-empty.
pub(crate) fn check_non_empty(location: &str, value: &str) -> Result<()> {
    if value.trim().is_empty() {
        return Err(Error::invalid(location, "must not be empty"));
    }
    Ok(())
}

/// A response whose content the SDK ignores (`DELETE …`, `…/publish`, `…/ttl`, `…/project`,
/// `…/finish`, `cancel_future`): any 2xx is success, with or without a body (protocol.md 1.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Ignored;

/// The literal `{"status": "accepted"}` reply of `POST /api/v1/telemetry` (`status` required).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusResponse {
    /// `"accepted"` for telemetry, `"ok"` for `healthz`.
    pub status: String,
}

/// Declares a one-value enum used as the constant `"type"` tag of a request or response, so the
/// tag is always serialized and a wrong tag is a decode error.
macro_rules! type_tag {
    ($(#[$meta:meta])* $name:ident = $variant:ident $wire:literal) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize)]
        pub enum $name {
            #[doc = concat!("`\"", $wire, "\"`")]
            #[default]
            #[serde(rename = $wire)]
            $variant,
        }
    };
}
pub(crate) use type_tag;

/// Serde helper for a field that must be present but may be `null`: serde's derive would
/// otherwise treat a missing `Option` as `None`. Use as
/// `#[serde(deserialize_with = "crate::types::common::nullable")]`.
pub(crate) fn nullable<'de, D, T>(d: D) -> std::result::Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d)
}
