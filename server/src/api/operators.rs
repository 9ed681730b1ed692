//! What nixfleet's operator CLI asks of the control plane (NIXFLEET-WIRE.md §7): who the
//! caller is.

use axum::Json;
use axum::extract::{ConnectInfo, State};
use axum::http::{Extensions, HeaderMap, header};
use serde::Serialize;

use super::{ApiResult, AppState, Caller, ErrorBody};
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
