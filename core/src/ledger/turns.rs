//! Per-training-run sequence ids and submission turns (protocol.md 3.3, 8.9, 11.2).
//!
//! Every request of a training run reserves its `seq_id`s at call time, in one *turn*. Turns are
//! submitted strictly in reservation order: a turn may POST only once every earlier turn is
//! finished (its POSTs returned a future, failed, or were cancelled). The chunks of one
//! forward_backward share a turn; with `parallel_fwdbwd_chunks` chunks 2..k go first and chunk 1
//! (the lowest seq_id) last, otherwise the chunks go one after another.

use std::collections::BTreeMap;

/// How the chunks inside one turn are ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChunkOrder {
    /// Chunks 2..k concurrently first, chunk 1 once they have all been submitted (11.2).
    FirstChunkLast,
    /// Chunk i only after chunk i−1 was submitted.
    Sequential,
}

/// A reserved range of seq ids forming one turn of one training run.
///
/// Hand it back with [`crate::ledger::Ledger::release_reservation`] if it will never be
/// submitted; the calls built on it release their chunks themselves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    /// The training run (`model_id`).
    pub model_id: String,
    /// The turn number within the run (0-based, in reservation order).
    pub turn: u64,
    /// The first reserved seq id (the first request after `create_model` gets 1).
    pub first_seq_id: u64,
    /// How many ids (= chunks) the turn holds.
    pub count: usize,
}

impl Reservation {
    /// The seq id of chunk `i`.
    pub fn seq_id(&self, chunk: usize) -> u64 {
        self.first_seq_id + chunk as u64
    }
}

/// One chunk's place in a turn: what a call waits on before its POST.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TurnSlot {
    /// The training run.
    pub model_id: String,
    /// The turn.
    pub turn: u64,
    /// The chunk index within the turn.
    pub chunk: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Turn {
    done: Vec<bool>,
    order: ChunkOrder,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Run {
    next_seq_id: u64,
    next_turn: u64,
    /// Unfinished turns; the smallest key is the current turn.
    open: BTreeMap<u64, Turn>,
}

impl Default for Run {
    fn default() -> Run {
        // create_model (or create-via-load_weights) is implicitly seq 0.
        Run {
            next_seq_id: 1,
            next_turn: 0,
            open: BTreeMap::new(),
        }
    }
}

/// The turn tables of every training run of a session.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TurnTable {
    runs: BTreeMap<String, Run>,
}

impl TurnTable {
    /// Reserves `count` consecutive seq ids (at least 1) as the run's next turn.
    pub fn reserve(&mut self, model_id: &str, count: usize, order: ChunkOrder) -> Reservation {
        let count = count.max(1);
        let run = self.runs.entry(model_id.to_owned()).or_default();
        let turn = run.next_turn;
        let first_seq_id = run.next_seq_id;
        run.next_turn += 1;
        run.next_seq_id += count as u64;
        run.open.insert(
            turn,
            Turn {
                done: vec![false; count],
                order,
            },
        );
        Reservation {
            model_id: model_id.to_owned(),
            turn,
            first_seq_id,
            count,
        }
    }

    /// Whether the chunk may POST now.
    pub fn may_submit(&self, slot: &TurnSlot) -> bool {
        let Some(run) = self.runs.get(&slot.model_id) else {
            return true;
        };
        let Some((&current, turn)) = run.open.iter().next() else {
            return true;
        };
        if current != slot.turn {
            // Either an earlier turn is still open (wait) or this turn is already finished
            // (nothing to wait for: a finished turn never blocks).
            return !run.open.contains_key(&slot.turn);
        }
        match turn.order {
            ChunkOrder::FirstChunkLast => slot.chunk != 0 || turn.done.iter().skip(1).all(|d| *d),
            ChunkOrder::Sequential => turn.done.iter().take(slot.chunk).all(|d| *d),
        }
    }

    /// Marks a chunk as submitted (or failed, or cancelled). Returns whether anything changed.
    pub fn finish_chunk(&mut self, slot: &TurnSlot) -> bool {
        let Some(run) = self.runs.get_mut(&slot.model_id) else {
            return false;
        };
        let Some(turn) = run.open.get_mut(&slot.turn) else {
            return false;
        };
        let Some(flag) = turn.done.get_mut(slot.chunk) else {
            return false;
        };
        if *flag {
            return false;
        }
        *flag = true;
        if turn.done.iter().all(|d| *d) {
            run.open.remove(&slot.turn);
        }
        true
    }

    /// Finishes every chunk of a reservation (it will never be submitted).
    pub fn release(&mut self, reservation: &Reservation) -> bool {
        let Some(run) = self.runs.get_mut(&reservation.model_id) else {
            return false;
        };
        run.open.remove(&reservation.turn).is_some()
    }

    /// The turn allowed to submit now, and how many turns are open, for a run.
    pub fn current_turn(&self, model_id: &str) -> Option<u64> {
        let run = self.runs.get(model_id)?;
        Some(run.open.keys().next().copied().unwrap_or(run.next_turn))
    }

    /// Open (unfinished) turns across all runs — zero once every call finished or was cancelled.
    pub fn open_turns(&self) -> usize {
        self.runs.values().map(|r| r.open.len()).sum()
    }

    /// The next seq id the run would hand out.
    pub fn next_seq_id(&self, model_id: &str) -> u64 {
        self.runs.get(model_id).map_or(1, |r| r.next_seq_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(r: &Reservation, chunk: usize) -> TurnSlot {
        TurnSlot {
            model_id: r.model_id.clone(),
            turn: r.turn,
            chunk,
        }
    }

    #[test]
    fn seq_ids_start_at_one_and_turns_follow_reservation_order() {
        let mut t = TurnTable::default();
        let fb = t.reserve("m", 3, ChunkOrder::FirstChunkLast);
        let opt = t.reserve("m", 1, ChunkOrder::Sequential);
        assert_eq!((fb.first_seq_id, opt.first_seq_id), (1, 4));
        // Chunks 2 and 3 go first; chunk 1 waits for them; optim_step waits for the turn.
        assert!(t.may_submit(&slot(&fb, 1)) && t.may_submit(&slot(&fb, 2)));
        assert!(!t.may_submit(&slot(&fb, 0)));
        assert!(!t.may_submit(&slot(&opt, 0)));
        t.finish_chunk(&slot(&fb, 1));
        t.finish_chunk(&slot(&fb, 2));
        assert!(t.may_submit(&slot(&fb, 0)));
        assert!(!t.may_submit(&slot(&opt, 0)));
        t.finish_chunk(&slot(&fb, 0));
        assert!(t.may_submit(&slot(&opt, 0)));
        assert_eq!(t.open_turns(), 1);
    }

    #[test]
    fn a_released_turn_never_blocks_later_ones() {
        let mut t = TurnTable::default();
        let a = t.reserve("m", 2, ChunkOrder::Sequential);
        let b = t.reserve("m", 1, ChunkOrder::Sequential);
        assert!(!t.may_submit(&slot(&b, 0)));
        assert!(t.may_submit(&slot(&a, 0)) && !t.may_submit(&slot(&a, 1)));
        assert!(t.release(&a));
        assert!(t.may_submit(&slot(&b, 0)));
        // Finishing a chunk of an already released turn changes nothing.
        assert!(!t.finish_chunk(&slot(&a, 1)));
    }
}
