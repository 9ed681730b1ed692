//! What a batch of decisions has staged and not yet committed: the one staging of the
//! writer's ledger and of the determinism check.

use ledger::domain::Micros;
use ledger::event::Event;
use projections::State;

/// Events decided and not yet committed, in the order they will be logged, each with the CP
/// time it was decided at. Staging folds each event into the state at once, so the next
/// decision of the batch reads it; the writer's ledger commits what is here, the check
/// compares it with what the log holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Staged {
    first: u64,
    events: Vec<(Micros, Event)>,
}

impl Staged {
    /// An empty staging whose first event will get seq `first` (the log's size).
    pub fn at(first: u64) -> Staged {
        Staged {
            first,
            events: Vec::new(),
        }
    }

    /// The seq the next staged event gets.
    pub fn next_seq(&self) -> u64 {
        self.first + self.events.len() as u64
    }

    /// Folds `events`, decided at CP time `at`, into `state` and stages them. Returns the
    /// seq of the first.
    pub fn stage(&mut self, state: &mut State, at: Micros, events: Vec<Event>) -> u64 {
        let first = self.next_seq();
        for event in events {
            self.push(state, at, event);
        }
        first
    }

    /// [`Staged::stage`] of one event. Returns its seq.
    pub fn push(&mut self, state: &mut State, at: Micros, event: Event) -> u64 {
        let seq = self.next_seq();
        state.apply(seq, at, &event);
        self.events.push((at, event));
        seq
    }

    /// The staged event at `seq`, if it is staged here.
    pub fn get(&self, seq: u64) -> Option<&Event> {
        let i = usize::try_from(seq.checked_sub(self.first)?).ok()?;
        self.events.get(i).map(|(_, e)| e)
    }

    /// Whether nothing is staged.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// The staged events with their times, in order.
    pub fn events(&self) -> &[(Micros, Event)] {
        &self.events
    }

    /// Takes everything staged, leaving an empty staging after it (where the log ends once
    /// the batch is committed; after a failed commit, start again with [`Staged::at`]).
    pub fn take(&mut self) -> Vec<(Micros, Event)> {
        self.first = self.next_seq();
        std::mem::take(&mut self.events)
    }
}
