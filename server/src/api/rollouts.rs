//! Operators: rollouts and their hosts and events, deferrals, quarantine, clearance and lifts.

use super::ErrorCode;
use super::caller::Operator;
use super::caller::Reader;
use super::{
    ApiError, ApiResult, AppState, ErrorBody, JsonBody, RolloutPath, parse_body, read, submit,
    unexpected,
};
use axum::Json;
use axum::extract::{Query, State};
use engine::writer::{Answer, Input};
use ledger::domain::RolloutId;
use ledger::read::Logged;
use ledger::store::Snapshot;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use wire;
use wire::ts;

// ---------------------------------------------------------------------------------------
// Operators

/// A rollout and its hosts' states.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct RolloutView {
    /// `channel@channelRef`.
    rollout_id: String,
    channel: String,
    /// `Active`, `Converging`, `Terminal`, `Failed`, `Reverted`, `Superseded`, `Pruned`.
    state: String,
    current_wave: u32,
    /// When it opened (CP clock).
    created_at: String,
    /// Seq of its `RolloutOpened` entry.
    opened_seq: u64,
    /// Seq of the entry that last changed it.
    updated_seq: u64,
    /// Host → its state in this rollout.
    host_states: BTreeMap<String, String>,
    /// SHA-256 of the rollout manifest (hex); in `/summary` only.
    #[serde(skip_serializing_if = "Option::is_none")]
    manifest_hash: Option<String>,
}

pub(super) fn rollout_view(
    r: &projections::RolloutRecord,
    hosts: &[projections::HostRecord],
) -> RolloutView {
    RolloutView {
        rollout_id: r.rollout_id.to_string(),
        channel: r.rollout_id.channel.clone(),
        state: format!("{:?}", r.state),
        current_wave: r.current_wave,
        created_at: ts::format(r.opened_at),
        opened_seq: r.opened_seq,
        updated_seq: r.updated_seq,
        host_states: hosts
            .iter()
            .map(|h| (h.hostname.clone(), format!("{:?}", h.state)))
            .collect(),
        manifest_hash: None,
    }
}

/// `GET /v1/rollouts`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct RolloutList {
    rollouts: Vec<RolloutView>,
}

/// Every rollout with its hosts' states.
#[utoipa::path(get, path = "/v1/ledger/rollouts", tag = "operators",
    responses((status = 200, body = RolloutList), (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])))]
pub(super) async fn list_rollouts(
    State(state): State<AppState>,
    _: Reader,
) -> ApiResult<Json<RolloutList>> {
    read(&state, |snap| {
        let mut rollouts = Vec::new();
        for r in projections::read::rollouts(&snap).map_err(ApiError::internal)? {
            let hosts =
                projections::read::hosts_of(&snap, &r.rollout_id).map_err(ApiError::internal)?;
            rollouts.push(rollout_view(&r, &hosts));
        }
        Ok(Json(RolloutList { rollouts }))
    })
    .await
}

pub(super) fn load_rollout(
    snap: &Snapshot,
    id: &RolloutId,
) -> ApiResult<projections::RolloutRecord> {
    projections::read::rollout(snap, id)
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::not_found(format!("no rollout {id}")))
}

/// One rollout, with its manifest's hash.
#[utoipa::path(get, path = "/v1/rollouts/{id}/summary", tag = "operators",
    params(("id" = String, Path, description = "`channel@channelRef`")),
    responses((status = 200, body = RolloutView), (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])))]
pub(super) async fn get_rollout(
    State(state): State<AppState>,
    _: Reader,
    RolloutPath(id): RolloutPath,
) -> ApiResult<Json<RolloutView>> {
    read(&state, move |snap| {
        let r = load_rollout(&snap, &id)?;
        let hosts = projections::read::hosts_of(&snap, &id).map_err(ApiError::internal)?;
        let mut v = rollout_view(&r, &hosts);
        v.manifest_hash = Some(crate::auth::hex(&r.manifest_hash));
        Ok(Json(v))
    })
    .await
}

/// Who cleared a rollout, and why.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct ClearedBy {
    operator: String,
    reason: String,
}

/// A rollout's lifecycle.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct Lifecycle {
    rollout_id: String,
    state: String,
    opened_at: String,
    superseded_at: Option<String>,
    superseded_by: Option<String>,
    terminal_at: Option<String>,
    pruned_at: Option<String>,
    cleared_by: Option<ClearedBy>,
    /// Seq of its last `RolloutTransitioned` entry.
    last_transition_seq: u64,
}

/// A rollout's state, when it was superseded (and by which), finished, pruned or cleared.
#[utoipa::path(get, path = "/v1/rollouts/{id}/lifecycle", tag = "operators",
    params(("id" = String, Path, description = "`channel@channelRef`")),
    responses((status = 200, body = Lifecycle), (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])))]
pub(super) async fn lifecycle(
    State(state): State<AppState>,
    _: Reader,
    RolloutPath(id): RolloutPath,
) -> ApiResult<Json<Lifecycle>> {
    read(&state, move |snap| {
        let r = load_rollout(&snap, &id)?;
        Ok(Json(Lifecycle {
            rollout_id: r.rollout_id.to_string(),
            state: format!("{:?}", r.state),
            opened_at: ts::format(r.opened_at),
            superseded_at: r.superseded_at.map(ts::format),
            superseded_by: r.superseded_by.as_ref().map(ToString::to_string),
            terminal_at: r.terminal_at.map(ts::format),
            pruned_at: r.pruned_at.map(ts::format),
            cleared_by: r.cleared_by.as_ref().map(|(op, why)| ClearedBy {
                operator: op.clone(),
                reason: why.clone(),
            }),
            last_transition_seq: r.last_transition_seq,
        }))
    })
    .await
}

/// A host in a rollout.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct HostRow {
    host: String,
    channel: String,
    wave: u32,
    /// `Pending`, `Activating`, `Deferred`, `Soaking`, `Converged`, `Failed`, `Reverted`.
    state: String,
    target_closure_hash: String,
    target_channel_ref: String,
    dispatched_at: Option<String>,
    /// `converged`, `failed` or `reverted` once there.
    terminal_state: Option<String>,
    terminal_at: Option<String>,
    /// The last agent seq accepted.
    last_event_seq: u64,
    /// Seq of the entry that last changed the record.
    updated_seq: u64,
}

/// `GET /v1/rollouts/{id}/hosts`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct RolloutHosts {
    rollout_id: String,
    hosts: Vec<HostRow>,
}

/// A rollout's hosts, by wave then name.
#[utoipa::path(get, path = "/v1/ledger/rollouts/{id}/hosts", tag = "operators",
    params(("id" = String, Path, description = "`channel@channelRef`")),
    responses((status = 200, body = RolloutHosts), (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])))]
pub(super) async fn rollout_hosts(
    State(state): State<AppState>,
    _: Reader,
    RolloutPath(id): RolloutPath,
) -> ApiResult<Json<RolloutHosts>> {
    use ledger::domain::HostState as S;
    read(&state, move |snap| {
        load_rollout(&snap, &id)?;
        let mut hosts = projections::read::hosts_of(&snap, &id).map_err(ApiError::internal)?;
        hosts.sort_by(|a, b| (a.wave, &a.hostname).cmp(&(b.wave, &b.hostname)));
        let hosts = hosts
            .iter()
            .map(|h| {
                let terminal_at = match h.state {
                    S::Converged => h.converged_at,
                    S::Failed => h.failed_at,
                    S::Reverted => h.reverted_at,
                    _ => None,
                };
                HostRow {
                    host: h.hostname.clone(),
                    channel: h.rollout_id.channel.clone(),
                    wave: h.wave,
                    state: format!("{:?}", h.state),
                    target_closure_hash: h.target_closure.clone(),
                    target_channel_ref: h.rollout_id.channel_ref.clone(),
                    dispatched_at: h.dispatched_at.map(ts::format),
                    terminal_state: matches!(h.state, S::Converged | S::Failed | S::Reverted)
                        .then(|| format!("{:?}", h.state).to_lowercase()),
                    terminal_at: terminal_at.map(ts::format),
                    last_event_seq: h.last_event_seq,
                    updated_seq: h.updated_seq,
                }
            })
            .collect();
        Ok(Json(RolloutHosts {
            rollout_id: id.to_string(),
            hosts,
        }))
    })
    .await
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct EventsQuery {
    /// Entries after this seq (the previous page's `nextAfter`).
    #[serde(default)]
    after: Option<u64>,
    /// Events per page (1–10000, default 1000).
    #[serde(default)]
    limit: Option<usize>,
}

/// Entries scanned per page at most: a page ends early (with a cursor) rather than holding a
/// read for long on a sparse rollout.
pub(super) const EVENTS_SCAN_MAX: u64 = 200_000;

/// One entry as JSON: header fields and the decoded event.
pub fn entry_json(entry: &Logged) -> Value {
    let (rollout, host) = entry.event.subject();
    json!({
        "seq": entry.seq,
        "recordedAt": ts::format(entry.at),
        "kind": entry.event.kind().name(),
        "rolloutId": rollout.map(ToString::to_string),
        "host": host,
        "payload": serde_json::to_value(&entry.event).unwrap_or(Value::Null),
    })
}

/// A rollout's entries, decoded, a page at a time.
#[utoipa::path(get, path = "/v1/ledger/rollouts/{id}/events", tag = "operators",
    params(("id" = String, Path, description = "`channel@channelRef`"), EventsQuery),
    responses((status = 200, body = RolloutEvents), (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])))]
pub(super) async fn rollout_events(
    State(state): State<AppState>,
    _: Reader,
    RolloutPath(id): RolloutPath,
    query: Result<Query<EventsQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<RolloutEvents>> {
    let Query(q) = query.map_err(|e| ApiError::new(ErrorCode::BadQuery, e.body_text()))?;
    let limit = q.limit.unwrap_or(1000).clamp(1, 10_000);
    read(&state, move |snap| {
        let r = load_rollout(&snap, &id)?;
        // The manifest entry precedes the opening; start a little before to include it.
        let start = q
            .after
            .map_or(0, |a| a + 1)
            .max(r.opened_seq.saturating_sub(1));
        let end = snap.size().min(start.saturating_add(EVENTS_SCAN_MAX));
        let mut events = Vec::new();
        let mut last = start.saturating_sub(1);
        for stored in snap.rows(start..end).map_err(ApiError::internal)? {
            if events.len() >= limit {
                break;
            }
            let stored = stored.map_err(ApiError::internal)?;
            last = stored.seq();
            // An entry this build cannot decode is about no rollout it knows (`verify` and
            // `check` report it); the page goes on past it.
            if let Ok(entry) = stored.decode()
                && entry.event.subject().0 == Some(&id)
            {
                events.push(entry_json(&entry));
            }
        }
        let complete = events.len() < limit && end == snap.size();
        let next = if complete {
            None
        } else if events.len() >= limit {
            events.last().and_then(|e| e["seq"].as_u64())
        } else {
            Some(last)
        };
        Ok(Json(RolloutEvents {
            rollout_id: id.to_string(),
            events,
            next_after: next,
        }))
    })
    .await
}

/// An entry, decoded: `{seq, recordedAt, kind, rolloutId, host, payload}` (the payload is the
/// event's fields, docs/FORMAT.md §3).
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct RolloutEvents {
    rollout_id: String,
    #[schema(value_type = Vec<Object>)]
    events: Vec<Value>,
    /// The cursor for the next page; null at the end.
    next_after: Option<u64>,
}

/// A host's current gate block.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct Deferral {
    rollout_id: String,
    host: String,
    /// The gate that blocks it: `quarantine`, `channel-edges`,
    /// `wave-promotion-host-unstaged`, `wave-promotion`, `host-edge`, `disruption-budget` or
    /// `compliance-wave`.
    gate: String,
    reason: String,
    since: String,
    /// Seq of the `GateDecision` entry.
    seq: u64,
}

/// `GET /v1/deferrals`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct Deferrals {
    deferrals: Vec<Deferral>,
}

/// The current gate block of every blocked host.
#[utoipa::path(get, path = "/v1/deferrals", tag = "operators",
    responses((status = 200, body = Deferrals), (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])))]
pub(super) async fn deferrals(
    State(state): State<AppState>,
    _: Reader,
) -> ApiResult<Json<Deferrals>> {
    read(&state, |snap| {
        let deferrals = projections::read::deferrals(&snap)
            .map_err(ApiError::internal)?
            .into_iter()
            .map(|((r, h), d)| Deferral {
                rollout_id: r.to_string(),
                host: h,
                gate: d.block.gate().to_string(),
                reason: d.block.reason(),
                since: ts::format(d.since),
                seq: d.updated_seq,
            })
            .collect();
        Ok(Json(Deferrals { deferrals }))
    })
    .await
}

/// A quarantined closure.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct Quarantined {
    channel: String,
    closure: String,
    /// The rollout whose rollback quarantined it.
    rollout_id: String,
    host: String,
    quarantined_at: String,
    /// Seq of the `QuarantineAdded` entry.
    seq: u64,
}

/// `GET /v1/quarantine`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct QuarantineList {
    quarantine: Vec<Quarantined>,
}

/// Every quarantined closure.
#[utoipa::path(get, path = "/v1/quarantine", tag = "operators",
    responses((status = 200, body = QuarantineList), (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])))]
pub(super) async fn quarantine(
    State(state): State<AppState>,
    _: Reader,
) -> ApiResult<Json<QuarantineList>> {
    read(&state, |snap| {
        let quarantine = projections::read::quarantine(&snap)
            .map_err(ApiError::internal)?
            .into_iter()
            .map(|((channel, closure), q)| Quarantined {
                channel,
                closure,
                rollout_id: q.rollout_id.to_string(),
                host: q.hostname,
                quarantined_at: ts::format(q.quarantined_at),
                seq: q.created_seq,
            })
            .collect();
        Ok(Json(QuarantineList { quarantine }))
    })
    .await
}

/// An operator's input, recorded.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct Recorded {
    /// Seq of its entry.
    seq: u64,
}

/// Clears a Failed or Reverted rollout (recorded with the operator and the reason).
#[utoipa::path(post, path = "/v1/rollouts/{id}/clearance", tag = "operators",
    params(("id" = String, Path, description = "`channel@channelRef`")),
    request_body = wire::Clearance,
    responses((status = 200, body = Recorded), (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])))]
pub(super) async fn clearance(
    State(state): State<AppState>,
    Operator(who): Operator,
    RolloutPath(id): RolloutPath,
    body: JsonBody,
) -> ApiResult<Json<Recorded>> {
    let who = who.name;
    let c: wire::Clearance = parse_body(body)?;
    if c.reason.trim().is_empty() {
        return Err(ApiError::new(
            ErrorCode::ReasonRequired,
            "a clearance needs a reason",
        ));
    }
    match submit(
        &state,
        Input::Clear {
            rollout: id,
            operator: who,
            reason: c.reason,
        },
    )
    .await?
    {
        Answer::Recorded { seq, .. } => Ok(Json(Recorded { seq })),
        other => Err(unexpected(other)),
    }
}

/// Lifts a quarantined closure.
#[utoipa::path(post, path = "/v1/quarantine/lift", tag = "operators",
    request_body = wire::Lift,
    responses((status = 200, body = Recorded), (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])))]
pub(super) async fn lift(
    State(state): State<AppState>,
    Operator(who): Operator,
    body: JsonBody,
) -> ApiResult<Json<Recorded>> {
    let who = who.name;
    let l: wire::Lift = parse_body(body)?;
    if l.reason.trim().is_empty() {
        return Err(ApiError::new(
            ErrorCode::ReasonRequired,
            "a lift needs a reason",
        ));
    }
    match submit(
        &state,
        Input::Lift {
            channel: l.channel,
            closure: l.closure,
            operator: who,
            reason: l.reason,
        },
    )
    .await?
    {
        Answer::Recorded { seq, .. } => Ok(Json(Recorded { seq })),
        other => Err(unexpected(other)),
    }
}
