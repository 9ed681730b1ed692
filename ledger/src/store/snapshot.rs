//! A consistent MVCC read view: entries, checkpoints, proofs, verification, export, and the table reader over the derived tables.

use super::{
    BATCH_ENTRIES_MAX, ExportError, LOG, META, OpenError, ProofError, Row, STORE_FORMAT, Tip,
    foreign, inconsistent, storage, table_err,
};
use crate::bundle::BundleWriter;
use crate::checkpoint::parse_note;
use crate::entry::EntryRef;
use crate::event::Kind;
use crate::hash::{Hash, TreeHash};
use crate::keys::PublicKey;
use crate::merkle;
use crate::merkle::{Frontier, NodeSource, ProofRequestError};
use crate::proof::{ConsistencyProof, InclusionProof};
use crate::read::{Logged, ReadError, Stored};
use crate::verify::{Failure, Location, VerifiedLog, Verifier, VerifyError};
use redb::{ReadOnlyTable, ReadTransaction, ReadableTable, ReadableTableMetadata, TableDefinition};
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A consistent view of the ledger at one moment.
pub struct Snapshot {
    path: PathBuf,
    pub(super) origin: String,
    size: u64,
    /// The tree's hash, from the genesis entry's format version.
    tree: TreeHash,
    log: ReadOnlyTable<u64, &'static [u8]>,
    meta: ReadOnlyTable<&'static str, &'static [u8]>,
    _txn: ReadTransaction,
    /// A private database ([`ReadOnlyStore::open_with`]) closes when dropped, ending its read
    /// transactions: a snapshot keeps it open, as a read-only database's snapshots do.
    pub(super) private_db: Option<Arc<super::handles::PrivateDb>>,
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Snapshot({}, size {})", self.path.display(), self.size)
    }
}

/// Rows a nearest-checkpoint search looks at before giving up (a batch is at most this long).
const CHECKPOINT_SEARCH_ROWS_MAX: usize = BATCH_ENTRIES_MAX;

impl Snapshot {
    pub(super) fn new(txn: ReadTransaction, path: &Path) -> Result<Snapshot, OpenError> {
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
        let version = match log.get(0).map_err(storage("reading the genesis entry"))? {
            Some(v) => Row::parse(v.value())
                .and_then(|r| r.entry().first().copied())
                .ok_or_else(|| inconsistent(path, "row 0 is malformed"))?,
            None => crate::entry::FORMAT_VERSION,
        };
        let tree = TreeHash::of_version(version).ok_or_else(|| {
            foreign(
                path,
                format!("entry format version {version}, this build reads versions 1 and 2"),
            )
        })?;
        Ok(Snapshot {
            path: path.to_path_buf(),
            origin,
            size,
            tree,
            log,
            meta,
            _txn: txn,
            private_db: None,
        })
    }

    /// Number of entries (one past the highest seq stored).
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The hash function of the log's Merkle tree.
    pub fn tree_hash(&self) -> TreeHash {
        self.tree
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

    /// Every stored row, in seq order, with its seq.
    fn raw_rows(
        &self,
    ) -> Result<impl Iterator<Item = Result<(u64, RowValue), OpenError>> + use<>, OpenError> {
        let scanning = |e: redb::StorageError| OpenError::from(storage("scanning entries")(e));
        Ok(self.log.range(0..).map_err(scanning)?.map(move |item| {
            let (k, v) = item.map_err(scanning)?;
            Ok((k.value(), v))
        }))
    }

    /// Parses a stored row.
    fn row<'v>(&self, seq: u64, value: &'v RowValue) -> Result<Row<'v>, OpenError> {
        Row::parse(value.value()).ok_or_else(|| self.bad_row(seq))
    }

    /// The entries in `range`, in seq order, as stored (decode each with
    /// [`Stored::decode`]). The iterator holds its own read transaction: it reads the log as
    /// this snapshot does even after the snapshot is dropped.
    pub fn rows(&self, range: impl RangeBounds<u64>) -> Result<Rows, ReadError> {
        let scanning = |e: redb::StorageError| OpenError::from(storage("scanning entries")(e));
        Ok(Rows {
            range: self.log.range(range).map_err(scanning)?,
            path: self.path.clone(),
            _private_db: self.private_db.clone(),
        })
    }

    /// The entries in `range`, in seq order, decoded.
    pub fn entries(&self, range: impl RangeBounds<u64>) -> Result<Entries, ReadError> {
        Ok(Entries(self.rows(range)?))
    }

    /// The entry at `seq`, decoded, if present.
    pub fn logged(&self, seq: u64) -> Result<Option<Logged>, ReadError> {
        self.entries(seq..=seq)?.next().transpose()
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

    pub(super) fn check_tip(&self, path: &Path) -> Result<Tip, OpenError> {
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
            tree: self.tree,
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
        for item in self.raw_rows().map_err(store_err)? {
            let (seq, value) = item.map_err(store_err)?;
            if seq != expected {
                return Err(VerifyError::new(
                    Location::Seq(expected),
                    Failure::SeqMismatch {
                        expected,
                        found: seq,
                    },
                ));
            }
            let row = self.row(seq, &value).map_err(store_err)?;
            verifier.entry(row.entry())?;
            if let Some(note) = row.checkpoint() {
                verifier.checkpoint(note)?;
            }
            expected += 1;
            if expected.is_multiple_of(65536) {
                progress(expected);
            }
        }
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
        for item in self.raw_rows()? {
            let (seq, value) = item?;
            let row = self.row(seq, &value)?;
            writer.entry(row.entry())?;
            n += 1;
            if let Some(note) = row.checkpoint() {
                writer.checkpoint(note)?;
                c += 1;
            }
            if n.is_multiple_of(65536) {
                progress(n);
            }
        }
        writer.finish()?;
        progress(n);
        Ok((n, c))
    }
}

impl From<OpenError> for ReadError {
    fn from(e: OpenError) -> ReadError {
        ReadError::Store(Box::new(e))
    }
}

/// The entries of a range of the log, decoded ([`Snapshot::entries`]).
#[derive(Debug)]
pub struct Entries(Rows);

impl Iterator for Entries {
    type Item = Result<Logged, ReadError>;

    fn next(&mut self) -> Option<Self::Item> {
        Some(self.0.next()?.and_then(|stored| stored.decode()))
    }
}

/// A stored row's value, borrowed from its database page.
type RowValue = redb::AccessGuard<'static, &'static [u8]>;

/// The entries of a range of the log, as stored ([`Snapshot::rows`]).
pub struct Rows {
    range: redb::Range<'static, u64, &'static [u8]>,
    path: PathBuf,
    /// A private database closes when dropped (see [`Snapshot`]).
    _private_db: Option<Arc<super::handles::PrivateDb>>,
}

impl std::fmt::Debug for Rows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Rows({})", self.path.display())
    }
}

impl Iterator for Rows {
    type Item = Result<Stored, ReadError>;

    fn next(&mut self) -> Option<Self::Item> {
        let item = self.range.next()?;
        Some((|| {
            let (k, value) = item.map_err(|e| OpenError::from(storage("scanning entries")(e)))?;
            let seq = k.value();
            let (entry_at, ends_batch) = Row::parse(value.value())
                .map(|row| {
                    (
                        value.value().len() - row.entry().len(),
                        row.checkpoint().is_some(),
                    )
                })
                .ok_or_else(|| inconsistent(&self.path, format!("row {seq} is malformed")))?;
            Ok(Stored::in_row(seq, value, entry_at, ends_batch))
        })())
    }
}

impl NodeSource for Snapshot {
    type Error = OpenError;
    fn tree(&self) -> TreeHash {
        self.tree
    }
    fn perfect(&self, level: u8, index: u64) -> Result<Hash, OpenError> {
        if level == 0 {
            let tree = self.tree;
            return self
                .with_row(index, |r| tree.leaf(r.entry()))?
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
