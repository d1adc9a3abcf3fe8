//! The SDK's deliberately loose byte semaphore (protocol.md 8.6).

use std::collections::BTreeMap;

/// Proof that `bytes` were taken from a [`ByteBudget`]. Hand it back to
/// [`ByteBudget::release`] exactly once; it cannot be cloned, so it cannot be released twice.
/// A call that is cancelled while holding one must release it (that is the refund).
#[derive(Debug, PartialEq, Eq)]
#[must_use = "a byte permit must be released, or the budget leaks"]
pub struct BytePermit {
    id: u64,
    bytes: u64,
}

impl BytePermit {
    /// The bytes this permit holds.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The permit's id (unique within its budget), for logs.
    pub fn id(&self) -> u64 {
        self.id
    }
}

/// The answer to [`ByteBudget::try_acquire`].
#[derive(Debug, PartialEq, Eq)]
#[must_use]
pub enum Acquire {
    /// The bytes were taken.
    Admitted(BytePermit),
    /// The balance is negative: try again after a release.
    MustWait,
}

/// A byte budget with the SDK's "may go negative" rule.
///
/// A request is admitted as soon as the balance is ≥ 0 and then subtracts its *full* size, so the
/// balance may go negative and a single request larger than the whole budget still gets through
/// when nothing else is in flight. (A strict "wait for enough bytes" semaphore would deadlock on
/// such requests.) Used for the sample-dispatch (10 MiB), forward/backward-dispatch (50 MB) and
/// inflight-response (50 MiB) budgets.
///
/// Waiting is expressed as [`Acquire::MustWait`]; the driver retries on the next ledger change,
/// which reproduces the SDK's "release wakes every waiter" behaviour.
///
/// ```
/// use tinker_core::flow::{Acquire, ByteBudget};
///
/// let mut budget = ByteBudget::new(100);
/// let Acquire::Admitted(big) = budget.try_acquire(250) else { panic!() }; // larger than the budget
/// assert_eq!(budget.balance(), -150);
/// assert_eq!(budget.try_acquire(1), Acquire::MustWait);
/// assert!(budget.release(big));
/// assert_eq!(budget.balance(), 100);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ByteBudget {
    capacity: u64,
    balance: i64,
    outstanding: BTreeMap<u64, u64>,
    next_id: u64,
}

impl ByteBudget {
    /// A budget of `capacity` bytes, all available.
    pub fn new(capacity: u64) -> ByteBudget {
        ByteBudget {
            capacity,
            balance: clamp_i64(capacity),
            outstanding: BTreeMap::new(),
            next_id: 0,
        }
    }

    /// Takes `bytes` if the balance is ≥ 0 (whatever `bytes` is), else asks the caller to wait.
    pub fn try_acquire(&mut self, bytes: u64) -> Acquire {
        if self.balance < 0 {
            return Acquire::MustWait;
        }
        self.balance = self.balance.saturating_sub(clamp_i64(bytes));
        let id = self.next_id;
        self.next_id += 1;
        self.outstanding.insert(id, bytes);
        Acquire::Admitted(BytePermit { id, bytes })
    }

    /// Gives the permit's bytes back. Returns `false` (and changes nothing) if the permit does not
    /// belong to this budget.
    pub fn release(&mut self, permit: BytePermit) -> bool {
        match self.outstanding.remove(&permit.id) {
            Some(bytes) if bytes == permit.bytes => {
                self.balance = self.balance.saturating_add(clamp_i64(bytes));
                true
            }
            Some(bytes) => {
                // Same id, different size: a permit of another budget. Put it back untouched.
                self.outstanding.insert(permit.id, bytes);
                false
            }
            None => false,
        }
    }

    /// The bytes still available (negative when oversubscribed).
    pub fn balance(&self) -> i64 {
        self.balance
    }

    /// The configured size.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Permits not yet released.
    pub fn outstanding(&self) -> usize {
        self.outstanding.len()
    }
}

fn clamp_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn admitted(a: Acquire) -> BytePermit {
        match a {
            Acquire::Admitted(p) => p,
            Acquire::MustWait => panic!("expected admission"),
        }
    }

    #[test]
    fn requests_are_admitted_while_the_balance_is_not_negative() {
        let mut b = ByteBudget::new(100);
        let a = admitted(b.try_acquire(60));
        let c = admitted(b.try_acquire(40));
        assert_eq!(b.balance(), 0);
        // Balance exactly zero still admits, and may go negative.
        let d = admitted(b.try_acquire(30));
        assert_eq!(b.balance(), -30);
        assert_eq!(b.try_acquire(1), Acquire::MustWait);
        assert!(b.release(a));
        assert_eq!(b.balance(), 30);
        let e = admitted(b.try_acquire(500));
        assert_eq!(b.balance(), -470);
        for p in [c, d, e] {
            assert!(b.release(p));
        }
        assert_eq!(b.balance(), 100);
        assert_eq!(b.outstanding(), 0);
    }

    #[test]
    fn a_permit_from_another_budget_is_refused() {
        let mut one = ByteBudget::new(10);
        let mut two = ByteBudget::new(10);
        let p1 = admitted(one.try_acquire(3));
        let p2 = admitted(two.try_acquire(4));
        assert!(!one.release(p2), "same id, other size, other budget");
        assert_eq!(one.balance(), 7);
        assert!(one.release(p1));
        assert!(!one.release(BytePermit { id: 99, bytes: 1 }));
        assert_eq!(one.balance(), 10);
    }

    proptest! {
        /// Whatever the sizes and the order of releases, releasing every permit restores the
        /// capacity, and at every step balance = capacity − held bytes.
        #[test]
        fn the_budget_is_conserved(
            capacity in 0u64..1000,
            ops in proptest::collection::vec((0u64..600, any::<bool>(), any::<prop::sample::Index>()), 0..200),
        ) {
            let mut b = ByteBudget::new(capacity);
            let mut held: Vec<BytePermit> = vec![];
            for (size, acquire, pick) in ops {
                if acquire || held.is_empty() {
                    if let Acquire::Admitted(p) = b.try_acquire(size) {
                        held.push(p);
                    } else {
                        prop_assert!(b.balance() < 0);
                    }
                } else {
                    let p = held.swap_remove(pick.index(held.len()));
                    prop_assert!(b.release(p));
                }
                let in_use: u64 = held.iter().map(|p| p.bytes()).sum();
                prop_assert_eq!(b.balance(), capacity as i64 - in_use as i64);
            }
            for p in held.drain(..).rev() {
                prop_assert!(b.release(p));
            }
            prop_assert_eq!(b.balance(), capacity as i64);
            prop_assert_eq!(b.outstanding(), 0);
        }
    }
}
