//! The API's one error shape: `{"error": code, "reason": text}`, with the status it maps to.

use crate::intake::ManifestError;
use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use engine::writer::WriteError;
use serde::Serialize;
use serde_json::json;

/// An API error: what it is, and why, for humans.
#[derive(Debug)]
pub struct ApiError {
    code: ErrorCode,
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
        self.code.status()
    }

    pub(super) fn new(code: ErrorCode, reason: impl Into<String>) -> ApiError {
        ApiError {
            code,
            reason: reason.into(),
            counted: false,
        }
    }
    pub(super) fn not_found(reason: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::NotFound, reason)
    }
    pub(super) fn internal(reason: impl std::fmt::Display) -> ApiError {
        tracing::error!(%reason, "internal error");
        ApiError::new(ErrorCode::Internal, reason.to_string())
    }

    /// The error another crate's code names; a code [`ErrorCode`] does not list is a bug,
    /// answered as `internal` (the OpenAPI test holds every such code to the list).
    pub(super) fn of(code: &str, reason: String) -> ApiError {
        match ErrorCode::of(code) {
            Some(c) => ApiError::new(c, reason),
            None => ApiError::internal(format!("unlisted error code {code}: {reason}")),
        }
    }
}

/// A refused input gets its status from its code ([`ErrorCode`]): 404 when what it names does
/// not exist, 409 when it conflicts with the state (retrying the same input cannot succeed
/// until the state changes), 422 when it can never be accepted, 503 when nothing was recorded
/// and a retry may succeed; enrollment and renewal have nixfleet's (NIXFLEET-WIRE.md §5).
impl From<WriteError> for ApiError {
    fn from(e: WriteError) -> ApiError {
        use planner::{Refusal as R, RolloutRejection as O};
        let counted = matches!(e, WriteError::Refused(_));
        let mut err = match &e {
            // A clearance of a rollout the ledger does not have is 404; a report to one 422.
            WriteError::Refused(R::Rollout(O::Unknown(_))) => {
                ApiError::new(ErrorCode::UnknownRolloutToClear, e.to_string())
            }
            _ => ApiError::of(e.code(), e.to_string()),
        };
        err.counted = counted;
        err
    }
}

/// A manifest the intake refused (signature, schema, freshness): it can never be accepted.
impl From<ManifestError> for ApiError {
    fn from(e: ManifestError) -> ApiError {
        ApiError::of(e.code(), e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (
            self.code.status(),
            Json(json!({"error": self.code.code(), "reason": self.reason})),
        )
            .into_response();
        if !self.counted {
            resp.extensions_mut().insert(Refused(self.code.code()));
        }
        if self.code.status() == StatusCode::SERVICE_UNAVAILABLE {
            // nixfleet's agents expect 30 s while the CP waits for its first fleet.
            let after = if self.code == ErrorCode::NotReady {
                "30"
            } else {
                "1"
            };
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static(after));
        }
        resp
    }
}

pub(super) type ApiResult<T> = Result<T, ApiError>;

/// Every error the API answers, each with its code (the `error` of [`ErrorBody`]), its HTTP
/// status and what it means, in one match: the OpenAPI description lists them from here, and
/// an answer cannot name a code or a status that is not one of these. A code can have two
/// statuses (`unknown-rollout`: 422 for a report, 404 for a clearance); then it is two
/// variants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    /// `unauthorized`: 401: no or unknown bearer token, and no client certificate
    Unauthorized,
    /// `forbidden`: 403: the caller's role may not use this route
    Forbidden,
    /// `wrong-host`: 403: an agent posting for another host than its identity
    WrongHost,
    /// `not-found`: 404: no such route or record
    NotFound,
    /// `method-not-allowed`: 405: the route does not take this method
    MethodNotAllowed,
    /// `timeout`: 408: the request took longer than limits.request_timeout_secs
    Timeout,
    /// `body-too-large`: 413: the body is over limits.body_bytes
    BodyTooLarge,
    /// `uri-too-long`: 414: the path and query are over 8 KiB
    UriTooLong,
    /// `unsupported-media-type`: 415: a body without Content-Type: application/json
    UnsupportedMediaType,
    /// `bad-body`: 400: the body could not be read
    BadBody,
    /// `malformed-json`: 400: the body is not the route's JSON shape
    MalformedJson,
    /// `malformed-path`: 400: a path segment could not be decoded
    MalformedPath,
    /// `malformed-rollout-id`: 400: not `channel@channelRef`
    MalformedRolloutId,
    /// `malformed-event`: 400: an agent event that is not one of the twelve kinds
    MalformedEvent,
    /// `malformed-host`: 400: not a valid host name
    MalformedHost,
    /// `bad-query`: 400: the query string is not the route's parameters
    BadQuery,
    /// `reason-required`: 400: a clearance, lift or key rotation without a reason
    ReasonRequired,
    /// `bad-key-file`: 400: a key rotation's key_file is not an absolute path to a readable private key
    BadKeyFile,
    /// `config-invalid`: 409: a reload whose config does not load or validate (the one in force stays), or a daemon started without a config file
    ConfigInvalid,
    /// `key-in-chain`: 409: a key rotation to a key the log has already used
    KeyInChain,
    /// `bad-protocol-header`: 400: X-Nixfleet-Protocol is not a number
    BadProtocolHeader,
    /// `protocol-unsupported`: 426: X-Nixfleet-Protocol names another major version
    ProtocolUnsupported,
    /// `bad-proof-request`: 422: a proof for a range the log does not have
    BadProofRequest,
    /// `signature-not-recorded`: 404: a manifest recorded before signatures were kept
    SignatureNotRecorded,
    /// `not-ready`: 503 (Retry-After: 30): no verified fleet manifest is in force yet
    NotReady,
    /// `queue-full`: 503: the writer's queue is full
    QueueFull,
    /// `overloaded`: 503: limits.concurrent_requests are in progress
    Overloaded,
    /// `reopening`: 503: the ledger is being reopened after a failed commit
    Reopening,
    /// `shutting-down`: 503: the daemon is stopping
    ShuttingDown,
    /// `writer-gone`: 503: the writer stopped before answering; the input may not be recorded
    WriterGone,
    /// `not-leader`: 503: this node stands by (failover); the writer is another node
    NotLeader,
    /// `not-a-standby`: 409: a batch shipped to the writer (failover)
    NotAStandby,
    /// `stale-epoch`: 409: a batch from a writer older than one this standby follows
    StaleEpoch,
    /// `standby-behind`: 409: a batch extending entries this standby does not hold yet
    StandbyBehind,
    /// `standby-diverged`: 409: a batch extending a head this standby's log does not have
    StandbyDiverged,
    /// `invalid-shipment`: 422: a batch that does not continue the log as shipped
    InvalidShipment,
    /// `not-yet`: 503: `?min_size` asked for entries this node does not serve yet
    NotYet,
    /// `promote-refused`: 409: this node may not take over (it lacks acknowledged entries)
    PromoteRefused,
    /// `unavailable`: 503: an entry could not be read back; retry
    Unavailable,
    /// `internal`: 500: a bug; the reason says where
    Internal,
    /// `illegal-transition`: 409: not legal in the host's or rollout's current state
    IllegalTransition,
    /// `seq-regression`: 409: the agent seq is not above the last one accepted
    SeqRegression,
    /// `seq-reused`: 409: the last accepted agent seq again, with a different report
    SeqReused,
    /// `supersession-expected`: 409: a rollout would open beside an active one without superseding it
    SupersessionExpected,
    /// `unknown-rollout`: 422: a report to a rollout the ledger does not have
    UnknownRollout,
    /// `unknown-rollout`: 404: a clearance of a rollout the ledger does not have
    UnknownRolloutToClear,
    /// `unknown-host`: 422: the host is not part of the rollout
    UnknownHost,
    /// `rollout-pruned`: 422: the rollout's retention expired
    RolloutPruned,
    /// `rollout-superseded`: 422: the rollout was superseded (an agent report to it is recorded as refused: 200 with `refused`, and moves nothing)
    RolloutSuperseded,
    /// `invariant`: 422: the input would break an invariant
    Invariant,
    /// `not-quarantined`: 404: a lift of a closure that is not quarantined
    NotQuarantined,
    /// `manifest-no-fleet`: 422: a rollout manifest before any fleet manifest
    ManifestNoFleet,
    /// `manifest-fleet-mismatch`: 409: a rollout manifest built against another fleet than the one in force
    ManifestFleetMismatch,
    /// `manifest-outdated`: 409: signed no later than the manifest in force
    ManifestOutdated,
    /// `manifest-invalid`: 422: the document is inconsistent or unreadable
    ManifestInvalid,
    /// `manifest-invalid-field`: 422: a field of the document (the reason names it)
    ManifestInvalidField,
    /// `manifest-schema-version`: 422: a schemaVersion this build does not read
    ManifestSchemaVersion,
    /// `manifest-parse`: 422: the artifact is not JSON this build can canonicalize
    ManifestParse,
    /// `manifest-not-signed`: 422: no signature, or not 64 bytes
    ManifestNotSigned,
    /// `manifest-bad-signature`: 422: no trusted key verifies the signature
    ManifestBadSignature,
    /// `manifest-rejected-before`: 422: signed before the trust's rejectBefore
    ManifestRejectedBefore,
    /// `manifest-stale`: 422: older than trust.max_age_secs
    ManifestStale,
    /// `manifest-future-dated`: 422: signed more than 60 s ahead of the CP's clock
    ManifestFutureDated,
    /// `manifest-discriminator`: 422: a rollout manifest for another id than the route's or file's
    ManifestDiscriminator,
    /// `enrollment-disabled`: 404: no `enrollment` in the config
    EnrollmentDisabled,
    /// `token-version`: 401: a bootstrap token version other than 1
    TokenVersion,
    /// `malformed-token`: 401: the token's claims cannot be read
    MalformedToken,
    /// `token-not-valid-now`: 401: the token is expired or not yet valid
    TokenNotValidNow,
    /// `bad-token-signature`: 401: no trusted org root key signed the token
    BadTokenSignature,
    /// `csr-host-mismatch`: 401: the CSR's CN is not the token's hostname (enrollment) or the presented certificate's host (renewal)
    CsrHostMismatch,
    /// `csr-fingerprint-mismatch`: 401: the CSR's key is not the one the token was minted for
    CsrFingerprintMismatch,
    /// `certificate-required`: 401: a renewal without the agent's client certificate
    CertificateRequired,
    /// `mixed-credentials`: 401: a renewal that carries an Authorization header beside the client certificate
    MixedCredentials,
    /// `malformed-csr`: 400: the CSR cannot be read or its self-signature does not verify
    MalformedCsr,
    /// `csr-key-not-ed25519`: 400: the CSR's key is not ed25519
    CsrKeyNotEd25519,
    /// `issue-failed`: 500: the fleet CA could not sign
    IssueFailed,
    /// `host-not-in-fleet`: 401: the fleet in force does not declare the host
    HostNotInFleet,
    /// `no-host-key`: 401: the fleet in force declares no ed25519 pubkey for the host
    NoHostKey,
    /// `host-key-mismatch`: 401: the CSR's key is not the host key the fleet declares
    HostKeyMismatch,
    /// `nonce-used`: 409: the bootstrap token's nonce was used before
    NonceUsed,
    /// `nonce-not-allowed`: 401: CI's bootstrap-nonce allowlist in force does not list the nonce
    NonceNotAllowed,
    /// `nonce-other-host`: 401: CI's allowlist lists the nonce for another host
    NonceOtherHost,
    /// `nonce-expired`: 401: the nonce is past its expiresAt on CI's allowlist
    NonceExpired,
    /// `certificate-revoked`: 401: CI's revocation list refuses the client certificate's host
    /// for certificates issued before its notBefore
    CertificateRevoked,
}

impl ErrorCode {
    /// Every error code, in the order the OpenAPI description lists them.
    pub const ALL: &[ErrorCode] = &[
        ErrorCode::Unauthorized,
        ErrorCode::Forbidden,
        ErrorCode::WrongHost,
        ErrorCode::NotFound,
        ErrorCode::MethodNotAllowed,
        ErrorCode::Timeout,
        ErrorCode::BodyTooLarge,
        ErrorCode::UriTooLong,
        ErrorCode::UnsupportedMediaType,
        ErrorCode::BadBody,
        ErrorCode::MalformedJson,
        ErrorCode::MalformedPath,
        ErrorCode::MalformedRolloutId,
        ErrorCode::MalformedEvent,
        ErrorCode::MalformedHost,
        ErrorCode::BadQuery,
        ErrorCode::ReasonRequired,
        ErrorCode::BadKeyFile,
        ErrorCode::ConfigInvalid,
        ErrorCode::KeyInChain,
        ErrorCode::BadProtocolHeader,
        ErrorCode::ProtocolUnsupported,
        ErrorCode::BadProofRequest,
        ErrorCode::SignatureNotRecorded,
        ErrorCode::NotReady,
        ErrorCode::QueueFull,
        ErrorCode::Overloaded,
        ErrorCode::Reopening,
        ErrorCode::ShuttingDown,
        ErrorCode::WriterGone,
        ErrorCode::NotLeader,
        ErrorCode::NotAStandby,
        ErrorCode::StaleEpoch,
        ErrorCode::StandbyBehind,
        ErrorCode::StandbyDiverged,
        ErrorCode::InvalidShipment,
        ErrorCode::NotYet,
        ErrorCode::PromoteRefused,
        ErrorCode::Unavailable,
        ErrorCode::Internal,
        ErrorCode::IllegalTransition,
        ErrorCode::SeqRegression,
        ErrorCode::SeqReused,
        ErrorCode::SupersessionExpected,
        ErrorCode::UnknownRollout,
        ErrorCode::UnknownRolloutToClear,
        ErrorCode::UnknownHost,
        ErrorCode::RolloutPruned,
        ErrorCode::RolloutSuperseded,
        ErrorCode::Invariant,
        ErrorCode::NotQuarantined,
        ErrorCode::ManifestNoFleet,
        ErrorCode::ManifestFleetMismatch,
        ErrorCode::ManifestOutdated,
        ErrorCode::ManifestInvalid,
        ErrorCode::ManifestInvalidField,
        ErrorCode::ManifestSchemaVersion,
        ErrorCode::ManifestParse,
        ErrorCode::ManifestNotSigned,
        ErrorCode::ManifestBadSignature,
        ErrorCode::ManifestRejectedBefore,
        ErrorCode::ManifestStale,
        ErrorCode::ManifestFutureDated,
        ErrorCode::ManifestDiscriminator,
        ErrorCode::EnrollmentDisabled,
        ErrorCode::TokenVersion,
        ErrorCode::MalformedToken,
        ErrorCode::TokenNotValidNow,
        ErrorCode::BadTokenSignature,
        ErrorCode::CsrHostMismatch,
        ErrorCode::CsrFingerprintMismatch,
        ErrorCode::CertificateRequired,
        ErrorCode::MixedCredentials,
        ErrorCode::MalformedCsr,
        ErrorCode::CsrKeyNotEd25519,
        ErrorCode::IssueFailed,
        ErrorCode::HostNotInFleet,
        ErrorCode::NoHostKey,
        ErrorCode::HostKeyMismatch,
        ErrorCode::NonceUsed,
        ErrorCode::NonceNotAllowed,
        ErrorCode::NonceOtherHost,
        ErrorCode::NonceExpired,
        ErrorCode::CertificateRevoked,
    ];

    /// Its code, its status and what it means.
    const fn spec(self) -> (&'static str, StatusCode, &'static str) {
        match self {
            ErrorCode::Unauthorized => (
                "unauthorized",
                StatusCode::UNAUTHORIZED,
                "401: no or unknown bearer token, and no client certificate",
            ),
            ErrorCode::Forbidden => (
                "forbidden",
                StatusCode::FORBIDDEN,
                "403: the caller's role may not use this route",
            ),
            ErrorCode::WrongHost => (
                "wrong-host",
                StatusCode::FORBIDDEN,
                "403: an agent posting for another host than its identity",
            ),
            ErrorCode::NotFound => (
                "not-found",
                StatusCode::NOT_FOUND,
                "404: no such route or record",
            ),
            ErrorCode::MethodNotAllowed => (
                "method-not-allowed",
                StatusCode::METHOD_NOT_ALLOWED,
                "405: the route does not take this method",
            ),
            ErrorCode::Timeout => (
                "timeout",
                StatusCode::REQUEST_TIMEOUT,
                "408: the request took longer than limits.request_timeout_secs",
            ),
            ErrorCode::BodyTooLarge => (
                "body-too-large",
                StatusCode::PAYLOAD_TOO_LARGE,
                "413: the body is over limits.body_bytes",
            ),
            ErrorCode::UriTooLong => (
                "uri-too-long",
                StatusCode::URI_TOO_LONG,
                "414: the path and query are over 8 KiB",
            ),
            ErrorCode::UnsupportedMediaType => (
                "unsupported-media-type",
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "415: a body without Content-Type: application/json",
            ),
            ErrorCode::BadBody => (
                "bad-body",
                StatusCode::BAD_REQUEST,
                "400: the body could not be read",
            ),
            ErrorCode::MalformedJson => (
                "malformed-json",
                StatusCode::BAD_REQUEST,
                "400: the body is not the route's JSON shape",
            ),
            ErrorCode::MalformedPath => (
                "malformed-path",
                StatusCode::BAD_REQUEST,
                "400: a path segment could not be decoded",
            ),
            ErrorCode::MalformedRolloutId => (
                "malformed-rollout-id",
                StatusCode::BAD_REQUEST,
                "400: not `channel@channelRef`",
            ),
            ErrorCode::MalformedEvent => (
                "malformed-event",
                StatusCode::BAD_REQUEST,
                "400: an agent event that is not one of the twelve kinds",
            ),
            ErrorCode::MalformedHost => (
                "malformed-host",
                StatusCode::BAD_REQUEST,
                "400: not a valid host name",
            ),
            ErrorCode::BadQuery => (
                "bad-query",
                StatusCode::BAD_REQUEST,
                "400: the query string is not the route's parameters",
            ),
            ErrorCode::ReasonRequired => (
                "reason-required",
                StatusCode::BAD_REQUEST,
                "400: a clearance, lift or key rotation without a reason",
            ),
            ErrorCode::BadKeyFile => (
                "bad-key-file",
                StatusCode::BAD_REQUEST,
                "400: a key rotation's key_file is not an absolute path to a readable private key",
            ),
            ErrorCode::ConfigInvalid => (
                "config-invalid",
                StatusCode::CONFLICT,
                "409: a reload whose config does not load or validate (the one in force stays), or a daemon started without a config file",
            ),
            ErrorCode::KeyInChain => (
                "key-in-chain",
                StatusCode::CONFLICT,
                "409: a key rotation to a key the log has already used",
            ),
            ErrorCode::BadProtocolHeader => (
                "bad-protocol-header",
                StatusCode::BAD_REQUEST,
                "400: X-Nixfleet-Protocol is not a number",
            ),
            ErrorCode::ProtocolUnsupported => (
                "protocol-unsupported",
                StatusCode::UPGRADE_REQUIRED,
                "426: X-Nixfleet-Protocol names another major version",
            ),
            ErrorCode::BadProofRequest => (
                "bad-proof-request",
                StatusCode::UNPROCESSABLE_ENTITY,
                "422: a proof for a range the log does not have",
            ),
            ErrorCode::SignatureNotRecorded => (
                "signature-not-recorded",
                StatusCode::NOT_FOUND,
                "404: a manifest recorded before signatures were kept",
            ),
            ErrorCode::NotReady => (
                "not-ready",
                StatusCode::SERVICE_UNAVAILABLE,
                "503 (Retry-After: 30): no verified fleet manifest is in force yet",
            ),
            ErrorCode::NotLeader => (
                "not-leader",
                StatusCode::SERVICE_UNAVAILABLE,
                "503: this node stands by (failover); the writer is another node",
            ),
            ErrorCode::NotAStandby => (
                "not-a-standby",
                StatusCode::CONFLICT,
                "409: a batch shipped to the writer (failover)",
            ),
            ErrorCode::StaleEpoch => (
                "stale-epoch",
                StatusCode::CONFLICT,
                "409: a batch from a writer older than one this standby follows",
            ),
            ErrorCode::StandbyBehind => (
                "standby-behind",
                StatusCode::CONFLICT,
                "409: a batch extending entries this standby does not hold yet",
            ),
            ErrorCode::StandbyDiverged => (
                "standby-diverged",
                StatusCode::CONFLICT,
                "409: a batch extending a head this standby's log does not have",
            ),
            ErrorCode::InvalidShipment => (
                "invalid-shipment",
                StatusCode::UNPROCESSABLE_ENTITY,
                "422: a batch that does not continue the log as shipped",
            ),
            ErrorCode::PromoteRefused => (
                "promote-refused",
                StatusCode::CONFLICT,
                "409: this node may not take over (it lacks acknowledged entries)",
            ),
            ErrorCode::NotYet => (
                "not-yet",
                StatusCode::SERVICE_UNAVAILABLE,
                "503: `?min_size` asked for entries this node does not serve yet",
            ),
            ErrorCode::QueueFull => (
                "queue-full",
                StatusCode::SERVICE_UNAVAILABLE,
                "503: the writer's queue is full",
            ),
            ErrorCode::Overloaded => (
                "overloaded",
                StatusCode::SERVICE_UNAVAILABLE,
                "503: limits.concurrent_requests are in progress",
            ),
            ErrorCode::Reopening => (
                "reopening",
                StatusCode::SERVICE_UNAVAILABLE,
                "503: the ledger is being reopened after a failed commit",
            ),
            ErrorCode::ShuttingDown => (
                "shutting-down",
                StatusCode::SERVICE_UNAVAILABLE,
                "503: the daemon is stopping",
            ),
            ErrorCode::WriterGone => (
                "writer-gone",
                StatusCode::SERVICE_UNAVAILABLE,
                "503: the writer stopped before answering; the input may not be recorded",
            ),
            ErrorCode::Unavailable => (
                "unavailable",
                StatusCode::SERVICE_UNAVAILABLE,
                "503: an entry could not be read back; retry",
            ),
            ErrorCode::Internal => (
                "internal",
                StatusCode::INTERNAL_SERVER_ERROR,
                "500: a bug; the reason says where",
            ),
            ErrorCode::IllegalTransition => (
                "illegal-transition",
                StatusCode::CONFLICT,
                "409: not legal in the host's or rollout's current state",
            ),
            ErrorCode::SeqRegression => (
                "seq-regression",
                StatusCode::CONFLICT,
                "409: the agent seq is not above the last one accepted",
            ),
            ErrorCode::SeqReused => (
                "seq-reused",
                StatusCode::CONFLICT,
                "409: the last accepted agent seq again, with a different report",
            ),
            ErrorCode::SupersessionExpected => (
                "supersession-expected",
                StatusCode::CONFLICT,
                "409: a rollout would open beside an active one without superseding it",
            ),
            ErrorCode::UnknownRollout => (
                "unknown-rollout",
                StatusCode::UNPROCESSABLE_ENTITY,
                "422: a report to a rollout the ledger does not have",
            ),
            ErrorCode::UnknownRolloutToClear => (
                "unknown-rollout",
                StatusCode::NOT_FOUND,
                "404: a clearance of a rollout the ledger does not have",
            ),
            ErrorCode::UnknownHost => (
                "unknown-host",
                StatusCode::UNPROCESSABLE_ENTITY,
                "422: the host is not part of the rollout",
            ),
            ErrorCode::RolloutPruned => (
                "rollout-pruned",
                StatusCode::UNPROCESSABLE_ENTITY,
                "422: the rollout's retention expired",
            ),
            ErrorCode::RolloutSuperseded => (
                "rollout-superseded",
                StatusCode::UNPROCESSABLE_ENTITY,
                "422: the rollout was superseded (an agent report to it is recorded as refused: 200 with `refused`, and moves nothing)",
            ),
            ErrorCode::Invariant => (
                "invariant",
                StatusCode::UNPROCESSABLE_ENTITY,
                "422: the input would break an invariant",
            ),
            ErrorCode::NotQuarantined => (
                "not-quarantined",
                StatusCode::NOT_FOUND,
                "404: a lift of a closure that is not quarantined",
            ),
            ErrorCode::ManifestNoFleet => (
                "manifest-no-fleet",
                StatusCode::UNPROCESSABLE_ENTITY,
                "422: a rollout manifest before any fleet manifest",
            ),
            ErrorCode::ManifestFleetMismatch => (
                "manifest-fleet-mismatch",
                StatusCode::CONFLICT,
                "409: a rollout manifest built against another fleet than the one in force",
            ),
            ErrorCode::ManifestOutdated => (
                "manifest-outdated",
                StatusCode::CONFLICT,
                "409: signed no later than the manifest in force",
            ),
            ErrorCode::ManifestInvalid => (
                "manifest-invalid",
                StatusCode::UNPROCESSABLE_ENTITY,
                "422: the document is inconsistent or unreadable",
            ),
            ErrorCode::ManifestInvalidField => (
                "manifest-invalid-field",
                StatusCode::UNPROCESSABLE_ENTITY,
                "422: a field of the document (the reason names it)",
            ),
            ErrorCode::ManifestSchemaVersion => (
                "manifest-schema-version",
                StatusCode::UNPROCESSABLE_ENTITY,
                "422: a schemaVersion this build does not read",
            ),
            ErrorCode::ManifestParse => (
                "manifest-parse",
                StatusCode::UNPROCESSABLE_ENTITY,
                "422: the artifact is not JSON this build can canonicalize",
            ),
            ErrorCode::ManifestNotSigned => (
                "manifest-not-signed",
                StatusCode::UNPROCESSABLE_ENTITY,
                "422: no signature, or not 64 bytes",
            ),
            ErrorCode::ManifestBadSignature => (
                "manifest-bad-signature",
                StatusCode::UNPROCESSABLE_ENTITY,
                "422: no trusted key verifies the signature",
            ),
            ErrorCode::ManifestRejectedBefore => (
                "manifest-rejected-before",
                StatusCode::UNPROCESSABLE_ENTITY,
                "422: signed before the trust's rejectBefore",
            ),
            ErrorCode::ManifestStale => (
                "manifest-stale",
                StatusCode::UNPROCESSABLE_ENTITY,
                "422: older than trust.max_age_secs",
            ),
            ErrorCode::ManifestFutureDated => (
                "manifest-future-dated",
                StatusCode::UNPROCESSABLE_ENTITY,
                "422: signed more than 60 s ahead of the CP's clock",
            ),
            ErrorCode::ManifestDiscriminator => (
                "manifest-discriminator",
                StatusCode::UNPROCESSABLE_ENTITY,
                "422: a rollout manifest for another id than the route's or file's",
            ),
            ErrorCode::EnrollmentDisabled => (
                "enrollment-disabled",
                StatusCode::NOT_FOUND,
                "404: no `enrollment` in the config",
            ),
            ErrorCode::TokenVersion => (
                "token-version",
                StatusCode::UNAUTHORIZED,
                "401: a bootstrap token version other than 1",
            ),
            ErrorCode::MalformedToken => (
                "malformed-token",
                StatusCode::UNAUTHORIZED,
                "401: the token's claims cannot be read",
            ),
            ErrorCode::TokenNotValidNow => (
                "token-not-valid-now",
                StatusCode::UNAUTHORIZED,
                "401: the token is expired or not yet valid",
            ),
            ErrorCode::BadTokenSignature => (
                "bad-token-signature",
                StatusCode::UNAUTHORIZED,
                "401: no trusted org root key signed the token",
            ),
            ErrorCode::CsrHostMismatch => (
                "csr-host-mismatch",
                StatusCode::UNAUTHORIZED,
                "401: the CSR's CN is not the token's hostname (enrollment) or the presented certificate's host (renewal)",
            ),
            ErrorCode::CsrFingerprintMismatch => (
                "csr-fingerprint-mismatch",
                StatusCode::UNAUTHORIZED,
                "401: the CSR's key is not the one the token was minted for",
            ),
            ErrorCode::CertificateRequired => (
                "certificate-required",
                StatusCode::UNAUTHORIZED,
                "401: a renewal without the agent's client certificate",
            ),
            ErrorCode::MixedCredentials => (
                "mixed-credentials",
                StatusCode::UNAUTHORIZED,
                "401: a renewal that carries an Authorization header beside the client certificate",
            ),
            ErrorCode::MalformedCsr => (
                "malformed-csr",
                StatusCode::BAD_REQUEST,
                "400: the CSR cannot be read or its self-signature does not verify",
            ),
            ErrorCode::CsrKeyNotEd25519 => (
                "csr-key-not-ed25519",
                StatusCode::BAD_REQUEST,
                "400: the CSR's key is not ed25519",
            ),
            ErrorCode::IssueFailed => (
                "issue-failed",
                StatusCode::INTERNAL_SERVER_ERROR,
                "500: the fleet CA could not sign",
            ),
            ErrorCode::HostNotInFleet => (
                "host-not-in-fleet",
                StatusCode::UNAUTHORIZED,
                "401: the fleet in force does not declare the host",
            ),
            ErrorCode::NoHostKey => (
                "no-host-key",
                StatusCode::UNAUTHORIZED,
                "401: the fleet in force declares no ed25519 pubkey for the host",
            ),
            ErrorCode::HostKeyMismatch => (
                "host-key-mismatch",
                StatusCode::UNAUTHORIZED,
                "401: the CSR's key is not the host key the fleet declares",
            ),
            ErrorCode::NonceUsed => (
                "nonce-used",
                StatusCode::CONFLICT,
                "409: the bootstrap token's nonce was used before",
            ),
            ErrorCode::NonceNotAllowed => (
                "nonce-not-allowed",
                StatusCode::UNAUTHORIZED,
                "401: CI's bootstrap-nonce allowlist in force does not list the nonce",
            ),
            ErrorCode::NonceOtherHost => (
                "nonce-other-host",
                StatusCode::UNAUTHORIZED,
                "401: CI's allowlist lists the nonce for another host",
            ),
            ErrorCode::NonceExpired => (
                "nonce-expired",
                StatusCode::UNAUTHORIZED,
                "401: the nonce is past its expiresAt on CI's allowlist",
            ),
            ErrorCode::CertificateRevoked => (
                "certificate-revoked",
                StatusCode::UNAUTHORIZED,
                "401: CI's revocation list refuses the client certificate (issued before its host's notBefore)",
            ),
        }
    }

    /// The stable code, the body's `error`.
    pub const fn code(self) -> &'static str {
        self.spec().0
    }

    /// The HTTP status it answers with.
    pub const fn status(self) -> StatusCode {
        self.spec().1
    }

    /// What it means (the OpenAPI description).
    pub const fn description(self) -> &'static str {
        self.spec().2
    }

    /// The error a code given by another crate names (a planner refusal, a manifest the
    /// intake refused, an enrollment refusal): the first variant with that code.
    pub fn of(code: &str) -> Option<ErrorCode> {
        ErrorCode::ALL.iter().copied().find(|c| c.code() == code)
    }
}

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
    // One item per code: a code with two statuses is one item, its meanings joined.
    let mut codes: Vec<(&str, String)> = Vec::new();
    for c in ErrorCode::ALL {
        match codes.iter_mut().find(|(code, _)| *code == c.code()) {
            Some((_, meaning)) => {
                meaning.push_str("; ");
                meaning.push_str(c.description());
            }
            None => codes.push((c.code(), c.description().to_string())),
        }
    }
    codes
        .into_iter()
        .fold(OneOfBuilder::new(), |b, (code, meaning)| {
            b.item(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .enum_values(Some([code]))
                    .description(Some(meaning)),
            )
        })
        .description(Some("a stable error code"))
}
