//! The HTTP API (axum). Handlers authenticate, validate, and either read a committed redb
//! snapshot (MVCC: never blocking the writer) or queue an input for the writer and wait for
//! its answer, which comes only after the batch holding it is durable.
//!
//! Every error has one shape: `{"error": code, "reason": text}` (plus fields some codes add).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use ledger::domain::RolloutId;
use ledger::entry::EntryRef;
use ledger::store::Snapshot;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};

use crate::auth::{Principal, Role, TokenTable};
use crate::config::Limits;
use crate::connections::Peer;
use crate::intake::{self, Target, TrustRoots};
use crate::wire::{self, ts};
use crate::writer::{Class, Input, Job, Output, Refusal, Shared};

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    /// The daemon's clock (the writer's), for what handlers time-stamp or check freshness
    /// against.
    pub clock: crate::writer::Clock,
    /// The writer's queue.
    pub tx: mpsc::Sender<Job>,
    /// Readers and metrics.
    pub shared: Arc<Shared>,
    /// Tokens.
    pub tokens: Arc<TokenTable>,
    /// Manifest trust.
    pub trust: Arc<TrustRoots>,
    /// Limits.
    pub limits: Limits,
    /// Stripped from client-certificate CNs to get host names.
    pub cn_suffix: Option<String>,
}

/// An API error.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    reason: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, reason: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            reason: reason.into(),
        }
    }
    fn bad(code: &'static str, reason: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, code, reason)
    }
    fn not_found(reason: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not-found", reason)
    }
    fn unavailable(code: &'static str, reason: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, code, reason)
    }
    fn internal(reason: impl std::fmt::Display) -> ApiError {
        tracing::error!(%reason, "internal error");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            reason.to_string(),
        )
    }
}

impl From<Refusal> for ApiError {
    fn from(r: Refusal) -> ApiError {
        let status = match r.class {
            Class::NotFound => StatusCode::NOT_FOUND,
            Class::Conflict => StatusCode::CONFLICT,
            Class::Unprocessable => StatusCode::UNPROCESSABLE_ENTITY,
            Class::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        };
        ApiError::new(status, r.code, r.reason)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (
            self.status,
            Json(json!({"error": self.code, "reason": self.reason})),
        )
            .into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        resp
    }
}

type ApiResult<T> = Result<T, ApiError>;

/// The authenticated caller (`Authorization: Bearer <token>`).
#[derive(Debug)]
pub struct Caller(pub Principal);

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> ApiResult<Caller> {
        let peer = parts
            .extensions
            .get::<axum::extract::ConnectInfo<Peer>>()
            .map(|p| &p.0);
        let caller = authenticate(parts, peer, state)?;
        // An authenticated connection is never closed to make room for a new one.
        if let Some(p) = peer {
            p.mark_trusted();
        }
        Ok(caller)
    }
}

fn authenticate(parts: &Parts, peer: Option<&Peer>, state: &AppState) -> ApiResult<Caller> {
    let unauthorized =
        |why: &str| ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", why.to_string());
    let Some(value) = parts.headers.get(header::AUTHORIZATION) else {
        // No token: an agent may be identified by its verified client certificate.
        let cn = peer.and_then(|p| p.cn.clone()).ok_or_else(|| {
            unauthorized("missing Authorization: Bearer <token> (or a client certificate)")
        })?;
        let host = match &state.cn_suffix {
            Some(suffix) => cn.strip_suffix(suffix.as_str()).ok_or_else(|| {
                unauthorized(&format!(
                    "client certificate CN {cn:?} does not end in {suffix:?}"
                ))
            })?,
            None => cn.as_str(),
        };
        ledger::domain::check_host(host).map_err(|e| unauthorized(&e.to_string()))?;
        return Ok(Caller(Principal {
            role: Role::Agent,
            name: host.to_string(),
        }));
    };
    let token = value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| unauthorized("Authorization is not `Bearer <token>`"))?;
    state
        .tokens
        .authenticate(token.trim())
        .cloned()
        .map(Caller)
        .ok_or_else(|| unauthorized("unknown token"))
}

impl Caller {
    fn require(&self, roles: &[Role]) -> ApiResult<&Principal> {
        if roles.contains(&self.0.role) {
            Ok(&self.0)
        } else {
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!(
                    "{} {:?} may not use this route (needs one of {roles:?})",
                    self.0.name, self.0.role
                ),
            ))
        }
    }

    /// An agent acting for `hostname`, which must be itself.
    fn agent_for(&self, hostname: &str) -> ApiResult<()> {
        self.require(&[Role::Agent])?;
        if self.0.name != hostname {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "wrong-host",
                format!("agent {} may not post for host {hostname:?}", self.0.name),
            ));
        }
        Ok(())
    }
}

const READERS: &[Role] = &[Role::Operator, Role::Auditor];

/// A request body that must be JSON: `Content-Type: application/json` (any parameters, such
/// as a charset, allowed), at most `limits.body_bytes`, read whole. Refusals are the API's
/// errors: 415 without the header, 413 when too large, 400 when the body cannot be read.
struct JsonBody(Bytes);

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = ApiError;
    async fn from_request(req: axum::extract::Request, state: &S) -> ApiResult<JsonBody> {
        let content_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let essence = content_type.split(';').next().unwrap_or("").trim();
        if !essence.eq_ignore_ascii_case("application/json") {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                if content_type.is_empty() {
                    "the body must be JSON with Content-Type: application/json (none was given)"
                        .to_string()
                } else {
                    format!(
                        "the body must be JSON with Content-Type: application/json, not {content_type:?}"
                    )
                },
            ));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "body-too-large",
                    e.body_text(),
                )
            } else {
                ApiError::bad("bad-body", e.body_text())
            }
        })?;
        Ok(JsonBody(bytes))
    }
}

fn parse_body<T: DeserializeOwned>(body: JsonBody) -> ApiResult<T> {
    serde_json::from_slice(&body.0).map_err(|e| ApiError::bad("malformed-json", e.to_string()))
}

/// The `{id}` of a rollout route: percent-decoded and shape-checked, refused as the API's
/// error (axum's own rejection is a text/plain 400).
struct RolloutPath(RolloutId);

impl<S: Send + Sync> FromRequestParts<S> for RolloutPath {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> ApiResult<RolloutPath> {
        let Path(id) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::bad("malformed-path", e.body_text()))?;
        rollout_id(&id).map(RolloutPath)
    }
}

fn rollout_id(text: &str) -> ApiResult<RolloutId> {
    RolloutId::parse(text).map_err(|e| ApiError::bad("malformed-rollout-id", e.to_string()))
}

/// Queues an input and waits for the writer's answer (sent after the commit).
async fn submit(state: &AppState, input: Input) -> ApiResult<Output> {
    let (reply, rx) = oneshot::channel();
    let m = &state.shared.metrics;
    match state.tx.try_send(Job { input, reply }) {
        Ok(()) => {}
        Err(mpsc::error::TrySendError::Full(_)) => {
            m.queue_full.inc();
            m.reject("queue-full");
            return Err(ApiError::unavailable(
                "queue-full",
                "the writer queue is full; retry after the Retry-After delay",
            ));
        }
        Err(mpsc::error::TrySendError::Closed(_)) => {
            return Err(ApiError::unavailable(
                "shutting-down",
                "the daemon is shutting down",
            ));
        }
    }
    m.queue_depth
        .set((state.tx.max_capacity() - state.tx.capacity()) as i64);
    match rx.await {
        Ok(answer) => answer.map_err(ApiError::from),
        Err(_) => Err(ApiError::unavailable(
            "writer-gone",
            "the writer stopped before answering; the input may not be recorded: retry",
        )),
    }
}

/// The writer answered an input with an output of another kind (a bug, not bad input).
fn unexpected(out: Output) -> ApiError {
    ApiError::internal(format!("unexpected writer answer {out:?}"))
}

fn snapshot(state: &AppState) -> ApiResult<Snapshot> {
    let guard = state
        .shared
        .reader
        .read()
        .unwrap_or_else(|p| p.into_inner());
    let reader = guard
        .as_ref()
        .ok_or_else(|| ApiError::unavailable("reopening", "the ledger is being reopened"))?;
    reader.snapshot().map_err(ApiError::internal)
}

/// Runs a blocking read (redb) off the async workers.
async fn read<T: Send + 'static>(
    state: &AppState,
    f: impl FnOnce(Snapshot) -> ApiResult<T> + Send + 'static,
) -> ApiResult<T> {
    let state = state.clone();
    tokio::task::spawn_blocking(move || f(snapshot(&state)?))
        .await
        .map_err(ApiError::internal)?
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("limits", &self.limits)
            .field("cn_suffix", &self.cn_suffix)
            .finish_non_exhaustive()
    }
}

// ---------------------------------------------------------------------------------------
// Agents

async fn agent_event(
    State(state): State<AppState>,
    caller: Caller,
    body: JsonBody,
) -> ApiResult<Json<Value>> {
    caller.require(&[Role::Agent])?;
    let env: wire::AgentEnvelope = parse_body(body)?;
    caller.agent_for(&env.hostname)?;
    let rollout = rollout_id(&env.rollout_id)?;
    let (agent_seq, report) = env
        .report()
        .map_err(|e| ApiError::bad("malformed-event", e))?;
    let out = submit(
        &state,
        Input::Agent {
            host: env.hostname,
            rollout,
            agent_seq,
            report,
        },
    )
    .await?;
    match out {
        Output::Recorded { seq, entries } => Ok(Json(
            json!({"seq": seq, "entries": entries, "duplicate": false}),
        )),
        Output::Duplicate { seq } => Ok(Json(json!({"seq": seq, "duplicate": true}))),
        other => Err(unexpected(other)),
    }
}

async fn heartbeat(
    State(state): State<AppState>,
    caller: Caller,
    body: JsonBody,
) -> ApiResult<Response> {
    caller.require(&[Role::Agent])?;
    let hb: wire::Heartbeat = parse_body(body)?;
    caller.agent_for(&hb.hostname)?;
    let rollout = hb.rollout_id.as_deref().map(rollout_id).transpose()?;
    let out = submit(
        &state,
        Input::Heartbeat {
            host: hb.hostname,
            rollout,
            current_closure: hb.current_closure,
            at: hb.at,
        },
    )
    .await?;
    let Output::Heartbeat {
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
    if let Some(b) = bootstrap {
        body["bootstrap_rollouts"] = json!(b);
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
struct DispatchQuery {
    #[serde(default)]
    wait: Option<u64>,
}

async fn dispatch(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<DispatchQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Response> {
    caller.require(&[Role::Agent])?;
    let Query(q) = query.map_err(|e| ApiError::bad("bad-query", e.body_text()))?;
    let host = caller.0.name.clone();
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
            && let Output::Dispatch(Some(d)) =
                submit(&state, Input::TakeDispatch { host: host.clone() }).await?
        {
            return Ok(Json(d).into_response());
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

// ---------------------------------------------------------------------------------------
// Manifests

async fn post_manifest(state: &AppState, target: Target, body: JsonBody) -> ApiResult<Json<Value>> {
    let signed: wire::SignedManifest = parse_body(body)?;
    let verified = match intake::verify(
        &target,
        &signed.artifact,
        &signed.signature,
        &state.trust,
        (state.clock)(),
    ) {
        Ok(v) => v,
        Err(e) => {
            state.shared.metrics.reject(e.code());
            return Err(Refusal::from(e).into());
        }
    };
    let hash = crate::auth::hex(&verified.content_hash);
    match submit(
        state,
        Input::Manifest {
            target,
            verified: Box::new(verified),
        },
    )
    .await?
    {
        Output::Recorded { seq, .. } => Ok(Json(
            json!({"seq": seq, "content_hash": hash, "duplicate": false}),
        )),
        Output::Duplicate { seq } => Ok(Json(
            json!({"seq": seq, "content_hash": hash, "duplicate": true}),
        )),
        other => Err(unexpected(other)),
    }
}

async fn post_fleet(
    State(state): State<AppState>,
    caller: Caller,
    body: JsonBody,
) -> ApiResult<Json<Value>> {
    caller.require(&[Role::Ci, Role::Operator])?;
    post_manifest(&state, Target::Fleet, body).await
}

async fn post_rollout_manifest(
    State(state): State<AppState>,
    caller: Caller,
    RolloutPath(id): RolloutPath,
    body: JsonBody,
) -> ApiResult<Json<Value>> {
    caller.require(&[Role::Ci, Role::Operator])?;
    post_manifest(&state, Target::Rollout(id), body).await
}

// ---------------------------------------------------------------------------------------
// Operators

fn rollout_json(r: &projections::RolloutRecord, hosts: &[projections::HostRecord]) -> Value {
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

async fn list_rollouts(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Value>> {
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

fn load_rollout(snap: &Snapshot, id: &RolloutId) -> ApiResult<projections::RolloutRecord> {
    projections::read::rollout(snap, id)
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::not_found(format!("no rollout {id}")))
}

async fn get_rollout(
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

async fn lifecycle(
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

async fn rollout_hosts(
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
struct EventsQuery {
    #[serde(default)]
    after: Option<u64>,
    #[serde(default)]
    limit: Option<usize>,
}

/// Entries scanned per page at most: a page ends early (with a cursor) rather than holding a
/// read for long on a sparse rollout.
const EVENTS_SCAN_MAX: u64 = 200_000;

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

async fn rollout_events(
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

async fn deferrals(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Value>> {
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

async fn quarantine(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Value>> {
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

async fn clearance(
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
        Output::Recorded { seq, .. } => Ok(Json(json!({ "seq": seq }))),
        other => Err(unexpected(other)),
    }
}

async fn lift(
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
        Output::Recorded { seq, .. } => Ok(Json(json!({ "seq": seq }))),
        other => Err(unexpected(other)),
    }
}

// ---------------------------------------------------------------------------------------
// Auditors

async fn checkpoint(State(state): State<AppState>, caller: Caller) -> ApiResult<Response> {
    caller.require(READERS)?;
    let note = read(&state, |snap| {
        snap.latest_checkpoint()
            .map_err(ApiError::internal)?
            .map(|(_, note)| note)
            .ok_or_else(|| ApiError::not_found("no checkpoint yet"))
    })
    .await?;
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], note).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RangeQuery {
    from: u64,
    to: Option<u64>,
}

/// Streams blocking-produced chunks as a response body.
fn stream_body(
    state: &AppState,
    content_type: &'static str,
    produce: impl FnOnce(Snapshot, &mut ChunkWriter) -> Result<(), String> + Send + 'static,
) -> ApiResult<Response> {
    let snap = snapshot(state)?;
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(16);
    tokio::task::spawn_blocking(move || {
        let mut w = ChunkWriter {
            tx,
            buf: Vec::with_capacity(CHUNK),
        };
        let result = produce(snap, &mut w).and_then(|()| w.flush_chunk());
        if let Err(e) = result {
            // The status line is gone already: cut the stream so the client sees an error.
            let _ = w.tx.blocking_send(Err(std::io::Error::other(e)));
        }
    });
    let stream = tokio_stream(rx);
    Ok((
        [(header::CONTENT_TYPE, content_type)],
        Body::from_stream(stream),
    )
        .into_response())
}

const CHUNK: usize = 64 * 1024;

/// A `Write` that sends 64 KiB chunks to the response body.
#[derive(Debug)]
pub struct ChunkWriter {
    tx: mpsc::Sender<Result<Bytes, std::io::Error>>,
    buf: Vec<u8>,
}

impl ChunkWriter {
    fn flush_chunk(&mut self) -> Result<(), String> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| "client went away".to_string())
    }
}

impl std::io::Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.flush_chunk().map_err(std::io::Error::other)?;
        }
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn tokio_stream(
    mut rx: mpsc::Receiver<Result<Bytes, std::io::Error>>,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

async fn entries(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<RangeQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Response> {
    caller.require(READERS)?;
    let Query(q) = query.map_err(|e| ApiError::bad("bad-query", e.body_text()))?;
    stream_body(&state, "application/octet-stream", move |snap, w| {
        use std::io::Write as _;
        let to = q.to.unwrap_or(snap.size()).min(snap.size());
        snap.for_each_entry(q.from..to, |_, bytes| {
            // Framing: u32 big-endian length, then the entry's stored bytes (FORMAT.md §9).
            let len = u32::try_from(bytes.len()).expect("entries are far below 4 GiB");
            w.write_all(&len.to_be_bytes())
                .and_then(|()| w.write_all(bytes))
                .map_err(|e| Stream(e.to_string()))
        })
        .map_err(|e: Stream| e.0)
    })
}

struct Stream(String);
impl From<ledger::store::OpenError> for Stream {
    fn from(e: ledger::store::OpenError) -> Stream {
        Stream(e.to_string())
    }
}

async fn export(State(state): State<AppState>, caller: Caller) -> ApiResult<Response> {
    caller.require(READERS)?;
    stream_body(&state, "application/octet-stream", |snap, w| {
        snap.export(w, |_| {})
            .map(|_| ())
            .map_err(|e| e.to_string())
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InclusionQuery {
    seq: u64,
    #[serde(default)]
    size: Option<u64>,
}

/// Answers a proof request from a snapshot: the proof file, or 422 saying why not.
async fn proof(
    state: &AppState,
    make: impl FnOnce(&Snapshot) -> Result<String, ledger::store::ProofError> + Send + 'static,
) -> ApiResult<Response> {
    let text = read(state, move |snap| {
        make(&snap).map_err(|e| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "bad-proof-request",
                e.to_string(),
            )
        })
    })
    .await?;
    Ok(([(header::CONTENT_TYPE, "application/json")], text).into_response())
}

async fn proof_inclusion(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<InclusionQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Response> {
    caller.require(READERS)?;
    let Query(q) = query.map_err(|e| ApiError::bad("bad-query", e.body_text()))?;
    proof(&state, move |snap| {
        Ok(snap.inclusion_proof(q.seq, q.size)?.to_json())
    })
    .await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConsistencyQuery {
    from: u64,
    to: u64,
}

async fn proof_consistency(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<ConsistencyQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Response> {
    caller.require(READERS)?;
    let Query(q) = query.map_err(|e| ApiError::bad("bad-query", e.body_text()))?;
    proof(&state, move |snap| {
        Ok(snap.consistency_proof(q.from, q.to)?.to_json())
    })
    .await
}

// ---------------------------------------------------------------------------------------
// Health and metrics

async fn healthz(State(state): State<AppState>) -> Response {
    let up = state
        .shared
        .reader
        .read()
        .map(|r| r.is_some())
        .unwrap_or(false);
    if up && !state.tx.is_closed() {
        (StatusCode::OK, "ok\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "writer unavailable\n").into_response()
    }
}

async fn metrics(State(state): State<AppState>, caller: Caller) -> ApiResult<Response> {
    caller.require(READERS)?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.shared.metrics.render(),
    )
        .into_response())
}

async fn fallback() -> ApiError {
    ApiError::not_found("no such route")
}

async fn method_not_allowed(method: axum::http::Method) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        format!("{method} is not allowed on this route"),
    )
}

/// The longest path and query the API reads. Every route's URI is short (ids, a few query
/// numbers); a longer one is refused before routing, as the API's error. (hyper's own parser
/// answers a bare 414 for URIs over 64 KiB, before any of this code runs.)
const URI_BYTES_MAX: usize = 8 * 1024;

async fn uri_limit(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let len = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
    if len > URI_BYTES_MAX {
        return ApiError::new(
            StatusCode::URI_TOO_LONG,
            "uri-too-long",
            format!("the request URI is {len} bytes; at most {URI_BYTES_MAX} are read"),
        )
        .into_response();
    }
    next.run(req).await
}

/// The router with its limits: body size, concurrency (503 beyond it), request timeouts
/// (long polls get their cap plus the normal timeout).
pub fn router(state: AppState) -> Router {
    use tower::ServiceBuilder;
    let limits = state.limits.clone();
    let timeout = Duration::from_secs(limits.request_timeout_secs);
    let overload = |e: tower::BoxError| async move {
        if e.is::<tower::load_shed::error::Overloaded>() {
            ApiError::unavailable("overloaded", "too many requests in progress; retry")
                .into_response()
        } else if e.is::<tower::timeout::error::Elapsed>() {
            ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "timeout",
                "the request took too long",
            )
            .into_response()
        } else {
            ApiError::internal(e).into_response()
        }
    };
    let long_poll = Router::new()
        .route("/v1/agent/dispatch", get(dispatch))
        .layer(
            ServiceBuilder::new()
                .layer(axum::error_handling::HandleErrorLayer::new(overload))
                .timeout(timeout + Duration::from_secs(limits.long_poll_secs)),
        );
    let rest = Router::new()
        .route("/v1/agent/events", post(agent_event))
        .route("/v1/agent/heartbeat", post(heartbeat))
        .route("/v1/manifests/fleet", post(post_fleet))
        .route("/v1/manifests/rollouts/{id}", post(post_rollout_manifest))
        .route("/v1/rollouts", get(list_rollouts))
        .route("/v1/rollouts/{id}", get(get_rollout))
        .route("/v1/rollouts/{id}/lifecycle", get(lifecycle))
        .route("/v1/rollouts/{id}/hosts", get(rollout_hosts))
        .route("/v1/rollouts/{id}/events", get(rollout_events))
        .route("/v1/rollouts/{id}/clearance", post(clearance))
        .route("/v1/deferrals", get(deferrals))
        .route("/v1/quarantine", get(quarantine))
        .route("/v1/quarantine/lift", post(lift))
        .route("/v1/ledger/checkpoint", get(checkpoint))
        .route("/v1/ledger/proof/inclusion", get(proof_inclusion))
        .route("/v1/ledger/proof/consistency", get(proof_consistency))
        .route("/metrics", get(metrics))
        .layer(
            ServiceBuilder::new()
                .layer(axum::error_handling::HandleErrorLayer::new(overload))
                .timeout(timeout),
        );
    // Streams run as long as the client reads; they are bounded by the body, not a timer.
    let streams = Router::new()
        .route("/v1/ledger/entries", get(entries))
        .route("/v1/ledger/export", get(export));
    Router::new()
        .merge(long_poll)
        .merge(rest)
        .merge(streams)
        .route("/healthz", get(healthz))
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(fallback)
        .layer(axum::middleware::from_fn(uri_limit))
        .layer(
            ServiceBuilder::new()
                .layer(axum::error_handling::HandleErrorLayer::new(overload))
                .load_shed()
                .concurrency_limit(limits.concurrent_requests)
                .layer(axum::extract::DefaultBodyLimit::max(limits.body_bytes))
                .layer(
                    tower_http::trace::TraceLayer::new_for_http().make_span_with(
                        |req: &axum::http::Request<Body>| {
                            tracing::info_span!("request", method = %req.method(), path = %req.uri().path())
                        },
                    ),
                ),
        )
        .with_state(state)
}
