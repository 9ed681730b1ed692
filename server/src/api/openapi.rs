//! The OpenAPI description of the whole HTTP API, generated from the handlers' types
//! (utoipa) and served at `GET /v1/openapi.json`. `server/tests/openapi.rs` fails if a route
//! exists that it does not describe, or an error code is answered that it does not list.
//!
//! The manifest schemas below describe nixfleet's documents (NIXFLEET-WIRE.md §4.1–4.2) as
//! CI writes them: the planner reads a subset (it is lenient: unknown fields are covered by
//! the signature but not parsed), so they are written out here for readers, not parsed
//! through.

use super::{
    ErrorBody, agent, audit, closure, identity, manifests, nixfleet_rollouts, operators, published,
    rollouts, rotation,
};
use crate::api::replica::{
    __path_healthz_follower, __path_promote, __path_receive, __path_step_down,
};
use crate::api::{__path_healthz, __path_healthz_leader, __path_metrics};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use std::collections::BTreeMap;
use utoipa::OpenApi;

/// A host selector: a host matches if any non-empty rule matches.
#[derive(utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
pub(super) struct Selector {
    tags: Vec<String>,
    tags_any: Vec<String>,
    hosts: Vec<String>,
    channel: Option<String>,
    all: bool,
}

/// A host of `fleet.resolved`.
#[derive(utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
pub(super) struct FleetHost {
    /// e.g. `x86_64-linux` (nixfleet's other proto versions say `platform`; not read).
    system: Option<String>,
    tags: Vec<String>,
    channel: String,
    /// Store-path basename of the host's closure; null when not built.
    closure_hash: Option<String>,
    /// The host's SSH ed25519 key, OpenSSH one-line form (`ssh-ed25519 AAAA… comment`):
    /// what enrollment binds the host's certificate to.
    pubkey: Option<String>,
    /// `{commit, reason, expiresAt?}` when pinned (not read).
    #[schema(value_type = Option<Object>)]
    pin: Option<()>,
}

/// A channel of `fleet.resolved`.
#[derive(utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
pub(super) struct Channel {
    rollout_policy: String,
    reconcile_interval_minutes: u32,
    /// How old a signed manifest may be, in minutes.
    freshness_window: u32,
    signing_interval_minutes: u32,
}

/// A wave of a rollout policy.
#[derive(utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
pub(super) struct PolicyWave {
    selector: Selector,
    soak_minutes: u32,
}

/// A rollout policy.
#[derive(utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
pub(super) struct RolloutPolicy {
    /// `canary`, `all-at-once`, `staged` (not read).
    strategy: String,
    waves: Vec<PolicyWave>,
    /// `{systemdFailedUnits?: {max}}` (not read).
    #[schema(value_type = Object)]
    health_gate: (),
    #[schema(value_type = wire::schema::OnHealthFailure)]
    on_health_failure: (),
}

/// A resolved wave: its hosts and soak.
#[derive(utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
pub(super) struct Wave {
    hosts: Vec<String>,
    soak_minutes: u32,
}

/// An ordering edge: `gated` waits for `gates` (hosts of a channel, or channels; the
/// readers' aliases `after`/`before` are accepted).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub(super) struct Edge {
    gated: String,
    gates: String,
    reason: Option<String>,
}

/// A disruption budget of `fleet.resolved`.
#[derive(utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
pub(super) struct FleetBudget {
    selector: Selector,
    max_in_flight: Option<u32>,
    max_in_flight_pct: Option<u32>,
}

/// A signed document's `meta`.
#[derive(utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
pub(super) struct Meta {
    schema_version: u32,
    /// RFC 3339; required for verification (freshness, `rejectBefore`, newer-than-in-force).
    signed_at: Option<String>,
    /// The git HEAD SHA CI built (a rollout's `channelRef`).
    ci_commit: Option<String>,
    /// `ed25519` when absent, or `ecdsa-p256`.
    signature_algorithm: Option<String>,
}

/// nixfleet's `fleet.resolved` (NIXFLEET-WIRE.md §4.1), as CI signs it (JCS).
#[derive(utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
pub(super) struct FleetResolved {
    /// 1.
    schema_version: u32,
    hosts: BTreeMap<String, FleetHost>,
    channels: BTreeMap<String, Channel>,
    rollout_policies: BTreeMap<String, RolloutPolicy>,
    /// Channel → its waves, in order.
    waves: BTreeMap<String, Vec<Wave>>,
    /// Host ordering within a channel.
    edges: Vec<Edge>,
    /// Channel ordering.
    channel_edges: Vec<Edge>,
    disruption_budgets: Vec<FleetBudget>,
    meta: Meta,
}

/// A host of a rollout manifest.
#[derive(utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
pub(super) struct RolloutHost {
    hostname: String,
    wave_index: u32,
    /// Store-path basename (or full store path).
    target_closure: String,
}

/// A disruption budget of a rollout manifest, with the hosts it matched.
#[derive(utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
pub(super) struct RolloutBudget {
    selector: Selector,
    hosts: Vec<String>,
    max_in_flight: Option<u32>,
    max_in_flight_pct: Option<u32>,
}

/// nixfleet's rollout manifest (NIXFLEET-WIRE.md §4.2), as CI signs it (JCS). Its id is
/// `channel@channelRef`.
#[derive(utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
pub(super) struct RolloutManifest {
    /// 1.
    schema_version: u32,
    /// Display only.
    display_name: Option<String>,
    channel: String,
    /// The fleet's full `meta.ciCommit`.
    channel_ref: String,
    /// Lowercase hex SHA-256 of the fleet artifact's JCS bytes: must be the fleet in force.
    fleet_resolved_hash: String,
    /// Sorted by hostname.
    host_set: Vec<RolloutHost>,
    #[schema(value_type = Object)]
    health_gate: (),
    disruption_budgets: Vec<RolloutBudget>,
    meta: Meta,
}

/// The description.
#[derive(Debug, OpenApi)]
#[openapi(
    info(
        title = "fleet-ledger",
        description = "The HTTP API of fleet-ledger, the signed event log a NixOS fleet's control plane runs on. Agents and CI speak nixfleet v0.2's wire (NIXFLEET-WIRE.md); operators and auditors use bearer tokens. Every error answer is `ErrorBody`; 503 answers carry `Retry-After`. See docs/OPERATIONS.md.",
        license(name = "Apache-2.0"),
    ),
    paths(
        agent::agent_event,
        agent::heartbeat,
        agent::dispatch,
        identity::enroll,
        identity::renew,
        published::fleet_resolved,
        published::fleet_resolved_sig,
        published::rollout_manifest,
        published::rollout_manifest_sig,
        closure::closure,
        manifests::post_fleet,
        manifests::post_rollout_manifest,
        operators::whoami,
        nixfleet_rollouts::in_flight,
        nixfleet_rollouts::hosts,
        nixfleet_rollouts::events,
        operators::channel,
        operators::hosts,
        rollouts::list_rollouts,
        rollouts::get_rollout,
        rollouts::lifecycle,
        rollouts::rollout_hosts,
        rollouts::rollout_events,
        rollouts::clearance,
        rollouts::deferrals,
        rollouts::quarantine,
        rollouts::lift,
        audit::checkpoint,
        audit::checkpoint_witnessed,
        rotation::rotate_key,
        rotation::reload,
        audit::entries,
        audit::batches,
        audit::export,
        audit::proof_inclusion,
        audit::proof_consistency,
        metrics,
        healthz,
        healthz_leader,
        receive,
        promote,
        step_down,
        healthz_follower,
        openapi_json,
    ),
    components(schemas(ErrorBody, wire::WireReport, FleetResolved, RolloutManifest)),
    modifiers(&Security),
    tags(
        (name = "agents", description = "nixfleet agents: reports, heartbeats, dispatch, manifests, identity"),
        (name = "ci", description = "CI's signed manifests"),
        (name = "operators", description = "rollouts, hosts, gates, quarantine"),
        (name = "auditors", description = "checkpoints, entries, proofs, exports"),
        (name = "daemon", description = "health, metrics, this description"),
    ),
)]
pub struct ApiDoc;

struct Security;

impl utoipa::Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
        components.add_security_scheme(
            "mtls",
            SecurityScheme::MutualTls {
                description: Some(
                    "an agent's client certificate from the fleet CA (tls.client_ca); CN agent-<host>.<suffix> is <host>".into(),
                ),
                deprecated: None,
                extensions: None,
            },
        );
    }
}

/// This description.
#[utoipa::path(get, path = "/v1/openapi.json", tag = "daemon",
    responses((status = 200, description = "the OpenAPI description", content_type = "application/json")))]
pub(super) async fn openapi_json() -> Response {
    static DOC: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let text = DOC.get_or_init(|| ApiDoc::openapi().to_pretty_json().unwrap_or_default());
    ([(header::CONTENT_TYPE, "application/json")], text.clone()).into_response()
}
