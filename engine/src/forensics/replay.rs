//! The projections at any point of the log, from the nearest replay snapshot or from entry 0.

use super::{ForensicsError, Source, entries, entry_hash_at, first_entry_hash, stored};
use ledger::domain::Micros;
use ledger::read::Logged;
use ledger::store::ReadOnlyStore;
use projections::State;

/// The projections after entry `seq` (inclusive), or after the last entry at or before
/// `time`: a full fold from entry 0, every row included. [`replay`] is the fast path.
pub fn replay_full(
    source: Source<'_>,
    seq: Option<u64>,
    time: Option<Micros>,
) -> Result<State, ForensicsError> {
    let mut state = State::untracked().without_index();
    for item in entries(source)? {
        let item = item?;
        if seq.is_some_and(|s| item.seq > s) || time.is_some_and(|t| item.at > t) {
            break;
        }
        state.apply(item.seq, item.at, &item.event);
    }
    state.set_tracking(true);
    Ok(state)
}

/// What [`replay`] found.
#[derive(Debug)]
pub struct Replayed {
    /// The projections at the point, without the host records of Pruned rollouts.
    pub state: State,
    /// Host records of Pruned rollouts left out (they never change after pruning;
    /// `timeline --rollout` and `why` show them, [`replay_full`] includes them).
    pub pruned_hosts_omitted: usize,
    /// The snapshot the fold started from (entries in it), if one was used.
    pub from_snapshot: Option<u64>,
    /// Entries folded from there.
    pub folded: u64,
    /// Why the snapshot cache could not be written, if it could not (replay still worked).
    pub cache_warning: Option<String>,
}

/// The point of a replay.
#[derive(Clone, Copy, Debug, Default)]
pub struct Point {
    /// Through this entry (inclusive).
    pub seq: Option<u64>,
    /// Through the last entry recorded at or before this CP time.
    pub time: Option<Micros>,
}

impl Point {
    fn includes(&self, seq: u64, at: Micros) -> bool {
        self.seq.is_none_or(|s| seq <= s) && self.time.is_none_or(|t| at <= t)
    }
}

/// Snapshots a replay writes at most per cache: on a longer log it spaces them further
/// apart (a multiple of the spacing asked for), so the cache stays a bounded fraction of the
/// log while a warm replay still folds at most 1/`MAX_SNAPSHOTS` of it.
pub(crate) const MAX_SNAPSHOTS: u64 = 1024;
/// Snapshots a replay gathers before appending them to the cache (one sync per append)...
const APPEND_EVERY: usize = 8;
/// ...or fewer, once they hold this many bytes: on a long history each is a few MB.
const APPEND_BYTES: usize = 8 << 20;
/// Entries the decoding thread hands over at a time.
const DECODE_BATCH: usize = 1024;

/// An entry decoded by a replay's reading thread, with where its record is and, at a
/// snapshot point, its hash.
struct Decoded {
    item: Logged,
    offset: u64,
    hash: Option<[u8; 32]>,
}

/// The spacing of the snapshots a replay of `source` writes: `every`, or a multiple of it
/// that keeps a database's cache within [`MAX_SNAPSHOTS`].
fn spacing(source: Source<'_>, every: u64) -> Result<u64, ForensicsError> {
    let size = match source {
        Source::Db(path) => ReadOnlyStore::open(path)?.snapshot()?.size(),
        Source::Bundle(_) => return Ok(every),
    };
    Ok(every * size.div_ceil(every * MAX_SNAPSHOTS).max(1))
}

/// The projections at a point, folded from the nearest replay snapshot
/// ([`crate::replay_cache`]) at or before it, or from entry 0 when there is none yet. Snapshots
/// of every `every` entries (normally [`crate::replay_cache::SNAPSHOT_EVERY`]) passed on the
/// way are added to the cache beside the source.
pub fn replay(source: Source<'_>, point: Point, every: u64) -> Result<Replayed, ForensicsError> {
    use crate::replay_cache::{Cache, NewMark};
    let path = match source {
        Source::Db(p) | Source::Bundle(p) => p,
    };
    let every = every.max(1);
    let mut cache = Cache::open(path);
    let genesis = first_entry_hash(source)?;
    // The nearest usable snapshot: one whose entry still hashes as recorded and whose body
    // is intact; a damaged body falls back to an earlier one. An entry that hashes otherwise
    // means another log (one forked from this one): the whole cache is dropped and rebuilt.
    let mut start = None;
    if let Some(genesis) = genesis {
        let marks: Vec<_> = cache.usable(&genesis, point.seq, point.time).collect();
        for mark in marks {
            if entry_hash_at(source, mark.seq - 1, mark.offset)? != Some(mark.hash) {
                cache.discard();
                break;
            }
            if let Ok(state) = cache.load(&mark) {
                start = Some((mark, state));
                break;
            }
        }
    }
    let from = start.as_ref().map(|(m, _)| (m.seq - 1, m.offset));
    let from_snapshot = start.as_ref().map(|(m, _)| m.seq);
    // Host records of rollouts pruned on the way leave memory at once: what the replay
    // shows leaves them out anyway, and on years of history they are nearly every row.
    let mut state = match start {
        Some((_, s)) => s,
        None => State::untracked().without_index(),
    }
    .dropping_retired();
    // Snapshots go to the cache a few at a time, not held until the end; on a long log
    // they are spaced so that the cache holds at most `MAX_SNAPSHOTS`.
    // (A fold that crosses no multiple of `every` writes none, whatever the spacing: a
    // replay from a nearby snapshot need not look at the log's size.)
    let start_seq = from.map_or(0, |(s, _)| s + 1);
    let crosses = point
        .seq
        .is_none_or(|s| (s + 1) / every > start_seq / every);
    let every = if crosses {
        spacing(source, every)?
    } else {
        every
    };
    let mut new: Vec<NewMark> = Vec::new();
    let mut cache_error = None;
    let mut flush = |cache: &mut Cache, new: &mut Vec<NewMark>| {
        if let (Some(g), None) = (genesis, &cache_error) {
            cache_error = cache.append(&g, new).err();
        }
        new.clear();
    };
    let mut folded = 0u64;
    // Two threads: one reads and decodes entries, the other folds them (and writes the
    // snapshots). Decoding is about half of a cold replay's work, and forensics runs on an
    // otherwise idle machine.
    std::thread::scope(|scope| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<Decoded>>(8);
        let reader = scope.spawn(move || -> Result<(), ForensicsError> {
            let mut batch = Vec::with_capacity(DECODE_BATCH);
            for entry in stored(source, from)? {
                let entry = entry?;
                // The resumed read starts at the snapshot's last entry, already folded in.
                if from.is_some_and(|(s, _)| entry.seq() == s) {
                    continue;
                }
                let item = entry.decode()?;
                if !point.includes(item.seq, item.at) {
                    break;
                }
                let hash = (entry.seq() + 1)
                    .is_multiple_of(every)
                    .then(|| entry.hash())
                    .flatten()
                    .map(|h| *h.as_bytes());
                let offset = entry.offset();
                batch.push(Decoded { item, offset, hash });
                if batch.len() == DECODE_BATCH {
                    let full = std::mem::replace(&mut batch, Vec::with_capacity(DECODE_BATCH));
                    if tx.send(full).is_err() {
                        break;
                    }
                }
            }
            if !batch.is_empty() {
                let _ = tx.send(batch);
            }
            Ok(())
        });
        for d in rx.iter().flatten() {
            let item = d.item;
            state.apply(item.seq, item.at, &item.event);
            folded += 1;
            let next = item.seq + 1;
            if let Some(hash) = d.hash
                && !cache.has(next)
            {
                new.push(NewMark {
                    seq: next,
                    at: item.at,
                    hash,
                    offset: d.offset,
                    body: state.snapshot(),
                });
                if new.len() >= APPEND_EVERY
                    || new.iter().map(|m| m.body.len()).sum::<usize>() >= APPEND_BYTES
                {
                    flush(&mut cache, &mut new);
                }
            }
        }
        reader
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })?;
    flush(&mut cache, &mut new);
    let cache_warning =
        cache_error.map(|e| format!("{}: {e}", crate::replay_cache::cache_path(path).display()));
    state.drop_pruned_hosts();
    let pruned_hosts_omitted = usize::try_from(state.forgotten_hosts()).unwrap_or(usize::MAX);
    state.set_tracking(true);
    Ok(Replayed {
        state,
        pruned_hosts_omitted,
        from_snapshot,
        folded,
        cache_warning,
    })
}
