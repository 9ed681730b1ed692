//! The read models of fleet-ledger: pure folds over the log (`apply(seq, time, &Event)`).
//!
//! Architecture invariant: this crate does no IO, reads no clock and does not depend on redb
//! or tokio; it depends on `ledger` without its `store` feature. Every map is ordered, so a
//! fold is deterministic. The same folds will serve incremental materialisation inside the
//! append transaction, rebuilds, and in-memory replay (the projections issue).

pub mod host;
pub mod rollout;

use std::collections::BTreeMap;

use ledger::domain::{Micros, RolloutId};
use ledger::event::Event;

pub use host::{HostRecord, ProbeRecord};
pub use rollout::RolloutRecord;

/// Rollouts and host records: the state the state machines decide against.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct State {
    /// Every rollout ever opened, by id.
    pub rollouts: BTreeMap<RolloutId, RolloutRecord>,
    /// Host records by (rollout, host).
    pub hosts: BTreeMap<(RolloutId, String), HostRecord>,
}

impl State {
    /// Folds one entry.
    pub fn apply(&mut self, seq: u64, at: Micros, event: &Event) {
        match event {
            Event::RolloutOpened(e) => {
                self.rollouts
                    .entry(e.rollout_id.clone())
                    .or_insert_with(|| RolloutRecord::opened(e, seq, at));
            }
            Event::HostJoined(e) => {
                self.hosts
                    .entry((e.rollout_id.clone(), e.host.hostname.clone()))
                    .or_insert_with(|| HostRecord::joined(&e.rollout_id, &e.host, seq));
            }
            Event::RolloutTransitioned(ev) => {
                if let Some(r) = self.rollouts.get_mut(&ev.rollout_id) {
                    r.apply(seq, at, event);
                }
            }
            Event::WaveAdvanced(ev) => {
                if let Some(r) = self.rollouts.get_mut(&ev.rollout_id) {
                    r.apply(seq, at, event);
                }
            }
            Event::RolloutCleared(ev) => {
                if let Some(r) = self.rollouts.get_mut(&ev.rollout_id) {
                    r.apply(seq, at, event);
                }
            }
            Event::AgentEventRecorded(e) => {
                self.apply_host(&e.rollout_id, &e.hostname, seq, at, event)
            }
            Event::AgentEventSynthesized(e) => {
                self.apply_host(&e.rollout_id, &e.hostname, seq, at, event)
            }
            Event::HostTransitioned(e) => {
                self.apply_host(&e.rollout_id, &e.hostname, seq, at, event)
            }
            Event::DispatchQueued(e) => self.apply_host(&e.rollout_id, &e.hostname, seq, at, event),
            _ => {}
        }
    }

    fn apply_host(&mut self, rollout: &RolloutId, host: &str, seq: u64, at: Micros, event: &Event) {
        if let Some(h) = self.hosts.get_mut(&(rollout.clone(), host.to_string())) {
            h.apply(seq, at, event);
        }
    }

    /// The host records of one rollout, by host name.
    pub fn hosts_of<'a>(
        &'a self,
        rollout: &'a RolloutId,
    ) -> impl Iterator<Item = &'a HostRecord> + 'a {
        self.hosts
            .range((rollout.clone(), String::new())..)
            .take_while(move |((r, _), _)| r == rollout)
            .map(|(_, h)| h)
    }
}
