//! The handles other than the writer: readers sharing its database, read-only stores that never write the file, and maintenance access for rewriting derived tables.

use super::{
    AppendError, OpenError, RedbTables, Snapshot, StorageError, begin_durable_write, builder,
    not_a_database, open_rw, storage, write_tables_in,
};
use redb::{Database, ReadOnlyDatabase, ReadableDatabase};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Snapshots of a [`Store`] that is open for appending in this process (the daemon's API
/// threads): cheap to clone, MVCC, never blocks the writer. A snapshot sees only committed,
/// durable batches.
#[derive(Clone)]
pub struct Reader {
    pub(super) db: Arc<Database>,
    pub(super) path: PathBuf,
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

/// A database over a private [`crate::overlay::Overlay`], closed without writing.
///
/// redb's close commits its allocator state. Over a private layer that commit is pointless
/// (the layer is dropped with the database), and on a damaged file it is where redb 4.6 aborts
/// the whole process: the commit panics reading the damaged freed-page tree, and a destructor
/// panics again while that unwinds (`fixtures/redb-abort/`). So the layer is sealed first, and
/// redb is made to touch it (an integrity check, which fails on its first read): the latched
/// I/O failure makes the close skip its commit. Nothing of the file is ever written either way.
pub(super) struct PrivateDb {
    db: Database,
    seal: crate::overlay::Seal,
}

impl std::ops::Deref for PrivateDb {
    type Target = Database;
    fn deref(&self) -> &Database {
        &self.db
    }
}

impl Drop for PrivateDb {
    fn drop(&mut self) {
        self.seal.seal();
        // Fails at its first read of the sealed layer, latching the failure (no snapshot can
        // be alive here: each holds this value).
        let _ = self.db.check_integrity();
    }
}

enum ReadHandle {
    Private(Arc<PrivateDb>),
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
            reason: e.to_string(),
        })?;
        let overlay = crate::overlay::Overlay::new(file).map_err(|e| OpenError::NotADatabase {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        let seal = overlay.seal_handle();
        let mut b = builder();
        b.set_check_integrity_on_open(check);
        let (db, mode) = match b.create_with_backend(overlay) {
            Ok(db) => (
                ReadHandle::Private(Arc::new(PrivateDb { db, seal })),
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
                snap.private_db = Some(Arc::clone(db));
                Ok(snap)
            }
            ReadHandle::Shared(db) => Snapshot::new(
                db.begin_read().map_err(storage("beginning a read"))?,
                &self.path,
            ),
        }
    }
}

/// Opens the ledger file for writing, commits an empty durable transaction, and closes it:
/// what every writer's first commit and close do to redb's own structures (the freed-page
/// trees, the allocator state), without adding anything to the log.
///
/// redb 4.6 can *abort the process* on a damaged file there (a panic, then a second panic in
/// a destructor during the unwind: `fixtures/redb-abort/`), which no caller can catch. So the
/// CLI runs this in a child process before it opens a file for writing (`serve`, `rebuild`,
/// `compact`, `rotate-key`): a child that aborts means a damaged file, refused with one line,
/// instead of a daemon that aborts on its first agent report and crash-loops.
pub fn trial_commit(path: &Path) -> Result<(), OpenError> {
    if !path.exists() {
        return Err(OpenError::Missing(path.to_path_buf()));
    }
    let overlay = std::fs::File::open(path)
        .and_then(crate::overlay::Overlay::new)
        .map_err(|e| OpenError::NotADatabase {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    // Over the private layer: the file is never written, whatever happens. The cost is that a
    // file not closed cleanly is recovered twice, here in memory and then for real.
    let db = builder()
        .create_with_backend(overlay)
        .map_err(not_a_database(path))?;
    let txn = begin_durable_write(&db, false).map_err(OpenError::from)?;
    txn.commit().map_err(storage("committing"))?;
    // The close commits redb's allocator state: part of the trial.
    db.close()
        .map_err(|e| storage("closing")(redb::Error::from(e)))?;
    Ok(())
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

    /// Compacts the file (redb's `compact`: moves pages down and truncates the free space at
    /// the end), until a pass frees nothing. Needs the file to itself (a daemon that has it
    /// open makes [`Maintenance::open`] fail with [`OpenError::InUse`]). Returns the file's
    /// size before and after. The ledger's content is untouched: every entry, checkpoint and
    /// table reads the same, and the open checks pass again afterwards.
    pub fn compact(mut self) -> Result<(u64, u64), OpenError> {
        let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        let before = size(&self.path);
        while self.db.compact().map_err(|e| StorageError {
            doing: "compacting",
            source: redb::Error::from(e),
        })? {}
        drop(self.db);
        let after = size(&self.path);
        // The same checks as any open: head, tree and checkpoint still agree.
        Maintenance::open(&self.path)?;
        Ok((before, after))
    }

    /// Writes derived tables in one durable transaction; `f`'s error comes back as itself,
    /// the store's as `E::from`.
    pub fn write_tables<E: From<AppendError>>(
        &self,
        f: impl FnOnce(&mut RedbTables<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        write_tables_in(&self.db, false, f).map_err(super::Written::into_inner)
    }
}
