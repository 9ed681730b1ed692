//! `Deferrals`: the current gate block per (rollout, host), held and stored by rollout.
//!
//! A block is looked up and changed by rollout then host (few rollouts, then short host
//! names). The table ([`tables::DEFERRALS`](crate::tables::DEFERRALS)) holds one row per
//! rollout with blocked hosts: key = the rollout id, value = its (host, block) rows in host
//! order, encoded as a bincode map. Blocks are stored a rollout at a time because they change
//! a rollout at a time: one change upstream (a predecessor's state, a gating host's)
//! re-decides every waiting host of the rollout, and a row per host made such a batch ~1,100
//! B-tree writes into a table of at most a fleet's worth of rows.
//!
//! Rewriting a rollout's row re-encoded every blocked host, though a batch re-decides only
//! some of them; each host's encoded pair is therefore kept beside its row and re-encoded
//! only when the row changes (encoding was a sixth of the projections' time).

use std::collections::BTreeMap;

use ledger::domain::RolloutId;
use ledger::tables::{TableError, TableReader, TableWriter};

use crate::model::{Aside, decode, diff_rows, encode, encode_append};
use crate::rows::DeferralRow;

/// A block and its encoded (host, row) pair, empty when stale.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Slot {
    row: DeferralRow,
    encoded: Aside<Vec<u8>>,
}

impl Slot {
    fn new(row: DeferralRow) -> Slot {
        Slot {
            row,
            encoded: Aside::default(),
        }
    }
}

/// The current block per (rollout, host), remembering which rollouts changed since the last
/// flush.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Deferrals {
    /// Rollout → host → block. No rollout maps to an empty map.
    by_rollout: BTreeMap<RolloutId, BTreeMap<String, Slot>>,
    changed: Aside<Changed>,
    /// A rollout's value is encoded here, reused across flushes: a fresh ~100 KB buffer per
    /// flush came from the OS every time, and zeroing its pages cost more than the copying.
    value: Aside<Vec<u8>>,
}

impl Default for Deferrals {
    fn default() -> Self {
        Deferrals {
            by_rollout: BTreeMap::new(),
            changed: Aside(Changed {
                rollouts: Vec::new(),
                track: true,
            }),
            value: Aside::default(),
        }
    }
}

/// Rollouts whose rows changed since the last flush (repeats allowed; consecutive repeats,
/// the common case, are skipped).
#[derive(Clone, Debug)]
struct Changed {
    rollouts: Vec<RolloutId>,
    /// Off while rebuilding: every row is written anyway.
    track: bool,
}

impl Changed {
    fn mark(&mut self, rollout: &RolloutId) {
        if self.track && self.rollouts.last() != Some(rollout) {
            self.rollouts.push(rollout.clone());
        }
    }
}

/// A rollout's stored value: the map's length, then each host's cached (host, row) pair
/// (encoding the stale ones). The same bytes as encoding the map of rows.
fn group_value(hosts: &mut BTreeMap<String, Slot>, out: &mut Vec<u8>) {
    out.clear();
    encode_append(&(hosts.len() as u64), out);
    for (host, slot) in hosts {
        if slot.encoded.is_empty() {
            encode_append(&(host, &slot.row), &mut slot.encoded);
        }
        out.extend_from_slice(&slot.encoded);
    }
}

impl Deferrals {
    /// Untracked blocks from (rollout, host) → row rows (a replay snapshot's).
    pub(crate) fn from_rows(
        rows: impl IntoIterator<Item = ((RolloutId, String), DeferralRow)>,
    ) -> Deferrals {
        let mut d = Deferrals::default();
        d.changed.track = false;
        for ((r, h), row) in rows {
            d.by_rollout.entry(r).or_default().insert(h, Slot::new(row));
        }
        d
    }

    /// The block of a host in a rollout.
    pub fn get(&self, rollout: &RolloutId, host: &str) -> Option<&DeferralRow> {
        Some(&self.by_rollout.get(rollout)?.get(host)?.row)
    }

    /// Every block, by (rollout, host).
    pub fn iter(&self) -> impl Iterator<Item = ((&RolloutId, &String), &DeferralRow)> {
        self.by_rollout
            .iter()
            .flat_map(|(r, hosts)| hosts.iter().map(move |(h, s)| ((r, h), &s.row)))
    }

    /// Stops (or resumes) remembering changed rollouts.
    pub(crate) fn set_tracking(&mut self, track: bool) {
        self.changed.track = track;
        if !track {
            self.changed.rollouts.clear();
        }
    }

    /// Changes a host's block with `change`, or records `new()` when it has none.
    pub(crate) fn upsert(
        &mut self,
        rollout: &RolloutId,
        host: &str,
        change: impl FnOnce(&mut DeferralRow),
        new: impl FnOnce() -> DeferralRow,
    ) {
        let hosts = match self.by_rollout.get_mut(rollout) {
            Some(hosts) => hosts,
            None => self.by_rollout.entry(rollout.clone()).or_default(),
        };
        match hosts.get_mut(host) {
            Some(slot) => {
                change(&mut slot.row);
                slot.encoded.clear();
            }
            None => {
                hosts.insert(host.to_string(), Slot::new(new()));
            }
        }
        self.changed.mark(rollout);
    }

    /// Removes a host's block; returns whether it had one.
    pub(crate) fn remove(&mut self, rollout: &RolloutId, host: &str) -> bool {
        let Some(hosts) = self.by_rollout.get_mut(rollout) else {
            return false;
        };
        if hosts.remove(host).is_none() {
            return false;
        }
        if hosts.is_empty() {
            self.by_rollout.remove(rollout);
        }
        self.changed.mark(rollout);
        true
    }

    /// Removes every block of a rollout.
    pub(crate) fn remove_rollout(&mut self, rollout: &RolloutId) {
        if self.by_rollout.remove(rollout).is_some() {
            self.changed.mark(rollout);
        }
    }

    /// Rewrites the stored row of every rollout whose blocks changed.
    pub(crate) fn flush(
        &mut self,
        table: &'static str,
        w: &mut dyn TableWriter,
    ) -> Result<(), TableError> {
        let mut rollouts = std::mem::take(&mut self.changed.rollouts);
        rollouts.sort_unstable();
        rollouts.dedup();
        let value = &mut *self.value;
        for rollout in &rollouts {
            let key = encode(rollout);
            // A rollout's map is never left empty (see `Deferrals::remove`).
            match self.by_rollout.get_mut(rollout) {
                Some(hosts) => {
                    group_value(hosts, value);
                    w.put(table, &key, value)?;
                }
                None => w.delete(table, &key)?,
            }
        }
        Ok(())
    }

    /// Replaces the whole table with these blocks (a rebuild).
    pub(crate) fn write_all(
        &mut self,
        table: &'static str,
        w: &mut dyn TableWriter,
    ) -> Result<(), TableError> {
        self.changed.rollouts.clear();
        let value = &mut *self.value;
        for (rollout, hosts) in &mut self.by_rollout {
            group_value(hosts, value);
            w.put(table, &encode(rollout), value)?;
        }
        Ok(())
    }

    /// Loads the table.
    pub(crate) fn load(table: &'static str, r: &dyn TableReader) -> Result<Deferrals, TableError> {
        let mut d = Deferrals::default();
        r.scan(table, &mut |k, v| {
            let rollout: RolloutId = decode(table, k)?;
            let rows: Vec<(String, DeferralRow)> = decode(table, v)?;
            let hosts = d.by_rollout.entry(rollout).or_default();
            hosts.extend(rows.into_iter().map(|(h, row)| (h, Slot::new(row))));
            Ok(())
        })?;
        Ok(d)
    }

    /// The first difference from the stored table, or None when identical. Encodes afresh
    /// (as a map of rows), so a stale cached pair would show here.
    pub(crate) fn diff(
        &self,
        table: &'static str,
        r: &dyn TableReader,
    ) -> Result<Option<String>, TableError> {
        let expected = self
            .by_rollout
            .iter()
            .map(|(rollout, hosts)| {
                let rows: BTreeMap<&String, &DeferralRow> =
                    hosts.iter().map(|(h, s)| (h, &s.row)).collect();
                (
                    encode(rollout),
                    encode(&rows),
                    format!("rollout {rollout:?}"),
                )
            })
            .collect();
        diff_rows(table, expected, r, |k| {
            decode::<RolloutId>(table, k)
                .ok()
                .map(|r| format!("rollout {r:?}"))
        })
    }
}
