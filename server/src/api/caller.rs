//! Who is calling (bearer token or client certificate), and the extractors that refuse a request as the API's error: a JSON body, a rollout id in the path.

use super::ErrorCode;
use super::{ApiError, ApiResult, AppState, rollout_id};
use crate::auth::{Principal, Role};
use crate::connections::Peer;
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use ledger::domain::{Hostname, RolloutId};
use serde::de::DeserializeOwned;

/// The authenticated caller (`Authorization: Bearer <token>`).
#[derive(Debug)]
pub struct Caller(pub Principal);

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> ApiResult<Caller> {
        let peer = parts
            .extensions
            .get::<axum::extract::ConnectInfo<Peer>>()
            .map(|p| &p.0);
        let caller = authenticate(parts, peer, state)?;
        // An authenticated connection is never closed to make room for a new one.
        if let Some(p) = peer {
            p.mark_trusted();
        }
        Ok(caller)
    }
}

/// Extractors that say in a handler's signature who may call it: the caller is authenticated
/// ([`Caller`]), then refused 403 `forbidden` unless its role is one of the extractor's.
macro_rules! role_extractor {
    ($(#[$doc:meta])* $name:ident: $($role:ident)|+) => {
        $(#[$doc])*
        #[derive(Debug)]
        pub(super) struct $name;

        impl FromRequestParts<AppState> for $name {
            type Rejection = ApiError;
            async fn from_request_parts(parts: &mut Parts, state: &AppState) -> ApiResult<$name> {
                let caller = Caller::from_request_parts(parts, state).await?;
                caller.require(&[$(Role::$role),+])?;
                Ok($name)
            }
        }
    };
    ($(#[$doc:meta])* $name:ident(who): $($role:ident)|+) => {
        $(#[$doc])*
        #[derive(Debug)]
        pub(super) struct $name(pub(super) Principal);

        impl FromRequestParts<AppState> for $name {
            type Rejection = ApiError;
            async fn from_request_parts(parts: &mut Parts, state: &AppState) -> ApiResult<$name> {
                let caller = Caller::from_request_parts(parts, state).await?;
                caller.require(&[$(Role::$role),+])?;
                Ok($name(caller.0))
            }
        }
    };
}

role_extractor!(
    /// An operator or an auditor: the read routes.
    Reader: Operator | Auditor
);
role_extractor!(
    /// An operator, by name: clearance, lifts, key rotation, reload.
    Operator(who): Operator
);
role_extractor!(
    /// CI, or an operator posting a manifest for it.
    Publisher: Ci | Operator
);
role_extractor!(
    /// Whoever may fetch the manifests in force: agents verify them before activating; the
    /// others audit them.
    Fetcher: Agent | Operator | Auditor | Ci
);
role_extractor!(
    /// Whoever may ask the closure proxy: agents, and the readers (operators, auditors).
    ClosureReader: Agent | Operator | Auditor
);
role_extractor!(
    /// An agent (by bearer token or client certificate): it may act for its own host only.
    Agent(who): Agent
);

impl Agent {
    /// The host this agent is, which must be `hostname` (403 `wrong-host` otherwise).
    pub(super) fn for_host(&self, hostname: &str) -> ApiResult<Hostname> {
        Caller(self.0.clone()).agent_for(hostname)
    }

    /// The host this agent is.
    pub(super) fn host(&self) -> ApiResult<Hostname> {
        Caller(self.0.clone()).host()
    }
}

/// nixfleet's CN rule (NIXFLEET-WIRE.md §1.3, `extract_machine_id`): a certificate it issues
/// has CN `agent-<machine id>.<suffix>`; any other CN (a legacy bare `web-01`, another
/// suffix) is the machine id unchanged. The suffix is configured with or without its
/// leading dot.
pub fn machine_id<'a>(cn: &'a str, suffix: Option<&str>) -> &'a str {
    let Some(suffix) = suffix.map(|s| s.trim_start_matches('.')) else {
        return cn;
    };
    cn.strip_prefix("agent-")
        .and_then(|rest| rest.strip_suffix(suffix))
        .and_then(|rest| rest.strip_suffix('.'))
        .filter(|id| !id.is_empty())
        .unwrap_or(cn)
}

/// The host a verified client certificate names (nixfleet's CN rule), or 401.
pub(super) fn certificate_host(cn: &str, state: &AppState) -> ApiResult<Hostname> {
    Hostname::parse(machine_id(cn, state.cn_suffix.as_deref()))
        .map_err(|e| ApiError::new(ErrorCode::Unauthorized, e.to_string()))
}

pub(super) fn authenticate(
    parts: &Parts,
    peer: Option<&Peer>,
    state: &AppState,
) -> ApiResult<Caller> {
    let unauthorized = |why: &str| ApiError::new(ErrorCode::Unauthorized, why.to_string());
    let Some(value) = parts.headers.get(header::AUTHORIZATION) else {
        // No token: an agent or an operator may be identified by its verified client
        // certificate. An operator's has a reader's rights: nixfleet has no operator write
        // route, and an auditor's role is exactly the read routes (DECISIONS 129).
        let cn = peer.and_then(|p| p.cn.clone()).ok_or_else(|| {
            unauthorized("missing Authorization: Bearer <token> (or a client certificate)")
        })?;
        not_revoked(&cn, peer.and_then(|p| p.not_before), state)?;
        if peer
            .and_then(|p| p.leaf.as_deref())
            .is_some_and(|leaf| state.operators.is_operator(&cn, leaf))
        {
            return Ok(Caller(Principal {
                role: Role::Auditor,
                name: cn,
            }));
        }
        return Ok(Caller(Principal {
            role: Role::Agent,
            name: certificate_host(&cn, state)?.to_string(),
        }));
    };
    let token = value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| unauthorized("Authorization is not `Bearer <token>`"))?;
    state
        .access
        .get()
        .tokens
        .authenticate(token.trim())
        .cloned()
        .map(Caller)
        .ok_or_else(|| unauthorized("unknown token"))
}

/// CI's revocations in force refuse a client certificate whose host (nixfleet's CN rule,
/// whatever the certificate's kind, as nixfleet checks) is revoked for certificates issued
/// before the certificate's `notBefore` (NIXFLEET-WIRE.md §9.1; equal passes).
pub(super) fn not_revoked(
    cn: &str,
    not_before: Option<ledger::domain::Micros>,
    state: &AppState,
) -> ApiResult<()> {
    let host = machine_id(cn, state.cn_suffix.as_deref());
    let revoked = state.shared.revoked();
    // A certificate whose notBefore could not be read is older than any revocation.
    let issued = not_before.unwrap_or(ledger::domain::Micros::MIN);
    match revoked.refuses(host, issued) {
        None => Ok(()),
        Some(cutoff) => {
            state.shared.metrics.reject("certificate-revoked");
            Err(ApiError::new(
                ErrorCode::CertificateRevoked,
                format!(
                    "the certificates of {host} issued before {} are revoked (CI's revocation list, entry {}); this one was issued {}",
                    planner::decide::rfc3339(cutoff),
                    revoked.list.unwrap_or_default(),
                    planner::decide::rfc3339(issued),
                ),
            ))
        }
    }
}

impl Caller {
    pub(super) fn require(&self, roles: &[Role]) -> ApiResult<&Principal> {
        if roles.contains(&self.0.role) {
            Ok(&self.0)
        } else {
            Err(ApiError::new(
                ErrorCode::Forbidden,
                format!(
                    "{} {:?} may not use this route (needs one of {roles:?})",
                    self.0.name, self.0.role
                ),
            ))
        }
    }

    /// An agent acting for `hostname`, which must be itself.
    pub(super) fn agent_for(&self, hostname: &str) -> ApiResult<Hostname> {
        self.require(&[Role::Agent])?;
        if self.0.name != hostname {
            return Err(ApiError::new(
                ErrorCode::WrongHost,
                format!("agent {} may not post for host {hostname:?}", self.0.name),
            ));
        }
        self.host()
    }

    /// The host an agent caller is.
    pub(super) fn host(&self) -> ApiResult<Hostname> {
        Hostname::parse(&self.0.name)
            .map_err(|e| ApiError::new(ErrorCode::MalformedHost, e.to_string()))
    }
}

/// A request body that must be JSON: `Content-Type: application/json` (any parameters, such
/// as a charset, allowed), at most `limits.body_bytes`, read whole. Refusals are the API's
/// errors: 415 without the header, 413 when too large, 400 when the body cannot be read.
pub(super) struct JsonBody(pub(super) Bytes);

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = ApiError;
    async fn from_request(req: axum::extract::Request, state: &S) -> ApiResult<JsonBody> {
        let content_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let essence = content_type.split(';').next().unwrap_or("").trim();
        if !essence.eq_ignore_ascii_case("application/json") {
            return Err(ApiError::new(
                ErrorCode::UnsupportedMediaType,
                if content_type.is_empty() {
                    "the body must be JSON with Content-Type: application/json (none was given)"
                        .to_string()
                } else {
                    format!(
                        "the body must be JSON with Content-Type: application/json, not {content_type:?}"
                    )
                },
            ));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(ErrorCode::BodyTooLarge, e.body_text())
            } else {
                ApiError::new(ErrorCode::BadBody, e.body_text())
            }
        })?;
        Ok(JsonBody(bytes))
    }
}

pub(super) fn parse_body<T: DeserializeOwned>(body: JsonBody) -> ApiResult<T> {
    serde_json::from_slice(&body.0)
        .map_err(|e| ApiError::new(ErrorCode::MalformedJson, e.to_string()))
}

/// The `{id}` of a rollout route: percent-decoded and shape-checked, refused as the API's
/// error (axum's own rejection is a text/plain 400).
pub(super) struct RolloutPath(pub(super) RolloutId);

impl<S: Send + Sync> FromRequestParts<S> for RolloutPath {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> ApiResult<RolloutPath> {
        let Path(id) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::new(ErrorCode::MalformedPath, e.body_text()))?;
        rollout_id(&id).map(RolloutPath)
    }
}

#[cfg(test)]
mod tests {
    use super::machine_id;

    /// NIXFLEET-WIRE.md §1.3: strip `agent-` and `.<suffix>` together, or nothing.
    #[test]
    fn machine_ids_follow_nixfleets_cn_rule() {
        let s = Some("fleet.lab.internal");
        for (cn, suffix, id) in [
            ("agent-web-01.fleet.lab.internal", s, "web-01"),
            (
                "agent-web-01.fleet.lab.internal",
                Some(".fleet.lab.internal"),
                "web-01",
            ),
            ("web-01", s, "web-01"),
            (
                "agent-web-01.other.example",
                s,
                "agent-web-01.other.example",
            ),
            ("web-01.fleet.lab.internal", s, "web-01.fleet.lab.internal"),
            ("agent-.fleet.lab.internal", s, "agent-.fleet.lab.internal"),
            (
                "agent-web-01xfleet.lab.internal",
                s,
                "agent-web-01xfleet.lab.internal",
            ),
            (
                "agent-web-01.fleet.lab.internal",
                None,
                "agent-web-01.fleet.lab.internal",
            ),
        ] {
            assert_eq!(machine_id(cn, suffix), id, "{cn} with {suffix:?}");
        }
    }
}
