//! Agents: events, heartbeats, the dispatch long poll.

use super::*;

// ---------------------------------------------------------------------------------------
// Agents

pub(super) async fn agent_event(
    State(state): State<AppState>,
    caller: Caller,
    body: JsonBody,
) -> ApiResult<Json<Value>> {
    caller.require(&[Role::Agent])?;
    let env: wire::AgentEnvelope = parse_body(body)?;
    let host = caller.agent_for(&env.hostname)?;
    let rollout = rollout_id(&env.rollout_id)?;
    let (agent_seq, report) = env
        .report()
        .map_err(|e| ApiError::bad("malformed-event", e))?;
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
        Answer::Recorded { seq, entries } => Ok(Json(
            json!({"seq": seq, "entries": entries, "duplicate": false}),
        )),
        Answer::Duplicate { seq } => Ok(Json(json!({"seq": seq, "duplicate": true}))),
        // 2xx: the report is durably recorded, as refused. A nixfleet agent retries any
        // other answer forever (DECISIONS 75).
        Answer::Refused { seq, refusal } => Ok(Json(json!({
            "seq": seq,
            "duplicate": false,
            "refused": {"error": refusal.code(), "reason": refusal.to_string()},
        }))),
        other => Err(unexpected(other)),
    }
}

pub(super) async fn heartbeat(
    State(state): State<AppState>,
    caller: Caller,
    body: JsonBody,
) -> ApiResult<Response> {
    caller.require(&[Role::Agent])?;
    let hb: wire::Heartbeat = parse_body(body)?;
    let host = caller.agent_for(&hb.hostname)?;
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
    let mut body = json!({"received_at": ts::format(at)});
    if let Some(seq) = synthesized {
        body["synthesized_seq"] = json!(seq);
    }
    let snapshots: Vec<_> = bootstrap
        .iter()
        .flatten()
        .filter_map(wire::HostSnapshot::of)
        .collect();
    if !snapshots.is_empty() {
        body["bootstrap_rollouts"] = json!(snapshots);
    }
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

#[derive(Debug, Deserialize)]
pub(super) struct DispatchQuery {
    #[serde(default)]
    wait: Option<u64>,
}

pub(super) async fn dispatch(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<DispatchQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Response> {
    caller.require(&[Role::Agent])?;
    let Query(q) = query.map_err(|e| ApiError::bad("bad-query", e.body_text()))?;
    let host = caller.host()?;
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
