//! What nixfleet's operator CLI asks of the control plane (NIXFLEET-WIRE.md §7): who the
//! caller is, and a channel of the fleet in force.

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
    let seq = state
        .shared
        .published
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .get("fleet")
        .copied()
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::NotReady,
                "no verified fleet manifest is in force yet",
            )
        })?;
    let window_minutes =
        u32::try_from(state.access.get().trust.max_age_secs / 60).unwrap_or(u32::MAX);
    read(&state, move |snap| {
        let event = snap
            .logged(seq)
            .map_err(ApiError::internal)?
            .ok_or_else(|| ApiError::internal(format!("entry {seq} is missing")))?
            .event;
        let fleet: serde_json::Value = event
            .manifest()
            .map(|m| serde_json::from_slice(m.canonical))
            .transpose()
            .map_err(ApiError::internal)?
            .ok_or_else(|| ApiError::internal(format!("entry {seq} is not a manifest")))?;
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
