//! The replay snapshots the writer leaves beside the database (`crate::replay_cache`).

use crate::materialize::Ledger;
use crate::replay_cache::{Cache, NewMark};
use std::path::Path;

/// Replay snapshots of the live state, written beside the database each time the log crosses
/// a multiple of `every` entries (`crate::replay_cache`), so `replay` on this database starts
/// near any point without a first full fold. The state is encoded on the writer thread (about
/// a millisecond on a 1M-entry log); the file is written by a thread of its own, so its IO
/// stays off the commit path. Losing a snapshot costs only speed.
pub(super) struct Snapshots {
    tx: Option<std::sync::mpsc::SyncSender<NewMark>>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// Hash of entry 0: binds the cache to this log.
    genesis: [u8; 32],
    every: u64,
    /// `size / every` when the last snapshot was taken (or at start).
    block: u64,
}

impl Snapshots {
    pub(super) fn start(db: &Path, ledger: &Ledger, every: u64) -> Snapshots {
        let genesis = ledger
            .store()
            .snapshot()
            .ok()
            .and_then(|s| s.rows(0..1).ok()?.next()?.ok()?.hash())
            .map(|h| *h.as_bytes())
            .unwrap_or_default();
        let (tx, rx) = std::sync::mpsc::sync_channel::<NewMark>(2);
        let db = db.to_path_buf();
        let thread = std::thread::Builder::new()
            .name("fleet-ledger-snapshots".into())
            .spawn(move || {
                let mut warned = false;
                while let Ok(mark) = rx.recv() {
                    let seq = mark.seq;
                    if let Err(e) = Cache::open(&db).append(&genesis, &[mark])
                        && !warned
                    {
                        warned = true;
                        tracing::warn!(seq, error = %e, path = %crate::replay_cache::cache_path(&db).display(), "replay snapshot not written (replays fold further; not warning again)");
                    }
                }
            })
            .ok();
        Snapshots {
            tx: thread.as_ref().map(|_| tx),
            thread,
            genesis,
            every,
            block: ledger.store().size() / every,
        }
    }

    /// After a commit: hands a snapshot to the file thread when the log crossed a multiple.
    /// (See `Drop`: the writer's exit waits for the file thread to finish.)
    pub(super) fn after_commit(&mut self, ledger: &Ledger) {
        let store = ledger.store();
        let block = store.size() / self.every;
        if block <= self.block || self.genesis == [0; 32] {
            return;
        }
        self.block = block;
        if let Some(tx) = &self.tx {
            // A full channel (the disk is slow) skips this one rather than wait.
            let _ = tx.try_send(NewMark {
                seq: store.size(),
                at: store.last_time(),
                hash: *store.head().as_bytes(),
                offset: 0,
                body: ledger.state().snapshot(),
            });
        }
    }
}

/// The writer stops after the file thread has written what it was given.
impl Drop for Snapshots {
    fn drop(&mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
