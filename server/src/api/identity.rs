//! Agent identity: `POST /v1/enroll` (anonymous: a bootstrap token) and
//! `POST /v1/agent/renew` (the client certificate the CA issued), nixfleet's wire
//! (NIXFLEET-WIRE.md §5). The certificate is answered only once the entry recording it is
//! durable: who got which identity, when, on what token.

use super::ErrorCode;
use super::{
    ApiError, ApiResult, AppState, ErrorBody, JsonBody, caller, parse_body, submit, unexpected,
};
use crate::connections::Peer;
use crate::enrollment::{Authority, BootstrapToken, Csr, IdentityError};
use axum::Json;
use axum::extract::{FromRequestParts, State};
use axum::http::header;
use axum::http::request::Parts;
use engine::writer::{Answer, Input};
use ledger::domain::Hostname;
use ledger::event::{AgentCertificateRenewed, AgentEnrolled};
use serde::{Deserialize, Serialize};
use wire::ts;

/// nixfleet's `EnrollRequest`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct EnrollRequest {
    token: BootstrapToken,
    /// PKCS#10 PEM: CN = the machine id, key = the host's SSH ed25519 key.
    csr_pem: String,
}

/// nixfleet's `RenewRequest`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct RenewRequest {
    /// PKCS#10 PEM of the same host key.
    csr_pem: String,
}

/// An issued certificate (nixfleet's `EnrollResponse`/`RenewResponse`).
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct Issued {
    /// PEM; CN and SAN `agent-<host>.<suffix>`, EKU clientAuth, from the fleet CA.
    cert_pem: String,
    /// RFC 3339.
    not_after: String,
}

/// nixfleet's statuses, which each code carries ([`ErrorCode`]): a malformed CSR or a
/// non-ed25519 key is 400, a token or CSR that does not authorize the identity 401.
impl From<IdentityError> for ApiError {
    fn from(e: IdentityError) -> ApiError {
        ApiError::of(e.code(), e.to_string())
    }
}

/// The identity a renewal acts for: the verified client certificate the connection presented,
/// and nothing else.
///
/// A renewal replaces that certificate, so the certificate alone says who is renewing. Any
/// other credential on the request (a bearer token) is refused rather than weighed against
/// it: a token for another host beside a certificate must not renew that other host, nor
/// record the certificate's serial against it.
pub(super) struct CertificateHolder {
    host: Hostname,
    serial: Vec<u8>,
    not_before: Option<ledger::domain::Micros>,
}

impl FromRequestParts<AppState> for CertificateHolder {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> ApiResult<Self> {
        let peer = parts
            .extensions
            .get::<axum::extract::ConnectInfo<Peer>>()
            .map(|p| &p.0);
        let certificate = peer.and_then(|p| p.cn.clone().zip(p.serial.clone()));
        if parts.headers.contains_key(header::AUTHORIZATION) && certificate.is_some() {
            return Err(ApiError::new(
                ErrorCode::MixedCredentials,
                "a renewal is authorized by the client certificate alone: send no Authorization header with it",
            ));
        }
        let Some((cn, serial)) = certificate else {
            return Err(ApiError::new(
                ErrorCode::CertificateRequired,
                "renewal needs the agent's client certificate (mTLS), not a bearer token",
            ));
        };
        // A revoked certificate renews nothing: CI revoked it so that its holder cannot
        // go on, and a renewal would hand it a fresh one.
        caller::not_revoked(&cn, peer.and_then(|p| p.not_before), state)?;
        let host = caller::certificate_host(&cn, state)?;
        if let Some(p) = peer {
            p.mark_trusted();
        }
        Ok(CertificateHolder {
            host,
            serial,
            not_before: peer.and_then(|p| p.not_before),
        })
    }
}

/// Signs off the async runtime: a CA key held by a sign wrapper is a process run per
/// certificate (up to its deadline).
async fn issue(
    state: &AppState,
    host: &Hostname,
    csr: Csr,
    now: ledger::domain::Micros,
) -> ApiResult<(ledger::event::IssuedCertificate, String)> {
    authority(state)?;
    let ca = state.enrollment.clone();
    let host = host.to_string();
    tokio::task::spawn_blocking(move || match ca.as_deref() {
        Some(ca) => ca.issue(&host, csr, now).map_err(ApiError::from),
        None => Err(ApiError::new(ErrorCode::EnrollmentDisabled, "no fleet CA")),
    })
    .await
    .map_err(ApiError::internal)?
}

fn authority(state: &AppState) -> ApiResult<&Authority> {
    state.enrollment.as_deref().ok_or_else(|| {
        ApiError::new(
            ErrorCode::EnrollmentDisabled,
            "this control plane does not issue agent certificates (no `enrollment` in its config)",
        )
    })
}

fn issued(cert_pem: String, not_after: ledger::domain::Micros) -> Json<Issued> {
    Json(Issued {
        cert_pem,
        not_after: ts::format(not_after),
    })
}

/// Enrollment: a certificate for a host on a bootstrap token, once recorded
/// (`AgentEnrolled`). Anonymous: the token is the credential.
#[utoipa::path(post, path = "/v1/enroll", tag = "agents", request_body = EnrollRequest,
    responses((status = 200, body = Issued), (status = "4XX", body = ErrorBody),
        (status = 503, body = ErrorBody, description = "not-ready: no fleet in force yet; retry")))]
pub(super) async fn enroll(
    State(state): State<AppState>,
    body: JsonBody,
) -> ApiResult<Json<Issued>> {
    let ca = authority(&state)?;
    let req: EnrollRequest = parse_body(body)?;
    // The org root key as the trust file has it now, as nixfleet reads it at every
    // enrollment.
    state.reloader.follow_trust_file().await;
    let now = (state.clock)();
    let csr = Csr::parse(&req.csr_pem)?;
    let token = ca.check_token(&state.access.get().org_root, &req.token, &csr, now)?;
    let host = Hostname::parse(&csr.common_name)
        .map_err(|e| ApiError::new(ErrorCode::MalformedHost, e.to_string()))?;
    let (certificate, pem) = issue(&state, &host, csr, now).await?;
    let not_after = certificate.not_after;
    let nonce = token.nonce.clone();
    let out = submit(
        &state,
        Input::Enroll(Box::new(AgentEnrolled {
            hostname: host.to_string(),
            token,
            certificate,
        })),
    )
    .await?;
    let Answer::Recorded { seq, .. } = out else {
        return Err(unexpected(out));
    };
    tracing::info!(%host, seq, %nonce, "agent enrolled");
    Ok(issued(pem, not_after))
}

/// Renewal: a new certificate for the host the presented client certificate names, once
/// recorded (`AgentCertificateRenewed`).
#[utoipa::path(post, path = "/v1/agent/renew", tag = "agents", request_body = RenewRequest,
    responses((status = 200, body = Issued), (status = "4XX", body = ErrorBody),
        (status = 503, body = ErrorBody)),
    security(("mtls" = [])))]
pub(super) async fn renew(
    State(state): State<AppState>,
    CertificateHolder {
        host,
        serial: presented_serial,
        not_before: presented_not_before,
    }: CertificateHolder,
    body: JsonBody,
) -> ApiResult<Json<Issued>> {
    authority(&state)?;
    let req: RenewRequest = parse_body(body)?;
    let now = (state.clock)();
    let csr = Csr::parse(&req.csr_pem)?;
    // The CSR names the machine it is for (nixfleet's agent puts its machine id in the CN);
    // one naming another host than the certificate is another credential, refused.
    if csr.common_name != host.as_str() {
        return Err(IdentityError::CsrNotCertificateHost {
            csr: csr.common_name.clone(),
            host: host.to_string(),
        }
        .into());
    }
    let (certificate, pem) = issue(&state, &host, csr, now).await?;
    let not_after = certificate.not_after;
    let out = submit(
        &state,
        Input::Renew {
            renewed: Box::new(AgentCertificateRenewed {
                hostname: host.to_string(),
                presented_serial,
                certificate,
            }),
            presented_not_before,
        },
    )
    .await?;
    let Answer::Recorded { seq, .. } = out else {
        return Err(unexpected(out));
    };
    tracing::info!(%host, seq, "agent certificate renewed");
    Ok(issued(pem, not_after))
}
