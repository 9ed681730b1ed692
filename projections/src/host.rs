//! The host rollout record: the CP's view of one host in one rollout, as a fold.

use std::collections::BTreeMap;

use ledger::domain::{
    AgentReport, Closure, HostState, Micros, OnHealthFailure, ProbeMode, ProbeStatus, RolloutId,
};
use ledger::event::{Event, HostAssignment};

/// The last result of one probe.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ProbeRecord {
    /// Last status.
    pub status: ProbeStatus,
    /// Its mode.
    pub mode: ProbeMode,
    /// When last observed (agent clock).
    pub last_observed_at: Micros,
    /// When it last passed.
    pub last_pass_at: Option<Micros>,
    /// Why it last failed (cleared by a pass).
    pub failure_reason: Option<String>,
}

/// One host in one rollout. Changed only by [`HostRecord::apply`].
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HostRecord {
    /// The rollout.
    pub rollout_id: RolloutId,
    /// The host.
    pub hostname: String,
    /// Its wave in the channel.
    pub wave: u32,
    /// Where the host is in the host machine.
    pub state: HostState,
    /// What it must run.
    pub target_closure: Closure,
    /// What it ran when it acked: the rollback target.
    pub current_closure_at_dispatch: Option<Closure>,
    /// What it runs now, as last reported.
    pub current_closure: Option<Closure>,
    /// Where it rolled back to.
    pub reverted_to: Option<Closure>,
    /// CP time the dispatch was queued.
    pub dispatched_at: Option<Micros>,
    /// CP deadline for soak, computed at dispatch.
    pub soak_due_at: Option<Micros>,
    /// Agent timestamps.
    pub dispatch_acked_at: Option<Micros>,
    /// Agent timestamp.
    pub activation_started_at: Option<Micros>,
    /// Agent timestamp.
    pub activation_completed_at: Option<Micros>,
    /// Agent timestamp.
    pub activation_failed_at: Option<Micros>,
    /// Agent timestamp (first wins).
    pub probe_observed_first_at: Option<Micros>,
    /// Agent timestamp (first wins).
    pub probe_failure_first_at: Option<Micros>,
    /// Agent timestamp.
    pub converged_at: Option<Micros>,
    /// Agent timestamp.
    pub failed_at: Option<Micros>,
    /// Agent timestamp.
    pub reverted_at: Option<Micros>,
    /// The health-failure policy recorded on entering Failed.
    pub policy_applied: Option<OnHealthFailure>,
    /// Probe results since the last activation, by name.
    pub probes: BTreeMap<String, ProbeRecord>,
    /// Highest agent seq accepted (synthesized reports do not advance it).
    pub last_event_seq: u64,
    /// Ledger seq of the `AgentEventRecorded` entry that carried `last_event_seq` (0: none).
    /// The daemon answers a retransmit of that agent seq with it.
    pub last_report_seq: u64,
    /// Ledger seq of the entry that created the record.
    pub created_seq: u64,
    /// Ledger seq of the entry that last changed it.
    pub updated_seq: u64,
}

impl HostRecord {
    /// A new Pending record, as a `HostJoined` entry at `seq` creates it.
    pub fn joined(rollout_id: &RolloutId, host: &HostAssignment, seq: u64) -> HostRecord {
        HostRecord {
            rollout_id: rollout_id.clone(),
            hostname: host.hostname.clone(),
            wave: host.wave,
            state: HostState::Pending,
            target_closure: host.target_closure.clone(),
            current_closure_at_dispatch: None,
            current_closure: None,
            reverted_to: None,
            dispatched_at: None,
            soak_due_at: None,
            dispatch_acked_at: None,
            activation_started_at: None,
            activation_completed_at: None,
            activation_failed_at: None,
            probe_observed_first_at: None,
            probe_failure_first_at: None,
            converged_at: None,
            failed_at: None,
            reverted_at: None,
            policy_applied: None,
            probes: BTreeMap::new(),
            last_event_seq: 0,
            last_report_seq: 0,
            created_seq: seq,
            updated_seq: seq,
        }
    }

    /// Folds one entry about this host and rollout (entries about others are ignored).
    /// `seq` and `recorded_at_us` come from the entry header.
    pub fn apply(&mut self, seq: u64, recorded_at_us: Micros, event: &Event) {
        let mine = |r: &RolloutId, h: &str| *r == self.rollout_id && h == self.hostname;
        match event {
            Event::AgentEventRecorded(e) if mine(&e.rollout_id, &e.hostname) => {
                if e.agent_seq > self.last_event_seq {
                    self.last_event_seq = e.agent_seq;
                    self.last_report_seq = seq;
                }
                self.apply_report(&e.report);
            }
            Event::AgentEventSynthesized(e) if mine(&e.rollout_id, &e.hostname) => {
                self.apply_report(&e.report);
            }
            Event::HostTransitioned(e) if mine(&e.rollout_id, &e.hostname) => {
                self.state = e.to;
                if e.policy_applied.is_some() {
                    self.policy_applied = e.policy_applied;
                }
            }
            Event::DispatchQueued(e) if mine(&e.rollout_id, &e.hostname) => {
                self.dispatched_at = Some(recorded_at_us);
                self.soak_due_at = Some(e.soak_due_at);
                self.target_closure = e.target_closure.clone();
            }
            _ => return,
        }
        self.updated_seq = seq;
    }

    /// The field changes a report implies. State changes come only from `HostTransitioned`.
    pub fn apply_report(&mut self, report: &AgentReport) {
        match report {
            AgentReport::DispatchAck {
                current_closure_at_dispatch,
                received_at,
            } => {
                self.current_closure_at_dispatch = Some(current_closure_at_dispatch.clone());
                self.dispatch_acked_at = Some(*received_at);
            }
            AgentReport::ActivationStarted { started_at, .. } => {
                self.activation_started_at = Some(*started_at);
            }
            AgentReport::ActivationCompleted {
                observed_current_closure,
                completed_at,
                ..
            } => {
                self.activation_completed_at = Some(*completed_at);
                self.current_closure = Some(observed_current_closure.clone());
                // Results of the previous closure say nothing about the new one.
                self.probes.clear();
            }
            AgentReport::ActivationFailed { failed_at, .. } => {
                self.activation_failed_at = Some(*failed_at);
                self.failed_at = Some(*failed_at);
            }
            AgentReport::ActivationDeferred { .. } | AgentReport::ProbeTopologyDeclared { .. } => {}
            AgentReport::ProbeObservedFirst { observed_at, .. } => {
                self.probe_observed_first_at.get_or_insert(*observed_at);
            }
            AgentReport::ProbeResult {
                probe_name,
                mode,
                status,
                observed_at,
                failure_reason,
                ..
            } => {
                let prev_pass = self.probes.get(probe_name).and_then(|p| p.last_pass_at);
                let pass = *status == ProbeStatus::Pass;
                self.probes.insert(
                    probe_name.clone(),
                    ProbeRecord {
                        status: *status,
                        mode: *mode,
                        last_observed_at: *observed_at,
                        last_pass_at: if pass { Some(*observed_at) } else { prev_pass },
                        failure_reason: if pass { None } else { failure_reason.clone() },
                    },
                );
            }
            AgentReport::ProbeFailureFirst {
                first_failed_at, ..
            } => {
                self.probe_failure_first_at.get_or_insert(*first_failed_at);
            }
            AgentReport::Failed { failed_at, .. } => {
                self.failed_at = Some(*failed_at);
            }
            AgentReport::RollbackComplete {
                reverted_to_closure,
                completed_at,
                ..
            } => {
                self.reverted_at = Some(*completed_at);
                self.reverted_to = Some(reverted_to_closure.clone());
                self.current_closure = Some(reverted_to_closure.clone());
            }
            AgentReport::Converged {
                converged_at,
                current_closure,
            } => {
                self.converged_at = Some(*converged_at);
                self.current_closure = Some(current_closure.clone());
            }
        }
    }
}
