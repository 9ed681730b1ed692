//! Publication as C2SP tlog-tiles (docs/FORMAT.md §11): `fleet-ledger publish --to DIR`
//! writes the log's `checkpoint`, hash tiles and entry bundles so that any tlog-tiles client,
//! witness or monitor can read and check it with no fleet-ledger code.
//!
//! Incremental and restartable: the destination's own `checkpoint` says how far it was
//! published; only the tiles completed since and the new partial tiles are written. Every
//! file but `checkpoint` is immutable once written (an existing one is left as it is); each
//! is written atomically (a temporary file, fsync, rename, fsync of the directory), and the
//! checkpoint last, so a reader never sees a checkpoint whose tiles are missing.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use ledger::checkpoint::parse_note;
use ledger::hash::TreeHash;
use ledger::store::{OpenError, Snapshot};
use ledger::tiles::{self, Tile};
use thiserror::Error;

/// Where tiles go.
pub trait Sink {
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
    /// Reading the ledger.
    #[error(transparent)]
    Open(#[from] OpenError),
    /// Writing or reading the destination.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The log cannot be published as tiles.
    #[error("{0}")]
    Refused(String),
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

/// Publishes the log of `snap` up to its latest checkpoint to `sink`.
pub fn publish(snap: &Snapshot, sink: &dyn Sink) -> Result<Published, PublishError> {
    if snap.tree_hash() != TreeHash::Sha256 {
        return Err(PublishError::Refused(
            "only format-version-2 ledgers (RFC 6962 SHA-256 tree) can be published as tlog-tiles; this one is version 1".into(),
        ));
    }
    let io = |what: String| move |source| PublishError::Io { what, source };
    let size = snap.size();
    let note = snap
        .checkpoint(size)?
        .ok_or_else(|| PublishError::Refused(format!("no checkpoint at size {size}")))?;
    let from = match sink
        .get("checkpoint")
        .map_err(io("reading the published checkpoint".into()))?
    {
        None => 0,
        Some(bytes) => {
            let cp = parse_note(&bytes)
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
    let mut put = |path: &str, bytes: &[u8], immutable: bool| {
        sink.put(path, bytes, immutable)
            .map_err(io(format!("writing {path}")))?;
        out.files += 1;
        out.bytes += bytes.len() as u64;
        Ok::<(), PublishError>(())
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
    if from != size {
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
    snap.for_each_entry(first..first + tile.width, |seq, bytes| {
        if !tiles::bundle_entry(&mut bundle, bytes) {
            put(&tiles::large_entry_path(seq), bytes, true)?;
        }
        Ok::<(), PublishError>(())
    })?;
    Ok(bundle)
}

/// The `publish` section of the config: the daemon publishes tiles as it commits.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishConfig {
    /// Directory to publish into (served by a static web server, or synced to a bucket).
    pub to: PathBuf,
    /// Publish at most this often, seconds (default 5); each publication covers every
    /// commit since the last.
    #[serde(default = "default_interval")]
    pub interval_secs: u64,
}

fn default_interval() -> u64 {
    5
}

/// The daemon's publisher: after commits, at most every `interval_secs`, publishes the latest
/// committed state from a read snapshot. The writer never waits on it; the gap shows in
/// `fleet_ledger_publication_lag_entries`, failures in the log and
/// `fleet_ledger_publication_failures_total` (the next round retries).
pub async fn run(cfg: PublishConfig, shared: std::sync::Arc<crate::writer::Shared>) {
    let sink = match DirSink::new(&cfg.to) {
        Ok(s) => std::sync::Arc::new(s),
        Err(e) => {
            tracing::error!(to = %cfg.to.display(), error = %e, "cannot publish: creating the directory failed");
            return;
        }
    };
    let every = std::time::Duration::from_secs(cfg.interval_secs.max(1));
    let mut committed = shared.committed.subscribe();
    let mut failing = false;
    loop {
        committed.mark_unchanged();
        let shared2 = std::sync::Arc::clone(&shared);
        let sink2 = std::sync::Arc::clone(&sink);
        let result = tokio::task::spawn_blocking(move || {
            let guard = shared2.reader.read().unwrap_or_else(|p| p.into_inner());
            let snap = guard
                .as_ref()
                .ok_or_else(|| PublishError::Refused("the ledger is being reopened".into()))?
                .snapshot()?;
            drop(guard);
            publish(&snap, sink2.as_ref())
        })
        .await;
        let m = &shared.metrics;
        match result {
            Ok(Ok(p)) => {
                m.published_entries.set(p.to as i64);
                let head = *shared.committed.borrow();
                m.publication_lag_entries
                    .set(head.saturating_sub(p.to) as i64);
                if failing {
                    tracing::info!(size = p.to, "publication works again");
                    failing = false;
                }
            }
            Ok(Err(e)) => {
                m.publication_failures.inc();
                if !failing {
                    tracing::warn!(to = %cfg.to.display(), error = %e, "publication failed; retrying");
                    failing = true;
                }
            }
            Err(e) => {
                m.publication_failures.inc();
                tracing::error!(error = %e, "publication panicked; retrying");
            }
        }
        tokio::time::sleep(every).await;
        // Nothing new since: wait for a commit.
        if !committed.has_changed().unwrap_or(false) && committed.changed().await.is_err() {
            return;
        }
    }
}
