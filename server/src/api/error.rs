//! The API's one error shape: `{"error": code, "reason": text}`, with the status it maps to.

use super::*;

/// An API error.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    reason: String,
}

impl ApiError {
    pub(super) fn new(
        status: StatusCode,
        code: &'static str,
        reason: impl Into<String>,
    ) -> ApiError {
        ApiError {
            status,
            code,
            reason: reason.into(),
        }
    }
    pub(super) fn bad(code: &'static str, reason: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, code, reason)
    }
    pub(super) fn not_found(reason: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not-found", reason)
    }
    pub(super) fn unavailable(code: &'static str, reason: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, code, reason)
    }
    pub(super) fn internal(reason: impl std::fmt::Display) -> ApiError {
        tracing::error!(%reason, "internal error");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            reason.to_string(),
        )
    }
}

/// The one place a refused input gets its HTTP status: 404 when what it names does not
/// exist, 409 when it conflicts with the state (retrying the same input cannot succeed until
/// the state changes), 422 when it can never be accepted, 503 when nothing was recorded and a
/// retry may succeed.
impl From<WriteError> for ApiError {
    fn from(e: WriteError) -> ApiError {
        use planner::{
            IdentityRefusal as I, ManifestRefusal as M, Refusal as R, Rejection as H,
            RolloutRejection as O,
        };
        let code = e.code();
        let status = match &e {
            WriteError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            WriteError::Refused(r) => match r {
                R::Host(H::IllegalForState { .. } | H::SeqRegression { .. }) => {
                    StatusCode::CONFLICT
                }
                R::Host(
                    H::UnknownRollout(_)
                    | H::UnknownHost { .. }
                    | H::Invariant(_)
                    | H::RolloutPruned(_),
                ) => StatusCode::UNPROCESSABLE_ENTITY,
                R::Rollout(O::Unknown(_)) | R::NotQuarantined { .. } => StatusCode::NOT_FOUND,
                R::Rollout(O::IllegalForState { .. } | O::SupersessionExpected { .. }) => {
                    StatusCode::CONFLICT
                }
                R::Rollout(O::Invariant(_)) => StatusCode::UNPROCESSABLE_ENTITY,
                R::Manifest(M::Outdated { .. } | M::FleetMismatch { .. }) => StatusCode::CONFLICT,
                R::Manifest(M::NoFleet | M::Document(_)) => StatusCode::UNPROCESSABLE_ENTITY,
                R::SeqReused { .. } => StatusCode::CONFLICT,
                // nixfleet's statuses for enrollment and renewal (NIXFLEET-WIRE.md §5).
                R::Identity(I::NoFleet) => StatusCode::SERVICE_UNAVAILABLE,
                R::Identity(I::UnknownHost(_) | I::NoHostKey { .. } | I::KeyMismatch(_)) => {
                    StatusCode::UNAUTHORIZED
                }
                R::Identity(I::NonceUsed { .. }) => StatusCode::CONFLICT,
                R::Unreadable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            },
        };
        ApiError::new(status, code, e.to_string())
    }
}

/// A manifest the intake refused (signature, schema, freshness): it can never be accepted.
impl From<ManifestError> for ApiError {
    fn from(e: ManifestError) -> ApiError {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e.code(), e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (
            self.status,
            Json(json!({"error": self.code, "reason": self.reason})),
        )
            .into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            // nixfleet's agents expect 30 s while the CP waits for its first fleet.
            let after = if self.code == "not-ready" { "30" } else { "1" };
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static(after));
        }
        resp
    }
}

pub(super) type ApiResult<T> = Result<T, ApiError>;
