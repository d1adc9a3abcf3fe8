//! Per-training-run sequence ids and submission turns (protocol.md 3.3, 8.9, 11.2).
//!
//! Every request of a training run reserves a *turn* at call time; turns are submitted strictly
//! in reservation order: a turn may POST only once every earlier turn is finished (its POSTs
//! returned a future, failed, or were cancelled). The chunks of one forward_backward share a
//! turn; with `parallel_fwdbwd_chunks` chunks 2..k go first and chunk 1 (the lowest seq_id)
//! last, otherwise the chunks go one after another.
//!
//! A turn gets its seq ids only when it *starts*: when its first chunk has passed every gate
//! and is about to POST ([`TurnTable::start_chunk`]). A turn given back before that consumes no
//! id, so a call cancelled before it was sent never leaves a hole the server would wait for
//! (the local server waits 30 s). Since only the current turn can start, the ids of a run stay
//! contiguous and follow turn order. Once started, a turn must be sent in full: its calls hand
//! their unsent chunks to the background instead of giving them back (see
//! [`crate::call::DetachedSubmission`]).

use std::collections::BTreeMap;

/// How the chunks inside one turn are ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChunkOrder {
    /// Chunks 2..k concurrently first, chunk 1 once they have all been submitted (11.2).
    FirstChunkLast,
    /// Chunk i only after chunk i−1 was submitted.
    Sequential,
}

/// A reserved turn of one training run: its place in the order, not yet its seq ids.
///
/// Hand it back with [`crate::ledger::Ledger::release_reservation`] if it will never be
/// submitted; the calls built on it release their chunks themselves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    /// The training run (`model_id`).
    pub model_id: String,
    /// The turn number within the run (0-based, in reservation order).
    pub turn: u64,
    /// How many ids (= chunks) the turn will take when it starts.
    pub count: usize,
}

impl Reservation {
    /// The place of chunk `i` of this turn.
    pub fn slot(&self, chunk: usize) -> TurnSlot {
        TurnSlot {
            model_id: self.model_id.clone(),
            turn: self.turn,
            chunk,
        }
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

/// A turn that started: which seq ids it took (kept only when history is on, for checks).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartedTurn {
    /// The training run.
    pub model_id: String,
    /// The turn.
    pub turn: u64,
    /// Its first seq id; chunk `i` has `first_seq_id + i`.
    pub first_seq_id: u64,
    /// How many ids it took.
    pub count: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Turn {
    done: Vec<bool>,
    order: ChunkOrder,
    /// Set when the turn starts.
    first_seq_id: Option<u64>,
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
    history: Option<Vec<StartedTurn>>,
}

impl TurnTable {
    /// Reserves the run's next turn of `count` chunks (at least 1). No seq id is taken yet.
    pub fn reserve(&mut self, model_id: &str, count: usize, order: ChunkOrder) -> Reservation {
        let count = count.max(1);
        let run = self.runs.entry(model_id.to_owned()).or_default();
        let turn = run.next_turn;
        run.next_turn += 1;
        run.open.insert(
            turn,
            Turn {
                done: vec![false; count],
                order,
                first_seq_id: None,
            },
        );
        Reservation {
            model_id: model_id.to_owned(),
            turn,
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

    /// The chunk is about to POST: starts its turn if it has not started (the turn takes the
    /// run's next `count` seq ids) and returns the chunk's seq id. `None` if the chunk may not
    /// submit now or its turn is not open (released, or the chunk is already finished).
    pub fn start_chunk(&mut self, slot: &TurnSlot) -> Option<u64> {
        if !self.may_submit(slot) {
            return None;
        }
        let run = self.runs.get_mut(&slot.model_id)?;
        let turn = run.open.get_mut(&slot.turn)?;
        if turn.done.get(slot.chunk).copied() != Some(false) {
            return None;
        }
        let first = match turn.first_seq_id {
            Some(first) => first,
            None => {
                let first = run.next_seq_id;
                run.next_seq_id += turn.done.len() as u64;
                turn.first_seq_id = Some(first);
                if let Some(history) = &mut self.history {
                    history.push(StartedTurn {
                        model_id: slot.model_id.clone(),
                        turn: slot.turn,
                        first_seq_id: first,
                        count: turn.done.len(),
                    });
                }
                first
            }
        };
        Some(first + slot.chunk as u64)
    }

    /// The first seq id of an open turn that has started; `None` if it has not started (or is
    /// finished).
    pub fn started_at(&self, model_id: &str, turn: u64) -> Option<u64> {
        self.runs.get(model_id)?.open.get(&turn)?.first_seq_id
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

    /// Finishes every chunk of a reservation (it will never be submitted). Meant for turns that
    /// have not started: a started turn released here leaves its unsent ids as a hole.
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

    /// The next seq id the run would hand out (to the next turn that starts).
    pub fn next_seq_id(&self, model_id: &str) -> u64 {
        self.runs.get(model_id).map_or(1, |r| r.next_seq_id)
    }

    /// Starts keeping a [`StartedTurn`] record of every turn that starts (the simulator checks
    /// the server's view against it). Off by default: a long run would grow it without bound.
    pub fn keep_history(&mut self) {
        self.history.get_or_insert_with(Vec::new);
    }

    /// The turns that started since [`TurnTable::keep_history`], in start order.
    pub fn history(&self) -> &[StartedTurn] {
        self.history.as_deref().unwrap_or(&[])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turns_follow_reservation_order_and_take_their_ids_when_they_start() {
        let mut t = TurnTable::default();
        let fb = t.reserve("m", 3, ChunkOrder::FirstChunkLast);
        let opt = t.reserve("m", 1, ChunkOrder::Sequential);
        // Nothing is numbered at call time.
        assert_eq!(t.next_seq_id("m"), 1);
        assert_eq!(t.started_at("m", fb.turn), None);
        // Chunks 2 and 3 go first; chunk 1 waits for them; optim_step waits for the turn.
        assert!(t.may_submit(&fb.slot(1)) && t.may_submit(&fb.slot(2)));
        assert!(!t.may_submit(&fb.slot(0)));
        assert!(!t.may_submit(&opt.slot(0)));
        assert_eq!(
            t.start_chunk(&opt.slot(0)),
            None,
            "a later turn cannot start"
        );
        assert_eq!(t.start_chunk(&fb.slot(2)), Some(3), "chunk 3 of ids 1..=3");
        assert_eq!(t.start_chunk(&fb.slot(1)), Some(2));
        assert_eq!(t.start_chunk(&fb.slot(0)), None, "chunk 1 still waits");
        assert_eq!(t.started_at("m", fb.turn), Some(1));
        t.finish_chunk(&fb.slot(1));
        t.finish_chunk(&fb.slot(2));
        assert_eq!(t.start_chunk(&fb.slot(0)), Some(1));
        assert!(!t.may_submit(&opt.slot(0)));
        t.finish_chunk(&fb.slot(0));
        assert_eq!(t.start_chunk(&opt.slot(0)), Some(4));
        assert_eq!(t.open_turns(), 1);
    }

    #[test]
    fn a_turn_released_before_it_started_consumes_no_ids() {
        let mut t = TurnTable::default();
        t.keep_history();
        let a = t.reserve("m", 1, ChunkOrder::Sequential);
        let dropped = t.reserve("m", 2, ChunkOrder::Sequential);
        let c = t.reserve("m", 1, ChunkOrder::Sequential);
        assert_eq!(t.start_chunk(&a.slot(0)), Some(1));
        t.finish_chunk(&a.slot(0));
        // The caller gave up on the second call before it was sent.
        assert!(t.release(&dropped));
        assert_eq!(t.start_chunk(&dropped.slot(0)), None);
        // The third call takes the very next id: no hole for the server to wait on.
        assert_eq!(t.start_chunk(&c.slot(0)), Some(2));
        t.finish_chunk(&c.slot(0));
        let ids: Vec<(u64, u64, usize)> = t
            .history()
            .iter()
            .map(|s| (s.turn, s.first_seq_id, s.count))
            .collect();
        assert_eq!(ids, vec![(a.turn, 1, 1), (c.turn, 2, 1)]);
        assert_eq!((t.open_turns(), t.next_seq_id("m")), (0, 3));
    }

    #[test]
    fn a_released_turn_never_blocks_later_ones() {
        let mut t = TurnTable::default();
        let a = t.reserve("m", 2, ChunkOrder::Sequential);
        let b = t.reserve("m", 1, ChunkOrder::Sequential);
        assert!(!t.may_submit(&b.slot(0)));
        assert!(t.may_submit(&a.slot(0)) && !t.may_submit(&a.slot(1)));
        assert!(t.release(&a));
        assert!(t.may_submit(&b.slot(0)));
        // Finishing a chunk of an already released turn changes nothing.
        assert!(!t.finish_chunk(&a.slot(1)));
    }

    #[test]
    fn runs_number_their_turns_independently() {
        let mut t = TurnTable::default();
        let a = t.reserve("a", 2, ChunkOrder::Sequential);
        let b = t.reserve("b", 1, ChunkOrder::Sequential);
        assert_eq!(t.start_chunk(&b.slot(0)), Some(1));
        assert_eq!(t.start_chunk(&a.slot(0)), Some(1));
        assert_eq!(
            t.start_chunk(&a.slot(1)),
            None,
            "sequential: chunk 2 after chunk 1"
        );
        t.finish_chunk(&a.slot(0));
        assert_eq!(t.start_chunk(&a.slot(1)), Some(2));
    }
}
