//! The state's tables in the store: flushing what a batch changed, a full rewrite (a
//! rebuild), loading, comparing with a fold (`check`), and the replay snapshot's encoding.
//! Which tables there are is declared once, in `stored_tables!` (lib.rs).

use super::{
    ActiveRow, Aside, DeferralRow, Deferrals, DispatchRow, EnrollmentRow, FOLD_VERSION, HostRecord,
    Hosts, INDEX_BLOCK, IndexRows, ManifestRow, Model, ProbeFailureRow, QuarantineRow,
    RolloutRecord, State, Watermark, host_entries_seqs, index, model, tables,
};
use crate::{AllowedNonceRow, RevocationRow, SidecarRow};
use ledger::domain::{RolloutId, RolloutState};
use ledger::event::Event;
use std::collections::BTreeMap;

use index::{INDEX_WATERMARK, index_key};
use ledger::tables::{TableError, TableReader, TableWriter};

impl State {
    /// Writes every row changed since the last flush, and the watermark.
    pub fn flush(&mut self, w: &mut dyn TableWriter) -> Result<(), TableError> {
        for (name, t) in self.stored_mut() {
            t.flush(name, w)?;
        }
        // Index rows go out a whole block of entries at a time, sorted: one row per entry into
        // a host-ordered B-tree touches a different leaf per entry, which cost appends 40%.
        // Until their block is complete they wait in memory (`State::pending_index`
        // re-derives them after a restart). Blocks depend on seqs alone, so incremental
        // tables and a rebuild hold the same bytes.
        self.write_index(w)?;
        self.write_watermark(w)
    }

    /// Replaces every table with this state (a rebuild after a fold from empty).
    pub fn write_all(&mut self, w: &mut dyn TableWriter) -> Result<(), TableError> {
        self.begin_rewrite(w)?;
        self.finish_rewrite(w)
    }

    /// Starts a rebuild that writes as it folds (from empty, into the same write
    /// transaction): empties every table. Then fold, calling [`State::write_settled`] now and
    /// then, and end with [`State::finish_rewrite`]. With [`State::handing_retired`] the
    /// fold's memory follows the live fleet instead of history.
    pub fn begin_rewrite(&mut self, w: &mut dyn TableWriter) -> Result<(), TableError> {
        use tables::{HOST_ENTRIES, META, RETIRED};
        for (name, _) in self.stored() {
            w.clear(name)?;
        }
        for retired in RETIRED {
            w.clear(retired)?;
        }
        w.clear(HOST_ENTRIES)?;
        w.clear(META)?;
        // The fold starts from empty, so its pending rows will be the whole index.
        self.index.covered = 0;
        Ok(())
    }

    /// Writes what a rebuild in progress will not change again: the host records of the
    /// rollouts pruned so far (then dropped) and the entry index's complete blocks.
    pub fn write_settled(&mut self, w: &mut dyn TableWriter) -> Result<(), TableError> {
        let mut key = Vec::new();
        let mut row = Vec::new();
        for retired in self.take_retired() {
            for (host, rec) in &retired.hosts {
                model::encode_into(&(&retired.rollout, host), &mut key);
                model::encode_into(rec, &mut row);
                w.put(tables::HOSTS, &key, &row)?;
            }
        }
        self.write_index(w)
    }

    /// Ends a rebuild begun by [`State::begin_rewrite`]: every row still held, the index and
    /// the watermark.
    pub fn finish_rewrite(&mut self, w: &mut dyn TableWriter) -> Result<(), TableError> {
        self.write_settled(w)?;
        for (name, t) in self.stored_mut() {
            t.write_all(name, w)?;
        }
        self.write_index(w)?;
        self.write_watermark(w)
    }

    /// Compares what a `check` in progress will not change again with the stored tables: the
    /// host records of the rollouts pruned so far (then dropped) and the entry index's
    /// complete blocks (then forgotten). [`State::diff_after`] compares the rest at the end.
    /// The state must be [`State::handing_retired`] and folded from empty.
    pub fn compare_settled(
        &mut self,
        check: &mut Comparison,
        r: &dyn TableReader,
    ) -> Result<(), TableError> {
        for retired in self.take_retired() {
            if check.hosts.is_none() {
                check.hosts = Hosts::diff_retired(tables::HOSTS, &retired, r)?;
            }
            check.retired.insert(retired.rollout);
        }
        if self.index.off {
            return Ok(());
        }
        let covered = *check
            .index_covered
            .get_or_insert(State::stored_index_watermark(r)?);
        let target = (self.next_seq / INDEX_BLOCK * INDEX_BLOCK).min(covered);
        if target <= check.index_upto {
            return Ok(());
        }
        if check.index.is_none() {
            let expected = self.index.rows_below(target);
            let mut expected = expected.iter().peekable();
            for block in check.index_upto / INDEX_BLOCK..target / INDEX_BLOCK {
                let mine = std::iter::from_fn(|| {
                    expected
                        .next_if(|((b, _), _)| *b == block)
                        .map(|(k, v)| (*k, v))
                });
                let found = diff_index(
                    mine,
                    |f| r.scan_prefix(tables::HOST_ENTRIES, &block.to_be_bytes(), f),
                    |_| false,
                )?;
                if found.is_some() {
                    check.index = found;
                    break;
                }
            }
        }
        self.index.written_below(target);
        check.index_upto = target;
        Ok(())
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
        if self.index.off {
            return;
        }
        match event {
            // A revocation list names many hosts, a host perhaps twice: one row each.
            Event::RevocationsAccepted(_) => {
                let mut hosts = std::collections::BTreeSet::new();
                event.for_each_host(|h| {
                    hosts.insert(h);
                });
                for h in hosts {
                    self.index.push(seq, h);
                }
            }
            _ => {
                if let (_, Some(host)) = event.subject() {
                    self.index.push(seq, host);
                }
            }
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
        State::load_filtered(r, false)
    }

    /// Loads the tables for a long-running writer: like [`State::load`] but without the host
    /// records of Pruned rollouts. No decision reads them (a Pruned
    /// rollout refuses every input and the planner skips it), and on a long-lived fleet they
    /// are nearly all of the rows. The stored tables keep them; `check` and replay fold the
    /// whole log as before.
    pub fn load_live(r: &dyn TableReader) -> Result<State, TableError> {
        State::load_filtered(r, true)
    }

    fn load_filtered(r: &dyn TableReader, live: bool) -> Result<State, TableError> {
        use tables::{
            ACTIVE_BY_CHANNEL, COUNTERS, DEFERRALS, DISPATCH_QUEUE, ENROLLMENTS, HOSTS, MANIFESTS,
            NONCE_ALLOWLIST, PROBE_FAILURES, QUARANTINE, REVOCATIONS, ROLLOUTS, SIDECARS,
        };
        let next_seq = State::stored_watermark(r)?.map_or(0, |m| m.next_seq);
        let rollouts: Model<RolloutId, RolloutRecord> = Model::load(ROLLOUTS, r)?;
        // A live load reads the records of the rollouts that are not Pruned, by key range:
        // its cost follows the live fleet, however many rollouts history holds. How many it
        // left in the table is not counted (that would mean reading them).
        let hosts = if live {
            let kept = rollouts
                .values()
                .filter(|x| x.state != RolloutState::Pruned)
                .map(|x| &x.rollout_id);
            Hosts::load_rollouts(HOSTS, r, kept)?
        } else {
            Hosts::load(HOSTS, r)?
        };
        Ok(State {
            hosts,
            active: BTreeMap::new(),
            probe_failures: Model::load(PROBE_FAILURES, r)?,
            quarantine: Model::load(QUARANTINE, r)?,
            dispatch_queue: Model::load(DISPATCH_QUEUE, r)?,
            deferrals: Deferrals::load(DEFERRALS, r)?,
            active_by_channel: Model::load(ACTIVE_BY_CHANNEL, r)?,
            enrollments: Model::load(ENROLLMENTS, r)?,
            manifests: Model::load(MANIFESTS, r)?,
            counters: Model::load(COUNTERS, r)?,
            revocations: Model::load(REVOCATIONS, r)?,
            nonce_allowlist: Model::load(NONCE_ALLOWLIST, r)?,
            sidecars: Model::load(SIDECARS, r)?,
            rollouts,
            next_seq,
            scratch: Aside::default(),
            index: Aside::default(),
            forgotten: Aside(0),
            retire: Aside::default(),
        }
        .with_active())
    }

    /// The first table and key where the stored tables differ from this state, or None.
    pub fn diff(&self, r: &dyn TableReader) -> Result<Option<(&'static str, String)>, TableError> {
        self.diff_after(&Comparison::default(), r)
    }

    /// [`State::diff`] at the end of a `check` that compared as it folded
    /// ([`State::compare_settled`]): the differences it found come first in table order,
    /// and the rows it compared are not compared again.
    pub fn diff_after(
        &self,
        check: &Comparison,
        r: &dyn TableReader,
    ) -> Result<Option<(&'static str, String)>, TableError> {
        use tables::{HOST_ENTRIES, HOSTS};
        for (name, t) in self.stored() {
            let found = if name == HOSTS {
                match &check.hosts {
                    Some(d) => Some(d.clone()),
                    None => self
                        .hosts
                        .diff_except(name, r, |id| check.retired.contains(id))?,
                }
            } else {
                t.diff(name, r)?
            };
            if let Some(d) = found {
                return Ok(Some((name, d)));
            }
        }
        if self.index.off {
            return Ok(None);
        }
        if let Some(d) = &check.index {
            return Ok(Some((HOST_ENTRIES, d.clone())));
        }
        // This state was folded from empty: its pending rows are the index from
        // `index_upto` on (the blocks before were compared as it folded), of which the
        // stored index holds those below its watermark.
        let covered = State::stored_index_watermark(r)?;
        let expected = self.index.rows_below(covered);
        let upto = check.index_upto / INDEX_BLOCK;
        let found = diff_index(
            expected.iter().map(|(k, v)| (*k, v)),
            |f| r.scan(HOST_ENTRIES, f),
            |block| block < upto,
        )?;
        Ok(found.map(|d| (HOST_ENTRIES, d)))
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
            self.enrollments.rows(),
            self.manifests.rows(),
            self.counters.rows(),
            // Fold version 9's tables, as one tuple (bincode writes it as its fields in
            // order: the same bytes as a flat tuple, within serde's tuple limit).
            (
                self.revocations.rows(),
                self.nonce_allowlist.rows(),
                self.sidecars.rows(),
            ),
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
            enrollments,
            manifests,
            counters,
            (revocations, nonce_allowlist, sidecars),
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
            BTreeMap<String, EnrollmentRow>,
            BTreeMap<Option<RolloutId>, ManifestRow>,
            BTreeMap<(String, String), u64>,
            (
                BTreeMap<String, RevocationRow>,
                BTreeMap<String, AllowedNonceRow>,
                BTreeMap<String, SidecarRow>,
            ),
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
            enrollments: Model::from_rows(enrollments, false),
            manifests: Model::from_rows(manifests, false),
            counters: Model::from_rows(counters, false),
            revocations: Model::from_rows(revocations, false),
            nonce_allowlist: Model::from_rows(nonce_allowlist, false),
            sidecars: Model::from_rows(sidecars, false),
            next_seq,
            scratch: Aside::default(),
            index: Aside(IndexRows::off()),
            forgotten: Aside(omitted),
            retire: Aside::default(),
        };
        Ok(state.with_active())
    }
}

/// What a `check` that compares as it folds found so far ([`State::compare_settled`]).
#[derive(Debug, Default)]
pub struct Comparison {
    /// The rollouts whose host records were compared when they were pruned.
    retired: std::collections::BTreeSet<RolloutId>,
    /// The first difference among those records.
    hosts: Option<String>,
    /// The stored index's watermark (read once).
    index_covered: Option<u64>,
    /// The index blocks below this seq were compared.
    index_upto: u64,
    /// The first difference among them.
    index: Option<String>,
}

/// The first difference between expected index rows and the stored ones `scan` visits, in
/// key order, passing over stored rows whose block `skip` names.
fn diff_index<'a>(
    expected: impl Iterator<Item = ((u64, &'a [u8]), &'a Vec<u8>)>,
    scan: impl FnOnce(&mut ledger::tables::RowVisitor<'_>) -> Result<(), TableError>,
    skip: impl Fn(u64) -> bool,
) -> Result<Option<String>, TableError> {
    let mut expected = expected.peekable();
    let show = |block: u64, host: &[u8]| {
        let host: Option<String> = model::decode(tables::HOST_ENTRIES, host).ok();
        format!("host {host:?} block {block}")
    };
    let mut first = None;
    scan(&mut |k, v| {
        if first.is_some() {
            return Ok(());
        }
        let block = k
            .get(..8)
            .map(|b| u64::from_be_bytes(b.try_into().unwrap_or_default()));
        if block.is_some_and(&skip) {
            return Ok(());
        }
        let host = k.get(8..).unwrap_or_default();
        first = match (expected.next(), block) {
            (_, None) => Some("an undecodable stored key".to_string()),
            (Some(((eb, eh), ev)), Some(b)) if (eb, eh) == (b, host) => (ev != v).then(|| {
                format!(
                    "{}: stored entries {:?}, the log's {:?}",
                    show(b, host),
                    host_entries_seqs(b, v),
                    host_entries_seqs(b, ev)
                )
            }),
            (Some(((eb, eh), _)), Some(b)) if (eb, eh) < (b, host) => {
                Some(format!("{} missing", show(eb, eh)))
            }
            (_, Some(b)) => Some(format!("{} not in the log", show(b, host))),
        };
        Ok(())
    })?;
    if first.is_none()
        && let Some(((eb, eh), _)) = expected.next()
    {
        first = Some(format!("{} missing", show(eb, eh)));
    }
    Ok(first)
}
