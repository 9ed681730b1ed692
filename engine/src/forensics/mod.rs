//! Forensics over a ledger database or an export bundle: the determinism check (re-run every
//! decision over the recorded inputs with the recorded `now`), timelines, the chain of
//! decisions for one host, and the projections at any point.
//!
//! Everything streams entries in seq order through one fold; nothing here writes.

//!
//! The rooms: this file reads entries from either source; `check` is the determinism check,
//! `timeline` the timelines and `why`, `replay` the state at a point (from the nearest replay
//! snapshot), `render` its text and JSON, `report` the HTML page of one rollout.

mod check;
mod render;
mod replay;
mod report;
mod timeline;

pub use check::{CheckReport, Divergence, check};
pub use render::{state_json, state_text};
pub use replay::{Point, Replayed, replay, replay_full};
pub use report::report;
pub use timeline::{
    Filter, Line, Why, cause_text, line, log_record, summary, timeline, timeline_each, why,
};

use std::fs::File;
use std::io::{BufReader, Seek, SeekFrom};
use std::path::Path;

use ledger::bundle::{BundleEntries, BundleReader};
use ledger::read::{Logged, ReadError, Stored};
use ledger::store::{ReadOnlyStore, Rows};
use thiserror::Error;

/// Why forensics could not run (the input, not a divergence).
#[derive(Debug, Error)]
pub enum ForensicsError {
    /// Opening or reading a database.
    #[error(transparent)]
    Open(#[from] ledger::store::OpenError),
    /// Reading entries (from a database or a bundle).
    #[error(transparent)]
    Read(#[from] ReadError),
    /// An entry the forensics cannot take as it stands (not the input it should record).
    #[error("entry {seq}: {reason}")]
    Entry {
        /// The entry's seq.
        seq: u64,
        /// What is wrong, in words for the message.
        reason: String,
    },
    /// The file could not be read.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// Reading the projection tables of a database.
    #[error(transparent)]
    Tables(#[from] ledger::tables::TableError),
}

/// Where entries come from.
#[derive(Debug, Clone, Copy)]
pub enum Source<'a> {
    /// A ledger database (read-only).
    Db(&'a Path),
    /// An export bundle.
    Bundle(&'a Path),
}

/// The stored entries of a source in seq order: a database's and a bundle's read the same.
/// (A database's hold their own read transaction, and a private database open.) Both are
/// boxed: a redb cursor and a bundle reader are hundreds of bytes, each read makes one.
pub(crate) enum Entries {
    Db(Box<Rows>),
    Bundle(Box<BundleEntries<BufReader<File>>>),
}

impl Iterator for Entries {
    type Item = Result<Stored, ReadError>;

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            Entries::Db(rows) => rows.next(),
            Entries::Bundle(entries) => entries.next(),
        }
    }
}

/// The stored entries of `source`, from `from` (a seq and its bundle record offset, located
/// by an earlier read: [`Stored::offset`]) or from entry 0.
pub(crate) fn stored(
    source: Source<'_>,
    from: Option<(u64, u64)>,
) -> Result<Entries, ForensicsError> {
    Ok(match source {
        Source::Db(path) => Entries::Db(Box::new(
            ReadOnlyStore::open(path)?
                .snapshot()?
                .rows(from.map_or(0, |(seq, _)| seq)..)?,
        )),
        Source::Bundle(path) => {
            let mut file = File::open(path)?;
            Entries::Bundle(Box::new(match from {
                Some((seq, offset)) => {
                    file.seek(SeekFrom::Start(offset))?;
                    BundleReader::resume(BufReader::new(file), offset).entries(seq)
                }
                None => BundleReader::new(BufReader::new(file))
                    .map_err(ReadError::from)?
                    .entries(0),
            }))
        }
    })
}

/// The entries of `source` from `from` (as for [`stored`]), decoded.
pub(crate) fn entries_from(
    source: Source<'_>,
    from: Option<(u64, u64)>,
) -> Result<impl Iterator<Item = Result<Logged, ForensicsError>> + use<>, ForensicsError> {
    Ok(stored(source, from)?.map(|s| Ok(s?.decode()?)))
}

/// Every entry of `source`, in seq order, decoded.
pub fn entries(
    source: Source<'_>,
) -> Result<impl Iterator<Item = Result<Logged, ForensicsError>> + use<>, ForensicsError> {
    entries_from(source, None)
}

/// The hash of entry `seq` (at bundle record `offset`), if the source has it there.
fn entry_hash_at(
    source: Source<'_>,
    seq: u64,
    offset: u64,
) -> Result<Option<[u8; 32]>, ForensicsError> {
    let Some(first) = stored(source, Some((seq, offset)))?.next().transpose()? else {
        return Ok(None);
    };
    let at_seq = ledger::entry::EntryRef::parse(first.bytes()).is_ok_and(|e| e.header.seq == seq);
    Ok(at_seq
        .then(|| first.hash())
        .flatten()
        .map(|h| *h.as_bytes()))
}

/// The hash of entry 0 (None: an empty source).
fn first_entry_hash(source: Source<'_>) -> Result<Option<[u8; 32]>, ForensicsError> {
    let first = stored(source, None)?.next().transpose()?;
    Ok(first.and_then(|s| s.hash()).map(|h| *h.as_bytes()))
}
