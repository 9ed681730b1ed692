//! The streaming verifier: feed it entries and checkpoints in log order; it checks every link,
//! every entry hash, the tree root at every checkpoint and every checkpoint signature, in
//! O(log n) memory. Used on stores and bundles alike; it trusts nothing it is fed.
//!
//! # Attribution
//!
//! Call L(k) the claim about entry k's hash: entry k+1's `prev_hash`, or the head line of a
//! checkpoint of size k+1. Changing the content of entry k breaks L(k) alone; changing its
//! `prev_hash` field breaks L(k-1) *and* L(k) (its own hash changed too). So the verifier
//! waits one link after a break: a lone break names entry k as altered, two in a row name
//! entry k+1's link field. Either way the error names the seq that was changed. Checkpoint
//! lines cannot be the culprit: their signature is checked first.

use std::fmt;

use thiserror::Error;

use crate::checkpoint::{Checkpoint, NoteError, parse_note};
use crate::entry::{EntryFormatError, EntryRef};
use crate::event::{DecodeError, Event, Kind};
use crate::hash::Hash;
use crate::keys::{KeyError, PublicKey};
use crate::merkle::Frontier;

/// Where verification failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Location {
    /// At the entry with this seq (its position in the log).
    Seq(u64),
    /// At the checkpoint of this tree size (or the size it was expected to have).
    Checkpoint(u64),
    /// At this byte offset of a bundle file.
    BundleOffset(u64),
    /// The log as a whole.
    Log,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Seq(s) => write!(f, "seq {s}"),
            Location::Checkpoint(n) => write!(f, "checkpoint at size {n}"),
            Location::BundleOffset(o) => write!(f, "bundle offset {o}"),
            Location::Log => f.write_str("log"),
        }
    }
}

/// What was wrong.
#[derive(Debug, Error)]
pub enum Failure {
    /// Bytes that are not an entry.
    #[error("malformed entry: {0}")]
    Entry(#[from] EntryFormatError),
    /// The header's seq is not the entry's position: deleted, duplicated, reordered or inserted.
    #[error(
        "header states seq {found}, expected {expected} (entry deleted, duplicated, reordered or inserted)"
    )]
    SeqMismatch {
        /// The seq the verifier expected next.
        expected: u64,
        /// Header's seq.
        found: u64,
    },
    /// Entry 0 is not a genesis entry, or a genesis entry appears later.
    #[error("{0}")]
    Genesis(&'static str),
    /// A genesis or rotation payload not in its one encoding (a non-minimal varint).
    #[error("the {0} payload is not in its canonical encoding (a non-minimal integer)")]
    NonCanonical(&'static str),
    /// An entry's format version differs from the genesis entry's.
    #[error("entry format version {found}, but the log's (its genesis entry's) is {log}")]
    VersionChange {
        /// The genesis entry's version.
        log: u8,
        /// This entry's.
        found: u8,
    },
    /// The genesis key is not the key the verifier was told to trust.
    #[error("genesis names key {found}, but the pinned key is {pinned}")]
    GenesisKeyNotPinned {
        /// Pinned key.
        pinned: String,
        /// Key in the genesis entry.
        found: String,
    },
    /// A key-chain payload that does not decode.
    #[error("{0}")]
    Payload(#[from] DecodeError),
    /// A rotation to an invalid key.
    #[error("rotation names an invalid key: {0}")]
    RotationKey(#[from] KeyError),
    /// A rotation back to a key that was already used.
    #[error("rotation reuses key {0}, which was already in force once")]
    RotationReuse(String),
    /// CP time went backwards.
    #[error("recorded time {found} µs is before the previous entry's {previous} µs")]
    TimeRegression {
        /// Previous entry's time.
        previous: i64,
        /// This entry's time.
        found: i64,
    },
    /// This entry's `prev_hash` is not the previous entry's hash, and the signed tree sides with
    /// the previous entry.
    #[error(
        "previous-hash link broken: header states {stated}, previous entry hashes to {computed}"
    )]
    BrokenLink {
        /// `prev_hash` in the header.
        stated: Hash,
        /// Hash of the previous entry's bytes.
        computed: Hash,
    },
    /// This entry's bytes changed: they no longer hash to what the chain and the signed tree
    /// committed to.
    #[error("entry altered: its bytes hash to {computed}, but the log committed to {committed}")]
    EntryAltered {
        /// Hash of the stored bytes.
        computed: Hash,
        /// Hash the next link and the signed root agree on.
        committed: Hash,
    },
    /// A malformed or unverifiable checkpoint note.
    #[error("{0}")]
    Note(#[from] NoteError),
    /// Signed by a key that was in force once but has been rotated out.
    #[error("signed by key {0}, which was rotated out before this checkpoint")]
    RotatedOutKey(String),
    /// Signed by the next key before its rotation took effect.
    #[error("signed by key {0} before the checkpoint covering its rotation")]
    KeyNotYetInForce(String),
    /// The checkpoint's origin is not the log's.
    #[error("origin {found:?} differs from the log's origin {expected:?}")]
    Origin {
        /// The log's origin.
        expected: String,
        /// The checkpoint's.
        found: String,
    },
    /// The checkpoint's size is not the number of entries preceding it.
    #[error("checkpoint states size {stated}, but {entries} entries precede it")]
    CheckpointSize {
        /// Claimed size.
        stated: u64,
        /// Entries seen.
        entries: u64,
    },
    /// A checkpoint that does not grow the log.
    #[error("checkpoint size {stated} does not exceed the previous checkpoint's {previous}")]
    CheckpointNotIncreasing {
        /// Claimed size.
        stated: u64,
        /// Previous checkpoint's size.
        previous: u64,
    },
    /// Root mismatch with consistent links: entries were rewritten wholesale.
    #[error("checkpoint root {stated} does not match the entries' root {computed}")]
    RootMismatch {
        /// Signed root.
        stated: Hash,
        /// Recomputed root.
        computed: Hash,
    },
    /// Entries after the last checkpoint: not covered by any signature (or a truncated tail).
    #[error(
        "{count} entries after the last checkpoint (size {covered}) are not covered by any signature"
    )]
    Uncovered {
        /// Last checkpoint size.
        covered: u64,
        /// Entries past it.
        count: u64,
    },
    /// Nothing to verify.
    #[error("the log is empty")]
    Empty,
    /// A bundle-level problem (layout, digest, keys section).
    #[error("{0}")]
    Bundle(String),
    /// The store could not be read.
    #[error("reading the store failed: {0}")]
    Store(String),
    /// Published tiles: a file is missing, malformed, or disagrees with the entries.
    #[error("{0}")]
    Tiles(String),
    /// A second copy of a checkpoint (the published one, beside the one a key rotation took
    /// effect at) that is not the same checkpoint.
    #[error("not the same checkpoint: {0}")]
    Differs(String),
}

/// A verification failure: where, and why.
#[derive(Debug, Error)]
#[error("{at}: {failure}")]
pub struct VerifyError {
    /// The first bad place.
    pub at: Location,
    /// The reason.
    pub failure: Failure,
}

impl VerifyError {
    /// Builds an error.
    pub fn new(at: Location, failure: impl Into<Failure>) -> VerifyError {
        VerifyError {
            at,
            failure: failure.into(),
        }
    }
}

/// What a successful verification established. Only the verifier constructs it.
#[derive(Clone, Debug)]
pub struct VerifiedLog {
    origin: String,
    checkpoint: Checkpoint,
    checkpoints: u64,
    keys: Vec<PublicKey>,
}

impl VerifiedLog {
    /// The log's origin.
    pub fn origin(&self) -> &str {
        &self.origin
    }
    /// The latest checkpoint, verified to cover every entry.
    pub fn checkpoint(&self) -> &Checkpoint {
        &self.checkpoint
    }
    /// Number of entries.
    pub fn size(&self) -> u64 {
        self.checkpoint.size
    }
    /// Number of checkpoints verified.
    pub fn checkpoints(&self) -> u64 {
        self.checkpoints
    }
    /// The key chain, genesis key first; the last one is in force.
    pub fn keys(&self) -> &[PublicKey] {
        &self.keys
    }
}

/// A broken link whose blame waits for the next link (see module docs).
#[derive(Clone, Copy, Debug)]
struct Suspect {
    /// Seq of the entry whose hash disagrees with the claim about it.
    seq: u64,
    /// Hash of its bytes.
    computed: Hash,
    /// What the log claims it hashes to.
    claimed: Hash,
}

/// Decodes a payload verification reads (kinds 1 and 2) and requires it to be the one
/// encoding of its value: bincode reads non-minimal varints, and two verifiers must not
/// disagree on whether such a payload is valid (FORMAT §3).
fn canonical(entry: &EntryRef<'_>) -> Result<Event, Failure> {
    let event = entry.event()?;
    if event.encode_payload() != entry.payload {
        return Err(Failure::NonCanonical(entry.header.kind.name()));
    }
    Ok(event)
}

impl Suspect {
    /// The entry whose link broke, named as altered.
    fn altered(self) -> VerifyError {
        VerifyError::new(
            Location::Seq(self.seq),
            Failure::EntryAltered {
                computed: self.computed,
                committed: self.claimed,
            },
        )
    }
}

/// The streaming verifier.
#[derive(Debug)]
pub struct Verifier {
    pinned: PublicKey,
    /// Keys in chain order; the last is in force.
    keys: Vec<PublicKey>,
    /// Rotations seen since the last checkpoint: they take effect after the next one.
    pending_keys: Vec<PublicKey>,
    origin: Option<String>,
    next_seq: u64,
    last_time: i64,
    frontier: Frontier,
    /// Hash of entry `next_seq - 1` (computed from its bytes).
    last_hash: Hash,
    suspect: Option<Suspect>,
    last_checkpoint: Option<Checkpoint>,
    /// The key whose signature of the last checkpoint verified.
    last_signer: Option<PublicKey>,
    checkpoints: u64,
}

impl Verifier {
    /// A verifier that trusts one key: the log's genesis key.
    pub fn new(pinned: PublicKey) -> Verifier {
        Verifier {
            keys: vec![pinned.clone()],
            pinned,
            pending_keys: Vec::new(),
            origin: None,
            next_seq: 0,
            last_time: i64::MIN,
            // Replaced at the genesis entry, whose format version fixes the tree hash.
            frontier: Frontier::new(crate::hash::TreeHash::Sha256),
            last_hash: Hash::ZERO,
            suspect: None,
            last_checkpoint: None,
            last_signer: None,
            checkpoints: 0,
        }
    }

    /// A verifier that continues after a checkpoint already verified (an auditor's last
    /// trusted one, signed by `signer`): `keys` is the key chain then in force (genesis
    /// first), `frontier` the tree of its `checkpoint.size` entries (whose root must be the
    /// checkpoint's: checked here), `last_time` the time of its last entry.
    pub fn resume(
        keys: Vec<PublicKey>,
        signer: PublicKey,
        checkpoint: Checkpoint,
        frontier: Frontier,
        last_time: i64,
    ) -> Result<Verifier, VerifyError> {
        let at = Location::Checkpoint(checkpoint.size);
        if keys.is_empty() {
            return Err(VerifyError::new(at, Failure::Tiles("no keys".into())));
        }
        if frontier.size() != checkpoint.size || frontier.root() != checkpoint.root {
            return Err(VerifyError::new(
                at,
                Failure::RootMismatch {
                    stated: checkpoint.root,
                    computed: frontier.root(),
                },
            ));
        }
        Ok(Verifier {
            pinned: keys[0].clone(),
            keys,
            pending_keys: Vec::new(),
            origin: Some(checkpoint.origin.clone()),
            next_seq: checkpoint.size,
            last_time,
            frontier,
            last_hash: checkpoint.head,
            suspect: None,
            last_checkpoint: Some(checkpoint),
            last_signer: Some(signer),
            checkpoints: 1,
        })
    }

    /// Entries accepted so far.
    pub fn entries(&self) -> u64 {
        self.next_seq
    }

    /// The keys of the chain so far, including rotations not yet in force.
    pub fn key_chain(&self) -> impl Iterator<Item = &PublicKey> {
        self.keys.iter().chain(self.pending_keys.iter())
    }

    /// Checks L(k): `claimed` is what the log states entry k hashes to.
    fn check_link(&mut self, k: u64, claimed: Hash) -> Result<(), VerifyError> {
        let computed = self.last_hash;
        match (self.suspect.take(), claimed == computed) {
            (None, true) => Ok(()),
            (None, false) => {
                self.suspect = Some(Suspect {
                    seq: k,
                    computed,
                    claimed,
                });
                Ok(())
            }
            // L(k-1) broke and L(k) holds: entry k-1's bytes changed.
            (Some(s), true) => Err(s.altered()),
            // L(k-1) and L(k) both broke: entry k's link field changed.
            (Some(s), false) => Err(VerifyError::new(
                Location::Seq(k),
                Failure::BrokenLink {
                    stated: s.claimed,
                    computed: s.computed,
                },
            )),
        }
    }

    /// Checks the next entry.
    pub fn entry(&mut self, bytes: &[u8]) -> Result<(), VerifyError> {
        let seq = self.next_seq;
        let at = Location::Seq(seq);
        let entry = EntryRef::parse(bytes).map_err(|e| VerifyError::new(at, e))?;
        let h = entry.header;
        if h.seq != seq {
            return Err(VerifyError::new(
                at,
                Failure::SeqMismatch {
                    expected: seq,
                    found: h.seq,
                },
            ));
        }
        if seq == 0 {
            self.frontier = Frontier::new(entry.tree());
        } else if entry.tree() != self.frontier.tree() {
            return Err(VerifyError::new(
                at,
                Failure::VersionChange {
                    log: self.frontier.tree().version(),
                    found: h.version,
                },
            ));
        }
        if seq == 0 {
            if h.prev_hash != Hash::ZERO {
                return Err(VerifyError::new(
                    at,
                    Failure::BrokenLink {
                        stated: h.prev_hash,
                        computed: Hash::ZERO,
                    },
                ));
            }
        } else {
            self.check_link(seq - 1, h.prev_hash)?;
        }
        if h.recorded_at_us < self.last_time {
            // If entry seq−1's link already broke, its bytes changed (the naming rule, §7):
            // a raised time in entry seq−1 is named there, not here.
            if let Some(s) = self.suspect.take() {
                return Err(s.altered());
            }
            return Err(VerifyError::new(
                at,
                Failure::TimeRegression {
                    previous: self.last_time,
                    found: h.recorded_at_us,
                },
            ));
        }
        match (seq, h.kind) {
            (0, Kind::Genesis) => {
                let event = canonical(&entry).map_err(|e| VerifyError::new(at, e))?;
                let Event::Genesis(g) = event else {
                    unreachable!("kind Genesis decodes to Event::Genesis")
                };
                let key = PublicKey::from_record(&g.key).map_err(|e| VerifyError::new(at, e))?;
                if key != self.pinned {
                    return Err(VerifyError::new(
                        at,
                        Failure::GenesisKeyNotPinned {
                            pinned: self.pinned.to_text(),
                            found: key.to_text(),
                        },
                    ));
                }
                self.origin = Some(g.origin);
            }
            (0, _) => {
                return Err(VerifyError::new(
                    at,
                    Failure::Genesis("entry 0 is not a genesis entry"),
                ));
            }
            (_, Kind::Genesis) => {
                return Err(VerifyError::new(
                    at,
                    Failure::Genesis("a genesis entry after entry 0"),
                ));
            }
            (_, Kind::KeyRotated) => {
                let Event::KeyRotated(r) =
                    canonical(&entry).map_err(|e| VerifyError::new(at, e))?
                else {
                    unreachable!("kind KeyRotated decodes to Event::KeyRotated")
                };
                let key = PublicKey::from_record(&r.next).map_err(|e| VerifyError::new(at, e))?;
                if self.key_chain().any(|k| k.bytes() == key.bytes()) {
                    return Err(VerifyError::new(at, Failure::RotationReuse(key.to_text())));
                }
                self.pending_keys.push(key);
            }
            _ => {}
        }
        self.last_time = h.recorded_at_us;
        self.last_hash = entry.hash();
        self.frontier.push(entry.leaf(), |_, _, _| {});
        self.next_seq += 1;
        Ok(())
    }

    /// Checks a checkpoint note that covers exactly the entries fed so far, signed by the key
    /// in force for it (FORMAT §6).
    pub fn checkpoint(&mut self, note: &[u8]) -> Result<Checkpoint, VerifyError> {
        self.check_checkpoint(note)
    }

    /// Checks that `note` is the last checkpoint checked (the same body), signed by the key
    /// that signed it, maybe with other lines (witnesses' cosignatures): published tiles
    /// hold the checkpoint a key rotation took effect at in `rotation/<seq>`, and the latest
    /// `checkpoint` may be that same one.
    pub fn same_checkpoint(&self, note: &[u8]) -> Result<Checkpoint, VerifyError> {
        let (Some(last), Some(signer)) = (&self.last_checkpoint, &self.last_signer) else {
            return Err(VerifyError::new(
                Location::Checkpoint(self.next_seq),
                Failure::Differs("no checkpoint was verified before it".into()),
            ));
        };
        let at = Location::Checkpoint(last.size);
        let parsed = parse_note(note).map_err(|e| VerifyError::new(at, e))?;
        if parsed.checkpoint != *last {
            return Err(VerifyError::new(
                at,
                Failure::Differs(format!(
                    "states size {} and root {}, but the log's checkpoint at size {} has root {}",
                    parsed.checkpoint.size, parsed.checkpoint.root, last.size, last.root
                )),
            ));
        }
        parsed.verify(signer).map_err(|e| VerifyError::new(at, e))?;
        Ok(parsed.checkpoint)
    }

    fn check_checkpoint(&mut self, note: &[u8]) -> Result<Checkpoint, VerifyError> {
        let entries = self.next_seq;
        let at = Location::Checkpoint(entries);
        let parsed = parse_note(note).map_err(|e| VerifyError::new(at, e))?;
        let key = self
            .keys
            .last()
            .expect("the chain starts with the pinned key");
        let signer = key.clone();
        parsed.verify(&signer).map_err(|e| {
            let label = |k: &PublicKey| format!("{}+{:08x}", k.name(), k.id());
            let signed_by = |k: &PublicKey| {
                parsed
                    .signatures
                    .iter()
                    .any(|s| s.name == k.name() && s.id == k.id() && parsed.verify(k).is_ok())
            };
            let failure = match e {
                NoteError::NotSignedBy { .. } => {
                    if let Some(old) = self.keys[..self.keys.len() - 1]
                        .iter()
                        .find(|k| signed_by(k))
                    {
                        Failure::RotatedOutKey(label(old))
                    } else if let Some(next) = self.pending_keys.iter().find(|k| signed_by(k)) {
                        Failure::KeyNotYetInForce(label(next))
                    } else {
                        Failure::Note(e)
                    }
                }
                other => Failure::Note(other),
            };
            VerifyError::new(at, failure)
        })?;
        let cp = parsed.checkpoint;
        if let Some(origin) = &self.origin
            && *origin != cp.origin
        {
            return Err(VerifyError::new(
                at,
                Failure::Origin {
                    expected: origin.clone(),
                    found: cp.origin,
                },
            ));
        }
        if let Some(prev) = &self.last_checkpoint
            && cp.size <= prev.size
        {
            return Err(VerifyError::new(
                at,
                Failure::CheckpointNotIncreasing {
                    stated: cp.size,
                    previous: prev.size,
                },
            ));
        }
        if cp.size != entries || entries == 0 {
            return Err(VerifyError::new(
                at,
                Failure::CheckpointSize {
                    stated: cp.size,
                    entries,
                },
            ));
        }
        self.check_link(entries - 1, cp.head)?;
        if let Some(s) = self.suspect.take() {
            // The signed head disagrees with the last entry: that entry's bytes changed.
            return Err(s.altered());
        }
        let computed = self.frontier.root();
        if computed != cp.root {
            return Err(VerifyError::new(
                at,
                Failure::RootMismatch {
                    stated: cp.root,
                    computed,
                },
            ));
        }
        // Rotations covered by this checkpoint take effect for the next one.
        self.keys.append(&mut self.pending_keys);
        self.last_checkpoint = Some(cp.clone());
        self.last_signer = Some(signer);
        self.checkpoints += 1;
        Ok(cp)
    }

    /// Ends verification: every entry must be covered by a checkpoint.
    pub fn finish(self) -> Result<VerifiedLog, VerifyError> {
        if let Some(s) = self.suspect {
            return Err(VerifyError::new(
                Location::Seq(s.seq + 1),
                Failure::BrokenLink {
                    stated: s.claimed,
                    computed: s.computed,
                },
            ));
        }
        let Some(last) = self.last_checkpoint else {
            return Err(VerifyError::new(
                Location::Log,
                if self.next_seq == 0 {
                    Failure::Empty
                } else {
                    Failure::Uncovered {
                        covered: 0,
                        count: self.next_seq,
                    }
                },
            ));
        };
        if self.next_seq != last.size {
            return Err(VerifyError::new(
                Location::Seq(last.size),
                Failure::Uncovered {
                    covered: last.size,
                    count: self.next_seq - last.size,
                },
            ));
        }
        Ok(VerifiedLog {
            origin: self.origin.unwrap_or_default(),
            checkpoint: last,
            checkpoints: self.checkpoints,
            keys: self.keys,
        })
    }
}
