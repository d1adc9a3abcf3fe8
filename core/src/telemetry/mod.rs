//! Telemetry batching: the bounded event queue behind `POST /api/v1/telemetry` (protocol.md 13).
//!
//! Wire types live in [`crate::types`] (`TelemetryEvent`, `TelemetrySendRequest`, …); this
//! module decides when to send what. The [`crate::housekeeping::Housekeeper`] drives it.

mod events;
mod queue;
mod redact;
#[cfg(test)]
mod tests;

pub use events::{error_event, is_user_error, retry_event};
pub use queue::{
    TelemetryBatch, TelemetryConfig, TelemetryIdentity, TelemetryQueue, TelemetryStats,
};
pub use redact::redact_credentials;
