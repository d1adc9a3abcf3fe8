//! tinker-rs clients on async-std. The clients land with the runtimes issue; this crate currently
//! re-exports the core so the workspace layout is in place.
#![forbid(unsafe_code)]

pub use tinker_core as core;

mod connector;
mod runtime;
mod transport;

pub use runtime::AsyncStdRuntime;
pub use transport::{HyperTransport, ACCEPT_ENCODING};
