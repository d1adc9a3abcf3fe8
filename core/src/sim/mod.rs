//! A deterministic simulator: a virtual clock, fake HTTP transports over a scripted or seeded
//! fake server, and a harness that runs many machines against it in one thread.
//!
//! Available in core's own tests and, for downstream crates, behind the `sim` feature. Nothing
//! here touches a socket or the real clock: the same seed gives the same trace, in milliseconds.
//!
//! * [`VirtualClock`] — implements [`crate::io::AsyncRuntime`] and [`crate::io::BlockingClock`];
//!   sleeping advances it instantly.
//! * [`FakeHttp`] — implements [`crate::io::AsyncHttp`] and [`crate::io::BlockingHttp`] over a
//!   [`Server`], recording a [`Trace`] of every request.
//! * [`Scripted`] — a server answering a fixed list of [`Reply`]s in order.
//! * [`FaultyServer`] — a seeded server speaking the Tinker future protocol with injected faults.
//! * [`Sim`] — runs N machines concurrently on virtual time with random cancellation and checks
//!   the engine's invariants.

mod clock;
mod harness;
mod http;
mod server;
mod telemetry;

#[cfg(test)]
mod tests;

pub use clock::VirtualClock;
pub use harness::{run_all, run_one, Sim, SimConfig, SimReport};
pub use http::{FakeHttp, Trace};
pub use server::{FaultConfig, FaultyServer, Reply, Scripted, Server};

#[cfg(test)]
pub(crate) use harness::{deliver as harness_deliver, Unit};

/// Wraps a machine so its result is erased (test helper).
#[cfg(test)]
pub(crate) fn harness_unit<M: crate::call::Machine>(m: M) -> Unit<M> {
    Unit(m)
}
