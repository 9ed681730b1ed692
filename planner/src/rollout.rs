//! The rollout state machine: `decide(&State, rollout, input, now) -> events`.
//!
//! Differences from the reference (docs/DECISIONS.md): opening goes through the machine (so
//! `SupersessionExpected` is reachable); the wave cursor moves only by `WaveAdvanced` events;
//! a failed host fails the rollout and its completed rollback makes it Reverted; Terminal
//! requires every host Converged (Deferred hosts hold it back); retention is a transition to
//! Pruned; operator clearance is an event.

use ledger::domain::{HostState, Micros, RolloutId, RolloutState};
use ledger::event::{
    Event, HostAssignment, HostJoined, RolloutCause, RolloutCleared, RolloutOpened,
    RolloutTransitioned, WaveAdvanced,
};
use projections::State;
use thiserror::Error;

/// What reaches the rollout machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RolloutInput {
    /// A host of this rollout changed state; the state view already includes the change.
    HostStateChanged {
        /// The host.
        hostname: String,
        /// Its new state.
        to: HostState,
    },
    /// Move the cursor past the current wave, if every host in it is Converged or Deferred.
    AdvanceWave {
        /// Number of waves the channel declares.
        waves: u32,
    },
    /// The retention period passed.
    RetentionExpired,
    /// An operator clears a failed or reverted rollout.
    OperatorClearance {
        /// The operator, as authenticated (a token's identity or a certificate's name).
        operator: String,
        /// The reason the operator gave.
        reason: String,
    },
}

impl RolloutInput {
    fn name(&self) -> &'static str {
        match self {
            RolloutInput::HostStateChanged { .. } => "HostStateChanged",
            RolloutInput::AdvanceWave { .. } => "AdvanceWave",
            RolloutInput::RetentionExpired => "RetentionExpired",
            RolloutInput::OperatorClearance { .. } => "OperatorClearance",
        }
    }
}

/// Why a rollout input is refused.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum RolloutRejection {
    /// Not legal in the rollout's state.
    #[error("{event} is illegal for rollout {rollout_id} in state {from:?}")]
    IllegalForState {
        /// The rollout.
        rollout_id: RolloutId,
        /// Its state.
        from: RolloutState,
        /// The input.
        event: &'static str,
    },
    /// Opening while the channel has an active rollout the open does not supersede.
    #[error(
        "rollout {active} is active on channel {channel}: opening {rollout_id} must supersede it"
    )]
    SupersessionExpected {
        /// The rollout being opened.
        rollout_id: RolloutId,
        /// Its channel.
        channel: String,
        /// The active rollout not superseded.
        active: RolloutId,
    },
    /// No such rollout.
    #[error("unknown rollout {0}")]
    Unknown(RolloutId),
    /// An invariant would break.
    #[error("invariant violated: {0}")]
    Invariant(String),
}

impl RolloutRejection {
    /// A stable code for APIs and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            RolloutRejection::Unknown(_) => "unknown-rollout",
            RolloutRejection::IllegalForState { .. } => "illegal-transition",
            RolloutRejection::SupersessionExpected { .. } => "supersession-expected",
            RolloutRejection::Invariant(_) => "invariant",
        }
    }
}

fn transitioned(
    rollout_id: &RolloutId,
    from: RolloutState,
    to: RolloutState,
    cause: RolloutCause,
) -> Event {
    Event::RolloutTransitioned(RolloutTransitioned {
        rollout_id: rollout_id.clone(),
        from,
        to,
        cause,
    })
}

/// Opens a rollout. `supersede` must name every active rollout on the channel (they become
/// Superseded by this one); hosts join in (wave, name) order, and the first join makes the
/// rollout Active.
pub fn decide_open(
    state: &State,
    rollout_id: &RolloutId,
    manifest_hash: [u8; 32],
    hosts: &[HostAssignment],
    supersede: &[RolloutId],
) -> Result<Vec<Event>, RolloutRejection> {
    if let Some(existing) = state.rollouts.get(rollout_id) {
        return Err(RolloutRejection::IllegalForState {
            rollout_id: rollout_id.clone(),
            from: existing.state,
            event: "RolloutOpened",
        });
    }
    let active: Vec<_> = state
        .rollouts
        .values()
        .filter(|r| r.rollout_id.channel == rollout_id.channel && r.is_active())
        .collect();
    if let Some(missed) = active.iter().find(|r| !supersede.contains(&r.rollout_id)) {
        return Err(RolloutRejection::SupersessionExpected {
            rollout_id: rollout_id.clone(),
            channel: rollout_id.channel.clone(),
            active: missed.rollout_id.clone(),
        });
    }
    if let Some(extra) = supersede
        .iter()
        .find(|s| !active.iter().any(|r| &r.rollout_id == *s))
    {
        return Err(RolloutRejection::Invariant(format!(
            "{extra} is not an active rollout on channel {}",
            rollout_id.channel
        )));
    }
    let mut hosts = hosts.to_vec();
    hosts.sort_by(|a, b| (a.wave, &a.hostname).cmp(&(b.wave, &b.hostname)));
    if hosts.windows(2).any(|w| w[0].hostname == w[1].hostname) {
        return Err(RolloutRejection::Invariant(
            "a host appears twice in the host set".into(),
        ));
    }
    let mut events = vec![Event::RolloutOpened(RolloutOpened {
        rollout_id: rollout_id.clone(),
        manifest_hash,
        supersedes: supersede.to_vec(),
    })];
    for r in &active {
        events.push(transitioned(
            &r.rollout_id,
            r.state,
            RolloutState::Superseded,
            RolloutCause::SupersededBy {
                successor: rollout_id.clone(),
            },
        ));
    }
    for h in &hosts {
        events.push(Event::HostJoined(HostJoined {
            rollout_id: rollout_id.clone(),
            host: h.clone(),
        }));
    }
    if let Some(first) = hosts.first() {
        events.push(transitioned(
            rollout_id,
            RolloutState::Opening,
            RolloutState::Active,
            RolloutCause::HostJoined {
                hostname: first.hostname.clone(),
            },
        ));
    }
    Ok(events)
}

/// Decides one input for an open rollout.
pub fn decide(
    state: &State,
    rollout_id: &RolloutId,
    input: &RolloutInput,
    _now: Micros,
) -> Result<Vec<Event>, RolloutRejection> {
    use RolloutState as S;
    let record = state
        .rollouts
        .get(rollout_id)
        .ok_or_else(|| RolloutRejection::Unknown(rollout_id.clone()))?;
    let from = record.state;
    let illegal = || RolloutRejection::IllegalForState {
        rollout_id: rollout_id.clone(),
        from,
        event: input.name(),
    };
    let to = |to: S, cause: RolloutCause| Ok(vec![transitioned(rollout_id, from, to, cause)]);
    match (from, input) {
        (S::Pruned, _) | (S::Opening, _) => Err(illegal()),

        (S::Active | S::Converging, RolloutInput::HostStateChanged { hostname, to: h }) => {
            match h {
                HostState::Failed => to(
                    S::Failed,
                    RolloutCause::HostFailed {
                        hostname: hostname.clone(),
                    },
                ),
                HostState::Reverted => to(
                    S::Reverted,
                    RolloutCause::HostReverted {
                        hostname: hostname.clone(),
                    },
                ),
                _ => {
                    let mut hosts = state.hosts_of(rollout_id).peekable();
                    let all_converged = hosts.peek().is_some()
                        && hosts.all(|r| {
                            let s = if &r.hostname == hostname { *h } else { r.state };
                            s == HostState::Converged
                        });
                    if all_converged {
                        to(S::Terminal, RolloutCause::AllHostsConverged)
                    } else {
                        Ok(Vec::new())
                    }
                }
            }
        }
        (
            S::Failed,
            RolloutInput::HostStateChanged {
                hostname,
                to: HostState::Reverted,
            },
        ) => to(
            S::Reverted,
            RolloutCause::HostReverted {
                hostname: hostname.clone(),
            },
        ),
        (_, RolloutInput::HostStateChanged { .. }) => Ok(Vec::new()),

        (S::Active, RolloutInput::AdvanceWave { waves }) => {
            let cursor = record.current_wave;
            if cursor + 1 >= *waves {
                return Ok(Vec::new());
            }
            let mut in_wave = state
                .hosts_of(rollout_id)
                .filter(|h| h.wave == cursor)
                .peekable();
            let done = in_wave.peek().is_some()
                && in_wave.all(|h| matches!(h.state, HostState::Converged | HostState::Deferred));
            if !done {
                return Ok(Vec::new());
            }
            let mut events = vec![Event::WaveAdvanced(WaveAdvanced {
                rollout_id: rollout_id.clone(),
                from_wave: cursor,
                to_wave: cursor + 1,
            })];
            if cursor + 2 == *waves {
                events.push(transitioned(
                    rollout_id,
                    from,
                    S::Converging,
                    RolloutCause::LastWaveReached,
                ));
            }
            Ok(events)
        }
        (
            S::Converging | S::Failed | S::Reverted | S::Superseded,
            RolloutInput::AdvanceWave { .. },
        ) => Ok(Vec::new()),
        (S::Terminal, RolloutInput::AdvanceWave { .. }) => Err(illegal()),

        (S::Terminal | S::Failed | S::Reverted | S::Superseded, RolloutInput::RetentionExpired) => {
            to(S::Pruned, RolloutCause::RetentionExpired)
        }
        (_, RolloutInput::RetentionExpired) => Err(illegal()),

        (S::Failed | S::Reverted, RolloutInput::OperatorClearance { operator, reason }) => {
            if record.cleared_by.is_some() {
                return Ok(Vec::new());
            }
            Ok(vec![Event::RolloutCleared(RolloutCleared {
                rollout_id: rollout_id.clone(),
                operator: operator.clone(),
                reason: reason.clone(),
            })])
        }
        (_, RolloutInput::OperatorClearance { .. }) => Err(illegal()),
    }
}
