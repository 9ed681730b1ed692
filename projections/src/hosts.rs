//! `Hosts`: the host rollout records, held by rollout then host.
//!
//! The stored table ([`tables::HOSTS`](crate::tables::HOSTS)) is keyed by (rollout, host) like
//! any model; in memory the records are grouped by rollout because that is how they are
//! reached: a join, a report or a decision names one rollout (a few dozen live at most), then
//! one host among its fleet; a rollout's records are listed and dropped together. A flat map
//! of (rollout, host) keys compared two rollout-id strings at every level of a 150k-row tree,
//! cloned three strings to remember each change, and sorted those keys again at every flush.
//! Here a change sets a flag on its record and counts it on its rollout, and a flush walks the
//! rollouts with changes, encoding each rollout's key prefix once.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;

use ledger::domain::RolloutId;
use ledger::tables::{TableError, TableReader, TableWriter};

use crate::host::HostRecord;
use crate::model::{Aside, decode, diff_scanned, encode, encode_append, encode_into};

/// A record and whether it changed since the last flush.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Slot {
    /// Boxed: a record is ~500 bytes, and a B-tree node moves its values on every insert
    /// before them and on every split (nearly half of a join's insert).
    rec: Box<HostRecord>,
    dirty: Aside<bool>,
}

/// One rollout's records.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Group {
    hosts: BTreeMap<String, Slot>,
    /// How many of them are flagged dirty.
    dirty: Aside<usize>,
    /// The rollout is Pruned: its records no longer change ([`Hosts::freeze`]).
    frozen: Aside<bool>,
}

/// The host records, by rollout then host, remembering which changed since the last flush.
/// Records are never removed by a fold (a host stays in a rollout it joined); only memory
/// drops them ([`Hosts::forget_rollout`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hosts {
    by_rollout: BTreeMap<RolloutId, Group>,
    /// Whether to remember changed records (off while rebuilding: every row is written).
    track: bool,
}

impl Default for Hosts {
    fn default() -> Self {
        Hosts {
            by_rollout: BTreeMap::new(),
            track: true,
        }
    }
}

impl Hosts {
    /// A host's record in a rollout.
    pub fn get(&self, rollout: &RolloutId, host: &str) -> Option<&HostRecord> {
        Some(&self.by_rollout.get(rollout)?.hosts.get(host)?.rec)
    }

    /// A record, for changing (remembers it as changed).
    pub(crate) fn get_mut(&mut self, rollout: &RolloutId, host: &str) -> Option<&mut HostRecord> {
        let group = self.by_rollout.get_mut(rollout).filter(|g| !*g.frozen)?;
        let slot = group.hosts.get_mut(host)?;
        if self.track && !*slot.dirty {
            *slot.dirty = true;
            *group.dirty += 1;
        }
        Some(&mut slot.rec)
    }

    /// Inserts `new()` unless the host already has a record in the rollout, or the rollout
    /// is frozen, or it has no records here and `retired()` says it was pruned (its records
    /// left memory). Returns whether it inserted.
    pub(crate) fn insert_new(
        &mut self,
        rollout: &RolloutId,
        host: &str,
        new: impl FnOnce() -> HostRecord,
        retired: impl FnOnce() -> bool,
    ) -> bool {
        let group = match self.by_rollout.get_mut(rollout) {
            Some(group) if *group.frozen => return false,
            Some(group) => group,
            // Once per rollout: the first join, or a join after its records were retired.
            None if retired() => return false,
            None => self.by_rollout.entry(rollout.clone()).or_default(),
        };
        // One search with an owned key: a join is nearly always new.
        match group.hosts.entry(host.to_string()) {
            Entry::Occupied(_) => false,
            Entry::Vacant(e) => {
                e.insert(Slot {
                    rec: Box::new(new()),
                    dirty: Aside(self.track),
                });
                *group.dirty += usize::from(self.track);
                true
            }
        }
    }

    /// The records of one rollout, by host name.
    pub fn of_rollout(&self, rollout: &RolloutId) -> impl Iterator<Item = &HostRecord> {
        self.by_rollout
            .get(rollout)
            .into_iter()
            .flat_map(|g| g.hosts.values().map(|s| &*s.rec))
    }

    /// Every record by (rollout, host), in that order.
    pub fn iter(&self) -> impl Iterator<Item = ((&RolloutId, &String), &HostRecord)> {
        self.by_rollout
            .iter()
            .flat_map(|(r, g)| g.hosts.iter().map(move |(h, s)| ((r, h), &*s.rec)))
    }

    /// Every record, by (rollout, host).
    pub fn values(&self) -> impl Iterator<Item = &HostRecord> {
        self.by_rollout
            .values()
            .flat_map(|g| g.hosts.values().map(|s| &*s.rec))
    }

    /// Number of records held.
    pub fn len(&self) -> usize {
        self.by_rollout.values().map(|g| g.hosts.len()).sum()
    }

    /// Whether none are held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether changed records are remembered.
    pub fn tracking(&self) -> bool {
        self.track
    }

    /// Stops (or resumes) remembering changed records.
    pub(crate) fn set_tracking(&mut self, track: bool) {
        if self.track && !track {
            self.clean();
        }
        self.track = track;
    }

    fn clean(&mut self) {
        for group in self.by_rollout.values_mut().filter(|g| *g.dirty > 0) {
            group.hosts.values_mut().for_each(|s| *s.dirty = false);
            *group.dirty = 0;
        }
    }

    /// Marks a Pruned rollout's records as final: folds no longer change or add to them.
    pub(crate) fn freeze(&mut self, rollout: &RolloutId) {
        if let Some(group) = self.by_rollout.get_mut(rollout) {
            *group.frozen = true;
        }
    }

    /// Takes a rollout's records out (an untracked fold handing a Pruned rollout's rows to
    /// be written or compared), by host name.
    pub(crate) fn take_rollout(&mut self, rollout: &RolloutId) -> Vec<(String, HostRecord)> {
        let Some(group) = self.by_rollout.remove(rollout) else {
            return Vec::new();
        };
        debug_assert_eq!(*group.dirty, 0, "taking unflushed records");
        group
            .hosts
            .into_iter()
            .map(|(h, slot)| (h, *slot.rec))
            .collect()
    }

    /// Drops a rollout's records from memory only (the stored table keeps them); returns how
    /// many. The caller flushes first, so no pending change is lost.
    pub(crate) fn forget_rollout(&mut self, rollout: &RolloutId) -> usize {
        let Some(group) = self.by_rollout.remove(rollout) else {
            return 0;
        };
        debug_assert_eq!(*group.dirty, 0, "forgetting unflushed records");
        group.hosts.len()
    }

    /// Keeps only the rollouts `keep` accepts; returns how many records it dropped.
    pub(crate) fn retain_rollouts(&mut self, mut keep: impl FnMut(&RolloutId) -> bool) -> usize {
        let before = self.len();
        self.by_rollout.retain(|r, _| keep(r));
        before - self.len()
    }

    /// Writes the records changed since the last flush.
    pub(crate) fn flush(
        &mut self,
        table: &'static str,
        w: &mut dyn TableWriter,
    ) -> Result<(), TableError> {
        let (mut key, mut row) = (Vec::new(), Vec::new());
        for (rollout, group) in self.by_rollout.iter_mut().filter(|(_, g)| *g.dirty > 0) {
            // The key is the tuple's encoding: the rollout's then the host's, back to back.
            key.clear();
            encode_append(rollout, &mut key);
            let prefix = key.len();
            let mut left = *group.dirty;
            for (host, slot) in &mut group.hosts {
                if !*slot.dirty {
                    continue;
                }
                *slot.dirty = false;
                key.truncate(prefix);
                encode_append(host, &mut key);
                encode_into(&slot.rec, &mut row);
                w.put(table, &key, &row)?;
                left -= 1;
                if left == 0 {
                    break;
                }
            }
            *group.dirty = 0;
        }
        Ok(())
    }

    /// Writes every record held (a rebuild, into a table it cleared first).
    pub(crate) fn write_all(
        &mut self,
        table: &'static str,
        w: &mut dyn TableWriter,
    ) -> Result<(), TableError> {
        for ((r, h), rec) in self.iter() {
            w.put(table, &encode(&(r, h)), &encode(rec))?;
        }
        self.clean();
        Ok(())
    }

    /// Puts a record read from a table or snapshot (so not changed since a flush).
    fn put_clean(&mut self, rollout: RolloutId, host: String, rec: HostRecord) {
        let slot = Slot {
            rec: Box::new(rec),
            dirty: Aside(false),
        };
        let group = self.by_rollout.entry(rollout).or_default();
        group.hosts.insert(host, slot);
    }

    /// Loads the records of the given rollouts only, each by a range read of its key
    /// prefix: the cost follows those rollouts' fleets, not the table (which holds every
    /// host of every rollout in history).
    pub(crate) fn load_rollouts<'a>(
        table: &'static str,
        r: &dyn TableReader,
        rollouts: impl IntoIterator<Item = &'a RolloutId>,
    ) -> Result<Hosts, TableError> {
        let mut hosts = Hosts::default();
        let mut prefix = Vec::new();
        for rollout in rollouts {
            encode_into(rollout, &mut prefix);
            r.scan_prefix(table, &prefix, &mut |k, v| {
                let (rollout, host): (RolloutId, String) = decode(table, k)?;
                hosts.put_clean(rollout, host, decode(table, v)?);
                Ok(())
            })?;
        }
        Ok(hosts)
    }

    /// Loads every record of the table.
    pub(crate) fn load(table: &'static str, r: &dyn TableReader) -> Result<Hosts, TableError> {
        let mut hosts = Hosts::default();
        r.scan(table, &mut |k, v| {
            let (rollout, host): (RolloutId, String) = decode(table, k)?;
            hosts.put_clean(rollout, host, decode(table, v)?);
            Ok(())
        })?;
        Ok(hosts)
    }

    /// Untracked records from (rollout, host) → record rows (a replay snapshot's).
    pub(crate) fn from_rows(
        rows: impl IntoIterator<Item = ((RolloutId, String), HostRecord)>,
    ) -> Hosts {
        let mut hosts = Hosts {
            track: false,
            ..Hosts::default()
        };
        for ((r, h), rec) in rows {
            hosts.put_clean(r, h, rec);
        }
        hosts
    }

    /// The first difference from the stored table, or None when identical.
    pub(crate) fn diff(
        &self,
        table: &'static str,
        r: &dyn TableReader,
    ) -> Result<Option<String>, TableError> {
        self.diff_except(table, r, |_| false)
    }

    /// [`Hosts::diff`], passing over the stored rows of the rollouts `compared` names
    /// (their records were compared, and dropped, when they were pruned).
    pub(crate) fn diff_except(
        &self,
        table: &'static str,
        r: &dyn TableReader,
        compared: impl Fn(&RolloutId) -> bool,
    ) -> Result<Option<String>, TableError> {
        let expected = self
            .iter()
            .map(|(k, rec)| (encode(&k), encode(rec), format!("key {k:?}")))
            .collect();
        let show = |k: &[u8]| {
            decode::<(RolloutId, String)>(table, k)
                .ok()
                .map(|k| format!("key {k:?}"))
        };
        let skip =
            |k: &[u8]| decode::<(RolloutId, String)>(table, k).is_ok_and(|(r, _)| compared(&r));
        diff_scanned(expected, |f| r.scan(table, f), show, skip)
    }

    /// The first difference between a retired rollout's records and its stored rows.
    pub(crate) fn diff_retired(
        table: &'static str,
        retired: &crate::RetiredHosts,
        r: &dyn TableReader,
    ) -> Result<Option<String>, TableError> {
        let prefix = encode(&retired.rollout);
        let expected = retired
            .hosts
            .iter()
            .map(|(h, rec)| {
                let key = (&retired.rollout, h);
                (encode(&key), encode(rec), format!("key {key:?}"))
            })
            .collect();
        diff_scanned(
            expected,
            |f| r.scan_prefix(table, &prefix, f),
            |k| {
                decode::<(RolloutId, String)>(table, k)
                    .ok()
                    .map(|k| format!("key {k:?}"))
            },
            |_| false,
        )
    }
}
