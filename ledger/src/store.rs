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

use std::error::Error as StdError;
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{
    Database, Durability, ReadOnlyDatabase, ReadOnlyTable, ReadTransaction, ReadableDatabase,
    ReadableTable, ReadableTableMetadata, TableDefinition, WriteTransaction,
};
use thiserror::Error;

use crate::bundle::BundleWriter;
use crate::checkpoint::{Checkpoint, NOTE_BYTES_MAX, check_origin, parse_note};
use crate::entry::{self, EntryRef, PAYLOAD_BYTES_MAX};
use crate::event::{Event, Genesis, KeyRotated, Kind};
use crate::hash::{HASH_BYTES, Hash, leaf_hash};
use crate::keys::{PublicKey, Signer};
use crate::merkle::{self, Frontier, NodeSource, ProofRequestError};
use crate::proof::{ConsistencyProof, InclusionProof};
use crate::verify::{Failure, Location, VerifiedLog, Verifier, VerifyError};

const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("ledger.log");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("ledger.meta");

/// Version of the table layout above, stored in `ledger.meta/format`.
pub const STORE_FORMAT: u8 = 1;
/// Most entries one append may carry.
pub const BATCH_ENTRIES_MAX: usize = 100_000;
/// redb's page cache per open database. redb defaults to 1 GiB, which a full scan (verify,
/// export) fills: 64 MiB keeps a reader's memory flat on any log size, and appends only ever
/// touch the right edge of the B-tree.
pub const CACHE_BYTES: usize = 64 << 20;

/// One `ledger.log` value:
///
/// ```text
/// u8    node count t (levels 1..=t completed by this leaf; at most 63)
/// t×32  node hashes, level 1 first
/// u32be checkpoint note length c (0: this entry does not end a batch)
/// c     signed checkpoint note of size seq + 1
/// rest  the stored entry bytes
/// ```
#[derive(Clone, Copy, Debug)]
pub struct Row<'a> {
    nodes: &'a [u8],
    checkpoint: Option<&'a [u8]>,
    entry: &'a [u8],
}

impl<'a> Row<'a> {
    fn encode(nodes: &[Hash], checkpoint: Option<&[u8]>, entry: &[u8]) -> Vec<u8> {
        let c = checkpoint.unwrap_or_default();
        let mut v = Vec::with_capacity(1 + nodes.len() * HASH_BYTES + 4 + c.len() + entry.len());
        v.push(nodes.len() as u8);
        for n in nodes {
            v.extend_from_slice(&n.0);
        }
        v.extend_from_slice(&(c.len() as u32).to_be_bytes());
        v.extend_from_slice(c);
        v.extend_from_slice(entry);
        v
    }

    /// Splits a stored row; `None` if it is malformed.
    fn parse(v: &'a [u8]) -> Option<Row<'a>> {
        let t = usize::from(*v.first()?);
        if t > 63 {
            return None;
        }
        let nodes = v.get(1..1 + t * HASH_BYTES)?;
        let at = 1 + t * HASH_BYTES;
        let c = u32::from_be_bytes(v.get(at..at + 4)?.try_into().ok()?) as usize;
        if c > NOTE_BYTES_MAX {
            return None;
        }
        let checkpoint = v.get(at + 4..at + 4 + c)?;
        Some(Row {
            nodes,
            checkpoint: (c > 0).then_some(checkpoint),
            entry: v.get(at + 4 + c..)?,
        })
    }

    /// The stored entry bytes.
    pub fn entry(&self) -> &'a [u8] {
        self.entry
    }

    /// The checkpoint note ending at this entry, if its batch ended here.
    pub fn checkpoint(&self) -> Option<&'a [u8]> {
        self.checkpoint
    }

    fn node(&self, level: u8) -> Option<Hash> {
        let at = (usize::from(level) - 1) * HASH_BYTES;
        Some(Hash(self.nodes.get(at..at + HASH_BYTES)?.try_into().ok()?))
    }
}

/// A redb failure, with the operation that hit it.
#[derive(Debug, Error)]
#[error("storage error while {doing}: {source}")]
pub struct StorageError {
    doing: &'static str,
    source: redb::Error,
}

fn storage<E: Into<redb::Error>>(doing: &'static str) -> impl FnOnce(E) -> StorageError {
    move |e| StorageError {
        doing,
        source: e.into(),
    }
}

/// Why a new ledger could not be created.
#[derive(Debug, Error)]
pub enum CreateError {
    /// The path exists already.
    #[error("{0} already exists: refusing to create a ledger over it")]
    Exists(PathBuf),
    /// Bad origin.
    #[error(transparent)]
    Origin(#[from] crate::checkpoint::BadOrigin),
    /// Storage failure.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// Writing genesis failed.
    #[error("writing the genesis entry failed: {0}")]
    Genesis(Box<AppendError>),
}

/// Why an existing ledger could not be opened. Never repaired silently.
#[derive(Debug, Error)]
pub enum OpenError {
    /// No file.
    #[error("{0} does not exist")]
    Missing(PathBuf),
    /// Not a redb file, or a corrupt one.
    #[error("{path} is not a readable ledger database: {reason}")]
    NotADatabase {
        /// File.
        path: PathBuf,
        /// redb's reason (in the message, not a separate cause: printed once).
        reason: redb::DatabaseError,
    },
    /// Another process holds the file for writing (a running daemon, a `rebuild`), or a
    /// private recovery holds it (see [`ReadOnlyStore::open`]).
    #[error(
        "{path} is open for writing by another process (a running daemon?); stop it first, or use a read-only command"
    )]
    InUse {
        /// File.
        path: PathBuf,
    },
    /// A redb database, but not a fleet-ledger one (or from an unknown format).
    #[error("{path} is not a fleet-ledger store: {reason}")]
    Foreign {
        /// File.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Head, tree and latest checkpoint disagree.
    #[error("{path}: head, tree and latest checkpoint disagree: {reason}")]
    Inconsistent {
        /// File.
        path: PathBuf,
        /// What disagrees.
        reason: String,
    },
    /// The signing key given is not the key in force.
    #[error("the signing key {given} is not the key in force {in_force}")]
    WrongKey {
        /// `name+id` given.
        given: String,
        /// `name+id` in force.
        in_force: String,
    },
    /// Storage failure.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Why an append failed. The ledger is unchanged in every case.
#[derive(Debug, Error)]
pub enum AppendError {
    /// Nothing to append.
    #[error("empty batch")]
    Empty,
    /// Too many entries.
    #[error("batch of {0} entries exceeds the limit of {BATCH_ENTRIES_MAX}")]
    TooLarge(usize),
    /// Genesis and key rotations have dedicated operations.
    #[error("kind {0} is written only by the store itself")]
    ReservedKind(&'static str),
    /// Payload over the entry limit.
    #[error(
        "event of kind {kind} encodes to {bytes} bytes, over the {PAYLOAD_BYTES_MAX}-byte limit"
    )]
    PayloadTooLarge {
        /// Kind name.
        kind: &'static str,
        /// Encoded size.
        bytes: usize,
    },
    /// CP time before the previous entry's.
    #[error("recorded time {found} µs is before the log's last time {last} µs")]
    TimeRegression {
        /// Last recorded time.
        last: i64,
        /// Offending time.
        found: i64,
    },
    /// The caller's hook refused the batch.
    #[error("append hook failed: {0}")]
    Hook(Box<dyn StdError + Send + Sync>),
    /// Storage failure before commit.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The commit failed. The store is poisoned: reopen it (never retry an fsync).
    #[error("commit failed, store poisoned (reopen it): {0}")]
    Commit(StorageError),
    /// A previous commit failed; this handle refuses further appends.
    #[error("store is poisoned by an earlier failed commit: reopen it")]
    Poisoned,
    /// A hot invariant failed on read-back. Nothing was committed.
    #[error("invariant violated, nothing committed: {0}")]
    Invariant(String),
}

/// An event to append, with the CP time the writer decided it at.
#[derive(Clone, Debug)]
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

/// The single writer.
#[derive(Debug)]
pub struct Store {
    // Shared with [`Reader`]s: redb allows one `Database` per file and process, and its read
    // transactions are MVCC, so readers on other threads never block the writer.
    db: Arc<Database>,
    path: PathBuf,
    origin: String,
    /// Shared, not copied, with whoever reopens the store after a failed commit (`Signer` is
    /// deliberately not `Clone`: the key material exists once).
    signer: Arc<Signer>,
    tip: Tip,
    poisoned: bool,
}

fn begin_durable_write(db: &Database) -> Result<WriteTransaction, StorageError> {
    let mut txn = db.begin_write().map_err(storage("beginning a write"))?;
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
            reason,
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

/// Runs `f` on the table interface in one durable transaction and commits it.
fn write_tables_in(
    db: &Database,
    f: impl FnOnce(&mut RedbTables<'_>) -> Result<(), crate::tables::TableError>,
) -> Result<(), AppendError> {
    let txn = begin_durable_write(db)?;
    {
        let mut tables = RedbTables::new(&txn);
        f(&mut tables).map_err(|e| AppendError::Hook(Box::new(e)))?;
    }
    txn.commit()
        .map_err(|e| AppendError::Commit(storage("committing")(e)))
}

impl Store {
    /// Creates a new ledger at `path` with a genesis entry naming `origin` and `signer`'s key.
    pub fn create(
        path: &Path,
        origin: &str,
        signer: Signer,
        recorded_at_us: i64,
    ) -> Result<Store, CreateError> {
        check_origin(origin)?;
        if path.exists() {
            return Err(CreateError::Exists(path.to_path_buf()));
        }
        let db = builder()
            .create(path)
            .map_err(storage("creating the database"))?;
        Store::create_in(db, path, origin, signer, recorded_at_us)
    }

    /// [`Store::create`] on a storage backend instead of a file (fault-injection tests, and
    /// any storage redb can be given); `label` names it in errors.
    pub fn create_with_backend(
        backend: impl redb::StorageBackend,
        label: &Path,
        origin: &str,
        signer: Signer,
        recorded_at_us: i64,
    ) -> Result<Store, CreateError> {
        check_origin(origin)?;
        let db = backend_builder()
            .create_with_backend(backend)
            .map_err(storage("creating the database"))?;
        Store::create_in(db, label, origin, signer, recorded_at_us)
    }

    fn create_in(
        db: Database,
        path: &Path,
        origin: &str,
        signer: Signer,
        recorded_at_us: i64,
    ) -> Result<Store, CreateError> {
        let txn = begin_durable_write(&db)?;
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
                frontier: Frontier::new(),
            },
            poisoned: false,
            signer: Arc::new(signer),
        };
        let genesis = Event::Genesis(Genesis {
            origin: origin.to_string(),
            key: store.signer.public().record(),
        });
        store
            .commit_batch(
                txn,
                &[NewEntry {
                    recorded_at_us,
                    event: genesis,
                }],
                |_, _| Ok::<(), std::convert::Infallible>(()),
            )
            .map_err(|e| CreateError::Genesis(Box::new(e)))?;
        Ok(store)
    }

    /// Opens an existing ledger for appending, checking that head, tree and latest checkpoint
    /// agree and that `signer` holds the key in force.
    pub fn open(path: &Path, signer: impl Into<Arc<Signer>>) -> Result<Store, OpenError> {
        Store::open_in(open_rw(path)?, path, signer.into())
    }

    /// [`Store::open`] on a storage backend instead of a file; `label` names it in errors.
    pub fn open_with_backend(
        backend: impl redb::StorageBackend,
        label: &Path,
        signer: impl Into<Arc<Signer>>,
    ) -> Result<Store, OpenError> {
        let db = backend_builder()
            .create_with_backend(backend)
            .map_err(not_a_database(label))?;
        Store::open_in(db, label, signer.into())
    }

    fn open_in(db: Database, path: &Path, signer: Arc<Signer>) -> Result<Store, OpenError> {
        let snap = Snapshot::new(db.begin_read().map_err(storage("beginning a read"))?, path)?;
        let tip = snap.check_tip(path)?;
        let in_force = snap
            .keys_in_force()?
            .pop()
            .expect("at least the genesis key");
        if in_force != *signer.public() {
            return Err(OpenError::WrongKey {
                given: format!("{}+{:08x}", signer.public().name(), signer.public().id()),
                in_force: format!("{}+{:08x}", in_force.name(), in_force.id()),
            });
        }
        let origin = snap.origin.clone();
        drop(snap);
        Ok(Store {
            db: Arc::new(db),
            path: path.to_path_buf(),
            origin,
            signer,
            tip,
            poisoned: false,
        })
    }

    /// The signing key, shared (to reopen the store after a failed commit with the same key).
    pub fn signer(&self) -> Arc<Signer> {
        Arc::clone(&self.signer)
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
        self.signer.public()
    }

    /// The underlying database, for callers (projections) that keep their own tables in it.
    pub fn database(&self) -> &Database {
        &self.db
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
        self.append_with(batch, |_, _| Ok::<(), std::convert::Infallible>(()))
    }

    /// Appends a batch in ONE durable transaction: assigns seqs, chains, extends the tree,
    /// runs `hook` (which may write derived tables through the table interface, in the same
    /// transaction), writes one signed checkpoint, commits with fsync. Returns only after the
    /// commit; on any error nothing of the batch (or the hook's writes) is in the ledger. The
    /// hook sees the table interface only, never redb: the store's tables stay the store's.
    pub fn append_with<E>(
        &mut self,
        batch: &[NewEntry],
        hook: impl FnOnce(&mut RedbTables<'_>, &[Appended<'_>]) -> Result<(), E>,
    ) -> Result<Receipt, AppendError>
    where
        E: Into<Box<dyn StdError + Send + Sync>>,
    {
        if let Some(e) = batch.iter().find_map(|e| match e.event.kind() {
            Kind::Genesis | Kind::KeyRotated => Some(e.event.kind().name()),
            _ => None,
        }) {
            return Err(AppendError::ReservedKind(e));
        }
        self.append_checked(batch, |txn, appended| {
            hook(&mut RedbTables::new(txn), appended)
        })
    }

    /// Appends a key rotation to `next`, signed off by the current key; later checkpoints are
    /// signed by `next`.
    pub fn rotate_key(
        &mut self,
        next: Signer,
        reason: &str,
        recorded_at_us: i64,
    ) -> Result<Receipt, AppendError> {
        let entry = NewEntry {
            recorded_at_us,
            event: Event::KeyRotated(KeyRotated {
                next: next.public().record(),
                reason: reason.to_string(),
            }),
        };
        let line = format!("{}\n", next.public().to_text());
        let receipt = self.append_checked(&[entry], |txn, _| {
            let mut meta = txn.open_table(META)?;
            let mut keys = meta
                .get("keys")?
                .map(|v| v.value().to_vec())
                .unwrap_or_default();
            keys.extend_from_slice(line.as_bytes());
            meta.insert("keys", keys.as_slice())?;
            Ok::<(), redb::Error>(())
        })?;
        self.signer = Arc::new(next);
        Ok(receipt)
    }

    fn append_checked<E>(
        &mut self,
        batch: &[NewEntry],
        hook: impl FnOnce(&WriteTransaction, &[Appended<'_>]) -> Result<(), E>,
    ) -> Result<Receipt, AppendError>
    where
        E: Into<Box<dyn StdError + Send + Sync>>,
    {
        if self.poisoned {
            return Err(AppendError::Poisoned);
        }
        let txn = begin_durable_write(&self.db)?;
        self.commit_batch(txn, batch, hook)
    }

    fn commit_batch<E>(
        &mut self,
        txn: WriteTransaction,
        batch: &[NewEntry],
        hook: impl FnOnce(&WriteTransaction, &[Appended<'_>]) -> Result<(), E>,
    ) -> Result<Receipt, AppendError>
    where
        E: Into<Box<dyn StdError + Send + Sync>>,
    {
        if batch.is_empty() {
            return Err(AppendError::Empty);
        }
        if batch.len() > BATCH_ENTRIES_MAX {
            return Err(AppendError::TooLarge(batch.len()));
        }
        // Work on a copy of the tip: it replaces the real one only after the commit.
        let mut tip = self.tip.clone();
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
                seq,
                new.recorded_at_us,
                new.event.kind(),
                &tip.head,
                &payload,
            );
            let hash = leaf_hash(&bytes);
            let mut nodes = Vec::new();
            tip.frontier.push(hash, |_, _, node| nodes.push(*node));
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
            origin: self.origin.clone(),
            size: tip.frontier.size(),
            root: tip.frontier.root(),
            head: tip.head,
        };
        let note = checkpoint.sign(&self.signer);
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
        hook(&txn, &appended).map_err(|e| AppendError::Hook(e.into()))?;
        let count = appended.len() as u64;
        drop(appended);
        if let Err(e) = txn.commit() {
            // redb may have written part of the commit; the in-memory tip is unchanged but the
            // handle must not be trusted again. The caller reopens (never retries the fsync).
            self.poisoned = true;
            return Err(AppendError::Commit(storage("committing")(e)));
        }
        self.tip = tip;
        Ok(Receipt {
            first_seq,
            count,
            checkpoint,
            note,
        })
    }
}

/// Snapshots of a [`Store`] that is open for appending in this process (the daemon's API
/// threads): cheap to clone, MVCC, never blocks the writer. A snapshot sees only committed,
/// durable batches.
#[derive(Clone)]
pub struct Reader {
    db: Arc<Database>,
    path: PathBuf,
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Reader({})", self.path.display())
    }
}

impl Reader {
    /// A consistent read view of the last committed batch.
    pub fn snapshot(&self) -> Result<Snapshot, OpenError> {
        Snapshot::new(
            self.db.begin_read().map_err(storage("beginning a read"))?,
            &self.path,
        )
    }
}

/// A read-only handle, for verify, export, proofs and forensics: it never writes the file, and
/// reads beside a running daemon ([`ReadOnlyStore::open_with`]).
pub struct ReadOnlyStore {
    db: ReadHandle,
    mode: ReadMode,
    path: PathBuf,
}

impl std::fmt::Debug for ReadOnlyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ReadOnlyStore({})", self.path.display())
    }
}

/// How a [`ReadOnlyStore`] reads its file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadMode {
    /// No process was writing the file: it was opened through a private layer (writes stay in
    /// memory), after redb's crash recovery if the file was not closed cleanly, and after its
    /// integrity check (every page's checksum) if one was asked for.
    Private {
        /// The file was not closed cleanly: recovered in memory, the file left as it was.
        recovered: bool,
        /// Every page's checksum was verified.
        checked: bool,
    },
    /// A writer (the daemon) has the file open: committed snapshots are read beside it.
    BesideWriter,
}

enum ReadHandle {
    Private(Arc<Database>),
    Shared(ReadOnlyDatabase),
}

impl ReadOnlyStore {
    /// Opens a ledger without ever writing its file.
    ///
    /// * If a daemon has it open, reads its committed snapshots beside it (redb's single-writer
    ///   mode): a read transaction sees one commit, whole, and the writer never reuses the
    ///   pages it reads.
    /// * Otherwise opens it through a private in-memory layer ([`crate::overlay`]), so that a
    ///   file not closed cleanly (a crash, a SIGKILL) is recovered in memory, and with `check`
    ///   redb's integrity check verifies every page's checksum first, so a damaged file is an
    ///   error, not a panic deep inside a read.
    pub fn open_with(path: &Path, check: bool) -> Result<ReadOnlyStore, OpenError> {
        if !path.exists() {
            return Err(OpenError::Missing(path.to_path_buf()));
        }
        // Whether redb will have to recover the file: a read-only open refuses to.
        let recovered = match builder().open_read_only(path) {
            Ok(_) => false,
            Err(redb::DatabaseError::RepairAborted) => true,
            Err(e) => return Err(not_a_database(path)(e)),
        };
        let file = std::fs::File::open(path).map_err(|e| OpenError::NotADatabase {
            path: path.to_path_buf(),
            reason: e.into(),
        })?;
        let overlay = crate::overlay::Overlay::new(file).map_err(|e| OpenError::NotADatabase {
            path: path.to_path_buf(),
            reason: e.into(),
        })?;
        let mut b = builder();
        b.set_check_integrity_on_open(check);
        let (db, mode) = match b.create_with_backend(overlay) {
            Ok(db) => (
                ReadHandle::Private(Arc::new(db)),
                ReadMode::Private {
                    recovered,
                    checked: check,
                },
            ),
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => {
                let db = builder()
                    .open_read_only(path)
                    .map_err(not_a_database(path))?;
                (ReadHandle::Shared(db), ReadMode::BesideWriter)
            }
            Err(source) => return Err(not_a_database(path)(source)),
        };
        Ok(ReadOnlyStore {
            db,
            mode,
            path: path.to_path_buf(),
        })
    }

    /// [`ReadOnlyStore::open_with`] without the integrity check.
    pub fn open(path: &Path) -> Result<ReadOnlyStore, OpenError> {
        ReadOnlyStore::open_with(path, false)
    }

    /// How the file is being read.
    pub fn mode(&self) -> ReadMode {
        self.mode
    }

    /// A consistent read view.
    pub fn snapshot(&self) -> Result<Snapshot, OpenError> {
        match &self.db {
            ReadHandle::Private(db) => {
                let txn = db.begin_read().map_err(storage("beginning a read"))?;
                let mut snap = Snapshot::new(txn, &self.path)?;
                snap._db = Some(Arc::clone(db));
                Ok(snap)
            }
            ReadHandle::Shared(db) => Snapshot::new(
                db.begin_read().map_err(storage("beginning a read"))?,
                &self.path,
            ),
        }
    }
}

/// Why a proof could not be produced.
#[derive(Debug, Error)]
pub enum ProofError {
    /// Out of range, or shrinking.
    #[error(transparent)]
    Request(#[from] ProofRequestError),
    /// Proofs are relative to signed checkpoints; there is none at this size.
    #[error(
        "no checkpoint at tree size {size}; nearest checkpoint sizes: {below:?} below, {above:?} above"
    )]
    NoCheckpoint {
        /// Requested size.
        size: u64,
        /// Largest checkpoint size below.
        below: Option<u64>,
        /// Smallest checkpoint size above.
        above: Option<u64>,
    },
    /// Read failure.
    #[error(transparent)]
    Open(#[from] OpenError),
}

/// A consistent view of the ledger at one moment.
pub struct Snapshot {
    path: PathBuf,
    origin: String,
    size: u64,
    log: ReadOnlyTable<u64, &'static [u8]>,
    meta: ReadOnlyTable<&'static str, &'static [u8]>,
    _txn: ReadTransaction,
    /// A private database ([`ReadOnlyStore::open_with`]) closes when dropped, ending its read
    /// transactions: a snapshot keeps it open, as a read-only database's snapshots do.
    _db: Option<Arc<Database>>,
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Snapshot({}, size {})", self.path.display(), self.size)
    }
}

fn foreign(path: &Path, reason: impl Into<String>) -> OpenError {
    OpenError::Foreign {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

fn inconsistent(path: &Path, reason: impl Into<String>) -> OpenError {
    OpenError::Inconsistent {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Rows a nearest-checkpoint search looks at before giving up (a batch is at most this long).
const CHECKPOINT_SEARCH_ROWS_MAX: usize = BATCH_ENTRIES_MAX;

impl Snapshot {
    fn new(txn: ReadTransaction, path: &Path) -> Result<Snapshot, OpenError> {
        let table_err = |e: redb::TableError| match e {
            redb::TableError::TableDoesNotExist(name) => {
                foreign(path, format!("table {name} is missing"))
            }
            other => OpenError::Storage(storage("opening a table")(other)),
        };
        let meta = txn.open_table(META).map_err(table_err)?;
        let format = meta
            .get("format")
            .map_err(storage("reading meta"))?
            .map(|v| v.value().to_vec());
        if format.as_deref() != Some(&[STORE_FORMAT][..]) {
            return Err(foreign(
                path,
                format!("store format {format:?}, this build reads [{STORE_FORMAT}]"),
            ));
        }
        let origin = meta
            .get("origin")
            .map_err(storage("reading meta"))?
            .and_then(|v| String::from_utf8(v.value().to_vec()).ok())
            .ok_or_else(|| foreign(path, "no origin"))?;
        let log = txn.open_table(LOG).map_err(table_err)?;
        let size = match log.last().map_err(storage("reading the head"))? {
            Some((k, _)) => k.value().saturating_add(1),
            None => 0,
        };
        Ok(Snapshot {
            path: path.to_path_buf(),
            origin,
            size,
            log,
            meta,
            _txn: txn,
            _db: None,
        })
    }

    /// Number of entries (one past the highest seq stored).
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The log's origin as stored (verification checks it against genesis).
    pub fn origin(&self) -> &str {
        &self.origin
    }

    fn bad_row(&self, seq: u64) -> OpenError {
        inconsistent(&self.path, format!("row {seq} is malformed"))
    }

    /// Calls `f` with the parsed row at `seq`, if present.
    fn with_row<T>(&self, seq: u64, f: impl FnOnce(Row<'_>) -> T) -> Result<Option<T>, OpenError> {
        let Some(v) = self.log.get(seq).map_err(storage("reading an entry"))? else {
            return Ok(None);
        };
        let row = Row::parse(v.value()).ok_or_else(|| self.bad_row(seq))?;
        Ok(Some(f(row)))
    }

    /// The key chain recorded in meta, genesis key first.
    pub fn keys_in_force(&self) -> Result<Vec<PublicKey>, OpenError> {
        let raw = self
            .meta
            .get("keys")
            .map_err(storage("reading meta"))?
            .map(|v| v.value().to_vec())
            .ok_or_else(|| foreign(&self.path, "no key chain in meta"))?;
        let text =
            String::from_utf8(raw).map_err(|_| foreign(&self.path, "key chain is not text"))?;
        let keys = text
            .lines()
            .map(PublicKey::from_text)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| foreign(&self.path, format!("key chain: {e}")))?;
        if keys.is_empty() {
            return Err(foreign(&self.path, "empty key chain"));
        }
        Ok(keys)
    }

    /// The stored bytes of one entry.
    pub fn entry(&self, seq: u64) -> Result<Option<Vec<u8>>, OpenError> {
        self.with_row(seq, |r| r.entry().to_vec())
    }

    /// Calls `f(seq, row)` for each stored row in `range`, in seq order.
    pub fn for_each_row<E: From<OpenError>>(
        &self,
        range: impl RangeBounds<u64>,
        mut f: impl FnMut(u64, Row<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        let iter = self
            .log
            .range(range)
            .map_err(|e| OpenError::from(storage("scanning entries")(e)))?;
        for item in iter {
            let (k, v) = item.map_err(|e| OpenError::from(storage("scanning entries")(e)))?;
            let seq = k.value();
            let row = Row::parse(v.value()).ok_or_else(|| self.bad_row(seq))?;
            f(seq, row)?;
        }
        Ok(())
    }

    /// Calls `f(seq, bytes)` for each stored entry in `range`, in seq order.
    pub fn for_each_entry<E: From<OpenError>>(
        &self,
        range: impl RangeBounds<u64>,
        mut f: impl FnMut(u64, &[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        self.for_each_row(range, |seq, row| f(seq, row.entry()))
    }

    /// The signed note of the checkpoint at exactly `size`.
    pub fn checkpoint(&self, size: u64) -> Result<Option<String>, OpenError> {
        let Some(seq) = size.checked_sub(1) else {
            return Ok(None);
        };
        Ok(self
            .with_row(seq, |r| {
                r.checkpoint()
                    .map(|c| String::from_utf8_lossy(c).into_owned())
            })?
            .flatten())
    }

    /// The latest checkpoint's size and note (it ends the last row).
    pub fn latest_checkpoint(&self) -> Result<Option<(u64, String)>, OpenError> {
        Ok(self.checkpoint(self.size)?.map(|n| (self.size, n)))
    }

    /// Rebuilds the tip and checks head, tree and latest checkpoint agree (used on open).
    /// Whether the batch ending at the head (the entries after the previous checkpoint)
    /// holds a key rotation.
    fn last_batch_rotates(&self, path: &Path, size: u64) -> Result<bool, OpenError> {
        let rows = self
            .log
            .range(..size)
            .map_err(storage("reading the last batch"))?;
        for r in rows.rev() {
            let (k, v) = r.map_err(storage("reading the last batch"))?;
            let seq = k.value();
            let row = Row::parse(v.value()).ok_or_else(|| self.bad_row(seq))?;
            if seq + 1 < size && row.checkpoint().is_some() {
                return Ok(false);
            }
            let entry = EntryRef::parse(row.entry())
                .map_err(|e| inconsistent(path, format!("entry {seq}: {e}")))?;
            if entry.header.kind == Kind::KeyRotated {
                return Ok(true);
            }
        }
        Ok(false)
    }

    fn check_tip(&self, path: &Path) -> Result<Tip, OpenError> {
        let size = self.size;
        if size == 0 {
            return Err(inconsistent(path, "no entries (not even genesis)"));
        }
        let stored = self.log.len().map_err(storage("counting entries"))?;
        if stored != size {
            return Err(inconsistent(
                path,
                format!(
                    "{stored} entries stored but the highest seq is {}",
                    size - 1
                ),
            ));
        }
        let head_bytes = self
            .entry(size - 1)?
            .ok_or_else(|| inconsistent(path, "head entry missing"))?;
        let head_entry = EntryRef::parse(&head_bytes)
            .map_err(|e| inconsistent(path, format!("head entry: {e}")))?;
        if head_entry.header.seq != size - 1 {
            return Err(inconsistent(
                path,
                format!(
                    "entry stored at seq {} states seq {}",
                    size - 1,
                    head_entry.header.seq
                ),
            ));
        }
        let head = head_entry.hash();
        let frontier = Frontier::from_source(self, size)?;
        let (_, note) = self.latest_checkpoint()?.ok_or_else(|| {
            inconsistent(path, format!("no checkpoint covers the head (size {size})"))
        })?;
        // A rotation takes effect after the first checkpoint covering it (FORMAT.md §5), so a
        // last batch that rotates was signed by the key before the newest.
        let mut keys = self.keys_in_force()?;
        if keys.len() > 1 && self.last_batch_rotates(path, size)? {
            keys.pop();
        }
        let key = keys.pop().expect("non-empty");
        let verified = parse_note(note.as_bytes())
            .and_then(|n| n.verify(&key))
            .map_err(|e| inconsistent(path, format!("latest checkpoint: {e}")))?;
        let cp = verified.checkpoint();
        let problems = [
            (
                cp.size != size,
                format!(
                    "latest checkpoint states size {}, log has {size} entries",
                    cp.size
                ),
            ),
            (
                cp.root != frontier.root(),
                format!(
                    "checkpoint root {} but tree root {}",
                    cp.root,
                    frontier.root()
                ),
            ),
            (
                cp.head != head,
                format!(
                    "checkpoint head {} but head entry hashes to {head}",
                    cp.head
                ),
            ),
            (
                cp.origin != self.origin,
                format!(
                    "checkpoint origin {:?} but store origin {:?}",
                    cp.origin, self.origin
                ),
            ),
        ];
        if let Some((_, reason)) = problems.into_iter().find(|(bad, _)| *bad) {
            return Err(inconsistent(path, reason));
        }
        Ok(Tip {
            head,
            last_time: head_entry.header.recorded_at_us,
            frontier,
        })
    }

    /// Size of the nearest checkpoint in a row range, searching in the given direction.
    fn nearest_checkpoint(
        &self,
        rows: impl RangeBounds<u64>,
        backwards: bool,
    ) -> Result<Option<u64>, OpenError> {
        let iter = self
            .log
            .range(rows)
            .map_err(storage("reading checkpoints"))?;
        let scan = |item: Result<
            (redb::AccessGuard<'_, u64>, redb::AccessGuard<'_, &[u8]>),
            redb::StorageError,
        >| {
            item.ok().and_then(|(k, v)| {
                Row::parse(v.value())
                    .and_then(|r| r.checkpoint())
                    .map(|_| k.value() + 1)
            })
        };
        Ok(if backwards {
            iter.rev().take(CHECKPOINT_SEARCH_ROWS_MAX).find_map(scan)
        } else {
            iter.take(CHECKPOINT_SEARCH_ROWS_MAX).find_map(scan)
        })
    }

    fn require_checkpoint(&self, size: u64) -> Result<String, ProofError> {
        if let Some(note) = self.checkpoint(size)? {
            return Ok(note);
        }
        let below = self.nearest_checkpoint(..size.saturating_sub(1), true)?;
        let above = self.nearest_checkpoint(size..self.size, false)?;
        Err(ProofError::NoCheckpoint { size, below, above })
    }

    /// Proof that entry `seq` is in the tree of the checkpoint at `size` (default: latest).
    pub fn inclusion_proof(
        &self,
        seq: u64,
        size: Option<u64>,
    ) -> Result<InclusionProof, ProofError> {
        let size = size.unwrap_or(self.size);
        let note = self.require_checkpoint(size)?;
        let path = merkle::inclusion_proof(self, seq, size)??;
        let entry = self.entry(seq)?.ok_or(ProofRequestError::IndexOutOfRange {
            index: seq,
            size: self.size,
        })?;
        Ok(InclusionProof {
            seq,
            tree_size: size,
            entry,
            path,
            checkpoint: note,
        })
    }

    /// Proof that the checkpoint at `to` extends the checkpoint at `from`.
    pub fn consistency_proof(&self, from: u64, to: u64) -> Result<ConsistencyProof, ProofError> {
        if from > to {
            return Err(ProofRequestError::Shrinking { from, to }.into());
        }
        let from_note = self.require_checkpoint(from)?;
        let to_note = self.require_checkpoint(to)?;
        let path = merkle::consistency_proof(self, from, to)??;
        Ok(ConsistencyProof {
            from,
            to,
            path,
            from_checkpoint: from_note,
            to_checkpoint: to_note,
        })
    }

    /// Verifies the whole stored log from its entries alone, trusting only `pinned` (the
    /// genesis key): every link, hash, root, signature; then that the stored tree nodes and
    /// key chain agree. `progress` is called with entries verified so far.
    pub fn verify(
        &self,
        pinned: &PublicKey,
        mut progress: impl FnMut(u64),
    ) -> Result<VerifiedLog, VerifyError> {
        let store_err =
            |e: OpenError| VerifyError::new(Location::Log, Failure::Store(e.to_string()));
        let mut verifier = Verifier::new(pinned.clone());
        let mut expected = 0u64;
        self.for_each_row(.., |seq, row| -> Result<(), VerifyErrorOrOpen> {
            if seq != expected {
                return Err(VerifyError::new(
                    Location::Seq(expected),
                    Failure::SeqMismatch {
                        expected,
                        found: seq,
                    },
                )
                .into());
            }
            verifier.entry(row.entry())?;
            if let Some(note) = row.checkpoint() {
                verifier.checkpoint(note)?;
            }
            expected += 1;
            if expected.is_multiple_of(65536) {
                progress(expected);
            }
            Ok(())
        })
        .map_err(|e| e.0)?;
        progress(expected);
        let verified = verifier.finish()?;
        // The stored nodes are a cache for proofs; they must give the verified root.
        let stored_root = merkle::root(self, verified.size()).map_err(store_err)?;
        if stored_root != verified.checkpoint().root {
            return Err(VerifyError::new(
                Location::Log,
                Failure::Store(format!(
                    "stored tree nodes give root {stored_root}, entries give {}",
                    verified.checkpoint().root
                )),
            ));
        }
        let listed = self.keys_in_force().map_err(store_err)?;
        if listed != verified.keys() {
            return Err(VerifyError::new(
                Location::Log,
                Failure::Store("key chain in meta differs from the log's key chain".into()),
            ));
        }
        Ok(verified)
    }

    /// Streams the log as a bundle: keys, then entries with each checkpoint after the entry
    /// that completes it. Returns (entries, checkpoints) written.
    pub fn export<W: std::io::Write>(
        &self,
        out: W,
        mut progress: impl FnMut(u64),
    ) -> Result<(u64, u64), ExportError> {
        let mut writer = BundleWriter::new(out)?;
        for key in self.keys_in_force()? {
            writer.key(&key)?;
        }
        let (mut n, mut c) = (0u64, 0u64);
        self.for_each_row(.., |_, row| {
            writer.entry(row.entry())?;
            n += 1;
            if let Some(note) = row.checkpoint() {
                writer.checkpoint(note)?;
                c += 1;
            }
            if n.is_multiple_of(65536) {
                progress(n);
            }
            Ok::<(), ExportError>(())
        })?;
        writer.finish()?;
        progress(n);
        Ok((n, c))
    }
}

/// Lets `for_each_row` carry a verification error through its `From<OpenError>` bound.
struct VerifyErrorOrOpen(VerifyError);
impl From<OpenError> for VerifyErrorOrOpen {
    fn from(e: OpenError) -> Self {
        VerifyErrorOrOpen(VerifyError::new(
            Location::Log,
            Failure::Store(e.to_string()),
        ))
    }
}
impl From<VerifyError> for VerifyErrorOrOpen {
    fn from(e: VerifyError) -> Self {
        VerifyErrorOrOpen(e)
    }
}

/// Why an export failed.
#[derive(Debug, Error)]
pub enum ExportError {
    /// Reading the store.
    #[error(transparent)]
    Open(#[from] OpenError),
    /// Writing the bundle.
    #[error("writing the bundle: {0}")]
    Io(#[from] std::io::Error),
}

impl NodeSource for Snapshot {
    type Error = OpenError;
    fn perfect(&self, level: u8, index: u64) -> Result<Hash, OpenError> {
        if level == 0 {
            return self
                .with_row(index, |r| leaf_hash(r.entry()))?
                .ok_or_else(|| inconsistent(&self.path, format!("entry {index} missing")));
        }
        // Node (level, index) was completed by leaf (index + 1)·2^level − 1.
        let missing = || inconsistent(&self.path, format!("tree node ({level}, {index}) missing"));
        let seq = index
            .checked_add(1)
            .and_then(|i| i.checked_shl(u32::from(level)))
            .ok_or_else(missing)?
            - 1;
        self.with_row(seq, |r| r.node(level))?
            .flatten()
            .ok_or_else(missing)
    }
}

/// The table interface on redb, inside one write transaction (the append's, or a rebuild's).
/// Tables are `&[u8] → &[u8]`, opened on first use and kept open for the transaction.
pub struct RedbTables<'a> {
    txn: &'a WriteTransaction,
    open: std::collections::BTreeMap<&'static str, redb::Table<'a, &'static [u8], &'static [u8]>>,
}

impl std::fmt::Debug for RedbTables<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RedbTables({} open)", self.open.len())
    }
}

fn table_err(table: &str, e: impl std::fmt::Display) -> crate::tables::TableError {
    crate::tables::TableError {
        table: table.to_string(),
        reason: e.to_string(),
    }
}

impl<'a> RedbTables<'a> {
    /// Wraps a write transaction.
    pub fn new(txn: &'a WriteTransaction) -> RedbTables<'a> {
        RedbTables {
            txn,
            open: std::collections::BTreeMap::new(),
        }
    }

    fn table(
        &mut self,
        name: &'static str,
    ) -> Result<&mut redb::Table<'a, &'static [u8], &'static [u8]>, crate::tables::TableError> {
        if !self.open.contains_key(name) {
            let def: TableDefinition<&[u8], &[u8]> = TableDefinition::new(name);
            let t = self.txn.open_table(def).map_err(|e| table_err(name, e))?;
            self.open.insert(name, t);
        }
        Ok(self.open.get_mut(name).expect("just inserted"))
    }
}

impl crate::tables::TableWriter for RedbTables<'_> {
    fn put(
        &mut self,
        table: &'static str,
        key: &[u8],
        value: &[u8],
    ) -> Result<(), crate::tables::TableError> {
        self.table(table)?
            .insert(key, value)
            .map(|_| ())
            .map_err(|e| table_err(table, e))
    }

    fn delete(&mut self, table: &'static str, key: &[u8]) -> Result<(), crate::tables::TableError> {
        self.table(table)?
            .remove(key)
            .map(|_| ())
            .map_err(|e| table_err(table, e))
    }

    fn clear(&mut self, table: &'static str) -> Result<(), crate::tables::TableError> {
        self.open.remove(table);
        let def: TableDefinition<&[u8], &[u8]> = TableDefinition::new(table);
        self.txn
            .delete_table(def)
            .map_err(|e| table_err(table, e))?;
        Ok(())
    }
}

/// A projection table as a snapshot reads it.
type DerivedTable = ReadOnlyTable<&'static [u8], &'static [u8]>;

impl Snapshot {
    /// A derived (projection) table, if it was ever written.
    fn derived_table(
        &self,
        table: &'static str,
    ) -> Result<Option<DerivedTable>, crate::tables::TableError> {
        let def: TableDefinition<&[u8], &[u8]> = TableDefinition::new(table);
        match self._txn.open_table(def) {
            Ok(t) => Ok(Some(t)),
            Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
            Err(e) => Err(table_err(table, e)),
        }
    }
}

impl crate::tables::TableReader for Snapshot {
    fn scan(
        &self,
        table: &'static str,
        f: &mut crate::tables::RowVisitor<'_>,
    ) -> Result<(), crate::tables::TableError> {
        let Some(t) = self.derived_table(table)? else {
            return Ok(());
        };
        for row in t.iter().map_err(|e| table_err(table, e))? {
            let (k, v) = row.map_err(|e| table_err(table, e))?;
            f(k.value(), v.value())?;
        }
        Ok(())
    }

    fn get(
        &self,
        table: &'static str,
        key: &[u8],
    ) -> Result<Option<Vec<u8>>, crate::tables::TableError> {
        let Some(t) = self.derived_table(table)? else {
            return Ok(None);
        };
        Ok(t.get(key)
            .map_err(|e| table_err(table, e))?
            .map(|v| v.value().to_vec()))
    }

    fn scan_prefix(
        &self,
        table: &'static str,
        prefix: &[u8],
        f: &mut crate::tables::RowVisitor<'_>,
    ) -> Result<(), crate::tables::TableError> {
        let Some(t) = self.derived_table(table)? else {
            return Ok(());
        };
        // Byte keys sort lexicographically, so the rows with a prefix are one range.
        for row in t.range(prefix..).map_err(|e| table_err(table, e))? {
            let (k, v) = row.map_err(|e| table_err(table, e))?;
            if !k.value().starts_with(prefix) {
                break;
            }
            f(k.value(), v.value())?;
        }
        Ok(())
    }
}

/// Read-write access for maintenance (rebuilding derived tables) without a signing key. It
/// runs the same open checks as [`Store::open`], never appends, and commits durably.
pub struct Maintenance {
    db: Database,
    path: PathBuf,
}

impl std::fmt::Debug for Maintenance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Maintenance({})", self.path.display())
    }
}

impl Maintenance {
    /// Opens a ledger for maintenance, refusing one whose head, tree and checkpoint disagree.
    pub fn open(path: &Path) -> Result<Maintenance, OpenError> {
        let db = open_rw(path)?;
        let snap = Snapshot::new(db.begin_read().map_err(storage("beginning a read"))?, path)?;
        snap.check_tip(path)?;
        drop(snap);
        Ok(Maintenance {
            db,
            path: path.to_path_buf(),
        })
    }

    /// A consistent read view.
    pub fn snapshot(&self) -> Result<Snapshot, OpenError> {
        Snapshot::new(
            self.db.begin_read().map_err(storage("beginning a read"))?,
            &self.path,
        )
    }

    /// Writes derived tables in one durable transaction.
    pub fn write_tables(
        &self,
        f: impl FnOnce(&mut RedbTables<'_>) -> Result<(), crate::tables::TableError>,
    ) -> Result<(), AppendError> {
        write_tables_in(&self.db, f)
    }
}

impl Store {
    /// Writes derived tables in one durable transaction without appending (catching up a
    /// projection on open).
    pub fn write_tables(
        &mut self,
        f: impl FnOnce(&mut RedbTables<'_>) -> Result<(), crate::tables::TableError>,
    ) -> Result<(), AppendError> {
        if self.poisoned {
            return Err(AppendError::Poisoned);
        }
        let result = write_tables_in(&self.db, f);
        if matches!(result, Err(AppendError::Commit(_))) {
            self.poisoned = true;
        }
        result
    }
}
