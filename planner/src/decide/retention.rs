//! Retention: which finished rollouts a tick prunes.

use ledger::domain::{Micros, RolloutId, RolloutState};
use projections::State;

/// The finished rollouts whose retention has passed at `now`, in id order.
pub fn retention_due(state: &State, keep: Micros, now: Micros) -> Vec<RolloutId> {
    state
        .rollouts
        .values()
        .filter(|r| {
            matches!(
                r.state,
                RolloutState::Terminal
                    | RolloutState::Failed
                    | RolloutState::Reverted
                    | RolloutState::Superseded
            ) && r.last_transition_at.saturating_add(keep) <= now
        })
        .map(|r| r.rollout_id.clone())
        .collect()
}
