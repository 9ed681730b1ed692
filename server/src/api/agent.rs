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
    let mut body = json!({"received_at": ts::format((state.clock)())});
    if let Some(seq) = synthesized {
        body["synthesized_seq"] = json!(seq);
    }
    if let Some(records) = bootstrap {
        let snapshots: Vec<_> = records.iter().map(wire::HostSnapshot::of).collect();
        body["bootstrap_rollouts"] = json!(snapshots);
    }
    let mut resp = Json(body).into_response();
    if let Some(seq) = replay_from {
        resp.headers_mut().insert(
            "x-fleet-replay-from",
            HeaderValue::from_str(&seq.to_string()).expect("digits"),
        );
    }
    Ok(resp)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
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
    let wait = Duration::from_secs(q.wait.unwrap_or(0).min(state.limits.long_poll_secs));
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
