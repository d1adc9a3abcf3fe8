//! A counting gate: at most `limit` holders at once.

/// Proof of holding one slot of a [`CountGate`]; give it back with [`CountGate::exit`].
#[derive(Debug, PartialEq, Eq)]
#[must_use = "a gate permit must be returned, or the slot leaks"]
pub struct GatePermit {
    _private: (),
}

/// A non-blocking counting semaphore: [`try_enter`](CountGate::try_enter) takes a slot if one is
/// free; otherwise the caller waits for the next ledger change.
///
/// ```
/// use tinker_core::flow::CountGate;
///
/// let mut gate = CountGate::new(1);
/// let permit = gate.try_enter().unwrap();
/// assert!(gate.try_enter().is_none());
/// gate.exit(permit);
/// assert_eq!(gate.held(), 0);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CountGate {
    limit: usize,
    held: usize,
}

impl CountGate {
    /// A gate with `limit` slots.
    pub fn new(limit: usize) -> CountGate {
        CountGate { limit, held: 0 }
    }

    /// Takes a slot if one is free.
    pub fn try_enter(&mut self) -> Option<GatePermit> {
        (self.held < self.limit).then(|| {
            self.held += 1;
            GatePermit { _private: () }
        })
    }

    /// Returns a slot.
    pub fn exit(&mut self, permit: GatePermit) {
        let GatePermit { _private: () } = permit;
        self.held = self.held.saturating_sub(1);
    }

    /// Slots in use.
    pub fn held(&self) -> usize {
        self.held
    }

    /// Total slots.
    pub fn limit(&self) -> usize {
        self.limit
    }
}
