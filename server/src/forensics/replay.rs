//! The projections at any point of the log, from the nearest replay snapshot or from entry 0.

use super::*;

/// The projections after entry `seq` (inclusive), or after the last entry at or before
/// `time`: a full fold from entry 0, every row included. [`replay`] is the fast path.
pub fn replay_full(
    source: Source<'_>,
    seq: Option<u64>,
    time: Option<Micros>,
) -> Result<State, ForensicsError> {
    let mut state = State::untracked().without_index();
    for_each(source, |item| {
        if seq.is_some_and(|s| item.seq > s) || time.is_some_and(|t| item.at > t) {
            return Ok(false);
        }
        state.apply(item.seq, item.at, &item.event);
        Ok(true)
    })?;
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

/// The projections at a point, folded from the nearest replay snapshot
/// ([`crate::snapshots`]) at or before it, or from entry 0 when there is none yet. Snapshots
/// of every `every` entries (normally [`crate::snapshots::SNAPSHOT_EVERY`]) passed on the
/// way are added to the cache beside the source.
pub fn replay(source: Source<'_>, point: Point, every: u64) -> Result<Replayed, ForensicsError> {
    use crate::snapshots::{Cache, NewMark, entry_hash};
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
    let mut state = match start {
        Some((_, s)) => s,
        None => State::untracked().without_index(),
    };
    let mut new: Vec<NewMark> = Vec::new();
    let mut folded = 0u64;
    for_each_raw(source, from, |seq, offset, bytes| {
        // The resumed read starts at the snapshot's last entry, already folded in.
        if from.is_some_and(|(s, _)| seq == s) {
            return Ok(true);
        }
        let item = decode(seq, bytes)?;
        if !point.includes(item.seq, item.at) {
            return Ok(false);
        }
        state.apply(item.seq, item.at, &item.event);
        folded += 1;
        let next = seq + 1;
        if next.is_multiple_of(every)
            && !cache.has(next)
            && let Some(hash) = entry_hash(bytes)
        {
            new.push(NewMark {
                seq: next,
                at: item.at,
                hash,
                offset,
                body: state.snapshot(),
            });
        }
        Ok(true)
    })?;
    let cache_warning = match genesis {
        Some(g) => cache
            .append(&g, &new)
            .err()
            .map(|e| format!("{}: {e}", crate::snapshots::cache_path(path).display())),
        None => None,
    };
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
