//! The JSON shapes of the HTTP API, and their conversion to the domain types. The agent
//! routes speak nixfleet v0.2's wire exactly (`../shared/domain/NIXFLEET-WIRE.md` §3): the
//! event envelope and events camelCase, the heartbeat and dispatch snake_case, bootstrap
//! snapshots camelCase. Times are RFC 3339 strings on the wire and integer microseconds
//! inside.

use ledger::domain::{
    AgentReport, Micros, OnHealthFailure, ProbeKind, ProbeMode, ProbeStatus, ProbeSubResult,
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
        use ledger::domain::Micros;
        use serde::{Deserialize, Deserializer, Serialize, Serializer};

        use super::{format, parse};

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

/// One declared probe, as nixfleet agents write it (camelCase; `kind` a free string).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(missing_docs)]
pub struct WireProbe {
    pub probe_name: String,
    /// `http`, `tcp`, `exec`, `evidence`, or any other name of 1–64 printable ASCII
    /// characters (kept as it came).
    #[schema(value_type = String, example = "http")]
    pub kind: ProbeKind,
    #[schema(value_type = schema::ProbeMode)]
    pub mode: ProbeMode,
}

/// One control of an evidence probe's result, as nixfleet agents write it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(missing_docs)]
pub struct WireSubResult {
    pub control_id: String,
    #[schema(value_type = schema::ProbeStatus)]
    pub status: ProbeStatus,
    pub framework: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub article: Option<String>,
    /// Absent on input means `enforce` (nixfleet's default); the agent always writes it.
    #[serde(default = "enforce")]
    #[schema(value_type = schema::ProbeMode)]
    pub effective_mode: ProbeMode,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub override_reason: Option<String>,
}

fn enforce() -> ProbeMode {
    ProbeMode::Enforce
}

/// An agent report on nixfleet v0.2's wire: `kind`-tagged, fields camelCase, times RFC 3339
/// (up to nanoseconds; the ledger keeps microseconds). Unknown fields are ignored, as every
/// nixfleet reader does.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "kind")]
#[allow(missing_docs)]
pub enum WireReport {
    #[serde(rename_all = "camelCase")]
    DispatchAck {
        current_closure_at_dispatch: String,
        #[serde(with = "ts")]
        #[schema(value_type = String, format = DateTime)]
        received_at: Micros,
    },
    #[serde(rename_all = "camelCase")]
    ActivationStarted {
        #[serde(with = "ts")]
        #[schema(value_type = String, format = DateTime)]
        started_at: Micros,
        switch_method: String,
    },
    #[serde(rename_all = "camelCase")]
    ActivationCompleted {
        observed_current_closure: String,
        exit_code: i32,
        #[serde(with = "ts")]
        #[schema(value_type = String, format = DateTime)]
        completed_at: Micros,
    },
    #[serde(rename_all = "camelCase")]
    ActivationFailed {
        exit_code: i32,
        stderr_tail: String,
        #[serde(with = "ts")]
        #[schema(value_type = String, format = DateTime)]
        failed_at: Micros,
    },
    #[serde(rename_all = "camelCase")]
    ActivationDeferred {
        component: String,
        #[serde(with = "ts")]
        #[schema(value_type = String, format = DateTime)]
        deferred_at: Micros,
    },
    #[serde(rename_all = "camelCase")]
    ProbeTopologyDeclared {
        probes: Vec<WireProbe>,
        #[serde(with = "ts")]
        #[schema(value_type = String, format = DateTime)]
        declared_at: Micros,
    },
    #[serde(rename_all = "camelCase")]
    ProbeObservedFirst {
        probe_name: String,
        #[schema(value_type = schema::ProbeMode)]
        mode: ProbeMode,
        #[serde(with = "ts")]
        #[schema(value_type = String, format = DateTime)]
        observed_at: Micros,
    },
    #[serde(rename_all = "camelCase")]
    ProbeResult {
        probe_name: String,
        #[schema(value_type = schema::ProbeMode)]
        mode: ProbeMode,
        #[schema(value_type = schema::ProbeStatus)]
        status: ProbeStatus,
        #[serde(with = "ts")]
        #[schema(value_type = String, format = DateTime)]
        observed_at: Micros,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        failure_reason: Option<String>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        sub_results: Vec<WireSubResult>,
    },
    #[serde(rename_all = "camelCase")]
    ProbeFailureFirst {
        probe_name: String,
        #[schema(value_type = schema::ProbeMode)]
        mode: ProbeMode,
        #[serde(with = "ts")]
        #[schema(value_type = String, format = DateTime)]
        first_failed_at: Micros,
    },
    #[serde(rename_all = "camelCase")]
    Failed {
        #[serde(with = "ts")]
        #[schema(value_type = String, format = DateTime)]
        failed_at: Micros,
        sustained_duration_secs: u64,
        failing_probes: Vec<String>,
        #[schema(value_type = schema::OnHealthFailure)]
        policy_applied: OnHealthFailure,
    },
    #[serde(rename_all = "camelCase")]
    RollbackComplete {
        reverted_to_closure: String,
        exit_code: i32,
        #[serde(with = "ts")]
        #[schema(value_type = String, format = DateTime)]
        completed_at: Micros,
    },
    #[serde(rename_all = "camelCase")]
    Converged {
        #[serde(with = "ts")]
        #[schema(value_type = String, format = DateTime)]
        converged_at: Micros,
        current_closure: String,
    },
}

/// A probe kind an agent may name: a short printable name (nixfleet's module declares four;
/// the wire type is free).
fn check_probe_kind(kind: &ProbeKind) -> Result<(), String> {
    let name = kind.name();
    if name.is_empty() || name.len() > 64 || !name.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "probe kind {:?} is not 1-64 printable ASCII characters",
            name.chars().take(64).collect::<String>()
        ));
    }
    Ok(())
}

impl WireReport {
    /// The domain report, after the checks the wire types cannot express.
    pub fn into_report(self) -> Result<AgentReport, String> {
        use WireReport as W;
        Ok(match self {
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
                probes: probes
                    .into_iter()
                    .map(|p| {
                        check_probe_kind(&p.kind)?;
                        Ok(ProbeTopologyEntry {
                            probe_name: p.probe_name,
                            kind: p.kind,
                            mode: p.mode,
                        })
                    })
                    .collect::<Result<_, String>>()?,
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
                sub_results: sub_results
                    .into_iter()
                    .map(|s| ProbeSubResult {
                        control_id: s.control_id,
                        status: s.status,
                        framework: s.framework,
                        article: s.article,
                        effective_mode: s.effective_mode,
                        override_reason: s.override_reason,
                    })
                    .collect(),
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
        })
    }
}

/// `POST /v1/agent/events`: nixfleet's envelope. The event object carries the agent's `seq`
/// beside its `kind`. Unknown fields are ignored.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AgentEnvelope {
    /// Must equal the caller's identity.
    pub hostname: String,
    /// `channel@channelRef`.
    pub rollout_id: String,
    /// `{"kind": …, "seq": N, …fields}`: one of the twelve reports, with the agent's
    /// positive `seq` for this (host, rollout) beside its fields.
    #[schema(schema_with = schema::agent_event)]
    pub event: serde_json::Map<String, serde_json::Value>,
    /// Reserved by nixfleet for agent-side signatures (hex ed25519 over the canonical event);
    /// its agents never send it and its CP ignores it. Accepted, not checked.
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
        Ok((seq, wire.into_report()?))
    }
}

/// `POST /v1/agent/heartbeat` (snake_case, as nixfleet's). Unknown fields are ignored.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct Heartbeat {
    /// Must equal the caller's identity.
    pub hostname: String,
    /// The rollout the agent works on (nixfleet v0.2 agents never name one).
    #[serde(default)]
    pub rollout_id: Option<String>,
    /// What the host runs (nixfleet agents send the store path's basename).
    #[serde(default)]
    pub current_closure: Option<String>,
    /// Agent clock.
    #[serde(with = "ts")]
    #[schema(value_type = String, format = DateTime)]
    pub at: Micros,
}

/// `POST /v1/rollouts/{id}/clearance`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Clearance {
    /// Why (recorded with the operator's identity).
    pub reason: String,
}

/// `POST /v1/ledger/rotate-key`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateKey {
    /// The new signing key's file, an absolute path on the daemon's host (`fleet-ledger
    /// keygen` writes it, mode 0600).
    pub key_file: String,
    /// Why (recorded with the operator's identity).
    pub reason: String,
}

/// `POST /v1/quarantine/lift`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Lift {
    /// The channel it applies to.
    pub channel: String,
    /// Closure to lift.
    pub closure: String,
    /// The reason the operator gave.
    pub reason: String,
}

/// `POST /v1/manifests/fleet` and `/v1/manifests/rollouts/{id}`: the artifact as CI signed
/// it and the base64 ed25519 signature over its JCS canonical form.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignedManifest {
    /// The artifact: nixfleet's `fleet.resolved` (for `/v1/manifests/fleet`) or a rollout
    /// manifest, canonicalized (JCS) before verification.
    #[schema(value_type = Object)]
    pub artifact: serde_json::Value,
    /// Base64 signature.
    pub signature: String,
}

/// A dispatch handed to an agent (DOMAIN §8 `DispatchResponse`, with the RFC's `wave`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Dispatch {
    /// The host's name.
    pub hostname: String,
    /// The rollout, as `channel@channelRef`.
    pub rollout_id: String,
    /// What to activate.
    pub target_closure: String,
    /// Soak deadline (CP clock).
    #[serde(with = "ts")]
    #[schema(value_type = String, format = DateTime)]
    pub soak_due_at: Micros,
    /// When it was queued (CP clock).
    #[serde(with = "ts")]
    #[schema(value_type = String, format = DateTime)]
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

/// A host's record as the heartbeat reply shows it: nixfleet's `HostRolloutSnapshot`
/// (camelCase; absent optionals omitted; `dispatchedAt` required, so only dispatched records
/// are shown).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(missing_docs)]
pub struct HostSnapshot {
    pub rollout_id: String,
    pub hostname: String,
    pub channel: String,
    /// PascalCase state name.
    pub state: String,
    pub target_closure: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current_closure_at_dispatch: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current_closure: Option<String>,
    #[serde(with = "ts")]
    #[schema(value_type = String, format = DateTime)]
    pub dispatched_at: Micros,
    #[serde(with = "ts::option", skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub dispatch_acked_at: Option<Micros>,
    #[serde(with = "ts::option", skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub activation_started_at: Option<Micros>,
    #[serde(with = "ts::option", skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub activation_completed_at: Option<Micros>,
    #[serde(with = "ts::option", skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub soak_due_at: Option<Micros>,
    pub last_event_seq: u64,
}

impl HostSnapshot {
    /// The wire form of a host's record, if it was dispatched (a record not yet dispatched
    /// gives the agent nothing to do).
    pub fn of(h: &projections::HostRecord) -> Option<HostSnapshot> {
        Some(HostSnapshot {
            rollout_id: h.rollout_id.to_string(),
            hostname: h.hostname.clone(),
            channel: h.rollout_id.channel.clone(),
            state: format!("{:?}", h.state),
            target_closure: h.target_closure.clone(),
            current_closure_at_dispatch: h.current_closure_at_dispatch.clone(),
            current_closure: h.current_closure.clone(),
            dispatched_at: h.dispatched_at?,
            dispatch_acked_at: h.dispatch_acked_at,
            activation_started_at: h.activation_started_at,
            activation_completed_at: h.activation_completed_at,
            soak_due_at: h.soak_due_at,
            last_event_seq: h.last_event_seq,
        })
    }
}

/// OpenAPI schemas of the ledger's enums as the wire writes them (the ledger crate does not
/// know the OpenAPI), and of the event object, which is a report plus its `seq`.
pub mod schema {
    use utoipa::openapi::schema::{AllOfBuilder, ObjectBuilder, Type};
    use utoipa::openapi::{RefOr, Schema};

    /// A probe's mode.
    #[derive(Debug, utoipa::ToSchema)]
    #[serde(rename_all = "kebab-case")]
    #[allow(dead_code, missing_docs)]
    pub enum ProbeMode {
        Enforce,
        Observe,
        Disabled,
    }

    /// A probe's outcome.
    #[derive(Debug, utoipa::ToSchema)]
    #[serde(rename_all = "kebab-case")]
    #[allow(dead_code, missing_docs)]
    pub enum ProbeStatus {
        Pass,
        Fail,
    }

    /// What a health failure does (`halt-only` is read as `halt`).
    #[derive(Debug, utoipa::ToSchema)]
    #[serde(rename_all = "kebab-case")]
    #[allow(dead_code, missing_docs)]
    pub enum OnHealthFailure {
        Halt,
        RollbackAndHalt,
    }

    /// The event object of an agent envelope: a [`super::WireReport`] and its `seq`.
    pub fn agent_event() -> impl Into<RefOr<Schema>> {
        AllOfBuilder::new()
            .item(RefOr::Ref(utoipa::openapi::Ref::from_schema_name(
                "WireReport",
            )))
            .item(
                ObjectBuilder::new()
                    .property(
                        "seq",
                        ObjectBuilder::new()
                            .schema_type(Type::Integer)
                            .minimum(Some(1))
                            .description(Some(
                                "the agent's sequence number for this (host, rollout)",
                            )),
                    )
                    .required("seq"),
            )
    }
}
