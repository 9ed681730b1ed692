//! What nixfleet's operator CLI asks of the control plane (NIXFLEET-WIRE.md §7): who the
//! caller is, the hosts with their records, and a channel of the fleet in force.

use axum::Json;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{Extensions, HeaderMap, header};
use serde::Serialize;

use super::caller::Reader;
use super::{ApiError, ApiResult, AppState, Caller, ErrorBody, ErrorCode, read};
use crate::connections::Peer;

/// nixfleet's `GET /v1/whoami` answer (§7.2), fields in its order.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct Whoami {
    /// The client certificate's CN as presented (not the host it names); a bearer token's
    /// name when the caller used one.
    cn: String,
    /// The control plane's clock at this request, RFC 3339 as chrono writes it (`+00:00`,
    /// 0, 3, 6 or 9 fractional digits): not the certificate's issue time.
    #[serde(rename = "issuedAt")]
    issued_at: String,
}

/// Who the caller is: any authenticated caller (an agent's or operator's certificate, or a
/// bearer token).
#[utoipa::path(get, path = "/v1/whoami", tag = "operators",
    responses((status = 200, body = Whoami), (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])))]
pub(super) async fn whoami(
    State(state): State<AppState>,
    Caller(principal): Caller,
    headers: HeaderMap,
    extensions: Extensions,
) -> ApiResult<Json<Whoami>> {
    let by_token = headers.contains_key(header::AUTHORIZATION);
    let peer = extensions.get::<ConnectInfo<Peer>>();
    let cn = match peer.and_then(|p| p.0.cn.clone()) {
        Some(cn) if !by_token => cn,
        _ => principal.name,
    };
    let now = (state.clock)();
    let issued_at = chrono::DateTime::from_timestamp_micros(now)
        .map(|t| t.to_rfc3339())
        .unwrap_or_default();
    Ok(Json(Whoami { cn, issued_at }))
}

/// nixfleet's `GET /v1/channels/{name}` answer (§7.4): snake_case, fields in its order.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct Channel {
    /// The channel, as in the path.
    name: String,
    /// `meta.ciCommit` of the fleet manifest in force.
    declared_ci_commit: Option<String>,
    /// Its `meta.signedAt`, written as chrono's `to_rfc3339` writes it (`+00:00`, the
    /// signed fraction kept).
    signed_at: Option<String>,
    /// `channels[name].freshnessWindow` (minutes); for a fleet that does not state it, the
    /// control plane's own freshness window.
    freshness_window_minutes: u32,
}

/// A channel of the verified fleet in force: its declared CI commit, signing time and
/// freshness window (what `nixfleet status` shows for it).
#[utoipa::path(get, path = "/v1/channels/{name}", tag = "operators",
    params(("name" = String, Path, description = "a channel of the fleet in force")),
    responses((status = 200, body = Channel), (status = "4XX", body = ErrorBody),
        (status = 503, body = ErrorBody)),
    security(("mtls" = []), ("bearer" = [])))]
pub(super) async fn channel(
    State(state): State<AppState>,
    _: Reader,
    Path(name): Path<String>,
) -> ApiResult<Json<Channel>> {
    let seq = fleet_seq(&state).ok_or_else(|| {
        ApiError::new(
            ErrorCode::NotReady,
            "no verified fleet manifest is in force yet",
        )
    })?;
    let window_minutes =
        u32::try_from(state.access.get().trust.max_age_secs / 60).unwrap_or(u32::MAX);
    read(&state, move |snap| {
        let fleet = fleet_in_force(&snap, seq)?;
        let Some(declared) = fleet["channels"].get(&name) else {
            return Err(ApiError::not_found(format!(
                "channel {name:?} is not declared by the fleet in force"
            )));
        };
        let meta = &fleet["meta"];
        Ok(Json(Channel {
            declared_ci_commit: meta["ciCommit"].as_str().map(str::to_string),
            signed_at: meta["signedAt"]
                .as_str()
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.with_timezone(&chrono::Utc).to_rfc3339()),
            freshness_window_minutes: declared["freshnessWindow"]
                .as_u64()
                .and_then(|m| u32::try_from(m).ok())
                .unwrap_or(window_minutes),
            name,
        }))
    })
    .await
}

/// nixfleet's `GET /v1/hosts` answer (§7.3).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct Hosts {
    hosts: Vec<HostStatus>,
}

/// nixfleet's `HostStatusEntry`: camelCase, every field always written, in its order.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct HostStatus {
    /// The host.
    hostname: String,
    /// The channel of the rollout the record belongs to.
    channel: String,
    /// `hosts[host].closureHash` of the fleet in force now (not the rollout's target).
    declared_closure_hash: Option<String>,
    /// What the host reported running after its activation (null before).
    current_closure_hash: Option<String>,
    /// What it ran when it acknowledged the dispatch (null before the acknowledgement).
    pending_closure_hash: Option<String>,
    /// Always null, as nixfleet's: heartbeats are not recorded.
    last_checkin_at: Option<String>,
    /// The rollout of the record.
    last_rollout_id: String,
    /// The record is Converged.
    converged: bool,
    /// Distinct controls (or probes without controls) with an enforce failure recorded for
    /// the host in this rollout.
    outstanding_compliance_failures: u64,
    /// Always 0, as nixfleet's.
    outstanding_runtime_gate_errors: u64,
    /// The highest agent or synthesized seq accepted for the host in this rollout.
    verified_event_count: u64,
    /// Always null, as nixfleet's.
    last_uptime_secs: Option<u64>,
    /// The record's state (`Pending` … `Reverted`).
    rollout_state: String,
    /// Always false, as nixfleet's.
    pending_reboot: bool,
    /// Always null, as nixfleet's.
    quarantined_closure: Option<String>,
    /// `hosts[host].pin` of the fleet in force.
    #[schema(value_type = Option<Object>)]
    pin: Option<serde_json::Value>,
    /// Always 0, as nixfleet's.
    outstanding_health_failures: u64,
}

/// Every host record of every rollout not superseded or pruned (finished ones stay listed
/// until a successor supersedes them), newest rollout first, hosts by name: what
/// `nixfleet status` lists. From the projections and the fleet in force.
#[utoipa::path(get, path = "/v1/hosts", tag = "operators",
    responses((status = 200, body = Hosts), (status = "4XX", body = ErrorBody)),
    security(("mtls" = []), ("bearer" = [])))]
pub(super) async fn hosts(State(state): State<AppState>, _: Reader) -> ApiResult<Json<Hosts>> {
    use ledger::domain::{HostState, RolloutState};
    let fleet_seq = fleet_seq(&state);
    read(&state, move |snap| {
        let fleet = match fleet_seq {
            Some(seq) => fleet_in_force(&snap, seq)?,
            None => serde_json::Value::Null,
        };
        let mut rollouts: Vec<_> = projections::read::rollouts(&snap)
            .map_err(ApiError::internal)?
            .into_iter()
            .filter(|r| !matches!(r.state, RolloutState::Superseded | RolloutState::Pruned))
            .collect();
        rollouts.sort_by(|a, b| {
            (std::cmp::Reverse(a.opened_at), &a.rollout_id)
                .cmp(&(std::cmp::Reverse(b.opened_at), &b.rollout_id))
        });
        let mut out = Vec::new();
        for r in rollouts {
            let id = &r.rollout_id;
            let mut failures = std::collections::BTreeMap::<String, u64>::new();
            for ((_, host, _), _) in
                projections::read::probe_failures_of(&snap, id).map_err(ApiError::internal)?
            {
                *failures.entry(host).or_default() += 1;
            }
            let mut hosts = projections::read::hosts_of(&snap, id).map_err(ApiError::internal)?;
            hosts.sort_by(|a, b| a.hostname.cmp(&b.hostname));
            for h in hosts {
                let declared = &fleet["hosts"][&h.hostname];
                out.push(HostStatus {
                    channel: id.channel.clone(),
                    declared_closure_hash: declared["closureHash"].as_str().map(str::to_string),
                    current_closure_hash: h.current_closure.clone(),
                    pending_closure_hash: h.current_closure_at_dispatch.clone(),
                    last_checkin_at: None,
                    last_rollout_id: id.to_string(),
                    converged: h.state == HostState::Converged,
                    outstanding_compliance_failures: failures
                        .get(&h.hostname)
                        .copied()
                        .unwrap_or(0),
                    outstanding_runtime_gate_errors: 0,
                    verified_event_count: h.last_event_seq,
                    last_uptime_secs: None,
                    rollout_state: format!("{:?}", h.state),
                    pending_reboot: false,
                    quarantined_closure: None,
                    pin: declared.get("pin").filter(|p| !p.is_null()).cloned(),
                    outstanding_health_failures: 0,
                    hostname: h.hostname,
                });
            }
        }
        Ok(Json(Hosts { hosts: out }))
    })
    .await
}

/// The fleet manifest in force (entry `seq`), as JSON.
fn fleet_in_force(snap: &ledger::store::Snapshot, seq: u64) -> ApiResult<serde_json::Value> {
    let event = snap
        .logged(seq)
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::internal(format!("entry {seq} is missing")))?
        .event;
    event
        .manifest()
        .map(|m| serde_json::from_slice(m.canonical))
        .transpose()
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::internal(format!("entry {seq} is not a manifest")))
}

/// nixfleet's gauges (NIXFLEET-WIRE.md §10) from the projections and the fleet in force
/// (entry `fleet_seq`), at CP time `now`: one series per declared host, from its record in
/// the newest rollout that has one.
pub(super) fn nixfleet_sample(
    snap: &ledger::store::Snapshot,
    fleet_seq: Option<u64>,
    now: ledger::domain::Micros,
) -> ApiResult<engine::metrics::NixfleetSample> {
    use engine::metrics::{HostSample, NixfleetSample};
    use ledger::domain::{HostState, RolloutState};
    let Some(seq) = fleet_seq else {
        return Ok(NixfleetSample::default());
    };
    let fleet = fleet_in_force(snap, seq)?;
    let mut rollouts: Vec<_> = projections::read::rollouts(snap)
        .map_err(ApiError::internal)?
        .into_iter()
        .filter(|r| r.state != RolloutState::Pruned)
        .collect();
    rollouts.sort_by(|a, b| {
        (std::cmp::Reverse(a.opened_at), &a.rollout_id)
            .cmp(&(std::cmp::Reverse(b.opened_at), &b.rollout_id))
    });
    // Each host's record in its newest rollout, with that rollout's outstanding failures.
    let mut newest = std::collections::BTreeMap::new();
    for r in &rollouts {
        let mut failures = std::collections::BTreeMap::<String, u64>::new();
        for ((_, host, _), _) in
            projections::read::probe_failures_of(snap, &r.rollout_id).map_err(ApiError::internal)?
        {
            *failures.entry(host).or_default() += 1;
        }
        for h in projections::read::hosts_of(snap, &r.rollout_id).map_err(ApiError::internal)? {
            let failing = failures.get(&h.hostname).copied().unwrap_or(0);
            newest.entry(h.hostname.clone()).or_insert((h, failing));
        }
    }
    let mut hosts = Vec::new();
    if let Some(declared) = fleet["hosts"].as_object() {
        for (host, d) in declared {
            let record = newest.get(host);
            let running = record.and_then(|(h, _)| h.current_closure.as_deref());
            let converged = match d["closureHash"].as_str() {
                Some(declared) => running == Some(declared),
                None => record.is_some_and(|(h, _)| h.state == HostState::Converged),
            };
            hosts.push(HostSample {
                host: host.clone(),
                channel: d["channel"].as_str().unwrap_or_default().to_string(),
                converged,
                compliance_failures: record.map_or(0, |(_, f)| *f),
                verified_events: record.map_or(0, |(h, _)| h.last_event_seq),
            });
        }
    }
    let channels = fleet["channels"]
        .as_object()
        .map(|c| {
            c.iter()
                .filter_map(|(name, ch)| {
                    let minutes = ch["freshnessWindow"].as_u64()?;
                    Some((name.clone(), u32::try_from(minutes).ok()?))
                })
                .collect()
        })
        .unwrap_or_default();
    let fleet_signed_age_seconds = fleet["meta"]["signedAt"]
        .as_str()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(|t| (now - t.timestamp_micros()).div_euclid(1_000_000));
    let mut gate_blocks = Vec::new();
    let mut compliance_failures = Vec::new();
    for ((what, label), n) in projections::read::counters(snap).map_err(ApiError::internal)? {
        match what.as_str() {
            "gate-block" => gate_blocks.push((label, n)),
            "compliance-failure" => compliance_failures.push((label, n)),
            _ => {}
        }
    }
    Ok(NixfleetSample {
        hosts,
        channels,
        fleet_signed_age_seconds,
        gate_blocks,
        compliance_failures,
    })
}

/// The seq of the fleet manifest in force, as the writer last published it.
pub(super) fn fleet_seq(state: &AppState) -> Option<u64> {
    state
        .shared
        .published
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .get("fleet")
        .copied()
}
