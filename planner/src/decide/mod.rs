//! The one decision function: every input the CP accepts, from an agent report to a
//! retention tick, goes through [`decide`], and nothing else decides what the log records.
//!
//! The daemon's writer calls it on each queued input; `replay --check` calls it on each
//! input it finds recorded in the log and compares what it stages with what the log holds.
//! So whatever the daemon decides, the determinism check checks.
//!
//! A decision may take several steps that each read the state the previous one left (a
//! heartbeat synthesizes a `DispatchAck`, then an `ActivationCompleted` against the host's
//! new state). So it does not return a list of events: it stages them into a [`Log`], which
//! folds each staged event into the state at once. The daemon's log is its ledger (the batch
//! is committed once all its inputs are decided); the check's is the state it replays.
//! Either way no IO happens here, and `now` is passed in.

mod identity;
mod refusal;
mod text;

pub use identity::{IdentityRefusal, ssh_ed25519_key};
pub use refusal::{ManifestRefusal, Refusal};
use text::hex;
pub use text::rfc3339;

use ledger::domain::{
    AgentReport, HostState, Hostname, Micros, OnHealthFailure, RolloutId, RolloutState,
};
use ledger::event::{
    AgentReportRefused, DispatchDelivered, Event, FleetManifestAccepted, FleetManifestSigned,
    QuarantineLifted, RolloutManifestAccepted, RolloutManifestSigned,
};
use projections::{DispatchRow, HostRecord, State};

use crate::document::{self, Document};
use crate::host::{HostInput, HostPolicy, Rejection};
use crate::manifest::{InForce, Manifests};
use crate::plan::{Decision, FleetView};
use crate::rollout::RolloutInput;

/// The log as a decision sees it: the state folded over everything recorded so far,
/// including what this decision (and the batch it is part of) already staged.
pub trait Log {
    /// The projections, up to date with everything staged.
    fn state(&self) -> &State;
    /// The seq the next staged event gets.
    fn next_seq(&self) -> u64;
    /// Stages `events`, decided at CP time `at`, folding each into [`Log::state`]. Returns
    /// the seq of the first.
    fn stage(&mut self, at: Micros, events: Vec<Event>) -> u64;
    /// The event recorded (or staged) at `seq`, to tell a retransmit from a reused seq.
    fn recorded(&self, seq: u64) -> Result<Option<Event>, String>;
}

/// A signed manifest whose signature, schema and freshness the intake verified.
#[derive(Clone, Debug)]
pub struct Manifest {
    /// The JCS bytes (what the signature and hash cover, and what the entry records).
    pub canonical: Vec<u8>,
    /// SHA-256 of `canonical`.
    pub content_hash: [u8; 32],
    /// The trusted key that verified it (base64).
    pub signer: String,
    /// `meta.signedAt`.
    pub signed_at: Micros,
    /// The parsed document.
    pub document: Document,
    /// CI's signature: its algorithm and raw bytes. Always there for a manifest from the
    /// intake; None only when the check re-decides an entry of the first manifest kinds,
    /// which did not keep it.
    pub signature: Option<(String, Vec<u8>)>,
}

/// Everything the CP decides on.
#[derive(Clone, Debug)]
pub enum Input {
    /// An agent's report.
    Report {
        /// The authenticated host.
        host: Hostname,
        /// The rollout it reports on.
        rollout: RolloutId,
        /// The agent's seq for this (host, rollout).
        agent_seq: u64,
        /// The report.
        report: AgentReport,
    },
    /// A heartbeat: it may imply reports the agent has not sent (see [`synthesis`]).
    Heartbeat {
        /// The authenticated host.
        host: Hostname,
        /// The rollout the agent names, if any (none: all the host's active rollouts, and the
        /// answer carries their records for the agent to bootstrap from).
        rollout: Option<RolloutId>,
        /// The closure the host runs.
        current_closure: Option<String>,
        /// The heartbeat's time (agent clock).
        at: Micros,
    },
    /// A verified manifest: accepted if it is newer than the one in force and consistent
    /// with the fleet in force.
    Manifest(Box<Manifest>),
    /// An operator clears a Failed or Reverted rollout.
    Clear {
        /// The rollout.
        rollout: RolloutId,
        /// Who.
        operator: String,
        /// Why.
        reason: String,
    },
    /// An operator lifts a quarantined closure.
    Lift {
        /// The channel.
        channel: String,
        /// The closure.
        closure: String,
        /// Who.
        operator: String,
        /// Why.
        reason: String,
    },
    /// A host's long poll takes its oldest queued dispatch.
    TakeDispatch {
        /// The authenticated host.
        host: Hostname,
    },
    /// The safety tick: prunes the finished rollouts whose retention passed, then plans.
    Tick {
        /// How long a finished rollout stays live (None: forever). The operator's policy,
        /// not in the log: each pruning is recorded as its own decision ([`Input::Expire`]).
        retain_for: Option<Micros>,
    },
    /// Prune one finished rollout (what a tick decides for each rollout due).
    Expire {
        /// The rollout.
        rollout: RolloutId,
    },
    /// Run the planner over the fleet.
    Plan,
    /// A host enrolls: the certificate the CA issued on its bootstrap token, recorded if the
    /// fleet in force binds the host to the certificate's key and the nonce is unused.
    Enroll(Box<ledger::event::AgentEnrolled>),
    /// An enrolled agent renews: recorded if the fleet in force still binds the host to the
    /// key.
    Renew(Box<ledger::event::AgentCertificateRenewed>),
}

impl Input {
    /// A short name for logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Input::Report { .. } => "report",
            Input::Heartbeat { .. } => "heartbeat",
            Input::Manifest(_) => "manifest",
            Input::Clear { .. } => "clear",
            Input::Lift { .. } => "lift",
            Input::TakeDispatch { .. } => "take-dispatch",
            Input::Tick { .. } => "tick",
            Input::Expire { .. } => "expire",
            Input::Plan => "plan",
            Input::Enroll(_) => "enroll",
            Input::Renew(_) => "renew",
        }
    }
}

/// A dispatch taken by a host's long poll.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivered {
    /// The host.
    pub host: Hostname,
    /// The rollout.
    pub rollout: RolloutId,
    /// The queued row it was taken from.
    pub row: DispatchRow,
    /// The host's wave in the rollout.
    pub wave: u32,
    /// Seq of the `DispatchDelivered` entry.
    pub seq: u64,
}

/// What a decision answers its caller (once the batch is durable).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// Recorded: the seq of the input's first entry.
    Recorded {
        /// Seq.
        seq: u64,
        /// Entries staged for it.
        entries: u64,
    },
    /// An agent report recorded as refused (`AgentReportRefused`): the agent is answered
    /// 2xx so its queue moves on, and the log keeps the report and why.
    Refused {
        /// Seq of the `AgentReportRefused` entry.
        seq: u64,
        /// Why.
        refusal: Refusal,
    },
    /// Already recorded earlier (a retransmit, or the manifest in force).
    Duplicate {
        /// The original entry.
        seq: u64,
    },
    /// A heartbeat's answer.
    Heartbeat {
        /// Seq of the first synthesized entry, if any.
        synthesized: Option<u64>,
        /// The host's records in its active rollouts, when the heartbeat named none.
        bootstrap: Option<Vec<HostRecord>>,
        /// Agent seq to resend from, when the CP's view of the host's closure differs.
        replay_from: Option<u64>,
    },
    /// The long poll's answer.
    Dispatch(Option<Delivered>),
    /// A tick, expiry or plan ran.
    Done {
        /// Entries staged.
        entries: u64,
    },
}

/// A decision's answer and whether the planner must run before the batch commits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decided {
    /// The answer.
    pub answer: Answer,
    /// Whether what was staged can change what the planner decides.
    pub replan: bool,
}

/// Decides `input` at CP time `now`: stages its events into `log` and answers, or refuses
/// and stages nothing.
pub fn decide(
    log: &mut impl Log,
    manifests: &mut Manifests,
    input: Input,
    now: Micros,
) -> Result<Decided, Refusal> {
    match input {
        Input::Report {
            host,
            rollout,
            agent_seq,
            report,
        } => report_from_agent(log, manifests, &host, &rollout, agent_seq, report, now),
        Input::Heartbeat {
            host,
            rollout,
            current_closure,
            at,
        } => Ok(heartbeat(
            log,
            manifests,
            &host,
            rollout,
            current_closure,
            at,
            now,
        )?),
        Input::Manifest(m) => Ok(Decided {
            answer: manifest(log, manifests, *m, now)?,
            // Even a duplicate: the planner's safety net after a restart or a re-post.
            replan: true,
        }),
        Input::Clear {
            rollout,
            operator,
            reason,
        } => {
            let events = crate::rollout::decide(
                log.state(),
                &rollout,
                &RolloutInput::OperatorClearance { operator, reason },
                now,
            )?;
            Ok(recorded(log, now, events, true))
        }
        Input::Lift {
            channel,
            closure,
            operator,
            reason,
        } => {
            if !log
                .state()
                .quarantine
                .contains_key(&(channel.clone(), closure.clone()))
            {
                return Err(Refusal::NotQuarantined { channel, closure });
            }
            let e = Event::QuarantineLifted(QuarantineLifted {
                channel,
                closure,
                operator,
                reason,
            });
            Ok(recorded(log, now, vec![e], true))
        }
        Input::TakeDispatch { host } => Ok(Decided {
            answer: Answer::Dispatch(take_dispatch(log, host, now)),
            replan: false,
        }),
        Input::Tick { retain_for } => {
            let first = log.next_seq();
            if let Some(keep) = retain_for {
                for rollout in retention_due(log.state(), keep, now) {
                    // A rollout the machine refuses to prune stays live; the next tick
                    // retries. Nothing else in the tick depends on it.
                    let _ = decide(log, manifests, Input::Expire { rollout }, now);
                }
            }
            Ok(Decided {
                answer: Answer::Done {
                    entries: log.next_seq() - first,
                },
                replan: true,
            })
        }
        Input::Expire { rollout } => {
            let events = crate::rollout::decide(
                log.state(),
                &rollout,
                &RolloutInput::RetentionExpired,
                now,
            )?;
            let entries = events.len() as u64;
            if !events.is_empty() {
                log.stage(now, events);
            }
            Ok(Decided {
                answer: Answer::Done { entries },
                replan: false,
            })
        }
        Input::Enroll(e) => {
            let seq = identity::enroll(log, manifests, *e, now)?;
            Ok(Decided {
                answer: Answer::Recorded { seq, entries: 1 },
                replan: false,
            })
        }
        Input::Renew(e) => {
            let seq = identity::renew(log, manifests, *e, now)?;
            Ok(Decided {
                answer: Answer::Recorded { seq, entries: 1 },
                replan: false,
            })
        }
        Input::Plan => {
            let view = FleetView {
                state: log.state(),
                compliance_available: true,
            };
            let decisions = crate::plan::plan(&view, manifests, now);
            let mut entries = 0;
            for d in decisions {
                let events = Decision::into_events(d);
                if !events.is_empty() {
                    entries += events.len() as u64;
                    log.stage(now, events);
                }
            }
            Ok(Decided {
                answer: Answer::Done { entries },
                replan: false,
            })
        }
    }
}

fn recorded(log: &mut impl Log, now: Micros, events: Vec<Event>, replan: bool) -> Decided {
    let entries = events.len() as u64;
    let seq = log.stage(now, events);
    Decided {
        answer: Answer::Recorded { seq, entries },
        replan,
    }
}

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
fn report_from_agent(
    log: &mut impl Log,
    manifests: &Manifests,
    host: &str,
    rollout: &RolloutId,
    agent_seq: u64,
    report: AgentReport,
    now: Micros,
) -> Result<Decided, Refusal> {
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
                Err(reason) => return Err(Refusal::Unreadable { seq, reason }),
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

fn heartbeat(
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

fn manifest(
    log: &mut impl Log,
    manifests: &mut Manifests,
    m: Manifest,
    now: Micros,
) -> Result<Answer, Refusal> {
    let seq = log.next_seq();
    let event = match &m.document {
        Document::Fleet(_) => {
            if let Some(dup) = replaces(manifests.fleet_in_force.as_ref(), &m)? {
                return Ok(dup);
            }
            match m.signature {
                Some((algorithm, signature)) => Event::FleetManifestSigned(FleetManifestSigned {
                    content_hash: m.content_hash,
                    signer: m.signer,
                    algorithm,
                    signature,
                    signed_at: m.signed_at,
                    canonical: m.canonical,
                }),
                None => Event::FleetManifestAccepted(FleetManifestAccepted {
                    content_hash: m.content_hash,
                    signer: m.signer,
                    signed_at: m.signed_at,
                    canonical: m.canonical,
                }),
            }
        }
        Document::Rollout(doc) => {
            // The manifest in force itself is a duplicate whatever came since (a newer fleet
            // it no longer matches included): re-posting it is idempotent (DECISIONS 40).
            let in_force = manifests.rollout_in_force.get(&doc.rollout_id.channel);
            if let Some(f) = in_force.filter(|f| f.content_hash == m.content_hash) {
                return Ok(Answer::Duplicate { seq: f.seq });
            }
            let Some(fleet) = &manifests.fleet_in_force else {
                return Err(ManifestRefusal::NoFleet.into());
            };
            if doc.fleet_resolved_hash != fleet.content_hash {
                return Err(ManifestRefusal::FleetMismatch {
                    found: hex(&doc.fleet_resolved_hash),
                    in_force: hex(&fleet.content_hash),
                }
                .into());
            }
            document::check_rollout(doc, &manifests.fleet).map_err(ManifestRefusal::from)?;
            let in_force = manifests.rollout_in_force.get(&doc.rollout_id.channel);
            if let Some(dup) = replaces(in_force, &m)? {
                return Ok(dup);
            }
            match m.signature {
                Some((algorithm, signature)) => {
                    Event::RolloutManifestSigned(RolloutManifestSigned {
                        rollout_id: doc.rollout_id.clone(),
                        content_hash: m.content_hash,
                        fleet_resolved_hash: doc.fleet_resolved_hash,
                        signer: m.signer,
                        algorithm,
                        signature,
                        signed_at: m.signed_at,
                        canonical: m.canonical,
                    })
                }
                None => Event::RolloutManifestAccepted(RolloutManifestAccepted {
                    rollout_id: doc.rollout_id.clone(),
                    content_hash: m.content_hash,
                    fleet_resolved_hash: doc.fleet_resolved_hash,
                    signer: m.signer,
                    signed_at: m.signed_at,
                    canonical: m.canonical,
                }),
            }
        }
    };
    // Folded into the manifests before it is staged, so a document this build cannot fold
    // stages nothing.
    manifests
        .apply(seq, &event)
        .map_err(ManifestRefusal::from)?;
    log.stage(now, vec![event]);
    Ok(Answer::Recorded { seq, entries: 1 })
}

/// Whether `m` may replace the manifest in force: the same bytes are a duplicate (answered
/// with the original entry), an older or equally old signature is refused (no rollback to an
/// older signed artifact), a newer one goes ahead (`None`).
fn replaces(in_force: Option<&InForce>, m: &Manifest) -> Result<Option<Answer>, Refusal> {
    let Some(f) = in_force else {
        return Ok(None);
    };
    if f.content_hash == m.content_hash {
        return Ok(Some(Answer::Duplicate { seq: f.seq }));
    }
    if m.signed_at <= f.signed_at {
        return Err(ManifestRefusal::Outdated {
            signed_at: rfc3339(m.signed_at),
            in_force: rfc3339(f.signed_at),
        }
        .into());
    }
    Ok(None)
}

/// The host's oldest queued dispatch (ties: the smaller rollout id), now delivered.
fn take_dispatch(log: &mut impl Log, host: Hostname, now: Micros) -> Option<Delivered> {
    let state = log.state();
    let (rollout, row) = state
        .dispatch_queue
        .range(
            (
                host.to_string(),
                RolloutId {
                    channel: String::new(),
                    channel_ref: String::new(),
                },
            )..,
        )
        .take_while(|((h, _), _)| *h == *host)
        .min_by_key(|((_, r), row)| (row.enqueued_at, r.clone()))
        .map(|((_, r), row)| (r.clone(), row.clone()))?;
    let wave = state.hosts.get(&rollout, &host).map_or(0, |h| h.wave);
    let e = Event::DispatchDelivered(DispatchDelivered {
        hostname: host.to_string(),
        rollout_id: rollout.clone(),
    });
    let seq = log.stage(now, vec![e]);
    Some(Delivered {
        host,
        rollout,
        row,
        wave,
        seq,
    })
}

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
