//! tinker-rs clients on tokio. The clients land with the runtimes issue; this crate currently
//! re-exports the core so the workspace layout is in place.
#![forbid(unsafe_code)]

pub use tinker_core as core;

mod runtime;
mod transport;

pub use runtime::TokioRuntime;
pub use transport::{ReqwestTransport, ACCEPT_ENCODING};
