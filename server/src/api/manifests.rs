//! CI's signed manifests: verified here, recorded by the writer.

use super::*;

// ---------------------------------------------------------------------------------------
// Manifests

pub(super) async fn post_manifest(
    state: &AppState,
    target: Target,
    body: JsonBody,
) -> ApiResult<Json<Value>> {
    let signed: wire::SignedManifest = parse_body(body)?;
    // The POST body carries the signature as base64 text.
    let signature = crate::trust::signature_bytes(signed.signature.as_bytes())
        .map_err(|_| ApiError::from(intake::ManifestError::NotSigned))?;
    let verified = match intake::verify(
        &target,
        &signed.artifact,
        &signature,
        &state.trust,
        (state.clock)(),
    ) {
        Ok(v) => v,
        Err(e) => {
            state.shared.metrics.reject(e.code());
            return Err(e.into());
        }
    };
    let hash = crate::auth::hex(&verified.content_hash);
    match submit(state, Input::Manifest(Box::new(verified))).await? {
        Answer::Recorded { seq, .. } => Ok(Json(
            json!({"seq": seq, "content_hash": hash, "duplicate": false}),
        )),
        Answer::Duplicate { seq } => Ok(Json(
            json!({"seq": seq, "content_hash": hash, "duplicate": true}),
        )),
        other => Err(unexpected(other)),
    }
}

pub(super) async fn post_fleet(
    State(state): State<AppState>,
    caller: Caller,
    body: JsonBody,
) -> ApiResult<Json<Value>> {
    caller.require(&[Role::Ci, Role::Operator])?;
    post_manifest(&state, Target::Fleet, body).await
}

pub(super) async fn post_rollout_manifest(
    State(state): State<AppState>,
    caller: Caller,
    RolloutPath(id): RolloutPath,
    body: JsonBody,
) -> ApiResult<Json<Value>> {
    caller.require(&[Role::Ci, Role::Operator])?;
    post_manifest(&state, Target::Rollout(id), body).await
}
