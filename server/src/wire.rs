//! The JSON shapes of the HTTP API (DOMAIN §8), and their conversion to the domain types.
//! Times are RFC 3339 strings on the wire and integer microseconds inside.

use ledger::domain::{
    AgentReport, Micros, OnHealthFailure, ProbeMode, ProbeStatus, ProbeSubResult,
    ProbeTopologyEntry,
};
use serde::{Deserialize, Serialize};

/// RFC 3339 ⇄ µs since the epoch.
pub mod ts {
    use ledger::domain::Micros;
    use serde::{Deserialize, Deserializer, Serializer};

    /// Formats µs as RFC 3339 UTC with microseconds.
    pub fn format(us: Micros) -> String {
        chrono::DateTime::from_timestamp_micros(us)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
            .unwrap_or_else(|| us.to_string())
    }

    /// Parses RFC 3339 to µs.
    pub fn parse(text: &str) -> Result<Micros, String> {
        chrono::DateTime::parse_from_rfc3339(text)
            .map(|t| t.timestamp_micros())
            .map_err(|e| format!("{text:?} is not an RFC 3339 time: {e}"))
    }

    /// serde `serialize_with`.
    pub fn serialize<S: Serializer>(us: &Micros, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format(*us))
    }

    /// serde `deserialize_with`.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Micros, D::Error> {
        let text = String::deserialize(d)?;
        parse(&text).map_err(serde::de::Error::custom)
    }

    /// The same for `Option<Micros>`.
    pub mod option {
        use super::*;
        use serde::Serialize;

        /// serde `serialize_with`.
        pub fn serialize<S: Serializer>(us: &Option<Micros>, s: S) -> Result<S::Ok, S::Error> {
            us.map(format).serialize(s)
        }

        /// serde `deserialize_with`.
        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Micros>, D::Error> {
            Option::<String>::deserialize(d)?
                .map(|t| parse(&t).map_err(serde::de::Error::custom))
                .transpose()
        }
    }
}

/// An agent report on the wire (`kind`-tagged, the wire names of DOMAIN §2.3).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", deny_unknown_fields)]
#[allow(missing_docs)]
pub enum WireReport {
    DispatchAck {
        current_closure_at_dispatch: String,
        #[serde(with = "ts")]
        received_at: Micros,
    },
    ActivationStarted {
        #[serde(with = "ts")]
        started_at: Micros,
        switch_method: String,
    },
    ActivationCompleted {
        observed_current_closure: String,
        exit_code: i32,
        #[serde(with = "ts")]
        completed_at: Micros,
    },
    ActivationFailed {
        exit_code: i32,
        stderr_tail: String,
        #[serde(with = "ts")]
        failed_at: Micros,
    },
    ActivationDeferred {
        component: String,
        #[serde(with = "ts")]
        deferred_at: Micros,
    },
    ProbeTopologyDeclared {
        probes: Vec<ProbeTopologyEntry>,
        #[serde(with = "ts")]
        declared_at: Micros,
    },
    ProbeObservedFirst {
        probe_name: String,
        mode: ProbeMode,
        #[serde(with = "ts")]
        observed_at: Micros,
    },
    ProbeResult {
        probe_name: String,
        mode: ProbeMode,
        status: ProbeStatus,
        #[serde(with = "ts")]
        observed_at: Micros,
        #[serde(default)]
        failure_reason: Option<String>,
        #[serde(default)]
        sub_results: Vec<ProbeSubResult>,
    },
    ProbeFailureFirst {
        probe_name: String,
        mode: ProbeMode,
        #[serde(with = "ts")]
        first_failed_at: Micros,
    },
    Failed {
        #[serde(with = "ts")]
        failed_at: Micros,
        sustained_duration_secs: u64,
        failing_probes: Vec<String>,
        policy_applied: OnHealthFailure,
    },
    RollbackComplete {
        reverted_to_closure: String,
        exit_code: i32,
        #[serde(with = "ts")]
        completed_at: Micros,
    },
    Converged {
        #[serde(with = "ts")]
        converged_at: Micros,
        current_closure: String,
    },
}

impl From<WireReport> for AgentReport {
    fn from(w: WireReport) -> AgentReport {
        use WireReport as W;
        match w {
            W::DispatchAck {
                current_closure_at_dispatch,
                received_at,
            } => AgentReport::DispatchAck {
                current_closure_at_dispatch,
                received_at,
            },
            W::ActivationStarted {
                started_at,
                switch_method,
            } => AgentReport::ActivationStarted {
                started_at,
                switch_method,
            },
            W::ActivationCompleted {
                observed_current_closure,
                exit_code,
                completed_at,
            } => AgentReport::ActivationCompleted {
                observed_current_closure,
                exit_code,
                completed_at,
            },
            W::ActivationFailed {
                exit_code,
                stderr_tail,
                failed_at,
            } => AgentReport::ActivationFailed {
                exit_code,
                stderr_tail,
                failed_at,
            },
            W::ActivationDeferred {
                component,
                deferred_at,
            } => AgentReport::ActivationDeferred {
                component,
                deferred_at,
            },
            W::ProbeTopologyDeclared {
                probes,
                declared_at,
            } => AgentReport::ProbeTopologyDeclared {
                probes,
                declared_at,
            },
            W::ProbeObservedFirst {
                probe_name,
                mode,
                observed_at,
            } => AgentReport::ProbeObservedFirst {
                probe_name,
                mode,
                observed_at,
            },
            W::ProbeResult {
                probe_name,
                mode,
                status,
                observed_at,
                failure_reason,
                sub_results,
            } => AgentReport::ProbeResult {
                probe_name,
                mode,
                status,
                observed_at,
                failure_reason,
                sub_results,
            },
            W::ProbeFailureFirst {
                probe_name,
                mode,
                first_failed_at,
            } => AgentReport::ProbeFailureFirst {
                probe_name,
                mode,
                first_failed_at,
            },
            W::Failed {
                failed_at,
                sustained_duration_secs,
                failing_probes,
                policy_applied,
            } => AgentReport::Failed {
                failed_at,
                sustained_duration_secs,
                failing_probes,
                policy_applied,
            },
            W::RollbackComplete {
                reverted_to_closure,
                exit_code,
                completed_at,
            } => AgentReport::RollbackComplete {
                reverted_to_closure,
                exit_code,
                completed_at,
            },
            W::Converged {
                converged_at,
                current_closure,
            } => AgentReport::Converged {
                converged_at,
                current_closure,
            },
        }
    }
}

/// `POST /v1/agent/events`. The event object carries the agent's `seq` beside its `kind`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentEnvelope {
    /// Must equal the caller's identity.
    pub hostname: String,
    /// `channel@ref`.
    pub rollout_id: String,
    /// `{"kind": …, "seq": N, …fields}`.
    pub event: serde_json::Map<String, serde_json::Value>,
    /// Reserved for agent-side signatures (DOMAIN §6.14); accepted and not yet checked.
    #[serde(default)]
    pub signature: Option<String>,
}

impl AgentEnvelope {
    /// Splits the event object into its agent seq and report.
    pub fn report(&self) -> Result<(u64, AgentReport), String> {
        let mut event = self.event.clone();
        let seq = event
            .remove("seq")
            .ok_or("event.seq is missing")?
            .as_u64()
            .filter(|s| *s > 0)
            .ok_or("event.seq must be a positive integer")?;
        let wire: WireReport = serde_json::from_value(serde_json::Value::Object(event))
            .map_err(|e| format!("event: {e}"))?;
        Ok((seq, wire.into()))
    }
}

/// `POST /v1/agent/heartbeat`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Heartbeat {
    /// Must equal the caller's identity.
    pub hostname: String,
    /// The rollout the agent works on, if it knows one.
    #[serde(default)]
    pub rollout_id: Option<String>,
    /// What the host runs.
    #[serde(default)]
    pub current_closure: Option<String>,
    /// Agent clock.
    #[serde(with = "ts")]
    pub at: Micros,
}

/// `POST /v1/rollouts/{id}/clearance`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Clearance {
    /// Why (recorded with the operator's identity).
    pub reason: String,
}

/// `POST /v1/quarantine/lift`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lift {
    /// Channel.
    pub channel: String,
    /// Closure to lift.
    pub closure: String,
    /// Why.
    pub reason: String,
}

/// `POST /v1/manifests/fleet` and `/v1/manifests/rollouts/{id}`: the artifact as CI signed
/// it and the base64 ed25519 signature over its JCS canonical form.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedManifest {
    /// The artifact (any JSON object; canonicalized before verification).
    pub artifact: serde_json::Value,
    /// Base64 signature.
    pub signature: String,
}

/// A dispatch handed to an agent (DOMAIN §8 `DispatchResponse`, with the RFC's `wave`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Dispatch {
    /// Host.
    pub hostname: String,
    /// Rollout.
    pub rollout_id: String,
    /// What to activate.
    pub target_closure: String,
    /// Soak deadline (CP clock).
    #[serde(with = "ts")]
    pub soak_due_at: Micros,
    /// When it was queued (CP clock).
    #[serde(with = "ts")]
    pub enqueued_at: Micros,
    /// The host's wave.
    pub wave: u32,
    /// Seq of the `DispatchDelivered` entry.
    pub seq: u64,
}

impl Dispatch {
    /// The wire form of a delivered dispatch.
    pub fn of(d: planner::Delivered) -> Dispatch {
        Dispatch {
            hostname: d.host.into_string(),
            rollout_id: d.rollout.to_string(),
            target_closure: d.row.target_closure,
            soak_due_at: d.row.soak_due_at,
            enqueued_at: d.row.enqueued_at,
            wave: d.wave,
            seq: d.seq,
        }
    }
}

/// A host's record as the heartbeat reply shows it (DOMAIN §8 `HostRolloutSnapshot`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HostSnapshot {
    /// Rollout.
    pub rollout_id: String,
    /// Host.
    pub hostname: String,
    /// Channel.
    pub channel: String,
    /// State.
    pub state: String,
    /// Target.
    pub target_closure: String,
    /// Last agent seq accepted.
    pub last_event_seq: u64,
    /// Soak deadline.
    #[serde(with = "ts::option")]
    pub soak_due_at: Option<Micros>,
}

impl HostSnapshot {
    /// The wire form of a host's record.
    pub fn of(h: &projections::HostRecord) -> HostSnapshot {
        HostSnapshot {
            rollout_id: h.rollout_id.to_string(),
            hostname: h.hostname.clone(),
            channel: h.rollout_id.channel.clone(),
            state: format!("{:?}", h.state),
            target_closure: h.target_closure.clone(),
            last_event_seq: h.last_event_seq,
            soak_due_at: h.soak_due_at,
        }
    }
}
