//! The only two loops that drive machines: [`drive_async`] and [`drive_blocking`].
//!
//! Both run any [`Machine`] (a [`crate::call::Call`] or an operation of [`crate::ops`]) the
//! same way:
//!
//! 1. lock the ledger, drain the machine's outputs until it waits or is done, unlock;
//! 2. hand events to `on_event`, perform the transmits collected in that drain (in the order they
//!    were produced), read each response body whole (up to [`MAX_BODY_BYTES`]);
//! 3. feed every outcome back, then drain again; with nothing in flight, sleep until the wait's
//!    instant or until the ledger changes (for a blocked call).
//!
//! The async loop runs a machine's transmits concurrently; the blocking loop runs them one after
//! another on the calling thread. For the same seed, script and clock both produce the same
//! request trace. Neither holds the ledger lock across I/O or an `.await`, and both wrap the
//! machine in a [`CallGuard`]: if the caller gives up (drops the future, or the thread unwinds),
//! the guard cancels the machine, which refunds budgets and finishes its training turn.
//!
//! `drive_async`'s future is not cancel-safe in tokio's sense (dropping it cancels the call); do
//! not use it as a `select!` branch inside a loop.

mod async_loop;
mod blocking_loop;
mod guard;

#[cfg(test)]
mod tests;

pub use async_loop::drive_async;
pub use blocking_loop::drive_blocking;
pub use guard::CallGuard;

/// The largest response body a driver reads (1 GiB); a larger one is a transport error.
pub const MAX_BODY_BYTES: usize = 1 << 30;
