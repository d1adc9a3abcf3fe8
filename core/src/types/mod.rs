//! Every wire type of the Tinker API (SDK 0.38, and the 0.25 variants a server may still send).
//!
//! Serialization follows the official SDK (protocol.md 1.4-1.5): unset optional fields are
//! omitted, fields with defaults are always sent, request models carry their `type` tag, and
//! responses tolerate unknown fields while enforcing required ones.

mod datum;
mod model_input;
mod telemetry;
mod tensor;

pub use datum::{expected_dtype, Datum, ProvenanceSpan};
pub use model_input::{Chunk, ImageFormat, ModelInput, TokenId};
pub use telemetry::{
    format_timedelta, format_timestamp, Severity, TelemetryEvent, TelemetryEventKind,
    TelemetrySendRequest, TelemetrySendResponse,
};
pub use tensor::{CsrIndices, DType, TensorData, TensorValues};

/// Serde adapter: `Bytes` as standard base64 with padding (how JSON carries image and dmel bytes).
pub(crate) mod base64_bytes {
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine as _;
    use bytes::Bytes;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &Bytes, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Bytes, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        STANDARD
            .decode(text.as_bytes())
            .map(Bytes::from)
            .map_err(serde::de::Error::custom)
    }
}
