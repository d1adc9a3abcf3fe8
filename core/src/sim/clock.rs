//! Virtual time.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::io::{AsyncRuntime, BlockingClock, BoxFuture};

/// A clock that only moves when told to (or when someone sleeps on it). Clones share the time.
#[derive(Debug, Clone)]
pub struct VirtualClock {
    now: Arc<Mutex<Instant>>,
    start: Instant,
}

impl VirtualClock {
    /// A clock reading `start`.
    pub fn new(start: Instant) -> VirtualClock {
        VirtualClock {
            now: Arc::new(Mutex::new(start)),
            start,
        }
    }

    /// The current virtual instant.
    pub fn now(&self) -> Instant {
        *self.now.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Moves the clock forward to `t` (never backwards).
    pub fn advance_to(&self, t: Instant) {
        let mut now = self.now.lock().unwrap_or_else(|p| p.into_inner());
        if t > *now {
            *now = t;
        }
    }

    /// Moves the clock forward by `d`.
    pub fn advance(&self, d: Duration) {
        let t = self.now() + d;
        self.advance_to(t);
    }

    /// Virtual time elapsed since the clock was made.
    pub fn elapsed(&self) -> Duration {
        self.now().saturating_duration_since(self.start)
    }

    /// The instant the clock started at.
    pub fn start(&self) -> Instant {
        self.start
    }
}

impl BlockingClock for VirtualClock {
    fn now(&self) -> Instant {
        VirtualClock::now(self)
    }
    fn sleep_until(&self, deadline: Instant) {
        self.advance_to(deadline);
    }
    fn real_wait(&self, _duration: Duration) -> Duration {
        Duration::ZERO
    }
}

impl AsyncRuntime for VirtualClock {
    fn now(&self) -> Instant {
        VirtualClock::now(self)
    }
    /// Completes on its first poll, having moved the clock to `deadline` (a driver that finds
    /// another event ready first never polls it, and time does not move).
    fn sleep_until(&self, deadline: Instant) -> BoxFuture<'static, ()> {
        let clock = self.clone();
        Box::pin(async move { clock.advance_to(deadline) })
    }
    /// Background tasks are not run by the virtual runtime (simulations drive the housekeeper
    /// themselves); the task is dropped.
    fn spawn(&self, task: BoxFuture<'static, ()>) {
        drop(task);
    }
}
