//! The HTTP API (axum). Handlers authenticate, validate, and either read a committed redb
//! snapshot (MVCC: never blocking the writer) or queue an input for the writer and wait for
//! its answer, which comes only after the batch holding it is durable.
//!
//! Every error has one shape: `{"error": code, "reason": text}` (plus fields some codes add).
//!
//! The rooms: `error` (the one error shape), `caller` (authentication and the extractors),
//! `agent` (events, heartbeats, dispatch), `manifests` (CI's signed artifacts), `rollouts`
//! (what operators read and do), `identity` (enrollment and renewal), `audit` (what auditors read: checkpoints, entries, proofs,
//! exports); this file holds what they share, health and metrics, and the router.

mod agent;
mod audit;
mod caller;
pub mod closure;
mod error;
mod identity;
mod manifests;
mod nixfleet_rollouts;
mod openapi;
mod operators;
mod published;
pub mod replica;
mod rollouts;
mod rotation;
mod unread;

pub use caller::{Caller, machine_id};
pub use error::{ApiError, ErrorBody, ErrorCode};
pub use openapi::ApiDoc;
pub use rollouts::entry_json;

use agent::{agent_event, dispatch, heartbeat};
use audit::{
    batches, checkpoint, checkpoint_witnessed, entries, export, proof_consistency, proof_inclusion,
};
use caller::Reader;
use caller::{JsonBody, RolloutPath, parse_body};
use error::ApiResult;
use identity::{enroll, renew};
use manifests::{post_fleet, post_rollout_manifest};
use operators::{channel, hosts, whoami};
use published::{fleet_resolved, fleet_resolved_sig, rollout_manifest, rollout_manifest_sig};
use rollouts::{
    clearance, deferrals, get_rollout, lifecycle, lift, list_rollouts, quarantine, rollout_events,
    rollout_hosts,
};
use rotation::{reload, rotate_key};

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use ledger::domain::RolloutId;
use ledger::store::Snapshot;
use tokio::sync::{mpsc, oneshot};

use crate::config::Limits;
use crate::connections::Peer;
use engine::writer::{Answer, Input, Job, Shared, Work};

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    /// The daemon's clock (the writer's), for what handlers time-stamp or check freshness
    /// against.
    pub clock: engine::writer::Clock,
    /// The writer's queue.
    pub tx: mpsc::Sender<Work>,
    /// Readers and metrics.
    pub shared: Arc<Shared>,
    /// Tokens and CI keys in force (swapped by a reload).
    pub access: crate::access::AccessCell,
    /// Re-reads the config (`POST /v1/admin/reload`).
    pub reloader: Arc<crate::reload::Reloader>,
    /// Request sizes, counts and rates.
    pub limits: Limits,
    /// Stripped from client-certificate CNs to get host names.
    pub cn_suffix: Option<String>,
    /// Which client certificates are operators' (a reader's rights).
    pub operators: Arc<crate::tls::OperatorRule>,
    /// The fleet CA (enrollment and renewal), when configured.
    pub enrollment: Option<Arc<crate::enrollment::Authority>>,
    /// What must be in force before agents are served, besides a fleet.
    pub readiness: Readiness,
    /// nixfleet's closure proxy, when `closure_upstream` is set.
    pub closure: Option<Arc<closure::ClosureProxy>>,
    /// nixfleet's `--strict` (config `strict`): `X-Nixfleet-Protocol` required.
    pub strict: bool,
    /// Whether this node leads (failover: elected, its lease alive; a single node: always).
    /// `GET /healthz/leader` answers 200 only while it does and the writer is not fenced.
    pub leader: Arc<std::sync::atomic::AtomicBool>,
    /// On a failover writer: notified when a standby taking over by hand asks it to step
    /// down (`POST /v1/replication/step-down`); None elsewhere.
    pub step_down: Option<Arc<tokio::sync::Notify>>,
    /// On a verifying follower: how its following goes (`/healthz/follower`); None elsewhere.
    pub follow: Option<Arc<replica::FollowStatus>>,
}

/// What must be in force before the agent routes are served, besides a verified fleet: CI's
/// lists whose source is configured (nixfleet is not ready until their first poll succeeds,
/// NIXFLEET-WIRE.md §9.1, §9.2). A list recorded once stays in force across restarts.
#[derive(Clone, Copy, Debug, Default)]
pub struct Readiness {
    /// A revocation list (config `revocations`, or `strict`).
    pub revocations: bool,
    /// A bootstrap-nonce allowlist (config `bootstrap_nonces`, or `strict`).
    pub bootstrap_nonces: bool,
}

impl AppState {
    /// Why agents cannot be served yet, if they cannot.
    fn not_ready(&self) -> Option<&'static str> {
        use std::sync::atomic::Ordering::Acquire;
        if !self.shared.fleet_ready.load(Acquire) {
            return Some("control plane not ready: awaiting first signed artifact");
        }
        if self.readiness.revocations && self.shared.revoked().list.is_none() {
            return Some("control plane not ready: awaiting CI's first signed revocations.json");
        }
        if self.readiness.bootstrap_nonces && !self.shared.allowlist_ready.load(Acquire) {
            return Some(
                "control plane not ready: awaiting CI's first signed bootstrap-nonces.json",
            );
        }
        None
    }
}

fn rollout_id(text: &str) -> ApiResult<RolloutId> {
    RolloutId::parse(text).map_err(|e| ApiError::new(ErrorCode::MalformedRolloutId, e.to_string()))
}

/// Queues an input and waits for the writer's answer (sent after the commit).
async fn submit(state: &AppState, input: Input) -> ApiResult<Answer> {
    let (reply, rx) = oneshot::channel();
    let m = &state.shared.metrics;
    match state.tx.try_send(Job { input, reply }.into()) {
        Ok(()) => {}
        Err(mpsc::error::TrySendError::Full(_)) => {
            m.queue_full.inc();
            return Err(ApiError::new(
                ErrorCode::QueueFull,
                "the writer queue is full; retry after the Retry-After delay",
            ));
        }
        Err(mpsc::error::TrySendError::Closed(_)) => {
            return Err(ApiError::new(
                ErrorCode::ShuttingDown,
                "the daemon is shutting down",
            ));
        }
    }
    m.queue_depth
        .set((state.tx.max_capacity() - state.tx.capacity()) as i64);
    match rx.await {
        Ok(answer) => answer.map_err(ApiError::from),
        Err(_) => Err(ApiError::new(
            ErrorCode::WriterGone,
            "the writer stopped before answering; the input may not be recorded: retry",
        )),
    }
}

/// The writer answered an input with an output of another kind (a bug, not bad input).
fn unexpected(out: Answer) -> ApiError {
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
        .ok_or_else(|| ApiError::new(ErrorCode::Reopening, "the ledger is being reopened"))?;
    reader.snapshot().map_err(ApiError::internal)
}

/// Runs a blocking read (redb) off the async workers.
///
/// A read that fails because the store failed under it (a commit hit a full or failing
/// disk: redb then answers every read of that database with "Previous I/O error") is the
/// daemon being unavailable for a moment, not an internal error: 503 `reopening` with
/// Retry-After, as writes get.
async fn read<T: Send + 'static>(
    state: &AppState,
    f: impl FnOnce(Snapshot) -> ApiResult<T> + Send + 'static,
) -> ApiResult<T> {
    use std::sync::atomic::Ordering;
    let failures = state.shared.store_failures.load(Ordering::Acquire);
    let outcome = {
        let state = state.clone();
        tokio::task::spawn_blocking(move || f(snapshot(&state)?))
            .await
            .map_err(ApiError::internal)?
    };
    match outcome {
        Err(e) if e.status() == StatusCode::INTERNAL_SERVER_ERROR => {
            let store_failed = || {
                state.shared.store_failures.load(Ordering::Acquire) != failures
                    || state
                        .shared
                        .reader
                        .read()
                        .map(|r| r.is_none())
                        .unwrap_or(true)
            };
            // redb marks the database failed inside the commit, a moment before the writer
            // sees the error and says so: give it that moment before calling this internal.
            if !store_failed() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            if store_failed() {
                Err(ApiError::new(
                    ErrorCode::Reopening,
                    "the ledger is being reopened after a failed commit; retry",
                ))
            } else {
                Err(e)
            }
        }
        other => other,
    }
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
// Health and metrics

/// 200 while the writer is up, else 503 (no authentication: for load balancers and systemd).
#[utoipa::path(get, path = "/healthz", tag = "daemon",
    responses((status = 200, content_type = "text/plain", body = String),
        (status = 503, content_type = "text/plain", body = String)))]
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

/// Whether this node is the writer of the current epoch: what a load balancer sends agents
/// by (failover; a single node is always its writer).
#[utoipa::path(get, path = "/healthz/leader", tag = "daemon",
    responses((status = 200, description = "this node writes", content_type = "text/plain", body = String),
        (status = 503, description = "this node does not write (a standby, fenced, or its lease lost)", content_type = "text/plain", body = String)))]
async fn healthz_leader(State(state): State<AppState>) -> Response {
    let leads = state.leader.load(std::sync::atomic::Ordering::Acquire)
        && state.shared.metrics.fenced.get() == 0
        && !state.tx.is_closed();
    if leads {
        (StatusCode::OK, "leader\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not the leader\n").into_response()
    }
}

/// Prometheus metrics (OpenMetrics text).
#[utoipa::path(get, path = "/metrics", tag = "daemon",
    responses((status = 200, content_type = "application/openmetrics-text", body = String),
        (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])))]
async fn metrics(State(state): State<AppState>, _: Reader) -> ApiResult<Response> {
    // nixfleet's gauges are sampled from the projections at each scrape, as nixfleet
    // refreshes its own (NIXFLEET-WIRE.md §10). A store that cannot be read now (a reopen
    // after a failed commit, no file descriptor left) costs those families, never the
    // scrape: the daemon's own metrics matter most then.
    let fleet_seq = operators::fleet_seq(&state);
    let now = (state.clock)();
    let sample = read(&state, move |snap| {
        operators::nixfleet_sample(&snap, fleet_seq, now)
    })
    .await
    .inspect_err(|e| tracing::debug!(error = ?e, "nixfleet metrics not sampled"))
    .unwrap_or_default();
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.shared.metrics.render_with(&sample),
    )
        .into_response())
}

async fn fallback() -> ApiError {
    ApiError::not_found("no such route")
}

async fn method_not_allowed(method: axum::http::Method) -> ApiError {
    ApiError::new(
        ErrorCode::MethodNotAllowed,
        format!("{method} is not allowed on this route"),
    )
}

/// The longest path and query the API reads. Every route's URI is short (ids, a few query
/// numbers); a longer one is refused before routing, as the API's error. (hyper's own parser
/// answers a bare 414 for URIs over 64 KiB, before any of this code runs.)
const URI_BYTES_MAX: usize = 8 * 1024;

/// Counts every refusal the API answers in `fleet_ledger_rejections_total{reason}`, once: the
/// error carries its code unless the writer, which decided it, counted it already.
async fn count_refusals(
    State(state): State<AppState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let resp = next.run(req).await;
    if let Some(error::Refused(code)) = resp.extensions().get::<error::Refused>() {
        state.shared.metrics.reject(code);
    }
    resp
}

/// Every read says which log it reflects, and may wait for one (issue 29, read-your-writes
/// on followers): `?min_size=N` holds the request (at most 10 s, then 503 `not-yet`) until
/// the log this node serves holds N entries, and is removed before routing; a `GET` answer
/// carries `X-Ledger-Size`, the committed size when it was read (the answer reflects at
/// least those entries; a stream sets its own).
async fn ledger_size(
    State(state): State<AppState>,
    mut req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let mut wanted = None;
    if let Some(query) = req.uri().query().filter(|q| q.contains("min_size=")) {
        let mut kept = Vec::new();
        for pair in query.split('&') {
            match pair.strip_prefix("min_size=") {
                Some(n) => match n.parse::<u64>() {
                    Ok(n) => wanted = Some(n),
                    Err(_) => {
                        return ApiError::new(
                            ErrorCode::BadQuery,
                            format!("min_size: {n:?} is not a number of entries"),
                        )
                        .into_response();
                    }
                },
                None => kept.push(pair),
            }
        }
        let path = req.uri().path();
        let rebuilt = if kept.is_empty() {
            path.to_string()
        } else {
            format!("{path}?{}", kept.join("&"))
        };
        let mut parts = req.uri().clone().into_parts();
        parts.path_and_query = rebuilt.parse().ok();
        if let Ok(uri) = axum::http::Uri::from_parts(parts) {
            *req.uri_mut() = uri;
        }
    }
    if let Some(n) = wanted {
        let mut committed = state.shared.committed.subscribe();
        let waited = tokio::time::timeout(
            Duration::from_secs(10),
            committed.wait_for(|size| *size >= n),
        )
        .await;
        if !matches!(waited, Ok(Ok(_))) {
            return ApiError::new(
                ErrorCode::NotYet,
                format!(
                    "this node serves {} entries, not yet the {n} asked for; retry",
                    *state.shared.committed.borrow()
                ),
            )
            .into_response();
        }
    }
    let get = req.method() == axum::http::Method::GET;
    let size = *state.shared.committed.borrow();
    let mut resp = next.run(req).await;
    if get && !resp.headers().contains_key("x-ledger-size") {
        resp.headers_mut()
            .insert("x-ledger-size", HeaderValue::from(size));
    }
    resp
}

async fn uri_limit(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let len = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
    if len > URI_BYTES_MAX {
        return ApiError::new(
            ErrorCode::UriTooLong,
            format!("the request URI is {len} bytes; at most {URI_BYTES_MAX} are read"),
        )
        .into_response();
    }
    next.run(req).await
}

/// The router with its limits: body size, concurrency (503 beyond it), request timeouts
/// (long polls get their cap plus the normal timeout).
/// nixfleet's readiness rule for the agent routes: until a verified fleet is in force, 503
/// with `Retry-After: 30` (its agents retry enrollment on a body that says "control plane
/// not ready"). Operator, CI and audit routes are not gated: CI's first fleet has to get in.
/// The caller is authenticated first (issue 26): an anonymous or unknown caller gets 401,
/// whether or not the fleet is ready; only enrollment is anonymous (its token is checked in
/// the handler).
async fn ready(
    State(state): State<AppState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if let Some(why) = state.not_ready() {
        if req.uri().path() != "/v1/enroll" {
            let (parts, _) = req.into_parts();
            let peer = parts
                .extensions
                .get::<axum::extract::ConnectInfo<Peer>>()
                .map(|p| &p.0);
            if let Err(e) = caller::authenticate(&parts, peer, &state) {
                return e.into_response();
            }
        }
        let mut resp = ApiError::new(ErrorCode::NotReady, why).into_response();
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("30"));
        return resp;
    }
    next.run(req).await
}

/// The protocol major this daemon speaks (`X-Nixfleet-Protocol`).
pub const PROTOCOL_MAJOR: u32 = 1;

/// `X-Nixfleet-Protocol: <major>` on `/v1/*`: absent is accepted (nixfleet v0.2's runtime
/// workers do not send it) unless `strict` (then 400 on `/v1/*` and `/metrics`, as
/// nixfleet's `--strict`), unparsable is 400, another major 426.
async fn protocol(
    State(strict): State<bool>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let path = req.uri().path();
    let versioned = path.starts_with("/v1/") || path == "/metrics";
    if strict && versioned && !req.headers().contains_key("x-nixfleet-protocol") {
        return ApiError::new(
            ErrorCode::BadProtocolHeader,
            "strict: every request to /v1/* and /metrics must send X-Nixfleet-Protocol",
        )
        .into_response();
    }
    if path.starts_with("/v1/")
        && let Some(v) = req.headers().get("x-nixfleet-protocol")
    {
        let major = v.to_str().ok().and_then(|s| s.trim().parse::<u32>().ok());
        match major {
            None => {
                return ApiError::new(
                    ErrorCode::BadProtocolHeader,
                    "X-Nixfleet-Protocol must be a protocol major version number",
                )
                .into_response();
            }
            Some(m) if m != PROTOCOL_MAJOR => {
                return ApiError::new(
                    ErrorCode::ProtocolUnsupported,
                    format!("this control plane speaks protocol {PROTOCOL_MAJOR}, not {m}"),
                )
                .into_response();
            }
            Some(_) => {}
        }
    }
    next.run(req).await
}

/// The API: every route, behind its limits (body size, concurrency, timeouts), the
/// readiness gate of the agent routes, refusal counting and the unread-body rule.
pub fn router(state: AppState) -> Router {
    use tower::ServiceBuilder;
    let limits = state.limits.clone();
    let timeout = Duration::from_secs(limits.request_timeout_secs);
    let overload = |e: tower::BoxError| async move {
        if e.is::<tower::load_shed::error::Overloaded>() {
            ApiError::new(
                ErrorCode::Overloaded,
                "too many requests in progress; retry",
            )
            .into_response()
        } else if e.is::<tower::timeout::error::Elapsed>() {
            ApiError::new(ErrorCode::Timeout, "the request took too long").into_response()
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
    let agents = Router::new()
        .route("/v1/agent/events", post(agent_event))
        .route("/v1/agent/heartbeat", post(heartbeat))
        .route("/v1/enroll", post(enroll))
        .route("/v1/agent/renew", post(renew))
        .route("/v1/fleet.resolved", get(fleet_resolved))
        .route("/v1/fleet.resolved/sig", get(fleet_resolved_sig))
        .route("/v1/rollouts/{id}", get(rollout_manifest))
        .route("/v1/rollouts/{id}/sig", get(rollout_manifest_sig))
        .route("/v1/agent/closure/{hash}", get(closure::closure))
        .layer(
            ServiceBuilder::new()
                .layer(axum::error_handling::HandleErrorLayer::new(overload))
                .timeout(timeout),
        )
        .merge(long_poll)
        .layer(axum::middleware::from_fn_with_state(state.clone(), ready));
    let rest = Router::new()
        .route("/v1/manifests/fleet", post(post_fleet))
        .route("/v1/manifests/rollouts/{id}", post(post_rollout_manifest))
        .route("/v1/whoami", get(whoami))
        .route("/v1/channels/{name}", get(channel))
        .route("/v1/hosts", get(hosts))
        .route("/v1/rollouts", get(nixfleet_rollouts::in_flight))
        .route("/v1/ledger/rollouts", get(list_rollouts))
        .route("/v1/rollouts/{id}/summary", get(get_rollout))
        .route("/v1/rollouts/{id}/lifecycle", get(lifecycle))
        .route("/v1/rollouts/{id}/hosts", get(nixfleet_rollouts::hosts))
        .route("/v1/rollouts/{id}/events", get(nixfleet_rollouts::events))
        .route("/v1/ledger/rollouts/{id}/hosts", get(rollout_hosts))
        .route("/v1/ledger/rollouts/{id}/events", get(rollout_events))
        .route("/v1/rollouts/{id}/clearance", post(clearance))
        .route("/v1/deferrals", get(deferrals))
        .route("/v1/quarantine", get(quarantine))
        .route("/v1/quarantine/lift", post(lift))
        .route("/v1/ledger/checkpoint", get(checkpoint))
        .route("/v1/ledger/checkpoint/witnessed", get(checkpoint_witnessed))
        .route("/v1/ledger/rotate-key", post(rotate_key))
        .route("/v1/admin/reload", post(reload))
        .route("/v1/ledger/proof/inclusion", get(proof_inclusion))
        .route("/v1/ledger/proof/consistency", get(proof_consistency))
        .route("/metrics", get(metrics))
        .route("/v1/openapi.json", get(openapi::openapi_json))
        .layer(
            ServiceBuilder::new()
                .layer(axum::error_handling::HandleErrorLayer::new(overload))
                .timeout(timeout),
        );
    // Streams run as long as the client reads; they are bounded by the body, not a timer.
    let streams = Router::new()
        .route("/v1/ledger/entries", get(entries))
        .route("/v1/ledger/batches", get(batches))
        .route("/v1/ledger/export", get(export));
    Router::new()
        .merge(agents)
        .merge(rest)
        .merge(streams)
        .route("/healthz", get(healthz))
        .route("/healthz/leader", get(healthz_leader))
        .route("/healthz/follower", get(replica::healthz_follower))
        .route("/v1/replication/batch", post(replica::not_a_standby))
        .route("/v1/replication/promote", post(replica::already_writing))
        .route("/v1/replication/step-down", post(replica::step_down))
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(fallback)
        .layer(axum::middleware::from_fn_with_state(state.strict, protocol))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            ledger_size,
        ))
        .layer(axum::middleware::from_fn(uri_limit))
        .layer(
            ServiceBuilder::new()
                .layer(axum::error_handling::HandleErrorLayer::new(overload))
                .load_shed()
                .concurrency_limit(limits.concurrent_requests)
                .layer(axum::extract::DefaultBodyLimit::max(limits.body_bytes))
                .layer(
                    tower_http::trace::TraceLayer::new_for_http()
                        .make_span_with(|req: &axum::http::Request<Body>| {
                            tracing::info_span!("request", method = %req.method(), path = %req.uri().path())
                        })
                        // A client's fault or a not-ready 503 is not the daemon's error: the
                        // layer's own failure line is at debug; a real internal error is
                        // logged at ERROR where it happens (`ApiError::internal`), and the
                        // writer's and the store's failures where they happen.
                        .on_failure(
                            tower_http::trace::DefaultOnFailure::new()
                                .level(tracing::Level::DEBUG),
                        ),
                ),
        )
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            count_refusals,
        ))
        // Outermost: it sees every answer, the limits' and the load shedder's included.
        .layer(axum::middleware::from_fn(unread::close_if_unread))
        .with_state(state)
}
