//! Server-sent events: a push-based, allocation-light WHATWG decoder.
//!
//! Used for streamed responses. The decoder works on bytes (lines are split before any UTF-8
//! decoding, so chunks may split CRLF pairs and multi-byte characters anywhere) and converts to
//! text only when an event is dispatched. See [`SseDecoder`] for the exact rules, the size cap and
//! how it recovers from an oversized event.

mod decoder;
#[cfg(test)]
mod tests;

pub use decoder::{SseDecoder, SseError, SseEvent, SseEventRef, DEFAULT_MAX_EVENT_BYTES};
