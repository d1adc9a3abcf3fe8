//! tinker-testkit: the local Tinker server (protocol, toy model, fault injection, recording) and
//! the shared end-to-end suites.
//!
//! * [`server`]: [`LocalServer`] — in-process ([`LocalServer::start`]), on its own runtime thread
//!   ([`LocalServer::start_background`]) or as the `tinker-local-server` binary.
//! * [`model`]: the toy model the server trains and samples from.
//! * [`scenarios`]: the end-to-end suite every runtime crate runs against the server.
//! * [`transport_scenarios`]: the transport suite every async runtime crate runs against the
//!   scripted loopback server.
#![forbid(unsafe_code)]
pub mod model;
pub mod scenarios;
pub mod scripted_http;
pub mod server;
pub mod transport_scenarios;

pub use server::{BackgroundServer, LocalServer, LocalServerConfig, ServerControl};
