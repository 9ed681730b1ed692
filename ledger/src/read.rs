//! Entries read back, from a database ([`crate::store::Snapshot::rows`]) or an export bundle
//! ([`crate::bundle::BundleReader::entries`]): one item type and one error, so a reader of
//! the log (the folds, forensics, publication) has one source whichever it reads.

use crate::domain::Micros;
use crate::entry::EntryRef;
use crate::event::Event;
use crate::hash::Hash;
use crate::verify::VerifyError;
use thiserror::Error;

/// One entry decoded: where it is, when it was recorded, what it says.
#[derive(Debug, Clone, PartialEq)]
pub struct Logged {
    /// Its position in the log.
    pub seq: u64,
    /// The CP time it was recorded at.
    pub at: Micros,
    /// The event it records.
    pub event: Event,
}

/// Why entries could not be read.
#[derive(Debug, Error)]
pub enum ReadError {
    /// The database could not be read (storage, or a row that is not one): an
    /// [`OpenError`](crate::store::OpenError), boxed so that this module, which bundles use
    /// too, does not reach into the store.
    #[error(transparent)]
    Store(Box<dyn std::error::Error + Send + Sync>),
    /// The bundle's framing is broken (a record, its limits, the END digest).
    #[error(transparent)]
    Bundle(#[from] VerifyError),
    /// Stored bytes that do not parse as an entry, or whose payload does not decode (the log
    /// is damaged, or written by a newer build: run `verify`).
    #[error("entry {seq}: {reason}")]
    Entry {
        /// Where it was read.
        seq: u64,
        /// Why it is not an entry this build reads.
        reason: String,
    },
}

/// Where a stored entry's bytes live: borrowed from a database page, or read out of a bundle.
enum Bytes {
    #[cfg(feature = "store")]
    Row {
        value: redb::AccessGuard<'static, &'static [u8]>,
        /// Where the entry starts in the row (after its tree nodes and checkpoint).
        entry_at: usize,
    },
    Owned(Vec<u8>),
}

/// One entry's stored bytes as read, not yet decoded (hashing or copying them needs no
/// decode; [`Stored::decode`] is the one parse-then-decode every reader uses).
pub struct Stored {
    seq: u64,
    offset: u64,
    ends_batch: bool,
    bytes: Bytes,
}

impl std::fmt::Debug for Stored {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Stored(seq {}, {} bytes)", self.seq, self.bytes().len())
    }
}

impl Stored {
    #[cfg(feature = "store")]
    pub(crate) fn in_row(
        seq: u64,
        value: redb::AccessGuard<'static, &'static [u8]>,
        entry_at: usize,
        ends_batch: bool,
    ) -> Stored {
        Stored {
            seq,
            offset: 0,
            ends_batch,
            bytes: Bytes::Row { value, entry_at },
        }
    }

    pub(crate) fn owned(seq: u64, offset: u64, bytes: Vec<u8>) -> Stored {
        Stored {
            seq,
            offset,
            ends_batch: false,
            bytes: Bytes::Owned(bytes),
        }
    }

    pub(crate) fn set_ends_batch(&mut self) {
        self.ends_batch = true;
    }

    /// Its position in the log (in a bundle, counted from the first entry read).
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Where its record starts in a bundle (0 in a database): a later read resumes there
    /// ([`crate::bundle::BundleReader::resume`]).
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Whether a checkpoint follows it: the last entry of a batch the writer committed as
    /// one (a database row holding its checkpoint; a bundle entry whose next record is one).
    pub fn ends_batch(&self) -> bool {
        self.ends_batch
    }

    /// The stored entry bytes.
    pub fn bytes(&self) -> &[u8] {
        match &self.bytes {
            #[cfg(feature = "store")]
            Bytes::Row { value, entry_at } => &value.value()[*entry_at..],
            Bytes::Owned(v) => v,
        }
    }

    /// The entry hash of its bytes, if they parse as an entry.
    pub fn hash(&self) -> Option<Hash> {
        EntryRef::parse(self.bytes()).ok().map(|e| e.hash())
    }

    /// Parses and decodes it.
    pub fn decode(&self) -> Result<Logged, ReadError> {
        decode(self.seq, self.bytes())
    }
}

/// Parses and decodes the entry bytes read at `seq`.
pub fn decode(seq: u64, bytes: &[u8]) -> Result<Logged, ReadError> {
    let bad = |reason: String| ReadError::Entry { seq, reason };
    let entry = EntryRef::parse(bytes).map_err(|e| bad(e.to_string()))?;
    let event = entry.event().map_err(|e| bad(e.to_string()))?;
    Ok(Logged {
        seq: entry.header.seq,
        at: entry.header.recorded_at_us,
        event,
    })
}
