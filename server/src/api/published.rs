//! CI's signed manifests as agents fetch them (NIXFLEET-WIRE.md §4.6): the recorded canonical
//! bytes (exactly what CI signed) and the raw signature, served from the entries that
//! recorded them. The CP holds no manifest key: it serves what CI signed.

use super::ErrorCode;
use super::caller::Fetcher;
use super::{ApiError, ApiResult, AppState, ErrorBody, RolloutPath, openapi, read};
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

#[derive(Clone, Copy)]
enum Part {
    Bytes,
    Signature,
}

/// The recorded bytes or signature of the manifest `name` (`fleet` or a rollout id).
async fn serve(state: &AppState, name: String, part: Part) -> ApiResult<Response> {
    let seq = state
        .shared
        .published
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .get(&name)
        .copied()
        .ok_or_else(|| ApiError::not_found(format!("no manifest {name} was recorded")))?;
    read(state, move |snap| {
        let event = snap
            .logged(seq)
            .map_err(ApiError::internal)?
            .ok_or_else(|| ApiError::internal(format!("entry {seq} is missing")))?
            .event;
        let m = event
            .manifest()
            .ok_or_else(|| ApiError::internal(format!("entry {seq} is not a manifest")))?;
        let (body, content_type) = match part {
            Part::Bytes => (m.canonical.to_vec(), "application/json"),
            Part::Signature => match m.signature {
                Some((_, sig)) => (sig.to_vec(), "application/octet-stream"),
                None => {
                    return Err(ApiError::new(ErrorCode::SignatureNotRecorded,
                        format!(
                            "manifest {name} was recorded (entry {seq}) by a version that did not keep CI's signature"
                        ),
                    ));
                }
            },
        };
        Ok(([(header::CONTENT_TYPE, content_type)], body).into_response())
    })
    .await
}

/// The fleet manifest in force: the JCS bytes CI signed.
#[utoipa::path(get, path = "/v1/fleet.resolved", tag = "agents",
    responses((status = 200, description = "the canonical bytes", content_type = "application/json", body = openapi::FleetResolved), (status = "4XX", body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("mtls" = []), ("bearer" = [])))]
pub(super) async fn fleet_resolved(
    State(state): State<AppState>,
    _: Fetcher,
) -> ApiResult<Response> {
    serve(&state, "fleet".into(), Part::Bytes).await
}

/// CI's raw signature over the fleet manifest in force.
#[utoipa::path(get, path = "/v1/fleet.resolved/sig", tag = "agents",
    responses((status = 200, description = "64 raw bytes (ed25519, or ecdsa-p256 r‖s)", content_type = "application/octet-stream", body = Vec<u8>), (status = "4XX", body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("mtls" = []), ("bearer" = [])))]
pub(super) async fn fleet_resolved_sig(
    State(state): State<AppState>,
    _: Fetcher,
) -> ApiResult<Response> {
    serve(&state, "fleet".into(), Part::Signature).await
}

/// A rollout manifest (the latest recorded for the id): the JCS bytes CI signed.
#[utoipa::path(get, path = "/v1/rollouts/{id}", tag = "agents",
    params(("id" = String, Path, description = "`channel@channelRef`")),
    responses((status = 200, description = "the canonical bytes", content_type = "application/json", body = openapi::RolloutManifest), (status = "4XX", body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("mtls" = []), ("bearer" = [])))]
pub(super) async fn rollout_manifest(
    State(state): State<AppState>,
    _: Fetcher,
    RolloutPath(id): RolloutPath,
) -> ApiResult<Response> {
    serve(&state, id.to_string(), Part::Bytes).await
}

/// CI's raw signature over a rollout manifest.
#[utoipa::path(get, path = "/v1/rollouts/{id}/sig", tag = "agents",
    params(("id" = String, Path, description = "`channel@channelRef`")),
    responses((status = 200, description = "64 raw bytes (ed25519, or ecdsa-p256 r‖s)", content_type = "application/octet-stream", body = Vec<u8>), (status = "4XX", body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("mtls" = []), ("bearer" = [])))]
pub(super) async fn rollout_manifest_sig(
    State(state): State<AppState>,
    _: Fetcher,
    RolloutPath(id): RolloutPath,
) -> ApiResult<Response> {
    serve(&state, id.to_string(), Part::Signature).await
}
