//! The domain's value types, as they appear inside event payloads.
//!
//! These are part of the format: each is encoded by bincode inside a payload, so the same
//! evolution rule holds as for kinds (docs/FORMAT.md §3): enums only ever gain variants at the
//! end (bincode writes the variant index), structs never change shape once released.
//! Timestamps are integer microseconds since the Unix epoch ([`Micros`]).

use std::fmt;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Microseconds since 1970-01-01T00:00:00Z.
pub type Micros = i64;

/// A closure (Nix store path of a whole system).
pub type Closure = String;

/// Why a rollout id, channel or host name is refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum IdError {
    /// `channel@ref` shape.
    #[error(
        "malformed rollout id {0:?}: expected <channel>@<ref>, channel [a-z0-9_-]+, ref lowercase hex"
    )]
    RolloutId(String),
    /// Channel name shape.
    #[error("malformed channel name {0:?}: expected [a-z0-9_-]+")]
    Channel(String),
    /// Host name shape.
    #[error(
        "malformed host name {0:?}: expected 1-253 characters of [A-Za-z0-9.-_], not dots alone"
    )]
    Host(String),
    /// Closure (store path) shape.
    #[error(
        "malformed closure {0:?}: expected a store path (absolute, no `..`) or its basename (no `/`), 1-1024 printable ASCII characters without spaces"
    )]
    Closure(String),
}

/// At most this much of a refused value is echoed in an error (a 5,000-character name would
/// otherwise fill the answer).
const SHOWN_MAX: usize = 80;

fn shown(s: &str) -> String {
    match s.char_indices().nth(SHOWN_MAX) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

fn is_channel(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

fn is_ref(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Checks a channel name.
pub fn check_channel(s: &str) -> Result<(), IdError> {
    if is_channel(s) {
        Ok(())
    } else {
        Err(IdError::Channel(shown(s)))
    }
}

/// Checks a host name (the machine id from the agent's certificate CN).
pub fn check_host(s: &str) -> Result<(), IdError> {
    // `.` and `..` (or any name of dots alone) name no machine, and as a path component they
    // name a directory: refused wherever a host name is checked.
    let ok = !s.is_empty()
        && s.len() <= 253
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_')
        && !s.bytes().all(|b| b == b'.');
    if ok {
        Ok(())
    } else {
        Err(IdError::Host(shown(s)))
    }
}

/// A host name: the machine id an agent authenticates as (its certificate CN or token name)
/// and manifests list, held to [`check_host`]'s rules. Entries store it as its text, so the
/// type changes nothing on disk.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Hostname(String);

impl Hostname {
    /// Checks and wraps a host name.
    pub fn parse(s: &str) -> Result<Hostname, IdError> {
        check_host(s)?;
        Ok(Hostname(s.to_string()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name, owned.
    pub fn into_string(self) -> String {
        self.0
    }
}

impl TryFrom<String> for Hostname {
    type Error = IdError;
    fn try_from(s: String) -> Result<Hostname, IdError> {
        check_host(&s)?;
        Ok(Hostname(s))
    }
}

impl From<Hostname> for String {
    fn from(h: Hostname) -> String {
        h.0
    }
}

impl fmt::Display for Hostname {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::ops::Deref for Hostname {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

/// Checks a closure as manifests and agents name it: an absolute Nix store path
/// (`/nix/store/…-system`) or, as nixfleet writes `closureHash` and agents send
/// `current_closure`, the store path's basename (`…-nixos-system-web-01`). Only its shape is
/// checked (the store directory and hash format are the agent's business): short, printable
/// ASCII without whitespace; a path is absolute with no `..` component, a basename has no `/`
/// and is not `.` or `..`.
pub fn check_closure(s: &str) -> Result<(), IdError> {
    let shaped = !s.is_empty() && s.len() <= 1024 && s.bytes().all(|b| b.is_ascii_graphic());
    let ok = shaped
        && if s.starts_with('/') {
            !s.split('/').any(|c| c == "..")
        } else {
            !s.contains('/') && s != "." && s != ".."
        };
    if ok {
        Ok(())
    } else {
        Err(IdError::Closure(shown(s)))
    }
}

/// A rollout: one channel moving to one `channel_ref`. Written `channel@ref`.
/// (`Default` is the empty id, only for reusable scratch keys; it is not a valid id.)
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RolloutId {
    /// The channel.
    pub channel: String,
    /// The git commit the channel points at (lowercase hex).
    pub channel_ref: String,
}

impl RolloutId {
    /// Builds and checks a rollout id.
    pub fn new(channel: &str, channel_ref: &str) -> Result<RolloutId, IdError> {
        if is_channel(channel) && is_ref(channel_ref) {
            Ok(RolloutId {
                channel: channel.to_string(),
                channel_ref: channel_ref.to_string(),
            })
        } else {
            Err(IdError::RolloutId(shown(&format!(
                "{channel}@{channel_ref}"
            ))))
        }
    }

    /// Parses `channel@ref` (exactly one `@`).
    pub fn parse(s: &str) -> Result<RolloutId, IdError> {
        let bad = || IdError::RolloutId(shown(s));
        let (channel, channel_ref) = s.split_once('@').ok_or_else(bad)?;
        if channel_ref.contains('@') {
            return Err(bad());
        }
        RolloutId::new(channel, channel_ref).map_err(|_| bad())
    }
}

impl fmt::Display for RolloutId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.channel, self.channel_ref)
    }
}

/// The CP's view of one host in one rollout (DOMAIN §2.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum HostState {
    /// Record exists; not acked.
    Pending,
    /// Agent acked; switching.
    Activating,
    /// Profile updated, live switch deferred to reboot: done for ordering, not health-verified.
    Deferred,
    /// Activated; probes running during the soak window.
    Soaking,
    /// Soak elapsed, enforce probes pass, current == target. Terminal.
    Converged,
    /// Activation or sustained probe failure.
    Failed,
    /// Rolled back to the closure it ran before. Terminal.
    Reverted,
}

impl HostState {
    /// Every state, in declaration order.
    pub const ALL: [HostState; 7] = [
        HostState::Pending,
        HostState::Activating,
        HostState::Deferred,
        HostState::Soaking,
        HostState::Converged,
        HostState::Failed,
        HostState::Reverted,
    ];

    /// Activating or Soaking: what a disruption budget counts.
    pub fn is_in_flight(self) -> bool {
        matches!(self, HostState::Activating | HostState::Soaking)
    }
}

/// A rollout's lifecycle state (DOMAIN §3.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum RolloutState {
    /// Opened; no host joined yet.
    Opening,
    /// Hosts joined; dispatching.
    Active,
    /// The last wave is being worked through.
    Converging,
    /// Every host Converged.
    Terminal,
    /// A host reverted (reserved: see docs/DECISIONS.md).
    Reverted,
    /// A host failed.
    Failed,
    /// A successor rollout opened on the channel.
    Superseded,
    /// Retention expired: kept in the log, gone from active views.
    Pruned,
}

impl RolloutState {
    /// Every state, in declaration order.
    pub const ALL: [RolloutState; 8] = [
        RolloutState::Opening,
        RolloutState::Active,
        RolloutState::Converging,
        RolloutState::Terminal,
        RolloutState::Reverted,
        RolloutState::Failed,
        RolloutState::Superseded,
        RolloutState::Pruned,
    ];

    /// Terminal or Superseded: a successor channel may proceed.
    pub fn is_terminal_for_ordering(self) -> bool {
        matches!(self, RolloutState::Terminal | RolloutState::Superseded)
    }
}

/// What the agent does on a health failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
// JSON (the API, manifests) uses the wire names; bincode encodes the variant index only.
#[serde(rename_all = "kebab-case")]
pub enum OnHealthFailure {
    /// Stay Failed; an operator acts (`halt`, alias `halt-only`).
    #[serde(alias = "halt-only")]
    Halt,
    /// Roll back to the prior closure, then stop (`rollback-and-halt`).
    RollbackAndHalt,
}

/// Probe mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
// JSON (the API, manifests) uses the wire names; bincode encodes the variant index only.
#[serde(rename_all = "kebab-case")]
pub enum ProbeMode {
    /// Gates promotion.
    Enforce,
    /// Recorded only.
    Observe,
    /// Declared, not run.
    Disabled,
}

/// Probe outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
// JSON (the API, manifests) uses the wire names; bincode encodes the variant index only.
#[serde(rename_all = "kebab-case")]
pub enum ProbeStatus {
    /// Every check it made passed.
    Pass,
    /// Failed (an erroring probe counts as failed).
    Fail,
}

/// Probe kind. The agent's wire type is a free string; nixfleet's module declares `http`,
/// `tcp`, `exec` and `evidence`, and any other name is kept as it came (`Other`). JSON writes
/// the name. bincode writes the variant index (then the name, for `Other`), so entries
/// written before `Other` existed decode unchanged.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ProbeKind {
    /// HTTP check.
    Http,
    /// TCP connect.
    Tcp,
    /// A command.
    Exec,
    /// Compliance evidence file.
    Evidence,
    /// A kind this build does not know, by its name.
    Other(String),
}

impl ProbeKind {
    /// The kind of a wire name.
    pub fn from_name(name: &str) -> ProbeKind {
        match name {
            "http" => ProbeKind::Http,
            "tcp" => ProbeKind::Tcp,
            "exec" => ProbeKind::Exec,
            "evidence" => ProbeKind::Evidence,
            other => ProbeKind::Other(other.to_string()),
        }
    }

    /// The wire name.
    pub fn name(&self) -> &str {
        match self {
            ProbeKind::Http => "http",
            ProbeKind::Tcp => "tcp",
            ProbeKind::Exec => "exec",
            ProbeKind::Evidence => "evidence",
            ProbeKind::Other(name) => name,
        }
    }
}

/// The binary form of [`ProbeKind`]: the variant index, as the derived encoding always was.
#[derive(Serialize, Deserialize)]
enum ProbeKindRepr {
    Http,
    Tcp,
    Exec,
    Evidence,
    Other(String),
}

impl Serialize for ProbeKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            return s.serialize_str(self.name());
        }
        match self {
            ProbeKind::Http => ProbeKindRepr::Http,
            ProbeKind::Tcp => ProbeKindRepr::Tcp,
            ProbeKind::Exec => ProbeKindRepr::Exec,
            ProbeKind::Evidence => ProbeKindRepr::Evidence,
            ProbeKind::Other(name) => ProbeKindRepr::Other(name.clone()),
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for ProbeKind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<ProbeKind, D::Error> {
        if d.is_human_readable() {
            return String::deserialize(d).map(|name| ProbeKind::from_name(&name));
        }
        Ok(match ProbeKindRepr::deserialize(d)? {
            ProbeKindRepr::Http => ProbeKind::Http,
            ProbeKindRepr::Tcp => ProbeKind::Tcp,
            ProbeKindRepr::Exec => ProbeKind::Exec,
            ProbeKindRepr::Evidence => ProbeKind::Evidence,
            ProbeKindRepr::Other(name) => ProbeKind::from_name(&name),
        })
    }
}

/// One compliance control checked by an evidence probe.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeSubResult {
    /// e.g. `nis2.art21.a`.
    pub control_id: String,
    /// Whether the control passed.
    pub status: ProbeStatus,
    /// e.g. `nis2-essential`.
    pub framework: String,
    /// Article, when the framework has one.
    pub article: Option<String>,
    /// The mode in force for this control after overrides.
    pub effective_mode: ProbeMode,
    /// Why the control's mode was overridden, when it was.
    pub override_reason: Option<String>,
}

/// One declared probe.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeTopologyEntry {
    /// Probe name.
    pub probe_name: String,
    /// What kind of check it is.
    pub kind: ProbeKind,
    /// Whether it gates promotion, is only recorded, or is off.
    pub mode: ProbeMode,
}

/// The twelve wire kinds an agent reports (DOMAIN §2.3), with all their fields. Timestamps are
/// the agent's own clock.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AgentReport {
    /// The agent took the dispatch.
    DispatchAck {
        /// The closure it ran when it acked: the rollback target.
        current_closure_at_dispatch: Closure,
        /// When it received the dispatch.
        received_at: Micros,
    },
    /// `switch-to-configuration` started.
    ActivationStarted {
        /// When the switch started (agent clock, µs).
        started_at: Micros,
        /// How (`switch`, `boot`, …).
        switch_method: String,
    },
    /// Activation finished.
    ActivationCompleted {
        /// What the host now runs.
        observed_current_closure: Closure,
        /// Exit code of the switch.
        exit_code: i32,
        /// When it completed (agent clock, µs).
        completed_at: Micros,
    },
    /// Activation failed.
    ActivationFailed {
        /// Exit code.
        exit_code: i32,
        /// Last lines of stderr.
        stderr_tail: String,
        /// When it failed (agent clock, µs).
        failed_at: Micros,
    },
    /// Live switch deferred to reboot.
    ActivationDeferred {
        /// The component that cannot be swapped live.
        component: String,
        /// When the agent deferred it (agent clock, µs).
        deferred_at: Micros,
    },
    /// The probes the new closure declares.
    ProbeTopologyDeclared {
        /// The probes.
        probes: Vec<ProbeTopologyEntry>,
        /// When the agent declared them (agent clock, µs).
        declared_at: Micros,
    },
    /// A probe ran for the first time.
    ProbeObservedFirst {
        /// The probe's name, as the closure declares it.
        probe_name: String,
        /// Its mode.
        mode: ProbeMode,
        /// When the probe ran (agent clock, µs).
        observed_at: Micros,
    },
    /// A probe result.
    ProbeResult {
        /// The probe's name, as the closure declares it.
        probe_name: String,
        /// Its mode.
        mode: ProbeMode,
        /// Aggregate status (Pass only if every sub-result passes).
        status: ProbeStatus,
        /// When the probe ran (agent clock, µs).
        observed_at: Micros,
        /// Why it failed.
        failure_reason: Option<String>,
        /// Per-control results of an evidence probe (empty otherwise).
        sub_results: Vec<ProbeSubResult>,
    },
    /// A probe failed for the first time.
    ProbeFailureFirst {
        /// The probe's name, as the closure declares it.
        probe_name: String,
        /// Its mode.
        mode: ProbeMode,
        /// When it first failed (agent clock, µs).
        first_failed_at: Micros,
    },
    /// Sustained failure: the agent gave up on this closure.
    Failed {
        /// When it failed (agent clock, µs).
        failed_at: Micros,
        /// How long the failure lasted.
        sustained_duration_secs: u64,
        /// Which probes.
        failing_probes: Vec<String>,
        /// What the agent does about it.
        policy_applied: OnHealthFailure,
    },
    /// Rollback finished.
    RollbackComplete {
        /// The closure it went back to.
        reverted_to_closure: Closure,
        /// Exit code.
        exit_code: i32,
        /// When it completed (agent clock, µs).
        completed_at: Micros,
    },
    /// Soak passed.
    Converged {
        /// When the soak passed (agent clock, µs).
        converged_at: Micros,
        /// What the host runs.
        current_closure: Closure,
    },
}

impl AgentReport {
    /// The wire name.
    pub fn name(&self) -> &'static str {
        match self {
            AgentReport::DispatchAck { .. } => "DispatchAck",
            AgentReport::ActivationStarted { .. } => "ActivationStarted",
            AgentReport::ActivationCompleted { .. } => "ActivationCompleted",
            AgentReport::ActivationFailed { .. } => "ActivationFailed",
            AgentReport::ActivationDeferred { .. } => "ActivationDeferred",
            AgentReport::ProbeTopologyDeclared { .. } => "ProbeTopologyDeclared",
            AgentReport::ProbeObservedFirst { .. } => "ProbeObservedFirst",
            AgentReport::ProbeResult { .. } => "ProbeResult",
            AgentReport::ProbeFailureFirst { .. } => "ProbeFailureFirst",
            AgentReport::Failed { .. } => "Failed",
            AgentReport::RollbackComplete { .. } => "RollbackComplete",
            AgentReport::Converged { .. } => "Converged",
        }
    }

    /// The agent's own timestamp of the fact.
    pub fn at(&self) -> Micros {
        match self {
            AgentReport::DispatchAck { received_at: t, .. }
            | AgentReport::ActivationStarted { started_at: t, .. }
            | AgentReport::ActivationCompleted {
                completed_at: t, ..
            }
            | AgentReport::ActivationFailed { failed_at: t, .. }
            | AgentReport::ActivationDeferred { deferred_at: t, .. }
            | AgentReport::ProbeTopologyDeclared { declared_at: t, .. }
            | AgentReport::ProbeObservedFirst { observed_at: t, .. }
            | AgentReport::ProbeResult { observed_at: t, .. }
            | AgentReport::ProbeFailureFirst {
                first_failed_at: t, ..
            }
            | AgentReport::Failed { failed_at: t, .. }
            | AgentReport::RollbackComplete {
                completed_at: t, ..
            }
            | AgentReport::Converged {
                converged_at: t, ..
            } => *t,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 26, defect 9: `.` and `..` were accepted as host names (a CI-signed fleet, and
    /// `fleet-ledger token --name ..`). One rule refuses them everywhere.
    #[test]
    fn host_names_of_dots_alone_are_refused() {
        for bad in [".", "..", "...", "", "a/b", "a b"] {
            assert!(check_host(bad).is_err(), "{bad:?} accepted");
            assert!(Hostname::parse(bad).is_err(), "{bad:?} accepted");
        }
        for good in ["web-01", "a.b", ".hidden", "a..b", "x", "_"] {
            assert!(check_host(good).is_ok(), "{good:?} refused");
        }
    }
}
