//! Signed checkpoints: C2SP tlog-checkpoint bodies in C2SP signed notes.
//!
//! ```text
//! <origin>\n
//! <tree size, decimal>\n
//! <root hash, base64>\n
//! head <hash of entry size-1, base64>\n
//! \n
//! — <key name> <base64(key id, 4 bytes BE || ed25519 signature, 64 bytes)>\n
//! ```
//!
//! The signature is over the body: every byte before the blank line, its final newline
//! included. A note may carry several signature lines, as C2SP signed-note has them: a line
//! whose (key name, key id) is not a key the verifier knows is ignored, whatever its name,
//! length or signature type (a witness's cosignature, another log's key); every line of a
//! known key must verify, or the note is rejected. Witness cosignatures
//! (C2SP tlog-cosignature) are checked by [`crate::witness`].

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use thiserror::Error;

use crate::hash::Hash;
use crate::keys::{PublicKey, Signer};

/// Largest note accepted (bodies are ~150 bytes; room for 16 post-quantum cosignatures of
/// ~5 kB, which signed-note requires verifiers to accept).
pub const NOTE_BYTES_MAX: usize = 128 * 1024;
/// Most signature lines accepted on one note (signed-note: at least 16).
pub const NOTE_SIGNATURES_MAX: usize = 64;
/// Longest origin accepted.
pub const ORIGIN_BYTES_MAX: usize = 256;

const SIG_PREFIX: &str = "\u{2014} ";

/// What a checkpoint states about the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    /// The log's identity (first line).
    pub origin: String,
    /// Number of entries covered.
    pub size: u64,
    /// Merkle root over those entries.
    pub root: Hash,
    /// Hash of the last covered entry (seq `size - 1`).
    pub head: Hash,
}

/// Why an origin is refused.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("invalid origin {0:?}: use 1-256 printable ASCII characters without spaces")]
pub struct BadOrigin(pub String);

/// Checks an origin line: printable ASCII, no spaces, 1–256 bytes.
pub fn check_origin(origin: &str) -> Result<(), BadOrigin> {
    let ok = !origin.is_empty()
        && origin.len() <= ORIGIN_BYTES_MAX
        && origin.bytes().all(|b| b.is_ascii_graphic());
    if ok {
        Ok(())
    } else {
        Err(BadOrigin(origin.to_string()))
    }
}

impl Checkpoint {
    /// The signed body text.
    pub fn body(&self) -> String {
        format!(
            "{}\n{}\n{}\nhead {}\n",
            self.origin,
            self.size,
            self.root.to_base64(),
            self.head.to_base64()
        )
    }

    /// The signed note: body, blank line, one signature line.
    pub fn sign(&self, signer: &Signer) -> String {
        let body = self.body();
        let sig = signer.sign(body.as_bytes());
        let mut blob = signer.public().id().to_be_bytes().to_vec();
        blob.extend_from_slice(&sig);
        format!(
            "{body}\n{SIG_PREFIX}{} {}\n",
            signer.public().name(),
            B64.encode(blob)
        )
    }
}

/// One signature line: its key name and id, and the signature bytes after the id (of any
/// length and type until a known key claims the line).
#[derive(Clone, PartialEq, Eq)]
pub struct NoteSignature {
    /// Key name.
    pub name: String,
    /// Key id.
    pub id: u32,
    /// The signature (for an ed25519 key, 64 bytes; for a cosignature, 8 + 64).
    pub signature: Vec<u8>,
}

impl fmt::Debug for NoteSignature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NoteSignature({}+{:08x})", self.name, self.id)
    }
}

/// A note split into checkpoint and signatures, not yet verified.
#[derive(Clone, Debug)]
pub struct ParsedNote {
    /// The body's claims.
    pub checkpoint: Checkpoint,
    /// The exact signed body.
    pub body: String,
    /// Signature lines in order.
    pub signatures: Vec<NoteSignature>,
}

/// Why a note is malformed or does not verify.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum NoteError {
    /// Over [`NOTE_BYTES_MAX`].
    #[error("note is {0} bytes, over the {NOTE_BYTES_MAX}-byte limit")]
    TooLarge(usize),
    /// Not UTF-8, or contains control characters.
    #[error("note is not UTF-8 text without control characters")]
    NotText,
    /// No blank line separating body from signatures.
    #[error("note has no blank line before its signatures")]
    NoSignatureBlock,
    /// A malformed signature line.
    #[error("malformed signature line {line}: {reason}")]
    BadSignatureLine {
        /// 1-based line in the signature block.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// Too many signature lines.
    #[error("note has more than {NOTE_SIGNATURES_MAX} signatures")]
    TooManySignatures,
    /// The body is not a fleet-ledger checkpoint.
    #[error("malformed checkpoint body: {0}")]
    BadBody(String),
    /// No signature by the expected key.
    #[error("no signature by key {expected}; signed by: {found}")]
    NotSignedBy {
        /// `name+id` of the expected key.
        expected: String,
        /// `name+id` of the keys that did sign.
        found: String,
    },
    /// A signature by the expected key that does not verify.
    #[error("signature by key {0} does not verify")]
    BadSignature(String),
    /// Fewer trusted witnesses cosigned than required.
    #[error("{found} of the trusted witnesses cosigned this checkpoint; {required} required")]
    TooFewCosignatures {
        /// Witnesses whose cosignature verified.
        found: usize,
        /// How many of them must have cosigned.
        required: usize,
    },
}

/// Parses a note: shape checks only, no cryptography.
pub fn parse_note(text: &[u8]) -> Result<ParsedNote, NoteError> {
    if text.len() > NOTE_BYTES_MAX {
        return Err(NoteError::TooLarge(text.len()));
    }
    let text = std::str::from_utf8(text).map_err(|_| NoteError::NotText)?;
    if text.chars().any(|c| c.is_control() && c != '\n') {
        return Err(NoteError::NotText);
    }
    let split = text.rfind("\n\n").ok_or(NoteError::NoSignatureBlock)?;
    let body = &text[..split + 1];
    let sig_block = &text[split + 2..];
    if sig_block.is_empty() || !sig_block.ends_with('\n') {
        return Err(NoteError::NoSignatureBlock);
    }
    let mut signatures = Vec::new();
    for (i, line) in sig_block[..sig_block.len() - 1].split('\n').enumerate() {
        let bad = |reason: &str| NoteError::BadSignatureLine {
            line: i + 1,
            reason: reason.to_string(),
        };
        if signatures.len() == NOTE_SIGNATURES_MAX {
            return Err(NoteError::TooManySignatures);
        }
        let rest = line
            .strip_prefix(SIG_PREFIX)
            .ok_or_else(|| bad("must start with an em dash and a space"))?;
        let (name, b64) = rest
            .split_once(' ')
            .ok_or_else(|| bad("expected '<name> <base64>'"))?;
        // signed-note's rule for any key name: non-empty, no Unicode space, no '+'. Names
        // of keys this verifier does not know are not otherwise restricted.
        if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c == '+') {
            return Err(bad("invalid key name"));
        }
        let blob = B64
            .decode(b64)
            .map_err(|_| bad("signature is not base64"))?;
        if blob.len() < 5 {
            return Err(bad(
                "signature must be a 4-byte key id and at least one byte",
            ));
        }
        signatures.push(NoteSignature {
            name: name.to_string(),
            id: u32::from_be_bytes(blob[..4].try_into().expect("4 bytes")),
            signature: blob[4..].to_vec(),
        });
    }
    let checkpoint = parse_body(body)?;
    Ok(ParsedNote {
        checkpoint,
        body: body.to_string(),
        signatures,
    })
}

fn parse_body(body: &str) -> Result<Checkpoint, NoteError> {
    let bad = |s: &str| NoteError::BadBody(s.to_string());
    let lines: Vec<&str> = body[..body.len() - 1].split('\n').collect();
    let [origin, size, root, head] = lines[..] else {
        return Err(bad("expected exactly 4 lines: origin, size, root, head"));
    };
    check_origin(origin).map_err(|e| NoteError::BadBody(e.to_string()))?;
    // Decimal without sign or leading zeros, so each size has exactly one spelling.
    let canonical = !size.is_empty()
        && size.bytes().all(|b| b.is_ascii_digit())
        && (size == "0" || !size.starts_with('0'));
    let size: u64 = size
        .parse()
        .ok()
        .filter(|_| canonical)
        .ok_or_else(|| bad("size is not a canonical decimal u64"))?;
    // The genesis entry is committed with the first checkpoint: no log signs an empty tree,
    // so a size-0 note is a forgery or a mistake, never the start of a proof (FORMAT §5).
    if size == 0 {
        return Err(bad("size 0: there is no checkpoint of an empty log"));
    }
    let root = Hash::from_base64(root).ok_or_else(|| bad("root is not base64 of 32 bytes"))?;
    let head = head
        .strip_prefix("head ")
        .and_then(Hash::from_base64)
        .ok_or_else(|| bad("fourth line must be 'head <base64 of 32 bytes>'"))?;
    // Refuse non-canonical base64 spellings, so every checkpoint has exactly one text.
    let cp = Checkpoint {
        origin: origin.to_string(),
        size,
        root,
        head,
    };
    if cp.body() != body {
        return Err(bad("body is not in canonical form"));
    }
    Ok(cp)
}

/// A checkpoint whose signature by `key` verified. Only [`verify_note`] constructs it.
#[derive(Clone, Debug)]
pub struct VerifiedCheckpoint {
    checkpoint: Checkpoint,
    key: PublicKey,
    /// The note it was verified from (its other lines: witnesses' cosignatures).
    note: ParsedNote,
}

impl VerifiedCheckpoint {
    /// The verified claims.
    pub fn checkpoint(&self) -> &Checkpoint {
        &self.checkpoint
    }
    /// The key whose signature verified.
    pub fn key(&self) -> &PublicKey {
        &self.key
    }
    /// The note it was verified from, with every signature line: a witness policy checks the
    /// cosignatures there (`witness::WitnessPolicy::check`), nothing is parsed again.
    pub fn note(&self) -> &ParsedNote {
        &self.note
    }
}

impl ParsedNote {
    /// Checks the signature by `key` (`verify_strict`). Every line with `key`'s name and id
    /// must verify (a repeated line too); lines of other keys are ignored.
    pub fn verify(&self, key: &PublicKey) -> Result<VerifiedCheckpoint, NoteError> {
        let label = |name: &str, id: u32| format!("{name}+{id:08x}");
        let mut found = false;
        for sig in &self.signatures {
            if sig.name == key.name() && sig.id == key.id() {
                found = true;
                let ok = <&[u8; 64]>::try_from(sig.signature.as_slice())
                    .is_ok_and(|s| key.verify(self.body.as_bytes(), s));
                if !ok {
                    return Err(NoteError::BadSignature(label(key.name(), key.id())));
                }
            }
        }
        if found {
            return Ok(VerifiedCheckpoint {
                checkpoint: self.checkpoint.clone(),
                key: key.clone(),
                note: self.clone(),
            });
        }
        Err(NoteError::NotSignedBy {
            expected: label(key.name(), key.id()),
            found: self
                .signatures
                .iter()
                .map(|s| label(&s.name, s.id))
                .collect::<Vec<_>>()
                .join(", "),
        })
    }
}

/// Parses and verifies a note against one key.
pub fn verify_note(text: &[u8], key: &PublicKey) -> Result<VerifiedCheckpoint, NoteError> {
    parse_note(text)?.verify(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> (Signer, Checkpoint) {
        let s = Signer::from_seed("test-log-key", &[5; 32]).unwrap();
        let cp = Checkpoint {
            origin: "example.org/fleet".into(),
            size: 42,
            root: Hash([1; 32]),
            head: Hash([2; 32]),
        };
        (s, cp)
    }

    #[test]
    fn sign_parse_verify_round_trip() {
        let (s, cp) = sample();
        let note = cp.sign(&s);
        assert!(note.starts_with("example.org/fleet\n42\nAQEB"));
        let v = verify_note(note.as_bytes(), s.public()).unwrap();
        assert_eq!(v.checkpoint(), &cp);
    }

    /// FORMAT §5: no log signs an empty tree, so a validly signed size-0 note is refused
    /// before its signature is looked at (and so cannot start a consistency proof).
    #[test]
    fn a_signed_size_0_note_is_refused() {
        let (s, mut cp) = sample();
        cp.size = 0;
        let err = verify_note(cp.sign(&s).as_bytes(), s.public()).unwrap_err();
        assert!(err.to_string().contains("size 0"), "{err}");
    }

    #[test]
    fn any_changed_byte_fails() {
        let (s, cp) = sample();
        let note = cp.sign(&s).into_bytes();
        for i in 0..note.len() {
            for bit in [0x01u8, 0x20, 0x80] {
                let mut t = note.clone();
                t[i] ^= bit;
                assert!(
                    verify_note(&t, s.public()).is_err(),
                    "byte {i} bit {bit:#x}"
                );
            }
        }
    }

    #[test]
    fn wrong_key_is_named() {
        let (s, cp) = sample();
        let other = Signer::from_seed("other", &[6; 32]).unwrap();
        let err = verify_note(cp.sign(&s).as_bytes(), other.public()).unwrap_err();
        assert!(matches!(err, NoteError::NotSignedBy { .. }));
        assert!(err.to_string().contains("test-log-key+"), "{err}");
    }

    #[test]
    fn cosigned_note_verifies_with_either_key() {
        let (s, cp) = sample();
        let other = Signer::from_seed("other", &[6; 32]).unwrap();
        let mut note = cp.sign(&s);
        let second = cp.sign(&other);
        note.push_str(second.rsplit_once("\n\n").unwrap().1);
        assert!(verify_note(note.as_bytes(), s.public()).is_ok());
        assert!(verify_note(note.as_bytes(), other.public()).is_ok());
    }

    /// C2SP signed-note: lines of unknown keys are ignored whatever their name (non-ASCII,
    /// over 128 bytes) or signature length; every line of the trusted key must verify.
    #[test]
    fn unknown_keys_lines_are_ignored_and_known_ones_must_verify() {
        let (s, cp) = sample();
        let note = cp.sign(&s);
        let line = |name: &str, blob: &[u8]| format!("\u{2014} {name} {}\n", B64.encode(blob));
        let mut text = note.clone();
        text.push_str(&line(&"ключ.example/".repeat(12), &[9; 4 + 1312]));
        text.push_str(&line("witness.example/w", &[1; 4 + 8 + 64]));
        text.push_str(&line("x", &[2; 5]));
        assert!(verify_note(text.as_bytes(), s.public()).is_ok(), "{text}");
        // The trusted key's line twice: both verify, so the note does.
        let own = note.rsplit_once("\n\n").unwrap().1;
        let twice = format!("{text}{own}");
        assert!(verify_note(twice.as_bytes(), s.public()).is_ok());
        // A line with the trusted key's name and id whose signature fails rejects the note,
        // even beside a good one.
        let mut blob = s.public().id().to_be_bytes().to_vec();
        blob.extend_from_slice(&[0; 64]);
        let forged = format!("{text}{}", line(s.public().name(), &blob));
        assert!(matches!(
            verify_note(forged.as_bytes(), s.public()),
            Err(NoteError::BadSignature(_))
        ));
        // The same key name with another id is another key: ignored.
        let mut other = (s.public().id() ^ 1).to_be_bytes().to_vec();
        other.extend_from_slice(&[0; 64]);
        let other = format!("{text}{}", line(s.public().name(), &other));
        assert!(verify_note(other.as_bytes(), s.public()).is_ok());
        // Malformed lines are still refused: a name with a '+' or a space, bad base64, a
        // signature shorter than a key id and one byte.
        for bad in [
            line("a+b", &[1; 68]),
            "\u{2014} a b c\n".to_string(),
            "\u{2014} name !!!!\n".to_string(),
            line("short", &[1; 4]),
        ] {
            let t = format!("{note}{bad}");
            assert!(
                matches!(
                    parse_note(t.as_bytes()),
                    Err(NoteError::BadSignatureLine { .. })
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn malformed_bodies_are_refused() {
        let (s, _) = sample();
        for body in [
            "o\n42\nAQ==\nhead AQ==\n",
            "o\n042\nAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=\nhead AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=\n",
            "o\n1\nAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=\n",
        ] {
            let sig = s.sign(body.as_bytes());
            let mut blob = s.public().id().to_be_bytes().to_vec();
            blob.extend_from_slice(&sig);
            let note = format!(
                "{body}\n\u{2014} {} {}\n",
                s.public().name(),
                B64.encode(blob)
            );
            assert!(
                matches!(parse_note(note.as_bytes()), Err(NoteError::BadBody(_))),
                "{body:?}"
            );
        }
    }
}
