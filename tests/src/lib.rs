//! tinker-testkit: the local Tinker server and the shared end-to-end suites.
#![forbid(unsafe_code)]

pub mod model;
pub mod scripted_http;
