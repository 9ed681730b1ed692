//! Agents: their reports, through the host and rollout machines, and their heartbeats, with
//! the reports a heartbeat implies.

use super::{Answer, Decided, Log, Refusal, Undecided, recorded, rfc3339};
use crate::host::{HostInput, HostPolicy, Rejection};
use crate::manifest::Manifests;
use ledger::domain::{AgentReport, HostState, Micros, OnHealthFailure, RolloutId, RolloutState};
use ledger::event::{AgentReportRefused, Event};
use projections::HostRecord;

/// The parts of a channel's rollout policy the host machine needs.
pub fn host_policy(manifests: &Manifests, rollout: &RolloutId) -> HostPolicy {
    HostPolicy {
        on_health_failure: manifests
            .policy(&rollout.channel)
            .map_or(OnHealthFailure::Halt, |p| p.on_health_failure),
    }
}

/// An agent's report: recorded when the machines accept it, recorded as refused when they
/// do not (see [`Answer::Refused`]), answered with the original entry when it is a
/// retransmit.
pub(super) fn report_from_agent<L: Log>(
    log: &mut L,
    manifests: &Manifests,
    host: &str,
    rollout: &RolloutId,
    agent_seq: u64,
    report: AgentReport,
    now: Micros,
) -> Result<Decided, Undecided<L::Error>> {
    // A refused report is recorded whole, so the refusal hands it back (no copy of it on
    // the hot path). Nothing about a Pruned rollout is a retransmit: its host records may be
    // out of memory (the writer's live models, a replay), and the answer must not depend on
    // whether they are, so every report to it is refused below.
    let pruned = log
        .state()
        .rollouts
        .get(rollout)
        .is_some_and(|r| r.state == RolloutState::Pruned);
    let decided = match log.state().hosts.get(rollout, host).filter(|_| !pruned) {
        Some(rec) if agent_seq == rec.last_event_seq && rec.last_report_seq > 0 => {
            // The last accepted agent seq again: the same report is a retransmit (answered
            // with the original entry), a different one reuses a seq.
            let seq = rec.last_report_seq;
            match log.recorded(seq) {
                Ok(Some(Event::AgentEventRecorded(e))) if e.report == report => {
                    return Ok(Decided {
                        answer: Answer::Duplicate { seq },
                        replan: false,
                    });
                }
                Ok(_) => Err((Refusal::SeqReused { agent_seq, seq }, report)),
                Err(source) => return Err(Undecided::Unreadable { seq, source }),
            }
        }
        _ => {
            let input = HostInput::Agent { agent_seq, report };
            crate::host::decide_report(
                log.state(),
                rollout,
                host,
                &input,
                now,
                &host_policy(manifests, rollout),
            )
            .map_err(|r| match input {
                HostInput::Agent { report, .. } | HostInput::Synthesized { report, .. } => {
                    (Refusal::from(r), report)
                }
            })
        }
    };
    match decided {
        Ok(events) => {
            let replan = events
                .iter()
                .any(|e| matches!(e, Event::HostTransitioned(_)));
            Ok(recorded(log, now, events, replan))
        }
        Err((refusal, report)) => {
            let seq = log.stage(
                now,
                vec![Event::AgentReportRefused(AgentReportRefused {
                    hostname: host.to_string(),
                    rollout_id: rollout.clone(),
                    agent_seq,
                    report,
                    code: refusal.code().to_string(),
                    reason: refusal.to_string(),
                })],
            );
            Ok(Decided {
                answer: Answer::Refused { seq, refusal },
                replan: false,
            })
        }
    }
}

pub(super) fn heartbeat(
    log: &mut impl Log,
    manifests: &Manifests,
    host: &str,
    rollout: Option<RolloutId>,
    current_closure: Option<String>,
    at: Micros,
    now: Micros,
) -> Result<Decided, Refusal> {
    let named = rollout.is_some();
    let rollouts: Vec<RolloutId> = match rollout {
        Some(r) => vec![r],
        None => log.state().active_rollouts_of(host).cloned().collect(),
    };
    let mut first_seq = None;
    let mut replay_from = None;
    for r in &rollouts {
        // Nothing is inferred for a pruned rollout (its host rows are not in memory).
        if log
            .state()
            .rollouts
            .get(r)
            .is_some_and(|x| x.state == RolloutState::Pruned)
        {
            continue;
        }
        let Some(rec) = log.state().hosts.get(r, host) else {
            if named {
                return Err(Rejection::UnknownHost {
                    host: host.to_string(),
                    rollout: r.to_string(),
                }
                .into());
            }
            continue;
        };
        let Some(current) = current_closure.as_deref() else {
            continue;
        };
        if current != rec.target_closure {
            // The CP's view of what the host runs differs: ask for the reports since the
            // last one accepted.
            if named && rec.current_closure.as_deref() != Some(current) {
                replay_from = Some(rec.last_event_seq + 1);
            }
            continue;
        }
        for report in synthesis(rec, current, at) {
            let input = HostInput::Synthesized {
                report,
                heartbeat_at: at,
                basis: format!("heartbeat at {}: host runs its target closure", rfc3339(at)),
            };
            let policy = host_policy(manifests, r);
            match crate::host::decide_report(log.state(), r, host, &input, now, &policy) {
                Ok(events) => {
                    let seq = log.stage(now, events);
                    first_seq.get_or_insert(seq);
                }
                // Synthesis is best effort: a refused inference records nothing.
                Err(_) => break,
            }
        }
    }
    let bootstrap = (!named).then(|| {
        rollouts
            .iter()
            .filter_map(|r| log.state().hosts.get(r, host))
            .cloned()
            .collect()
    });
    Ok(Decided {
        replan: first_seq.is_some(),
        answer: Answer::Heartbeat {
            synthesized: first_seq,
            bootstrap,
            replay_from,
        },
    })
}

/// The reports a heartbeat implies for a host that runs its target (DOMAIN §8, LIFT #1/#5):
/// Activating or Deferred ⇒ ActivationCompleted; Pending ⇒ DispatchAck and
/// ActivationCompleted. Converged is never synthesized: the soak must be observed by the
/// agent's own probes (the reference stamped it, possibly in the future, §6.6).
pub fn synthesis(rec: &HostRecord, current: &str, at: Micros) -> Vec<AgentReport> {
    let completed = AgentReport::ActivationCompleted {
        observed_current_closure: current.to_string(),
        exit_code: 0,
        completed_at: at,
    };
    match rec.state {
        HostState::Activating | HostState::Deferred => vec![completed],
        HostState::Pending => vec![
            AgentReport::DispatchAck {
                // Unknown: the host was already at its target when the CP heard from it.
                current_closure_at_dispatch: current.to_string(),
                received_at: at,
            },
            completed,
        ],
        _ => Vec::new(),
    }
}
