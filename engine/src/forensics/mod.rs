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

use ledger::bundle::{BundleReader, Record};
use ledger::domain::Micros;
use ledger::entry::EntryRef;
use ledger::event::Event;
use ledger::store::ReadOnlyStore;
use thiserror::Error;

/// Why forensics could not run (the input, not a divergence).
#[derive(Debug, Error)]
pub enum ForensicsError {
    /// Opening or reading a database.
    #[error(transparent)]
    Open(#[from] ledger::store::OpenError),
    /// Reading a bundle.
    #[error("bundle: {0}")]
    Bundle(String),
    /// An entry that does not parse or decode.
    #[error("entry {seq}: {reason}")]
    Entry {
        /// Seq.
        seq: u64,
        /// Why.
        reason: String,
    },
    /// IO.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// Reading the projection tables of a database.
    #[error(transparent)]
    Tables(#[from] ledger::tables::TableError),
}

/// One decoded entry.
#[derive(Debug, Clone)]
pub struct Item {
    /// Seq.
    pub seq: u64,
    /// CP time.
    pub at: Micros,
    /// The event.
    pub event: Event,
}

/// Where entries come from.
#[derive(Debug, Clone, Copy)]
pub enum Source<'a> {
    /// A ledger database (read-only).
    Db(&'a Path),
    /// An export bundle.
    Bundle(&'a Path),
}

fn decode(seq: u64, bytes: &[u8]) -> Result<Item, ForensicsError> {
    let bad = |reason: String| ForensicsError::Entry { seq, reason };
    let e = EntryRef::parse(bytes).map_err(|e| bad(e.to_string()))?;
    let event = e.event().map_err(|e| bad(e.to_string()))?;
    Ok(Item {
        seq: e.header.seq,
        at: e.header.recorded_at_us,
        event,
    })
}

/// Calls `f` with every entry in seq order; `f` returns false to stop.
pub fn for_each(
    source: Source<'_>,
    f: impl FnMut(Item) -> Result<bool, ForensicsError>,
) -> Result<(), ForensicsError> {
    for_each_from(source, None, f)
}

/// [`for_each`] from `from` (a seq and its bundle record offset, 0 on a database).
fn for_each_from(
    source: Source<'_>,
    from: Option<(u64, u64)>,
    mut f: impl FnMut(Item) -> Result<bool, ForensicsError>,
) -> Result<(), ForensicsError> {
    for_each_raw(source, from, |seq, _, bytes| f(decode(seq, bytes)?))
}

/// Calls `f` with every entry's seq, bundle record offset (0 for a database) and stored
/// bytes, from `from` (a seq and its record offset, located by an earlier read) or from entry
/// 0; `f` returns false to stop.
fn for_each_raw(
    source: Source<'_>,
    from: Option<(u64, u64)>,
    mut f: impl FnMut(u64, u64, &[u8]) -> Result<bool, ForensicsError>,
) -> Result<(), ForensicsError> {
    enum Stop {
        Done,
        F(ForensicsError),
    }
    impl From<ledger::store::OpenError> for Stop {
        fn from(e: ledger::store::OpenError) -> Stop {
            Stop::F(e.into())
        }
    }
    match source {
        Source::Db(path) => {
            let ro = ReadOnlyStore::open(path)?;
            let snap = ro.snapshot()?;
            let start = from.map_or(0, |(s, _)| s);
            match snap.for_each_entry(start.., |seq, bytes| match f(seq, 0, bytes) {
                Ok(true) => Ok(()),
                Ok(false) => Err(Stop::Done),
                Err(e) => Err(Stop::F(e)),
            }) {
                Ok(()) | Err(Stop::Done) => Ok(()),
                Err(Stop::F(e)) => Err(e),
            }
        }
        Source::Bundle(path) => {
            let bad = |e: ledger::verify::VerifyError| ForensicsError::Bundle(e.to_string());
            let mut file = File::open(path)?;
            let (mut reader, mut seq) = match from {
                Some((seq, offset)) => {
                    file.seek(SeekFrom::Start(offset))?;
                    (BundleReader::resume(BufReader::new(file), offset), seq)
                }
                None => (BundleReader::new(BufReader::new(file)).map_err(bad)?, 0),
            };
            loop {
                let offset = reader.offset();
                match reader.next_record().map_err(bad)? {
                    Record::Entry(bytes) => {
                        if !f(seq, offset, bytes)? {
                            return Ok(());
                        }
                        seq += 1;
                    }
                    Record::End => return Ok(()),
                    Record::Key(_) | Record::Checkpoint(_) => {}
                }
            }
        }
    }
}

/// The hash of entry `seq` (at bundle record `offset`), if the source has it there.
fn entry_hash_at(
    source: Source<'_>,
    seq: u64,
    offset: u64,
) -> Result<Option<[u8; 32]>, ForensicsError> {
    let mut hash = None;
    for_each_raw(source, Some((seq, offset)), |_, _, bytes| {
        hash = EntryRef::parse(bytes)
            .ok()
            .filter(|e| e.header.seq == seq)
            .map(|e| *e.hash().as_bytes());
        Ok(false)
    })?;
    Ok(hash)
}

/// The hash of entry 0 (None: an empty source).
fn first_entry_hash(source: Source<'_>) -> Result<Option<[u8; 32]>, ForensicsError> {
    let mut hash = None;
    for_each_raw(source, None, |_, _, bytes| {
        hash = crate::replay_cache::entry_hash(bytes);
        Ok(false)
    })?;
    Ok(hash)
}
