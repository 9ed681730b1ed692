//! Operators: rotating the checkpoint key and re-reading the config, while serving.

use super::ErrorCode;
use super::caller::Operator;
use super::{ApiError, ApiResult, AppState, ErrorBody, JsonBody, parse_body};
use axum::Json;
use axum::extract::State;
use engine::writer::Work;
use serde::Serialize;
use tokio::sync::oneshot;
use wire;

use engine::writer::{KeyRotation, RotateError};

/// The rotation, recorded.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct Rotated {
    /// Seq of the `KeyRotated` entry; checkpoints after it are signed by the new key.
    seq: u64,
    /// The new verifier key (tell the witnesses).
    key: String,
    /// The key file to name as `signing_key` in the config before the next start (the
    /// daemon refuses to start with a key that is no longer in force).
    signing_key: String,
}

/// Rotates the checkpoint key to the key in `key_file` (a file on the daemon's host, as
/// `fleet-ledger keygen` writes it): a `KeyRotated` entry signed off by the current key,
/// committed on its own after what is queued before it. Verifiers follow the rotation from
/// the log; witnesses must be told the new key.
#[utoipa::path(post, path = "/v1/ledger/rotate-key", tag = "operators",
    request_body = wire::RotateKey,
    responses((status = 200, body = Rotated), (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])))]
pub(super) async fn rotate_key(
    State(state): State<AppState>,
    Operator(who): Operator,
    body: JsonBody,
) -> ApiResult<Json<Rotated>> {
    let who = who.name;
    let r: wire::RotateKey = parse_body(body)?;
    if r.reason.trim().is_empty() {
        return Err(ApiError::new(
            ErrorCode::ReasonRequired,
            "a key rotation needs a reason (it is recorded)",
        ));
    }
    let path = std::path::PathBuf::from(&r.key_file);
    if !path.is_absolute() {
        return Err(ApiError::new(
            ErrorCode::BadKeyFile,
            format!(
                "key_file {:?} must be an absolute path on the daemon's host",
                r.key_file
            ),
        ));
    }
    let read = path.clone();
    let next = tokio::task::spawn_blocking(move || ledger::keys::read_private_key(&read))
        .await
        .map_err(ApiError::internal)?
        .map_err(|e| ApiError::new(ErrorCode::BadKeyFile, format!("{}: {e}", path.display())))?;
    let key = next.public().to_text();
    let (reply, rx) = oneshot::channel();
    let work = Work::RotateKey(Box::new(KeyRotation {
        next,
        reason: r.reason,
        operator: who,
        reply,
    }));
    if state.tx.send(work).await.is_err() {
        return Err(ApiError::new(
            ErrorCode::ShuttingDown,
            "the daemon is shutting down",
        ));
    }
    match rx.await {
        Ok(Ok(seq)) => Ok(Json(Rotated {
            seq,
            key,
            signing_key: path.display().to_string(),
        })),
        Ok(Err(e @ RotateError::KeyInChain(_))) => {
            Err(ApiError::new(ErrorCode::KeyInChain, e.to_string()))
        }
        Ok(Err(e @ RotateError::Unavailable(_))) => {
            Err(ApiError::new(ErrorCode::Reopening, e.to_string()))
        }
        Err(_) => Err(ApiError::new(
            ErrorCode::WriterGone,
            "the writer stopped before answering; the rotation may not be recorded: check GET /v1/ledger/checkpoint",
        )),
    }
}

/// Re-reads the config file, as SIGHUP does: tokens, CI keys, publication and witnessing take
/// effect at once (a change of who may write is recorded first, `AccessChanged`); sections
/// bound at start are listed in `needs_restart`. A config that does not load is refused
/// (409 `config-invalid`) and the one in force stays.
#[utoipa::path(post, path = "/v1/admin/reload", tag = "operators",
    responses((status = 200, body = crate::reload::ReloadReport), (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])))]
pub(super) async fn reload(
    State(state): State<AppState>,
    Operator(who): Operator,
) -> ApiResult<Json<crate::reload::ReloadReport>> {
    let who = who.name;
    use crate::reload::ReloadError;
    match state.reloader.reload(&format!("operator:{who}")).await {
        Ok(report) => Ok(Json(report)),
        Err(e @ (ReloadError::NoConfigFile | ReloadError::Invalid(_))) => {
            Err(ApiError::new(ErrorCode::ConfigInvalid, e.to_string()))
        }
        Err(e @ ReloadError::NotRecorded(_)) => {
            Err(ApiError::new(ErrorCode::Reopening, e.to_string()))
        }
    }
}
