//! # tinker-core: the sans-IO protocol core of tinker-rs
//!
//! This crate decides everything a Tinker client does and performs no I/O. It builds
//! `http::Request<Bytes>` values, classifies responses, decides retries and back-off, polls server
//! futures, orders a training run's requests, accounts byte budgets, batches telemetry, decodes
//! server-sent events, and owns every wire type. The runtime crates (`tinker-tokio`,
//! `tinker-async-std`, `tinker-blocking`) only move bytes, sleep and read the clock.
//!
//! ## The contract between the core and a driver
//!
//! Every state machine in this crate follows the same rules, borrowed from quinn-proto, str0m and
//! ureq-proto:
//!
//! 1. **Time comes in.** No function reads a clock: each input that depends on time takes `now`
//!    (an [`std::time::Instant`] chosen by the driver, or a virtual instant in simulations).
//! 2. **Randomness comes in.** Jitter and ids are drawn from a PRNG the caller seeds, so the same
//!    seed and the same inputs give the same trace.
//! 3. **Drain after every input.** After feeding a machine an input (a response head, a body chunk,
//!    a transport error, a timer firing, a cancellation), the driver pulls outputs until the machine
//!    answers one of: *send this request*, *wait until T*, *blocked on shared state* (wake me when the
//!    ledger changes), or *done* (with a result or an error). A machine never produces output
//!    spontaneously.
//! 4. **Nothing hangs silently.** Every wait the machine asks for has a deadline, and a timeout
//!    error says what was awaited.
//!
//! The machines that talk to the server implement [`call::Machine`]; the ledger they share is
//! [`ledger::Ledger`]; the operations the clients run are in [`ops`]; and the only two loops that
//! drive them are [`drive::drive_async`] and [`drive::drive_blocking`].
//!
//! Enforced mechanically: `#![forbid(unsafe_code)]`, and `clippy.toml` bans clocks, sleeping,
//! spawning and OS randomness in this crate.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod auth;
pub mod batching;
pub mod call;
pub mod client;
pub mod drive;
pub mod endpoints;
pub mod error;
pub mod flow;
pub mod housekeeping;
pub mod io;
pub mod ledger;
pub mod losses;
pub mod metrics;
pub mod ops;
pub mod path;
pub mod proto;
pub mod recovery;
pub mod redirect;
pub mod retry;
pub mod rng;
pub mod settings;
#[cfg(any(test, feature = "sim"))]
pub mod sim;
pub mod sse;
pub mod telemetry;
pub mod tokenizer;
pub mod types;

pub use error::{Error, ErrorKind, Result};
