//! The small table interface projections are written against: named tables of byte keys and
//! byte values. The store implements it on redb inside the append transaction
//! ([`crate::store::RedbTables`]); [`MemTables`] implements it in memory for the fold tests.
//! Keeping it this small keeps `projections` free of redb.

use std::collections::BTreeMap;

/// A table operation failed (storage error text; the append aborts).
#[derive(Debug, thiserror::Error)]
#[error("projection table {table}: {reason}")]
pub struct TableError {
    /// Table name.
    pub table: String,
    /// What failed.
    pub reason: String,
}

/// Writes rows.
pub trait TableWriter {
    /// Inserts or replaces a row.
    fn put(&mut self, table: &'static str, key: &[u8], value: &[u8]) -> Result<(), TableError>;
    /// Removes a row (absent is fine).
    fn delete(&mut self, table: &'static str, key: &[u8]) -> Result<(), TableError>;
    /// Removes every row of a table.
    fn clear(&mut self, table: &'static str) -> Result<(), TableError>;
}

/// The row visitor of [`TableReader::scan`]: called with each key and value.
pub type RowVisitor<'a> = dyn FnMut(&[u8], &[u8]) -> Result<(), TableError> + 'a;

/// Reads rows in key order.
pub trait TableReader {
    /// Calls `f` for every row of `table` in key order.
    fn scan(&self, table: &'static str, f: &mut RowVisitor<'_>) -> Result<(), TableError>;
    /// One row.
    fn get(&self, table: &'static str, key: &[u8]) -> Result<Option<Vec<u8>>, TableError>;
    /// Calls `f` for every row whose key starts with `prefix`, in key order.
    fn scan_prefix(
        &self,
        table: &'static str,
        prefix: &[u8],
        f: &mut RowVisitor<'_>,
    ) -> Result<(), TableError>;
}

/// Tables in memory: ordered, deterministic.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemTables {
    /// table → key → value.
    pub tables: BTreeMap<&'static str, BTreeMap<Vec<u8>, Vec<u8>>>,
}

impl TableWriter for MemTables {
    fn put(&mut self, table: &'static str, key: &[u8], value: &[u8]) -> Result<(), TableError> {
        self.tables
            .entry(table)
            .or_default()
            .insert(key.to_vec(), value.to_vec());
        Ok(())
    }
    fn delete(&mut self, table: &'static str, key: &[u8]) -> Result<(), TableError> {
        if let Some(t) = self.tables.get_mut(table) {
            t.remove(key);
        }
        Ok(())
    }
    fn clear(&mut self, table: &'static str) -> Result<(), TableError> {
        self.tables.remove(table);
        Ok(())
    }
}

impl TableReader for MemTables {
    fn scan(&self, table: &'static str, f: &mut RowVisitor<'_>) -> Result<(), TableError> {
        if let Some(t) = self.tables.get(table) {
            for (k, v) in t {
                f(k, v)?;
            }
        }
        Ok(())
    }
    fn get(&self, table: &'static str, key: &[u8]) -> Result<Option<Vec<u8>>, TableError> {
        Ok(self.tables.get(table).and_then(|t| t.get(key)).cloned())
    }
    fn scan_prefix(
        &self,
        table: &'static str,
        prefix: &[u8],
        f: &mut RowVisitor<'_>,
    ) -> Result<(), TableError> {
        if let Some(t) = self.tables.get(table) {
            for (k, v) in t.range(prefix.to_vec()..) {
                if !k.starts_with(prefix) {
                    break;
                }
                f(k, v)?;
            }
        }
        Ok(())
    }
}
