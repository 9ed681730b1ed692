//! Failover's node-to-node routes (issue 29; docs/FORMAT.md §9g): a standby takes shipped
//! batches (`POST /v1/replication/batch`), and every node says whether it is the writer of
//! the current epoch (`GET /healthz/leader`, what a load balancer routes agents by).
//!
//! A standby serves nothing else: every other route answers 503 `not-leader`, so a client
//! that reached it retries (through the balancer, at the writer).

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use engine::replicate::{Batch, ShipRefusal, Shipment, Standby};
use ledger::checkpoint::Checkpoint;
use ledger::hash::Hash;

use super::error::{ApiError, ErrorCode};

/// Request headers of a shipment (FORMAT §9g).
pub const EPOCH: &str = "x-ledger-epoch";
/// The shipping writer's node name.
pub const NODE: &str = "x-ledger-node";
/// `<size> <root hex>`: the head the batch extends.
pub const BASE: &str = "x-ledger-base";
/// `<size> <root hex> <head hex>`: the checkpoint the batch ends with, unsigned.
pub const CHECKPOINT: &str = "x-ledger-checkpoint";
/// The log's origin.
pub const ORIGIN: &str = "x-ledger-origin";
/// In a refusal: the standby's entries (`standby-behind`, `standby-diverged`) or the epoch
/// it follows (`stale-epoch`).
pub const SIZE: &str = "x-ledger-size";

/// What a standby's routes share.
#[derive(Clone, Debug)]
pub struct StandbyState {
    /// The standby (None once it closed to take over).
    pub standby: Arc<Mutex<Option<Standby>>>,
    /// SHA-256 of the peer token.
    pub token: [u8; 32],
    /// When a shipment was last taken (the standby does not pull while it is shipped to).
    pub shipped: Arc<Mutex<Option<std::time::Instant>>>,
    /// The body limit of a shipment.
    pub body_bytes: usize,
    /// The writer-capable nodes (name → base URL): a shipment from one of them that extends
    /// entries this standby lacks is preceded by fetching those from it.
    pub peers: std::collections::BTreeMap<String, String>,
    /// The peer token, to read a writer's log.
    pub peer_token: Arc<str>,
    /// The client those reads go through.
    pub http: reqwest::Client,
    /// Asks the node to take over by hand (`POST /v1/replication/promote`): answered with
    /// what it did, or why not.
    pub promote: tokio::sync::mpsc::Sender<tokio::sync::oneshot::Sender<Result<String, String>>>,
}

impl StandbyState {
    /// Fetches the writer's committed batches from `from` on (the shipment's base is
    /// committed: a writer ships a batch only after the previous one's commit).
    async fn fetch(&self, node: &str, from: u64) -> Result<Vec<Batch>, String> {
        let base = self
            .peers
            .get(node)
            .ok_or_else(|| format!("{node} is not a configured peer"))?;
        let body = self
            .http
            .get(format!(
                "{}/v1/ledger/batches?from={from}",
                base.trim_end_matches('/')
            ))
            .bearer_auth(&*self.peer_token)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| e.to_string())?
            .bytes()
            .await
            .map_err(|e| e.to_string())?;
        unbatch(&body)
    }
}

/// Lowercase hex of 32 bytes.
pub fn hex32(b: &[u8; 32]) -> String {
    crate::auth::hex(b)
}

fn parse_hex32(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 || text.bytes().any(|c| c.is_ascii_uppercase()) {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Splits a body of framed entries (u32 big-endian length, then the bytes; FORMAT §9a).
pub fn unframe(mut body: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let mut out = Vec::new();
    while !body.is_empty() {
        let Some((len, rest)) = body.split_first_chunk::<4>() else {
            return Err(format!("entry {}: a truncated length", out.len()));
        };
        let len = u32::from_be_bytes(*len) as usize;
        if rest.len() < len {
            return Err(format!(
                "entry {}: {len} bytes announced, {} left",
                out.len(),
                rest.len()
            ));
        }
        out.push(rest[..len].to_vec());
        body = &rest[len..];
    }
    Ok(out)
}

/// Splits a `/v1/ledger/batches` body (FORMAT §9h): per batch, u32 big-endian note length,
/// the note, u32 big-endian entry count, then each entry framed as in §9a.
pub fn unbatch(mut body: &[u8]) -> Result<Vec<Batch>, String> {
    fn take<'a>(body: &mut &'a [u8], n: usize, what: &str) -> Result<&'a [u8], String> {
        if body.len() < n {
            return Err(format!("{what}: {n} bytes announced, {} left", body.len()));
        }
        let (head, rest) = body.split_at(n);
        *body = rest;
        Ok(head)
    }
    fn len(body: &mut &[u8], what: &str) -> Result<usize, String> {
        let b = take(body, 4, what)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
    }
    let mut out = Vec::new();
    while !body.is_empty() {
        let i = out.len();
        let n = len(&mut body, &format!("batch {i}"))?;
        let note = String::from_utf8(take(&mut body, n, "a note")?.to_vec())
            .map_err(|_| format!("batch {i}: the note is not text"))?;
        let count = len(&mut body, &format!("batch {i}"))?;
        let mut entries = Vec::with_capacity(count.min(65_536));
        for _ in 0..count {
            let n = len(&mut body, &format!("batch {i}"))?;
            entries.push(take(&mut body, n, "an entry")?.to_vec());
        }
        out.push((note, entries));
    }
    Ok(out)
}

/// Frames entries as [`unframe`] reads them.
pub fn frame(entries: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(entries.iter().map(|e| e.len() + 4).sum());
    for e in entries {
        // Entries are bounded far below 4 GiB (FORMAT §2).
        out.extend_from_slice(&(e.len() as u32).to_be_bytes());
        out.extend_from_slice(e);
    }
    out
}

/// The headers a shipment travels with.
pub fn shipment_headers(s: &Shipment) -> Vec<(&'static str, String)> {
    vec![
        (EPOCH, s.epoch.to_string()),
        (NODE, s.node.clone()),
        (BASE, format!("{} {}", s.base.0, hex32(&s.base.1))),
        (
            CHECKPOINT,
            format!(
                "{} {} {}",
                s.checkpoint.size,
                hex32(&s.checkpoint.root.0),
                hex32(&s.checkpoint.head.0)
            ),
        ),
        (ORIGIN, s.checkpoint.origin.clone()),
    ]
}

/// Reads a shipment from its headers and body.
pub fn parse_shipment(headers: &HeaderMap, body: &[u8]) -> Result<Shipment, String> {
    let get = |name: &str| -> Result<&str, String> {
        headers
            .get(name)
            .ok_or_else(|| format!("{name} is missing"))?
            .to_str()
            .map_err(|_| format!("{name} is not text"))
    };
    let num = |name: &str, text: &str| -> Result<u64, String> {
        text.parse()
            .map_err(|_| format!("{name}: {text:?} is not a number"))
    };
    let hash = |name: &str, text: &str| -> Result<[u8; 32], String> {
        parse_hex32(text).ok_or_else(|| format!("{name}: {text:?} is not 64 lowercase hex digits"))
    };
    let epoch = num(EPOCH, get(EPOCH)?)?;
    let node = get(NODE)?.to_string();
    let base: Vec<&str> = get(BASE)?.split(' ').collect();
    let [size, root] = base[..] else {
        return Err(format!("{BASE}: expected '<size> <root hex>'"));
    };
    let base = (num(BASE, size)?, hash(BASE, root)?);
    let cp: Vec<&str> = get(CHECKPOINT)?.split(' ').collect();
    let [size, root, head] = cp[..] else {
        return Err(format!(
            "{CHECKPOINT}: expected '<size> <root hex> <head hex>'"
        ));
    };
    let checkpoint = Checkpoint {
        origin: get(ORIGIN)?.to_string(),
        size: num(CHECKPOINT, size)?,
        root: Hash(hash(CHECKPOINT, root)?),
        head: Hash(hash(CHECKPOINT, head)?),
    };
    let entries = unframe(body)?;
    if entries.is_empty() {
        return Err("the batch holds no entry".into());
    }
    if base.0 + entries.len() as u64 != checkpoint.size {
        return Err(format!(
            "{} entries on a base of {} do not end at the checkpoint's size {}",
            entries.len(),
            base.0,
            checkpoint.size
        ));
    }
    Ok(Shipment {
        epoch,
        node,
        base,
        checkpoint,
        entries,
    })
}

/// Whether the request carries the peer token (compared by digest, in constant time).
fn is_peer(headers: &HeaderMap, token: &[u8; 32]) -> bool {
    use subtle::ConstantTimeEq as _;
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| bool::from(crate::auth::digest(t.trim()).ct_eq(token)))
}

fn with_size(e: ApiError, size: u64) -> Response {
    let mut r = e.into_response();
    if let Ok(v) = HeaderValue::from_str(&size.to_string()) {
        r.headers_mut().insert(SIZE, v);
    }
    r
}

/// A standby takes a shipped batch (failover, node to node, with the peer token): the
/// body is the batch's entries framed as `/v1/ledger/entries` frames them, the headers say
/// which writer ships it and which head it extends and ends with. 200 once the standby holds
/// it durably (FORMAT §9g).
#[utoipa::path(post, path = "/v1/replication/batch", tag = "failover",
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    params(
        ("X-Ledger-Epoch" = u64, Header, description = "the shipping writer's epoch"),
        ("X-Ledger-Node" = String, Header, description = "the shipping writer's node name"),
        ("X-Ledger-Base" = String, Header, description = "`<size> <root hex>`: the head the batch extends"),
        ("X-Ledger-Checkpoint" = String, Header, description = "`<size> <root hex> <head hex>`: the checkpoint it ends with, unsigned"),
        ("X-Ledger-Origin" = String, Header, description = "the log's origin"),
    ),
    responses((status = 200, description = "held durably", content_type = "application/json", body = Object),
        (status = "4XX", description = "refused: `stale-epoch`, `standby-behind`, `standby-diverged` (with `X-Ledger-Size`), `invalid-shipment`, `not-a-standby`", body = super::ErrorBody),
        (status = 503, description = "the standby could not write it", body = super::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn receive(
    State(state): State<StandbyState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !is_peer(&headers, &state.token) {
        return ApiError::new(
            ErrorCode::Unauthorized,
            "shipping needs the failover peer token",
        )
        .into_response();
    }
    let shipment = match parse_shipment(&headers, &body) {
        Ok(s) => s,
        Err(why) => return ApiError::new(ErrorCode::InvalidShipment, why).into_response(),
    };
    let shipment = Arc::new(shipment);
    let take = |missing: Option<Vec<Batch>>| {
        let standby = Arc::clone(&state.standby);
        let shipment = Arc::clone(&shipment);
        tokio::task::spawn_blocking(move || {
            let mut guard = standby.lock().unwrap_or_else(|p| p.into_inner());
            let s = guard.as_mut()?;
            if let Some(batches) = missing
                && let Err(e) = s.catch_up(&batches)
            {
                return Some(Err(e));
            }
            Some(s.receive(&shipment))
        })
    };
    let mut taken = take(None).await;
    if let Ok(Some(Err(ShipRefusal::Behind { size, .. }))) = &taken {
        // Behind the batch: fetch the batches it extends from the writer that shipped it
        // (each checked against the note the writer signed), then take it.
        match state.fetch(&shipment.node, *size).await {
            Ok(missing) => taken = take(Some(missing)).await,
            Err(e) => tracing::debug!(error = %e, "fetching the entries a shipment extends"),
        }
    }
    match taken {
        Ok(Some(Ok(cp))) => {
            *state.shipped.lock().unwrap_or_else(|p| p.into_inner()) =
                Some(std::time::Instant::now());
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/json")],
                format!("{{\"size\":{}}}\n", cp.size),
            )
                .into_response()
        }
        Ok(Some(Err(refusal))) => refusal_response(refusal),
        Ok(None) => ApiError::new(
            ErrorCode::NotAStandby,
            "this node is taking over as the writer",
        )
        .into_response(),
        Err(e) => ApiError::internal(e).into_response(),
    }
}

fn refusal_response(refusal: ShipRefusal) -> Response {
    let text = refusal.to_string();
    match refusal {
        ShipRefusal::StaleEpoch { held, .. } => {
            with_size(ApiError::new(ErrorCode::StaleEpoch, text), held)
        }
        ShipRefusal::Behind { size, .. } => {
            with_size(ApiError::new(ErrorCode::StandbyBehind, text), size)
        }
        ShipRefusal::Diverged { size } => {
            with_size(ApiError::new(ErrorCode::StandbyDiverged, text), size)
        }
        ShipRefusal::Invalid(_) => ApiError::new(ErrorCode::InvalidShipment, text).into_response(),
        ShipRefusal::Unavailable(_) => ApiError::new(ErrorCode::Unavailable, text).into_response(),
    }
}

/// Reads a standby's answer to a shipment back into the engine's terms.
pub fn refusal_of(status: StatusCode, headers: &HeaderMap, body: &str) -> ShipRefusal {
    let size = headers
        .get(SIZE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let code = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_string))
        .unwrap_or_default();
    let reason = format!("HTTP {status}: {}", body.trim());
    match code.as_str() {
        "stale-epoch" => ShipRefusal::StaleEpoch {
            held: size,
            shipped: 0,
        },
        "standby-behind" => ShipRefusal::Behind { size, base: 0 },
        "standby-diverged" => ShipRefusal::Diverged { size },
        "invalid-shipment" => ShipRefusal::Invalid(reason),
        _ => ShipRefusal::Unavailable(reason),
    }
}

/// Takes over by hand (`fleet-ledger promote`, with the peer token): if this standby holds
/// the head the commit register acknowledges, the current writer's election lease is revoked
/// and this node is elected next (200, saying so); otherwise 409 `promote-refused` with why.
/// The takeover itself is the election's: the caller waits for `/healthz/leader`.
#[utoipa::path(post, path = "/v1/replication/promote", tag = "failover",
    responses((status = 200, description = "the writer was unseated; this node takes over", content_type = "text/plain", body = String),
        (status = "4XX", description = "`promote-refused` (this node lacks acknowledged entries, or is not a standby), `unauthorized`", body = super::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn promote(State(state): State<StandbyState>, headers: HeaderMap) -> Response {
    if !is_peer(&headers, &state.token) {
        return ApiError::new(
            ErrorCode::Unauthorized,
            "promoting needs the failover peer token",
        )
        .into_response();
    }
    let (reply, answer) = tokio::sync::oneshot::channel();
    if state.promote.send(reply).await.is_err() {
        return ApiError::new(ErrorCode::PromoteRefused, "this node is not standing by")
            .into_response();
    }
    match answer.await {
        Ok(Ok(what)) => (StatusCode::OK, format!("{what}\n")).into_response(),
        Ok(Err(why)) => ApiError::new(ErrorCode::PromoteRefused, why).into_response(),
        Err(_) => {
            ApiError::new(ErrorCode::PromoteRefused, "this node is not standing by").into_response()
        }
    }
}

/// Steps this writer down (the failover peer token only): asked by a standby that takes over
/// by hand (`fleet-ledger promote`). The writer stops taking writes, answers what it took
/// (shipping each batch to its standbys as always), resigns its election lease and stands by;
/// the standby that asked, holding every batch, is elected next. 202 once asked; 409
/// `promote-refused` on a node that is not a failover writer. The peer token's principal has
/// a name no configured token may take (`config::PEER_NAME`).
#[utoipa::path(post, path = "/v1/replication/step-down", tag = "failover",
    responses((status = 202, description = "the writer steps down", content_type = "text/plain", body = String),
        (status = "4XX", description = "`unauthorized`, `forbidden` (not the peer token), `promote-refused` (not a failover writer)", body = super::ErrorBody)),
    security(("bearer" = [])))]
pub(super) async fn step_down(
    State(state): State<super::AppState>,
    super::caller::Caller(who): super::caller::Caller,
) -> Response {
    if who.role != crate::auth::Role::Auditor || who.name != crate::config::PEER_NAME {
        return ApiError::new(
            ErrorCode::Forbidden,
            "stepping down needs the failover peer token",
        )
        .into_response();
    }
    match &state.step_down {
        Some(asked) => {
            tracing::warn!("asked to step down by a standby taking over by hand");
            asked.notify_one();
            (StatusCode::ACCEPTED, "stepping down\n").into_response()
        }
        None => ApiError::new(
            ErrorCode::PromoteRefused,
            "this node is not a failover writer",
        )
        .into_response(),
    }
}

/// The writer's answer to a promotion: it writes already.
pub(super) async fn already_writing() -> Response {
    (StatusCode::OK, "this node is the writer already\n").into_response()
}

async fn standing_by() -> Response {
    ApiError::new(
        ErrorCode::NotLeader,
        "this node stands by; the writer is another node",
    )
    .into_response()
}

async fn standby_health() -> Response {
    (StatusCode::OK, "standby\n").into_response()
}

/// A standby's routes: shipments, health (200: alive), leader health (503), and 503
/// `not-leader` for everything else.
pub fn standby_router(state: StandbyState) -> Router {
    let limit = state.body_bytes;
    Router::new()
        .route("/v1/replication/batch", post(receive))
        .route("/v1/replication/promote", post(promote))
        .route("/healthz", get(standby_health))
        .route(
            "/healthz/leader",
            get(|| async { (StatusCode::SERVICE_UNAVAILABLE, "standby\n").into_response() }),
        )
        .fallback(standing_by)
        .layer(axum::extract::DefaultBodyLimit::max(limit))
        .with_state(state)
}

/// The writer's answer to a shipment: it is not a standby.
pub(super) async fn not_a_standby() -> Response {
    ApiError::new(
        ErrorCode::NotAStandby,
        "this node is the writer; batches are shipped to standbys",
    )
    .into_response()
}

/// A follower's view of the log it follows, for `/healthz/follower`.
#[derive(Debug, Default)]
pub struct FollowStatus {
    /// The writer's size at the last contact.
    pub leader_size: std::sync::atomic::AtomicU64,
    /// When the writer was last reached.
    pub contact: Mutex<Option<std::time::Instant>>,
    /// Why following stopped for good (an inconsistent checkpoint), if it did.
    pub halted: Mutex<Option<String>>,
}

#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct LagQuery {
    /// Entries this follower may be behind the writer (default 1000).
    #[serde(default)]
    max_lag: Option<u64>,
}

/// How long without reaching the writer before a follower counts as out of date.
const CONTACT_WITHIN: std::time::Duration = std::time::Duration::from_secs(10);

/// Whether this follower may serve a read pool: it reached the writer within 10 s, it is at
/// most `max_lag` entries behind it (default 1000), and it has not halted on an inconsistent
/// checkpoint. The body says its size and lag.
#[utoipa::path(get, path = "/healthz/follower", tag = "failover", params(LagQuery),
    responses((status = 200, description = "in date", content_type = "text/plain", body = String),
        (status = 503, description = "behind, out of contact, halted, or not a follower", content_type = "text/plain", body = String)))]
pub(crate) async fn healthz_follower(
    State(state): State<super::AppState>,
    query: Result<axum::extract::Query<LagQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(axum::extract::Query(q)) = query else {
        return (StatusCode::BAD_REQUEST, "max_lag: a number of entries\n").into_response();
    };
    let Some(status) = &state.follow else {
        return (StatusCode::SERVICE_UNAVAILABLE, "not a follower\n").into_response();
    };
    let max_lag = q.max_lag.unwrap_or(1000);
    let size = *state.shared.committed.borrow();
    let leader = status
        .leader_size
        .load(std::sync::atomic::Ordering::Acquire);
    let lag = leader.saturating_sub(size);
    let unhealthy = |why: String| (StatusCode::SERVICE_UNAVAILABLE, why).into_response();
    if let Some(why) = status
        .halted
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone()
    {
        return unhealthy(format!("halted: {why}\n"));
    }
    let contact = *status.contact.lock().unwrap_or_else(|p| p.into_inner());
    if contact.is_none_or(|t| t.elapsed() > CONTACT_WITHIN) {
        return unhealthy(format!(
            "size {size}: the writer was not reached within {} s\n",
            CONTACT_WITHIN.as_secs()
        ));
    }
    if lag > max_lag {
        return unhealthy(format!("size {size}, lag {lag} > {max_lag}\n"));
    }
    (StatusCode::OK, format!("size {size}, lag {lag}\n")).into_response()
}

/// A follower answers reads only: any other method, and the agent's dispatch long poll (it
/// takes a dispatch: a write), is 503 `not-leader`.
async fn reads_only(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    use axum::http::Method;
    let read = matches!(*req.method(), Method::GET | Method::HEAD)
        && req.uri().path() != "/v1/agent/dispatch";
    if !read {
        return ApiError::new(
            ErrorCode::NotLeader,
            "this node is a read follower; writes go to the writer",
        )
        .into_response();
    }
    next.run(req).await
}

/// A follower's routes: the API's reads over the log it verified, `/healthz/follower`, and
/// 503 `not-leader` for everything that writes.
pub fn follower_router(state: super::AppState) -> Router {
    super::router(state).layer(axum::middleware::from_fn(reads_only))
}
