//! The rows of the smaller read models (host and rollout records have modules of their own).

use ledger::domain::{Micros, RolloutId};
use ledger::event::GateBlock;
use serde::{Deserialize, Serialize};

/// One failing enforce control (or probe, for probes without controls) of a host in a rollout.
/// A row clears when a later result of the same probe reports that control (or the probe)
/// passing, or when the host activates a closure again. Rows of one rollout never affect
/// another rollout's gate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeFailureRow {
    /// Probe name.
    pub probe_name: String,
    /// Control id (evidence probes).
    pub control_id: Option<String>,
    /// Framework (evidence probes).
    pub framework: Option<String>,
    /// Last time the agent observed it failing.
    pub observed_at: Micros,
    /// Seq of the `ProbeFailureRecorded` that created the row.
    pub created_seq: u64,
    /// Seq of the entry that last changed it.
    pub updated_seq: u64,
}

/// A bootstrap token's nonce, used by an enrollment (`AgentEnrolled`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollmentRow {
    /// The host that enrolled with it.
    pub hostname: String,
    /// Seq of the `AgentEnrolled` entry.
    pub seq: u64,
    /// CP time of the enrollment.
    pub enrolled_at: Micros,
}

/// A quarantined closure on a channel.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuarantineRow {
    /// Triggering rollout.
    pub rollout_id: RolloutId,
    /// Triggering host.
    pub hostname: String,
    /// CP time it was quarantined.
    pub quarantined_at: Micros,
    /// Seq of its `QuarantineAdded` (the first wins).
    pub created_seq: u64,
    /// Seq of the entry that last changed it.
    pub updated_seq: u64,
}

/// A queued dispatch, waiting for the host's long poll.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DispatchRow {
    /// What to activate.
    pub target_closure: String,
    /// Soak deadline (CP time).
    pub soak_due_at: Micros,
    /// CP time it was queued.
    pub enqueued_at: Micros,
    /// Seq of the `DispatchQueued`.
    pub created_seq: u64,
    /// Seq of the entry that last changed it.
    pub updated_seq: u64,
}

/// The current block of a host (the deferral view).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeferralRow {
    /// The gate and its inputs.
    pub block: GateBlock,
    /// CP time this block was first recorded.
    pub since: Micros,
    /// Seq of the `GateDecision` that recorded it.
    pub created_seq: u64,
    /// Seq of the entry that last changed it.
    pub updated_seq: u64,
}

/// The active rollout of a channel.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActiveRow {
    /// The rollout.
    pub rollout_id: RolloutId,
    /// Seq of its `RolloutOpened`.
    pub created_seq: u64,
}

/// The latest manifest entry of the fleet or of one rollout (`proj.manifests`): where the
/// daemon finds the manifests in force at start without reading the log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestRow {
    /// Seq of its latest manifest entry.
    pub seq: u64,
    /// Seq of its first.
    pub created_seq: u64,
}

/// A revocation in force (`proj.revocations`, by host).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevocationRow {
    /// The host's certificates with an earlier `notBefore` are refused, µs.
    pub not_before: Micros,
    /// Why, as CI wrote it.
    pub reason: Option<String>,
    /// Who, as CI wrote it.
    pub revoked_by: Option<String>,
    /// Seq of the `RevocationsAccepted` that put it in force.
    pub seq: u64,
}

/// A nonce of the allowlist in force (`proj.nonce_allowlist`, by nonce).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllowedNonceRow {
    /// The only host that may enroll with it.
    pub hostname: String,
    /// Refused after this time, µs.
    pub expires_at: Micros,
    /// Seq of the `BootstrapNoncesAccepted` that put it in force.
    pub seq: u64,
}

/// The latest entry of one of CI's signed files (`proj.sidecars`, by name).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SidecarRow {
    /// Seq of the entry.
    pub seq: u64,
    /// SHA-256 of the file's canonical bytes.
    pub content_hash: [u8; 32],
    /// Its `meta.signedAt`, µs.
    pub signed_at: Micros,
    /// CP time it was recorded.
    pub recorded_at: Micros,
}
