//! The determinism check: every recorded decision recomputed from the state before it and the recorded time.

use super::{ForensicsError, Source, entries};
use ledger::domain::{AgentReport, Hostname, Micros};
use ledger::event::{Event, RolloutCause};
use planner::document::Document;
use planner::{Input, Manifest, Manifests};
use projections::State;
use std::collections::VecDeque;

/// The first place where a recomputed decision differs from the recorded one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Divergence {
    /// Seq of the first entry that differs.
    pub seq: u64,
    /// What the log holds there.
    pub recorded: String,
    /// What the decision functions produce there.
    pub recomputed: String,
}

/// What the determinism check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckReport {
    /// Entries walked.
    pub entries: u64,
    /// Inputs whose decisions were recomputed.
    pub decisions: u64,
    /// Planner runs recomputed.
    pub plans: u64,
    /// The first divergence, if any.
    pub divergence: Option<Divergence>,
}

/// The input whose decision starts with `e`, rebuilt from what the entry records; `None` for
/// an entry recorded as is (nothing decides it from the state).
fn input_of(e: &Event) -> Result<Option<Input>, String> {
    Ok(Some(match e {
        Event::AgentEventRecorded(e) => Input::Report {
            host: recorded_host(&e.hostname)?,
            rollout: e.rollout_id.clone(),
            agent_seq: e.agent_seq,
            report: e.report.clone(),
        },
        // A refused report is decided like any other: the decision must refuse it again.
        Event::AgentReportRefused(e) => Input::Report {
            host: recorded_host(&e.hostname)?,
            rollout: e.rollout_id.clone(),
            agent_seq: e.agent_seq,
            report: e.report.clone(),
        },
        // A heartbeat is not recorded, only what it implied: the heartbeat that names the
        // rollout, at the time and with the closure the synthesized report states.
        Event::AgentEventSynthesized(e) => Input::Heartbeat {
            host: recorded_host(&e.hostname)?,
            rollout: Some(e.rollout_id.clone()),
            current_closure: match &e.report {
                AgentReport::DispatchAck {
                    current_closure_at_dispatch: c,
                    ..
                }
                | AgentReport::ActivationCompleted {
                    observed_current_closure: c,
                    ..
                } => Some(c.clone()),
                _ => None,
            },
            at: e.heartbeat_at,
        },
        e if e.manifest().is_some() => Input::Manifest(Box::new(manifest_of(e)?)),
        // The identity the CA issued is recorded whole: the decision must bind it again.
        Event::AgentEnrolled(e) => Input::Enroll(Box::new(e.clone())),
        Event::AgentCertificateRenewed(e) => Input::Renew(Box::new(e.clone())),
        Event::RolloutCleared(e) => Input::Clear {
            rollout: e.rollout_id.clone(),
            operator: e.operator.clone(),
            reason: e.reason.clone(),
        },
        Event::QuarantineLifted(e) => Input::Lift {
            channel: e.channel.clone(),
            closure: e.closure.clone(),
            operator: e.operator.clone(),
            reason: e.reason.clone(),
        },
        Event::DispatchDelivered(e) => Input::TakeDispatch {
            host: recorded_host(&e.hostname)?,
        },
        // The retention period is the operator's policy, not in the log: what is checked is
        // that the rollout machine allows the pruning at that time.
        Event::RolloutTransitioned(t) if matches!(t.cause, RolloutCause::RetentionExpired) => {
            Input::Expire {
                rollout: t.rollout_id.clone(),
            }
        }
        Event::RolloutOpened(_)
        | Event::HostJoined(_)
        | Event::WaveAdvanced(_)
        | Event::GateDecision(_)
        | Event::DispatchQueued(_)
        | Event::RolloutTransitioned(_) => Input::Plan,
        _ => return Ok(None),
    }))
}

/// A host name as an entry records it: one the daemon accepted, so a name it would refuse
/// means the entry did not come from a daemon's decision.
fn recorded_host(name: &str) -> Result<Hostname, String> {
    Hostname::parse(name).map_err(|e| format!("the host it names is not a valid host name: {e}"))
}

fn manifest_of(event: &Event) -> Result<Manifest, String> {
    let m = event.manifest().expect("a manifest entry");
    let document = Document::of_entry(event)
        .expect("a manifest entry")
        .map_err(|e| format!("the manifest it records cannot be read: {e}"))?;
    Ok(Manifest {
        canonical: m.canonical.to_vec(),
        content_hash: m.content_hash,
        signer: m.signer.to_string(),
        signed_at: m.signed_at,
        document,
        signature: m.signature.map(|(a, s)| (a.to_string(), s.to_vec())),
    })
}

/// What a decision re-run during the check stages into: the replayed state, folded at once
/// as the writer's ledger does, and the events to compare with the log.
struct Replaying<'a> {
    state: &'a mut State,
    next: u64,
    staged: Vec<Event>,
}

impl planner::Log for Replaying<'_> {
    fn state(&self) -> &State {
        self.state
    }

    fn next_seq(&self) -> u64 {
        self.next + self.staged.len() as u64
    }

    fn stage(&mut self, at: Micros, events: Vec<Event>) -> u64 {
        let first = self.next_seq();
        for (i, e) in events.into_iter().enumerate() {
            self.state.apply(first + i as u64, at, &e);
            self.staged.push(e);
        }
        first
    }

    /// A retransmit records nothing, so an input the check re-runs is never one: the log
    /// holding a report with the seq of the one before is a divergence.
    fn recorded(&self, _seq: u64) -> Result<Option<Event>, String> {
        Ok(None)
    }
}

fn show(e: &Event) -> String {
    format!(
        "{} {}",
        e.kind().name(),
        serde_json::to_string(e).unwrap_or_default()
    )
}

/// Re-runs every decision over the recorded inputs with the recorded `now` and compares: the
/// same decision function the daemon's writer runs ([`planner::decide`]).
///
/// The replayed state leaves out a rollout's host records once it is pruned, as the
/// daemon's does (no decision reads them), so memory follows the live fleet.
pub fn check(source: Source<'_>) -> Result<CheckReport, ForensicsError> {
    let mut state = State::untracked().without_index().dropping_retired();
    let mut manifests = Manifests::default();
    let mut expected: VecDeque<Event> = VecDeque::new();
    let mut report = CheckReport {
        entries: 0,
        decisions: 0,
        plans: 0,
        divergence: None,
    };
    for item in entries(source)? {
        let item = item?;
        report.entries += 1;
        if expected.is_empty() {
            let input = input_of(&item.event).map_err(|reason| ForensicsError::Entry {
                seq: item.seq,
                reason,
            })?;
            let Some(input) = input else {
                state.apply(item.seq, item.at, &item.event);
                continue;
            };
            let plan = matches!(input, Input::Plan);
            let mut log = Replaying {
                state: &mut state,
                next: item.seq,
                staged: Vec::new(),
            };
            match planner::decide(&mut log, &mut manifests, input, item.at) {
                Ok(_) => {
                    if plan {
                        report.plans += 1;
                    } else {
                        report.decisions += 1;
                    }
                    expected = log.staged.into();
                }
                Err(r) => {
                    report.divergence = Some(Divergence {
                        seq: item.seq,
                        recorded: show(&item.event),
                        recomputed: format!("a refusal ({}): {r}", r.code()),
                    });
                    break;
                }
            }
        }
        // Recomputed events were folded as they were staged: a match needs no fold.
        match expected.pop_front() {
            Some(e) if e == item.event => {}
            other => {
                report.divergence = Some(Divergence {
                    seq: item.seq,
                    recorded: show(&item.event),
                    recomputed: other.map_or(
                        "nothing (the decision ended before this entry)".into(),
                        |e| show(&e),
                    ),
                });
                break;
            }
        }
    }
    if report.divergence.is_none()
        && let Some(e) = expected.front()
    {
        report.divergence = Some(Divergence {
            seq: report.entries,
            recorded: "the end of the log".into(),
            recomputed: show(e),
        });
    }
    Ok(report)
}
