//! Payload structs of the control-plane kinds (10 and up). See [`crate::event`] for the
//! envelope and the evolution rule, and docs/FORMAT.md §3 for the kind table.
//!
//! Agent-asserted timestamps stay inside [`AgentReport`]; the entry header carries the CP's
//! time. Ledger seqs never appear in payloads: an entry's seq is its position, and what caused
//! a CP decision is the entry just before it in the same batch (see [`HostTransitioned`]).

use serde::{Deserialize, Serialize};

use crate::domain::{
    AgentReport, Closure, HostState, Micros, OnHealthFailure, RolloutId, RolloutState,
};

/// Kind 10: an agent report, accepted by the host state machine.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentEventRecorded {
    /// The host (certificate identity).
    pub hostname: String,
    /// The rollout it reports about.
    pub rollout_id: RolloutId,
    /// The agent's own per-(host, rollout) sequence number.
    pub agent_seq: u64,
    /// The report, with the agent's timestamps.
    pub report: AgentReport,
}

/// Kind 11: a report the CP inferred from a heartbeat. It carries no agent seq, so it can
/// never collide with (or shadow) a real report; folds do not advance `last_event_seq` for it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentEventSynthesized {
    /// The host.
    pub hostname: String,
    /// The rollout.
    pub rollout_id: RolloutId,
    /// The inferred report. Timestamps in it are the heartbeat's, never in the future.
    pub report: AgentReport,
    /// The heartbeat time the inference rests on (agent clock).
    pub heartbeat_at: Micros,
    /// Why the CP inferred it, for humans.
    pub basis: String,
}

/// What moved a host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TransitionCause {
    /// A report the agent sent (the `AgentEventRecorded` just before this entry).
    Report {
        /// Its agent seq.
        agent_seq: u64,
        /// Its wire kind.
        report: String,
    },
    /// A report the CP inferred (the `AgentEventSynthesized` just before this entry).
    Synthesized {
        /// Its wire kind.
        report: String,
    },
}

/// Kind 12: a host's state changed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostTransitioned {
    /// The host.
    pub hostname: String,
    /// The rollout.
    pub rollout_id: RolloutId,
    /// Old state.
    pub from: HostState,
    /// New state.
    pub to: HostState,
    /// When, on the agent's clock (the causing report's timestamp).
    pub at: Micros,
    /// On entering Failed: the health-failure policy recorded for the host.
    pub policy_applied: Option<OnHealthFailure>,
    /// What caused it.
    pub cause: TransitionCause,
}

/// One host of a rollout manifest's host set.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct HostAssignment {
    /// The host.
    pub hostname: String,
    /// Its wave index in the channel.
    pub wave: u32,
    /// The closure it must run.
    pub target_closure: Closure,
}

/// Kind 13: a rollout opened. The manifest it came from is the `RolloutManifestAccepted`
/// entry with `manifest_hash`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutOpened {
    /// `channel@ref`.
    pub rollout_id: RolloutId,
    /// SHA-256 of the rollout manifest's canonical bytes.
    pub manifest_hash: [u8; 32],
    /// Rollouts on the same channel this one supersedes (each also gets a transition).
    pub supersedes: Vec<RolloutId>,
}

/// Kind 14: a host joined a rollout (in Pending).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostJoined {
    /// The rollout.
    pub rollout_id: RolloutId,
    /// The host, its wave and target.
    pub host: HostAssignment,
}

/// Kind 15: the wave cursor moved. The only way it moves.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaveAdvanced {
    /// The rollout.
    pub rollout_id: RolloutId,
    /// Old cursor.
    pub from_wave: u32,
    /// New cursor.
    pub to_wave: u32,
}

/// Why a rollout changed state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RolloutCause {
    /// The first host joined.
    HostJoined {
        /// That host.
        hostname: String,
    },
    /// The cursor reached the last wave.
    LastWaveReached,
    /// Every host Converged.
    AllHostsConverged,
    /// A host failed.
    HostFailed {
        /// That host.
        hostname: String,
    },
    /// A failed host's rollback completed.
    HostReverted {
        /// That host.
        hostname: String,
    },
    /// A newer rollout opened on the channel.
    SupersededBy {
        /// The successor.
        successor: RolloutId,
    },
    /// Retention expired: the rollout leaves active views; its entries stay in the log.
    RetentionExpired,
}

/// Kind 27: an operator cleared a Failed or Reverted rollout: its state stays (the failure is
/// history), but it no longer holds back successor channels.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutCleared {
    /// The rollout.
    pub rollout_id: RolloutId,
    /// The operator, as authenticated (a token's identity or a certificate's name).
    pub operator: String,
    /// The reason the operator gave.
    pub reason: String,
}

/// Kind 16: a rollout's state changed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutTransitioned {
    /// The rollout.
    pub rollout_id: RolloutId,
    /// Old state.
    pub from: RolloutState,
    /// New state.
    pub to: RolloutState,
    /// What moved it (a host transition, a wave, an operator, retention, …).
    pub cause: RolloutCause,
}

/// Kind 17: a dispatch queued. The soak deadline is computed now, at dispatch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DispatchQueued {
    /// The host.
    pub hostname: String,
    /// The rollout.
    pub rollout_id: RolloutId,
    /// What to activate.
    pub target_closure: Closure,
    /// CP time by which soak must have elapsed (dispatch time + the wave's soak).
    pub soak_due_at: Micros,
}

/// Kind 18: a queued dispatch handed to the agent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DispatchDelivered {
    /// The host.
    pub hostname: String,
    /// The rollout.
    pub rollout_id: RolloutId,
}

/// Kind 19: the agent acknowledged its dispatch (its `DispatchAck` report).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DispatchAcknowledged {
    /// The host.
    pub hostname: String,
    /// The rollout.
    pub rollout_id: RolloutId,
    /// The agent seq of the ack.
    pub agent_seq: u64,
}

/// Which gate blocked, with the inputs that decided it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum GateBlock {
    /// The target closure is quarantined on the channel.
    Quarantined {
        /// The channel it applies to.
        channel: String,
        /// The closure (a Nix store path).
        closure: Closure,
    },
    /// A predecessor channel's rollout has not finished.
    ChannelEdges {
        /// The predecessor channel.
        predecessor_channel: String,
        /// Its rollout, when one is open.
        predecessor_rollout: Option<RolloutId>,
        /// That rollout's state, when open.
        predecessor_state: Option<RolloutState>,
    },
    /// The channel has waves and the host is in none.
    HostUnstaged {
        /// The channel it applies to.
        channel: String,
    },
    /// The host's wave is past the cursor.
    WavePromotion {
        /// Host's wave.
        host_wave: u32,
        /// The rollout's current wave (its cursor).
        current_wave: u32,
    },
    /// A gating host (same channel) is not Converged or Deferred.
    HostEdge {
        /// The gating host.
        gating_host: String,
        /// Its state in this rollout (None: not in it).
        gating_state: Option<HostState>,
    },
    /// A disruption budget is full.
    DisruptionBudget {
        /// The budget's selector, as written in the manifest.
        selector: String,
        /// Hosts in flight (including this tick's dispatches).
        in_flight: u32,
        /// The cap.
        max_in_flight: u32,
    },
    /// Earlier waves have outstanding enforce failures (or their count is unknown: fails closed).
    ComplianceWave {
        /// Distinct failing controls in earlier waves; None when the input was unavailable.
        failing_controls: Option<u64>,
        /// The host's wave.
        host_wave: u32,
    },
}

impl GateBlock {
    /// Whether two blocks are the same reason for waiting, ignoring counts that move while a
    /// host waits (hosts in flight, failing controls). The planner logs a new `GateDecision`
    /// only when this changes, so a waiting host does not add an entry every tick.
    pub fn same_reason(&self, other: &GateBlock) -> bool {
        match (self, other) {
            (
                GateBlock::DisruptionBudget {
                    selector: a,
                    max_in_flight: ma,
                    ..
                },
                GateBlock::DisruptionBudget {
                    selector: b,
                    max_in_flight: mb,
                    ..
                },
            ) => a == b && ma == mb,
            (
                GateBlock::ComplianceWave {
                    failing_controls: a,
                    host_wave: wa,
                },
                GateBlock::ComplianceWave {
                    failing_controls: b,
                    host_wave: wb,
                },
            ) => wa == wb && a.is_some() == b.is_some(),
            (a, b) => a == b,
        }
    }

    /// The gate's stable discriminator.
    pub fn gate(&self) -> &'static str {
        match self {
            GateBlock::Quarantined { .. } => "quarantine",
            GateBlock::ChannelEdges { .. } => "channel-edges",
            GateBlock::HostUnstaged { .. } => "wave-promotion-host-unstaged",
            GateBlock::WavePromotion { .. } => "wave-promotion",
            GateBlock::HostEdge { .. } => "host-edge",
            GateBlock::DisruptionBudget { .. } => "disruption-budget",
            GateBlock::ComplianceWave { .. } => "compliance-wave",
        }
    }

    /// A sentence for operators.
    pub fn reason(&self) -> String {
        match self {
            GateBlock::Quarantined { channel, closure } => format!(
                "channel {channel} closure {closure} quarantined after a rollback; lift the quarantine or push a new closure"
            ),
            GateBlock::ChannelEdges {
                predecessor_channel,
                predecessor_rollout,
                predecessor_state,
            } => match (predecessor_rollout, predecessor_state) {
                (Some(r), Some(s)) => format!(
                    "channel-edges: waiting for predecessor {r} ({s:?}) on channel {predecessor_channel}"
                ),
                _ => format!(
                    "channel-edges: predecessor channel {predecessor_channel} has a manifest but its rollout is not open yet"
                ),
            },
            GateBlock::HostUnstaged { channel } => {
                format!("wave-promotion: host is in no wave of channel {channel} (default deny)")
            }
            GateBlock::WavePromotion {
                host_wave,
                current_wave,
            } => format!("wave-promotion: host_wave={host_wave} > current_wave={current_wave}"),
            GateBlock::HostEdge {
                gating_host,
                gating_state,
            } => format!(
                "host-edge: gating host {gating_host} is {}",
                gating_state.map_or("not in this rollout".to_string(), |s| format!("{s:?}"))
            ),
            GateBlock::DisruptionBudget {
                selector,
                in_flight,
                max_in_flight,
            } => format!(
                "disruption-budget: {in_flight} in flight >= max {max_in_flight} for {selector}"
            ),
            GateBlock::ComplianceWave {
                failing_controls,
                host_wave,
            } => match failing_controls {
                Some(n) => format!(
                    "compliance-wave: {n} failing enforce controls in waves before {host_wave}"
                ),
                None => format!(
                    "compliance-wave: failing-control count for waves before {host_wave} unavailable (fails closed)"
                ),
            },
        }
    }
}

/// Kind 20: a host's block changed. `block: None` records that the host is no longer blocked.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GateDecision {
    /// The host.
    pub hostname: String,
    /// The rollout.
    pub rollout_id: RolloutId,
    /// The block, with its inputs; None when cleared.
    pub block: Option<GateBlock>,
}

/// Kind 21: a closure quarantined on a channel, triggered by a host's rollback.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuarantineAdded {
    /// The channel it applies to.
    pub channel: String,
    /// The closure that was rolled back (the rollout's target for that host).
    pub closure: Closure,
    /// Triggering rollout.
    pub rollout_id: RolloutId,
    /// Triggering host.
    pub hostname: String,
}

/// Kind 22: an operator lifted a quarantine.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuarantineLifted {
    /// The channel it applies to.
    pub channel: String,
    /// The closure (a Nix store path).
    pub closure: Closure,
    /// The operator, as authenticated (a token's identity or a certificate's name).
    pub operator: String,
    /// The reason the operator gave.
    pub reason: String,
}

/// Kind 23: one failing enforce control of a probe result (or the probe itself, for probes
/// without controls), counted against the rollout.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeFailureRecorded {
    /// The rollout.
    pub rollout_id: RolloutId,
    /// The host.
    pub hostname: String,
    /// The probe.
    pub probe_name: String,
    /// The control, for evidence probes.
    pub control_id: Option<String>,
    /// Its framework, for evidence probes.
    pub framework: Option<String>,
    /// When the agent observed it.
    pub observed_at: Micros,
}

/// Kind 24: a verified fleet manifest (`fleet.resolved`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetManifestAccepted {
    /// SHA-256 of `canonical`.
    pub content_hash: [u8; 32],
    /// Which trusted key signed it.
    pub signer: String,
    /// `meta.signedAt`, µs.
    pub signed_at: Micros,
    /// The JCS (RFC 8785) canonical JSON that was verified.
    pub canonical: Vec<u8>,
}

/// Kind 25: a verified rollout manifest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutManifestAccepted {
    /// Its rollout id (checked against the manifest's channel and ref).
    pub rollout_id: RolloutId,
    /// SHA-256 of `canonical`.
    pub content_hash: [u8; 32],
    /// The fleet manifest it is anchored to.
    pub fleet_resolved_hash: [u8; 32],
    /// Which trusted key signed it.
    pub signer: String,
    /// `meta.signedAt`, µs.
    pub signed_at: Micros,
    /// The JCS canonical JSON that was verified.
    pub canonical: Vec<u8>,
}

/// Where a refused input came from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RejectedInput {
    /// An agent report.
    AgentEvent {
        /// The host's name.
        hostname: String,
        /// Rollout, as the agent named it (may be malformed).
        rollout_id: String,
        /// The agent seq it carried.
        agent_seq: u64,
        /// Wire kind.
        report: String,
    },
    /// A manifest.
    Manifest {
        /// `fleet` or `rollout`.
        manifest: String,
        /// SHA-256 of the received bytes.
        received_hash: [u8; 32],
    },
    /// An operator request.
    Operator {
        /// The operator, as authenticated (a token's identity or a certificate's name).
        operator: String,
        /// What they asked.
        action: String,
    },
}

/// Kind 26: an input the CP refused. The refusal was answered to the caller; this records it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputRejected {
    /// What was refused.
    pub input: RejectedInput,
    /// A stable reason code (`illegal-transition`, `seq-regression`, `bad-signature`, …).
    pub code: String,
    /// The reason, for humans.
    pub detail: String,
}

/// Kind 28: a well-formed agent report the CP refused (an illegal transition, a stale seq, a
/// host or rollout it does not know). The report is kept whole, with the refusal's code and
/// reason, and the agent is answered 2xx: a nixfleet agent retries any other answer forever,
/// so one refused report would stall its queue for good. Folds change no row for it; it
/// shows in the host's timeline and in `why`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentReportRefused {
    /// The host (certificate identity).
    pub hostname: String,
    /// The rollout it reports about.
    pub rollout_id: RolloutId,
    /// The agent's seq.
    pub agent_seq: u64,
    /// The report, with the agent's timestamps.
    pub report: AgentReport,
    /// The refusal's stable code (`illegal-transition`, `seq-regression`, …).
    pub code: String,
    /// The refusal, for humans.
    pub reason: String,
}

/// Kind 29: a verified fleet manifest with CI's signature, as CI made both: the canonical
/// bytes CI signed (nixfleet writes these bytes as the artifact file) and the raw signature,
/// so the ledger can serve both to agents and an auditor can re-verify them. Supersedes kind
/// 24 for new entries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetManifestSigned {
    /// SHA-256 of `canonical`.
    pub content_hash: [u8; 32],
    /// The trusted key that verified it (base64, as trust files write it).
    pub signer: String,
    /// Its algorithm (`ed25519`, `ecdsa-p256`).
    pub algorithm: String,
    /// The raw signature bytes.
    pub signature: Vec<u8>,
    /// `meta.signedAt`, µs.
    pub signed_at: Micros,
    /// The JCS (RFC 8785) canonical bytes that were signed.
    pub canonical: Vec<u8>,
}

/// Kind 30: a verified rollout manifest with CI's signature (see kind 29). Supersedes kind 25
/// for new entries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutManifestSigned {
    /// Its rollout id (checked against the manifest's channel and ref).
    pub rollout_id: RolloutId,
    /// SHA-256 of `canonical`.
    pub content_hash: [u8; 32],
    /// The fleet manifest it was built against.
    pub fleet_resolved_hash: [u8; 32],
    /// The trusted key that verified it.
    pub signer: String,
    /// Its algorithm.
    pub algorithm: String,
    /// The raw signature bytes.
    pub signature: Vec<u8>,
    /// `meta.signedAt`, µs.
    pub signed_at: Micros,
    /// The JCS canonical bytes that were signed.
    pub canonical: Vec<u8>,
}

/// An agent certificate the CP's fleet CA issued (kinds 31 and 32): the identity an agent
/// authenticates with from then on, kept whole so an auditor can check it against the CA.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuedCertificate {
    /// The certificate, DER.
    pub der: Vec<u8>,
    /// Its serial number (big-endian bytes, as in the certificate).
    pub serial: Vec<u8>,
    /// Its CN, nixfleet's `agent-<host>.<suffix>`.
    pub common_name: String,
    /// The agent's raw ed25519 public key (its SSH host key), which the fleet manifest in
    /// force declared for the host.
    pub public_key: [u8; 32],
    /// `notBefore`, µs.
    pub not_before: Micros,
    /// `notAfter`, µs.
    pub not_after: Micros,
}

/// The bootstrap token an enrollment was granted on (nixfleet's `BootstrapToken`), as the
/// operator's org root key signed it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootstrapTokenRecord {
    /// The token's version (1).
    pub version: u32,
    /// The JCS (RFC 8785) bytes of the token's `claims`: what the signature covers.
    pub claims: Vec<u8>,
    /// The raw ed25519 signature over `claims`.
    pub signature: Vec<u8>,
    /// The org root key that verified it (base64 of the 32 raw bytes).
    pub signer: String,
    /// `claims.nonce`: single use, ever.
    pub nonce: String,
    /// `claims.issuedAt`, µs.
    pub issued_at: Micros,
    /// `claims.expiresAt`, µs.
    pub expires_at: Micros,
}

/// Kind 31: a host enrolled (`POST /v1/enroll`): who got which identity, on what token. The
/// token's nonce is never accepted again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentEnrolled {
    /// The host (the token's `claims.hostname`, the CSR's CN).
    pub hostname: String,
    /// The token it presented.
    pub token: BootstrapTokenRecord,
    /// The certificate it was issued.
    pub certificate: IssuedCertificate,
}

/// Kind 32: an enrolled agent renewed its certificate (`POST /v1/agent/renew`), identified by
/// the certificate it presented.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentCertificateRenewed {
    /// The host (from the presented certificate's CN).
    pub hostname: String,
    /// The serial of the certificate it presented (big-endian bytes).
    pub presented_serial: Vec<u8>,
    /// The certificate it was issued.
    pub certificate: IssuedCertificate,
}

/// A bearer token as the config lists it: its role, the identity it stands for, and the
/// SHA-256 of the token (the config holds only that; the token itself is never recorded).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TokenGrant {
    /// `agent`, `operator`, `auditor` or `ci`.
    pub role: String,
    /// The host name (agents) or the person or system.
    pub name: String,
    /// SHA-256 of the token.
    pub token_sha256: [u8; 32],
}

/// Kind 33: the daemon re-read its config (SIGHUP or `POST /v1/admin/reload`) and who may
/// write changed. Recorded before the change takes effect, so the log shows every change of
/// access no later than its first use.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessChanged {
    /// What asked for the reload: `SIGHUP`, or `operator:<name>`.
    pub by: String,
    /// Tokens accepted from now on that were not.
    pub tokens_added: Vec<TokenGrant>,
    /// Tokens no longer accepted.
    pub tokens_removed: Vec<TokenGrant>,
    /// CI manifest keys trusted from now on, as `<algorithm>:<base64 public key>`.
    pub keys_added: Vec<String>,
    /// CI manifest keys no longer trusted.
    pub keys_removed: Vec<String>,
}

/// A signed file of CI's that is not a manifest (a revocation list, a nonce allowlist), as
/// verified: the bytes the signature covers and the signature, so an auditor verifies it
/// again offline with CI's key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedFile {
    /// SHA-256 of `canonical`.
    pub content_hash: [u8; 32],
    /// The trusted key that verified it (base64).
    pub signer: String,
    /// `ed25519` or `ecdsa-p256`.
    pub algorithm: String,
    /// CI's raw signature (64 bytes).
    pub signature: Vec<u8>,
    /// `meta.signedAt`, µs.
    pub signed_at: Micros,
    /// The JCS (RFC 8785) canonical JSON that was verified.
    pub canonical: Vec<u8>,
}

/// One revocation of a list (nixfleet's `RevocationEntry`): the host's certificates issued
/// before `not_before` are refused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocation {
    /// The host (nixfleet's machine id, as the list writes it).
    pub hostname: String,
    /// Certificates whose `notBefore` is strictly earlier are refused, µs.
    pub not_before: Micros,
    /// Why, as CI wrote it.
    pub reason: Option<String>,
    /// Who, as CI wrote it.
    pub revoked_by: Option<String>,
}

/// Kind 34: a verified `revocations.json` replaced the list in force: from this entry on,
/// exactly these revocations hold (a host no longer listed is no longer revoked).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevocationsAccepted {
    /// The file as verified.
    pub file: SignedFile,
    /// Its revocations, in the file's order.
    pub revocations: Vec<Revocation>,
}

/// One nonce of CI's allowlist (nixfleet's `BootstrapNonceEntry`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllowedNonce {
    /// The bootstrap token's nonce.
    pub nonce: String,
    /// The only host that may enroll with it.
    pub hostname: String,
    /// Refused after this time, µs.
    pub expires_at: Micros,
    /// When CI minted it, µs, if the list says.
    pub minted_at: Option<Micros>,
    /// Who minted it, if the list says.
    pub minted_by: Option<String>,
}

/// Kind 35: a verified `bootstrap-nonces.json` replaced the allowlist in force: from this
/// entry on, an enrollment's nonce must be listed, for its host, and unexpired.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootstrapNoncesAccepted {
    /// The file as verified.
    pub file: SignedFile,
    /// Its nonces, in the file's order.
    pub nonces: Vec<AllowedNonce>,
}

/// Kind 36: a writer took the log over (issue 29): the first batch of every writer's epoch,
/// so auditors, witnesses and timelines see every hand-over. Recorded as is (no decision
/// makes it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriterEpochStarted {
    /// The writer's epoch (the revision of its etcd election key): larger than every earlier
    /// writer's.
    pub epoch: u64,
    /// The node that writes from this entry on.
    pub node: String,
    /// The size of the acknowledged log it took over (the commit register's head).
    pub previous_size: u64,
    /// The Merkle root of that log.
    pub previous_root: [u8; 32],
}
