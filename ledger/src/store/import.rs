//! Writing a verified log into a new database, byte for byte (`fleet-ledger import`).
//!
//! The importer is fed entries and checkpoints as a verifier accepts them
//! ([`crate::bundle::verify_bundle_into`]) and writes the same rows an append would have
//! written: each entry's bytes as stored, the tree nodes it completes, and each checkpoint
//! note, unchanged, in the row of the entry that completes it. Nothing is re-signed, so the
//! result is the source log itself, and `serve` continues it. Rows are committed in chunks;
//! the caller writes into a temporary path and renames it only once the whole source has
//! verified and [`Importer::finish`] returned, so a source that fails leaves nothing behind.

use super::{
    CreateError, LOG, META, OpenError, Row, STORE_FORMAT, Snapshot, StorageError,
    begin_durable_write, builder, inconsistent, storage,
};
use crate::entry::EntryRef;
use crate::hash::{Hash, TreeHash};
use crate::keys::PublicKey;
use crate::merkle::Frontier;
use crate::verify::VerifiedLog;
use redb::{Database, ReadableDatabase};
use std::path::{Path, PathBuf};

/// Rows per write transaction while importing.
const CHUNK_ROWS: usize = 65_536;

/// A database being filled from a verified log.
pub struct Importer {
    db: Database,
    path: PathBuf,
    frontier: Option<Frontier>,
    /// The last entry, held until the next record says whether a checkpoint completes it.
    held: Option<(Vec<Hash>, Vec<u8>)>,
    rows: Vec<(u64, Vec<u8>)>,
    next_seq: u64,
}

impl std::fmt::Debug for Importer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Importer")
            .field("path", &self.path)
            .field("next_seq", &self.next_seq)
            .finish()
    }
}

impl Importer {
    /// Creates an empty database at `path` (which must not exist).
    pub fn create(path: &Path) -> Result<Importer, CreateError> {
        if path.exists() {
            return Err(CreateError::Exists(path.to_path_buf()));
        }
        let db = builder()
            .create(path)
            .map_err(storage("creating the database"))?;
        Ok(Importer {
            db,
            path: path.to_path_buf(),
            frontier: None,
            held: None,
            rows: Vec::new(),
            next_seq: 0,
        })
    }

    /// The next entry of the log (already verified: its seq and link are not re-checked).
    pub fn entry(&mut self, bytes: &[u8]) -> Result<(), StorageError> {
        self.release(None)?;
        let frontier = match &mut self.frontier {
            Some(f) => f,
            None => {
                // The tree hash follows the genesis entry's format version (FORMAT §2).
                let tree = EntryRef::parse(bytes)
                    .ok()
                    .and_then(|e| TreeHash::of_version(e.header.version))
                    .ok_or_else(|| StorageError {
                        doing: "importing the genesis entry",
                        source: redb::Error::Corrupted(
                            "the first entry has no known format version".into(),
                        ),
                    })?;
                self.frontier.insert(Frontier::new(tree))
            }
        };
        let leaf = frontier.tree().leaf(bytes);
        let mut nodes = Vec::new();
        frontier.push(leaf, |_, _, node| nodes.push(*node));
        self.held = Some((nodes, bytes.to_vec()));
        Ok(())
    }

    /// The checkpoint of the entries so far (it completes the last entry given).
    pub fn checkpoint(&mut self, note: &[u8]) -> Result<(), StorageError> {
        self.release(Some(note))
    }

    fn release(&mut self, checkpoint: Option<&[u8]>) -> Result<(), StorageError> {
        if let Some((nodes, bytes)) = self.held.take() {
            self.rows
                .push((self.next_seq, Row::encode(&nodes, checkpoint, &bytes)));
            self.next_seq += 1;
            if self.rows.len() >= CHUNK_ROWS {
                self.flush(None)?;
            }
        }
        Ok(())
    }

    /// Writes the pending rows (and, at the end, the meta table) in one durable transaction.
    fn flush(&mut self, meta: Option<(&str, &[PublicKey])>) -> Result<(), StorageError> {
        let txn = begin_durable_write(&self.db, false)?;
        {
            let mut log = txn.open_table(LOG).map_err(storage("opening the log"))?;
            for (seq, row) in self.rows.drain(..) {
                log.insert(seq, row.as_slice())
                    .map_err(storage("inserting an entry"))?;
            }
            if let Some((origin, keys)) = meta {
                let mut m = txn.open_table(META).map_err(storage("opening meta"))?;
                m.insert("format", [STORE_FORMAT].as_slice())
                    .map_err(storage("writing meta"))?;
                m.insert("origin", origin.as_bytes())
                    .map_err(storage("writing meta"))?;
                let chain: String = keys.iter().map(|k| format!("{}\n", k.to_text())).collect();
                m.insert("keys", chain.as_bytes())
                    .map_err(storage("writing meta"))?;
            }
        }
        txn.commit().map_err(storage("committing"))
    }

    /// Writes what is left and the log's origin and key chain (from the verified log), then
    /// checks the result opens as a ledger whose tip agrees. Returns the number of entries.
    pub fn finish(mut self, log: &VerifiedLog) -> Result<u64, OpenError> {
        self.release(None)?;
        self.flush(Some((log.origin(), log.keys())))?;
        let snap = Snapshot::new(
            self.db.begin_read().map_err(storage("beginning a read"))?,
            &self.path,
        )?;
        let tip = snap.check_tip(&self.path)?;
        if tip.frontier.size() != log.size() || tip.head != log.checkpoint().head {
            return Err(inconsistent(
                &self.path,
                "the imported database does not end where the verified log does",
            ));
        }
        Ok(self.next_seq)
    }
}
