//! Cancel-on-drop for a machine being driven.

use std::time::Instant;

use crate::call::Machine;
use crate::ledger::SharedLedger;

/// Owns a machine while it is driven; dropping the guard before [`CallGuard::disarm`] cancels
/// the machine (refunds its budgets, finishes its training turn), so an abandoned call never
/// blocks later ones.
///
/// ```
/// use std::time::Instant;
/// use tinker_core::drive::CallGuard;
/// use tinker_core::endpoints::RequestContext;
/// use tinker_core::ledger::{Ledger, SharedLedger};
/// use tinker_core::ops;
/// use tinker_core::settings::ApiKey;
/// use tinker_core::types::{AdamParams, StepParams};
///
/// let ctx = RequestContext::new("http://127.0.0.1:8000", ApiKey::new("tml-test-key-0001").unwrap()).unwrap();
/// let shared = SharedLedger::new(Ledger::new(ctx, 1));
/// # #[allow(clippy::disallowed_methods)]
/// let now = Instant::now();
/// let step = |shared: &SharedLedger| {
///     let params = StepParams::Adam(AdamParams::with_learning_rate(1e-4));
///     ops::optim_step(&mut shared.lock(), "s:train:0", params, Default::default()).unwrap()
/// };
/// let first = CallGuard::new(&shared, step(&shared), now);
/// let _second = step(&shared);
/// assert_eq!(shared.lock().turns().open_turns(), 2);
/// drop(first); // abandoned before it was sent: its turn is finished, the second may go
/// assert_eq!(shared.lock().turns().open_turns(), 1);
/// ```
#[derive(Debug)]
pub struct CallGuard<'a, M: Machine> {
    ledger: &'a SharedLedger,
    machine: Option<M>,
    last_now: Instant,
}

impl<'a, M: Machine> CallGuard<'a, M> {
    /// Guards `machine`; `now` is the instant used if it must be cancelled before any other is
    /// observed.
    pub fn new(ledger: &'a SharedLedger, machine: M, now: Instant) -> CallGuard<'a, M> {
        CallGuard {
            ledger,
            machine: Some(machine),
            last_now: now,
        }
    }

    /// The guarded machine. Panics only if called after [`CallGuard::disarm`] (impossible, as
    /// disarm consumes the guard).
    pub fn machine(&mut self) -> &mut M {
        self.machine
            .as_mut()
            .unwrap_or_else(|| unreachable!("the machine is taken only by disarm or drop"))
    }

    /// Records the latest instant seen (used by a cancellation on drop).
    pub fn observe(&mut self, now: Instant) {
        if now > self.last_now {
            self.last_now = now;
        }
    }

    /// The machine finished: give it back without cancelling it.
    pub fn disarm(mut self) -> Option<M> {
        self.machine.take()
    }
}

impl<M: Machine> Drop for CallGuard<'_, M> {
    fn drop(&mut self) {
        if let Some(mut machine) = self.machine.take() {
            let mut ledger = self.ledger.lock();
            machine.cancel(&mut ledger, self.last_now);
        }
    }
}
