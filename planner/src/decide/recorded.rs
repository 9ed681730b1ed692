//! The inverse of [`decide`](super::decide): the input a recorded entry is the decision of,
//! rebuilt from what the entry records. The determinism check decides it again and compares;
//! `tests/inverse.rs` keeps every [`Input`] kind round-tripping through it.

use ledger::domain::{AgentReport, Hostname};
use ledger::event::{Event, RolloutCause};
use thiserror::Error;

use super::{Input, Manifest};
use crate::document::Document;

/// An entry of a kind that records an input, which does not hold one a daemon would have
/// decided (it cannot have come from a daemon's decision).
#[derive(Clone, Debug, Error, PartialEq, Eq)]
#[error("{0}")]
pub struct NotItsInput(String);

/// The input whose decision starts with `e`, rebuilt from what the entry records; `None` for
/// an entry recorded as is (nothing decides it from the state).
pub fn input_of(e: &Event) -> Result<Option<Input>, NotItsInput> {
    if let Some(m) = manifest_of(e)? {
        return Ok(Some(Input::Manifest(Box::new(m))));
    }
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
        // The identity the CA issued is recorded whole: the decision must bind it again.
        Event::AgentEnrolled(e) => Input::Enroll(Box::new(e.clone())),
        Event::AgentCertificateRenewed(e) => Input::Renew {
            renewed: Box::new(e.clone()),
            presented_not_before: None,
        },
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
fn recorded_host(name: &str) -> Result<Hostname, NotItsInput> {
    Hostname::parse(name)
        .map_err(|e| NotItsInput(format!("the host it names is not a valid host name: {e}")))
}

/// The manifest a manifest entry records (None: not a manifest entry).
fn manifest_of(event: &Event) -> Result<Option<Manifest>, NotItsInput> {
    let Some(document) = Document::of_entry(event) else {
        return Ok(None);
    };
    let document = document
        .map_err(|e| NotItsInput(format!("the signed file it records cannot be read: {e}")))?;
    // A revocation list or nonce allowlist: decided as the manifests are, from its bytes.
    if let Some((_, f)) = event.signed_file() {
        return Ok(Some(Manifest {
            canonical: f.canonical.clone(),
            content_hash: f.content_hash,
            signer: f.signer.clone(),
            signed_at: f.signed_at,
            document,
            signature: Some((f.algorithm.clone(), f.signature.clone())),
        }));
    }
    let Some(m) = event.manifest() else {
        return Ok(None);
    };
    Ok(Some(Manifest {
        canonical: m.canonical.to_vec(),
        content_hash: m.content_hash,
        signer: m.signer.to_string(),
        signed_at: m.signed_at,
        document,
        signature: m.signature.map(|(a, s)| (a.to_string(), s.to_vec())),
    }))
}

/// Whether an entry of this kind is only ever staged as part of a decision (a host
/// transition, a quarantine, a probe failure: what a report or the planner implies). Met
/// where no decision is under way, it cannot have come from a daemon.
pub fn only_decided(e: &Event) -> bool {
    matches!(
        e,
        Event::HostTransitioned(_) | Event::QuarantineAdded(_) | Event::ProbeFailureRecorded(_)
    )
}
