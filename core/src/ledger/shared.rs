//! The ledger shared between calls: a `std` mutex, plus the two ways of waiting for a change.

use std::future::Future;
use std::ops::{Deref, DerefMut};
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use super::Ledger;

/// A [`Ledger`] shared by every call of a session: `Arc<Mutex<Ledger>>` plus a condition
/// variable for blocking waiters.
///
/// Lock it only in synchronous scopes ([`SharedLedger::lock`]); never hold the guard across an
/// `.await`. When a guard is dropped after a change (the generation moved), registered async
/// wakers are woken and blocking waiters notified, after the mutex is released.
///
/// ```
/// use tinker_core::endpoints::RequestContext;
/// use tinker_core::ledger::{Ledger, SharedLedger};
/// use tinker_core::settings::ApiKey;
///
/// let ctx = RequestContext::new("http://127.0.0.1:8000", ApiKey::new("tml-test-key-0001").unwrap()).unwrap();
/// let shared = SharedLedger::new(Ledger::new(ctx, 1));
/// let seen = shared.lock().generation();
/// shared.lock().bump();
/// assert_ne!(shared.lock().generation(), seen);
/// ```
#[derive(Debug, Clone)]
pub struct SharedLedger {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    ledger: Mutex<Ledger>,
    changed: Condvar,
}

impl SharedLedger {
    /// Shares `ledger`.
    pub fn new(ledger: Ledger) -> SharedLedger {
        SharedLedger {
            inner: Arc::new(Inner {
                ledger: Mutex::new(ledger),
                changed: Condvar::new(),
            }),
        }
    }

    /// Locks the ledger for a synchronous scope. A poisoned lock is recovered: the ledger's
    /// invariants hold between any two method calls, so a panic elsewhere cannot break them.
    pub fn lock(&self) -> LedgerGuard<'_> {
        let guard = self
            .inner
            .ledger
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        LedgerGuard {
            seen: guard.generation(),
            guard: Some(guard),
            shared: &self.inner,
        }
    }

    /// A future that completes once the ledger's generation differs from `seen` (at once if it
    /// already does). Registers its waker under the lock, so no wake-up is lost.
    pub fn changed(&self, seen: u64) -> Changed<'_> {
        Changed { shared: self, seen }
    }

    /// Blocks the thread until the generation differs from `seen` or `timeout` passes
    /// (`None` = no timeout). Returns whether it changed.
    pub fn wait_changed_blocking(&self, seen: u64, timeout: Option<Duration>) -> bool {
        let mut guard = self
            .inner
            .ledger
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match timeout {
            None => {
                while guard.generation() == seen {
                    guard = self
                        .inner
                        .changed
                        .wait(guard)
                        .unwrap_or_else(|poisoned| poisoned.into_inner());
                }
                true
            }
            Some(timeout) => {
                let (guard, _) = self
                    .inner
                    .changed
                    .wait_timeout_while(guard, timeout, |l| l.generation() == seen)
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                guard.generation() != seen
            }
        }
    }
}

/// Exclusive access to the ledger; wakes waiters on drop if anything changed.
#[derive(Debug)]
pub struct LedgerGuard<'a> {
    guard: Option<MutexGuard<'a, Ledger>>,
    shared: &'a Inner,
    seen: u64,
}

impl Deref for LedgerGuard<'_> {
    type Target = Ledger;
    fn deref(&self) -> &Ledger {
        self.guard
            .as_ref()
            .unwrap_or_else(|| unreachable!("taken only in drop"))
    }
}

impl DerefMut for LedgerGuard<'_> {
    fn deref_mut(&mut self) -> &mut Ledger {
        self.guard
            .as_mut()
            .unwrap_or_else(|| unreachable!("taken only in drop"))
    }
}

impl Drop for LedgerGuard<'_> {
    fn drop(&mut self) {
        let Some(mut guard) = self.guard.take() else {
            return;
        };
        if guard.generation() == self.seen {
            return;
        }
        let wakers = guard.take_wakers();
        drop(guard);
        self.shared.changed.notify_all();
        for w in wakers {
            w.wake();
        }
    }
}

/// The future of [`SharedLedger::changed`].
#[derive(Debug)]
#[must_use = "futures do nothing unless polled"]
pub struct Changed<'a> {
    shared: &'a SharedLedger,
    seen: u64,
}

impl Future for Changed<'_> {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut ledger = self.shared.lock();
        if ledger.register_waker(self.seen, cx.waker()) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}
