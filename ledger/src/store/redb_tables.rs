//! The table interface (`crate::tables::TableWriter`) on a redb write transaction.

use redb::{TableDefinition, WriteTransaction};

/// The table interface on redb, inside one write transaction (the append's, or a rebuild's).
/// Tables are `&[u8] → &[u8]`, opened on first use and kept open for the transaction.
pub struct RedbTables<'a> {
    txn: &'a WriteTransaction,
    open: std::collections::BTreeMap<&'static str, redb::Table<'a, &'static [u8], &'static [u8]>>,
}

impl std::fmt::Debug for RedbTables<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RedbTables({} open)", self.open.len())
    }
}

pub(super) fn table_err(table: &str, e: impl std::fmt::Display) -> crate::tables::TableError {
    crate::tables::TableError {
        table: table.to_string(),
        reason: e.to_string(),
    }
}

impl<'a> RedbTables<'a> {
    /// Wraps a write transaction.
    pub(crate) fn new(txn: &'a WriteTransaction) -> RedbTables<'a> {
        RedbTables {
            txn,
            open: std::collections::BTreeMap::new(),
        }
    }

    fn table(
        &mut self,
        name: &'static str,
    ) -> Result<&mut redb::Table<'a, &'static [u8], &'static [u8]>, crate::tables::TableError> {
        if !self.open.contains_key(name) {
            let def: TableDefinition<&[u8], &[u8]> = TableDefinition::new(name);
            let t = self.txn.open_table(def).map_err(|e| table_err(name, e))?;
            self.open.insert(name, t);
        }
        Ok(self.open.get_mut(name).expect("just inserted"))
    }
}

impl crate::tables::TableWriter for RedbTables<'_> {
    fn put(
        &mut self,
        table: &'static str,
        key: &[u8],
        value: &[u8],
    ) -> Result<(), crate::tables::TableError> {
        self.table(table)?
            .insert(key, value)
            .map(|_| ())
            .map_err(|e| table_err(table, e))
    }

    fn delete(&mut self, table: &'static str, key: &[u8]) -> Result<(), crate::tables::TableError> {
        self.table(table)?
            .remove(key)
            .map(|_| ())
            .map_err(|e| table_err(table, e))
    }

    fn clear(&mut self, table: &'static str) -> Result<(), crate::tables::TableError> {
        self.open.remove(table);
        let def: TableDefinition<&[u8], &[u8]> = TableDefinition::new(table);
        self.txn
            .delete_table(def)
            .map_err(|e| table_err(table, e))?;
        Ok(())
    }
}
