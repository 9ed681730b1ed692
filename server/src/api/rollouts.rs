//! Operators: rollouts and their hosts and events, deferrals, quarantine, clearance and lifts.

use super::*;

// ---------------------------------------------------------------------------------------
// Operators

pub(super) fn rollout_json(
    r: &projections::RolloutRecord,
    hosts: &[projections::HostRecord],
) -> Value {
    let states: BTreeMap<&str, String> = hosts
        .iter()
        .map(|h| (h.hostname.as_str(), format!("{:?}", h.state)))
        .collect();
    json!({
        "rolloutId": r.rollout_id.to_string(),
        "channel": r.rollout_id.channel,
        "state": format!("{:?}", r.state),
        "currentWave": r.current_wave,
        "createdAt": ts::format(r.opened_at),
        "openedSeq": r.opened_seq,
        "updatedSeq": r.updated_seq,
        "hostStates": states,
    })
}

pub(super) async fn list_rollouts(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<Value>> {
    caller.require(READERS)?;
    read(&state, |snap| {
        let mut out = Vec::new();
        for r in projections::read::rollouts(&snap).map_err(ApiError::internal)? {
            let hosts =
                projections::read::hosts_of(&snap, &r.rollout_id).map_err(ApiError::internal)?;
            out.push(rollout_json(&r, &hosts));
        }
        Ok(Json(json!({ "rollouts": out })))
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

pub(super) async fn get_rollout(
    State(state): State<AppState>,
    caller: Caller,
    RolloutPath(id): RolloutPath,
) -> ApiResult<Json<Value>> {
    caller.require(READERS)?;
    read(&state, move |snap| {
        let r = load_rollout(&snap, &id)?;
        let hosts = projections::read::hosts_of(&snap, &id).map_err(ApiError::internal)?;
        let mut v = rollout_json(&r, &hosts);
        v["manifestHash"] = json!(crate::auth::hex(&r.manifest_hash));
        Ok(Json(v))
    })
    .await
}

pub(super) async fn lifecycle(
    State(state): State<AppState>,
    caller: Caller,
    RolloutPath(id): RolloutPath,
) -> ApiResult<Json<Value>> {
    caller.require(READERS)?;
    read(&state, move |snap| {
        let r = load_rollout(&snap, &id)?;
        Ok(Json(json!({
            "rolloutId": r.rollout_id.to_string(),
            "state": format!("{:?}", r.state),
            "openedAt": ts::format(r.opened_at),
            "supersededAt": r.superseded_at.map(ts::format),
            "supersededBy": r.superseded_by.as_ref().map(ToString::to_string),
            "terminalAt": r.terminal_at.map(ts::format),
            "prunedAt": r.pruned_at.map(ts::format),
            "clearedBy": r.cleared_by.as_ref().map(|(op, why)| json!({"operator": op, "reason": why})),
            "lastTransitionSeq": r.last_transition_seq,
        })))
    })
    .await
}

pub(super) async fn rollout_hosts(
    State(state): State<AppState>,
    caller: Caller,
    RolloutPath(id): RolloutPath,
) -> ApiResult<Json<Value>> {
    caller.require(READERS)?;
    read(&state, move |snap| {
        load_rollout(&snap, &id)?;
        let mut hosts = projections::read::hosts_of(&snap, &id).map_err(ApiError::internal)?;
        hosts.sort_by(|a, b| (a.wave, &a.hostname).cmp(&(b.wave, &b.hostname)));
        let rows: Vec<Value> = hosts
            .iter()
            .map(|h| {
                let terminal_at = match h.state {
                    ledger::domain::HostState::Converged => h.converged_at,
                    ledger::domain::HostState::Failed => h.failed_at,
                    ledger::domain::HostState::Reverted => h.reverted_at,
                    _ => None,
                };
                json!({
                    "host": h.hostname,
                    "channel": h.rollout_id.channel,
                    "wave": h.wave,
                    "state": format!("{:?}", h.state),
                    "targetClosureHash": h.target_closure,
                    "targetChannelRef": h.rollout_id.channel_ref,
                    "dispatchedAt": h.dispatched_at.map(ts::format),
                    "terminalState": matches!(h.state, ledger::domain::HostState::Converged | ledger::domain::HostState::Failed | ledger::domain::HostState::Reverted).then(|| format!("{:?}", h.state).to_lowercase()),
                    "terminalAt": terminal_at.map(ts::format),
                    "lastEventSeq": h.last_event_seq,
                    "updatedSeq": h.updated_seq,
                })
            })
            .collect();
        Ok(Json(json!({"rolloutId": id.to_string(), "hosts": rows})))
    })
    .await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct EventsQuery {
    #[serde(default)]
    after: Option<u64>,
    #[serde(default)]
    limit: Option<usize>,
}

/// Entries scanned per page at most: a page ends early (with a cursor) rather than holding a
/// read for long on a sparse rollout.
pub(super) const EVENTS_SCAN_MAX: u64 = 200_000;

/// One entry as JSON: header fields and the decoded event.
pub fn entry_json(seq: u64, bytes: &[u8]) -> Value {
    let decoded = EntryRef::parse(bytes)
        .map_err(|e| e.to_string())
        .and_then(|e| {
            let event = e.event().map_err(|e| e.to_string())?;
            Ok((e.header.recorded_at_us, e.header.kind, event))
        });
    match decoded {
        Ok((at, kind, event)) => {
            let (rollout, host) = event.subject();
            json!({
                "seq": seq,
                "recordedAt": ts::format(at),
                "kind": kind.name(),
                "rolloutId": rollout.map(ToString::to_string),
                "host": host,
                "payload": serde_json::to_value(&event).unwrap_or(Value::Null),
            })
        }
        Err(e) => json!({"seq": seq, "_parse_error": e}),
    }
}

pub(super) async fn rollout_events(
    State(state): State<AppState>,
    caller: Caller,
    RolloutPath(id): RolloutPath,
    query: Result<Query<EventsQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Value>> {
    caller.require(READERS)?;
    let Query(q) = query.map_err(|e| ApiError::bad("bad-query", e.body_text()))?;
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
        snap.for_each_entry(start..end, |seq, bytes| {
            if events.len() >= limit {
                return Err(StopOr::Stop);
            }
            last = seq;
            if let Ok(e) = EntryRef::parse(bytes)
                && let Ok(event) = e.event()
                && event.subject().0 == Some(&id)
            {
                events.push(entry_json(seq, bytes));
            }
            Ok(())
        })
        .or_else(|e: StopOr| match e {
            StopOr::Stop => Ok(()),
            StopOr::Open(e) => Err(ApiError::internal(e)),
        })?;
        let complete = events.len() < limit && end == snap.size();
        let next = if complete {
            None
        } else if events.len() >= limit {
            events.last().and_then(|e| e["seq"].as_u64())
        } else {
            Some(last)
        };
        Ok(Json(json!({
            "rolloutId": id.to_string(),
            "events": events,
            "nextAfter": next,
        })))
    })
    .await
}

enum StopOr {
    Stop,
    Open(ledger::store::OpenError),
}
impl From<ledger::store::OpenError> for StopOr {
    fn from(e: ledger::store::OpenError) -> StopOr {
        StopOr::Open(e)
    }
}

pub(super) async fn deferrals(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<Value>> {
    caller.require(READERS)?;
    read(&state, |snap| {
        let rows: Vec<Value> = projections::read::deferrals(&snap)
            .map_err(ApiError::internal)?
            .into_iter()
            .map(|((r, h), d)| {
                json!({
                    "rolloutId": r.to_string(),
                    "host": h,
                    "gate": d.block.gate(),
                    "reason": d.block.reason(),
                    "since": ts::format(d.since),
                    "seq": d.updated_seq,
                })
            })
            .collect();
        Ok(Json(json!({ "deferrals": rows })))
    })
    .await
}

pub(super) async fn quarantine(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<Value>> {
    caller.require(READERS)?;
    read(&state, |snap| {
        let rows: Vec<Value> = projections::read::quarantine(&snap)
            .map_err(ApiError::internal)?
            .into_iter()
            .map(|((c, closure), q)| {
                json!({
                    "channel": c,
                    "closure": closure,
                    "rolloutId": q.rollout_id.to_string(),
                    "host": q.hostname,
                    "quarantinedAt": ts::format(q.quarantined_at),
                    "seq": q.created_seq,
                })
            })
            .collect();
        Ok(Json(json!({ "quarantine": rows })))
    })
    .await
}

pub(super) async fn clearance(
    State(state): State<AppState>,
    caller: Caller,
    RolloutPath(id): RolloutPath,
    body: JsonBody,
) -> ApiResult<Json<Value>> {
    let who = caller.require(&[Role::Operator])?.name.clone();
    let c: wire::Clearance = parse_body(body)?;
    if c.reason.trim().is_empty() {
        return Err(ApiError::bad(
            "reason-required",
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
        Answer::Recorded { seq, .. } => Ok(Json(json!({ "seq": seq }))),
        other => Err(unexpected(other)),
    }
}

pub(super) async fn lift(
    State(state): State<AppState>,
    caller: Caller,
    body: JsonBody,
) -> ApiResult<Json<Value>> {
    let who = caller.require(&[Role::Operator])?.name.clone();
    let l: wire::Lift = parse_body(body)?;
    if l.reason.trim().is_empty() {
        return Err(ApiError::bad("reason-required", "a lift needs a reason"));
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
        Answer::Recorded { seq, .. } => Ok(Json(json!({ "seq": seq }))),
        other => Err(unexpected(other)),
    }
}
