//! CI's signed manifests: verified here, recorded by the writer.

use super::caller::Publisher;
use super::{
    ApiError, ApiResult, AppState, ErrorBody, JsonBody, RolloutPath, parse_body, submit, unexpected,
};
use crate::intake;
use crate::intake::Target;
use axum::Json;
use axum::extract::State;
use engine::writer::{Answer, Input};
use serde::Serialize;

// ---------------------------------------------------------------------------------------
// Manifests

/// A manifest accepted (or the one in force again).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct ManifestAnswer {
    /// Seq of its entry (of the original, for a duplicate).
    seq: u64,
    /// SHA-256 of its JCS bytes, hex.
    content_hash: String,
    /// The manifest in force already.
    duplicate: bool,
}

pub(super) async fn post_manifest(
    state: &AppState,
    target: Target,
    body: JsonBody,
) -> ApiResult<Json<ManifestAnswer>> {
    let signed: wire::SignedManifest = parse_body(body)?;
    // The POST body carries the signature as base64 text.
    let signature = crate::trust::signature_bytes(signed.signature.as_bytes())
        .map_err(|_| ApiError::from(intake::ManifestError::NotSigned))?;
    let verified = intake::verify(
        &target,
        &signed.artifact,
        &signature,
        &state.access.get().trust,
        (state.clock)(),
    )?;
    let hash = crate::auth::hex(&verified.content_hash);
    match submit(state, Input::Manifest(Box::new(verified))).await? {
        Answer::Recorded { seq, .. } => Ok(Json(ManifestAnswer {
            seq,
            content_hash: hash,
            duplicate: false,
        })),
        Answer::Duplicate { seq } => Ok(Json(ManifestAnswer {
            seq,
            content_hash: hash,
            duplicate: true,
        })),
        other => Err(unexpected(other)),
    }
}

/// A signed `fleet.resolved` (the artifact is `FleetResolved`), verified then recorded.
#[utoipa::path(post, path = "/v1/manifests/fleet", tag = "ci", request_body = wire::SignedManifest,
    responses((status = 200, body = ManifestAnswer), (status = "4XX", body = ErrorBody),
        (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
pub(super) async fn post_fleet(
    State(state): State<AppState>,
    _: Publisher,
    body: JsonBody,
) -> ApiResult<Json<ManifestAnswer>> {
    post_manifest(&state, Target::Fleet, body).await
}

/// A signed rollout manifest (the artifact is `RolloutManifest`) for `{id}`.
#[utoipa::path(post, path = "/v1/manifests/rollouts/{id}", tag = "ci",
    params(("id" = String, Path, description = "`channel@channelRef`")),
    request_body = wire::SignedManifest,
    responses((status = 200, body = ManifestAnswer), (status = "4XX", body = ErrorBody),
        (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
pub(super) async fn post_rollout_manifest(
    State(state): State<AppState>,
    _: Publisher,
    RolloutPath(id): RolloutPath,
    body: JsonBody,
) -> ApiResult<Json<ManifestAnswer>> {
    post_manifest(&state, Target::Rollout(id), body).await
}
