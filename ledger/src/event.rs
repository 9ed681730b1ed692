//! The event vocabulary: typed payloads, one stable kind code per variant.
//!
//! # Schema evolution rule
//!
//! The kind code, not bincode's enum index, identifies a payload: the entry header carries it
//! and the payload is the bincode encoding of that variant's struct alone. Codes are assigned
//! once and never reused. A variant's struct never changes shape once it has been released;
//! a new shape is a new variant with a new code (`FooV2`), and the old one keeps decoding
//! forever. Golden-byte tests in this module and the frozen bundles in `fixtures/` pin this.
//!
//! Readers that meet a kind they do not know keep it as [`Event::Unknown`]: a verifier built
//! before a kind existed still verifies a log that contains it (only [`Genesis`] and
//! [`KeyRotated`] matter to verification, and their shapes are frozen).

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Largest encoded event, an entry's payload (16 MiB): big enough for a signed fleet manifest
/// of a very large fleet, small enough that one hostile entry cannot exhaust memory. Decoding
/// stops there; `entry` checks the header's length against it.
pub const PAYLOAD_BYTES_MAX: usize = 16 << 20;

/// The kind code of an entry: which payload struct its bytes decode as.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Kind(pub u16);

/// The bincode configuration of every payload: bincode 2.0.1 `config::standard()` (little
/// endian, variable-length integers) with a decode limit so a hostile length prefix cannot
/// make the reader allocate more than an entry can hold.
fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<PAYLOAD_BYTES_MAX>()
}

/// Why a payload could not be decoded.
#[derive(Debug, Error)]
pub enum DecodeError {
    /// The bytes are not a valid encoding of the kind's struct.
    #[error("payload of kind {kind} ({name}) does not decode: {source}")]
    Malformed {
        /// Kind code.
        kind: u16,
        /// Kind name.
        name: &'static str,
        /// bincode's reason.
        source: bincode::error::DecodeError,
    },
    /// A valid encoding followed by extra bytes: the payload is not canonical.
    #[error("payload of kind {kind} ({name}) has {extra} trailing bytes")]
    TrailingBytes {
        /// Kind code.
        kind: u16,
        /// Kind name.
        name: &'static str,
        /// Bytes left over.
        extra: usize,
    },
}

fn decode<T: serde::de::DeserializeOwned>(
    kind: Kind,
    name: &'static str,
    payload: &[u8],
) -> Result<T, DecodeError> {
    let (value, read) =
        bincode::serde::decode_from_slice::<T, _>(payload, config()).map_err(|source| {
            DecodeError::Malformed {
                kind: kind.0,
                name,
                source,
            }
        })?;
    if read != payload.len() {
        return Err(DecodeError::TrailingBytes {
            kind: kind.0,
            name,
            extra: payload.len() - read,
        });
    }
    Ok(value)
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Encoding plain structs of strings, integers and byte arrays into a Vec cannot fail.
    bincode::serde::encode_to_vec(value, bincode::config::standard())
        .expect("bincode encoding of a ledger payload into a Vec is infallible")
}

/// Declares the vocabulary once: the enum, kind codes, names, encoding and decoding.
macro_rules! vocabulary {
    ($( $(#[$doc:meta])* $code:literal => $variant:ident($ty:ty), )*) => {
        /// Every fact the ledger records. See the module docs for the evolution rule.
        #[derive(Clone, Debug, PartialEq, Eq)]
        pub enum Event {
            $( $(#[$doc])* $variant($ty), )*
            /// A kind this build does not know (written by a newer version): kept verbatim.
            Unknown {
                /// Its kind code.
                kind: Kind,
                /// Its payload bytes.
                payload: Vec<u8>,
            },
        }

        impl Kind {
            $( $(#[$doc])* #[allow(non_upper_case_globals)]
               pub const $variant: Kind = Kind($code); )*

            /// Human name of the kind, `"unknown"` for codes this build does not know.
            pub fn name(self) -> &'static str {
                match self.0 {
                    $( $code => stringify!($variant), )*
                    _ => "unknown",
                }
            }

            /// Every kind this build knows, in code order.
            pub const ALL: &'static [Kind] = &[$( Kind($code), )*];
        }

        /// Serializes the payload struct alone (untagged; the kind travels beside it). For
        /// human-facing JSON views; the stored form is bincode.
        impl Serialize for Event {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                match self {
                    $( Event::$variant(v) => v.serialize(s), )*
                    Event::Unknown { payload, .. } => payload.serialize(s),
                }
            }
        }

        impl Event {
            /// This event's kind code.
            pub fn kind(&self) -> Kind {
                match self {
                    $( Event::$variant(_) => Kind($code), )*
                    Event::Unknown { kind, .. } => *kind,
                }
            }

            /// The payload bytes stored in the entry.
            pub fn encode_payload(&self) -> Vec<u8> {
                match self {
                    $( Event::$variant(v) => encode(v), )*
                    Event::Unknown { payload, .. } => payload.clone(),
                }
            }

            /// Decodes a payload of the given kind. Unknown kinds decode to [`Event::Unknown`].
            pub fn decode(kind: Kind, payload: &[u8]) -> Result<Event, DecodeError> {
                match kind.0 {
                    $( $code => Ok(Event::$variant(decode(kind, stringify!($variant), payload)?)), )*
                    _ => Ok(Event::Unknown { kind, payload: payload.to_vec() }),
                }
            }
        }
    };
}

vocabulary! {
    /// Entry 0 of every log: names the log and pins its first signing key.
    1 => Genesis(Genesis),
    /// Introduces the next signing key. Takes effect after the first checkpoint covering it.
    2 => KeyRotated(KeyRotated),
    /// A free-text note by an operator, recorded for the audit trail.
    3 => Annotation(Annotation),
    /// An agent's report, as received and accepted.
    10 => AgentEventRecorded(AgentEventRecorded),
    /// A report the CP inferred (heartbeat synthesis), never observed from the agent.
    11 => AgentEventSynthesized(AgentEventSynthesized),
    /// A host's state changed in a rollout.
    12 => HostTransitioned(HostTransitioned),
    /// A rollout opened from a verified rollout manifest.
    13 => RolloutOpened(RolloutOpened),
    /// A host joined a rollout.
    14 => HostJoined(HostJoined),
    /// A rollout's wave cursor moved.
    15 => WaveAdvanced(WaveAdvanced),
    /// A rollout's lifecycle state changed.
    16 => RolloutTransitioned(RolloutTransitioned),
    /// A dispatch was queued for a host.
    17 => DispatchQueued(DispatchQueued),
    /// A queued dispatch was handed to the agent's long poll.
    18 => DispatchDelivered(DispatchDelivered),
    /// The agent acknowledged a dispatch.
    19 => DispatchAcknowledged(DispatchAcknowledged),
    /// The planner's block for a host changed (or was cleared).
    20 => GateDecision(GateDecision),
    /// A closure was quarantined on a channel after a rollback.
    21 => QuarantineAdded(QuarantineAdded),
    /// An operator lifted a quarantine.
    22 => QuarantineLifted(QuarantineLifted),
    /// A failing enforce control (or probe) counted against a rollout.
    23 => ProbeFailureRecorded(ProbeFailureRecorded),
    /// A verified fleet manifest, with its canonical bytes.
    24 => FleetManifestAccepted(FleetManifestAccepted),
    /// A verified rollout manifest, with its canonical bytes.
    25 => RolloutManifestAccepted(RolloutManifestAccepted),
    /// An input the CP refused, recorded for audit.
    26 => InputRejected(InputRejected),
    /// An operator cleared a failed rollout.
    27 => RolloutCleared(RolloutCleared),
    /// A well-formed agent report the CP refused, kept with why.
    28 => AgentReportRefused(AgentReportRefused),
    /// A verified fleet manifest with CI's raw signature.
    29 => FleetManifestSigned(FleetManifestSigned),
    /// A verified rollout manifest with CI's raw signature.
    30 => RolloutManifestSigned(RolloutManifestSigned),
    /// A host enrolled and was issued its agent certificate.
    31 => AgentEnrolled(AgentEnrolled),
    /// An agent renewed its certificate.
    32 => AgentCertificateRenewed(AgentCertificateRenewed),
    /// Who may write changed: tokens or CI keys added or removed by a config reload.
    33 => AccessChanged(AccessChanged),
    /// CI's signed revocation list replaced the one in force.
    34 => RevocationsAccepted(RevocationsAccepted),
    /// CI's signed bootstrap-nonce allowlist replaced the one in force.
    35 => BootstrapNoncesAccepted(BootstrapNoncesAccepted),
    /// A writer took the log over: the first batch of its epoch.
    36 => WriterEpochStarted(WriterEpochStarted),
}

pub use crate::domain_events::*;

/// The name of CI's revocation list among its signed files (`proj.sidecars` key, metrics).
pub const SIDECAR_REVOCATIONS: &str = "revocations";
/// The name of CI's bootstrap-nonce allowlist among its signed files.
pub const SIDECAR_BOOTSTRAP_NONCES: &str = "bootstrap-nonces";

/// A public signing key as recorded in the log. Its key id is derived, never stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRecord {
    /// Key name as it appears in checkpoint signature lines.
    pub name: String,
    /// Raw ed25519 public key.
    pub public_key: [u8; 32],
}

/// Payload of kind 1. Frozen: verifiers decode it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Genesis {
    /// The log's origin line (checkpoint line 1).
    pub origin: String,
    /// The key that signs checkpoints until the first rotation.
    pub key: KeyRecord,
}

/// Payload of kind 2. Frozen: verifiers decode it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRotated {
    /// The key that signs every checkpoint after the one covering this entry.
    pub next: KeyRecord,
    /// Why (scheduled rotation, suspected compromise, …).
    pub reason: String,
}

/// Payload of kind 3.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Annotation {
    /// Who wrote it.
    pub author: String,
    /// What they wrote.
    pub text: String,
}

/// A manifest entry of any kind (24, 25, 29, 30), seen the same way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ManifestEntry<'a> {
    /// The rollout it is for; None for the fleet.
    pub rollout_id: Option<&'a crate::domain::RolloutId>,
    /// SHA-256 of `canonical`.
    pub content_hash: [u8; 32],
    /// For a rollout manifest, the fleet it was built against.
    pub fleet_resolved_hash: Option<[u8; 32]>,
    /// The trusted key that verified it.
    pub signer: &'a str,
    /// `meta.signedAt`, µs.
    pub signed_at: crate::domain::Micros,
    /// The canonical bytes.
    pub canonical: &'a [u8],
    /// CI's algorithm and raw signature (kinds 29 and 30; the first kinds did not keep it).
    pub signature: Option<(&'a str, &'a [u8])>,
}

impl Event {
    /// The manifest this entry records, if it records one.
    pub fn manifest(&self) -> Option<ManifestEntry<'_>> {
        Some(match self {
            Event::FleetManifestAccepted(e) => ManifestEntry {
                rollout_id: None,
                content_hash: e.content_hash,
                fleet_resolved_hash: None,
                signer: &e.signer,
                signed_at: e.signed_at,
                canonical: &e.canonical,
                signature: None,
            },
            Event::RolloutManifestAccepted(e) => ManifestEntry {
                rollout_id: Some(&e.rollout_id),
                content_hash: e.content_hash,
                fleet_resolved_hash: Some(e.fleet_resolved_hash),
                signer: &e.signer,
                signed_at: e.signed_at,
                canonical: &e.canonical,
                signature: None,
            },
            Event::FleetManifestSigned(e) => ManifestEntry {
                rollout_id: None,
                content_hash: e.content_hash,
                fleet_resolved_hash: None,
                signer: &e.signer,
                signed_at: e.signed_at,
                canonical: &e.canonical,
                signature: Some((&e.algorithm, &e.signature)),
            },
            Event::RolloutManifestSigned(e) => ManifestEntry {
                rollout_id: Some(&e.rollout_id),
                content_hash: e.content_hash,
                fleet_resolved_hash: Some(e.fleet_resolved_hash),
                signer: &e.signer,
                signed_at: e.signed_at,
                canonical: &e.canonical,
                signature: Some((&e.algorithm, &e.signature)),
            },
            _ => return None,
        })
    }

    /// The rollout and the host this event is about, where it names them (timelines, the
    /// per-rollout event listing). A quarantine lift names a channel, not a rollout.
    pub fn subject(&self) -> (Option<&crate::domain::RolloutId>, Option<&str>) {
        match self {
            Event::AgentEventRecorded(e) => (Some(&e.rollout_id), Some(&e.hostname)),
            Event::AgentEventSynthesized(e) => (Some(&e.rollout_id), Some(&e.hostname)),
            Event::HostTransitioned(e) => (Some(&e.rollout_id), Some(&e.hostname)),
            Event::RolloutOpened(e) => (Some(&e.rollout_id), None),
            Event::HostJoined(e) => (Some(&e.rollout_id), Some(&e.host.hostname)),
            Event::WaveAdvanced(e) => (Some(&e.rollout_id), None),
            Event::RolloutTransitioned(e) => (Some(&e.rollout_id), None),
            Event::DispatchQueued(e) => (Some(&e.rollout_id), Some(&e.hostname)),
            Event::DispatchDelivered(e) => (Some(&e.rollout_id), Some(&e.hostname)),
            Event::DispatchAcknowledged(e) => (Some(&e.rollout_id), Some(&e.hostname)),
            Event::GateDecision(e) => (Some(&e.rollout_id), Some(&e.hostname)),
            Event::QuarantineAdded(e) => (Some(&e.rollout_id), Some(&e.hostname)),
            Event::ProbeFailureRecorded(e) => (Some(&e.rollout_id), Some(&e.hostname)),
            Event::RolloutManifestAccepted(e) => (Some(&e.rollout_id), None),
            Event::RolloutCleared(e) => (Some(&e.rollout_id), None),
            Event::AgentReportRefused(e) => (Some(&e.rollout_id), Some(&e.hostname)),
            Event::RolloutManifestSigned(e) => (Some(&e.rollout_id), None),
            Event::AgentEnrolled(e) => (None, Some(&e.hostname)),
            Event::AgentCertificateRenewed(e) => (None, Some(&e.hostname)),
            Event::Genesis(_)
            | Event::KeyRotated(_)
            | Event::Annotation(_)
            | Event::QuarantineLifted(_)
            | Event::FleetManifestAccepted(_)
            | Event::FleetManifestSigned(_)
            | Event::InputRejected(_)
            | Event::AccessChanged(_)
            | Event::RevocationsAccepted(_)
            | Event::BootstrapNoncesAccepted(_)
            | Event::WriterEpochStarted(_)
            | Event::Unknown { .. } => (None, None),
        }
    }

    /// Each host this entry is about: its subject's, or every host a revocation list names
    /// (the entry index and `timeline --host` list it under each of them).
    pub fn for_each_host<'a>(&'a self, mut f: impl FnMut(&'a str)) {
        match self {
            Event::RevocationsAccepted(e) => {
                for r in &e.revocations {
                    f(&r.hostname);
                }
            }
            other => {
                if let (_, Some(h)) = other.subject() {
                    f(h);
                }
            }
        }
    }

    /// Whether this entry is about `host` (see [`Event::for_each_host`]).
    pub fn names_host(&self, host: &str) -> bool {
        let mut found = false;
        self.for_each_host(|h| found |= h == host);
        found
    }

    /// The signed file of CI's this entry records, if it records one that is not a manifest
    /// (kinds 34 and 35), with its name (`revocations`, `bootstrap-nonces`).
    pub fn signed_file(&self) -> Option<(&'static str, &SignedFile)> {
        match self {
            Event::RevocationsAccepted(e) => Some((SIDECAR_REVOCATIONS, &e.file)),
            Event::BootstrapNoncesAccepted(e) => Some((SIDECAR_BOOTSTRAP_NONCES, &e.file)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Golden bytes: these encodings are the contract (docs/FORMAT.md §Payloads). If this test
    /// fails, an existing kind changed shape: add a new kind instead.
    #[test]
    fn golden_payload_bytes() {
        let genesis = Event::Genesis(Genesis {
            origin: "ab".into(),
            key: KeyRecord {
                name: "k".into(),
                public_key: [7; 32],
            },
        });
        let mut want = vec![2, b'a', b'b', 1, b'k'];
        want.extend_from_slice(&[7; 32]);
        assert_eq!(genesis.encode_payload(), want);
        assert_eq!(genesis.kind(), Kind(1));

        let rotated = Event::KeyRotated(KeyRotated {
            next: KeyRecord {
                name: "n".into(),
                public_key: [9; 32],
            },
            reason: "r".into(),
        });
        let mut want = vec![1, b'n'];
        want.extend_from_slice(&[9; 32]);
        want.extend_from_slice(&[1, b'r']);
        assert_eq!(rotated.encode_payload(), want);
        assert_eq!(rotated.kind(), Kind(2));

        // A 300-byte string: bincode's varint uses 251 then a u16 little endian.
        let long = "x".repeat(300);
        let note = Event::Annotation(Annotation {
            author: "op".into(),
            text: long.clone(),
        });
        let mut want = vec![2, b'o', b'p', 251, 0x2c, 0x01];
        want.extend_from_slice(long.as_bytes());
        assert_eq!(note.encode_payload(), want);
        assert_eq!(note.kind(), Kind(3));
    }

    /// Golden bytes of a control-plane payload, pinning the encodings FORMAT.md §3 lists for
    /// enums (variant index varint), options (0/1 tag) and signed integers (zigzag varint).
    #[test]
    fn golden_control_plane_payload_bytes() {
        use crate::domain::{HostState, OnHealthFailure, RolloutId};
        let e = Event::HostTransitioned(HostTransitioned {
            hostname: "h".into(),
            rollout_id: RolloutId::new("s", "ab").unwrap(),
            from: HostState::Pending,
            to: HostState::Reverted,
            at: -3,
            policy_applied: Some(OnHealthFailure::RollbackAndHalt),
            cause: TransitionCause::Report {
                agent_seq: 300,
                report: "F".into(),
            },
        });
        assert_eq!(e.kind(), Kind(12));
        assert_eq!(
            e.encode_payload(),
            vec![
                1, b'h', 1, b's', 2, b'a', b'b', 0, 6, 5, 1, 1, 0, 251, 0x2c, 0x01, 1, b'F'
            ],
            "i64 -3 zigzags to 5; Some is 1 then the variant index; u64 300 is 251 + u16 LE"
        );
        assert_eq!(Event::decode(Kind(12), &e.encode_payload()).unwrap(), e);
    }

    /// Golden bytes of kind 34 (FORMAT §9e): a signed file, then the list; options and
    /// nested structs as FORMAT §3 gives them.
    #[test]
    fn golden_revocation_list_bytes() {
        let e = Event::RevocationsAccepted(RevocationsAccepted {
            file: SignedFile {
                content_hash: [1; 32],
                signer: "k".into(),
                algorithm: "e".into(),
                signature: vec![2, 3],
                signed_at: -1,
                canonical: b"{}".to_vec(),
            },
            revocations: vec![Revocation {
                hostname: "h".into(),
                not_before: 1,
                reason: None,
                revoked_by: Some("a".into()),
            }],
        });
        assert_eq!(e.kind(), Kind(34));
        let mut want = vec![1u8; 32];
        want.extend_from_slice(&[1, b'k', 1, b'e', 2, 2, 3, 1, 2, b'{', b'}']);
        want.extend_from_slice(&[1, 1, b'h', 2, 0, 1, 1, b'a']);
        assert_eq!(e.encode_payload(), want, "-1 zigzags to 1, 1 to 2");
        assert_eq!(Event::decode(Kind(34), &want).unwrap(), e);
        assert!(e.names_host("h") && !e.names_host("g"));
    }

    /// Golden bytes of kind 36 (FORMAT §3).
    #[test]
    fn golden_writer_epoch_bytes() {
        let e = Event::WriterEpochStarted(WriterEpochStarted {
            epoch: 300,
            node: "b".into(),
            previous_size: 2,
            previous_root: [9; 32],
        });
        assert_eq!(e.kind(), Kind(36));
        let mut want = vec![251, 0x2c, 0x01, 1, b'b', 2];
        want.extend_from_slice(&[9; 32]);
        assert_eq!(e.encode_payload(), want);
        assert_eq!(Event::decode(Kind(36), &want).unwrap(), e);
    }

    #[test]
    fn every_known_kind_round_trips_and_unknown_kinds_are_kept() {
        let e = Event::Annotation(Annotation {
            author: "a".into(),
            text: "t".into(),
        });
        assert_eq!(Event::decode(e.kind(), &e.encode_payload()).unwrap(), e);
        let unknown = Event::decode(Kind(60000), b"\x01\x02").unwrap();
        assert_eq!(
            unknown,
            Event::Unknown {
                kind: Kind(60000),
                payload: vec![1, 2]
            }
        );
        assert_eq!(unknown.encode_payload(), vec![1, 2]);
        assert_eq!(&Kind::ALL[..3], &[Kind(1), Kind(2), Kind(3)]);
        assert!(
            Kind::ALL.windows(2).all(|w| w[0] < w[1]),
            "codes ascend, never reused"
        );
    }

    #[test]
    fn malformed_and_trailing_payloads_are_errors() {
        assert!(matches!(
            Event::decode(Kind::Genesis, &[5, b'a']),
            Err(DecodeError::Malformed { kind: 1, .. })
        ));
        let mut bytes = Event::Annotation(Annotation {
            author: "a".into(),
            text: "t".into(),
        })
        .encode_payload();
        bytes.push(0);
        assert!(matches!(
            Event::decode(Kind::Annotation, &bytes),
            Err(DecodeError::TrailingBytes { extra: 1, .. })
        ));
        // A hostile length prefix (u64 max) must not allocate: the limit refuses it.
        let hostile = [253u8, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
        assert!(Event::decode(Kind::Annotation, &hostile).is_err());
    }
}
