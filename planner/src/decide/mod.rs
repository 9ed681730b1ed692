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

mod batch;
mod dispatch;
mod identity;
mod manifests;
mod recorded;
mod refusal;
mod reports;
mod retention;
mod staging;
mod text;

pub use batch::{Batch, decide_batch, plan};
use dispatch::take_dispatch;
pub use identity::{IdentityRefusal, NonceRefusal, ssh_ed25519_key};
use manifests::manifest;
pub use recorded::{NotItsInput, input_of, only_decided};
pub use refusal::{ManifestRefusal, Refusal, Undecided};
use reports::{heartbeat, report_from_agent};
pub use reports::{host_policy, synthesis};
pub use retention::retention_due;
pub use staging::Staged;
use text::hex;
pub use text::{parse_rfc3339, rfc3339};

use ledger::domain::{AgentReport, Hostname, Micros, RolloutId};
use ledger::event::{Event, QuarantineLifted};
use projections::{DispatchRow, HostRecord, State};

use crate::document::Document;
use crate::manifest::Manifests;
use crate::plan::{Decision, FleetView};
use crate::rollout::RolloutInput;

/// The log as a decision sees it: the state folded over everything recorded so far,
/// including what this decision (and the batch it is part of) already staged. The writer's
/// ledger and the determinism check each keep a [`Staged`] for the last two.
pub trait Log {
    /// Why a recorded entry could not be read back (the check reads nothing back:
    /// [`std::convert::Infallible`]).
    type Error: std::error::Error + Send + Sync + 'static;
    /// The projections, up to date with everything staged.
    fn state(&self) -> &State;
    /// The seq the next staged event gets.
    fn next_seq(&self) -> u64;
    /// Stages `events`, decided at CP time `at`, folding each into [`Log::state`]. Returns
    /// the seq of the first.
    fn stage(&mut self, at: Micros, events: Vec<Event>) -> u64;
    /// The event recorded (or staged) at `seq`, to tell a retransmit from a reused seq.
    fn recorded(&self, seq: u64) -> Result<Option<Event>, Self::Error>;
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
        /// The operator, as authenticated (a token's identity or a certificate's name).
        operator: String,
        /// The reason the operator gave.
        reason: String,
    },
    /// An operator lifts a quarantined closure.
    Lift {
        /// The channel.
        channel: String,
        /// The closure.
        closure: String,
        /// The operator, as authenticated (a token's identity or a certificate's name).
        operator: String,
        /// The reason the operator gave.
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
    /// key, and CI's revocations in force do not refuse the certificate it presented.
    Renew {
        /// The renewal as it is recorded.
        renewed: Box<ledger::event::AgentCertificateRenewed>,
        /// The presented certificate's notBefore (µs), checked against the revocations in
        /// force at the decision; None when `replay --check` re-decides a recorded renewal
        /// (the entry does not keep it, and it passed when it was decided).
        presented_not_before: Option<Micros>,
    },
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
            Input::Renew { .. } => "renew",
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
        /// The entry's seq.
        seq: u64,
        /// Entries staged for it.
        entries: u64,
    },
    /// An agent report recorded as refused (`AgentReportRefused`): the agent is answered
    /// 2xx so its queue moves on, and the log keeps the report and why.
    Refused {
        /// Seq of the `AgentReportRefused` entry.
        seq: u64,
        /// Why the machines refused it (its code is recorded with it).
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
/// and stages nothing (as it does when the log cannot be read to decide).
pub fn decide<L: Log>(
    log: &mut L,
    manifests: &mut Manifests,
    input: Input,
    now: Micros,
) -> Result<Decided, Undecided<L::Error>> {
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
            )
            .map_err(Refusal::from)?;
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
                return Err(Refusal::NotQuarantined { channel, closure }.into());
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
            let events =
                crate::rollout::decide(log.state(), &rollout, &RolloutInput::RetentionExpired, now)
                    .map_err(Refusal::from)?;
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
            let seq = identity::enroll(log, manifests, *e, now).map_err(Refusal::from)?;
            Ok(Decided {
                answer: Answer::Recorded { seq, entries: 1 },
                replan: false,
            })
        }
        Input::Renew {
            renewed,
            presented_not_before,
        } => {
            let seq = identity::renew(log, manifests, *renewed, presented_not_before, now)
                .map_err(Refusal::from)?;
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
