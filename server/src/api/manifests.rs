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
