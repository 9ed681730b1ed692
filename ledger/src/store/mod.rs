//! The ledger on redb: one writer ([`Store`]), any number of MVCC readers ([`Snapshot`]).
//!
//! One row per entry, so an append of n entries is n inserts into one table, as close to a raw
//! redb insert as the format allows:
//!
//! | table | key | value |
//! | --- | --- | --- |
//! | `ledger.log` | seq `u64` | a [`Row`]: the tree nodes this entry completed, the batch's signed checkpoint if the entry ends a batch, then the stored entry bytes |
//! | `ledger.meta` | name `&str` | bytes: `format`, `origin`, `keys` (key chain, one verifier key per line) |
//!
//! Appending leaf j completes the perfect subtrees of levels 1..=t, t = trailing ones of j;
//! their hashes ride in row j, so node `(level, index)` lives in row `(index + 1)·2^level − 1`.
//! Level-0 nodes are the entry hashes, recomputed from the entry bytes when a proof needs one.
//! The checkpoint of size s lives in row s − 1.
//!
//! The rooms: this file holds the writer ([`Store`]: create, open, append, rotate); `row` the
//! row layout; `snapshot` the read view and everything computed from it (verification,
//! proofs, export, the table reader); `handles` the other ways in ([`Reader`],
//! [`ReadOnlyStore`], [`Maintenance`]); `import` a verified log written as it is
//! ([`Importer`]); `redb_tables` the table interface on a write transaction; `error` one
//! error type per operation.

mod error;
mod handles;
mod import;
mod redb_tables;
mod row;
mod snapshot;

pub use error::{AppendError, CreateError, ExportError, OpenError, ProofError, StorageError};
pub use handles::{Maintenance, ReadMode, ReadOnlyStore, Reader, trial_commit};
pub use import::Importer;
pub use redb_tables::RedbTables;
pub use row::Row;
pub use snapshot::{Entries, Rows, Snapshot};

use error::{foreign, inconsistent, storage};
use redb_tables::table_err;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction,
};

use crate::checkpoint::{Checkpoint, check_origin};
use crate::entry::{self, EntryRef, FORMAT_VERSION, PAYLOAD_BYTES_MAX};
use crate::event::{Event, Genesis, KeyRotated, Kind};
use crate::hash::{Hash, TreeHash, leaf_hash};
use crate::keys::{PublicKey, Signer};
use crate::merkle::Frontier;

const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("ledger.log");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("ledger.meta");
/// The unsigned tail (issue 29): a batch's encoded entries, durable before the commit
/// register acknowledges them, not part of the log (which always ends in a checkpoint) until
/// the same batch is appended and signed. Key: seq.
const TAIL: TableDefinition<u64, &[u8]> = TableDefinition::new("ledger.tail");

/// Version of the table layout above, stored in `ledger.meta/format`.
pub const STORE_FORMAT: u8 = 1;
/// Most entries one append may carry.
pub const BATCH_ENTRIES_MAX: usize = 100_000;
/// redb's page cache per open database. redb defaults to 1 GiB, which a full scan (verify,
/// export) fills: 64 MiB keeps a reader's memory flat on any log size, and appends only ever
/// touch the right edge of the B-tree.
pub const CACHE_BYTES: usize = 64 << 20;

/// An event to append, with the CP time the writer decided it at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewEntry {
    /// CP time, µs since the Unix epoch; non-decreasing along the log.
    pub recorded_at_us: i64,
    /// The event.
    pub event: Event,
}

/// An entry as it is being appended, handed to the hook.
#[derive(Clone, Copy, Debug)]
pub struct Appended<'a> {
    /// Its seq.
    pub seq: u64,
    /// Its CP time.
    pub recorded_at_us: i64,
    /// Its entry hash.
    pub hash: Hash,
    /// The event.
    pub event: &'a Event,
}

/// What a durable append produced.
#[derive(Clone, Debug)]
pub struct Receipt {
    /// Seq of the first entry of the batch.
    pub first_seq: u64,
    /// Number of entries.
    pub count: u64,
    /// The batch's checkpoint.
    pub checkpoint: Checkpoint,
    /// Its signed note.
    pub note: String,
}

/// The append position: everything needed to append without reading the database.
#[derive(Clone, Debug)]
struct Tip {
    head: Hash,
    last_time: i64,
    frontier: Frontier,
}

/// Who signs the checkpoints of a store's appends.
#[derive(Debug)]
enum Notary {
    /// This process holds the key in force (a writer, a standby). Shared, not copied, with
    /// whoever reopens the store after a failed commit (`Signer` is deliberately not
    /// `Clone`: the key material exists once).
    Key(Arc<Signer>),
    /// This process does not hold it (a verifying follower, issue 29): it appends only
    /// batches whose checkpoint the key in force signed elsewhere ([`Store::append_noted`]).
    Follows(Box<PublicKey>),
}

/// The single writer.
#[derive(Debug)]
pub struct Store {
    // Shared with [`Reader`]s: redb allows one `Database` per file and process, and its read
    // transactions are MVCC, so readers on other threads never block the writer.
    db: Arc<Database>,
    path: PathBuf,
    origin: String,
    /// Who signs this store's checkpoints.
    notary: Notary,
    tip: Tip,
    poisoned: bool,
    /// Each commit saves redb's allocator state (see [`Store::set_quick_repair`]).
    quick_repair: bool,
    /// Entries in the unsigned tail (0: none).
    tail: u64,
}

fn begin_durable_write(
    db: &Database,
    quick_repair: bool,
) -> Result<WriteTransaction, StorageError> {
    let mut txn = db.begin_write().map_err(storage("beginning a write"))?;
    // Saves the allocator state with the commit, so the open after a crash loads it instead
    // of walking the whole file (see [`Store::set_quick_repair`]).
    txn.set_quick_repair(quick_repair);
    txn.set_durability(Durability::Immediate)
        .map_err(|e| StorageError {
            doing: "setting durability",
            source: redb::Error::Corrupted(e.to_string()),
        })?;
    // Entries carry attacker-influenced bytes; one-phase commit would trust a non-cryptographic
    // checksum during crash recovery. See ARCHITECTURE.md, "Durability".
    txn.set_two_phase_commit(true);
    Ok(txn)
}

/// Every open of a ledger file: the bounded cache, and redb's single-writer mode (4.5+). One
/// process writes (the daemon, or a maintenance command), and any number of processes may open
/// the file read-only beside it and read its committed snapshots: an auditor verifies a live
/// ledger without stopping it.
fn builder() -> redb::Builder {
    let mut b = redb::Builder::new();
    b.set_cache_size(CACHE_BYTES)
        .set_concurrency_mode(redb::ConcurrencyMode::SingleWriter);
    b
}

/// For a storage backend given by the caller: exclusive-writer mode, the one that needs no
/// byte-range locks (a backend without them refuses the shared modes), and only this process
/// can reach the storage anyway.
#[cfg(feature = "sim-disk")]
fn backend_builder() -> redb::Builder {
    let mut b = redb::Builder::new();
    b.set_cache_size(CACHE_BYTES);
    b
}

fn not_a_database(path: &Path) -> impl FnOnce(redb::DatabaseError) -> OpenError + '_ {
    move |source| match source {
        redb::DatabaseError::DatabaseAlreadyOpen => OpenError::InUse {
            path: path.to_path_buf(),
        },
        reason => OpenError::NotADatabase {
            path: path.to_path_buf(),
            reason: reason.to_string(),
        },
    }
}

/// Opens an existing database read-write.
fn open_rw(path: &Path) -> Result<Database, OpenError> {
    if !path.exists() {
        return Err(OpenError::Missing(path.to_path_buf()));
    }
    builder().open(path).map_err(not_a_database(path))
}

/// Runs `f` on the table interface in one durable transaction and commits it. `f`'s error
/// comes back as itself; the store's own failures as `E::from`. Whether the commit itself
/// failed is told apart, so a store can poison its handle.
fn write_tables_in<E: From<AppendError>>(
    db: &Database,
    quick_repair: bool,
    f: impl FnOnce(&mut RedbTables<'_>) -> Result<(), E>,
) -> Result<(), Written<E>> {
    let txn = begin_durable_write(db, quick_repair)
        .map_err(|e| Written::Failed(AppendError::from(e).into()))?;
    f(&mut RedbTables::new(&txn)).map_err(Written::Failed)?;
    txn.commit()
        .map_err(|e| Written::CommitFailed(AppendError::Commit(storage("committing")(e)).into()))
}

/// How a table write failed: before its commit (nothing written, the handle sound) or in it.
pub(super) enum Written<E> {
    Failed(E),
    CommitFailed(E),
}

impl<E> Written<E> {
    pub(super) fn into_inner(self) -> E {
        match self {
            Written::Failed(e) | Written::CommitFailed(e) => e,
        }
    }
}

impl Store {
    /// Creates a new ledger at `path` with a genesis entry naming `origin` and `signer`'s key.
    pub fn create(
        path: &Path,
        origin: &str,
        signer: Signer,
        recorded_at_us: i64,
    ) -> Result<Store, CreateError> {
        Store::create_versioned(path, origin, signer, recorded_at_us, FORMAT_VERSION)
    }

    /// [`Store::create`] in a given entry format version (1: a blake3 tree, for tests and
    /// fixtures of version-1 logs; 2: the current format).
    pub fn create_versioned(
        path: &Path,
        origin: &str,
        signer: Signer,
        recorded_at_us: i64,
        version: u8,
    ) -> Result<Store, CreateError> {
        check_origin(origin)?;
        if path.exists() {
            return Err(CreateError::Exists(path.to_path_buf()));
        }
        let db = builder()
            .create(path)
            .map_err(storage("creating the database"))?;
        Store::create_in(db, path, origin, signer, recorded_at_us, version)
    }

    /// [`Store::create`] on the simulated disk instead of a file (the fault tests and the
    /// deterministic writer test); `label` names it in errors.
    #[cfg(feature = "sim-disk")]
    pub fn create_with_backend(
        backend: crate::sim_disk::Disk,
        label: &Path,
        origin: &str,
        signer: Signer,
        recorded_at_us: i64,
    ) -> Result<Store, CreateError> {
        check_origin(origin)?;
        let db = backend_builder()
            .create_with_backend(backend)
            .map_err(storage("creating the database"))?;
        Store::create_in(db, label, origin, signer, recorded_at_us, FORMAT_VERSION)
    }

    fn create_in(
        db: Database,
        path: &Path,
        origin: &str,
        signer: Signer,
        recorded_at_us: i64,
        version: u8,
    ) -> Result<Store, CreateError> {
        let tree = TreeHash::of_version(version).ok_or_else(|| {
            CreateError::Genesis(Box::new(AppendError::Invariant(format!(
                "entry format version {version} is not one this build writes"
            ))))
        })?;
        let txn = begin_durable_write(&db, false)?;
        {
            let mut meta = txn.open_table(META).map_err(storage("opening meta"))?;
            meta.insert("format", [STORE_FORMAT].as_slice())
                .map_err(storage("writing meta"))?;
            meta.insert("origin", origin.as_bytes())
                .map_err(storage("writing meta"))?;
            meta.insert(
                "keys",
                format!("{}\n", signer.public().to_text()).as_bytes(),
            )
            .map_err(storage("writing meta"))?;
            txn.open_table(LOG).map_err(storage("creating tables"))?;
        }
        let mut store = Store {
            db: Arc::new(db),
            path: path.to_path_buf(),
            origin: origin.to_string(),
            tip: Tip {
                head: Hash::ZERO,
                last_time: i64::MIN,
                frontier: Frontier::new(tree),
            },
            poisoned: false,
            quick_repair: false,
            notary: Notary::Key(Arc::new(signer)),
            tail: 0,
        };
        let genesis = Event::Genesis(Genesis {
            origin: origin.to_string(),
            key: store.public_key().record(),
        });
        store
            .commit_batch(
                txn,
                &[NewEntry {
                    recorded_at_us,
                    event: genesis,
                }],
                None,
                |_| Ok(()),
                |_, _| Ok(()),
                |_, _, _| Ok(0),
            )
            .map_err(|e: AppendError| CreateError::Genesis(Box::new(e)))?;
        Ok(store)
    }

    /// Opens an existing ledger for appending, checking that head, tree and latest checkpoint
    /// agree and that `signer` holds the key in force.
    pub fn open(path: &Path, signer: impl Into<Arc<Signer>>) -> Result<Store, OpenError> {
        Store::open_in(open_rw(path)?, path, signer.into())
    }

    /// [`Store::open`] on the simulated disk instead of a file; `label` names it in errors.
    #[cfg(feature = "sim-disk")]
    pub fn open_with_backend(
        backend: crate::sim_disk::Disk,
        label: &Path,
        signer: impl Into<Arc<Signer>>,
    ) -> Result<Store, OpenError> {
        let db = backend_builder()
            .create_with_backend(backend)
            .map_err(not_a_database(label))?;
        Store::open_in(db, label, signer.into())
    }

    /// Opens an existing ledger without its signing key, as a verifying follower does: it
    /// appends only batches whose checkpoint the key in force signed elsewhere
    /// ([`Store::append_noted`]).
    pub fn open_follower(path: &Path) -> Result<Store, OpenError> {
        Store::open_as(open_rw(path)?, path, None)
    }

    fn open_in(db: Database, path: &Path, signer: Arc<Signer>) -> Result<Store, OpenError> {
        Store::open_as(db, path, Some(signer))
    }

    fn open_as(db: Database, path: &Path, signer: Option<Arc<Signer>>) -> Result<Store, OpenError> {
        let snap = Snapshot::new(db.begin_read().map_err(storage("beginning a read"))?, path)?;
        let tip = snap.check_tip(path)?;
        let in_force = snap
            .keys_in_force()?
            .pop()
            .expect("at least the genesis key");
        let notary = match signer {
            Some(signer) if in_force != *signer.public() => {
                return Err(OpenError::WrongKey {
                    given: format!("{}+{:08x}", signer.public().name(), signer.public().id()),
                    in_force: format!("{}+{:08x}", in_force.name(), in_force.id()),
                });
            }
            Some(signer) => Notary::Key(signer),
            None => Notary::Follows(Box::new(in_force)),
        };
        let origin = snap.origin.clone();
        drop(snap);
        let tail = {
            let read = db.begin_read().map_err(storage("beginning a read"))?;
            match read.open_table(TAIL) {
                Ok(t) => {
                    use redb::ReadableTableMetadata as _;
                    t.len().map_err(storage("counting the tail"))?
                }
                Err(redb::TableError::TableDoesNotExist(_)) => 0,
                Err(e) => return Err(storage("opening the tail")(e).into()),
            }
        };
        Ok(Store {
            db: Arc::new(db),
            path: path.to_path_buf(),
            origin,
            notary,
            tip,
            poisoned: false,
            quick_repair: false,
            tail,
        })
    }

    /// Makes every later commit save redb's allocator state beside its data (redb's
    /// quick-repair), so that opening the file after a crash loads that state instead of
    /// walking the whole file to rebuild it: start-up after a SIGKILL or power loss stays flat
    /// as history grows, for more work on every commit, growing with the file (a few percent
    /// of ingest at 3 GB, two thirds or more at 23 GB; `docs/OPERATIONS.md` has the figures).
    /// A clean close needs no repair either way. Off by default.
    pub fn set_quick_repair(&mut self, on: bool) {
        self.quick_repair = on;
    }

    /// The signing key, shared (to reopen the store after a failed commit with the same key);
    /// None for a follower's store.
    pub fn signer(&self) -> Option<Arc<Signer>> {
        match &self.notary {
            Notary::Key(s) => Some(Arc::clone(s)),
            Notary::Follows(_) => None,
        }
    }

    /// The database path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Number of entries (the next seq).
    pub fn size(&self) -> u64 {
        self.tip.frontier.size()
    }

    /// Hash of the last entry.
    pub fn head(&self) -> Hash {
        self.tip.head
    }

    /// CP time of the last entry, µs.
    pub fn last_time(&self) -> i64 {
        self.tip.last_time
    }

    /// The log's origin.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The key in force.
    pub fn public_key(&self) -> &PublicKey {
        match &self.notary {
            Notary::Key(s) => s.public(),
            Notary::Follows(k) => k,
        }
    }

    /// A consistent read view (MVCC: never blocks, never blocked by, the writer).
    pub fn snapshot(&self) -> Result<Snapshot, OpenError> {
        Snapshot::new(
            self.db.begin_read().map_err(storage("beginning a read"))?,
            &self.path,
        )
    }

    /// A handle other threads use to take snapshots of this store while it appends.
    pub fn reader(&self) -> Reader {
        Reader {
            db: Arc::clone(&self.db),
            path: self.path.clone(),
        }
    }

    /// Appends a batch without a hook.
    pub fn append(&mut self, batch: &[NewEntry]) -> Result<Receipt, AppendError> {
        self.append_with(batch, |_, _| Ok(()))
    }

    /// Appends a batch in ONE durable transaction: assigns seqs, chains, extends the tree,
    /// runs `hook` (which may write derived tables through the table interface, in the same
    /// transaction), writes one signed checkpoint, commits with fsync. Returns only after the
    /// commit; on any error nothing of the batch (or the hook's writes) is in the ledger. The
    /// hook sees the table interface only, never redb: the store's tables stay the store's.
    /// The hook's error comes back as itself, the store's as `E::from` (a failed commit is
    /// `AppendError::Commit`, after which the handle is poisoned).
    pub fn append_with<E: From<AppendError>>(
        &mut self,
        batch: &[NewEntry],
        hook: impl FnOnce(&mut RedbTables<'_>, &[Appended<'_>]) -> Result<(), E>,
    ) -> Result<Receipt, E> {
        self.append_gated(batch, |_| Ok(()), hook)
    }

    /// [`Store::append_with`] with a `gate` between computing the batch and signing it: it
    /// sees the batch's checkpoint (size, root, head: what would be signed) and entries, and
    /// may refuse. Refused, nothing is signed or written. Failover runs the commit register's
    /// swap there (issue 29): a writer signs only what the register acknowledged.
    pub fn append_gated<E: From<AppendError>>(
        &mut self,
        batch: &[NewEntry],
        gate: impl FnOnce(&Gated<'_>) -> Result<(), E>,
        hook: impl FnOnce(&mut RedbTables<'_>, &[Appended<'_>]) -> Result<(), E>,
    ) -> Result<Receipt, E> {
        self.append_entries(batch, None, gate, hook, |_, _, _| Ok(0))
    }

    /// The one append path of ordinary entries: the key chain's own kinds refused, then one
    /// durable transaction, the checkpoint signed here or `note` checked. One exception: with
    /// a `note` (the writer's batches, copied by a follower), a batch that is the writer's key
    /// rotation alone is taken as the writer took it (its checkpoint signed by the key it
    /// replaces), and the key it names is in force for the notes that follow.
    fn append_entries<E: From<AppendError>>(
        &mut self,
        batch: &[NewEntry],
        note: Option<&str>,
        gate: impl FnOnce(&Gated<'_>) -> Result<(), E>,
        hook: impl FnOnce(&mut RedbTables<'_>, &[Appended<'_>]) -> Result<(), E>,
        then: impl FnOnce(&WriteTransaction, &Tip, &str) -> Result<u64, AppendError>,
    ) -> Result<Receipt, E> {
        let rotation = match (note, batch) {
            (
                Some(_),
                [
                    NewEntry {
                        event: Event::KeyRotated(r),
                        ..
                    },
                ],
            ) => Some(self.followed_rotation(r)?),
            _ => None,
        };
        if rotation.is_none() {
            refuse_reserved(batch)?;
        }
        if self.poisoned {
            return Err(AppendError::Poisoned.into());
        }
        let txn = begin_durable_write(&self.db, self.quick_repair).map_err(AppendError::from)?;
        let receipt = self.commit_batch(
            txn,
            batch,
            note,
            gate,
            |txn, appended| {
                if let Some(next) = &rotation {
                    record_key(txn, next).map_err(E::from)?;
                }
                hook(&mut RedbTables::new(txn), appended)
            },
            then,
        )?;
        if let Some(next) = rotation {
            self.notary = Notary::Follows(Box::new(next));
        }
        Ok(receipt)
    }

    /// The key a followed rotation puts in force, once checked: a new key (not in the chain),
    /// and a node that only follows (one that signs could not sign what comes after it).
    fn followed_rotation(&self, r: &KeyRotated) -> Result<PublicKey, AppendError> {
        let next = PublicKey::from_record(&r.next)
            .map_err(|e| AppendError::BadNote(format!("the rotation's key: {e}")))?;
        if let Notary::Key(_) = self.notary {
            return Err(AppendError::RotationNotHeld(next.to_text()));
        }
        let chain = self
            .snapshot()
            .and_then(|s| s.keys_in_force())
            .map_err(|e| AppendError::KeyChain(Box::new(e)))?;
        if chain.iter().any(|k| k.bytes() == next.bytes()) {
            return Err(AppendError::KeyInChain(next.to_text()));
        }
        Ok(next)
    }

    /// [`Store::append_with`], and in the same durable transaction `next` written as the new
    /// unsigned tail, computed on the head `batch` leaves: what a standby does when a shipment
    /// shows that the register acknowledged the tail it held (issue 29). One commit, one
    /// fsync, where signing the old tail and writing the new one would take two. `keep` sees
    /// `next`'s checkpoint and encoded entries first; `next` is written only if it says so
    /// (a standby keeps a shipment only if it re-encodes to the bytes shipped). A `next` that
    /// cannot be computed or is not kept leaves no tail: `batch` is appended all the same, and
    /// the second member of the answer is `None`.
    pub fn append_then_tail<E: From<AppendError>>(
        &mut self,
        batch: &[NewEntry],
        hook: impl FnOnce(&mut RedbTables<'_>, &[Appended<'_>]) -> Result<(), E>,
        next: &[NewEntry],
        keep: impl FnOnce(&Checkpoint, &[Vec<u8>]) -> bool,
    ) -> Result<(Receipt, Option<TailWritten>), E> {
        refuse_reserved(next)?;
        let mut kept = None;
        let receipt = self.append_entries(
            batch,
            None,
            |_| Ok(()),
            hook,
            |txn, tip, origin| {
                let Ok(prepared) = prepare_on(tip, origin, next) else {
                    return Ok(0);
                };
                let entries: Vec<Vec<u8>> =
                    prepared.encoded.iter().map(|(_, b)| b.clone()).collect();
                if !keep(&prepared.checkpoint, &entries) {
                    return Ok(0);
                }
                write_tail_rows(txn, prepared.first_seq, &entries)?;
                let count = entries.len() as u64;
                kept = Some((prepared.checkpoint, entries));
                Ok(count)
            },
        )?;
        Ok((receipt, kept))
    }

    /// Appends `batch` with `note` as its checkpoint instead of signing one: what a verifying
    /// follower does with the writer's entries and signed checkpoint (issue 29). The note must
    /// be the checkpoint the batch ends with (origin, size, root, head), signed by the key in
    /// force; otherwise nothing is written ([`AppendError::BadNote`]). The key chain's own
    /// kinds are refused as by [`Store::append_with`].
    pub fn append_noted<E: From<AppendError>>(
        &mut self,
        batch: &[NewEntry],
        note: &str,
        hook: impl FnOnce(&mut RedbTables<'_>, &[Appended<'_>]) -> Result<(), E>,
    ) -> Result<Receipt, E> {
        self.append_entries(batch, Some(note), |_| Ok(()), hook, |_, _, _| Ok(0))
    }

    /// Appends a key rotation to `next`, signed off by the current key; later checkpoints are
    /// signed by `next`.
    pub fn rotate_key(
        &mut self,
        next: impl Into<Arc<Signer>>,
        reason: &str,
        recorded_at_us: i64,
    ) -> Result<Receipt, AppendError> {
        self.rotate_key_with(next, reason, recorded_at_us, |_, _| Ok(()))
    }

    /// [`Store::rotate_key`], running `hook` in the same transaction as
    /// [`Store::append_with`] does (the daemon folds the entry into its projections).
    pub fn rotate_key_with<E: From<AppendError>>(
        &mut self,
        next: impl Into<Arc<Signer>>,
        reason: &str,
        recorded_at_us: i64,
        hook: impl FnOnce(&mut RedbTables<'_>, &[Appended<'_>]) -> Result<(), E>,
    ) -> Result<Receipt, E> {
        let next: Arc<Signer> = next.into();
        // The one place every rotation passes (the daemon's and `rotate-key`'s): a key the
        // chain already holds is refused before anything is written.
        let chain = self
            .snapshot()
            .and_then(|s| s.keys_in_force())
            .map_err(|e| AppendError::KeyChain(Box::new(e)))?;
        if chain.iter().any(|k| k.bytes() == next.public().bytes()) {
            return Err(AppendError::KeyInChain(next.public().to_text()).into());
        }
        let entry = NewEntry {
            recorded_at_us,
            event: Event::KeyRotated(KeyRotated {
                next: next.public().record(),
                reason: reason.to_string(),
            }),
        };
        let public = next.public().clone();
        let receipt = self.append_checked(&[entry], |txn, appended| {
            record_key(txn, &public)?;
            hook(&mut RedbTables::new(txn), appended)
        })?;
        self.notary = Notary::Key(next);
        Ok(receipt)
    }

    fn append_checked<E: From<AppendError>>(
        &mut self,
        batch: &[NewEntry],
        hook: impl FnOnce(&WriteTransaction, &[Appended<'_>]) -> Result<(), E>,
    ) -> Result<Receipt, E> {
        if self.poisoned {
            return Err(AppendError::Poisoned.into());
        }
        let txn = begin_durable_write(&self.db, self.quick_repair).map_err(AppendError::from)?;
        self.commit_batch(txn, batch, None, |_| Ok(()), hook, |_, _, _| Ok(0))
    }

    fn commit_batch<E: From<AppendError>>(
        &mut self,
        txn: WriteTransaction,
        batch: &[NewEntry],
        note: Option<&str>,
        gate: impl FnOnce(&Gated<'_>) -> Result<(), E>,
        hook: impl FnOnce(&WriteTransaction, &[Appended<'_>]) -> Result<(), E>,
        then: impl FnOnce(&WriteTransaction, &Tip, &str) -> Result<u64, AppendError>,
    ) -> Result<Receipt, E> {
        let prepared = self.prepare_batch(batch)?;
        self.matches_tail(&txn, &prepared)?;
        gate(&Gated {
            checkpoint: &prepared.checkpoint,
            encoded: &prepared.encoded,
        })?;
        let Staged {
            tip,
            first_seq,
            appended,
            checkpoint,
            note,
        } = self.stage_batch(&txn, prepared, note)?;
        hook(&txn, &appended)?;
        let count = appended.len() as u64;
        drop(appended);
        if self.tail > 0 {
            // Signed now: the tail is the log's.
            txn.delete_table(TAIL)
                .map_err(storage("clearing the signed tail"))
                .map_err(AppendError::from)?;
        }
        let tail = then(&txn, &tip, &self.origin)?;
        if let Err(e) = txn.commit() {
            // redb may have written part of the commit; the in-memory tip is unchanged but the
            // handle must not be trusted again. The caller reopens (never retries the fsync).
            self.poisoned = true;
            return Err(AppendError::Commit(storage("committing")(e)).into());
        }
        self.tip = tip;
        self.tail = tail;
        Ok(Receipt {
            first_seq,
            count,
            checkpoint,
            note,
        })
    }

    /// With an unsigned tail pending, the batch must be exactly it (the same entry bytes).
    fn matches_tail(
        &self,
        txn: &WriteTransaction,
        prepared: &Prepared<'_>,
    ) -> Result<(), AppendError> {
        if self.tail == 0 {
            return Ok(());
        }
        if prepared.encoded.len() as u64 != self.tail {
            return Err(AppendError::TailMismatch(prepared.first_seq));
        }
        let table = txn.open_table(TAIL).map_err(storage("opening the tail"))?;
        for (i, (_, bytes)) in prepared.encoded.iter().enumerate() {
            let seq = prepared.first_seq + i as u64;
            let stored = table.get(seq).map_err(storage("reading the tail"))?;
            if stored.as_ref().map(|v| v.value()) != Some(bytes.as_slice()) {
                return Err(AppendError::TailMismatch(seq));
            }
        }
        Ok(())
    }

    /// Writes `batch` as the unsigned tail, durably (issue 29): computed as an append would
    /// (seqs, chain, the checkpoint it would end with), stored beside the log, not in it. The
    /// log, its readers and its size are unchanged; the next append must be this same batch
    /// (then it is signed and becomes the log's), unless the tail is set aside. Returns the
    /// unsigned checkpoint: what the commit register is asked to acknowledge.
    pub fn write_tail(&mut self, batch: &[NewEntry]) -> Result<Checkpoint, AppendError> {
        self.write_tail_entries(batch).map(|(cp, _)| cp)
    }

    /// [`Store::write_tail`], also giving the entries as encoded (what a writer ships to its
    /// standbys, FORMAT §9g).
    pub fn write_tail_entries(
        &mut self,
        batch: &[NewEntry],
    ) -> Result<(Checkpoint, Vec<Vec<u8>>), AppendError> {
        self.write_tail_with(batch, |_, _| ())
            .map(|(cp, entries, ())| (cp, entries))
    }

    /// [`Store::write_tail_entries`], calling `meanwhile` with the checkpoint and the encoded
    /// entries once they are computed and before the tail's durable commit: a writer starts
    /// shipping the batch to its standbys while its own copy syncs (issue 29). What it
    /// returns is handed back.
    pub fn write_tail_with<R>(
        &mut self,
        batch: &[NewEntry],
        meanwhile: impl FnOnce(&Checkpoint, &[Vec<u8>]) -> R,
    ) -> Result<(Checkpoint, Vec<Vec<u8>>, R), AppendError> {
        refuse_reserved(batch)?;
        if self.poisoned {
            return Err(AppendError::Poisoned);
        }
        if self.tail > 0 {
            return Err(AppendError::TailPending(self.tail));
        }
        let prepared = self.prepare_batch(batch)?;
        let entries: Vec<Vec<u8>> = prepared.encoded.iter().map(|(_, b)| b.clone()).collect();
        let started = meanwhile(&prepared.checkpoint, &entries);
        let txn = begin_durable_write(&self.db, self.quick_repair)?;
        write_tail_rows(&txn, prepared.first_seq, &entries)?;
        if let Err(e) = txn.commit() {
            self.poisoned = true;
            return Err(AppendError::Commit(storage("committing the tail")(e)));
        }
        self.tail = prepared.encoded.len() as u64;
        Ok((prepared.checkpoint, entries, started))
    }

    /// The unsigned tail's entries (seq, encoded bytes), if one is pending.
    pub fn tail(&self) -> Result<Vec<(u64, Vec<u8>)>, StorageError> {
        if self.tail == 0 {
            return Ok(Vec::new());
        }
        let read = self.db.begin_read().map_err(storage("beginning a read"))?;
        let table = read.open_table(TAIL).map_err(storage("opening the tail"))?;
        let mut out = Vec::new();
        for row in table.iter().map_err(storage("reading the tail"))? {
            let (k, v) = row.map_err(storage("reading the tail"))?;
            out.push((k.value(), v.value().to_vec()));
        }
        Ok(out)
    }

    /// The unsigned tail as the batch it was written from (decoded from its entries), and
    /// the checkpoint appending it would sign: what a writer restarting, or a standby taking
    /// over, compares with the commit register to know whether the tail was acknowledged.
    pub fn tail_batch(&self) -> Result<Option<(Vec<NewEntry>, Checkpoint)>, AppendError> {
        let rows = self.tail()?;
        if rows.is_empty() {
            return Ok(None);
        }
        let mut batch = Vec::with_capacity(rows.len());
        for (seq, bytes) in &rows {
            let bad = |why: String| AppendError::Invariant(format!("tail entry {seq}: {why}"));
            let entry = EntryRef::parse(bytes).map_err(|e| bad(e.to_string()))?;
            let event =
                Event::decode(entry.header.kind, entry.payload).map_err(|e| bad(e.to_string()))?;
            batch.push(NewEntry {
                recorded_at_us: entry.header.recorded_at_us,
                event,
            });
        }
        let prepared = self.prepare_batch(&batch)?;
        // Re-encoding must give the bytes written, or the tail is not this store's.
        for ((seq, written), (_, again)) in rows.iter().zip(&prepared.encoded) {
            if written != again {
                return Err(AppendError::TailMismatch(*seq));
            }
        }
        let checkpoint = prepared.checkpoint;
        Ok(Some((batch, checkpoint)))
    }

    /// The Merkle root of the log (its latest checkpoint's).
    pub fn root(&self) -> Hash {
        self.tip.frontier.root()
    }

    /// Removes the unsigned tail, after the caller kept its entries (for forensics: a tail
    /// the register never acknowledged is moved aside, never silently dropped). Returns how
    /// many entries it held.
    pub fn drop_tail(&mut self) -> Result<u64, AppendError> {
        if self.tail == 0 {
            return Ok(0);
        }
        if self.poisoned {
            return Err(AppendError::Poisoned);
        }
        let txn = begin_durable_write(&self.db, self.quick_repair)?;
        txn.delete_table(TAIL)
            .map_err(storage("clearing the tail"))?;
        if let Err(e) = txn.commit() {
            self.poisoned = true;
            return Err(AppendError::Commit(storage("committing")(e)));
        }
        Ok(std::mem::take(&mut self.tail))
    }

    /// Computes `batch` on a copy of the tip: seqs, chain, tree nodes, and the checkpoint it
    /// ends with (unsigned). Nothing is written and the store's tip is not touched.
    fn prepare_batch<'b>(&self, batch: &'b [NewEntry]) -> Result<Prepared<'b>, AppendError> {
        prepare_on(&self.tip, &self.origin, batch)
    }

    /// Signs a prepared batch's checkpoint and writes the batch into the log table of `txn`
    /// (not committed), read back and checked. The store's tip is not touched.
    fn stage_batch<'b>(
        &self,
        txn: &WriteTransaction,
        prepared: Prepared<'b>,
        given: Option<&str>,
    ) -> Result<Staged<'b>, AppendError> {
        let Prepared {
            tip,
            first_seq,
            appended,
            encoded,
            checkpoint,
        } = prepared;
        let note = match (given, &self.notary) {
            (Some(note), _) => {
                let verified = crate::checkpoint::verify_note(note.as_bytes(), self.public_key())
                    .map_err(|e| AppendError::BadNote(e.to_string()))?;
                if *verified.checkpoint() != checkpoint {
                    return Err(AppendError::BadNote(format!(
                        "it is of size {}, root {}, not the batch's (size {}, root {})",
                        verified.checkpoint().size,
                        verified.checkpoint().root.to_base64(),
                        checkpoint.size,
                        checkpoint.root.to_base64()
                    )));
                }
                note.to_string()
            }
            (None, Notary::Key(signer)) => checkpoint.sign(signer),
            (None, Notary::Follows(_)) => return Err(AppendError::NoKey),
        };
        {
            let mut log = txn.open_table(LOG).map_err(storage("opening the log"))?;
            let last = encoded.len() - 1;
            for (i, (nodes, bytes)) in encoded.iter().enumerate() {
                let cp = (i == last).then_some(note.as_bytes());
                log.insert(
                    first_seq + i as u64,
                    Row::encode(nodes, cp, bytes).as_slice(),
                )
                .map_err(storage("inserting an entry"))?;
            }
            // Read back the last row written and re-check its hash, link and checkpoint (kept
            // in release: a wrong answer here would corrupt the ledger for good).
            let back = log
                .get(tip.frontier.size() - 1)
                .map_err(storage("reading back"))?
                .ok_or_else(|| AppendError::Invariant("last entry missing on read-back".into()))?;
            let row = Row::parse(back.value())
                .ok_or_else(|| AppendError::Invariant("row read back is malformed".into()))?;
            if leaf_hash(row.entry()) != tip.head || row.checkpoint() != Some(note.as_bytes()) {
                return Err(AppendError::Invariant(
                    "row read back does not hash to the head or lacks its checkpoint".into(),
                ));
            }
            let parsed = EntryRef::parse(row.entry())
                .map_err(|e| AppendError::Invariant(format!("entry read back: {e}")))?;
            let expected_prev = match appended.len() {
                1 => self.tip.head,
                n => appended[n - 2].hash,
            };
            if parsed.header.prev_hash != expected_prev {
                return Err(AppendError::Invariant(
                    "entry read back does not link to its predecessor".into(),
                ));
            }
        }
        Ok(Staged {
            tip,
            first_seq,
            appended,
            checkpoint,
            note,
        })
    }
}

/// Refuses a batch holding the key chain's own kinds: the store writes them itself
/// (`create`, `rotate_key`).
fn refuse_reserved(batch: &[NewEntry]) -> Result<(), AppendError> {
    match batch
        .iter()
        .map(|e| e.event.kind())
        .find(|k| matches!(*k, Kind::Genesis | Kind::KeyRotated))
    {
        Some(kind) => Err(AppendError::ReservedKind(kind.name())),
        None => Ok(()),
    }
}

/// Writes `entries` (encoded) as the unsigned tail's rows from `first_seq` on, in `txn`.
fn write_tail_rows(
    txn: &WriteTransaction,
    first_seq: u64,
    entries: &[Vec<u8>],
) -> Result<(), AppendError> {
    let mut table = txn.open_table(TAIL).map_err(storage("opening the tail"))?;
    for (i, bytes) in entries.iter().enumerate() {
        table
            .insert(first_seq + i as u64, bytes.as_slice())
            .map_err(storage("writing the tail"))?;
    }
    Ok(())
}

/// Adds `key` to the key chain recorded in `txn` (`ledger.meta` `keys`, one key a line).
fn record_key(txn: &WriteTransaction, key: &PublicKey) -> Result<(), AppendError> {
    let chain = |e: redb::Error| AppendError::from(storage("recording the key chain")(e));
    let mut meta = txn.open_table(META).map_err(|e| chain(e.into()))?;
    let mut keys = meta
        .get("keys")
        .map_err(|e| chain(e.into()))?
        .map(|v| v.value().to_vec())
        .unwrap_or_default();
    keys.extend_from_slice(format!("{}\n", key.to_text()).as_bytes());
    meta.insert("keys", keys.as_slice())
        .map_err(|e| chain(e.into()))?;
    Ok(())
}

/// Computes `batch` on a copy of `on` (a store's tip, or the tip a batch staged in the same
/// transaction leaves): seqs, chain, tree nodes, and the checkpoint it ends with (unsigned).
fn prepare_on<'b>(
    on: &Tip,
    origin: &str,
    batch: &'b [NewEntry],
) -> Result<Prepared<'b>, AppendError> {
    if batch.is_empty() {
        return Err(AppendError::Empty);
    }
    if batch.len() > BATCH_ENTRIES_MAX {
        return Err(AppendError::TooLarge(batch.len()));
    }
    // Work on a copy of the tip: it replaces the real one only after the commit.
    let mut tip = on.clone();
    let first_seq = tip.frontier.size();
    let mut appended = Vec::with_capacity(batch.len());
    // (completed tree nodes, entry bytes) per entry, encoded before anything is written.
    let mut encoded: Vec<(Vec<Hash>, Vec<u8>)> = Vec::with_capacity(batch.len());
    for new in batch {
        if new.recorded_at_us < tip.last_time {
            return Err(AppendError::TimeRegression {
                last: tip.last_time,
                found: new.recorded_at_us,
            });
        }
        let payload = new.event.encode_payload();
        if payload.len() > PAYLOAD_BYTES_MAX {
            return Err(AppendError::PayloadTooLarge {
                kind: new.event.kind().name(),
                bytes: payload.len(),
            });
        }
        let seq = tip.frontier.size();
        let bytes = entry::encode(
            tip.frontier.tree().version(),
            seq,
            new.recorded_at_us,
            new.event.kind(),
            &tip.head,
            &payload,
        );
        let hash = leaf_hash(&bytes);
        let mut nodes = Vec::new();
        let leaf = tip.frontier.tree().leaf(&bytes);
        tip.frontier.push(leaf, |_, _, node| nodes.push(*node));
        tip.head = hash;
        tip.last_time = new.recorded_at_us;
        appended.push(Appended {
            seq,
            recorded_at_us: new.recorded_at_us,
            hash,
            event: &new.event,
        });
        encoded.push((nodes, bytes));
    }
    let checkpoint = Checkpoint {
        origin: origin.to_string(),
        size: tip.frontier.size(),
        root: tip.frontier.root(),
        head: tip.head,
    };
    Ok(Prepared {
        tip,
        first_seq,
        appended,
        encoded,
        checkpoint,
    })
}

/// A batch written as the unsigned tail: the checkpoint it ends with (unsigned) and its
/// entries as encoded.
pub type TailWritten = (Checkpoint, Vec<Vec<u8>>);

/// A batch computed, not yet signed or written.
struct Prepared<'b> {
    tip: Tip,
    first_seq: u64,
    appended: Vec<Appended<'b>>,
    /// (completed tree nodes, entry bytes) per entry.
    encoded: Vec<(Vec<Hash>, Vec<u8>)>,
    checkpoint: Checkpoint,
}

/// What [`Store::append_gated`]'s gate sees of a batch before it is signed.
#[derive(Debug)]
pub struct Gated<'a> {
    /// The checkpoint the batch ends with, as it would be signed (origin, size, root, head).
    pub checkpoint: &'a Checkpoint,
    encoded: &'a [(Vec<Hash>, Vec<u8>)],
}

impl Gated<'_> {
    /// The batch's entries, encoded, in order.
    pub fn entries(&self) -> impl Iterator<Item = &[u8]> {
        self.encoded.iter().map(|(_, bytes)| bytes.as_slice())
    }
}

/// A batch written into a transaction, waiting for its hook and commit.
struct Staged<'b> {
    tip: Tip,
    first_seq: u64,
    appended: Vec<Appended<'b>>,
    checkpoint: Checkpoint,
    note: String,
}

impl Store {
    /// Writes derived tables in one durable transaction without appending (catching up a
    /// projection on open). `f`'s error comes back as itself, the store's as `E::from`; a
    /// failed commit poisons the handle, as an append's does.
    pub fn write_tables<E: From<AppendError>>(
        &mut self,
        f: impl FnOnce(&mut RedbTables<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        if self.poisoned {
            return Err(AppendError::Poisoned.into());
        }
        write_tables_in(&self.db, self.quick_repair, f).map_err(|w| {
            self.poisoned |= matches!(w, Written::CommitFailed(_));
            w.into_inner()
        })
    }
}
