//! Recovery automation (Tinkex F126–F128): watch training runs, notice when the server reports
//! one `corrupted`, and recreate it from a checkpoint.
//!
//! | Piece | What it decides |
//! |---|---|
//! | [`RecoveryPolicy`] | on/off (off by default), attempts, back-off (5 s doubling to 60 s), poll interval, checkpoint strategy, optimizer restore, concurrency |
//! | [`RecoveryMachine`] | when to poll which run, what a poll means, which checkpoint an attempt restores, when to retry or give up |
//! | [`RecoveryEvent`] | each stage as it happens: detected, started, checkpoint selected, client created, completed, failed, exhausted (and failed polls) |
//!
//! The machine is sans-IO like every machine of this crate: it asks for a run to be fetched or
//! a client to be created and is told the outcome, with `now` passed in. The async driver that
//! performs those requests with a [`crate::client::ServiceClient`] on any runtime is
//! [`crate::client::RecoveryMonitor`].

mod machine;
mod policy;

#[cfg(test)]
mod tests;

pub use machine::{RecoveryEvent, RecoveryMachine, RecoveryOutput};
pub use policy::{CheckpointStrategy, RecoveryPolicy};
