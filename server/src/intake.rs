//! Signed manifest intake (DOMAIN §7.3, NIXFLEET-WIRE.md §4.4): canonicalize with JCS (RFC
//! 8785), verify the signature (ed25519 or ecdsa-p256, `crate::trust`) against the trusted
//! keys in order, then
//! the schema, `reject_before`, freshness and (for rollouts) the id discriminator. What passes
//! becomes a `FleetManifestAccepted` / `RolloutManifestAccepted` entry holding the JCS bytes;
//! checks against the manifests in force (fleet anchor, newer-than) are the decision's
//! ([`planner::decide`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

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
    /// The signature is not 64 bytes (raw, or base64 of them).
    #[error("the signature is not 64 bytes (raw, or base64 of 64 bytes)")]
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
        /// How old a signed document may be, in seconds.
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
    /// `revocations.json` (NIXFLEET-WIRE.md §9.1).
    Revocations,
    /// `bootstrap-nonces.json` (§9.2).
    BootstrapNonces,
}

impl Target {
    /// The file CI writes it as in a release directory (a rollout's under `rollouts/`).
    pub fn file_name(&self) -> String {
        match self {
            Target::Fleet => "fleet.resolved.json".into(),
            Target::Rollout(id) => format!("rollouts/{id}.json"),
            Target::Revocations => "revocations.json".into(),
            Target::BootstrapNonces => "bootstrap-nonces.json".into(),
        }
    }
}

/// Trust settings the checks need.
#[derive(Clone, Debug)]
pub struct TrustRoots {
    /// Keys in order, and the `reject_before` cut-off.
    pub keys: crate::trust::TrustedKeys,
    /// Freshness window.
    pub max_age_secs: u64,
}

/// Verifies one signed artifact at CP time `now`.
pub fn verify(
    target: &Target,
    artifact: &serde_json::Value,
    signature: &[u8],
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
    let sig = crate::trust::signature_bytes(signature).map_err(|_| ManifestError::NotSigned)?;
    let signer = trust
        .keys
        .verifier(&canonical, &sig, now)
        .ok_or(ManifestError::BadSignature)?;
    if matches!(target, Target::Fleet | Target::Rollout(_)) {
        document::check_agent_schema(artifact, *target == Target::Fleet)?;
    }
    let document = match target {
        Target::Revocations => Document::Revocations(document::parse_revocations(&canonical)?),
        Target::BootstrapNonces => {
            Document::BootstrapNonces(document::parse_bootstrap_nonces(&canonical)?)
        }
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
    let signed_at = wire::ts::parse(document.signed_at())
        .map_err(|e| ManifestError::Document(document::DocumentError::SignedAt(e)))?;
    let show = wire::ts::format;
    if let Some(cutoff) = trust.keys.reject_before_us
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
        signer: signer.public(),
        signature: Some((signer.algorithm().to_string(), sig)),
        signed_at,
        document,
    })
}

/// One artifact found in the watched directory.
#[derive(Debug)]
pub struct Found {
    /// Which manifest the file holds.
    pub target: Target,
    /// Its file.
    pub path: PathBuf,
    /// Parsed JSON.
    pub artifact: serde_json::Value,
    /// `.sig` contents (raw signature bytes, as nixfleet's CI writes them, or base64 text).
    pub signature: Vec<u8>,
}

/// Scans a manifest directory laid out as nixfleet's CI writes its release directory:
/// `fleet.resolved.json` and `rollouts/<channel>@<ref>.json`, each with its signature in
/// `<file>.sig` beside it. Returns the artifacts whose bytes changed since the last scan
/// (`seen` maps path → SHA-256 of artifact and signature), and a line per file it skips, with
/// why (each reported once per change of the file).
pub fn scan_dir(dir: &Path, seen: &mut BTreeMap<PathBuf, [u8; 32]>) -> (Vec<Found>, Vec<String>) {
    let mut candidates: Vec<(Target, PathBuf)> =
        [Target::Fleet, Target::Revocations, Target::BootstrapNonces]
            .into_iter()
            .map(|t| {
                let path = dir.join(t.file_name());
                (t, path)
            })
            .collect();
    let mut errors = Vec::new();
    // Reports a skipped file once per change of what makes it skipped.
    let mut skip = |seen: &mut BTreeMap<PathBuf, [u8; 32]>, path: &Path, why: String| {
        let digest: [u8; 32] = Sha256::digest(why.as_bytes()).into();
        if seen.insert(path.to_path_buf(), digest) != Some(digest) {
            errors.push(format!("{}: skipped: {why}", path.display()));
        }
    };
    if let Ok(rd) = std::fs::read_dir(dir) {
        let mut names: Vec<PathBuf> = rd.filter_map(Result::ok).map(|e| e.path()).collect();
        names.sort();
        for p in names {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            let known = matches!(
                name.strip_suffix(".sig").unwrap_or(name),
                "fleet.resolved.json" | "revocations.json" | "bootstrap-nonces.json"
            ) || name == "rollouts";
            if !known {
                skip(
                    seen,
                    &p,
                    "not an artifact this control plane reads (fleet.resolved.json, revocations.json, bootstrap-nonces.json and rollouts/<channel>@<ref>.json, each with a .sig)".into(),
                );
            }
        }
    }
    if let Ok(rd) = std::fs::read_dir(dir.join("rollouts")) {
        let mut files: Vec<PathBuf> = rd.filter_map(Result::ok).map(|e| e.path()).collect();
        files.sort();
        for p in files {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            if name.ends_with(".json.sig") {
                continue;
            }
            let Some(stem) = name.strip_suffix(".json") else {
                skip(seen, &p, "not a .json artifact or its .json.sig".into());
                continue;
            };
            match RolloutId::parse(stem) {
                Ok(id) => candidates.push((Target::Rollout(id), p)),
                Err(e) => skip(seen, &p, format!("the file name is not a rollout id: {e}")),
            }
        }
    }
    let mut found = Vec::new();
    for (target, path) in candidates {
        let sig_path = path.with_extension("json.sig");
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                skip(seen, &path, format!("cannot be read: {e}"));
                continue;
            }
        };
        let sig = match std::fs::read(&sig_path) {
            Ok(s) => s,
            Err(e) => {
                skip(
                    seen,
                    &path,
                    format!("its signature {} cannot be read: {e}", sig_path.display()),
                );
                continue;
            }
        };
        let mut h = Sha256::new();
        h.update(&bytes);
        h.update(&sig);
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
            Err(e) => skip(seen, &path, format!("not JSON: {e}")),
        }
    }
    (found, errors)
}

/// How often the manifest directory is scanned.
pub const SCAN_INTERVAL: Duration = Duration::from_secs(2);
