//! Agent identity: the fleet CA that issues nixfleet agents their client certificates on
//! `POST /v1/enroll` (a bootstrap token signed by the org root key) and
//! `POST /v1/agent/renew` (the certificate it issued before), as NIXFLEET-WIRE.md §5 has it.
//!
//! This module checks what needs no ledger state (the token's version, validity window and
//! signature; the CSR's self-signature, CN and key) and signs the certificate. Whether the
//! fleet in force binds the host to that key, and whether the token's nonce is unused, the
//! writer decides (`planner::decide`, `Input::Enroll`/`Input::Renew`), so the certificate
//! leaves the daemon only once its `AgentEnrolled`/`AgentCertificateRenewed` entry is durable.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use ledger::domain::Micros;
use ledger::event::{BootstrapTokenRecord, IssuedCertificate};
use rcgen::{
    CertificateSigningRequestParams, DnType, DnValue, ExtendedKeyUsagePurpose, Issuer, KeyPair,
    KeyUsagePurpose, SanType, SerialNumber,
};
use serde::{Deserialize, Serialize};
use sha2::Digest as _;
use thiserror::Error;

use crate::trust::{KeySlot, TrustedKeys};

/// nixfleet's default agent certificate validity (`--agent-cert-validity-secs`): 30 days.
pub const DEFAULT_VALIDITY_SECS: u64 = 30 * 24 * 3600;
/// The shortest validity nixfleet allows.
pub const MIN_VALIDITY_SECS: u64 = 60;

/// The `enrollment` section of the config.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollmentConfig {
    /// The fleet CA's certificate (PEM). Agents' certificates chain to it, so it belongs in
    /// `tls.client_ca` too.
    pub ca_cert: PathBuf,
    /// The fleet CA's private key (PEM: PKCS#8 ed25519 or P-256, or SEC1 P-256), re-read
    /// at a reload. Not needed when a sign wrapper holds the key (`tpm_ca_sign_wrapper`).
    #[serde(default)]
    pub ca_key: Option<PathBuf>,
    /// nixfleet's `--tpm-ca-pubkey-raw`: the CA's P-256 public key as 64 raw bytes `X‖Y`.
    /// With `tpm_ca_sign_wrapper`, the CA key is held by the wrapper (a TPM), never on disk.
    #[serde(default)]
    pub tpm_ca_pubkey_raw: Option<PathBuf>,
    /// nixfleet's `--tpm-ca-sign-wrapper`: a program run as `<wrapper> <file>` (stdin
    /// closed) that writes to stdout the 64-byte `r‖s` ECDSA P-256 SHA-256 signature over
    /// the file's bytes (a certificate's to-be-signed part).
    #[serde(default)]
    pub tpm_ca_sign_wrapper: Option<PathBuf>,
    /// nixfleet's `--allow-file-ca-key`: lets `strict` start with `ca_key` on disk.
    #[serde(default)]
    pub allow_file_ca_key: bool,
    /// Validity of the certificates it issues, seconds (at least 60).
    #[serde(default = "default_validity")]
    pub cert_validity_secs: u64,
    /// The org root key that signs bootstrap tokens (nixfleet's `orgRootKey`; ed25519
    /// keys only). The trust file's `orgRootKey`, when `trust.trust_file` is set, is added.
    #[serde(default)]
    pub org_root_key: Option<KeySlot>,
}

fn default_validity() -> u64 {
    DEFAULT_VALIDITY_SECS
}

/// Why the fleet CA could not be set up (a config error: the daemon does not start).
#[derive(Debug, Error)]
pub enum SetupError {
    /// A file.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong, in words for the message.
        reason: String,
    },
    /// Anything else.
    #[error("{0}")]
    Invalid(String),
}

/// Why an enrollment or renewal request is refused before the writer sees it. Each maps to
/// nixfleet's status (`api::enroll`).
#[derive(Debug, Error, PartialEq, Eq)]
pub enum IdentityError {
    /// The token's version is not 1.
    #[error("bootstrap token version {0} is not supported (this control plane reads 1)")]
    TokenVersion(u32),
    /// The token is not valid at the CP's time.
    #[error("bootstrap token is valid from {from} until {until}, not now ({now})")]
    TokenTime {
        /// `issuedAt`.
        from: String,
        /// `expiresAt`.
        until: String,
        /// CP time.
        now: String,
    },
    /// The token's fields cannot be read.
    #[error("bootstrap token claims: {0}")]
    TokenClaims(String),
    /// No trusted org root key signed the token.
    #[error("bootstrap token signature does not verify against any trusted org root key")]
    TokenSignature,
    /// The CSR cannot be read, or its self-signature does not verify.
    #[error("CSR: {0}")]
    Csr(String),
    /// The CSR's key is not ed25519 (nixfleet agents use their SSH ed25519 host key).
    #[error("the CSR's key is not ed25519 (the agent's key is its SSH ed25519 host key)")]
    CsrKey,
    /// The CSR is for another host than the token.
    #[error("the CSR's CN {csr:?} is not the token's hostname {token:?}")]
    CsrHost {
        /// The common name the CSR asks for.
        csr: String,
        /// `claims.hostname`.
        token: String,
    },
    /// A renewal's CSR is for another host than the certificate presented.
    #[error("the CSR's CN {csr:?} is not the host {host:?} the presented certificate names")]
    CsrNotCertificateHost {
        /// The common name the CSR asks for.
        csr: String,
        /// The certificate's machine id.
        host: String,
    },
    /// The CSR's key is not the one the token was minted for.
    #[error("the CSR's key fingerprint {csr} is not the token's expectedPubkeyFingerprint {token}")]
    CsrFingerprint {
        /// Fingerprint of the CSR's key.
        csr: String,
        /// The token's.
        token: String,
    },
    /// Signing the certificate failed.
    #[error("issuing the certificate: {0}")]
    Issue(String),
}

impl IdentityError {
    /// A stable code.
    pub fn code(&self) -> &'static str {
        match self {
            IdentityError::TokenVersion(_) => "token-version",
            IdentityError::TokenTime { .. } => "token-not-valid-now",
            IdentityError::TokenClaims(_) => "malformed-token",
            IdentityError::TokenSignature => "bad-token-signature",
            IdentityError::Csr(_) => "malformed-csr",
            IdentityError::CsrKey => "csr-key-not-ed25519",
            IdentityError::CsrHost { .. } => "csr-host-mismatch",
            IdentityError::CsrNotCertificateHost { .. } => "csr-host-mismatch",
            IdentityError::CsrFingerprint { .. } => "csr-fingerprint-mismatch",
            IdentityError::Issue(_) => "issue-failed",
        }
    }
}

/// nixfleet's `BootstrapToken` as the agent sends it.
#[derive(Clone, Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BootstrapToken {
    /// Must be 1.
    pub version: u32,
    /// The claims, kept as sent: the signature covers their JCS form.
    #[schema(value_type = Claims)]
    pub claims: serde_json::Value,
    /// Base64 of the raw ed25519 signature over the claims' JCS bytes.
    pub signature: String,
}

/// nixfleet's `TokenClaims`; the org root key signed their JCS form.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Claims {
    /// The machine id (the CSR's CN).
    hostname: String,
    /// Base64 of SHA-256 of the raw 32-byte ed25519 key the CSR must carry.
    expected_pubkey_fingerprint: String,
    /// RFC 3339.
    issued_at: String,
    /// RFC 3339.
    expires_at: String,
    /// 16 random bytes as hex; accepted once, ever.
    nonce: String,
}

/// A CSR the CA accepts: self-signed by an ed25519 key, with a CN.
#[derive(Debug)]
pub struct Csr {
    params: CertificateSigningRequestParams,
    /// The CSR's CN.
    pub common_name: String,
    /// Its raw ed25519 public key.
    pub public_key: [u8; 32],
}

impl Csr {
    /// Parses a PEM CSR and checks its self-signature and key type.
    pub fn parse(pem: &str) -> Result<Csr, IdentityError> {
        let params = CertificateSigningRequestParams::from_pem(pem)
            .map_err(|e| IdentityError::Csr(e.to_string()))?;
        let common_name = params
            .params
            .distinguished_name
            .get(&DnType::CommonName)
            .and_then(|v| match v {
                DnValue::PrintableString(s) => Some(s.to_string()),
                DnValue::Utf8String(s) => Some(s.clone()),
                _ => None,
            })
            .ok_or_else(|| IdentityError::Csr("the CSR has no CN".into()))?;
        use rcgen::PublicKeyData as _;
        if params.public_key.algorithm() != &rcgen::PKCS_ED25519 {
            return Err(IdentityError::CsrKey);
        }
        let public_key = params
            .public_key
            .der_bytes()
            .try_into()
            .map_err(|_| IdentityError::CsrKey)?;
        Ok(Csr {
            params,
            common_name,
            public_key,
        })
    }

    /// nixfleet's key fingerprint: base64 of SHA-256 of the raw 32-byte key.
    pub fn fingerprint(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(self.public_key))
    }
}

/// The org root keys that may sign bootstrap tokens: `enrollment.org_root_key` and the trust
/// file's `orgRootKey` (`extra_root`), ed25519 only as nixfleet has them. At least one is
/// required. They are part of the access in force (`reload::Access`): a reload applies them
/// and records the change, as it does CI's keys.
pub fn org_root_keys(
    cfg: &EnrollmentConfig,
    extra_root: Option<&KeySlot>,
) -> Result<TrustedKeys, SetupError> {
    let mut org_root = TrustedKeys::default();
    for (field, slot) in [
        ("enrollment.org_root_key", cfg.org_root_key.as_ref()),
        ("trust file orgRootKey", extra_root),
    ] {
        if let Some(slot) = slot {
            org_root
                .add_slot(field, slot)
                .map_err(SetupError::Invalid)?;
        }
    }
    // nixfleet verifies bootstrap tokens with ed25519 org root keys only.
    org_root.retain_ed25519();
    if org_root.is_empty() {
        return Err(SetupError::Invalid(
            "enrollment needs an ed25519 org root key (enrollment.org_root_key, or orgRootKey in the trust file) to verify bootstrap tokens".into(),
        ));
    }
    Ok(org_root)
}

/// The fleet CA (the org root keys that sign bootstrap tokens are the access in force's).
pub struct Authority {
    issuer: Issuer<'static, CaKey>,
    validity: Duration,
    cn_suffix: String,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority")
            .field("validity", &self.validity)
            .field("cn_suffix", &self.cn_suffix)
            .finish_non_exhaustive()
    }
}

/// A CA key or certificate (PEM: a few KiB; a chain at most tens).
const PEM_FILE_BYTES_MAX: u64 = 256 * 1024;

fn read(path: &Path) -> Result<String, SetupError> {
    let bytes = ledger::keys::read_regular_file(path, PEM_FILE_BYTES_MAX).map_err(|e| {
        SetupError::File {
            path: path.to_path_buf(),
            reason: e.to_string(),
        }
    })?;
    String::from_utf8(bytes).map_err(|_| SetupError::File {
        path: path.to_path_buf(),
        reason: "not UTF-8 text".to_string(),
    })
}

/// The CA key from PEM: PKCS#8 (ed25519, P-256), or a SEC1 P-256 key (`EC PRIVATE KEY`, as
/// `openssl ecparam -genkey` writes it), converted to PKCS#8 for the signer.
fn ca_key(path: &Path) -> Result<KeyPair, SetupError> {
    let text = read(path)?;
    let bad = |reason: String| SetupError::File {
        path: path.to_path_buf(),
        reason,
    };
    if text.contains("-----BEGIN EC PRIVATE KEY-----") {
        use p256::pkcs8::EncodePrivateKey as _;
        let key = p256::SecretKey::from_sec1_pem(&text)
            .map_err(|e| bad(format!("not a SEC1 P-256 key: {e}")))?;
        let der = key
            .to_pkcs8_der()
            .map_err(|e| bad(format!("converting the SEC1 key: {e}")))?;
        return KeyPair::try_from(der.as_bytes()).map_err(|e| bad(e.to_string()));
    }
    KeyPair::from_pem(&text).map_err(|e| {
        bad(format!(
            "not a PKCS#8 ed25519 or P-256 key (or a SEC1 P-256 key): {e}"
        ))
    })
}

/// The fleet CA's signing key: a key file, or a sign wrapper (nixfleet's TPM interface).
#[derive(Debug)]
pub enum CaKey {
    /// A private key read from a file.
    File(KeyPair),
    /// A key held by an external program.
    Wrapper(WrapperKey),
}

impl rcgen::PublicKeyData for CaKey {
    fn der_bytes(&self) -> &[u8] {
        match self {
            CaKey::File(k) => k.der_bytes(),
            CaKey::Wrapper(w) => &w.point,
        }
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        match self {
            CaKey::File(k) => k.algorithm(),
            CaKey::Wrapper(_) => &rcgen::PKCS_ECDSA_P256_SHA256,
        }
    }
}

impl rcgen::SigningKey for CaKey {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        match self {
            CaKey::File(k) => k.sign(msg),
            CaKey::Wrapper(w) => w
                .sign(msg)
                .map(|sig| sig.to_der().as_bytes().to_vec())
                .map_err(|e| {
                    tracing::error!(wrapper = %w.wrapper.display(), error = %e, "CA sign wrapper");
                    rcgen::Error::RemoteKeyError
                }),
        }
    }
}

/// A P-256 CA key held by a sign wrapper (nixfleet's `--tpm-ca-*`, NIXFLEET-WIRE.md §9.4).
#[derive(Debug)]
pub struct WrapperKey {
    /// The program.
    wrapper: PathBuf,
    /// The public key, SEC1 uncompressed (`04‖X‖Y`), as the certificate carries it.
    point: Vec<u8>,
    key: p256::ecdsa::VerifyingKey,
    /// How long the wrapper may take.
    deadline: Duration,
}

/// How long a sign wrapper may take (a TPM signs in well under a second).
const WRAPPER_DEADLINE: Duration = Duration::from_secs(10);

impl WrapperKey {
    /// Reads the 64-byte public key and proves the wrapper signs with it: a probe signature
    /// must verify, so a wrapper that cannot sign stops the daemon at start, not an agent at
    /// enrollment.
    pub fn load(public: &Path, wrapper: &Path) -> Result<WrapperKey, SetupError> {
        WrapperKey::load_within(public, wrapper, WRAPPER_DEADLINE)
    }

    fn load_within(
        public: &Path,
        wrapper: &Path,
        deadline: Duration,
    ) -> Result<WrapperKey, SetupError> {
        let raw = ledger::keys::read_regular_file(public, 64).map_err(|e| SetupError::File {
            path: public.to_path_buf(),
            reason: e.to_string(),
        })?;
        let bad = |reason: String| SetupError::File {
            path: public.to_path_buf(),
            reason,
        };
        if raw.len() != 64 {
            return Err(bad(format!(
                "{} bytes, not the 64 raw bytes X‖Y of a P-256 point",
                raw.len()
            )));
        }
        let mut point = vec![4u8];
        point.extend_from_slice(&raw);
        let key = p256::ecdsa::VerifyingKey::from_sec1_bytes(&point)
            .map_err(|e| bad(format!("not a P-256 point: {e}")))?;
        let w = WrapperKey {
            wrapper: wrapper.to_path_buf(),
            point,
            key,
            deadline,
        };
        let probe = b"fleet-ledger: sign wrapper probe";
        let sig = w.sign(probe).map_err(|e| SetupError::File {
            path: wrapper.to_path_buf(),
            reason: e,
        })?;
        use p256::ecdsa::signature::Verifier as _;
        w.key.verify(probe, &sig).map_err(|_| SetupError::File {
            path: wrapper.to_path_buf(),
            reason: format!(
                "its signature does not verify with the key in {}",
                public.display()
            ),
        })?;
        Ok(w)
    }

    /// Runs the wrapper on `msg`: `<wrapper> <file>`, stdin closed, 64 bytes `r‖s` out.
    fn sign(&self, msg: &[u8]) -> Result<p256::ecdsa::Signature, String> {
        use std::io::Read as _;
        let mut file = tempfile::NamedTempFile::new().map_err(|e| format!("temp file: {e}"))?;
        std::io::Write::write_all(&mut file, msg).map_err(|e| format!("temp file: {e}"))?;
        let mut child = std::process::Command::new(&self.wrapper)
            .arg(file.path())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", self.wrapper.display()))?;
        // Read both pipes on their own threads (a chatty wrapper must not block on a full
        // pipe), at most 4 KiB each.
        let pipe = |r: Option<Box<dyn std::io::Read + Send>>| {
            std::thread::spawn(move || {
                let mut out = Vec::new();
                if let Some(r) = r {
                    let _ = r.take(4096).read_to_end(&mut out);
                }
                out
            })
        };
        let stdout = pipe(child.stdout.take().map(|o| Box::new(o) as _));
        let stderr = pipe(child.stderr.take().map(|o| Box::new(o) as _));
        let deadline = std::time::Instant::now() + self.deadline;
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Ok(None) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(format!(
                        "{} did not finish within {} ms",
                        self.wrapper.display(),
                        self.deadline.as_millis()
                    ));
                }
                Err(e) => return Err(format!("waiting for {}: {e}", self.wrapper.display())),
            }
        };
        let out = stdout.join().unwrap_or_default();
        let err = stderr.join().unwrap_or_default();
        if !status.success() {
            return Err(format!(
                "{} exited with {status}: {}",
                self.wrapper.display(),
                String::from_utf8_lossy(&err).trim()
            ));
        }
        if out.len() != 64 {
            return Err(format!(
                "{} wrote {} bytes, not the 64 bytes r‖s of a P-256 signature",
                self.wrapper.display(),
                out.len()
            ));
        }
        p256::ecdsa::Signature::from_slice(&out)
            .map_err(|e| format!("{} wrote no P-256 signature: {e}", self.wrapper.display()))
    }
}

/// The CA certificate must carry the key that signs (a file's, or the sign wrapper's):
/// otherwise every certificate issued would fail to chain to it in `tls.client_ca`.
fn same_key(path: &Path, pem: &str, key: &CaKey) -> Result<(), SetupError> {
    use rcgen::PublicKeyData as _;
    use rustls::pki_types::pem::PemObject as _;
    let bad = |reason: String| SetupError::File {
        path: path.to_path_buf(),
        reason,
    };
    let der = rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
        .map_err(|e| bad(format!("not a PEM certificate: {e}")))?;
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref())
        .map_err(|e| bad(format!("not an X.509 certificate: {e}")))?;
    if cert.public_key().subject_public_key.data.as_ref() != key.der_bytes() {
        return Err(bad(
            "the CA certificate's public key is not the CA key's (ca_key, or tpm_ca_pubkey_raw)"
                .into(),
        ));
    }
    Ok(())
}

fn micros(t: SystemTime) -> Micros {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as Micros)
}

impl Authority {
    /// Loads the CA and the org root keys (`extra_root`: the trust file's `orgRootKey`).
    pub fn load(
        cfg: &EnrollmentConfig,
        extra_root: Option<&KeySlot>,
        cn_suffix: &str,
    ) -> Result<Authority, SetupError> {
        if cfg.cert_validity_secs < MIN_VALIDITY_SECS {
            return Err(SetupError::Invalid(format!(
                "enrollment.cert_validity_secs is {}, less than {MIN_VALIDITY_SECS}",
                cfg.cert_validity_secs
            )));
        }
        let key = match (
            &cfg.tpm_ca_pubkey_raw,
            &cfg.tpm_ca_sign_wrapper,
            &cfg.ca_key,
        ) {
            (Some(public), Some(wrapper), _) => CaKey::Wrapper(WrapperKey::load(public, wrapper)?),
            (None, None, Some(key)) => CaKey::File(ca_key(key)?),
            (Some(_), None, _) | (None, Some(_), _) => {
                return Err(SetupError::Invalid(
                    "enrollment.tpm_ca_pubkey_raw and enrollment.tpm_ca_sign_wrapper go together"
                        .into(),
                ));
            }
            (None, None, None) => {
                return Err(SetupError::Invalid(
                    "enrollment needs the CA key: ca_key, or tpm_ca_pubkey_raw with tpm_ca_sign_wrapper".into(),
                ));
            }
        };
        let ca_pem = read(&cfg.ca_cert)?;
        same_key(&cfg.ca_cert, &ca_pem, &key)?;
        let issuer = Issuer::from_ca_cert_pem(&ca_pem, key).map_err(|e| SetupError::File {
            path: cfg.ca_cert.clone(),
            reason: format!("not a PEM certificate: {e}"),
        })?;
        org_root_keys(cfg, extra_root)?;
        let suffix = cn_suffix.trim_start_matches('.');
        if suffix.is_empty() {
            return Err(SetupError::Invalid(
                "enrollment needs tls.agent_cn_suffix: issued certificates are agent-<host>.<suffix>"
                    .into(),
            ));
        }
        Ok(Authority {
            issuer,
            validity: Duration::from_secs(cfg.cert_validity_secs),
            cn_suffix: suffix.to_string(),
        })
    }

    /// Checks a bootstrap token at CP time `now` against a CSR: version 1, `issuedAt ≤ now <
    /// expiresAt`, signed by one of the `org_root` keys in force over the JCS form of its
    /// claims, for the CSR's CN and key. Returns what the ledger records of it.
    pub fn check_token(
        &self,
        org_root: &TrustedKeys,
        token: &BootstrapToken,
        csr: &Csr,
        now: Micros,
    ) -> Result<BootstrapTokenRecord, IdentityError> {
        if token.version != 1 {
            return Err(IdentityError::TokenVersion(token.version));
        }
        let claims: Claims = serde_json::from_value(token.claims.clone())
            .map_err(|e| IdentityError::TokenClaims(e.to_string()))?;
        let time = |field: &str, text: &str| {
            chrono::DateTime::parse_from_rfc3339(text)
                .map(|t| t.timestamp_micros())
                .map_err(|e| IdentityError::TokenClaims(format!("{field} {text:?}: {e}")))
        };
        let issued_at = time("issuedAt", &claims.issued_at)?;
        let expires_at = time("expiresAt", &claims.expires_at)?;
        if now < issued_at || now >= expires_at {
            return Err(IdentityError::TokenTime {
                from: claims.issued_at,
                until: claims.expires_at,
                now: wire::ts::format(now),
            });
        }
        // The signature covers the JCS form of the claims as the minter serialized them;
        // canonicalizing what arrived gives those bytes back.
        let signed = serde_json_canonicalizer::to_vec(&token.claims)
            .map_err(|e| IdentityError::TokenClaims(e.to_string()))?;
        let signature = base64::engine::general_purpose::STANDARD
            .decode(token.signature.trim())
            .map_err(|_| IdentityError::TokenSignature)?;
        let signer = org_root
            .verifier(&signed, &signature, now)
            .ok_or(IdentityError::TokenSignature)?;
        if csr.common_name != claims.hostname {
            return Err(IdentityError::CsrHost {
                csr: csr.common_name.clone(),
                token: claims.hostname,
            });
        }
        let fingerprint = csr.fingerprint();
        if fingerprint != claims.expected_pubkey_fingerprint {
            return Err(IdentityError::CsrFingerprint {
                csr: fingerprint,
                token: claims.expected_pubkey_fingerprint,
            });
        }
        Ok(BootstrapTokenRecord {
            version: token.version,
            claims: signed,
            signature,
            signer: signer.public(),
            nonce: claims.nonce,
            issued_at,
            expires_at,
        })
    }

    /// nixfleet's CN for a host: `agent-<host>.<suffix>`.
    pub fn common_name(&self, host: &str) -> String {
        format!("agent-{host}.{}", self.cn_suffix)
    }

    /// Signs a client certificate for `host` with the CSR's key and subject (its CN replaced
    /// by nixfleet's), valid from `now` (whole seconds) for the configured validity: SAN
    /// dNSName = CN (webpki needs a SAN), EKU clientAuth, a random 128-bit serial.
    pub fn issue(
        &self,
        host: &str,
        csr: Csr,
        now: Micros,
    ) -> Result<(IssuedCertificate, String), IdentityError> {
        let issue_err = |e: String| IdentityError::Issue(e);
        let common_name = self.common_name(host);
        let CertificateSigningRequestParams {
            mut params,
            public_key,
        } = csr.params;
        params
            .distinguished_name
            .push(DnType::CommonName, common_name.clone());
        params.subject_alt_names = vec![SanType::DnsName(
            common_name
                .clone()
                .try_into()
                .map_err(|e: rcgen::Error| issue_err(e.to_string()))?,
        )];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.is_ca = rcgen::IsCa::ExplicitNoCa;
        let mut serial = [0u8; 16];
        getrandom::fill(&mut serial).map_err(|e| issue_err(e.to_string()))?;
        // Positive and 16 bytes long in DER (no sign byte, no stripped leading zero).
        serial[0] = (serial[0] & 0x7f) | 0x40;
        params.serial_number = Some(SerialNumber::from_slice(&serial));
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs((now / 1_000_000).max(0) as u64);
        let end = start + self.validity;
        params.not_before = start.into();
        params.not_after = end.into();
        let cert = params
            .signed_by(&public_key, &self.issuer)
            .map_err(|e| issue_err(e.to_string()))?;
        Ok((
            IssuedCertificate {
                der: cert.der().to_vec(),
                serial: serial.to_vec(),
                common_name,
                public_key: csr.public_key,
                not_before: micros(start),
                not_after: micros(end),
            },
            cert.pem(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, IsCa};

    /// A CA from `key`, written beside it; the config for it.
    fn ca(dir: &Path, key_pem: &str, key: &KeyPair) -> EnrollmentConfig {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, "fleet CA");
        let cert = p.self_signed(key).unwrap();
        std::fs::write(dir.join("ca.pem"), cert.pem()).unwrap();
        std::fs::write(dir.join("ca.key"), key_pem).unwrap();
        let root = ed25519_dalek::SigningKey::from_bytes(&[1; 32]);
        EnrollmentConfig {
            ca_cert: dir.join("ca.pem"),
            ca_key: Some(dir.join("ca.key")),
            tpm_ca_pubkey_raw: None,
            tpm_ca_sign_wrapper: None,
            allow_file_ca_key: false,
            cert_validity_secs: 120,
            org_root_key: Some(KeySlot {
                current: Some(crate::trust::KeyText {
                    algorithm: "ed25519".into(),
                    public: base64::engine::general_purpose::STANDARD
                        .encode(root.verifying_key().as_bytes()),
                }),
                ..KeySlot::default()
            }),
        }
    }

    /// Issues for `web-01` and checks the certificate's signature with the CA's key, its
    /// names, serial and validity.
    fn issues_verifiable_certificates(cfg: &EnrollmentConfig) {
        let authority = Authority::load(cfg, None, ".fleet.test").unwrap();
        let agent = KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(DnType::CommonName, "web-01");
        let csr = Csr::parse(&p.serialize_request(&agent).unwrap().pem().unwrap()).unwrap();
        assert_eq!(csr.public_key.as_slice(), agent.public_key_raw());
        let (cert, _) = authority
            .issue("web-01", csr, 1_800_000_000_123_456)
            .unwrap();
        let (_, parsed) = x509_parser::parse_x509_certificate(&cert.der).unwrap();
        let ca_pem = std::fs::read_to_string(&cfg.ca_cert).unwrap();
        let ca_der = {
            use rustls::pki_types::pem::PemObject as _;
            rustls::pki_types::CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap()
        };
        let (_, ca_cert) = x509_parser::parse_x509_certificate(ca_der.as_ref()).unwrap();
        parsed
            .verify_signature(Some(ca_cert.public_key()))
            .expect("signed by the fleet CA");
        assert_eq!(cert.common_name, "agent-web-01.fleet.test");
        assert_eq!(parsed.tbs_certificate.raw_serial(), cert.serial.as_slice());
        assert_eq!(cert.not_before, 1_800_000_000_000_000);
        assert_eq!(cert.not_after, 1_800_000_120_000_000);
        assert_eq!(parsed.validity().not_after.timestamp(), 1_800_000_120);
    }

    #[test]
    fn an_ed25519_ca_issues() {
        let dir = tempfile::tempdir().unwrap();
        let key = KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        issues_verifiable_certificates(&ca(dir.path(), &key.serialize_pem(), &key));
    }

    #[test]
    fn a_p256_ca_in_pkcs8_or_sec1_issues() {
        use p256::pkcs8::EncodePrivateKey as _;
        let secret = p256::SecretKey::from_slice(&[9; 32]).unwrap();
        let pkcs8 = secret.to_pkcs8_der().unwrap();
        let key = KeyPair::try_from(pkcs8.as_bytes()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        issues_verifiable_certificates(&ca(dir.path(), &key.serialize_pem(), &key));
        let sec1 = secret.to_sec1_pem(p256::pkcs8::LineEnding::LF).unwrap();
        assert!(sec1.starts_with("-----BEGIN EC PRIVATE KEY-----"));
        issues_verifiable_certificates(&ca(dir.path(), &sec1, &key));
    }

    /// nixfleet's TPM interface: a P-256 CA key held by a sign wrapper (here the
    /// standards-only Python signer in `fixtures/independent/`, which leaves s high half the
    /// time, as a TPM does); the key file is not needed.
    #[test]
    fn a_ca_key_held_by_a_sign_wrapper_issues() {
        use p256::pkcs8::EncodePrivateKey as _;
        let dir = tempfile::tempdir().unwrap();
        let secret = p256::SecretKey::from_slice(&[9; 32]).unwrap();
        let key = KeyPair::try_from(secret.to_pkcs8_der().unwrap().as_bytes()).unwrap();
        let mut cfg = ca(dir.path(), "unused", &key);
        std::fs::write(dir.path().join("ca.key.hex"), "09".repeat(32)).unwrap();
        let script = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../fixtures/independent/p256_sign_wrapper.py");
        let wrapper = |name: &str, body: String| {
            use std::os::unix::fs::PermissionsExt as _;
            let path = dir.path().join(name);
            std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
            path
        };
        let hex = dir.path().join("ca.key.hex");
        let good = wrapper(
            "sign",
            format!("exec python3 {} {} \"$1\"", script.display(), hex.display()),
        );
        let public = std::process::Command::new("python3")
            .arg(&script)
            .arg("--public")
            .arg(&hex)
            .output()
            .unwrap()
            .stdout;
        let point = secret.public_key().to_sec1_bytes();
        assert_eq!(
            public.as_slice(),
            &point[1..],
            "the wrapper's key is the CA's"
        );
        std::fs::write(dir.path().join("ca.pub.raw"), &public).unwrap();
        cfg.ca_key = None;
        cfg.tpm_ca_pubkey_raw = Some(dir.path().join("ca.pub.raw"));
        cfg.tpm_ca_sign_wrapper = Some(good);
        for _ in 0..4 {
            issues_verifiable_certificates(&cfg);
        }

        // What cannot sign stops the daemon at start, with why.
        let load_err =
            |cfg: &EnrollmentConfig| Authority::load(cfg, None, "x").unwrap_err().to_string();
        for (body, why) in [
            ("echo 'TPM locked out' >&2; exit 3", "TPM locked out"),
            ("printf 'short'", "wrote 5 bytes"),
            ("sleep 30", "did not finish"),
        ] {
            let bad = wrapper("bad", body.to_string());
            let e = WrapperKey::load_within(
                cfg.tpm_ca_pubkey_raw.as_deref().unwrap(),
                &bad,
                Duration::from_millis(500),
            )
            .unwrap_err()
            .to_string();
            assert!(e.contains(why), "{e}");
        }
        let other = p256::SecretKey::from_slice(&[8; 32]).unwrap();
        std::fs::write(
            dir.path().join("other.raw"),
            &other.public_key().to_sec1_bytes()[1..],
        )
        .unwrap();
        let mut c = cfg.clone();
        c.tpm_ca_pubkey_raw = Some(dir.path().join("other.raw"));
        assert!(load_err(&c).contains("does not verify"), "{}", load_err(&c));
        // A wrapper whose key is not the CA certificate's.
        let other_hex = dir.path().join("other.hex");
        std::fs::write(&other_hex, "08".repeat(32)).unwrap();
        c.tpm_ca_sign_wrapper = Some(wrapper(
            "other-sign",
            format!(
                "exec python3 {} {} \"$1\"",
                script.display(),
                other_hex.display()
            ),
        ));
        assert!(
            load_err(&c).contains("not the CA key's"),
            "{}",
            load_err(&c)
        );
        std::fs::write(dir.path().join("short.raw"), [4u8; 65]).unwrap();
        c.tpm_ca_pubkey_raw = Some(dir.path().join("short.raw"));
        assert!(load_err(&c).contains("64"), "{}", load_err(&c));
        c.tpm_ca_pubkey_raw = None;
        assert!(load_err(&c).contains("go together"), "{}", load_err(&c));
    }

    #[test]
    fn setup_refuses_what_cannot_work() {
        let dir = tempfile::tempdir().unwrap();
        let key = KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        let cfg = ca(dir.path(), &key.serialize_pem(), &key);
        let err = |cfg: &EnrollmentConfig, suffix: &str| {
            Authority::load(cfg, None, suffix).unwrap_err().to_string()
        };
        assert!(err(&cfg, "").contains("agent_cn_suffix"));
        let short = EnrollmentConfig {
            cert_validity_secs: 59,
            ..cfg.clone()
        };
        assert!(err(&short, "x").contains("less than 60"));
        let no_root = EnrollmentConfig {
            org_root_key: None,
            ..cfg.clone()
        };
        assert!(err(&no_root, "x").contains("org root key"));
        std::fs::write(dir.path().join("ca.key"), "not a key").unwrap();
        assert!(err(&cfg, "x").contains("ca.key"));
    }
}
