//! nixfleet's rollout views (NIXFLEET-WIRE.md §7.5), as its `nixfleet` CLI reads them: the
//! in-flight list, a rollout's hosts and its events. fleet-ledger's fuller views of the same
//! things live under `/v1/ledger/rollouts` (`rollouts.rs`).

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Query, State};
use ledger::domain::{HostState, Micros, RolloutState};
use ledger::event::Event;
use serde::{Deserialize, Serialize};

use super::caller::{Reader, RolloutPath};
use super::rollouts::EVENTS_SCAN_MAX;
use super::{ApiError, ApiResult, AppState, ErrorBody, ErrorCode, read};

/// A time as nixfleet's CP writes it (chrono's `to_rfc3339`: `+00:00`).
fn rfc3339(at: Micros) -> String {
    chrono::DateTime::from_timestamp_micros(at)
        .map(|t| t.to_rfc3339())
        .unwrap_or_default()
}

/// `GET /v1/rollouts`: `{"rollouts": [...]}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct InFlight {
    rollouts: Vec<InFlightRollout>,
}

/// One in-flight rollout; nixfleet builds it with `json!`, so its keys are in byte order.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct InFlightRollout {
    /// Its channel.
    channel: String,
    /// When it opened (`+00:00`).
    created_at: String,
    /// Its wave cursor.
    current_wave: u32,
    /// Every host record's state, by host.
    host_states: BTreeMap<String, String>,
    /// `channel@channelRef`.
    rollout_id: String,
}

/// The in-flight rollouts (neither Superseded, Pruned nor Terminal), newest first, with
/// their hosts' states: nixfleet's list. Every rollout, with more of each, is at
/// `/v1/ledger/rollouts`.
#[utoipa::path(get, path = "/v1/rollouts", tag = "operators",
    responses((status = 200, body = InFlight), (status = "4XX", body = ErrorBody)),
    security(("mtls" = []), ("bearer" = [])))]
pub(super) async fn in_flight(
    State(state): State<AppState>,
    _: Reader,
) -> ApiResult<Json<InFlight>> {
    read(&state, |snap| {
        let mut rollouts: Vec<_> = projections::read::rollouts(&snap)
            .map_err(ApiError::internal)?
            .into_iter()
            .filter(|r| {
                !matches!(
                    r.state,
                    RolloutState::Superseded | RolloutState::Pruned | RolloutState::Terminal
                )
            })
            .collect();
        rollouts.sort_by(|a, b| {
            (std::cmp::Reverse(a.opened_at), &a.rollout_id)
                .cmp(&(std::cmp::Reverse(b.opened_at), &b.rollout_id))
        });
        let mut out = Vec::with_capacity(rollouts.len());
        for r in rollouts {
            let hosts =
                projections::read::hosts_of(&snap, &r.rollout_id).map_err(ApiError::internal)?;
            out.push(InFlightRollout {
                channel: r.rollout_id.channel.clone(),
                created_at: rfc3339(r.opened_at),
                current_wave: r.current_wave,
                host_states: hosts
                    .into_iter()
                    .map(|h| (h.hostname, format!("{:?}", h.state)))
                    .collect(),
                rollout_id: r.rollout_id.to_string(),
            });
        }
        Ok(Json(InFlight { rollouts: out }))
    })
    .await
}

/// nixfleet's `RolloutHosts`: the outer key is snake_case.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct RolloutHosts {
    rollout_id: String,
    hosts: Vec<RolloutHost>,
}

/// nixfleet's `RolloutHostEntry`, camelCase, in its order.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct RolloutHost {
    /// The host.
    host: String,
    /// The rollout's channel.
    channel: String,
    /// The host's wave (its real wave; nixfleet v0.2 writes 0).
    wave: u32,
    /// The closure the rollout targets on the host.
    target_closure_hash: String,
    /// The whole rollout id, as nixfleet writes it.
    target_channel_ref: String,
    /// When the host's dispatch was delivered; before that, when its record was created
    /// (the rollout's opening, nixfleet's value).
    dispatched_at: String,
    /// `converged`, `rolled-back` or `failed`; null while in flight.
    terminal_state: Option<String>,
    /// When it reached that state.
    terminal_at: Option<String>,
}

/// A rollout's hosts by wave then name, in nixfleet's shape (404 when it has no host
/// record). fleet-ledger's fuller view is at `/v1/ledger/rollouts/{id}/hosts`.
#[utoipa::path(get, path = "/v1/rollouts/{id}/hosts", tag = "operators",
    params(("id" = String, Path, description = "`channel@channelRef`")),
    responses((status = 200, body = RolloutHosts), (status = "4XX", body = ErrorBody)),
    security(("mtls" = []), ("bearer" = [])))]
pub(super) async fn hosts(
    State(state): State<AppState>,
    _: Reader,
    RolloutPath(id): RolloutPath,
) -> ApiResult<Json<RolloutHosts>> {
    read(&state, move |snap| {
        let opened_at = projections::read::rollout(&snap, &id)
            .map_err(ApiError::internal)?
            .map(|r| r.opened_at);
        let mut records = projections::read::hosts_of(&snap, &id).map_err(ApiError::internal)?;
        let Some(opened_at) = opened_at.filter(|_| !records.is_empty()) else {
            return Err(ApiError::not_found(format!(
                "rollout {id} has no host records"
            )));
        };
        records.sort_by(|a, b| (a.wave, &a.hostname).cmp(&(b.wave, &b.hostname)));
        let hosts = records
            .into_iter()
            .map(|h| {
                let (terminal_state, terminal_at) = match h.state {
                    HostState::Converged => (Some("converged"), h.converged_at),
                    HostState::Reverted => (Some("rolled-back"), h.reverted_at),
                    HostState::Failed => (Some("failed"), h.failed_at),
                    _ => (None, None),
                };
                RolloutHost {
                    channel: id.channel.clone(),
                    wave: h.wave,
                    target_closure_hash: h.target_closure,
                    target_channel_ref: id.to_string(),
                    dispatched_at: rfc3339(h.dispatched_at.unwrap_or(opened_at)),
                    terminal_state: terminal_state.map(str::to_string),
                    terminal_at: terminal_at.map(rfc3339),
                    host: h.hostname,
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

/// `?limit=N` (default 1000; below 1 means 1).
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct Limit {
    /// How many of the rollout's oldest entries.
    limit: Option<i64>,
}

/// nixfleet's `RolloutEvents`: the outer key is snake_case.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct RolloutEvents {
    rollout_id: String,
    events: Vec<RolloutEvent>,
}

/// One row: `{seq, ts, kind, host, payload}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct RolloutEvent {
    /// The entry's seq in the log.
    seq: u64,
    /// Its CP time (`+00:00`).
    ts: String,
    /// nixfleet's row kind: `agent_event`, `plan_action`, `gate_decision`, `effect` or
    /// `rollout_event`; for the ledger's other kinds, the kind's snake_case name.
    kind: String,
    /// The host it is about, if one.
    host: Option<String>,
    /// The event's fields (docs/FORMAT.md §3).
    #[schema(value_type = Object)]
    payload: serde_json::Value,
}

/// nixfleet's row kind for a ledger event.
fn row_kind(event: &Event) -> String {
    match event {
        Event::AgentEventRecorded(_)
        | Event::AgentEventSynthesized(_)
        | Event::AgentReportRefused(_) => "agent_event".into(),
        Event::DispatchQueued(_) => "plan_action".into(),
        Event::GateDecision(_) => "gate_decision".into(),
        Event::HostTransitioned(_) | Event::RolloutTransitioned(_) => "effect".into(),
        Event::RolloutOpened(_)
        | Event::HostJoined(_)
        | Event::WaveAdvanced(_)
        | Event::RolloutCleared(_) => "rollout_event".into(),
        other => {
            let mut snake = String::new();
            for (i, c) in other.kind().name().chars().enumerate() {
                if c.is_ascii_uppercase() && i > 0 {
                    snake.push('_');
                }
                snake.push(c.to_ascii_lowercase());
            }
            snake
        }
    }
}

/// A rollout's oldest `limit` entries, ascending, in nixfleet's shape: an unknown rollout
/// has none (200, as nixfleet answers). fleet-ledger's paged view is at
/// `/v1/ledger/rollouts/{id}/events`.
#[utoipa::path(get, path = "/v1/rollouts/{id}/events", tag = "operators",
    params(("id" = String, Path, description = "`channel@channelRef`"), Limit),
    responses((status = 200, body = RolloutEvents), (status = "4XX", body = ErrorBody)),
    security(("mtls" = []), ("bearer" = [])))]
pub(super) async fn events(
    State(state): State<AppState>,
    _: Reader,
    RolloutPath(id): RolloutPath,
    query: Result<Query<Limit>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<RolloutEvents>> {
    let Query(q) = query.map_err(|e| ApiError::new(ErrorCode::BadQuery, e.body_text()))?;
    let limit = usize::try_from(q.limit.unwrap_or(1000).max(1)).unwrap_or(usize::MAX);
    read(&state, move |snap| {
        let mut events = Vec::new();
        let Some(r) = projections::read::rollout(&snap, &id).map_err(ApiError::internal)? else {
            return Ok(Json(RolloutEvents {
                rollout_id: id.to_string(),
                events,
            }));
        };
        // The manifest entry precedes the opening; a pruned rollout's last entry is known.
        let start = r.opened_seq.saturating_sub(1);
        let last = if r.state == RolloutState::Pruned {
            r.last_transition_seq + 1
        } else {
            snap.size()
        };
        let end = last.min(start.saturating_add(EVENTS_SCAN_MAX));
        for stored in snap.rows(start..end).map_err(ApiError::internal)? {
            if events.len() >= limit {
                break;
            }
            let stored = stored.map_err(ApiError::internal)?;
            let Ok(entry) = stored.decode() else {
                continue;
            };
            let (rollout, host) = entry.event.subject();
            if rollout != Some(&id) {
                continue;
            }
            events.push(RolloutEvent {
                seq: entry.seq,
                ts: rfc3339(entry.at),
                kind: row_kind(&entry.event),
                host: host.map(str::to_string),
                payload: serde_json::to_value(&entry.event).unwrap_or(serde_json::Value::Null),
            });
        }
        Ok(Json(RolloutEvents {
            rollout_id: id.to_string(),
            events,
        }))
    })
    .await
}
