//! The planner's typed view of the verified manifests in force (DOMAIN §1). The daemon builds
//! it from `FleetManifestAccepted` / `RolloutManifestAccepted` entries, so a replay sees
//! exactly the manifests the live planner saw. Ordered maps only.

use std::collections::BTreeMap;

use ledger::domain::{OnHealthFailure, RolloutId};
use ledger::event::HostAssignment;

/// Soak used when a policy wave does not say (the reference's default).
pub const DEFAULT_SOAK_MINUTES: u32 = 60;

/// `fleet.resolved`, the parts the planner reads.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Fleet {
    /// Host → its channel.
    pub hosts: BTreeMap<String, String>,
    /// Channel → its rollout policy name.
    pub channels: BTreeMap<String, String>,
    /// Policy name → policy.
    pub rollout_policies: BTreeMap<String, RolloutPolicy>,
    /// Channel → ordered waves of host names.
    pub waves: BTreeMap<String, Vec<Vec<String>>>,
    /// `gated` channel waits for the `gates` channel's rollout to finish.
    pub channel_edges: Vec<Edge>,
    /// `gated` host waits for the `gates` host (same channel only).
    pub host_edges: Vec<Edge>,
    /// Channel → soak minutes per wave, when the fleet resolves them into its waves (as
    /// nixfleet's does); otherwise the channel's policy says.
    pub wave_soak_minutes: BTreeMap<String, Vec<u32>>,
    /// Host → its SSH ed25519 key as the fleet declares it (what enrollment binds to).
    pub host_keys: BTreeMap<String, String>,
}

/// An ordering edge.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Edge {
    /// The one that waits.
    pub gated: String,
    /// The one it waits for.
    pub gates: String,
}

/// A rollout policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RolloutPolicy {
    /// Soak minutes per wave index.
    pub wave_soak_minutes: Vec<u32>,
    /// What a health failure does.
    pub on_health_failure: OnHealthFailure,
}

/// A disruption budget of a rollout manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Budget {
    /// The selector as written (identifies the budget across rollouts).
    pub selector: String,
    /// The hosts it covers.
    pub hosts: Vec<String>,
    /// Cap on hosts in flight at once.
    pub max_in_flight: Option<u32>,
    /// Cap as a percentage of `hosts` (rounded up, at least 1).
    pub max_in_flight_pct: Option<u32>,
}

impl Budget {
    /// The effective cap: the smaller of the absolute and percentage caps, if any.
    pub fn cap(&self) -> Option<u32> {
        let pct = self.max_in_flight_pct.map(|p| {
            let n = self.hosts.len() as u64 * u64::from(p);
            (n.div_ceil(100) as u32).max(1)
        });
        match (self.max_in_flight, pct) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// A verified rollout manifest, the parts the planner reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RolloutManifest {
    /// Its rollout id (`channel@channel_ref`).
    pub rollout_id: RolloutId,
    /// SHA-256 of its canonical bytes (the `RolloutManifestAccepted` entry).
    pub manifest_hash: [u8; 32],
    /// Hosts, waves, targets.
    pub host_set: Vec<HostAssignment>,
    /// Disruption budgets.
    pub budgets: Vec<Budget>,
}

/// The manifests in force: one fleet, at most one rollout manifest per channel. A channel
/// whose manifest failed verification is simply absent.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Manifests {
    /// The fleet.
    pub fleet: Fleet,
    /// Channel → its current rollout manifest.
    pub rollouts: BTreeMap<String, RolloutManifest>,
    /// Where the fleet in force was recorded.
    pub fleet_in_force: Option<InForce>,
    /// Channel → where its rollout manifest in force was recorded.
    pub rollout_in_force: BTreeMap<String, InForce>,
}

/// Where a manifest in force was recorded: a newer one may replace it, the same bytes are a
/// duplicate of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InForce {
    /// Seq of its entry.
    pub seq: u64,
    /// SHA-256 of its canonical bytes.
    pub content_hash: [u8; 32],
    /// `meta.signedAt`.
    pub signed_at: ledger::domain::Micros,
}

impl Manifests {
    /// The policy of a channel, if the fleet declares one.
    pub fn policy(&self, channel: &str) -> Option<&RolloutPolicy> {
        self.fleet
            .channels
            .get(channel)
            .and_then(|p| self.fleet.rollout_policies.get(p))
    }

    /// Soak minutes for a wave of a channel.
    pub fn soak_minutes(&self, channel: &str, wave: u32) -> u32 {
        if let Some(m) = self
            .fleet
            .wave_soak_minutes
            .get(channel)
            .and_then(|w| w.get(wave as usize))
        {
            return *m;
        }
        self.policy(channel)
            .and_then(|p| p.wave_soak_minutes.get(wave as usize).copied())
            .unwrap_or(DEFAULT_SOAK_MINUTES)
    }
}
