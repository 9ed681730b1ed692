//! The API's one error shape: `{"error": code, "reason": text}`, with the status it maps to.

use crate::intake::ManifestError;
use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use engine::writer::WriteError;
use serde::Serialize;
use serde_json::json;

/// An API error.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    reason: String,
    /// Already counted in `fleet_ledger_rejections_total` (by the writer, which counts the
    /// refusals it decides whoever sent the input).
    counted: bool,
}

/// A response extension: the refusal an answer carries, for [`super::count_refusals`].
#[derive(Clone, Copy, Debug)]
pub(super) struct Refused(pub(super) &'static str);

impl ApiError {
    /// The HTTP status it answers with.
    pub(super) fn status(&self) -> StatusCode {
        self.status
    }

    pub(super) fn new(
        status: StatusCode,
        code: &'static str,
        reason: impl Into<String>,
    ) -> ApiError {
        debug_assert!(
            ERROR_CODES.iter().any(|(c, _)| *c == code),
            "error code {code} is not in ERROR_CODES"
        );
        ApiError {
            status,
            code,
            reason: reason.into(),
            counted: false,
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
                    | H::RolloutPruned(_)
                    | H::RolloutSuperseded(_),
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
        let mut err = ApiError::new(status, code, e.to_string());
        err.counted = matches!(e, WriteError::Refused(_));
        err
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
        if !self.counted {
            resp.extensions_mut().insert(Refused(self.code));
        }
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

/// Every error code the API answers, with its meaning: the `error` of [`ErrorBody`], listed
/// in the OpenAPI description. A code not listed here is a bug (`ApiError::new` asserts it in
/// debug builds; `server/tests/openapi.rs` scans the sources for codes).
pub const ERROR_CODES: &[(&str, &str)] = &[
    // The request itself.
    (
        "unauthorized",
        "401: no or unknown bearer token, and no client certificate",
    ),
    ("forbidden", "403: the caller's role may not use this route"),
    (
        "wrong-host",
        "403: an agent posting for another host than its identity",
    ),
    ("not-found", "404: no such route or record"),
    (
        "method-not-allowed",
        "405: the route does not take this method",
    ),
    (
        "timeout",
        "408: the request took longer than limits.request_timeout_secs",
    ),
    ("body-too-large", "413: the body is over limits.body_bytes"),
    ("uri-too-long", "414: the path and query are over 8 KiB"),
    (
        "unsupported-media-type",
        "415: a body without Content-Type: application/json",
    ),
    ("bad-body", "400: the body could not be read"),
    (
        "malformed-json",
        "400: the body is not the route's JSON shape",
    ),
    ("malformed-path", "400: a path segment could not be decoded"),
    ("malformed-rollout-id", "400: not `channel@channelRef`"),
    (
        "malformed-event",
        "400: an agent event that is not one of the twelve kinds",
    ),
    ("malformed-host", "400: not a valid host name"),
    (
        "bad-query",
        "400: the query string is not the route's parameters",
    ),
    (
        "reason-required",
        "400: a clearance, lift or key rotation without a reason",
    ),
    (
        "bad-key-file",
        "400: a key rotation's key_file is not an absolute path to a readable private key",
    ),
    (
        "config-invalid",
        "409: a reload whose config does not load or validate (the one in force stays), or a daemon started without a config file",
    ),
    (
        "key-in-chain",
        "409: a key rotation to a key the log has already used",
    ),
    (
        "bad-protocol-header",
        "400: X-Nixfleet-Protocol is not a number",
    ),
    (
        "protocol-unsupported",
        "426: X-Nixfleet-Protocol names another major version",
    ),
    (
        "bad-proof-request",
        "422: a proof for a range the log does not have",
    ),
    (
        "signature-not-recorded",
        "404: a manifest recorded before signatures were kept",
    ),
    // Availability (503, with Retry-After).
    (
        "not-ready",
        "503 (Retry-After: 30): no verified fleet manifest is in force yet",
    ),
    ("queue-full", "503: the writer's queue is full"),
    (
        "overloaded",
        "503: limits.concurrent_requests are in progress",
    ),
    (
        "reopening",
        "503: the ledger is being reopened after a failed commit",
    ),
    ("shutting-down", "503: the daemon is stopping"),
    (
        "writer-gone",
        "503: the writer stopped before answering; the input may not be recorded",
    ),
    ("unavailable", "503: an entry could not be read back; retry"),
    ("internal", "500: a bug; the reason says where"),
    // The decision's refusals (nothing recorded).
    (
        "illegal-transition",
        "409: not legal in the host's or rollout's current state",
    ),
    (
        "seq-regression",
        "409: the agent seq is not above the last one accepted",
    ),
    (
        "seq-reused",
        "409: the last accepted agent seq again, with a different report",
    ),
    (
        "supersession-expected",
        "409: a rollout would open beside an active one without superseding it",
    ),
    (
        "unknown-rollout",
        "422 for a report, 404 for a clearance: no such rollout",
    ),
    ("unknown-host", "422: the host is not part of the rollout"),
    ("rollout-pruned", "422: the rollout's retention expired"),
    (
        "rollout-superseded",
        "422: the rollout was superseded (an agent report to it is recorded as refused: 200 with `refused`, and moves nothing)",
    ),
    ("invariant", "422: the input would break an invariant"),
    (
        "not-quarantined",
        "404: a lift of a closure that is not quarantined",
    ),
    (
        "manifest-no-fleet",
        "422: a rollout manifest before any fleet manifest",
    ),
    (
        "manifest-fleet-mismatch",
        "409: a rollout manifest built against another fleet than the one in force",
    ),
    (
        "manifest-outdated",
        "409: signed no later than the manifest in force",
    ),
    (
        "manifest-invalid",
        "422: the document is inconsistent or unreadable",
    ),
    (
        "manifest-invalid-field",
        "422: a field of the document (the reason names it)",
    ),
    (
        "manifest-schema-version",
        "422: a schemaVersion this build does not read",
    ),
    // The manifest intake.
    (
        "manifest-parse",
        "422: the artifact is not JSON this build can canonicalize",
    ),
    ("manifest-not-signed", "422: no signature, or not 64 bytes"),
    (
        "manifest-bad-signature",
        "422: no trusted key verifies the signature",
    ),
    (
        "manifest-rejected-before",
        "422: signed before the trust's rejectBefore",
    ),
    ("manifest-stale", "422: older than trust.max_age_secs"),
    (
        "manifest-future-dated",
        "422: signed more than 60 s ahead of the CP's clock",
    ),
    (
        "manifest-discriminator",
        "422: a rollout manifest for another id than the route's or file's",
    ),
    // Enrollment and renewal.
    ("enrollment-disabled", "404: no `enrollment` in the config"),
    (
        "token-version",
        "401: a bootstrap token version other than 1",
    ),
    ("malformed-token", "401: the token's claims cannot be read"),
    (
        "token-not-valid-now",
        "401: the token is expired or not yet valid",
    ),
    (
        "bad-token-signature",
        "401: no trusted org root key signed the token",
    ),
    (
        "csr-host-mismatch",
        "401: the CSR's CN is not the token's hostname (enrollment) or the presented certificate's host (renewal)",
    ),
    (
        "csr-fingerprint-mismatch",
        "401: the CSR's key is not the one the token was minted for",
    ),
    (
        "certificate-required",
        "401: a renewal without the agent's client certificate",
    ),
    (
        "mixed-credentials",
        "401: a renewal that carries an Authorization header beside the client certificate",
    ),
    (
        "malformed-csr",
        "400: the CSR cannot be read or its self-signature does not verify",
    ),
    ("csr-key-not-ed25519", "400: the CSR's key is not ed25519"),
    ("issue-failed", "500: the fleet CA could not sign"),
    (
        "host-not-in-fleet",
        "401: the fleet in force does not declare the host",
    ),
    (
        "no-host-key",
        "401: the fleet in force declares no ed25519 pubkey for the host",
    ),
    (
        "host-key-mismatch",
        "401: the CSR's key is not the host key the fleet declares",
    ),
    (
        "nonce-used",
        "409: the bootstrap token's nonce was used before",
    ),
];

/// The body of every error answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// A stable code.
    #[schema(schema_with = error_code_schema)]
    pub error: String,
    /// What went wrong, for humans.
    pub reason: String,
}

fn error_code_schema() -> utoipa::openapi::schema::OneOfBuilder {
    use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Type};
    ERROR_CODES
        .iter()
        .fold(OneOfBuilder::new(), |b, (code, meaning)| {
            b.item(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .enum_values(Some([*code]))
                    .description(Some(*meaning)),
            )
        })
        .description(Some("a stable error code"))
}
