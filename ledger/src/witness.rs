//! Witness cosignatures: C2SP tlog-cosignature's Ed25519 type (`cosignature/v1`, signature
//! type 0x04), the split-view defence of transparency logs. A witness that verified a
//! checkpoint's consistency with everything it saw before adds a signature line to the note:
//!
//! ```text
//! — <witness name> base64(key id || u64be timestamp || ed25519 signature)
//! ```
//!
//! over `cosignature/v1\ntime <timestamp>\n` followed by the checkpoint body. The key id is
//! `SHA-256(name || 0x0A || 0x04 || public key)[:4]`; a witness's verifier key is written
//! `<name>+<hex id>+base64(0x04 || public key)`.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signature, SigningKey, VerifyingKey};
use sha2::{Digest as _, Sha256};

use crate::checkpoint::{NoteError, ParsedNote};
use crate::keys::KeyError;

/// The signature type byte of Ed25519 cosignatures.
pub const ALG_COSIGNATURE_V1: u8 = 0x04;

/// The key id of a witness's Ed25519 cosigning key.
pub fn witness_key_id(name: &str, public_key: &[u8; 32]) -> u32 {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update([b'\n', ALG_COSIGNATURE_V1]);
    h.update(public_key);
    let d = h.finalize();
    u32::from_be_bytes([d[0], d[1], d[2], d[3]])
}

/// The message a `cosignature/v1` signs.
pub fn cosigned_message(body: &str, timestamp: u64) -> String {
    format!("cosignature/v1\ntime {timestamp}\n{body}")
}

/// A trusted witness: its name and Ed25519 cosigning key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WitnessKey {
    name: String,
    id: u32,
    key: VerifyingKey,
}

impl WitnessKey {
    /// A witness key from its name and raw public key (weak keys refused).
    pub fn new(name: &str, public_key: &[u8; 32]) -> Result<WitnessKey, KeyError> {
        crate::keys::check_name(name)?;
        let key = crate::keys::checked_point(public_key)?;
        Ok(WitnessKey {
            name: name.to_string(),
            id: witness_key_id(name, public_key),
            key,
        })
    }

    /// Parses a verifier key `<name>+<hex id>+base64(0x04 || 32-byte key)`, canonical.
    pub fn from_text(text: &str) -> Result<WitnessKey, KeyError> {
        let bad = |reason: &str| KeyError::BadFormat {
            expected: "witness",
            reason: reason.to_string(),
        };
        let text = text.trim();
        let [name, id_hex, b64] = text.splitn(3, '+').collect::<Vec<_>>()[..] else {
            return Err(bad("expected <name>+<hex id>+<base64 key>"));
        };
        if id_hex.len() != 8 || !id_hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad("key id must be 8 hex digits"));
        }
        let raw = B64
            .decode(b64)
            .map_err(|e| bad(&format!("key is not base64: {e}")))?;
        if raw.len() != 33 || raw[0] != ALG_COSIGNATURE_V1 {
            return Err(bad(
                "key must be 0x04 (Ed25519 cosignature/v1) followed by 32 bytes",
            ));
        }
        let key = WitnessKey::new(name, raw[1..].try_into().expect("32 bytes"))?;
        let stated = u32::from_str_radix(id_hex, 16).map_err(|e| bad(&e.to_string()))?;
        if stated != key.id {
            return Err(KeyError::IdMismatch {
                stated,
                computed: key.id,
            });
        }
        if key.to_text() != text {
            return Err(bad("not in canonical form (lowercase hex key id)"));
        }
        Ok(key)
    }

    /// The verifier key text.
    pub fn to_text(&self) -> String {
        let mut raw = vec![ALG_COSIGNATURE_V1];
        raw.extend_from_slice(self.key.as_bytes());
        format!("{}+{:08x}+{}", self.name, self.id, B64.encode(raw))
    }

    /// The witness's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its key id.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// Its 32-byte Ed25519 public key.
    pub fn public_key(&self) -> [u8; 32] {
        *self.key.as_bytes()
    }

    fn label(&self) -> String {
        format!("{}+{:08x}", self.name, self.id)
    }
}

/// A cosignature that verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cosignature {
    /// The witness.
    pub witness: String,
    /// When it cosigned (POSIX seconds).
    pub timestamp: u64,
}

/// The trusted witnesses' cosignatures on `note`, one per witness that cosigned. A line of a
/// trusted witness (its name and id) that does not verify rejects the note; lines of other
/// keys are ignored. Witnesses are distinct by public key (FORMAT §5a): a key trusted under
/// two names, or listed twice, counts once.
pub fn cosignatures(
    note: &ParsedNote,
    witnesses: &[WitnessKey],
) -> Result<Vec<Cosignature>, NoteError> {
    let mut found = Vec::new();
    let mut counted = std::collections::BTreeSet::new();
    for w in witnesses {
        let mut cosigned = None;
        for sig in note
            .signatures
            .iter()
            .filter(|s| s.name == w.name && s.id == w.id)
        {
            let (ts, rest) = sig
                .signature
                .split_first_chunk::<8>()
                .ok_or_else(|| NoteError::BadSignature(w.label()))?;
            let timestamp = u64::from_be_bytes(*ts);
            let ok = timestamp <= i64::MAX as u64
                && <[u8; 64]>::try_from(rest).is_ok_and(|s| {
                    w.key
                        .verify_strict(
                            cosigned_message(&note.body, timestamp).as_bytes(),
                            &Signature::from_bytes(&s),
                        )
                        .is_ok()
                });
            if !ok {
                return Err(NoteError::BadSignature(w.label()));
            }
            cosigned.get_or_insert(Cosignature {
                witness: w.name.clone(),
                timestamp,
            });
        }
        if cosigned.is_some() && counted.insert(*w.key.as_bytes()) {
            found.extend(cosigned);
        }
    }
    Ok(found)
}

/// [`cosignatures`], requiring at least `required` distinct trusted witnesses.
pub fn require_cosignatures(
    note: &ParsedNote,
    witnesses: &[WitnessKey],
    required: usize,
) -> Result<Vec<Cosignature>, NoteError> {
    let found = cosignatures(note, witnesses)?;
    if found.len() < required {
        return Err(NoteError::TooFewCosignatures {
            found: found.len(),
            required,
        });
    }
    Ok(found)
}

/// What an auditor requires of a checkpoint's witnesses: the trusted witnesses and how many
/// distinct ones must have cosigned (FORMAT §5a). The default requires none.
#[derive(Clone, Debug, Default)]
pub struct WitnessPolicy {
    /// The trusted witnesses.
    pub witnesses: Vec<WitnessKey>,
    /// How many distinct ones must have cosigned.
    pub required: usize,
}

impl WitnessPolicy {
    /// The cosignatures of the trusted witnesses on `note`, at least `required` of them.
    pub fn check(&self, note: &ParsedNote) -> Result<Vec<Cosignature>, NoteError> {
        require_cosignatures(note, &self.witnesses, self.required)
    }
}

/// A cosigning witness (for tests and tools: the daemon itself never cosigns).
#[derive(Debug)]
pub struct Witness {
    key: WitnessKey,
    signing: SigningKey,
}

impl Witness {
    /// A witness from a name and a 32-byte seed.
    pub fn from_seed(name: &str, seed: &[u8; 32]) -> Result<Witness, KeyError> {
        let signing = SigningKey::from_bytes(seed);
        Ok(Witness {
            key: WitnessKey::new(name, signing.verifying_key().as_bytes())?,
            signing,
        })
    }

    /// Its verifier key.
    pub fn key(&self) -> &WitnessKey {
        &self.key
    }

    /// The signature line cosigning a checkpoint `body` at `timestamp`.
    pub fn cosign(&self, body: &str, timestamp: u64) -> String {
        use ed25519_dalek::Signer as _;
        let sig = self
            .signing
            .sign(cosigned_message(body, timestamp).as_bytes());
        let mut blob = self.key.id.to_be_bytes().to_vec();
        blob.extend_from_slice(&timestamp.to_be_bytes());
        blob.extend_from_slice(&sig.to_bytes());
        format!("\u{2014} {} {}\n", self.key.name, B64.encode(blob))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::{Checkpoint, parse_note};
    use crate::hash::Hash;
    use crate::keys::Signer;

    fn note() -> (String, Signer) {
        let log = Signer::from_seed("example.org/log", &[3; 32]).unwrap();
        let cp = Checkpoint {
            origin: "example.org/log".into(),
            size: 7,
            root: Hash([9; 32]),
            head: Hash([8; 32]),
        };
        (cp.sign(&log), log)
    }

    #[test]
    fn cosignatures_verify_and_count_once_per_witness() {
        let (mut text, log) = note();
        let body = parse_note(text.as_bytes()).unwrap().body;
        let w1 = Witness::from_seed("witness.example/w1", &[1; 32]).unwrap();
        let w2 = Witness::from_seed("witness.example/w2", &[2; 32]).unwrap();
        text.push_str(&w1.cosign(&body, 1_700_000_000));
        text.push_str(&w1.cosign(&body, 1_700_000_001));
        text.push_str(&w2.cosign(&body, 1_700_000_002));
        let parsed = parse_note(text.as_bytes()).unwrap();
        // The log's own signature still verifies beside the cosignatures.
        assert!(parsed.verify(log.public()).is_ok());
        let keys = [w1.key().clone(), w2.key().clone()];
        let found = require_cosignatures(&parsed, &keys, 2).unwrap();
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].timestamp, 1_700_000_000);
        assert!(matches!(
            require_cosignatures(&parsed, &keys, 3),
            Err(NoteError::TooFewCosignatures {
                found: 2,
                required: 3
            })
        ));
        // A witness not trusted counts for nothing.
        let other = Witness::from_seed("witness.example/w3", &[4; 32]).unwrap();
        assert!(
            cosignatures(&parsed, &[other.key().clone()])
                .unwrap()
                .is_empty()
        );
        // Key text round trip.
        let text = w1.key().to_text();
        assert!(text.starts_with("witness.example/w1+"));
        assert_eq!(&WitnessKey::from_text(&text).unwrap(), w1.key());
        assert!(WitnessKey::from_text(&log.public().to_text()).is_err());
    }

    #[test]
    fn a_trusted_witness_line_that_fails_rejects_the_note() {
        let (mut text, _) = note();
        let body = parse_note(text.as_bytes()).unwrap().body;
        let w = Witness::from_seed("witness.example/w1", &[1; 32]).unwrap();
        // Cosigned another body: the line is the witness's, the signature is wrong.
        text.push_str(&w.cosign(&body.replace('7', "8"), 5));
        let parsed = parse_note(text.as_bytes()).unwrap();
        assert!(matches!(
            cosignatures(&parsed, &[w.key().clone()]),
            Err(NoteError::BadSignature(_))
        ));
    }
}
