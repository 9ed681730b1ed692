//! nixfleet's closure proxy (NIXFLEET-WIRE.md §9.5): `GET /v1/agent/closure/{hash}` fetches
//! `<upstream>/<hash>.narinfo` from the binary cache the config names and answers the
//! upstream's status and body as they came, as `text/x-nix-narinfo`. Only narinfo; nothing
//! cached; every request goes upstream.

use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::caller::ClosureReader;
use super::{ApiError, ApiResult, AppState, ErrorBody, ErrorCode};

/// Largest narinfo answered (a real one is a few hundred bytes; its signatures and
/// references make a big one a few KiB).
pub const NARINFO_BYTES_MAX: usize = 1 << 20;

/// The upstream binary cache and the client that reaches it.
#[derive(Clone, Debug)]
pub struct ClosureProxy {
    base: String,
    http: reqwest::Client,
}

impl ClosureProxy {
    /// A proxy to `upstream` (its trailing `/` dropped), each request given `deadline`
    /// (nixfleet: 30 s).
    pub fn new(upstream: &str, deadline: Duration) -> Result<ClosureProxy, String> {
        if !(upstream.starts_with("http://") || upstream.starts_with("https://")) {
            return Err(format!(
                "closure_upstream: {upstream:?} is not an http(s) URL"
            ));
        }
        // Already installed is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .timeout(deadline)
            .build()
            .map_err(|e| format!("closure_upstream: no HTTP client: {e}"))?;
        Ok(ClosureProxy {
            base: upstream.trim_end_matches('/').to_string(),
            http,
        })
    }
}

/// A Nix store path hash: 32 characters of Nix's base-32 alphabet. Anything else could make
/// the upstream URL name another path than a narinfo (`..`, a `/` decoded from `%2F`).
fn store_hash(hash: &str) -> bool {
    hash.len() == 32
        && hash
            .bytes()
            .all(|b| b"0123456789abcdfghijklmnpqrsvwxyz".contains(&b))
}

/// The narinfo of a store path, from the configured binary cache.
#[utoipa::path(get, path = "/v1/agent/closure/{hash}", tag = "agents",
    params(("hash" = String, Path, description = "the store path's hash (32 characters of Nix's base-32)")),
    responses(
        (status = 200, description = "the upstream's narinfo, as it came", content_type = "text/x-nix-narinfo", body = String),
        (status = "4XX", body = ErrorBody),
        (status = 501, description = "no `closure_upstream` configured: nixfleet's body `{closure, error, tracking}`", content_type = "application/json", body = Object),
        (status = 502, description = "the upstream could not be reached, timed out, or answered more than 1 MiB: `upstream error: <why>`", content_type = "text/plain", body = String),
        (status = 503, body = ErrorBody)),
    security(("mtls" = []), ("bearer" = [])))]
pub(super) async fn closure(
    State(state): State<AppState>,
    _: ClosureReader,
    Path(hash): Path<String>,
) -> ApiResult<Response> {
    let Some(proxy) = state.closure.as_deref() else {
        // nixfleet's answer, byte for byte (keys in byte order).
        let body = serde_json::json!({
            "closure": hash,
            "error": "closure proxy not configured",
            "tracking": "set services.nixfleet-control-plane.closureUpstream",
        });
        return Ok((
            StatusCode::NOT_IMPLEMENTED,
            [(header::CONTENT_TYPE, "application/json")],
            body.to_string(),
        )
            .into_response());
    };
    if !store_hash(&hash) {
        return Err(ApiError::new(
            ErrorCode::MalformedPath,
            format!("{hash:?} is not a store path hash (32 characters of Nix's base-32)"),
        ));
    }
    let url = format!("{}/{hash}.narinfo", proxy.base);
    let upstream_error = |why: String| {
        tracing::warn!(%url, error = %why, "closure proxy");
        // As nixfleet answers it: the text, no content type.
        let mut out = Response::new(Body::from(format!("upstream error: {why}")));
        *out.status_mut() = StatusCode::BAD_GATEWAY;
        out
    };
    let mut resp = match proxy.http.get(&url).send().await {
        Ok(r) => r,
        Err(e) => return Ok(upstream_error(e.to_string())),
    };
    let status = resp.status();
    let mut body = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > NARINFO_BYTES_MAX {
                    return Ok(upstream_error(format!(
                        "the answer is over {NARINFO_BYTES_MAX} bytes"
                    )));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => break,
            Err(e) => return Ok(upstream_error(e.to_string())),
        }
    }
    let mut out = Response::new(Body::from(body));
    *out.status_mut() = StatusCode::from_u16(status.as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    out.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/x-nix-narinfo"),
    );
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn store_hashes_are_nix_base32() {
        assert!(super::store_hash("0c6kzph7l0dcbfmjap64f0czdafn3b7x"));
        for bad in [
            "0c6kzph7l0dcbfmjap64f0czdafn3b7",
            "0c6kzph7l0dcbfmjap64f0czdafn3b7e",
            "0c6kzph7l0dcbfmjap64f0czdafn3b/x",
            "..",
            "",
        ] {
            assert!(!super::store_hash(bad), "{bad}");
        }
    }
}
