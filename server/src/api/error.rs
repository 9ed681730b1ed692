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

impl From<Refusal> for ApiError {
    fn from(r: Refusal) -> ApiError {
        let status = match r.class {
            Class::NotFound => StatusCode::NOT_FOUND,
            Class::Conflict => StatusCode::CONFLICT,
            Class::Unprocessable => StatusCode::UNPROCESSABLE_ENTITY,
            Class::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        };
        ApiError::new(status, r.code, r.reason)
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
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        resp
    }
}

pub(super) type ApiResult<T> = Result<T, ApiError>;
