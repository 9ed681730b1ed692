//! The store's errors, one per operation.

use super::BATCH_ENTRIES_MAX;
use crate::entry::PAYLOAD_BYTES_MAX;
use crate::merkle::ProofRequestError;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// A redb failure, with the operation that hit it.
#[derive(Debug, Error)]
#[error("storage error while {doing}: {source}")]
pub struct StorageError {
    pub(super) doing: &'static str,
    pub(super) source: redb::Error,
}

pub(super) fn storage<E: Into<redb::Error>>(doing: &'static str) -> impl FnOnce(E) -> StorageError {
    move |e| StorageError {
        doing,
        source: e.into(),
    }
}

/// Why a new ledger could not be created.
#[derive(Debug, Error)]
pub enum CreateError {
    /// The path exists already.
    #[error("{0} already exists: refusing to create a ledger over it")]
    Exists(PathBuf),
    /// Bad origin.
    #[error(transparent)]
    Origin(#[from] crate::checkpoint::BadOrigin),
    /// Storage failure.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// Writing genesis failed.
    #[error("writing the genesis entry failed: {0}")]
    Genesis(Box<AppendError>),
}

/// Why an existing ledger could not be opened. Never repaired silently.
#[derive(Debug, Error)]
pub enum OpenError {
    /// No file.
    #[error("{0} does not exist")]
    Missing(PathBuf),
    /// Not a redb file, or a corrupt one.
    #[error("{path} is not a readable ledger database: {reason}")]
    NotADatabase {
        /// The file, as named.
        path: PathBuf,
        /// Why, as redb or the file system said (in the message, not a separate cause:
        /// printed once; a text, so no redb type is in this crate's API).
        reason: String,
    },
    /// Another process holds the file for writing (a running daemon, a `rebuild`), or a
    /// private recovery holds it (see [`ReadOnlyStore::open`]).
    #[error(
        "{path} is open for writing by another process (a running daemon?); stop it first, or use a read-only command"
    )]
    InUse {
        /// The file, as named.
        path: PathBuf,
    },
    /// A redb database, but not a fleet-ledger one (or from an unknown format).
    #[error("{path} is not a fleet-ledger store: {reason}")]
    Foreign {
        /// The file, as named.
        path: PathBuf,
        /// What is wrong, in words for the message.
        reason: String,
    },
    /// Head, tree and latest checkpoint disagree.
    #[error("{path}: head, tree and latest checkpoint disagree: {reason}")]
    Inconsistent {
        /// The file, as named.
        path: PathBuf,
        /// What disagrees.
        reason: String,
    },
    /// The signing key given is not the key in force.
    #[error(
        "the signing key {given} is not the key in force {in_force} (after a key rotation, sign with the key rotated to: the config's signing_key)"
    )]
    WrongKey {
        /// `name+id` given.
        given: String,
        /// `name+id` in force.
        in_force: String,
    },
    /// Storage failure.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Why an append failed. The ledger is unchanged in every case.
#[derive(Debug, Error)]
pub enum AppendError {
    /// Nothing to append.
    #[error("empty batch")]
    Empty,
    /// Too many entries.
    #[error("batch of {0} entries exceeds the limit of {BATCH_ENTRIES_MAX}")]
    TooLarge(usize),
    /// Genesis and key rotations have dedicated operations.
    #[error("kind {0} is written only by the store itself")]
    ReservedKind(&'static str),
    /// Payload over the entry limit.
    #[error(
        "event of kind {kind} encodes to {bytes} bytes, over the {PAYLOAD_BYTES_MAX}-byte limit"
    )]
    PayloadTooLarge {
        /// Kind name.
        kind: &'static str,
        /// Encoded size.
        bytes: usize,
    },
    /// CP time before the previous entry's.
    #[error("recorded time {found} µs is before the log's last time {last} µs")]
    TimeRegression {
        /// Last recorded time.
        last: i64,
        /// Offending time.
        found: i64,
    },
    /// A key rotation to a key the log's chain already holds (in force now, or earlier):
    /// nothing was written (FORMAT §6).
    #[error("{0} is already in the log's key chain: a rotation must introduce a new key")]
    KeyInChain(String),
    /// A writer's key rotation reached a node that signs with the key it replaces and does
    /// not hold the next one (a standby catching up): it could not sign what follows.
    #[error(
        "a key rotation to {0}: this node signs with the key it replaces and does not hold the new one; restart it with the new key (OPERATIONS, \"Key rotation under failover\")"
    )]
    RotationNotHeld(String),
    /// The key chain could not be read to check a rotation against it.
    #[error("reading the key chain: {0}")]
    KeyChain(Box<OpenError>),
    /// Storage failure before commit.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The commit failed. The store is poisoned: reopen it (never retry an fsync).
    #[error("commit failed, store poisoned (reopen it): {0}")]
    Commit(StorageError),
    /// A previous commit failed; this handle refuses further appends.
    #[error("store is poisoned by an earlier failed commit: reopen it")]
    Poisoned,
    /// A hot invariant failed on read-back. Nothing was committed.
    #[error("invariant violated, nothing committed: {0}")]
    Invariant(String),
    /// An unsigned tail is written and not yet signed or set aside: it must be first.
    #[error(
        "an unsigned tail of {0} entries is pending: sign it (append the same batch) or set it aside first"
    )]
    TailPending(u64),
    /// The batch appended is not the unsigned tail written before it.
    #[error("the batch is not the unsigned tail written before it (entry {0} differs)")]
    TailMismatch(u64),
    /// A follower's store holds no key: it appends only batches with a checkpoint signed
    /// elsewhere ([`super::Store::append_noted`]).
    #[error("this store follows another's log and holds no signing key")]
    NoKey,
    /// The checkpoint given with a batch is not the batch's, or not signed by the key in
    /// force.
    #[error("the checkpoint given with the batch: {0}")]
    BadNote(String),
}

/// Why a proof could not be produced.
#[derive(Debug, Error)]
pub enum ProofError {
    /// Out of range, or shrinking.
    #[error(transparent)]
    Request(#[from] ProofRequestError),
    /// Proofs are relative to signed checkpoints; there is none at this size.
    #[error(
        "no checkpoint at tree size {size}; nearest checkpoint sizes: {below:?} below, {above:?} above"
    )]
    NoCheckpoint {
        /// Requested size.
        size: u64,
        /// Largest checkpoint size below.
        below: Option<u64>,
        /// Smallest checkpoint size above.
        above: Option<u64>,
    },
    /// Read failure.
    #[error(transparent)]
    Open(#[from] OpenError),
}

/// Why an export failed.
#[derive(Debug, Error)]
pub enum ExportError {
    /// Reading the store.
    #[error(transparent)]
    Open(#[from] OpenError),
    /// Writing the bundle.
    #[error("writing the bundle: {0}")]
    Io(#[from] std::io::Error),
}

pub(super) fn foreign(path: &Path, reason: impl Into<String>) -> OpenError {
    OpenError::Foreign {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

pub(super) fn inconsistent(path: &Path, reason: impl Into<String>) -> OpenError {
    OpenError::Inconsistent {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}
