//! Agents: events, heartbeats, the dispatch long poll.

use super::ErrorCode;
use super::caller::Agent;
use super::{
    ApiError, ApiResult, AppState, ErrorBody, JsonBody, parse_body, read, rollout_id, submit,
    unexpected,
};
use axum::Json;
use axum::extract::{Query, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use engine::writer::{Answer, Input};
use serde::{Deserialize, Serialize};
use std::time::Duration;
use wire;
use wire::ts;

// ---------------------------------------------------------------------------------------
// Agents

/// The answer to an agent's report, once durable.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct EventAnswer {
    /// Seq of the report's first entry (of the original entry, for a retransmit).
    seq: u64,
    /// Entries recorded for it (absent for a retransmit).
    #[serde(skip_serializing_if = "Option::is_none")]
    entries: Option<u64>,
    /// A retransmit of the report recorded at `seq`.
    duplicate: bool,
    /// A well-formed report the ledger's state does not allow: recorded as
    /// `AgentReportRefused` with this code and reason, and answered 200 so a nixfleet agent's
    /// queue moves on.
    #[serde(skip_serializing_if = "Option::is_none")]
    refused: Option<ErrorBody>,
}

/// An agent's report (one of nixfleet's twelve event kinds).
#[utoipa::path(post, path = "/v1/agent/events", tag = "agents",
    request_body = wire::AgentEnvelope,
    responses(
        (status = 200, body = EventAnswer, description = "durably recorded (accepted, a retransmit, or refused with why)"),
        (status = "4XX", body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("mtls" = []), ("bearer" = [])))]
pub(super) async fn agent_event(
    State(state): State<AppState>,
    agent: Agent,
    body: JsonBody,
) -> ApiResult<Json<EventAnswer>> {
    let env: wire::AgentEnvelope = parse_body(body)?;
    let host = agent.for_host(&env.hostname)?;
    let rollout = rollout_id(&env.rollout_id)?;
    let (agent_seq, report) = env
        .report()
        .map_err(|e| ApiError::new(ErrorCode::MalformedEvent, e))?;
    let out = submit(
        &state,
        Input::Report {
            host,
            rollout,
            agent_seq,
            report,
        },
    )
    .await?;
    match out {
        Answer::Recorded { seq, entries } => Ok(Json(EventAnswer {
            seq,
            entries: Some(entries),
            duplicate: false,
            refused: None,
        })),
        Answer::Duplicate { seq } => Ok(Json(EventAnswer {
            seq,
            entries: None,
            duplicate: true,
            refused: None,
        })),
        // 2xx: the report is durably recorded, as refused. A nixfleet agent retries any
        // other answer forever (DECISIONS 75).
        Answer::Refused { seq, refusal } => Ok(Json(EventAnswer {
            seq,
            entries: None,
            duplicate: false,
            refused: Some(ErrorBody {
                error: refusal.code().to_string(),
                reason: refusal.to_string(),
            }),
        })),
        other => Err(unexpected(other)),
    }
}

/// The answer to a heartbeat (snake_case, as nixfleet's).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct HeartbeatAnswer {
    /// The heartbeat's own `at`, echoed as nixfleet's CP does.
    received_at: String,
    /// Seq of the first report the heartbeat implied, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    synthesized_seq: Option<u64>,
    /// The host's dispatched records in its active rollouts, when the heartbeat named no
    /// rollout (nixfleet v0.2 agents never name one), for the agent to bootstrap from.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    bootstrap_rollouts: Vec<wire::HostSnapshot>,
}

/// A heartbeat: may imply reports the agent has not sent (recorded as synthesized).
#[utoipa::path(post, path = "/v1/agent/heartbeat", tag = "agents",
    request_body = wire::Heartbeat,
    responses(
        (status = 200, body = HeartbeatAnswer, headers(("x-nixfleet-replay-from" = u64,
            description = "the last accepted agent seq, when the CP's view of a named rollout's closure differs"))),
        (status = "4XX", body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("mtls" = []), ("bearer" = [])))]
pub(super) async fn heartbeat(
    State(state): State<AppState>,
    agent: Agent,
    body: JsonBody,
) -> ApiResult<Response> {
    let hb: wire::Heartbeat = parse_body(body)?;
    let host = agent.for_host(&hb.hostname)?;
    let at = hb.at;
    let rollout = hb.rollout_id.as_deref().map(rollout_id).transpose()?;
    let out = submit(
        &state,
        Input::Heartbeat {
            host,
            rollout,
            current_closure: hb.current_closure,
            at: hb.at,
        },
    )
    .await?;
    let Answer::Heartbeat {
        synthesized,
        bootstrap,
        replay_from,
    } = out
    else {
        return Err(unexpected(out));
    };
    // nixfleet's CP echoes the heartbeat's own time.
    let body = HeartbeatAnswer {
        received_at: ts::format(at),
        synthesized_seq: synthesized,
        bootstrap_rollouts: bootstrap
            .iter()
            .flatten()
            .filter_map(wire::HostSnapshot::of)
            .collect(),
    };
    let mut resp = Json(body).into_response();
    if let Some(from) = replay_from {
        // nixfleet's CP sends the record's last accepted agent seq (its comment says "+ 1",
        // its code does not; its agents only log the header): DECISIONS 76.
        let last = from.saturating_sub(1);
        resp.headers_mut().insert(
            "x-nixfleet-replay-from",
            HeaderValue::from_str(&last.to_string()).expect("digits"),
        );
    }
    Ok(resp)
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct DispatchQuery {
    /// Seconds to wait for a dispatch (at most, and by default, `limits.long_poll_secs`).
    #[serde(default)]
    wait: Option<u64>,
}

/// The long poll: the host's oldest queued dispatch, now delivered, or 204 after `wait`.
#[utoipa::path(get, path = "/v1/agent/dispatch", tag = "agents", params(DispatchQuery),
    responses(
        (status = 200, body = wire::Dispatch),
        (status = 204, description = "nothing to do within `wait`"),
        (status = "4XX", body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("mtls" = []), ("bearer" = [])))]
pub(super) async fn dispatch(
    State(state): State<AppState>,
    agent: Agent,
    query: Result<Query<DispatchQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Response> {
    let Query(q) = query.map_err(|e| ApiError::new(ErrorCode::BadQuery, e.body_text()))?;
    let host = agent.host()?;
    // nixfleet's default is the whole bound (its agents always send `wait=60`).
    let bound = state.limits.long_poll_secs;
    let wait = Duration::from_secs(q.wait.unwrap_or(bound).min(bound));
    let deadline = tokio::time::Instant::now() + wait;
    let mut committed = state.shared.committed.subscribe();
    loop {
        // Ask the writer only when a committed snapshot shows something queued for us, so
        // idle long polls cost the writer nothing.
        let h = host.clone();
        let queued = read(&state, move |snap| {
            projections::read::dispatches_for(&snap, &h).map_err(ApiError::internal)
        })
        .await?;
        if !queued.is_empty()
            && let Answer::Dispatch(Some(d)) =
                submit(&state, Input::TakeDispatch { host: host.clone() }).await?
        {
            return Ok(Json(wire::Dispatch::of(d)).into_response());
        }
        committed.mark_unchanged();
        if tokio::time::timeout_at(deadline, committed.changed())
            .await
            .is_err()
        {
            return Ok(StatusCode::NO_CONTENT.into_response());
        }
    }
}
