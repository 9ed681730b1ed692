//! CI release keys: the keys a signed manifest must verify against, as nixfleet's trust file
//! has them (NIXFLEET-WIRE.md §4.4). Two algorithms: `ed25519` (public key: base64 of 32
//! bytes; signature: 64 raw bytes, verified strictly) and `ecdsa-p256` (public key: base64
//! of the 64 bytes X‖Y; signature: 64 raw bytes r‖s over SHA-256, a high s normalized to low
//! first, since a TPM signs high-s about half the time). Keys of other algorithms are skipped,
//! as nixfleet's verifier does.

use std::path::Path;

use base64::Engine as _;
use ledger::domain::Micros;
use serde::{Deserialize, Serialize};

/// One trusted key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CiKey {
    /// ed25519.
    Ed25519(ed25519_dalek::VerifyingKey),
    /// ECDSA on P-256 with SHA-256.
    P256(p256::ecdsa::VerifyingKey),
}

impl CiKey {
    /// Parses a key as a trust file writes it; `Ok(None)` for an algorithm this build does
    /// not verify (skipped, not an error).
    pub fn parse(algorithm: &str, public: &str) -> Result<Option<CiKey>, String> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(public.trim())
            .map_err(|e| format!("the public key is not base64: {e}"))?;
        match algorithm {
            "ed25519" => {
                let raw: [u8; 32] = bytes
                    .try_into()
                    .map_err(|b: Vec<u8>| format!("an ed25519 key is 32 bytes, not {}", b.len()))?;
                ed25519_dalek::VerifyingKey::from_bytes(&raw)
                    .map(|k| Some(CiKey::Ed25519(k)))
                    .map_err(|e| format!("not an ed25519 public key: {e}"))
            }
            "ecdsa-p256" => {
                if bytes.len() != 64 {
                    return Err(format!(
                        "an ecdsa-p256 key is the 64 bytes X‖Y, not {}",
                        bytes.len()
                    ));
                }
                let mut sec1 = Vec::with_capacity(65);
                sec1.push(0x04);
                sec1.extend_from_slice(&bytes);
                p256::ecdsa::VerifyingKey::from_sec1_bytes(&sec1)
                    .map(|k| Some(CiKey::P256(k)))
                    .map_err(|e| format!("not a P-256 point: {e}"))
            }
            _ => Ok(None),
        }
    }

    /// The algorithm's name, as trust files write it.
    pub fn algorithm(&self) -> &'static str {
        match self {
            CiKey::Ed25519(_) => "ed25519",
            CiKey::P256(_) => "ecdsa-p256",
        }
    }

    /// The public key as trust files write it (base64), which entries record as the signer.
    pub fn public(&self) -> String {
        let b64 = &base64::engine::general_purpose::STANDARD;
        match self {
            CiKey::Ed25519(k) => b64.encode(k.as_bytes()),
            CiKey::P256(k) => {
                let point = k.to_sec1_point(false);
                b64.encode(&point.as_bytes()[1..])
            }
        }
    }

    /// Whether `signature` (raw bytes) is this key's over `message`.
    pub fn verifies(&self, message: &[u8], signature: &[u8]) -> bool {
        let Ok(raw) = <[u8; 64]>::try_from(signature) else {
            return false;
        };
        match self {
            CiKey::Ed25519(k) => k
                .verify_strict(message, &ed25519_dalek::Signature::from_bytes(&raw))
                .is_ok(),
            CiKey::P256(k) => {
                use p256::ecdsa::signature::Verifier as _;
                let Ok(sig) = p256::ecdsa::Signature::from_slice(&raw) else {
                    return false;
                };
                let sig = sig.normalize_s();
                k.verify(message, &sig).is_ok()
            }
        }
    }
}

/// A key of a trust file: `{algorithm, public}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyText {
    /// `ed25519` or `ecdsa-p256` (others are skipped).
    pub algorithm: String,
    /// Base64 of the public key.
    pub public: String,
}

/// nixfleet's key slot (`ciReleaseKey` of its trust file), with its rotation fields.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KeySlot {
    /// The key CI signs with now.
    #[serde(default)]
    pub current: Option<KeyText>,
    /// The key it signed with before (still trusted).
    #[serde(default)]
    pub previous: Option<KeyText>,
    /// The key it will sign with next, trusted until `retire_at`.
    #[serde(default)]
    pub successor: Option<KeyText>,
    /// RFC 3339: when the successor stops being tried.
    #[serde(default)]
    pub retire_at: Option<String>,
    /// RFC 3339: manifests signed before this are refused (the compromise switch).
    #[serde(default)]
    pub reject_before: Option<String>,
}

/// nixfleet's trust file (`/etc/nixfleet/cp/trust.json`): the parts this CP reads.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TrustFile {
    /// Must be 1.
    pub schema_version: u32,
    /// The CI release keys.
    pub ci_release_key: KeySlot,
    /// The org root key, which signs bootstrap tokens (enrollment).
    #[serde(default)]
    pub org_root_key: Option<KeySlot>,
    /// SHA-256 of the bytes this was parsed from: a later read tells a change by it.
    #[serde(skip)]
    pub digest: [u8; 32],
}

impl TrustFile {
    /// Reads a trust file.
    pub fn load(path: &Path) -> Result<TrustFile, String> {
        let bytes = TrustFile::read(path)?;
        let mut file: TrustFile = serde_json::from_slice(&bytes)
            .map_err(|e| format!("{}: not a nixfleet trust file: {e}", path.display()))?;
        if file.schema_version != 1 {
            return Err(format!(
                "{}: schemaVersion {} is not supported (this build reads 1)",
                path.display(),
                file.schema_version
            ));
        }
        file.digest = <sha2::Sha256 as sha2::Digest>::digest(&bytes).into();
        Ok(file)
    }

    /// The SHA-256 of the file's bytes now (None: it cannot be read).
    pub fn digest_now(path: &Path) -> Option<[u8; 32]> {
        TrustFile::read(path)
            .ok()
            .map(|bytes| <sha2::Sha256 as sha2::Digest>::digest(&bytes).into())
    }

    /// The file's bytes: a regular file of at most 1 MiB (a trust file is a few keys), read
    /// without blocking on a FIFO or a device.
    fn read(path: &Path) -> Result<Vec<u8>, String> {
        ledger::keys::read_regular_file(path, 1 << 20).map_err(|e| e.to_string())
    }
}

/// The keys manifests verify against, tried in order; a successor only until its time.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrustedKeys {
    keys: Vec<(CiKey, Option<Micros>)>,
    /// Manifests signed strictly before this are refused.
    pub reject_before_us: Option<Micros>,
}

fn time(field: &str, text: &str) -> Result<Micros, String> {
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.timestamp_micros())
        .map_err(|e| format!("{field}: {text:?} is not an RFC 3339 time: {e}"))
}

impl TrustedKeys {
    /// Adds a key (always tried); skips one of an unsupported algorithm, with a warning.
    pub fn add(&mut self, field: &str, k: &KeyText) -> Result<(), String> {
        self.add_until(field, k, None)
    }

    fn add_until(&mut self, field: &str, k: &KeyText, until: Option<Micros>) -> Result<(), String> {
        match CiKey::parse(&k.algorithm, &k.public).map_err(|e| format!("{field}: {e}"))? {
            Some(key) => self.keys.push((key, until)),
            None => tracing::warn!(
                field,
                algorithm = %k.algorithm,
                "skipping a trusted key of an unsupported algorithm"
            ),
        }
        Ok(())
    }

    /// Adds a key slot: `current`, `previous`, then `successor` until `retireAt`; its
    /// `rejectBefore` tightens the cut-off.
    pub fn add_slot(&mut self, field: &str, slot: &KeySlot) -> Result<(), String> {
        if let Some(k) = &slot.current {
            self.add(&format!("{field}.current"), k)?;
        }
        if let Some(k) = &slot.previous {
            self.add(&format!("{field}.previous"), k)?;
        }
        if let Some(k) = &slot.successor {
            let until = slot
                .retire_at
                .as_deref()
                .map(|t| time(&format!("{field}.retireAt"), t))
                .transpose()?;
            self.add_until(&format!("{field}.successor"), k, until)?;
        }
        if let Some(t) = &slot.reject_before {
            self.reject_after(time(&format!("{field}.rejectBefore"), t)?);
        }
        Ok(())
    }

    /// Refuses manifests signed before `cutoff` (the latest cut-off given wins).
    pub fn reject_after(&mut self, cutoff: Micros) {
        self.reject_before_us = Some(self.reject_before_us.map_or(cutoff, |c| c.max(cutoff)));
    }

    /// Keeps the ed25519 keys only, warning about the others (nixfleet's bootstrap tokens are
    /// verified with ed25519 org root keys only).
    pub fn retain_ed25519(&mut self) {
        self.keys.retain(|(k, _)| {
            let keep = matches!(k, CiKey::Ed25519(_));
            if !keep {
                tracing::warn!(
                    algorithm = k.algorithm(),
                    "skipping a non-ed25519 org root key"
                );
            }
            keep
        });
    }

    /// Each key as `<algorithm>:<base64 public key>`, with `until <µs>` for a successor with a
    /// retirement time, and the cut-off as `reject-before:<µs>`: what a change of trust is
    /// recorded as.
    pub fn describe(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .keys
            .iter()
            .map(|(k, until)| match until {
                Some(t) => format!("{}:{} until {t}", k.algorithm(), k.public()),
                None => format!("{}:{}", k.algorithm(), k.public()),
            })
            .collect();
        out.extend(self.reject_before_us.map(|t| format!("reject-before:{t}")));
        out
    }

    /// Whether no key can verify anything.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The first key, tried in order, whose signature `signature` is over `message` at CP
    /// time `now`.
    pub fn verifier(&self, message: &[u8], signature: &[u8], now: Micros) -> Option<&CiKey> {
        self.keys
            .iter()
            .filter(|(_, until)| until.is_none_or(|t| now < t))
            .map(|(k, _)| k)
            .find(|k| k.verifies(message, signature))
    }
}

/// A signature as it arrives: nixfleet's `.sig` files hold the raw 64 bytes; fleet-ledger's
/// POST body and its earlier `.sig` files hold base64 text. 64 bytes are taken as raw (base64
/// of 64 bytes is 88 characters, so the two never collide).
pub fn signature_bytes(sig: &[u8]) -> Result<Vec<u8>, &'static str> {
    if sig.len() == 64 {
        return Ok(sig.to_vec());
    }
    let text = std::str::from_utf8(sig).map_err(|_| "neither 64 raw bytes nor base64 text")?;
    base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .ok()
        .filter(|b| b.len() == 64)
        .ok_or("neither 64 raw bytes nor base64 of 64 bytes")
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};

    /// A P-256 signature made by another implementation (ring, BoringSSL's code) in the
    /// fixed r‖s form CI's signer writes verifies with the key as a trust file holds it;
    /// a changed message or signature does not.
    #[test]
    fn ecdsa_p256_signatures_from_another_implementation_verify() {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let signer =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
                .unwrap();
        // ring's public key is the SEC1 uncompressed point 0x04 ‖ X ‖ Y; a trust file holds
        // base64 of X ‖ Y.
        let point = signer.public_key().as_ref();
        assert_eq!((point.len(), point[0]), (65, 4));
        let public = base64::engine::general_purpose::STANDARD.encode(&point[1..]);
        let key = CiKey::parse("ecdsa-p256", &public).unwrap().unwrap();
        assert_eq!(key.public(), public);
        let msg = br#"{"meta":{"signedAt":"2026-05-17T12:00:00Z"},"schemaVersion":1}"#;
        for _ in 0..32 {
            // ECDSA signatures are randomized: some have a high s, which must verify too.
            let sig = signer.sign(&rng, msg).unwrap();
            let sig = sig.as_ref();
            assert_eq!(sig.len(), 64);
            assert!(key.verifies(msg, sig));
            assert!(!key.verifies(b"another message", sig));
            let mut bad = sig.to_vec();
            bad[10] ^= 1;
            assert!(!key.verifies(msg, &bad));
        }
    }
}
