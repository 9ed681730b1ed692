//! The rollout record: one rollout's lifecycle, as a fold.

use ledger::domain::{Micros, RolloutId, RolloutState};
use ledger::event::{Event, RolloutCause, RolloutOpened};

/// One rollout. Changed only by [`RolloutRecord::apply`].
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RolloutRecord {
    /// `channel@ref`.
    pub rollout_id: RolloutId,
    /// Lifecycle state.
    pub state: RolloutState,
    /// Wave cursor: hosts with wave ≤ cursor may be dispatched. Moves only by `WaveAdvanced`.
    pub current_wave: u32,
    /// SHA-256 of the rollout manifest it was opened from.
    pub manifest_hash: [u8; 32],
    /// CP time it opened.
    pub opened_at: Micros,
    /// CP time it became Terminal.
    pub terminal_at: Option<Micros>,
    /// CP time it was superseded.
    pub superseded_at: Option<Micros>,
    /// The rollout that superseded it.
    pub superseded_by: Option<RolloutId>,
    /// CP time retention expired.
    pub pruned_at: Option<Micros>,
    /// Operator clearance of a failure: (operator, reason).
    pub cleared_by: Option<(String, String)>,
    /// Ledger seq of its `RolloutOpened` entry.
    pub opened_seq: u64,
    /// Ledger seq of its last state transition.
    pub last_transition_seq: u64,
    /// CP time of its last state transition (its opening, before any): retention counts
    /// from the transition into a finished state.
    pub last_transition_at: Micros,
    /// Ledger seq of the last entry that changed it.
    pub updated_seq: u64,
}

impl RolloutRecord {
    /// The record a `RolloutOpened` entry at `seq` creates.
    pub fn opened(e: &RolloutOpened, seq: u64, at: Micros) -> RolloutRecord {
        RolloutRecord {
            rollout_id: e.rollout_id.clone(),
            state: RolloutState::Opening,
            current_wave: 0,
            manifest_hash: e.manifest_hash,
            opened_at: at,
            terminal_at: None,
            superseded_at: None,
            superseded_by: None,
            pruned_at: None,
            cleared_by: None,
            opened_seq: seq,
            last_transition_seq: seq,
            last_transition_at: at,
            updated_seq: seq,
        }
    }

    /// Whether successor channels may proceed past it: Terminal, Superseded, Pruned, or a
    /// failure an operator cleared.
    pub fn is_finished_for_ordering(&self) -> bool {
        self.state.is_terminal_for_ordering()
            || self.state == RolloutState::Pruned
            || self.cleared_by.is_some()
    }

    /// Whether it still counts as the channel's active rollout (not Superseded or Pruned).
    pub fn is_active(&self) -> bool {
        !matches!(self.state, RolloutState::Superseded | RolloutState::Pruned)
    }

    /// Folds one entry about this rollout (others are ignored).
    pub fn apply(&mut self, seq: u64, at: Micros, event: &Event) {
        match event {
            Event::RolloutTransitioned(e) if e.rollout_id == self.rollout_id => {
                self.state = e.to;
                match (e.to, &e.cause) {
                    (RolloutState::Terminal, _) => self.terminal_at = Some(at),
                    (RolloutState::Superseded, RolloutCause::SupersededBy { successor }) => {
                        self.superseded_at = Some(at);
                        self.superseded_by = Some(successor.clone());
                    }
                    (RolloutState::Pruned, _) => self.pruned_at = Some(at),
                    _ => {}
                }
                self.last_transition_seq = seq;
                self.last_transition_at = at;
            }
            Event::WaveAdvanced(e) if e.rollout_id == self.rollout_id => {
                self.current_wave = self.current_wave.max(e.to_wave);
            }
            Event::RolloutCleared(e) if e.rollout_id == self.rollout_id => {
                self.cleared_by = Some((e.operator.clone(), e.reason.clone()));
            }
            _ => return,
        }
        self.updated_seq = seq;
    }
}
