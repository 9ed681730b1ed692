//! The read models of fleet-ledger: pure folds over the log.
//!
//! [`State::apply`] folds one entry into every read model; the same code serves incremental
//! materialisation (the append hook flushes the rows it changed through
//! [`ledger::tables::TableWriter`]), a rebuild from the log, and replay to any seq in memory.
//! Every row records the seq of the entry that created it and of the one that last changed it.
//!
//! Architecture invariant: this crate does no IO, reads no clock and does not depend on redb
//! or tokio; it depends on `ledger` without its `store` feature. Every map is ordered, so a
//! fold is deterministic.

pub mod deferrals;
pub mod host;
pub mod hosts;
mod index;
pub mod model;
mod persist;
pub mod read;
pub mod rollout;
mod rows;
pub mod tables;

use std::collections::BTreeMap;

use ledger::domain::{AgentReport, HostState, Micros, ProbeStatus, RolloutId, RolloutState};
use ledger::event::Event;
use serde::{Deserialize, Serialize};

pub use deferrals::Deferrals;
pub use host::{HostRecord, ProbeRecord};
pub use hosts::Hosts;
use index::IndexRows;
pub use index::{INDEX_BLOCK, host_entries_key, host_entries_seqs};
pub use model::Model;
use model::{Aside, Stored};
pub use persist::Comparison;
pub use rollout::RolloutRecord;
pub use rows::{
    ActiveRow, AllowedNonceRow, DeferralRow, DispatchRow, EnrollmentRow, ManifestRow,
    ProbeFailureRow, QuarantineRow, RevocationRow, SidecarRow,
};

/// Version of the folds below. Changing any fold's meaning bumps it; opening a store whose
/// tables were written by another version rebuilds them from the log.
pub const FOLD_VERSION: u32 = 9;
/// Fold version and the next seq to fold (all entries below it are reflected).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Watermark {
    /// [`FOLD_VERSION`] of the code that wrote the tables.
    pub fold_version: u32,
    /// Entries `0..next_seq` are folded in.
    pub next_seq: u64,
}

/// Reusable lookup keys: building a `(String, RolloutId)` for every lookup would allocate three
/// strings per lookup, several times per entry, which dominated rebuilds.
#[derive(Clone, Debug, Default)]
struct KeyScratch {
    hr: (String, RolloutId),
    counter: (String, String),
}

impl KeyScratch {
    /// `(what, label)`, reusing the buffers.
    fn counter(&mut self, what: &str, label: &str) -> &(String, String) {
        self.counter.0.clear();
        self.counter.0.push_str(what);
        self.counter.1.clear();
        self.counter.1.push_str(label);
        &self.counter
    }

    /// `(host, rollout)`, reusing the buffers.
    fn hr(&mut self, h: &str, r: &RolloutId) -> &(String, RolloutId) {
        self.hr.0.clear();
        self.hr.0.push_str(h);
        self.hr.1.channel.clone_from(&r.channel);
        self.hr.1.channel_ref.clone_from(&r.channel_ref);
        &self.hr
    }
}

/// Every read model.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct State {
    /// Every rollout ever opened.
    pub rollouts: Model<RolloutId, RolloutRecord>,
    /// Host records by (rollout, host), held by rollout then host (see [`Hosts`]).
    pub hosts: Hosts,
    /// Failing controls by (rollout, host, control id or probe name).
    pub probe_failures: Model<(RolloutId, String, String), ProbeFailureRow>,
    /// Quarantined closures by (channel, closure).
    pub quarantine: Model<(String, String), QuarantineRow>,
    /// Queued dispatches by (host, rollout).
    pub dispatch_queue: Model<(String, RolloutId), DispatchRow>,
    /// Current block per (rollout, host), stored a rollout per row (see [`Deferrals`]).
    pub deferrals: Deferrals,
    /// The active rollouts (not Superseded or Pruned), by opening seq: what a host's
    /// heartbeat looks through (see [`State::active_rollouts_of`]). In memory only, derived
    /// from the rollouts on load and kept up by rollout events.
    active: BTreeMap<u64, RolloutId>,
    /// Index channel → active rollout.
    pub active_by_channel: Model<String, ActiveRow>,
    /// Enrollment nonces used, by nonce.
    pub enrollments: Model<String, EnrollmentRow>,
    /// The latest manifest entry of the fleet (`None`) and of each rollout.
    pub manifests: Model<Option<RolloutId>, ManifestRow>,
    /// Events counted by (what, label): gate blocks by gate (`gate-block`), compliance
    /// failures by control (`compliance-failure`).
    pub counters: Model<(String, String), u64>,
    /// CI's revocations in force, by host.
    pub revocations: Model<String, RevocationRow>,
    /// CI's bootstrap-nonce allowlist in force, by nonce.
    pub nonce_allowlist: Model<String, AllowedNonceRow>,
    /// The latest entry of each of CI's signed files that is not a manifest, by name.
    pub sidecars: Model<String, SidecarRow>,
    /// Entries folded so far: the next seq expected.
    pub next_seq: u64,
    scratch: Aside<KeyScratch>,
    /// Index rows the fold produced and the next flush writes.
    index: Aside<IndexRows>,
    /// How many host records of Pruned rollouts this state holds only in the tables (a live
    /// state, [`State::load_live`]) or leaves out (a replay, [`State::drop_pruned_hosts`]).
    /// Not state: a live state equals the fold it stands for.
    forgotten: Aside<u64>,
    /// What the fold does with a rollout's host records when it is pruned.
    retire: Aside<Retire>,
}

/// What a fold does with a rollout's host records when the rollout is pruned. From then on
/// they never change (the fold ignores host events of a Pruned rollout, which no decision
/// makes), so a fold of years of history need not hold years of rows: a rebuild writes them
/// out, `check` compares them, a replay drops them, and memory stays at the live fleet.
#[derive(Clone, Debug, Default)]
enum Retire {
    /// Keep them in memory, frozen (the daemon's models; it forgets them once flushed).
    #[default]
    Keep,
    /// Drop them (counted as forgotten).
    Drop,
    /// Hand them out through [`State::take_retired`].
    Hand(Vec<RetiredHosts>),
}

/// The host records of a rollout that was just pruned, taken out of a fold
/// ([`State::handing_retired`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetiredHosts {
    /// The Pruned rollout.
    pub rollout: RolloutId,
    /// Its records, by host name.
    pub hosts: Vec<(String, HostRecord)>,
}

/// The stored tables, each declared once: the `State` field that holds it and its name in
/// the store ([`tables`]). Tracking, flushing, rebuilding and comparing go through this list;
/// the entry index and the watermark are written by the fold itself.
macro_rules! stored_tables {
    ($($field:ident => $name:ident),* $(,)?) => {
        impl State {
            /// Every stored model with its table name, in a fixed order.
            fn stored(&self) -> [(&'static str, &dyn Stored); [$(stringify!($field)),*].len()] {
                [$((tables::$name, &self.$field as &dyn Stored)),*]
            }

            /// The same, mutable.
            fn stored_mut(
                &mut self,
            ) -> [(&'static str, &mut dyn Stored); [$(stringify!($field)),*].len()] {
                [$((tables::$name, &mut self.$field as &mut dyn Stored)),*]
            }
        }
    };
}

stored_tables! {
    rollouts => ROLLOUTS,
    hosts => HOSTS,
    probe_failures => PROBE_FAILURES,
    quarantine => QUARANTINE,
    dispatch_queue => DISPATCH_QUEUE,
    deferrals => DEFERRALS,
    active_by_channel => ACTIVE_BY_CHANNEL,
    enrollments => ENROLLMENTS,
    manifests => MANIFESTS,
    counters => COUNTERS,
    revocations => REVOCATIONS,
    nonce_allowlist => NONCE_ALLOWLIST,
    sidecars => SIDECARS,
}

impl State {
    /// Counts one event under (`what`, `label`).
    fn count(&mut self, what: &str, label: &str) {
        // Counted for most batches: the key is built in reused buffers, and owned only when
        // the counter is new.
        let key = self.scratch.counter(what, label);
        match self.counters.get_mut(key) {
            Some(n) => *n += 1,
            None => {
                let key = key.clone();
                self.counters.insert(key, 1);
            }
        }
    }

    /// How many host records of Pruned rollouts are not in memory (see [`State::load_live`],
    /// [`State::forget_pruned`], [`State::drop_pruned_hosts`]).
    pub fn forgotten_hosts(&self) -> u64 {
        self.forgotten.0
    }

    /// An empty state that does not remember changed rows: for folding a whole log before
    /// [`State::write_all`] (a rebuild) or for comparing with stored tables.
    pub fn untracked() -> State {
        let mut s = State::default();
        s.set_tracking(false);
        s
    }

    /// Turns change tracking on or off for every model.
    pub fn set_tracking(&mut self, track: bool) {
        for (_, t) in self.stored_mut() {
            t.set_tracking(track);
        }
    }

    /// Folds one entry (its seq, CP time and event).
    pub fn apply(&mut self, seq: u64, at: Micros, event: &Event) {
        self.pending_index(seq, event);
        self.next_seq = seq + 1;
        match event {
            Event::RolloutOpened(e) => {
                if !self.rollouts.contains_key(&e.rollout_id) {
                    self.rollouts
                        .insert(e.rollout_id.clone(), RolloutRecord::opened(e, seq, at));
                }
                self.active_by_channel.insert(
                    e.rollout_id.channel.clone(),
                    ActiveRow {
                        rollout_id: e.rollout_id.clone(),
                        created_seq: seq,
                    },
                );
                self.track_active(&e.rollout_id);
            }
            Event::HostJoined(e) => {
                let rollouts = &self.rollouts;
                self.hosts.insert_new(
                    &e.rollout_id,
                    &e.host.hostname,
                    || HostRecord::joined(&e.rollout_id, &e.host, seq),
                    || {
                        rollouts
                            .get(&e.rollout_id)
                            .is_some_and(|r| r.state == RolloutState::Pruned)
                    },
                );
            }
            Event::RolloutTransitioned(e) => {
                if let Some(r) = self.rollouts.get_mut(&e.rollout_id) {
                    r.apply(seq, at, event);
                }
                if !matches!(
                    e.to,
                    RolloutState::Opening | RolloutState::Active | RolloutState::Converging
                ) {
                    self.retire_dispatching(&e.rollout_id);
                }
                if e.to == RolloutState::Pruned
                    && self
                        .active_by_channel
                        .get(&e.rollout_id.channel)
                        .is_some_and(|a| a.rollout_id == e.rollout_id)
                {
                    self.active_by_channel.remove(&e.rollout_id.channel);
                }
                if e.to == RolloutState::Pruned {
                    self.retire(&e.rollout_id);
                }
                self.track_active(&e.rollout_id);
            }
            Event::WaveAdvanced(e) => {
                if let Some(r) = self.rollouts.get_mut(&e.rollout_id) {
                    r.apply(seq, at, event);
                }
                self.track_active(&e.rollout_id);
            }
            Event::RolloutCleared(e) => {
                if let Some(r) = self.rollouts.get_mut(&e.rollout_id) {
                    r.apply(seq, at, event);
                }
                self.track_active(&e.rollout_id);
            }
            Event::AgentEventRecorded(e) => {
                self.apply_host(&e.rollout_id, &e.hostname, seq, at, event);
                self.clear_probe_failures(&e.rollout_id, &e.hostname, &e.report);
            }
            Event::AgentEventSynthesized(e) => {
                self.apply_host(&e.rollout_id, &e.hostname, seq, at, event);
                self.clear_probe_failures(&e.rollout_id, &e.hostname, &e.report);
            }
            Event::HostTransitioned(e) => {
                self.apply_host(&e.rollout_id, &e.hostname, seq, at, event);
                if e.to != HostState::Pending {
                    self.dispatch_queue
                        .remove(self.scratch.hr(&e.hostname, &e.rollout_id));
                    self.deferrals.remove(&e.rollout_id, &e.hostname);
                }
            }
            Event::DispatchQueued(e) => {
                self.apply_host(&e.rollout_id, &e.hostname, seq, at, event);
                self.dispatch_queue.insert(
                    (e.hostname.clone(), e.rollout_id.clone()),
                    DispatchRow {
                        target_closure: e.target_closure.clone(),
                        soak_due_at: e.soak_due_at,
                        enqueued_at: at,
                        created_seq: seq,
                        updated_seq: seq,
                    },
                );
                self.deferrals.remove(&e.rollout_id, &e.hostname);
            }
            Event::DispatchDelivered(e) => {
                self.dispatch_queue
                    .remove(self.scratch.hr(&e.hostname, &e.rollout_id));
            }
            Event::DispatchAcknowledged(e) => {
                self.dispatch_queue
                    .remove(self.scratch.hr(&e.hostname, &e.rollout_id));
            }
            Event::GateDecision(e) => match &e.block {
                Some(block) => {
                    self.count("gate-block", block.gate());
                    self.deferrals.upsert(
                        &e.rollout_id,
                        &e.hostname,
                        |row| {
                            row.block = block.clone();
                            row.updated_seq = seq;
                        },
                        || DeferralRow {
                            block: block.clone(),
                            since: at,
                            created_seq: seq,
                            updated_seq: seq,
                        },
                    );
                }
                None => {
                    self.deferrals.remove(&e.rollout_id, &e.hostname);
                }
            },
            Event::QuarantineAdded(e) => {
                self.quarantine
                    .insert_new((e.channel.clone(), e.closure.clone()), || QuarantineRow {
                        rollout_id: e.rollout_id.clone(),
                        hostname: e.hostname.clone(),
                        quarantined_at: at,
                        created_seq: seq,
                        updated_seq: seq,
                    });
            }
            Event::QuarantineLifted(e) => {
                self.quarantine
                    .remove(&(e.channel.clone(), e.closure.clone()));
            }
            Event::ProbeFailureRecorded(e) => {
                let control = e.control_id.clone().unwrap_or_else(|| e.probe_name.clone());
                self.count("compliance-failure", &control);
                let key = (e.rollout_id.clone(), e.hostname.clone(), control);
                match self.probe_failures.get_mut(&key) {
                    Some(row) => {
                        row.observed_at = e.observed_at;
                        row.updated_seq = seq;
                    }
                    None => self.probe_failures.insert(
                        key,
                        ProbeFailureRow {
                            probe_name: e.probe_name.clone(),
                            control_id: e.control_id.clone(),
                            framework: e.framework.clone(),
                            observed_at: e.observed_at,
                            created_seq: seq,
                            updated_seq: seq,
                        },
                    ),
                }
            }
            Event::FleetManifestAccepted(_)
            | Event::FleetManifestSigned(_)
            | Event::RolloutManifestAccepted(_)
            | Event::RolloutManifestSigned(_) => {
                let key = event.manifest().and_then(|m| m.rollout_id).cloned();
                match self.manifests.get_mut(&key) {
                    Some(row) => row.seq = seq,
                    None => self.manifests.insert(
                        key,
                        ManifestRow {
                            seq,
                            created_seq: seq,
                        },
                    ),
                }
            }
            // The first use of a nonce is the one kept (the decision refuses a second).
            Event::AgentEnrolled(e) if !self.enrollments.contains_key(&e.token.nonce) => {
                self.enrollments.insert(
                    e.token.nonce.clone(),
                    EnrollmentRow {
                        hostname: e.hostname.clone(),
                        seq,
                        enrolled_at: at,
                    },
                );
            }
            // A list replaces the list in force whole: a host no longer listed is no longer
            // revoked (nixfleet deletes its row). A host listed twice keeps its last entry.
            Event::RevocationsAccepted(e) => {
                let listed: BTreeMap<&str, &ledger::event::Revocation> = e
                    .revocations
                    .iter()
                    .map(|r| (r.hostname.as_str(), r))
                    .collect();
                let gone: Vec<String> = self
                    .revocations
                    .iter()
                    .filter(|(h, _)| !listed.contains_key(h.as_str()))
                    .map(|(h, _)| h.clone())
                    .collect();
                for h in gone {
                    self.revocations.remove(&h);
                }
                for (h, r) in listed {
                    let row = RevocationRow {
                        not_before: r.not_before,
                        reason: r.reason.clone(),
                        revoked_by: r.revoked_by.clone(),
                        seq,
                    };
                    // Unchanged rows are not rewritten: a list re-signed with one more host
                    // changes one row.
                    if self
                        .revocations
                        .get(&h.to_string())
                        .map(|o| (o.not_before, &o.reason, &o.revoked_by))
                        != Some((row.not_before, &row.reason, &row.revoked_by))
                    {
                        self.revocations.insert(h.to_string(), row);
                    }
                }
                self.sidecar(ledger::event::SIDECAR_REVOCATIONS, &e.file, seq, at);
            }
            Event::BootstrapNoncesAccepted(e) => {
                let listed: BTreeMap<&str, &ledger::event::AllowedNonce> =
                    e.nonces.iter().map(|n| (n.nonce.as_str(), n)).collect();
                let gone: Vec<String> = self
                    .nonce_allowlist
                    .iter()
                    .filter(|(n, _)| !listed.contains_key(n.as_str()))
                    .map(|(n, _)| n.clone())
                    .collect();
                for n in gone {
                    self.nonce_allowlist.remove(&n);
                }
                for (n, a) in listed {
                    let same = self
                        .nonce_allowlist
                        .get(&n.to_string())
                        .is_some_and(|o| o.hostname == a.hostname && o.expires_at == a.expires_at);
                    if !same {
                        self.nonce_allowlist.insert(
                            n.to_string(),
                            AllowedNonceRow {
                                hostname: a.hostname.clone(),
                                expires_at: a.expires_at,
                                seq,
                            },
                        );
                    }
                }
                self.sidecar(ledger::event::SIDECAR_BOOTSTRAP_NONCES, &e.file, seq, at);
            }
            _ => {}
        }
    }

    /// Records which entry of a signed file is in force.
    fn sidecar(&mut self, name: &str, file: &ledger::event::SignedFile, seq: u64, at: Micros) {
        self.sidecars.insert(
            name.to_string(),
            SidecarRow {
                seq,
                content_hash: file.content_hash,
                signed_at: file.signed_at,
                recorded_at: at,
            },
        );
    }

    /// A rollout was pruned: its host records are final (see [`Retire`]).
    fn retire(&mut self, rollout: &RolloutId) {
        match &mut self.retire.0 {
            Retire::Keep => self.hosts.freeze(rollout),
            Retire::Drop => {
                let hosts = self.hosts.take_rollout(rollout);
                self.forgotten.0 += hosts.len() as u64;
            }
            Retire::Hand(out) => {
                let hosts = self.hosts.take_rollout(rollout);
                self.forgotten.0 += hosts.len() as u64;
                out.push(RetiredHosts {
                    rollout: rollout.clone(),
                    hosts,
                });
            }
        }
    }

    /// This state, untracked, dropping each rollout's host records when it is pruned: a fold
    /// whose memory follows the live fleet, not history (replay, simulations). The records
    /// dropped count as forgotten.
    pub fn dropping_retired(mut self) -> State {
        debug_assert!(!self.hosts.tracking(), "only untracked states drop rows");
        self.retire = Aside(Retire::Drop);
        self
    }

    /// This state, untracked, handing out each rollout's host records when it is pruned
    /// ([`State::take_retired`]), for a rebuild to write or `check` to compare and then drop.
    pub fn handing_retired(mut self) -> State {
        debug_assert!(
            !self.hosts.tracking(),
            "only untracked states hand rows out"
        );
        self.retire = Aside(Retire::Hand(Vec::new()));
        self
    }

    /// The host records of rollouts pruned since the last call (see
    /// [`State::handing_retired`]), in the order they were pruned.
    pub fn take_retired(&mut self) -> Vec<RetiredHosts> {
        match &mut self.retire.0 {
            Retire::Hand(out) => std::mem::take(out),
            _ => Vec::new(),
        }
    }

    /// Keeps [`State::active`] in step with a rollout's record after one of its events.
    fn track_active(&mut self, id: &RolloutId) {
        if let Some(r) = self.rollouts.get(id) {
            if r.is_active() {
                self.active.insert(r.opened_seq, id.clone());
            } else {
                self.active.remove(&r.opened_seq);
            }
        }
    }

    /// Derives [`State::active`] from the rollouts, and freezes the host records of Pruned
    /// ones (on load).
    fn with_active(mut self) -> State {
        self.active = self
            .rollouts
            .values()
            .filter(|r| r.is_active())
            .map(|r| (r.opened_seq, r.rollout_id.clone()))
            .collect();
        for r in self.rollouts.values() {
            if r.state == RolloutState::Pruned {
                self.hosts.freeze(&r.rollout_id);
            }
        }
        self
    }

    /// The active rollouts (not Superseded or Pruned) `host` has a record in, in the order
    /// they opened: the rollouts a heartbeat that names none is about. Active rollouts are a
    /// few per channel, so this is a handful of lookups, with no per-host index to keep up on
    /// every join.
    pub fn active_rollouts_of<'a>(&'a self, host: &'a str) -> impl Iterator<Item = &'a RolloutId> {
        self.active
            .values()
            .filter(move |r| self.hosts.get(r, host).is_some())
    }

    /// A rollout that stopped dispatching (finished, failed, superseded, pruned) has no
    /// current blocks and no queued dispatches: its waiting hosts will never be dispatched.
    fn retire_dispatching(&mut self, rollout: &RolloutId) {
        self.deferrals.remove_rollout(rollout);
        // The queue holds the dispatches in flight, a few per rollout; the rollout's hosts
        // are a fleet's worth.
        let queued: Vec<(String, RolloutId)> = self
            .dispatch_queue
            .iter()
            .filter(|((_, r), _)| r == rollout)
            .map(|(k, _)| k.clone())
            .collect();
        for k in &queued {
            self.dispatch_queue.remove(k);
        }
    }

    fn apply_host(&mut self, rollout: &RolloutId, host: &str, seq: u64, at: Micros, event: &Event) {
        if let Some(h) = self.hosts.get_mut(rollout, host) {
            h.apply(seq, at, event);
        }
    }

    /// A passing result clears the failures it contradicts; a new activation clears them all.
    fn clear_probe_failures(&mut self, rollout: &RolloutId, host: &str, report: &AgentReport) {
        let passed: Vec<String> = match report {
            AgentReport::ActivationCompleted { .. } => {
                let start = (rollout.clone(), host.to_string(), String::new());
                let keys: Vec<_> = self
                    .probe_failures
                    .range(start..)
                    .take_while(|((r, h, _), _)| r == rollout && h == host)
                    .map(|(k, _)| k.clone())
                    .collect();
                for k in keys {
                    self.probe_failures.remove(&k);
                }
                return;
            }
            AgentReport::ProbeResult {
                probe_name,
                status,
                sub_results,
                ..
            } => {
                if sub_results.is_empty() {
                    if *status == ProbeStatus::Pass {
                        vec![probe_name.clone()]
                    } else {
                        vec![]
                    }
                } else {
                    sub_results
                        .iter()
                        .filter(|s| s.status == ProbeStatus::Pass)
                        .map(|s| s.control_id.clone())
                        .collect()
                }
            }
            _ => return,
        };
        for control in passed {
            self.probe_failures
                .remove(&(rollout.clone(), host.to_string(), control));
        }
    }

    /// The host records of one rollout, by host name.
    pub fn hosts_of<'a>(
        &'a self,
        rollout: &'a RolloutId,
    ) -> impl Iterator<Item = &'a HostRecord> + 'a {
        self.hosts.of_rollout(rollout)
    }

    /// Drops from memory (not from the tables) the host records of these rollouts, which must be Pruned and flushed (see [`State::load_live`]).
    pub fn forget_pruned(&mut self, pruned: &[RolloutId]) {
        for id in pruned {
            debug_assert!(
                self.rollouts
                    .get(id)
                    .is_some_and(|r| r.state == RolloutState::Pruned)
            );
            self.forgotten.0 += self.hosts.forget_rollout(id) as u64;
        }
    }

    /// Removes the host records of Pruned rollouts from an untracked state (replay shows
    /// what a snapshot keeps); they count as forgotten.
    pub fn drop_pruned_hosts(&mut self) {
        debug_assert!(!self.hosts.tracking(), "only untracked states drop rows");
        let rollouts = &self.rollouts;
        let dropped = self.hosts.retain_rollouts(|r| {
            rollouts
                .get(r)
                .is_none_or(|x| x.state != RolloutState::Pruned)
        });
        self.forgotten.0 += dropped as u64;
    }

    /// This state without the entry index (replay and forensics, which never write tables).
    pub fn without_index(mut self) -> State {
        self.index = Aside(IndexRows::off());
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `tables::ALL` (what the CLI and tests enumerate) is the registry plus the entry index.
    #[test]
    fn the_table_list_is_the_registry() {
        let s = State::default();
        let mut names: Vec<&str> = s.stored().iter().map(|(n, _)| *n).collect();
        names.push(tables::HOST_ENTRIES);
        assert_eq!(names, tables::ALL);
    }

    /// Every recorded gate block counts under its gate, every compliance failure under its
    /// control (or probe); a cleared block counts nothing.
    #[test]
    fn gate_blocks_and_compliance_failures_are_counted() {
        use ledger::event::{GateBlock, GateDecision, ProbeFailureRecorded};
        let r = RolloutId::parse("stable@a1a1").unwrap();
        let block = |b: Option<GateBlock>| {
            Event::GateDecision(GateDecision {
                hostname: "web-01".into(),
                rollout_id: r.clone(),
                block: b,
            })
        };
        let wave = GateBlock::WavePromotion {
            host_wave: 1,
            current_wave: 0,
        };
        let failure = |control: Option<&str>| {
            Event::ProbeFailureRecorded(ProbeFailureRecorded {
                rollout_id: r.clone(),
                hostname: "web-01".into(),
                probe_name: "evidence".into(),
                control_id: control.map(str::to_string),
                framework: None,
                observed_at: 0,
            })
        };
        let mut s = State::default();
        for (i, e) in [
            block(Some(wave.clone())),
            block(None),
            block(Some(wave)),
            failure(Some("access-control")),
            failure(Some("access-control")),
            failure(None),
        ]
        .iter()
        .enumerate()
        {
            s.apply(i as u64, 0, e);
        }
        let count = |what: &str, label: &str| {
            s.counters
                .get(&(what.to_string(), label.to_string()))
                .copied()
        };
        assert_eq!(count("gate-block", "wave-promotion"), Some(2));
        assert_eq!(count("compliance-failure", "access-control"), Some(2));
        assert_eq!(count("compliance-failure", "evidence"), Some(1));
        assert_eq!(s.counters.len(), 3);
    }
}
