//! Publication as C2SP tlog-tiles (docs/FORMAT.md §12): the log's `checkpoint`, hash tiles,
//! entry bundles and the checkpoints key rotations took effect at, so that any tlog-tiles
//! client, witness or monitor can read and check it with no fleet-ledger code.
//!
//! Incremental and restartable: the destination's own `checkpoint` says how far it was
//! published; only the tiles completed since and the new partial tiles are written. Every
//! file but `checkpoint` is immutable once written (an existing one is left as it is); each
//! is written atomically, and the checkpoint last, so a reader never sees a checkpoint whose
//! tiles are missing.
//!
//! Where the files go is a [`Sink`]: a directory here ([`DirSink`]); the daemon adds an S3
//! bucket (its `publish` module), whose conditional puts keep two racing publishers from
//! rewriting a tile or moving the checkpoint backwards.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use ledger::checkpoint::parse_note;
use ledger::hash::TreeHash;
use ledger::store::{OpenError, Snapshot};
use ledger::tiles::{self, Tile};
use thiserror::Error;

/// Where tiles go. `Send + Sync`: the daemon publishes from a blocking thread.
pub trait Sink: Send + Sync {
    /// The bytes at `path`, if any.
    fn get(&self, path: &str) -> std::io::Result<Option<Vec<u8>>>;
    /// Writes `bytes` at `path` atomically. An immutable file that exists already is kept.
    fn put(&self, path: &str, bytes: &[u8], immutable: bool) -> std::io::Result<()>;
}

/// A directory (served as is by any static web server).
#[derive(Debug, Clone)]
pub struct DirSink {
    root: PathBuf,
}

impl DirSink {
    /// Publishes under `root` (created if missing).
    pub fn new(root: &Path) -> std::io::Result<DirSink> {
        std::fs::create_dir_all(root)?;
        Ok(DirSink {
            root: root.to_path_buf(),
        })
    }
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

impl Sink for DirSink {
    fn get(&self, path: &str) -> std::io::Result<Option<Vec<u8>>> {
        match std::fs::read(self.root.join(path)) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn put(&self, path: &str, bytes: &[u8], immutable: bool) -> std::io::Result<()> {
        let to = self.root.join(path);
        if immutable && to.exists() {
            return Ok(());
        }
        let dir = to.parent().expect("a path under the root");
        std::fs::create_dir_all(dir)?;
        let tmp = dir.join(format!(
            ".{}.tmp-{}",
            to.file_name().and_then(|n| n.to_str()).unwrap_or("tile"),
            std::process::id()
        ));
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, &to)?;
        sync_dir(dir)
    }
}

/// Why publication failed. Nothing already published is damaged by a failure: the
/// checkpoint is written last.
#[derive(Debug, Error)]
pub enum PublishError {
    /// Opening the ledger.
    #[error(transparent)]
    Open(#[from] OpenError),
    /// Reading its entries.
    #[error(transparent)]
    Read(#[from] ledger::read::ReadError),
    /// Writing or reading the destination.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The system's error.
        source: std::io::Error,
    },
    /// The log cannot be published as tiles.
    #[error("{0}")]
    Refused(String),
    /// Witnessing is configured and no checkpoint has been cosigned yet.
    #[error("no checkpoint has been witnessed yet")]
    NotYet,
}

/// What a publication wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    /// The size the destination had.
    pub from: u64,
    /// The size it has now.
    pub to: u64,
    /// Files written (the checkpoint included).
    pub files: u64,
    /// Bytes written.
    pub bytes: u64,
}

/// A log's key rotations as a publisher learns them: the seqs of its `KeyRotated` entries
/// below `scanned`, and those whose `rotation/<seq>` file this publisher has written. A log
/// whose chain has one key has none, and is never scanned; one that rotated is scanned once
/// from its start (which also writes the files a destination published before they existed
/// lacks), then only its new entries.
#[derive(Debug, Default)]
pub struct Rotations {
    scanned: u64,
    seqs: Vec<u64>,
    written: std::collections::BTreeSet<u64>,
}

impl Rotations {
    /// Writes the `rotation/<seq>` file of every rotation below `size` not yet written: the
    /// log's first checkpoint covering it, as stored (FORMAT §12).
    fn publish(
        &mut self,
        snap: &Snapshot,
        sink: &dyn Sink,
        (from, size): (u64, u64),
        put: &mut impl FnMut(&str, &[u8], bool) -> Result<(), PublishError>,
    ) -> Result<(), PublishError> {
        if snap.keys_in_force()?.len() < 2 {
            self.scanned = self.scanned.max(size);
            return Ok(());
        }
        if self.scanned < size {
            for stored in snap.rows(self.scanned..size)? {
                let stored = stored?;
                if ledger::entry::EntryRef::parse(stored.bytes())
                    .is_ok_and(|e| e.header.kind == ledger::event::Kind::KeyRotated)
                {
                    self.seqs.push(stored.seq());
                }
            }
            self.scanned = size;
        }
        for &seq in self.seqs.iter().filter(|&&s| s < size) {
            let path = tiles::rotation_path(seq);
            // One the destination had before this publisher started: looked at once.
            if self.written.contains(&seq)
                || (seq < from
                    && sink
                        .get(&path)
                        .map_err(|source| PublishError::Io {
                            what: format!("reading {path}"),
                            source,
                        })?
                        .is_some())
            {
                self.written.insert(seq);
                continue;
            }
            // Checkpoints end batches: the first one at or after seq + 1 covers it, and the
            // published size is one, so the search ends there at the latest.
            let mut note = None;
            for at in seq + 1..=size {
                if let Some(n) = snap.checkpoint(at)? {
                    note = Some(n);
                    break;
                }
            }
            let note = note.ok_or_else(|| {
                PublishError::Refused(format!(
                    "no checkpoint covers the key rotation at seq {seq} up to size {size}"
                ))
            })?;
            put(&path, note.as_bytes(), true)?;
            self.written.insert(seq);
        }
        Ok(())
    }
}

/// Publishes the log of `snap` up to its latest checkpoint to `sink`.
pub fn publish(snap: &Snapshot, sink: &dyn Sink) -> Result<Published, PublishError> {
    publish_upto(snap, sink, None, &mut Rotations::default())
}

/// Publishes the log of `snap` up to `checkpoint` (a size of the log and its note, which may
/// carry witness cosignatures), or its latest checkpoint. `rotations` is what an earlier
/// publication to the same destination learnt of the log's key rotations.
pub fn publish_upto(
    snap: &Snapshot,
    sink: &dyn Sink,
    checkpoint: Option<(u64, &str)>,
    rotations: &mut Rotations,
) -> Result<Published, PublishError> {
    if snap.tree_hash() != TreeHash::Sha256 {
        return Err(PublishError::Refused(
            "only format-version-2 ledgers (RFC 6962 SHA-256 tree) can be published as tlog-tiles; this one is version 1".into(),
        ));
    }
    let io = |what: String| move |source| PublishError::Io { what, source };
    let (size, note) = match checkpoint {
        Some((size, note)) if size <= snap.size() => (size, note.to_string()),
        Some((size, _)) => {
            return Err(PublishError::Refused(format!(
                "checkpoint size {size} is beyond the log ({})",
                snap.size()
            )));
        }
        None => {
            let size = snap.size();
            let note = snap
                .checkpoint(size)?
                .ok_or_else(|| PublishError::Refused(format!("no checkpoint at size {size}")))?;
            (size, note)
        }
    };
    let published = sink
        .get("checkpoint")
        .map_err(io("reading the published checkpoint".into()))?;
    let from = match &published {
        None => 0,
        Some(bytes) => {
            let cp = parse_note(bytes)
                .map_err(|e| {
                    PublishError::Refused(format!(
                        "the destination's checkpoint is not a checkpoint: {e}"
                    ))
                })?
                .checkpoint;
            if cp.origin != snap.origin() {
                return Err(PublishError::Refused(format!(
                    "the destination holds log {:?}, not {:?}",
                    cp.origin,
                    snap.origin()
                )));
            }
            if cp.size > size {
                return Err(PublishError::Refused(format!(
                    "the destination is at size {}, ahead of this ledger ({size})",
                    cp.size
                )));
            }
            cp.size
        }
    };
    let mut out = Published {
        from,
        to: size,
        files: 0,
        bytes: 0,
    };
    let mut put = |path: &str, bytes: &[u8], immutable: bool| -> Result<(), PublishError> {
        sink.put(path, bytes, immutable)
            .map_err(io(format!("writing {path}")))?;
        out.files += 1;
        out.bytes += bytes.len() as u64;
        Ok(())
    };
    for tile in tiles::tiles_between(from, size) {
        match tile.level {
            Some(_) => put(&tile.path(), &tiles::tile_bytes(snap, &tile)?, true)?,
            None => {
                let bundle = entry_bundle(snap, &tile, &mut put)?;
                put(&tile.path(), &bundle, true)?;
            }
        }
    }
    // Before the checkpoint that makes them needed.
    rotations.publish(snap, sink, (from, size), &mut put)?;
    // Same size, other bytes: the same checkpoint with more cosignatures.
    if from != size || published.as_deref() != Some(note.as_bytes()) {
        put("checkpoint", note.as_bytes(), false)?;
    }
    Ok(out)
}

/// The entry bundle `tile`, writing entries too large for it at their own path first.
fn entry_bundle(
    snap: &Snapshot,
    tile: &Tile,
    put: &mut impl FnMut(&str, &[u8], bool) -> Result<(), PublishError>,
) -> Result<Vec<u8>, PublishError> {
    let first = tile.first_leaf();
    let mut bundle = Vec::new();
    for stored in snap.rows(first..first + tile.width)? {
        let stored = stored?;
        if !tiles::bundle_entry(&mut bundle, stored.bytes()) {
            put(&tiles::large_entry_path(stored.seq()), stored.bytes(), true)?;
        }
    }
    Ok(bundle)
}

impl PublishError {
    /// Whether the destination did not answer in time.
    pub fn is_timeout(&self) -> bool {
        matches!(self, PublishError::Io { source, .. } if source.kind() == std::io::ErrorKind::TimedOut)
    }
}
