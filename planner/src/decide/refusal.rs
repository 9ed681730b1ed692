//! Why an input is refused: one enum over every input family, with stable codes.

use thiserror::Error;

use crate::document::DocumentError;
use crate::host::Rejection;
use crate::rollout::RolloutRejection;

/// Why a manifest cannot replace the one in force. The intake's own checks (signature,
/// schema, freshness) come before.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum ManifestRefusal {
    /// The document is inconsistent with the fleet in force, or unreadable.
    #[error(transparent)]
    Document(#[from] DocumentError),
    /// A rollout manifest arrived before any fleet manifest.
    #[error("no fleet manifest is in force yet; post fleet.resolved first")]
    NoFleet,
    /// Built against another fleet than the one in force.
    #[error("fleet_resolved_hash {found} does not match the fleet manifest in force ({in_force})")]
    FleetMismatch {
        /// The manifest's anchor.
        found: String,
        /// In force.
        in_force: String,
    },
    /// A signed file recorded only with its signature (a revocation list, a nonce
    /// allowlist) came without one.
    #[error("{0} must be recorded with CI's signature, and none came with it")]
    Unsigned(&'static str),
    /// Not newer than the manifest in force (a replay of an older artifact).
    #[error("signed at {signed_at}, not after the manifest in force (signed at {in_force})")]
    Outdated {
        /// This one.
        signed_at: String,
        /// In force.
        in_force: String,
    },
}

/// Why an input is refused. Nothing was staged for it; the ledger is unchanged by it.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum Refusal {
    /// The host machine refuses the report.
    #[error(transparent)]
    Host(#[from] Rejection),
    /// The rollout machine refuses the input.
    #[error(transparent)]
    Rollout(#[from] RolloutRejection),
    /// The manifest cannot replace the one in force.
    #[error(transparent)]
    Manifest(#[from] ManifestRefusal),
    /// An enrollment or renewal.
    #[error(transparent)]
    Identity(#[from] super::IdentityRefusal),
    /// A lift of a closure that is not quarantined.
    #[error("closure {closure} is not quarantined on channel {channel}")]
    NotQuarantined {
        /// The channel.
        channel: String,
        /// The closure.
        closure: String,
    },
    /// The agent reused its last seq for a different report.
    #[error(
        "agent seq {agent_seq} was already recorded (entry {seq}) with a different report; use a new seq"
    )]
    SeqReused {
        /// The seq.
        agent_seq: u64,
        /// The entry that holds it.
        seq: u64,
    },
}

/// Why an input was not decided. Nothing was staged for it either way.
#[derive(Debug, Error)]
pub enum Undecided<E> {
    /// The decision refuses it.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// The log could not be read to decide it (the entry a retransmit is compared with): not
    /// a decision, the caller's storage failing.
    #[error("entry {seq} could not be read back: {source}")]
    Unreadable {
        /// The entry.
        seq: u64,
        /// The log's own error.
        source: E,
    },
}

impl From<Undecided<std::convert::Infallible>> for Refusal {
    fn from(u: Undecided<std::convert::Infallible>) -> Refusal {
        match u {
            Undecided::Refused(r) => r,
            Undecided::Unreadable { source, .. } => match source {},
        }
    }
}

impl Refusal {
    /// A stable code for APIs, metrics and the `AgentReportRefused` entries of refused reports (listed in OPERATIONS.md).
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::Host(r) => r.code(),
            Refusal::Rollout(r) => r.code(),
            Refusal::Manifest(m) => match m {
                ManifestRefusal::Document(d) => d.code(),
                ManifestRefusal::NoFleet => "manifest-no-fleet",
                ManifestRefusal::FleetMismatch { .. } => "manifest-fleet-mismatch",
                ManifestRefusal::Outdated { .. } => "manifest-outdated",
                ManifestRefusal::Unsigned(_) => "manifest-not-signed",
            },
            Refusal::Identity(i) => i.code(),
            Refusal::NotQuarantined { .. } => "not-quarantined",
            Refusal::SeqReused { .. } => "seq-reused",
        }
    }
}
