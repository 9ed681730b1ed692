//! The ledger with its projections: every append folds the new entries into the read models
//! and writes the changed rows in the same redb transaction; opening catches up or rebuilds
//! projections whose watermark is behind; `rebuild` and `check` work from the log alone.

use std::path::Path;
use std::sync::Arc;

use ledger::keys::Signer;
use ledger::read::ReadError;
use ledger::store::{
    AppendError, CreateError, Maintenance, NewEntry, OpenError, ReadOnlyStore, Receipt, Snapshot,
    Store,
};
use ledger::tables::TableError;
use planner::Staged;
use projections::{FOLD_VERSION, State};
use thiserror::Error;

/// Why folding or materialising failed.
#[derive(Debug, Error)]
pub enum MaterializeError {
    /// Opening or reading the store.
    #[error(transparent)]
    Open(#[from] OpenError),
    /// Creating the store.
    #[error(transparent)]
    Create(#[from] CreateError),
    /// Appending or writing tables.
    #[error(transparent)]
    Append(#[from] AppendError),
    /// A projection table could not be read or written.
    #[error(transparent)]
    Table(#[from] TableError),
    /// An entry could not be read, or does not parse or decode (the log is damaged: run
    /// `verify`).
    #[error(transparent)]
    Read(#[from] ReadError),
    /// An unsigned tail could not be written aside (it stays in the store).
    #[error("setting the unsigned tail aside in {file}: {reason}")]
    Aside {
        /// The file.
        file: std::path::PathBuf,
        /// Why.
        reason: String,
    },
}

/// Re-derives the entry-index rows the stored index does not hold yet (entries from its
/// watermark up to what `state` reflects), after `state` was loaded from the tables.
fn rederive_index(snap: &Snapshot, state: &mut State) -> Result<(), MaterializeError> {
    let from = State::stored_index_watermark(snap)?;
    state.set_index_covered(from);
    for entry in snap.entries(from..state.next_seq)? {
        let entry = entry?;
        state.pending_index(entry.seq, &entry.event);
    }
    Ok(())
}

/// Folds entries `from..` of a snapshot into `state`. `progress` gets the count folded.
pub fn fold_from(
    snap: &Snapshot,
    state: &mut State,
    from: u64,
    mut progress: impl FnMut(u64),
) -> Result<(), MaterializeError> {
    let mut n = 0u64;
    for entry in snap.entries(from..)? {
        let entry = entry?;
        state.apply(entry.seq, entry.at, &entry.event);
        n += 1;
        if n.is_multiple_of(65536) {
            progress(n);
        }
    }
    progress(n);
    Ok(())
}

/// The whole log folded from empty, every row held in memory (change tracking off). For
/// tests and small logs: [`rebuild`] and [`check`] settle rows as they fold instead.
pub fn fold_all(snap: &Snapshot, progress: impl FnMut(u64)) -> Result<State, MaterializeError> {
    let mut state = State::untracked();
    fold_from(snap, &mut state, 0, progress)?;
    state.set_tracking(true);
    Ok(state)
}

/// Entries a streaming fold folds between settling what it can (see [`fold_settling`]).
const SETTLE_EVERY: u64 = 4096;

/// Entries a rebuild folds per write transaction. redb keeps a transaction's bookkeeping
/// (every page it allocated and freed) in memory until the commit, so one transaction for a
/// whole rebuild grows with history: 126 MB at 10M entries, 190 MB at 100M. Committing every
/// million entries bounds that part (DECISIONS 108); the first commit clears the watermark,
/// so a rebuild cut short leaves tables that every reader and the next open know to be stale.
const REWRITE_CHUNK: u64 = 1 << 20;

/// Folds the entries `range` of `snap` into `state`, calling `settle` every
/// [`SETTLE_EVERY`] entries and at the end: a rebuild writes, and `check` compares, the rows
/// the fold will not change again (a Pruned rollout's host records, complete index blocks),
/// and the state drops them, so memory follows the live fleet, not history. `progress` gets
/// the entries folded so far, counted from the start of the log.
fn fold_settling(
    snap: &Snapshot,
    range: std::ops::Range<u64>,
    state: &mut State,
    mut settle: impl FnMut(&mut State) -> Result<(), TableError>,
    mut progress: impl FnMut(u64),
) -> Result<(), MaterializeError> {
    let end = range.end;
    for entry in snap.entries(range)? {
        let entry = entry?;
        state.apply(entry.seq, entry.at, &entry.event);
        let n = entry.seq + 1;
        if n.is_multiple_of(SETTLE_EVERY) {
            settle(state)?;
        }
        if n.is_multiple_of(65536) {
            progress(n);
        }
    }
    settle(state)?;
    progress(end);
    Ok(())
}

/// One durable write transaction on the projection tables, running `f` in it with a
/// snapshot of the log taken just before.
type WriteTables<'a> = dyn FnMut(
        &mut dyn FnMut(
            &Snapshot,
            &mut dyn ledger::tables::TableWriter,
        ) -> Result<(), MaterializeError>,
    ) -> Result<(), MaterializeError>
    + 'a;

/// Rewrites every projection table from the first `size` entries of the log, writing as it
/// folds (memory follows the live fleet) and committing every `chunk` entries through
/// `write`. The first commit only clears the tables (and the watermark), so redb's record of
/// the pages it frees is not added to a chunk's; each chunk then reads the log through a
/// fresh snapshot. As with one transaction, about a third of the file is free pages afterwards (measured at 1M
/// entries: 485 MB compacted, 727 MB after any number of rebuilds, chunked or not).
/// Returns the entries folded.
fn rewrite(
    size: u64,
    chunk: u64,
    write: &mut WriteTables<'_>,
    mut progress: impl FnMut(u64),
) -> Result<u64, MaterializeError> {
    let mut state = State::untracked().handing_retired();
    write(&mut |_, t| Ok(state.begin_rewrite(t)?))?;
    let mut from = 0u64;
    loop {
        let to = from.saturating_add(chunk).min(size);
        write(&mut |snap, t| {
            fold_settling(
                snap,
                from..to,
                &mut state,
                |s| s.write_settled(t),
                &mut progress,
            )?;
            if to == size {
                state.finish_rewrite(t)?;
            }
            Ok(())
        })?;
        if to == size {
            return Ok(state.next_seq);
        }
        from = to;
    }
}

/// Rebuilds every projection table of the ledger at `path` from its log, in memory that
/// follows the live fleet, not history (committing every [`REWRITE_CHUNK`] entries; the
/// tables are marked current only by the last commit). Returns the entries folded.
pub fn rebuild(path: &Path, progress: impl FnMut(u64)) -> Result<u64, MaterializeError> {
    rebuild_in_chunks(path, REWRITE_CHUNK, progress)
}

/// [`rebuild`], committing every `chunk` entries (at least 1). A rebuild cut short (killed,
/// or a failed commit) leaves the chunks committed so far and no watermark: readers and the
/// next open take the tables as stale, and the next `rebuild` or daemon start rewrites them.
pub fn rebuild_in_chunks(
    path: &Path,
    chunk: u64,
    progress: impl FnMut(u64),
) -> Result<u64, MaterializeError> {
    let m = Maintenance::open(path)?;
    let size = m.snapshot()?.size();
    rewrite(
        size,
        chunk.max(1),
        &mut |f| {
            let snap = m.snapshot()?;
            m.write_tables(|t| f(&snap, t))
        },
        progress,
    )
}

/// What `check` found.
#[derive(Debug, PartialEq, Eq)]
pub enum CheckOutcome {
    /// The stored tables equal a fold of the log.
    Identical {
        /// Entries folded.
        entries: u64,
    },
    /// The first difference.
    Differs {
        /// The table that differs.
        table: &'static str,
        /// Key and what differs.
        detail: String,
    },
    /// The stored tables were written by another fold version or lag the log.
    Stale {
        /// What differs, in words.
        detail: String,
    },
}

/// Rebuilds in memory and compares with the stored tables, without writing anything (beside a
/// running daemon, on its latest commit; see [`ReadOnlyStore::open_with`]).
pub fn check(path: &Path, progress: impl FnMut(u64)) -> Result<CheckOutcome, MaterializeError> {
    let ro = ReadOnlyStore::open_with(path, true)?;
    check_snapshot(&ro.snapshot()?, progress)
}

/// [`check`] on one snapshot.
pub fn check_snapshot(
    snap: &Snapshot,
    progress: impl FnMut(u64),
) -> Result<CheckOutcome, MaterializeError> {
    // Compares as it folds: what the fold will not change again is compared and dropped.
    let mut state = State::untracked().handing_retired();
    let mut compared = projections::Comparison::default();
    fold_settling(
        snap,
        0..snap.size(),
        &mut state,
        |s| s.compare_settled(&mut compared, snap),
        progress,
    )?;
    match State::stored_watermark(snap)? {
        Some(m) if m.fold_version != FOLD_VERSION => {
            return Ok(CheckOutcome::Stale {
                detail: format!(
                    "tables written by fold version {}, this build folds version {FOLD_VERSION}",
                    m.fold_version
                ),
            });
        }
        Some(m) if m.next_seq != snap.size() => {
            return Ok(CheckOutcome::Stale {
                detail: format!("tables reflect {} of {} entries", m.next_seq, snap.size()),
            });
        }
        None => {
            return Ok(CheckOutcome::Stale {
                detail: "no projection watermark: tables never written".into(),
            });
        }
        Some(_) => {}
    }
    Ok(match state.diff_after(&compared, snap)? {
        None => CheckOutcome::Identical {
            entries: state.next_seq,
        },
        Some((table, detail)) => CheckOutcome::Differs { table, detail },
    })
}

/// The store and its in-memory read models, kept equal to the stored tables, plus a batch
/// being staged: staged events are already folded into the models (so the next decision
/// sees them) and are appended, with the changed rows, by [`Ledger::commit`].
#[derive(Debug)]
pub struct Ledger {
    store: Store,
    state: State,
    staged: Staged,
    /// Keep only what decisions read in memory (see [`State::load_live`]).
    live_only: bool,
}

impl Ledger {
    /// Creates a ledger; its genesis entry is folded like any other.
    pub fn create(
        path: &Path,
        origin: &str,
        signer: Signer,
        now_us: i64,
    ) -> Result<Ledger, MaterializeError> {
        let store = Store::create(path, origin, signer, now_us)?;
        Ledger::materialize(store, false)
    }

    /// The ledger of an open store, its projections caught up (or rebuilt) as by
    /// [`Ledger::open`].
    pub fn from_store(store: Store) -> Result<Ledger, MaterializeError> {
        Ledger::materialize(store, false)
    }

    /// The store back (its projections are as durable as its log).
    pub fn into_store(self) -> Store {
        self.store
    }

    /// Opens a ledger, catching up (or rebuilding, on a fold-version change) its projections.
    pub fn open(path: &Path, signer: impl Into<Arc<Signer>>) -> Result<Ledger, MaterializeError> {
        Ledger::materialize(Store::open(path, signer)?, false)
    }

    /// Opens a ledger for a long-running writer: the in-memory models leave out the rows of
    /// Pruned rollouts, now and whenever a rollout is pruned later ([`State::load_live`]).
    /// The stored tables are complete either way.
    pub fn open_live(
        path: &Path,
        signer: impl Into<Arc<Signer>>,
    ) -> Result<Ledger, MaterializeError> {
        Ledger::materialize(Store::open(path, signer)?, true)
    }

    /// Opens a verifying follower's ledger (issue 29): live projections, no signing key; it
    /// grows only by [`Ledger::append_noted`].
    pub fn open_follower(path: &Path) -> Result<Ledger, MaterializeError> {
        Ledger::materialize(Store::open_follower(path)?, true)
    }

    /// Appends a batch another node signed, with its checkpoint `note` (which must be the
    /// batch's, signed by the key in force), folding it into the projections in the same
    /// transaction: a verifying follower's only write.
    pub fn append_noted(
        &mut self,
        batch: Vec<NewEntry>,
        note: &str,
    ) -> Result<Receipt, MaterializeError> {
        self.stage_as_given(batch);
        self.write_staged_with(Some(note))
    }

    /// [`Ledger::open_live`] of a store already open.
    pub fn from_live_store(store: Store) -> Result<Ledger, MaterializeError> {
        Ledger::materialize(store, true)
    }

    fn materialize(mut store: Store, live_only: bool) -> Result<Ledger, MaterializeError> {
        let load = |snap: &Snapshot| {
            if live_only {
                State::load_live(snap)
            } else {
                State::load(snap)
            }
        };
        let mut snap = store.snapshot()?;
        let current = State::stored_watermark(&snap)?
            .is_some_and(|m| m.fold_version == FOLD_VERSION && m.next_seq <= snap.size());
        if !current {
            // Tables of another fold version (or none): rebuild them as `rebuild` does, in
            // memory that follows the live fleet, then load them like any others.
            let size = snap.size();
            drop(snap);
            rewrite(
                size,
                REWRITE_CHUNK,
                &mut |f| {
                    let snap = store.snapshot()?;
                    store.write_tables(|t| f(&snap, t))
                },
                |_| {},
            )?;
            snap = store.snapshot()?;
        }
        let mut state = load(&snap)?;
        rederive_index(&snap, &mut state)?;
        if state.next_seq < snap.size() {
            let from = state.next_seq;
            fold_from(&snap, &mut state, from, |_| {})?;
            drop(snap);
            store.write_tables(|t| state.flush(t).map_err(MaterializeError::from))?;
        }
        state.set_tracking(true);
        let mut ledger = Ledger {
            staged: Staged::at(store.size()),
            store,
            state,
            live_only,
        };
        if live_only {
            // After a rebuild or catch-up every row was just written: forget the dead ones.
            let pruned = ledger.pruned();
            ledger.state.forget_pruned(&pruned);
        }
        Ok(ledger)
    }

    /// The read models (equal to the stored tables).
    pub fn state(&self) -> &State {
        &self.state
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Every later commit saves redb's allocator state, for a fast open after a crash
    /// ([`Store::set_quick_repair`]).
    pub fn set_quick_repair(&mut self, on: bool) {
        self.store.set_quick_repair(on);
    }

    /// Appends a batch and folds it into the projections in the same transaction: the
    /// batch is staged as given, then committed, the path every append takes. On failure the
    /// in-memory models are reloaded from the last commit, so they never run ahead of the log.
    pub fn append(&mut self, batch: Vec<NewEntry>) -> Result<Receipt, MaterializeError> {
        self.stage_as_given(batch);
        self.write_staged()
    }

    /// Stages `batch` as given (anything staged before is dropped), folded into the models.
    fn stage_as_given(&mut self, batch: Vec<NewEntry>) {
        self.discard();
        for e in batch {
            self.staged.push(&mut self.state, e.recorded_at_us, e.event);
        }
    }

    /// Rotates the checkpoint key to `next` (a `KeyRotated` entry signed off by the current
    /// key, committed alone, with the projections in the same transaction). Anything staged
    /// must have been committed first.
    pub fn rotate_key(
        &mut self,
        next: Arc<Signer>,
        reason: &str,
        at: i64,
    ) -> Result<Receipt, MaterializeError> {
        debug_assert!(self.staged.is_empty(), "commit before rotating");
        let event = ledger::event::Event::KeyRotated(ledger::event::KeyRotated {
            next: next.public().record(),
            reason: reason.to_string(),
        });
        self.state.apply(self.next_seq(), at, &event);
        let state = &mut self.state;
        let result = self.store.rotate_key_with(next, reason, at, |tables, _| {
            state.flush(tables).map_err(MaterializeError::from)
        });
        self.staged = Staged::at(self.store.size());
        result.inspect_err(|_| self.reload())
    }

    /// Folds `events` (decided at CP time `at`) into the models and stages them for the next
    /// commit. Returns the seq the first one will get.
    pub fn stage(&mut self, at: i64, events: Vec<ledger::event::Event>) -> u64 {
        self.staged.stage(&mut self.state, at, events)
    }

    /// The seq the next staged event gets.
    pub fn next_seq(&self) -> u64 {
        self.staged.next_seq()
    }

    /// A staged (not yet committed) event by seq.
    pub fn staged(&self, seq: u64) -> Option<&ledger::event::Event> {
        self.staged.get(seq)
    }

    /// Appends everything staged in ONE durable transaction with the changed projection rows.
    /// `Ok(None)` when nothing was staged. On failure nothing is appended and the models are
    /// reloaded from the last commit.
    pub fn commit(&mut self) -> Result<Option<Receipt>, MaterializeError> {
        if self.staged.is_empty() {
            return Ok(None);
        }
        self.write_staged().map(Some)
    }

    /// Commits what is staged by failover's commit protocol (issue 29): the batch is first
    /// written as the store's unsigned tail (durable), then `acknowledge` is asked with the
    /// checkpoint it would end with and its encoded entries (shipping to the standbys, then
    /// the commit register's swap), and only if it agrees is
    /// the batch signed and appended with its projection rows. When it does not, nothing is
    /// signed, the tail stays for the caller to resolve ([`Ledger::sign_tail`] once the
    /// register is found to hold it, [`Ledger::set_tail_aside`] otherwise), and the models are
    /// reloaded from the last commit. `Ok(None)` when nothing was staged.
    pub fn commit_through<E: From<MaterializeError>>(
        &mut self,
        acknowledge: impl FnOnce(&ledger::checkpoint::Checkpoint, &[Vec<u8>]) -> Result<(), E>,
    ) -> Result<Option<Receipt>, E> {
        self.commit_through_with(|_, _| (), |cp, entries, ()| acknowledge(cp, entries))
    }

    /// [`Ledger::commit_through`], with `meanwhile` called with the checkpoint and the
    /// encoded entries while the tail syncs (a writer ships the batch to its standbys in
    /// parallel with its own fsync); what it returns goes to `acknowledge`. If the tail cannot
    /// be written, `acknowledge` is not called (what `meanwhile` started is dropped).
    pub fn commit_through_with<S, E: From<MaterializeError>>(
        &mut self,
        meanwhile: impl FnOnce(&ledger::checkpoint::Checkpoint, &[Vec<u8>]) -> S,
        acknowledge: impl FnOnce(&ledger::checkpoint::Checkpoint, &[Vec<u8>], S) -> Result<(), E>,
    ) -> Result<Option<Receipt>, E> {
        if self.staged.is_empty() {
            return Ok(None);
        }
        let batch: Vec<NewEntry> = self
            .staged
            .events()
            .iter()
            .map(|(recorded_at_us, event)| NewEntry {
                recorded_at_us: *recorded_at_us,
                event: event.clone(),
            })
            .collect();
        let (unsigned, encoded, started) = match self.store.write_tail_with(&batch, meanwhile) {
            Ok(written) => written,
            Err(e) => {
                self.discard();
                return Err(MaterializeError::from(e).into());
            }
        };
        if let Err(e) = acknowledge(&unsigned, &encoded, started) {
            self.discard();
            return Err(e);
        }
        self.write_staged().map(Some).map_err(E::from)
    }

    /// Writes `batch` as the store's unsigned tail, durably, without staging or folding it
    /// (a standby's shipment): [`ledger::store::Store::write_tail_entries`].
    pub fn write_tail(
        &mut self,
        batch: &[NewEntry],
    ) -> Result<(ledger::checkpoint::Checkpoint, Vec<Vec<u8>>), ledger::store::AppendError> {
        self.store.write_tail_entries(batch)
    }

    /// Appends the store's unsigned tail (the batch it holds), signed, with its projection
    /// rows: what a writer does once the commit register is found to acknowledge it.
    /// `Ok(None)` without a tail.
    pub fn sign_tail(&mut self) -> Result<Option<Receipt>, MaterializeError> {
        match self.store.tail_batch()? {
            Some((batch, _)) => self.append(batch).map(Some),
            None => Ok(None),
        }
    }

    /// Moves the store's unsigned tail aside, never silently dropped: its entries are written
    /// to `<dir>/tail-<first seq>.entries` (FORMAT §9a's framing: u32 big-endian length, then
    /// the entry's bytes), synced, then removed from the store. What a writer does with a
    /// tail the commit register never acknowledged. Returns the file, `None` without a tail.
    pub fn set_tail_aside(
        &mut self,
        dir: &Path,
    ) -> Result<Option<std::path::PathBuf>, MaterializeError> {
        let rows = self
            .store
            .tail()
            .map_err(|e| MaterializeError::Append(e.into()))?;
        let Some((first, _)) = rows.first() else {
            return Ok(None);
        };
        let file = dir.join(format!("tail-{first}.entries"));
        let write = || -> std::io::Result<()> {
            use std::io::Write as _;
            std::fs::create_dir_all(dir)?;
            let mut f = std::fs::File::create(&file)?;
            for (_, bytes) in &rows {
                let len = u32::try_from(bytes.len()).map_err(std::io::Error::other)?;
                f.write_all(&len.to_be_bytes())?;
                f.write_all(bytes)?;
            }
            f.sync_all()
        };
        write().map_err(|e| MaterializeError::Aside {
            file: file.clone(),
            reason: e.to_string(),
        })?;
        self.store.drop_tail()?;
        Ok(Some(file))
    }

    fn write_staged(&mut self) -> Result<Receipt, MaterializeError> {
        self.write_staged_with(None)
    }

    /// Commits what is staged, signed here, or with `note` (another node's signature).
    fn write_staged_with(&mut self, note: Option<&str>) -> Result<Receipt, MaterializeError> {
        self.write_staged_by(|store, batch, flush| match note {
            Some(note) => store.append_noted(batch, note, flush),
            None => store.append_with(batch, flush),
        })
    }

    /// Appends a batch as [`Ledger::append`] does and, in the same durable transaction,
    /// writes `next` as the store's unsigned tail if `keep` accepts its checkpoint and encoded
    /// entries ([`ledger::store::Store::append_then_tail`]): a standby signing the tail the
    /// register acknowledged and holding the batch just shipped, with one fsync.
    pub fn append_then_tail(
        &mut self,
        batch: Vec<NewEntry>,
        next: &[NewEntry],
        keep: impl FnOnce(&ledger::checkpoint::Checkpoint, &[Vec<u8>]) -> bool,
    ) -> Result<(Receipt, Option<ledger::store::TailWritten>), MaterializeError> {
        self.stage_as_given(batch);
        self.write_staged_by(|store, batch, flush| store.append_then_tail(batch, flush, next, keep))
    }

    /// Takes what is staged and commits it by `commit`, given the store, the batch and the
    /// hook that flushes the projections into the same transaction. On failure the models are
    /// reloaded from the last commit.
    fn write_staged_by<R>(
        &mut self,
        commit: impl FnOnce(
            &mut Store,
            &[NewEntry],
            &mut dyn FnMut(
                &mut ledger::store::RedbTables<'_>,
                &[ledger::store::Appended<'_>],
            ) -> Result<(), MaterializeError>,
        ) -> Result<R, MaterializeError>,
    ) -> Result<R, MaterializeError> {
        let batch: Vec<NewEntry> = self
            .staged
            .take()
            .into_iter()
            .map(|(recorded_at_us, event)| NewEntry {
                recorded_at_us,
                event,
            })
            .collect();
        let state = &mut self.state;
        let mut flush = |tables: &mut ledger::store::RedbTables<'_>,
                         _: &[ledger::store::Appended<'_>]| {
            state.flush(tables).map_err(MaterializeError::from)
        };
        let result = commit(&mut self.store, &batch, &mut flush);
        self.staged = Staged::at(self.store.size());
        match result {
            Ok(done) => {
                self.forget_pruned(&batch);
                Ok(done)
            }
            Err(e) => {
                self.reload();
                Err(e)
            }
        }
    }

    /// In a live ledger, drops from memory the rows of rollouts this batch pruned.
    fn forget_pruned(&mut self, batch: &[NewEntry]) {
        if !self.live_only {
            return;
        }
        let pruned: Vec<_> = batch
            .iter()
            .filter_map(|e| match &e.event {
                ledger::event::Event::RolloutTransitioned(t)
                    if t.to == ledger::domain::RolloutState::Pruned =>
                {
                    Some(t.rollout_id.clone())
                }
                _ => None,
            })
            .collect();
        self.state.forget_pruned(&pruned);
    }

    fn pruned(&self) -> Vec<ledger::domain::RolloutId> {
        self.state
            .rollouts
            .values()
            .filter(|r| r.state == ledger::domain::RolloutState::Pruned)
            .map(|r| r.rollout_id.clone())
            .collect()
    }

    /// Drops the staged batch and reloads the models from the last commit.
    pub fn discard(&mut self) {
        if !self.staged.is_empty() {
            self.staged = Staged::at(self.store.size());
            self.reload();
        }
    }

    fn reload(&mut self) {
        if let Ok(snap) = self.store.snapshot() {
            let loaded = if self.live_only {
                State::load_live(&snap)
            } else {
                State::load(&snap)
            };
            if let Ok(mut s) = loaded
                && rederive_index(&snap, &mut s).is_ok()
            {
                self.state = s;
            }
        }
    }
}

/// The daemon's decisions stage into the ledger: each staged event is folded into the models
/// at once, so the next decision of the batch sees it.
impl planner::Log for Ledger {
    type Error = ReadError;

    fn state(&self) -> &State {
        &self.state
    }

    fn next_seq(&self) -> u64 {
        Ledger::next_seq(self)
    }

    fn stage(&mut self, at: i64, events: Vec<ledger::event::Event>) -> u64 {
        Ledger::stage(self, at, events)
    }

    fn recorded(&self, seq: u64) -> Result<Option<ledger::event::Event>, ReadError> {
        if let Some(e) = self.staged(seq) {
            return Ok(Some(e.clone()));
        }
        Ok(self.store.snapshot()?.logged(seq)?.map(|l| l.event))
    }
}
