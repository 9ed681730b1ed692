//! The state's tables in the store: flushing what a batch changed, a full rewrite (a
//! rebuild), loading, comparing with a fold (`check`), and the replay snapshot's encoding.
//! Which tables there are is declared once, in `stored_tables!` (lib.rs).

use super::*;

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

    /// Replaces every table with this state (a rebuild).
    pub fn write_all(&mut self, w: &mut dyn TableWriter) -> Result<(), TableError> {
        use tables::*;
        for (name, t) in self.stored_mut() {
            t.write_all(name, w)?;
        }
        for retired in RETIRED {
            w.clear(retired)?;
        }
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
        use tables::*;
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
        use tables::*;
        for (name, t) in self.stored() {
            if let Some(d) = t.diff(name, r)? {
                return Ok(Some((name, d)));
            }
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
            self.enrollments.rows(),
            self.manifests.rows(),
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
            next_seq,
            scratch: Aside::default(),
            index: Aside(IndexRows::off()),
            forgotten: Aside(omitted),
            retire: Aside::default(),
        };
        Ok(state.with_active())
    }
}
