//! CI's manifests: whether one replaces the manifest in force, and what it opens.

use super::{Answer, Log, Manifest, ManifestRefusal, Refusal, hex, rfc3339};
use crate::document;
use crate::document::Document;
use crate::manifest::{InForce, Manifests};
use ledger::domain::Micros;
use ledger::event::{
    BootstrapNoncesAccepted, Event, FleetManifestAccepted, FleetManifestSigned,
    RevocationsAccepted, RolloutManifestAccepted, RolloutManifestSigned, SIDECAR_BOOTSTRAP_NONCES,
    SIDECAR_REVOCATIONS, SignedFile,
};

pub(super) fn manifest(
    log: &mut impl Log,
    manifests: &mut Manifests,
    m: Manifest,
    now: Micros,
) -> Result<Answer, Refusal> {
    let seq = log.next_seq();
    let event = match &m.document {
        Document::Revocations(_) | Document::BootstrapNonces(_) => {
            return signed_file(log, m, now);
        }
        Document::Fleet(_) => {
            if let Some(dup) = replaces(manifests.fleet_in_force.as_ref(), &m)? {
                return Ok(dup);
            }
            match m.signature {
                Some((algorithm, signature)) => Event::FleetManifestSigned(FleetManifestSigned {
                    content_hash: m.content_hash,
                    signer: m.signer,
                    algorithm,
                    signature,
                    signed_at: m.signed_at,
                    canonical: m.canonical,
                }),
                None => Event::FleetManifestAccepted(FleetManifestAccepted {
                    content_hash: m.content_hash,
                    signer: m.signer,
                    signed_at: m.signed_at,
                    canonical: m.canonical,
                }),
            }
        }
        Document::Rollout(doc) => {
            // The manifest in force itself is a duplicate whatever came since (a newer fleet
            // it no longer matches included): re-posting it is idempotent (DECISIONS 40).
            let in_force = manifests.rollout_in_force.get(&doc.rollout_id.channel);
            if let Some(f) = in_force.filter(|f| f.content_hash == m.content_hash) {
                return Ok(Answer::Duplicate { seq: f.seq });
            }
            let Some(fleet) = &manifests.fleet_in_force else {
                return Err(ManifestRefusal::NoFleet.into());
            };
            if doc.fleet_resolved_hash != fleet.content_hash {
                return Err(ManifestRefusal::FleetMismatch {
                    found: hex(&doc.fleet_resolved_hash),
                    in_force: hex(&fleet.content_hash),
                }
                .into());
            }
            document::check_rollout(doc, &manifests.fleet).map_err(ManifestRefusal::from)?;
            let in_force = manifests.rollout_in_force.get(&doc.rollout_id.channel);
            if let Some(dup) = replaces(in_force, &m)? {
                return Ok(dup);
            }
            match m.signature {
                Some((algorithm, signature)) => {
                    Event::RolloutManifestSigned(RolloutManifestSigned {
                        rollout_id: doc.rollout_id.clone(),
                        content_hash: m.content_hash,
                        fleet_resolved_hash: doc.fleet_resolved_hash,
                        signer: m.signer,
                        algorithm,
                        signature,
                        signed_at: m.signed_at,
                        canonical: m.canonical,
                    })
                }
                None => Event::RolloutManifestAccepted(RolloutManifestAccepted {
                    rollout_id: doc.rollout_id.clone(),
                    content_hash: m.content_hash,
                    fleet_resolved_hash: doc.fleet_resolved_hash,
                    signer: m.signer,
                    signed_at: m.signed_at,
                    canonical: m.canonical,
                }),
            }
        }
    };
    // Folded into the manifests before it is staged, so a document this build cannot fold
    // stages nothing.
    manifests
        .apply(seq, &event)
        .map_err(ManifestRefusal::from)?;
    log.stage(now, vec![event]);
    Ok(Answer::Recorded { seq, entries: 1 })
}

/// A revocation list or nonce allowlist: recorded if it replaces the one in force (by the
/// manifests' rule: the same bytes are a duplicate, an older signature is refused). It opens
/// nothing, so it is staged without touching the manifests.
fn signed_file(log: &mut impl Log, m: Manifest, now: Micros) -> Result<Answer, Refusal> {
    let name = match &m.document {
        Document::Revocations(_) => SIDECAR_REVOCATIONS,
        _ => SIDECAR_BOOTSTRAP_NONCES,
    };
    let in_force = log
        .state()
        .sidecars
        .get(&name.to_string())
        .map(|r| InForce {
            seq: r.seq,
            content_hash: r.content_hash,
            signed_at: r.signed_at,
        });
    if let Some(dup) = replaces(in_force.as_ref(), &m)? {
        return Ok(dup);
    }
    let Some((algorithm, signature)) = m.signature else {
        return Err(ManifestRefusal::Unsigned(name).into());
    };
    let file = SignedFile {
        content_hash: m.content_hash,
        signer: m.signer,
        algorithm,
        signature,
        signed_at: m.signed_at,
        canonical: m.canonical,
    };
    let event = match m.document {
        Document::Revocations(d) => Event::RevocationsAccepted(RevocationsAccepted {
            file,
            revocations: d.revocations,
        }),
        Document::BootstrapNonces(d) => Event::BootstrapNoncesAccepted(BootstrapNoncesAccepted {
            file,
            nonces: d.nonces,
        }),
        // `manifest` hands this function nothing else.
        Document::Fleet(_) | Document::Rollout(_) => {
            unreachable!("signed_file is called for revocation lists and nonce allowlists only")
        }
    };
    let seq = log.stage(now, vec![event]);
    Ok(Answer::Recorded { seq, entries: 1 })
}

/// Whether `m` may replace the manifest in force: the same bytes are a duplicate (answered
/// with the original entry), an older or equally old signature is refused (no rollback to an
/// older signed artifact), a newer one goes ahead (`None`).
pub(super) fn replaces(
    in_force: Option<&InForce>,
    m: &Manifest,
) -> Result<Option<Answer>, Refusal> {
    let Some(f) = in_force else {
        return Ok(None);
    };
    if f.content_hash == m.content_hash {
        return Ok(Some(Answer::Duplicate { seq: f.seq }));
    }
    if m.signed_at <= f.signed_at {
        return Err(ManifestRefusal::Outdated {
            signed_at: rfc3339(m.signed_at),
            in_force: rfc3339(f.signed_at),
        }
        .into());
    }
    Ok(None)
}
