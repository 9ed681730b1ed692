//! `Model<K, V>`: one read model, an ordered map that remembers which rows changed since the
//! last flush, so the append hook writes only those rows.

use std::collections::BTreeMap;
use std::ops::Index;

use ledger::tables::{RowVisitor, TableError, TableReader, TableWriter};
use serde::Serialize;
use serde::de::DeserializeOwned;

fn config() -> impl bincode::config::Config {
    bincode::config::standard()
}

/// Encodes a key or row (bincode 2 standard, like entry payloads).
pub fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    bincode::serde::encode_to_vec(v, config()).expect("encoding a row into a Vec cannot fail")
}

/// Encodes onto the end of `buf`.
pub(crate) fn encode_append<T: Serialize>(v: &T, buf: &mut Vec<u8>) {
    bincode::serde::encode_into_std_write(v, buf, config())
        .expect("encoding a row into a Vec cannot fail");
}

/// Encodes into `buf`, replacing what it held (reuses its allocation).
pub(crate) fn encode_into<T: Serialize>(v: &T, buf: &mut Vec<u8>) {
    buf.clear();
    encode_append(v, buf);
}

/// Decodes a key or row, refusing trailing bytes.
pub fn decode<T: DeserializeOwned>(table: &str, bytes: &[u8]) -> Result<T, TableError> {
    let (v, n) =
        bincode::serde::decode_from_slice::<T, _>(bytes, config()).map_err(|e| TableError {
            table: table.to_string(),
            reason: format!("undecodable row: {e}"),
        })?;
    if n != bytes.len() {
        return Err(TableError {
            table: table.to_string(),
            reason: "row has trailing bytes".into(),
        });
    }
    Ok(v)
}

/// Data kept beside a state that is not part of it: scratch buffers, pending writes, change
/// flags, counts of rows not held. Two states that differ only here are equal, so equality
/// means "the same rows", which is what rebuild, replay and `check` compare.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Aside<T>(pub T);

impl<T> PartialEq for Aside<T> {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}
impl<T> Eq for Aside<T> {}

impl<T> std::ops::Deref for Aside<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}
impl<T> std::ops::DerefMut for Aside<T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.0
    }
}

/// The dirty-key list's first compaction point (see [`mark`]).
const MIN_COMPACT: usize = 4096;

/// Pushes `k` onto a model's changed-key list, dropping repeats whenever the list doubles,
/// so a tracked state that is rarely flushed stays bounded by the distinct keys it changed.
/// (A free function so it can borrow the list beside a row borrowed from the same model.)
fn mark<K: Ord>(dirty: &mut Vec<K>, compact_at: &mut usize, k: K) {
    dirty.push(k);
    if dirty.len() >= *compact_at {
        dirty.sort_unstable();
        dirty.dedup();
        *compact_at = (2 * dirty.len()).max(MIN_COMPACT);
    }
}

/// One read model.
#[derive(Clone, Debug)]
pub struct Model<K, V> {
    rows: BTreeMap<K, V>,
    /// Keys changed since the last flush, with repeats: pushing is cheaper than a sorted
    /// insert (these keys compare strings), and [`Model::flush`] sorts them once.
    dirty: Vec<K>,
    /// Length at which `dirty` is next compacted (see [`Model::mark`]).
    compact_at: usize,
    /// Whether to remember changed rows (off while rebuilding: every row is written anyway).
    track: bool,
}

impl<K, V> Default for Model<K, V> {
    fn default() -> Self {
        Model {
            rows: BTreeMap::new(),
            dirty: Vec::new(),
            compact_at: MIN_COMPACT,
            track: true,
        }
    }
}

/// Rows only: what changed since the last flush does not make two models different.
impl<K: PartialEq, V: PartialEq> PartialEq for Model<K, V> {
    fn eq(&self, other: &Self) -> bool {
        self.rows == other.rows
    }
}
impl<K: Eq, V: Eq> Eq for Model<K, V> {}

impl<K: Ord + Clone, V> Index<&K> for Model<K, V> {
    type Output = V;
    fn index(&self, k: &K) -> &V {
        &self.rows[k]
    }
}

impl<K: Ord + Clone + Serialize + DeserializeOwned, V: Serialize + DeserializeOwned> Model<K, V> {
    /// A row.
    pub fn get(&self, k: &K) -> Option<&V> {
        self.rows.get(k)
    }
    /// Whether a row exists.
    pub fn contains_key(&self, k: &K) -> bool {
        self.rows.contains_key(k)
    }
    /// Whether changed rows are remembered.
    pub fn tracking(&self) -> bool {
        self.track
    }

    /// The rows.
    pub fn rows(&self) -> &BTreeMap<K, V> {
        &self.rows
    }

    /// A model holding these rows, remembering none as changed.
    pub fn from_rows(rows: BTreeMap<K, V>, track: bool) -> Model<K, V> {
        Model {
            rows,
            dirty: Vec::new(),
            compact_at: MIN_COMPACT,
            track,
        }
    }

    /// Stops (or resumes) remembering changed rows.
    pub fn set_tracking(&mut self, track: bool) {
        self.track = track;
        if !track {
            self.dirty.clear();
        }
    }
    /// Remembers `k` as changed (see [`mark`]).
    fn mark(&mut self, k: K) {
        mark(&mut self.dirty, &mut self.compact_at, k);
    }

    /// A row, for changing (marks it changed).
    pub fn get_mut(&mut self, k: &K) -> Option<&mut V> {
        let v = self.rows.get_mut(k)?;
        // A row changed again right after itself (a counter, a host's next report) is
        // remembered once: no clone of its key.
        if self.track && self.dirty.last() != Some(k) {
            mark(&mut self.dirty, &mut self.compact_at, k.clone());
        }
        Some(v)
    }
    /// Inserts or replaces a row.
    pub fn insert(&mut self, k: K, v: V) {
        if self.track {
            self.mark(k.clone());
        }
        self.rows.insert(k, v);
    }
    /// Inserts a row only if its key is absent (one search). Returns whether it inserted.
    pub fn insert_new(&mut self, k: K, v: impl FnOnce() -> V) -> bool {
        match self.rows.entry(k) {
            std::collections::btree_map::Entry::Occupied(_) => false,
            std::collections::btree_map::Entry::Vacant(e) => {
                let k = self.track.then(|| e.key().clone());
                e.insert(v());
                if let Some(k) = k {
                    self.mark(k);
                }
                true
            }
        }
    }

    /// Removes a row.
    pub fn remove(&mut self, k: &K) -> Option<V> {
        let v = self.rows.remove(k)?;
        if self.track {
            self.mark(k.clone());
        }
        Some(v)
    }
    /// Rows in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.rows.iter()
    }
    /// Values in key order.
    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.rows.values()
    }
    /// Rows with keys in a range.
    pub fn range<R: std::ops::RangeBounds<K>>(&self, r: R) -> impl Iterator<Item = (&K, &V)> {
        self.rows.range(r)
    }
    /// Number of rows.
    pub fn len(&self) -> usize {
        self.rows.len()
    }
    /// Whether empty.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
    /// The keys changed since the last flush, sorted and distinct; forgets them (the caller
    /// writes their rows).
    fn take_dirty(&mut self) -> Vec<K> {
        let mut dirty = std::mem::take(&mut self.dirty);
        self.compact_at = MIN_COMPACT;
        dirty.sort_unstable();
        dirty.dedup();
        dirty
    }

    /// Writes the rows changed since the last flush.
    pub fn flush(
        &mut self,
        table: &'static str,
        w: &mut dyn TableWriter,
    ) -> Result<(), TableError> {
        let (mut key, mut row) = (Vec::new(), Vec::new());
        for k in self.take_dirty() {
            encode_into(&k, &mut key);
            match self.rows.get(&k) {
                Some(v) => {
                    encode_into(v, &mut row);
                    w.put(table, &key, &row)?
                }
                None => w.delete(table, &key)?,
            }
        }
        Ok(())
    }

    /// Writes every row (a rebuild, into a table it cleared first).
    pub fn write_all(
        &mut self,
        table: &'static str,
        w: &mut dyn TableWriter,
    ) -> Result<(), TableError> {
        for (k, v) in &self.rows {
            w.put(table, &encode(k), &encode(v))?;
        }
        self.dirty.clear();
        Ok(())
    }

    /// Loads a table.
    pub fn load(table: &'static str, r: &dyn TableReader) -> Result<Model<K, V>, TableError> {
        Model::load_filtered(table, r, |_, _| true)
    }

    /// Loads the rows of a table that `keep` accepts (the others stay in the table only).
    pub fn load_filtered(
        table: &'static str,
        r: &dyn TableReader,
        mut keep: impl FnMut(&K, &V) -> bool,
    ) -> Result<Model<K, V>, TableError> {
        let mut rows = BTreeMap::new();
        r.scan(table, &mut |k, v| {
            let (k, v) = (decode(table, k)?, decode(table, v)?);
            if keep(&k, &v) {
                rows.insert(k, v);
            }
            Ok(())
        })?;
        Ok(Model::from_rows(rows, true))
    }

    /// The first difference from the stored table: the key (decoded for humans) and what
    /// differs, or None when identical.
    pub fn diff(
        &self,
        table: &'static str,
        r: &dyn TableReader,
    ) -> Result<Option<String>, TableError>
    where
        K: std::fmt::Debug,
    {
        let expected = self
            .rows
            .iter()
            .map(|(k, v)| (encode(k), encode(v), format!("key {k:?}")))
            .collect();
        diff_rows(table, expected, r, |k| {
            decode::<K>(table, k).ok().map(|k| format!("key {k:?}"))
        })
    }
}

/// The first difference between `expected` rows (encoded key, encoded value, the key for
/// humans) and the stored table, or None. `show` names a stored key for humans (None: it
/// does not decode).
pub fn diff_rows(
    table: &'static str,
    expected: Vec<(Vec<u8>, Vec<u8>, String)>,
    r: &dyn TableReader,
    show: impl Fn(&[u8]) -> Option<String>,
) -> Result<Option<String>, TableError> {
    diff_scanned(expected, |f| r.scan(table, f), show, |_| false)
}

/// [`diff_rows`] against the stored rows `scan` visits in key order (a whole table or one
/// key range), passing over those `skip` names (compared already).
pub(crate) fn diff_scanned(
    mut expected: Vec<(Vec<u8>, Vec<u8>, String)>,
    scan: impl FnOnce(&mut RowVisitor<'_>) -> Result<(), TableError>,
    show: impl Fn(&[u8]) -> Option<String>,
    skip: impl Fn(&[u8]) -> bool,
) -> Result<Option<String>, TableError> {
    // Stored tables are ordered by encoded key bytes, which is not the typed order.
    expected.sort_by(|a, b| a.0.cmp(&b.0));
    let mut expected = expected.into_iter();
    let stored = |k: &[u8]| match show(k) {
        Some(k) => format!("{k}: stored but not in the fold"),
        None => "an undecodable stored key".to_string(),
    };
    let mut first: Option<String> = None;
    scan(&mut |k, v| {
        if first.is_some() || skip(k) {
            return Ok(());
        }
        match expected.next() {
            Some((ek, ev, key)) if ek == k => {
                if ev != v {
                    first = Some(format!("{key}: stored row differs from the fold"));
                }
            }
            Some((ek, _, key)) => {
                first = Some(if ek.as_slice() < k {
                    format!("{key}: missing from the stored table")
                } else {
                    stored(k)
                });
            }
            None => first = Some(stored(k)),
        }
        Ok(())
    })?;
    if first.is_none()
        && let Some((_, _, key)) = expected.next()
    {
        first = Some(format!("{key}: missing from the stored table"));
    }
    Ok(first)
}

/// A model kept in a table of its own: what the state does with each of its tables
/// (see `stored_tables!` in lib.rs).
pub(crate) trait Stored {
    /// Turns change tracking on or off.
    fn set_tracking(&mut self, track: bool);
    /// Writes the rows changed since the last flush.
    fn flush(&mut self, table: &'static str, w: &mut dyn TableWriter) -> Result<(), TableError>;
    /// Writes every row (a rebuild, into a table it cleared first).
    fn write_all(&mut self, table: &'static str, w: &mut dyn TableWriter)
    -> Result<(), TableError>;
    /// The first difference from the stored table, or None.
    fn diff(&self, table: &'static str, r: &dyn TableReader) -> Result<Option<String>, TableError>;
}

/// Each model's own methods, behind the common trait.
macro_rules! stored_by_inherent_methods {
    ($([$($generics:tt)*] $ty:ty),* $(,)?) => {$(
        impl<$($generics)*> Stored for $ty {
            fn set_tracking(&mut self, track: bool) {
                <$ty>::set_tracking(self, track)
            }
            fn flush(&mut self, table: &'static str, w: &mut dyn TableWriter) -> Result<(), TableError> {
                <$ty>::flush(self, table, w)
            }
            fn write_all(&mut self, table: &'static str, w: &mut dyn TableWriter) -> Result<(), TableError> {
                <$ty>::write_all(self, table, w)
            }
            fn diff(&self, table: &'static str, r: &dyn TableReader) -> Result<Option<String>, TableError> {
                <$ty>::diff(self, table, r)
            }
        }
    )*};
}

stored_by_inherent_methods! {
    [K: Ord + Clone + Serialize + DeserializeOwned + std::fmt::Debug, V: Serialize + DeserializeOwned] Model<K, V>,
    [] crate::Hosts,
    [] crate::Deferrals,
}
