//! tinker-rs clients on blocking (plain threads + ureq). The clients land with the runtimes issue; this crate currently
//! re-exports the core so the workspace layout is in place.
#![forbid(unsafe_code)]

pub use tinker_core as core;

mod clock;
mod transport;

pub use clock::SystemClock;
pub use transport::{transport_error_of, UreqTransport, ACCEPT_ENCODING};
