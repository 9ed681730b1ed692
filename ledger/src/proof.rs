//! Proof files: an inclusion or consistency proof bundled with the signed checkpoint(s) it is
//! relative to, as JSON, checkable offline with one or more trusted public keys.
//!
//! A proof never stands alone: it is checked against the root of a checkpoint whose signature
//! verified first (shape checks, then signature, then the Merkle path).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::checkpoint::{NoteError, VerifiedCheckpoint, parse_note};
use crate::entry::{EntryFormatError, EntryRef};
use crate::hash::{Hash, TreeHash};
use crate::keys::PublicKey;
use crate::merkle::{self, ConsistencyError, InclusionError, PROOF_HASHES_MAX};

/// `format` field of an inclusion proof file of a version-1 log (blake3 tree).
pub const INCLUSION_FORMAT: &str = "fleet-ledger-inclusion-proof/v1";
/// `format` field of a consistency proof file of a version-1 log (blake3 tree).
pub const CONSISTENCY_FORMAT: &str = "fleet-ledger-consistency-proof/v1";
/// `format` field of an inclusion proof file of a version-2 log (RFC 6962 SHA-256 tree).
pub const INCLUSION_FORMAT_V2: &str = "fleet-ledger-inclusion-proof/v2";
/// `format` field of a consistency proof file of a version-2 log (RFC 6962 SHA-256 tree).
pub const CONSISTENCY_FORMAT_V2: &str = "fleet-ledger-consistency-proof/v2";

fn inclusion_format(tree: TreeHash) -> &'static str {
    match tree {
        TreeHash::Blake3 => INCLUSION_FORMAT,
        TreeHash::Sha256 => INCLUSION_FORMAT_V2,
    }
}

fn consistency_format(tree: TreeHash) -> &'static str {
    match tree {
        TreeHash::Blake3 => CONSISTENCY_FORMAT,
        TreeHash::Sha256 => CONSISTENCY_FORMAT_V2,
    }
}

/// The tree hash a proof file's `format` names.
fn tree_of_format(format: &str, names: fn(TreeHash) -> &'static str) -> Option<TreeHash> {
    [TreeHash::Blake3, TreeHash::Sha256]
        .into_iter()
        .find(|t| names(*t) == format)
}

/// Entry `seq` is leaf `seq` of the tree of the checkpoint at `tree_size`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InclusionProof {
    /// The entry's seq (= leaf index).
    pub seq: u64,
    /// Size of the checkpointed tree.
    pub tree_size: u64,
    /// The entry's stored bytes.
    pub entry: Vec<u8>,
    /// RFC 9162 audit path, bottom-up.
    pub path: Vec<Hash>,
    /// Signed note of the checkpoint at `tree_size`.
    pub checkpoint: String,
}

/// The checkpoint at `to` extends the checkpoint at `from`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsistencyProof {
    /// The log's tree hash (its format version; the file's `format` names it).
    pub tree: TreeHash,
    /// Older size.
    pub from: u64,
    /// Newer size.
    pub to: u64,
    /// RFC 9162 consistency path.
    pub path: Vec<Hash>,
    /// Signed note at `from`.
    pub from_checkpoint: String,
    /// Signed note at `to`.
    pub to_checkpoint: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct InclusionWire {
    format: String,
    seq: u64,
    tree_size: u64,
    entry: String,
    path: Vec<String>,
    checkpoint: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConsistencyWire {
    format: String,
    from: u64,
    to: u64,
    path: Vec<String>,
    from_checkpoint: String,
    to_checkpoint: String,
}

/// Why a proof file is refused.
#[derive(Debug, Error)]
pub enum ProofError {
    /// Not the JSON shape of a proof file.
    #[error("not a proof file: {0}")]
    Malformed(String),
    /// A checkpoint note is malformed or signed by none of the trusted keys.
    #[error("checkpoint: {0}")]
    Note(#[from] NoteError),
    /// The entry bytes are malformed.
    #[error("entry: {0}")]
    Entry(#[from] EntryFormatError),
    /// The fields contradict each other.
    #[error("{0}")]
    Mismatch(String),
    /// The inclusion path does not lead to the signed root.
    #[error("inclusion: {0}")]
    Inclusion(#[from] InclusionError),
    /// The consistency path does not connect the two signed roots.
    #[error("consistency: {0}")]
    Consistency(#[from] ConsistencyError),
}

fn path_to_wire(path: &[Hash]) -> Vec<String> {
    path.iter().map(Hash::to_base64).collect()
}

fn path_from_wire(path: &[String]) -> Result<Vec<Hash>, ProofError> {
    if path.len() > PROOF_HASHES_MAX {
        return Err(ProofError::Malformed(format!(
            "path of {} hashes, over {PROOF_HASHES_MAX}",
            path.len()
        )));
    }
    path.iter()
        .map(|h| {
            Hash::from_base64(h)
                .ok_or_else(|| ProofError::Malformed(format!("{h:?} is not base64 of 32 bytes")))
        })
        .collect()
}

/// Verifies a note with the first trusted key that signed it.
fn verify_with_any(note: &str, keys: &[PublicKey]) -> Result<VerifiedCheckpoint, ProofError> {
    let parsed = parse_note(note.as_bytes())?;
    let mut last_err = None;
    for key in keys {
        match parsed.verify(key) {
            Ok(v) => return Ok(v),
            Err(e) => last_err = Some(e),
        }
    }
    Err(last_err
        .map(ProofError::Note)
        .unwrap_or_else(|| ProofError::Malformed("no trusted keys given".into())))
}

impl InclusionProof {
    /// JSON text of the proof file.
    pub fn to_json(&self) -> String {
        let tree = EntryRef::parse(&self.entry).map_or(TreeHash::Blake3, |e| e.tree());
        let wire = InclusionWire {
            format: inclusion_format(tree).into(),
            seq: self.seq,
            tree_size: self.tree_size,
            entry: B64.encode(&self.entry),
            path: path_to_wire(&self.path),
            checkpoint: self.checkpoint.clone(),
        };
        serde_json::to_string_pretty(&wire).expect("serializing plain data cannot fail")
    }

    /// Parses a proof file.
    pub fn from_json(text: &str) -> Result<InclusionProof, ProofError> {
        let w: InclusionWire =
            serde_json::from_str(text).map_err(|e| ProofError::Malformed(e.to_string()))?;
        let tree = tree_of_format(&w.format, inclusion_format).ok_or_else(|| {
            ProofError::Malformed(format!(
                "format {:?}, expected {INCLUSION_FORMAT:?} or {INCLUSION_FORMAT_V2:?}",
                w.format
            ))
        })?;
        let proof = InclusionProof {
            seq: w.seq,
            tree_size: w.tree_size,
            entry: B64
                .decode(&w.entry)
                .map_err(|e| ProofError::Malformed(format!("entry is not base64: {e}")))?,
            path: path_from_wire(&w.path)?,
            checkpoint: w.checkpoint,
        };
        let entry = EntryRef::parse(&proof.entry)?;
        if entry.tree() != tree {
            return Err(ProofError::Mismatch(format!(
                "a {:?} proof of an entry of format version {}",
                w.format, entry.header.version
            )));
        }
        Ok(proof)
    }

    /// Checks the checkpoint's signature by one of `keys`, then the entry's inclusion in its
    /// tree. Returns the verified checkpoint (a `witness::WitnessPolicy` checks the
    /// cosignatures of its note).
    pub fn verify(&self, keys: &[PublicKey]) -> Result<VerifiedCheckpoint, ProofError> {
        let entry = EntryRef::parse(&self.entry)?;
        if entry.header.seq != self.seq {
            return Err(ProofError::Mismatch(format!(
                "entry states seq {}, proof is for seq {}",
                entry.header.seq, self.seq
            )));
        }
        let verified = verify_with_any(&self.checkpoint, keys)?;
        let cp = verified.checkpoint();
        if cp.size != self.tree_size {
            return Err(ProofError::Mismatch(format!(
                "checkpoint is for size {}, proof for size {}",
                cp.size, self.tree_size
            )));
        }
        merkle::verify_inclusion(
            entry.tree(),
            self.seq,
            self.tree_size,
            &entry.leaf(),
            &self.path,
            &cp.root,
        )?;
        Ok(verified)
    }
}

impl ConsistencyProof {
    /// JSON text of the proof file.
    pub fn to_json(&self) -> String {
        let wire = ConsistencyWire {
            format: consistency_format(self.tree).into(),
            from: self.from,
            to: self.to,
            path: path_to_wire(&self.path),
            from_checkpoint: self.from_checkpoint.clone(),
            to_checkpoint: self.to_checkpoint.clone(),
        };
        serde_json::to_string_pretty(&wire).expect("serializing plain data cannot fail")
    }

    /// Parses a proof file.
    pub fn from_json(text: &str) -> Result<ConsistencyProof, ProofError> {
        let w: ConsistencyWire =
            serde_json::from_str(text).map_err(|e| ProofError::Malformed(e.to_string()))?;
        let tree = tree_of_format(&w.format, consistency_format).ok_or_else(|| {
            ProofError::Malformed(format!(
                "format {:?}, expected {CONSISTENCY_FORMAT:?} or {CONSISTENCY_FORMAT_V2:?}",
                w.format
            ))
        })?;
        Ok(ConsistencyProof {
            tree,
            from: w.from,
            to: w.to,
            path: path_from_wire(&w.path)?,
            from_checkpoint: w.from_checkpoint,
            to_checkpoint: w.to_checkpoint,
        })
    }

    /// Checks both checkpoints' signatures by `keys`, that they name the same log, and that
    /// the newer tree extends the older. Returns (older, newer), verified.
    pub fn verify(
        &self,
        keys: &[PublicKey],
    ) -> Result<(VerifiedCheckpoint, VerifiedCheckpoint), ProofError> {
        let old_verified = verify_with_any(&self.from_checkpoint, keys)?;
        let new_verified = verify_with_any(&self.to_checkpoint, keys)?;
        let (old, new) = (old_verified.checkpoint(), new_verified.checkpoint());
        if old.origin != new.origin {
            return Err(ProofError::Mismatch(format!(
                "checkpoints of different logs: {:?} and {:?}",
                old.origin, new.origin
            )));
        }
        if (old.size, new.size) != (self.from, self.to) {
            return Err(ProofError::Mismatch(format!(
                "checkpoints are for sizes {} and {}, proof for {} and {}",
                old.size, new.size, self.from, self.to
            )));
        }
        merkle::verify_consistency(
            self.tree, self.from, self.to, &old.root, &new.root, &self.path,
        )?;
        Ok((old_verified, new_verified))
    }
}
