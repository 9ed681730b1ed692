//! Signed manifest intake (DOMAIN §7.3): canonicalize with JCS (RFC 8785), verify the
//! ed25519 signature with `verify_strict` against the trusted keys in declaration order, then
//! the schema, `reject_before`, freshness and (for rollouts) the id discriminator. What passes
//! becomes a `FleetManifestAccepted` / `RolloutManifestAccepted` entry holding the JCS bytes;
//! checks against the manifests in force (fleet anchor, newer-than) are the decision's
//! ([`planner::decide`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use ed25519_dalek::{Signature, VerifyingKey};
use ledger::domain::{Micros, RolloutId};
use planner::Manifest;
use planner::document::{self, Document};
use sha2::{Digest as _, Sha256};
use thiserror::Error;

/// Clock skew tolerated on `signedAt` (the reference's `CLOCK_SKEW_SLACK_SECS`).
pub const SKEW_US: Micros = 60_000_000;

/// Why a manifest is refused. Every variant leaves the ledger unchanged.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ManifestError {
    /// Not JSON, or not canonicalizable.
    #[error("manifest does not parse: {0}")]
    Parse(String),
    /// The signature is not base64 of 64 bytes.
    #[error("signature is not base64 of a 64-byte ed25519 signature")]
    NotSigned,
    /// No trusted key verifies the signature.
    #[error("no trusted key verifies the signature over the JCS canonical form")]
    BadSignature,
    /// Schema or content problems.
    #[error(transparent)]
    Document(#[from] document::DocumentError),
    /// Signed before the compromise cut-off.
    #[error("signed at {signed_at}, before the reject_before cut-off {cutoff}")]
    RejectedBefore {
        /// `meta.signedAt`.
        signed_at: String,
        /// The cut-off.
        cutoff: String,
    },
    /// Older than the freshness window.
    #[error("stale: signed at {signed_at}, older than the {max_age_secs} s freshness window")]
    Stale {
        /// `meta.signedAt`.
        signed_at: String,
        /// Window.
        max_age_secs: u64,
    },
    /// Dated in the future beyond the skew.
    #[error("future-dated: signed at {signed_at}, more than 60 s ahead of the CP clock")]
    FutureDated {
        /// `meta.signedAt`.
        signed_at: String,
    },
    /// The rollout manifest is for another id than the one it was posted as.
    #[error("discriminator: manifest is for {found}, posted as {requested}")]
    Discriminator {
        /// Requested id.
        requested: String,
        /// `channel@channel_ref` of the manifest.
        found: String,
    },
}

impl ManifestError {
    /// Stable reason code.
    pub fn code(&self) -> &'static str {
        match self {
            ManifestError::Parse(_) => "manifest-parse",
            ManifestError::NotSigned => "manifest-not-signed",
            ManifestError::BadSignature => "manifest-bad-signature",
            ManifestError::Document(d) => d.code(),
            ManifestError::RejectedBefore { .. } => "manifest-rejected-before",
            ManifestError::Stale { .. } => "manifest-stale",
            ManifestError::FutureDated { .. } => "manifest-future-dated",
            ManifestError::Discriminator { .. } => "manifest-discriminator",
        }
    }
}

/// Which artifact.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// `fleet.resolved`.
    Fleet,
    /// A rollout manifest, as requested by id (path or file name).
    Rollout(RolloutId),
}

/// Trust settings the checks need.
#[derive(Clone, Debug)]
pub struct TrustRoots {
    /// Keys in order.
    pub keys: Vec<VerifyingKey>,
    /// Cut-off.
    pub reject_before_us: Option<Micros>,
    /// Freshness window.
    pub max_age_secs: u64,
}

/// Verifies one signed artifact at CP time `now`.
pub fn verify(
    target: &Target,
    artifact: &serde_json::Value,
    signature_b64: &str,
    trust: &TrustRoots,
    now: Micros,
) -> Result<Manifest, ManifestError> {
    if !artifact.is_object() {
        return Err(ManifestError::Parse(
            "the artifact is not a JSON object".into(),
        ));
    }
    let canonical = serde_json_canonicalizer::to_vec(artifact)
        .map_err(|e| ManifestError::Parse(format!("JCS canonicalization: {e}")))?;
    let sig = base64::engine::general_purpose::STANDARD
        .decode(signature_b64.trim())
        .ok()
        .and_then(|b| <[u8; 64]>::try_from(b).ok())
        .map(|b| Signature::from_bytes(&b))
        .ok_or(ManifestError::NotSigned)?;
    let signer = trust
        .keys
        .iter()
        .find(|k| k.verify_strict(&canonical, &sig).is_ok())
        .ok_or(ManifestError::BadSignature)?;
    let document = match target {
        Target::Fleet => Document::Fleet(document::parse_fleet(&canonical)?),
        Target::Rollout(requested) => {
            let doc = document::parse_rollout(&canonical)?;
            if doc.rollout_id != *requested {
                return Err(ManifestError::Discriminator {
                    requested: requested.to_string(),
                    found: doc.rollout_id.to_string(),
                });
            }
            Document::Rollout(doc)
        }
    };
    let signed_at = crate::wire::ts::parse(document.signed_at())
        .map_err(|e| ManifestError::Document(document::DocumentError::SignedAt(e)))?;
    let show = crate::wire::ts::format;
    if let Some(cutoff) = trust.reject_before_us
        && signed_at < cutoff
    {
        return Err(ManifestError::RejectedBefore {
            signed_at: show(signed_at),
            cutoff: show(cutoff),
        });
    }
    let max_age_us = i64::try_from(trust.max_age_secs)
        .unwrap_or(i64::MAX / 1_000_000)
        .saturating_mul(1_000_000);
    if signed_at < now.saturating_sub(max_age_us).saturating_sub(SKEW_US) {
        return Err(ManifestError::Stale {
            signed_at: show(signed_at),
            max_age_secs: trust.max_age_secs,
        });
    }
    if signed_at > now.saturating_add(SKEW_US) {
        return Err(ManifestError::FutureDated {
            signed_at: show(signed_at),
        });
    }
    let content_hash: [u8; 32] = Sha256::digest(&canonical).into();
    Ok(Manifest {
        canonical,
        content_hash,
        signer: base64::engine::general_purpose::STANDARD.encode(signer.as_bytes()),
        signed_at,
        document,
    })
}

/// One artifact found in the watched directory.
#[derive(Debug)]
pub struct Found {
    /// Which.
    pub target: Target,
    /// Its file.
    pub path: PathBuf,
    /// Parsed JSON.
    pub artifact: serde_json::Value,
    /// `.sig` contents.
    pub signature: String,
}

/// Scans a manifest directory: `fleet.resolved.json` and `rollouts/<channel>@<ref>.json`,
/// each with a base64 `.sig` file beside it. Returns the artifacts whose bytes changed since
/// the last scan (`seen` maps path → SHA-256 of artifact and signature), and a line per file
/// that cannot be read.
pub fn scan_dir(dir: &Path, seen: &mut BTreeMap<PathBuf, [u8; 32]>) -> (Vec<Found>, Vec<String>) {
    let mut candidates = vec![(Target::Fleet, dir.join("fleet.resolved.json"))];
    if let Ok(rd) = std::fs::read_dir(dir.join("rollouts")) {
        let mut files: Vec<PathBuf> = rd
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        files.sort();
        for p in files {
            let stem = p.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
            match RolloutId::parse(stem) {
                Ok(id) => candidates.push((Target::Rollout(id), p)),
                Err(e) => {
                    // Reported once per change, like a refused manifest.
                    let digest: [u8; 32] = Sha256::digest(stem.as_bytes()).into();
                    if seen.insert(p.clone(), digest) != Some(digest) {
                        warn_bad_name(&p, &e.to_string());
                    }
                }
            }
        }
    }
    let mut found = Vec::new();
    let mut errors = Vec::new();
    for (target, path) in candidates {
        let sig_path = path.with_extension("json.sig");
        let (Ok(bytes), Ok(sig)) = (std::fs::read(&path), std::fs::read_to_string(&sig_path))
        else {
            continue;
        };
        let mut h = Sha256::new();
        h.update(&bytes);
        h.update(sig.as_bytes());
        let digest: [u8; 32] = h.finalize().into();
        if seen.get(&path) == Some(&digest) {
            continue;
        }
        seen.insert(path.clone(), digest);
        match serde_json::from_slice(&bytes) {
            Ok(artifact) => found.push(Found {
                target,
                path,
                artifact,
                signature: sig,
            }),
            Err(e) => errors.push(format!("{}: {e}", path.display())),
        }
    }
    (found, errors)
}

fn warn_bad_name(path: &Path, reason: &str) {
    tracing::warn!(path = %path.display(), reason, "manifest file name is not a rollout id");
}

/// How often the manifest directory is scanned.
pub const SCAN_INTERVAL: Duration = Duration::from_secs(2);
