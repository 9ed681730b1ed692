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
pub mod read;
pub mod rollout;
mod rows;
pub mod tables;

use std::collections::BTreeMap;

use ledger::domain::{AgentReport, HostState, Micros, ProbeStatus, RolloutId, RolloutState};
use ledger::event::Event;
use ledger::tables::{TableError, TableReader, TableWriter};
use serde::{Deserialize, Serialize};

pub use deferrals::Deferrals;
pub use host::{HostRecord, ProbeRecord};
pub use hosts::Hosts;
pub use index::{INDEX_BLOCK, host_entries_key, host_entries_seqs};
use index::{INDEX_WATERMARK, IndexRows, index_key};
use model::Aside;
pub use model::Model;
pub use rollout::RolloutRecord;
pub use rows::{ActiveRow, DeferralRow, DispatchRow, ProbeFailureRow, QuarantineRow};

/// Version of the folds below. Changing any fold's meaning bumps it; opening a store whose
/// tables were written by another version rebuilds them from the log.
pub const FOLD_VERSION: u32 = 5;
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
}

impl KeyScratch {
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
    /// Entries folded so far: the next seq expected.
    pub next_seq: u64,
    scratch: Aside<KeyScratch>,
    /// Index rows the fold produced and the next flush writes.
    index: Aside<IndexRows>,
    /// How many host records of Pruned rollouts this state holds only in the tables (a live
    /// state, [`State::load_live`]) or leaves out (a replay, [`State::drop_pruned_hosts`]).
    /// Not state: a live state equals the fold it stands for.
    forgotten: Aside<u64>,
}

impl State {
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
        self.rollouts.set_tracking(track);
        self.hosts.set_tracking(track);
        self.probe_failures.set_tracking(track);
        self.quarantine.set_tracking(track);
        self.dispatch_queue.set_tracking(track);
        self.deferrals.set_tracking(track);
        self.active_by_channel.set_tracking(track);
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
                self.hosts.insert_new(&e.rollout_id, &e.host.hostname, || {
                    HostRecord::joined(&e.rollout_id, &e.host, seq)
                });
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
            _ => {}
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

    /// Derives [`State::active`] from the rollouts (on load).
    fn with_active(mut self) -> State {
        self.active = self
            .rollouts
            .values()
            .filter(|r| r.is_active())
            .map(|r| (r.opened_seq, r.rollout_id.clone()))
            .collect();
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

    /// Writes every row changed since the last flush, and the watermark.
    pub fn flush(&mut self, w: &mut dyn TableWriter) -> Result<(), TableError> {
        use tables::*;
        self.rollouts.flush(ROLLOUTS, w)?;
        self.hosts.flush(HOSTS, w)?;
        self.probe_failures.flush(PROBE_FAILURES, w)?;
        self.quarantine.flush(QUARANTINE, w)?;
        self.dispatch_queue.flush(DISPATCH_QUEUE, w)?;
        self.deferrals.flush(DEFERRALS, w)?;
        self.active_by_channel.flush(ACTIVE_BY_CHANNEL, w)?;
        // Index rows go out a whole block of entries at a time, sorted: one row per entry into
        // a host-ordered B-tree touches a different leaf per entry, which cost appends 40%.
        // Until their block is complete they wait in memory (`State::pending_index`
        // re-derives them after a restart). Blocks depend on seqs alone, so incremental
        // tables and a rebuild hold the same bytes.
        self.write_index(w)?;
        self.write_watermark(w)
    }

    /// Replaces every table with this state (a rebuild).
    pub fn write_all(&mut self, w: &mut dyn TableWriter) -> Result<(), TableError> {
        use tables::*;
        self.rollouts.write_all(ROLLOUTS, w)?;
        self.hosts.write_all(HOSTS, w)?;
        self.probe_failures.write_all(PROBE_FAILURES, w)?;
        self.quarantine.write_all(QUARANTINE, w)?;
        self.dispatch_queue.write_all(DISPATCH_QUEUE, w)?;
        self.deferrals.write_all(DEFERRALS, w)?;
        for retired in RETIRED {
            w.clear(retired)?;
        }
        self.active_by_channel.write_all(ACTIVE_BY_CHANNEL, w)?;
        // A full write follows a fold from empty, so the pending rows are the whole index.
        w.clear(HOST_ENTRIES)?;
        w.clear(META)?;
        self.index.covered = 0;
        self.write_index(w)?;
        self.write_watermark(w)
    }

    /// Writes the pending index rows of every complete block, sorted, and records the new
    /// watermark. Rows of the block in progress stay pending.
    fn write_index(&mut self, w: &mut dyn TableWriter) -> Result<(), TableError> {
        let target = self.next_seq / INDEX_BLOCK * INDEX_BLOCK;
        if self.index.off || target <= self.index.covered {
            return Ok(());
        }
        for ((block, host), offsets) in self.index.rows_below(target) {
            w.put(tables::HOST_ENTRIES, &index_key(block, host), &offsets)?;
        }
        self.index.written_below(target);
        self.index.covered = target;
        w.put(tables::META, INDEX_WATERMARK, &model::encode(&target))
    }

    /// The seq below which the stored entry index is complete (0: none yet).
    pub fn stored_index_watermark(r: &dyn TableReader) -> Result<u64, TableError> {
        Ok(r.get(tables::META, INDEX_WATERMARK)?
            .map(|v| model::decode::<u64>(tables::META, &v))
            .transpose()?
            .unwrap_or(0))
    }

    /// After a load: the stored index covers entries below `covered`
    /// ([`State::stored_index_watermark`]); then feed [`State::pending_index`] every entry
    /// from there up to `next_seq`.
    pub fn set_index_covered(&mut self, covered: u64) {
        self.index.covered = covered;
    }

    /// Re-derives one entry's pending index row (see [`State::set_index_covered`]).
    pub fn pending_index(&mut self, seq: u64, event: &Event) {
        if !self.index.off
            && let (_, Some(host)) = event.subject()
        {
            self.index.push(seq, host);
        }
    }

    fn write_watermark(&self, w: &mut dyn TableWriter) -> Result<(), TableError> {
        let mark = Watermark {
            fold_version: FOLD_VERSION,
            next_seq: self.next_seq,
        };
        w.put(tables::META, b"watermark", &model::encode(&mark))
    }

    /// The stored watermark, if any.
    pub fn stored_watermark(r: &dyn TableReader) -> Result<Option<Watermark>, TableError> {
        let mut mark = None;
        r.scan(tables::META, &mut |k, v| {
            if k == b"watermark" {
                mark = Some(model::decode(tables::META, v)?);
            }
            Ok(())
        })?;
        Ok(mark)
    }

    /// Loads every table (callers check the watermark first).
    pub fn load(r: &dyn TableReader) -> Result<State, TableError> {
        use tables::*;
        let next_seq = State::stored_watermark(r)?.map_or(0, |m| m.next_seq);
        Ok(State {
            rollouts: Model::load(ROLLOUTS, r)?,
            hosts: Hosts::load_filtered(HOSTS, r, |_| true)?.0,
            probe_failures: Model::load(PROBE_FAILURES, r)?,
            quarantine: Model::load(QUARANTINE, r)?,
            dispatch_queue: Model::load(DISPATCH_QUEUE, r)?,
            deferrals: Deferrals::load(DEFERRALS, r)?,
            active: BTreeMap::new(),
            active_by_channel: Model::load(ACTIVE_BY_CHANNEL, r)?,
            next_seq,
            scratch: Aside::default(),
            index: Aside::default(),
            forgotten: Aside(0),
        }
        .with_active())
    }

    /// Loads the tables for a long-running writer: like [`State::load`] but without the host
    /// records of Pruned rollouts. No decision reads them (a Pruned
    /// rollout refuses every input and the planner skips it), and on a long-lived fleet they
    /// are nearly all of the rows. The stored tables keep them; `check` and replay fold the
    /// whole log as before.
    pub fn load_live(r: &dyn TableReader) -> Result<State, TableError> {
        use tables::*;
        let next_seq = State::stored_watermark(r)?.map_or(0, |m| m.next_seq);
        let rollouts: Model<RolloutId, RolloutRecord> = Model::load(ROLLOUTS, r)?;
        let live = |id: &RolloutId| {
            rollouts
                .get(id)
                .is_none_or(|x| x.state != RolloutState::Pruned)
        };
        let (hosts, forgotten) = Hosts::load_filtered(HOSTS, r, live)?;
        Ok(State {
            hosts,
            active: BTreeMap::new(),
            probe_failures: Model::load(PROBE_FAILURES, r)?,
            quarantine: Model::load(QUARANTINE, r)?,
            dispatch_queue: Model::load(DISPATCH_QUEUE, r)?,
            deferrals: Deferrals::load(DEFERRALS, r)?,
            active_by_channel: Model::load(ACTIVE_BY_CHANNEL, r)?,
            rollouts,
            next_seq,
            scratch: Aside::default(),
            index: Aside::default(),
            forgotten: Aside(forgotten),
        }
        .with_active())
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

    /// The first table and key where the stored tables differ from this state, or None.
    pub fn diff(&self, r: &dyn TableReader) -> Result<Option<(&'static str, String)>, TableError> {
        use tables::*;
        let checks: [(&'static str, Option<String>); 7] = [
            (ROLLOUTS, self.rollouts.diff(ROLLOUTS, r)?),
            (HOSTS, self.hosts.diff(HOSTS, r)?),
            (PROBE_FAILURES, self.probe_failures.diff(PROBE_FAILURES, r)?),
            (QUARANTINE, self.quarantine.diff(QUARANTINE, r)?),
            (DISPATCH_QUEUE, self.dispatch_queue.diff(DISPATCH_QUEUE, r)?),
            (DEFERRALS, self.deferrals.diff(DEFERRALS, r)?),
            (
                ACTIVE_BY_CHANNEL,
                self.active_by_channel.diff(ACTIVE_BY_CHANNEL, r)?,
            ),
        ];
        if let Some(d) = checks.into_iter().find_map(|(t, d)| d.map(|d| (t, d))) {
            return Ok(Some(d));
        }
        if self.index.off {
            return Ok(None);
        }
        // This state was folded from empty: its pending rows are the whole index, of which
        // the stored index holds those below its watermark.
        let covered = State::stored_index_watermark(r)?;
        let expected = self.index.rows_below(covered);
        let mut expected = expected.iter();
        let show = |block: u64, host: &[u8]| {
            let host: Option<String> = model::decode(HOST_ENTRIES, host).ok();
            format!("host {host:?} block {block}")
        };
        let mut first = None;
        r.scan(HOST_ENTRIES, &mut |k, v| {
            if first.is_some() {
                return Ok(());
            }
            let block = k
                .get(..8)
                .map(|b| u64::from_be_bytes(b.try_into().unwrap_or_default()));
            let host = k.get(8..).unwrap_or_default();
            first = match (expected.next(), block) {
                (_, None) => Some("an undecodable stored key".to_string()),
                (Some(((eb, eh), ev)), Some(b)) if (*eb, *eh) == (b, host) => {
                    (ev != v).then(|| {
                        format!(
                            "{}: stored entries {:?}, the log's {:?}",
                            show(b, host),
                            host_entries_seqs(b, v),
                            host_entries_seqs(b, ev)
                        )
                    })
                }
                (Some(((eb, eh), _)), Some(b)) if (*eb, *eh) < (b, host) => {
                    Some(format!("{} missing", show(*eb, eh)))
                }
                (_, Some(b)) => Some(format!("{} not in the log", show(b, host))),
            };
            Ok(())
        })?;
        if first.is_none()
            && let Some(((eb, eh), _)) = expected.next()
        {
            first = Some(format!("{} missing", show(*eb, eh)));
        }
        Ok(first.map(|d| (HOST_ENTRIES, d)))
    }

    /// The state's rows for a replay snapshot: every model but the host records of Pruned
    /// rollouts (frozen since pruning, and most of the rows on a long-lived fleet) and the
    /// set of active rollouts (derived from the rollouts). Encoded
    /// with bincode 2, with the number of host records left out (with those this state
    /// already does not hold); [`State::from_snapshot`] reads it back.
    pub fn snapshot(&self) -> Vec<u8> {
        let pruned = |id: &RolloutId| {
            self.rollouts
                .get(id)
                .is_some_and(|r| r.state == RolloutState::Pruned)
        };
        let hosts: BTreeMap<(&RolloutId, &String), &HostRecord> =
            self.hosts.iter().filter(|((r, _), _)| !pruned(r)).collect();
        let omitted = self.forgotten.0 + (self.hosts.len() - hosts.len()) as u64;
        model::encode(&(
            self.next_seq,
            omitted,
            self.rollouts.rows(),
            hosts,
            self.probe_failures.rows(),
            self.quarantine.rows(),
            self.dispatch_queue.rows(),
            // The flat (rollout, host) → row map, as the snapshot format has it.
            self.deferrals
                .iter()
                .collect::<BTreeMap<(&RolloutId, &String), &DeferralRow>>(),
            self.active_by_channel.rows(),
        ))
    }

    /// A state from [`State::snapshot`] bytes, untracked and without the entry index, for
    /// folding on (replay); the host records it left out count as forgotten.
    pub fn from_snapshot(bytes: &[u8]) -> Result<State, TableError> {
        #[allow(clippy::type_complexity)]
        let (
            next_seq,
            omitted,
            rollouts,
            hosts,
            probe_failures,
            quarantine,
            dispatch_queue,
            deferrals,
            active,
        ): (
            u64,
            u64,
            BTreeMap<RolloutId, RolloutRecord>,
            BTreeMap<(RolloutId, String), HostRecord>,
            BTreeMap<(RolloutId, String, String), ProbeFailureRow>,
            BTreeMap<(String, String), QuarantineRow>,
            BTreeMap<(String, RolloutId), DispatchRow>,
            BTreeMap<(RolloutId, String), DeferralRow>,
            BTreeMap<String, ActiveRow>,
        ) = model::decode("snapshot", bytes)?;
        let state = State {
            rollouts: Model::from_rows(rollouts, false),
            hosts: Hosts::from_rows(hosts),
            probe_failures: Model::from_rows(probe_failures, false),
            quarantine: Model::from_rows(quarantine, false),
            dispatch_queue: Model::from_rows(dispatch_queue, false),
            deferrals: Deferrals::from_rows(deferrals),
            active: BTreeMap::new(),
            active_by_channel: Model::from_rows(active, false),
            next_seq,
            scratch: Aside::default(),
            index: Aside(IndexRows::off()),
            forgotten: Aside(omitted),
        };
        Ok(state.with_active())
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
