//! TLS for the API, with optional client certificates: an agent that presents a certificate
//! signed by the configured client CA is identified by its certificate's CN, by nixfleet's
//! rule (`agent-<id>.<suffix>` is `<id>`, any other CN is the id as it is;
//! `crate::api::machine_id`). Clients without a certificate may still authenticate with a
//! bearer token.
//!
//! Handshakes run in each connection's task, bounded by the header-read timeout
//! (`crate::connections`), so a slow or hostile client cannot stall accepting others.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// The `tls` section of the config.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// Server certificate chain (PEM).
    pub cert: PathBuf,
    /// Server private key (PEM).
    pub key: PathBuf,
    /// CA whose client certificates identify agents (PEM). Without it, no client
    /// certificates are asked for.
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
    /// nixfleet's `--agent-cn-suffix` (e.g. `fleet.example.org`): a client certificate whose
    /// CN is `agent-<id>.<suffix>` identifies host `<id>`; any other CN is the host name as it
    /// is.
    #[serde(default)]
    pub agent_cn_suffix: Option<String>,
    /// nixfleet's operator certificates (`nixfleet mint-operator-cert`, CN
    /// `operator-<user>@<host>` by default): a client certificate whose CN starts with this
    /// prefix is an operator's, with a reader's rights (every read route, no agent route).
    /// Default `operator-`; empty: no certificate is an operator's.
    #[serde(default = "operator_prefix")]
    pub operator_cn_prefix: String,
    /// The CA operator certificates must be signed by (PEM: nixfleet's fleet root CA, which
    /// `client_ca` must list too). When set, a certificate with the operator prefix that this
    /// CA did not sign is no operator's.
    #[serde(default)]
    pub operator_ca: Option<PathBuf>,
}

fn operator_prefix() -> String {
    "operator-".into()
}

/// Which client certificates are operators' ([`TlsConfig::operator_cn_prefix`],
/// [`TlsConfig::operator_ca`]).
#[derive(Clone, Debug, Default)]
pub struct OperatorRule {
    prefix: String,
    /// The CA's certificate (DER), when operator certificates must be signed by it.
    ca: Option<Vec<u8>>,
}

impl OperatorRule {
    /// The rule `cfg` names (its CA file read and checked now).
    pub fn of(cfg: &TlsConfig) -> Result<OperatorRule, TlsError> {
        let ca = match &cfg.operator_ca {
            None => None,
            Some(path) => {
                let der = certs(path)?.swap_remove(0).to_vec();
                x509_parser::parse_x509_certificate(&der)
                    .map_err(|e| file_err(path)(format!("not an X.509 certificate: {e}")))?;
                Some(der)
            }
        };
        Ok(OperatorRule {
            prefix: cfg.operator_cn_prefix.clone(),
            ca,
        })
    }

    /// Whether the certificate `leaf` (DER, verified by the TLS layer), whose CN is `cn`, is
    /// an operator's. The CN is looked at first: an agent's request parses nothing more.
    pub fn is_operator(&self, cn: &str, leaf: &[u8]) -> bool {
        if self.prefix.is_empty() || !cn.starts_with(&self.prefix) {
            return false;
        }
        let Some(ca) = &self.ca else {
            return true;
        };
        let (Ok((_, cert)), Ok((_, ca))) = (
            x509_parser::parse_x509_certificate(leaf),
            x509_parser::parse_x509_certificate(ca),
        ) else {
            return false;
        };
        cert.issuer() == ca.subject() && cert.verify_signature(Some(ca.public_key())).is_ok()
    }
}

/// Why TLS could not be set up.
#[derive(Debug, Error)]
pub enum TlsError {
    /// A PEM file.
    #[error("{path}: {reason}")]
    File {
        /// The file, as named.
        path: PathBuf,
        /// What is wrong, in words for the message.
        reason: String,
    },
    /// rustls refused the material.
    #[error("TLS configuration: {0}")]
    Config(String),
}

fn file_err(path: &Path) -> impl Fn(String) -> TlsError + '_ {
    move |reason| TlsError::File {
        path: path.to_path_buf(),
        reason,
    }
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_err(path)(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_err(path)(e.to_string()))?;
    if certs.is_empty() {
        return Err(file_err(path)("no PEM certificate in the file".into()));
    }
    Ok(certs)
}

/// Builds the rustls server config (ring provider, TLS 1.2 and 1.3).
pub fn server_config(cfg: &TlsConfig) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = certs(&cfg.cert)?;
    let key =
        PrivateKeyDer::from_pem_file(&cfg.key).map_err(|e| file_err(&cfg.key)(e.to_string()))?;
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = match &cfg.client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in certs(ca)? {
                roots.add(c).map_err(|e| file_err(ca)(e.to_string()))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            // Token-authenticated clients (operators, auditors, CI) present no cert.
            .allow_unauthenticated()
            .build()
            .map_err(|e| TlsError::Config(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// What the API reads of a verified client certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientCert {
    /// Its subject's CN.
    pub cn: String,
    /// Its serial number (big-endian bytes).
    pub serial: Vec<u8>,
    /// Its `notBefore`, µs: a revocation refuses the certificates issued before it.
    pub not_before: ledger::domain::Micros,
}

/// The CN, serial number and `notBefore` of a client certificate (verified by rustls before
/// this is asked).
pub fn client_identity(der: &CertificateDer<'_>) -> Option<ClientCert> {
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
    let cn = cert
        .subject()
        .iter_common_name()
        .next()?
        .as_str()
        .ok()?
        .to_string();
    Some(ClientCert {
        cn,
        serial: cert.tbs_certificate.raw_serial().to_vec(),
        not_before: cert
            .validity()
            .not_before
            .timestamp()
            .saturating_mul(1_000_000),
    })
}
