//! The host state machine: `decide(&HostRecord, input, now, &policy) -> events`.
//!
//! Pure: the record is the projection's fold of the log so far, `now` is the CP time the
//! writer decided at (recorded in the entry header). The events it returns are what the
//! writer appends; folding them with [`projections::HostRecord::apply`] gives the new record.

use ledger::domain::{AgentReport, HostState, Micros, OnHealthFailure, ProbeMode, ProbeStatus};
use ledger::event::{
    AgentEventRecorded, AgentEventSynthesized, DispatchAcknowledged, Event, HostTransitioned,
    ProbeFailureRecorded, QuarantineAdded, TransitionCause,
};
use projections::HostRecord;
use thiserror::Error;

/// How far ahead of the CP clock a synthesized report's timestamps may lie.
pub const SYNTHESIS_SKEW_US_MAX: Micros = 60_000_000;

/// What reaches the host machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostInput {
    /// A report the agent sent, with its own seq.
    Agent {
        /// The agent's seq for this (host, rollout).
        agent_seq: u64,
        /// The report.
        report: AgentReport,
    },
    /// A report the CP infers from a heartbeat (no agent seq: it can never collide).
    Synthesized {
        /// The inferred report.
        report: AgentReport,
        /// The heartbeat's time (agent clock).
        heartbeat_at: Micros,
        /// Why, for humans.
        basis: String,
    },
}

impl HostInput {
    fn report(&self) -> &AgentReport {
        match self {
            HostInput::Agent { report, .. } | HostInput::Synthesized { report, .. } => report,
        }
    }
}

/// The parts of the rollout policy the host machine needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostPolicy {
    /// From the channel's rollout policy in the fleet manifest in force.
    pub on_health_failure: OnHealthFailure,
}

/// Why an input is refused. The ledger is unchanged; the caller answers 409/422.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum Rejection {
    /// The report is not legal in the host's current state.
    #[error("{event} is illegal for a host in state {from:?}")]
    IllegalForState {
        /// Current state.
        from: HostState,
        /// Wire kind.
        event: &'static str,
    },
    /// The agent seq is not above the last accepted one (equal: a retransmit).
    #[error("agent seq {got} is not above the last accepted seq {last}")]
    SeqRegression {
        /// The agent seq received.
        got: u64,
        /// Last accepted.
        last: u64,
    },
    /// The report would break an invariant (e.g. Converged while an enforce probe fails).
    #[error("invariant violated: {0}")]
    Invariant(String),
    /// No such rollout.
    #[error("unknown rollout {0}")]
    UnknownRollout(String),
    /// The host is not part of the rollout.
    #[error("host {host} is not part of rollout {rollout}")]
    UnknownHost {
        /// The host's name.
        host: String,
        /// The rollout, as `channel@channelRef`.
        rollout: String,
    },
    /// The rollout's retention expired; reports about it are no longer taken.
    #[error("rollout {0} was pruned; its hosts' reports are no longer accepted")]
    RolloutPruned(String),
    /// The rollout was superseded: its host records are final (DECISIONS 111). A late report
    /// is recorded, as refused, and moves nothing.
    #[error("rollout {0} was superseded; a report to it is recorded and moves nothing")]
    RolloutSuperseded(String),
}

impl Rejection {
    /// Stable reason code for APIs and the `AgentReportRefused` entries of refused reports.
    pub fn code(&self) -> &'static str {
        match self {
            Rejection::IllegalForState { .. } => "illegal-transition",
            Rejection::SeqRegression { .. } => "seq-regression",
            Rejection::Invariant(_) => "invariant",
            Rejection::UnknownRollout(_) => "unknown-rollout",
            Rejection::UnknownHost { .. } => "unknown-host",
            Rejection::RolloutPruned(_) => "rollout-pruned",
            Rejection::RolloutSuperseded(_) => "rollout-superseded",
        }
    }
}

/// The state a report moves a host to, if it is legal in `from` (None: legal, no change).
/// This table is the whole transition relation (DOMAIN §2.5 plus `Deferred`).
pub fn transition(from: HostState, report: &AgentReport) -> Result<Option<HostState>, Rejection> {
    use AgentReport as R;
    use HostState as S;
    let to = match (from, report) {
        (S::Pending, R::DispatchAck { .. }) => Some(S::Activating),
        (S::Activating, R::ActivationStarted { .. }) => None,
        (S::Activating | S::Deferred, R::ActivationCompleted { .. }) => Some(S::Soaking),
        (S::Activating, R::ActivationDeferred { .. }) => Some(S::Deferred),
        (S::Activating | S::Deferred, R::ActivationFailed { .. }) => Some(S::Failed),
        (
            S::Soaking,
            R::ProbeTopologyDeclared { .. }
            | R::ProbeObservedFirst { .. }
            | R::ProbeResult { .. }
            | R::ProbeFailureFirst { .. },
        ) => None,
        (S::Soaking, R::Failed { .. }) => Some(S::Failed),
        (S::Soaking, R::Converged { .. }) => Some(S::Converged),
        (S::Failed, R::RollbackComplete { .. }) => Some(S::Reverted),
        _ => {
            return Err(Rejection::IllegalForState {
                from,
                event: report.name(),
            });
        }
    };
    Ok(to)
}

/// Decides one input against a host record.
pub fn decide(
    record: &HostRecord,
    input: &HostInput,
    now: Micros,
    policy: &HostPolicy,
) -> Result<Vec<Event>, Rejection> {
    let report = input.report();
    match input {
        HostInput::Agent { agent_seq, .. } if *agent_seq <= record.last_event_seq => {
            return Err(Rejection::SeqRegression {
                got: *agent_seq,
                last: record.last_event_seq,
            });
        }
        HostInput::Synthesized { heartbeat_at, .. } => {
            // A synthesized fact may not claim a time the CP has not reached (the reference
            // stamped converged_at in the future).
            if report.at() > now + SYNTHESIS_SKEW_US_MAX
                || *heartbeat_at > now + SYNTHESIS_SKEW_US_MAX
            {
                return Err(Rejection::Invariant(
                    "synthesized report is dated in the future".into(),
                ));
            }
        }
        HostInput::Agent { .. } => {}
    }
    let to = transition(record.state, report)?;

    let mut next = record.clone();
    next.apply_report(report);
    if to == Some(HostState::Converged) {
        check_converged(&next)?;
    }

    let (rollout_id, hostname) = (record.rollout_id.clone(), record.hostname.clone());
    let mut events = vec![match input {
        HostInput::Agent { agent_seq, report } => Event::AgentEventRecorded(AgentEventRecorded {
            hostname: hostname.clone(),
            rollout_id: rollout_id.clone(),
            agent_seq: *agent_seq,
            report: report.clone(),
        }),
        HostInput::Synthesized {
            report,
            heartbeat_at,
            basis,
        } => Event::AgentEventSynthesized(AgentEventSynthesized {
            hostname: hostname.clone(),
            rollout_id: rollout_id.clone(),
            report: report.clone(),
            heartbeat_at: *heartbeat_at,
            basis: basis.clone(),
        }),
    }];
    if let (AgentReport::DispatchAck { .. }, HostInput::Agent { agent_seq, .. }) = (report, input) {
        events.push(Event::DispatchAcknowledged(DispatchAcknowledged {
            hostname: hostname.clone(),
            rollout_id: rollout_id.clone(),
            agent_seq: *agent_seq,
        }));
    }
    events.extend(probe_failures(record, report));
    if let Some(to) = to {
        let policy_applied = match (to, report) {
            (HostState::Failed, AgentReport::Failed { policy_applied, .. }) => {
                Some(*policy_applied)
            }
            (HostState::Failed, _) => Some(policy.on_health_failure),
            _ => None,
        };
        events.push(Event::HostTransitioned(HostTransitioned {
            hostname: hostname.clone(),
            rollout_id: rollout_id.clone(),
            from: record.state,
            to,
            at: report.at(),
            policy_applied,
            cause: match input {
                HostInput::Agent { agent_seq, report } => TransitionCause::Report {
                    agent_seq: *agent_seq,
                    report: report.name().to_string(),
                },
                HostInput::Synthesized { report, .. } => TransitionCause::Synthesized {
                    report: report.name().to_string(),
                },
            },
        }));
        if to == HostState::Reverted {
            // The closure that failed is the rollout's target, not the one rolled back to.
            events.push(Event::QuarantineAdded(QuarantineAdded {
                channel: rollout_id.channel.clone(),
                closure: record.target_closure.clone(),
                rollout_id,
                hostname,
            }));
        }
    }
    Ok(events)
}

/// Decides an agent (or synthesized) report end to end: the host machine, then the rollout
/// machine for any host transition it causes. The returned events are one atomic append.
pub fn decide_report(
    state: &projections::State,
    rollout_id: &ledger::domain::RolloutId,
    hostname: &str,
    input: &HostInput,
    now: Micros,
    policy: &HostPolicy,
) -> Result<Vec<Event>, Rejection> {
    let rollout = state
        .rollouts
        .get(rollout_id)
        .ok_or_else(|| Rejection::UnknownRollout(rollout_id.to_string()))?;
    if rollout.state == ledger::domain::RolloutState::Pruned {
        return Err(Rejection::RolloutPruned(rollout_id.to_string()));
    }
    if rollout.state == ledger::domain::RolloutState::Superseded {
        return Err(Rejection::RolloutSuperseded(rollout_id.to_string()));
    }
    let record = state
        .hosts
        .get(rollout_id, hostname)
        .ok_or_else(|| Rejection::UnknownHost {
            host: hostname.to_string(),
            rollout: rollout_id.to_string(),
        })?;
    let mut events = decide(record, input, now, policy)?;
    let transition = events.iter().find_map(|e| match e {
        Event::HostTransitioned(t) => Some(t.to),
        _ => None,
    });
    if let Some(to) = transition {
        let rollout_events = crate::rollout::decide(
            state,
            rollout_id,
            &crate::rollout::RolloutInput::HostStateChanged {
                hostname: hostname.to_string(),
                to,
            },
            now,
        )
        .map_err(|e| Rejection::Invariant(format!("rollout machine refused: {e}")))?;
        events.extend(rollout_events);
    }
    Ok(events)
}

/// DOMAIN §2.7: current == target, soak elapsed, every enforce probe passing.
fn check_converged(next: &HostRecord) -> Result<(), Rejection> {
    if next.current_closure.as_deref() != Some(next.target_closure.as_str()) {
        return Err(Rejection::Invariant(format!(
            "Converged with current closure {:?}, target {}",
            next.current_closure, next.target_closure
        )));
    }
    if let (Some(due), Some(at)) = (next.soak_due_at, next.converged_at)
        && at < due
    {
        return Err(Rejection::Invariant(format!(
            "Converged at {at} before the soak deadline {due}"
        )));
    }
    if let Some((name, _)) = next
        .probes
        .iter()
        .find(|(_, p)| p.mode == ProbeMode::Enforce && p.status != ProbeStatus::Pass)
    {
        return Err(Rejection::Invariant(format!(
            "Converged while enforce probe {name} fails"
        )));
    }
    Ok(())
}

/// DOMAIN §5.3 (newest rule): one failure per failing sub-result whose effective mode is
/// enforce; for a probe without sub-results, one failure when the probe is enforce and fails.
fn probe_failures(record: &HostRecord, report: &AgentReport) -> Vec<Event> {
    let AgentReport::ProbeResult {
        probe_name,
        mode,
        status,
        observed_at,
        sub_results,
        ..
    } = report
    else {
        return Vec::new();
    };
    let row = |control_id: Option<String>, framework: Option<String>| {
        Event::ProbeFailureRecorded(ProbeFailureRecorded {
            rollout_id: record.rollout_id.clone(),
            hostname: record.hostname.clone(),
            probe_name: probe_name.clone(),
            control_id,
            framework,
            observed_at: *observed_at,
        })
    };
    if sub_results.is_empty() {
        if *mode == ProbeMode::Enforce && *status == ProbeStatus::Fail {
            return vec![row(None, None)];
        }
        return Vec::new();
    }
    sub_results
        .iter()
        .filter(|s| s.status == ProbeStatus::Fail && s.effective_mode == ProbeMode::Enforce)
        .map(|s| row(Some(s.control_id.clone()), Some(s.framework.clone())))
        .collect()
}
