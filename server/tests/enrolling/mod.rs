//! What the tests of enrollment need: nixfleet's bootstrap tokens and CSRs written out
//! byte for byte (not by fleet-ledger's code), and a daemon config with TLS and a fleet CA.
#![allow(dead_code, unreachable_pub)] // shared by test binaries that each use a part

use base64::Engine as _;
use ed25519_dalek::Signer as _;
use fleet_ledger::enrollment::EnrollmentConfig;
use fleet_ledger::tls::TlsConfig;
use fleet_ledger::trust::KeySlot;
use rcgen::{CertificateParams, DnType, KeyPair};
use serde_json::{Value, json};
use sha2::Digest as _;

use crate::tls::{Pki, write};

/// A canary host of the demo fleet (its rollout soaks 0 minutes).
pub const HOST: &str = "web-0001";
pub const SUFFIX: &str = "agents.test";

pub fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The host's SSH ed25519 key as an OpenSSH public key line (RFC 8709 wire blob).
pub fn openssh_line(key: &KeyPair) -> String {
    let raw = key.public_key_raw();
    let mut blob = Vec::new();
    blob.extend_from_slice(&11u32.to_be_bytes());
    blob.extend_from_slice(b"ssh-ed25519");
    blob.extend_from_slice(&(raw.len() as u32).to_be_bytes());
    blob.extend_from_slice(raw);
    format!("ssh-ed25519 {} root@{HOST}", b64(&blob))
}

/// nixfleet's fingerprint: base64(SHA-256(raw key)).
pub fn fingerprint(key: &KeyPair) -> String {
    b64(&sha2::Sha256::digest(key.public_key_raw()))
}

/// A bootstrap token as `nixfleet mint-token` writes it: the claims' JCS bytes (keys in
/// code-point order, no whitespace) signed by the org root key.
pub fn token(
    org_root: &ed25519_dalek::SigningKey,
    host: &str,
    fp: &str,
    issued: &str,
    expires: &str,
    nonce: &str,
) -> Value {
    let jcs = format!(
        r#"{{"expectedPubkeyFingerprint":"{fp}","expiresAt":"{expires}","hostname":"{host}","issuedAt":"{issued}","nonce":"{nonce}"}}"#
    );
    let sig = org_root.sign(jcs.as_bytes());
    json!({
        "version": 1,
        "claims": serde_json::from_str::<Value>(&jcs).unwrap(),
        "signature": b64(&sig.to_bytes()),
    })
}

/// The agent's CSR: CN = the bare machine id, key = its SSH host key.
pub fn csr(cn: &str, key: &KeyPair) -> String {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.serialize_request(key).unwrap().pem().unwrap()
}

pub fn now_plus(secs: i64) -> String {
    (chrono::Utc::now() + chrono::Duration::seconds(secs))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

pub fn serial_of(pem: &str) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject as _;
    let der = rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).unwrap();
    cert.tbs_certificate.raw_serial().to_vec()
}

pub fn cn_of(pem: &str) -> String {
    use rustls::pki_types::pem::PemObject as _;
    let der = rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).unwrap();
    cert.subject()
        .iter_common_name()
        .next()
        .unwrap()
        .as_str()
        .unwrap()
        .to_string()
}

/// TLS with `server` (certificate and key, PEM) and the fleet CA as the client CA, and
/// enrollment by that CA (agents' certificates valid an hour), written under `dir`.
pub fn with_enrollment(
    config: &mut fleet_ledger::config::Config,
    dir: &std::path::Path,
    fleet_ca: &Pki,
    server: (&str, &str),
    org_root_key: Option<KeySlot>,
) {
    config.tls = Some(TlsConfig {
        cert: write(dir, "server.pem", server.0),
        key: write(dir, "server.key", server.1),
        client_ca: Some(write(dir, "fleet-ca.pem", &fleet_ca.ca.pem())),
        agent_cn_suffix: Some(SUFFIX.into()),
        operator_cn_prefix: "operator-".into(),
        operator_ca: None,
    });
    config.enrollment = Some(EnrollmentConfig {
        ca_cert: dir.join("fleet-ca.pem"),
        ca_key: Some(write(
            dir,
            "fleet-ca.key",
            &fleet_ca.ca.key().serialize_pem(),
        )),
        tpm_ca_pubkey_raw: None,
        tpm_ca_sign_wrapper: None,
        allow_file_ca_key: false,
        cert_validity_secs: 3600,
        org_root_key,
    });
}

/// CI posts the demo fleet declaring `HOST`'s SSH host key (and web-0003's, another key), over
/// HTTPS to the daemon at `addr`; answers the fleet document it signed.
pub async fn post_fleet_declaring(
    setup: &fleet_ledger_demo::Setup,
    addr: std::net::SocketAddr,
    ca_pem: &str,
    host_key: &KeyPair,
    other_key: &KeyPair,
) -> Value {
    let mut fleet = setup.fleet_doc.clone();
    fleet["hosts"][HOST]["pubkey"] = json!(openssh_line(host_key));
    fleet["hosts"]["web-0003"]["pubkey"] = json!(openssh_line(other_key));
    let (signed, _) = setup.sign(&fleet).unwrap();
    let (s, v) = crate::tls::request_with(
        addr,
        ca_pem,
        None,
        "POST",
        "/v1/manifests/fleet",
        Some(&setup.tokens.ci),
        &[],
        Some(signed),
    )
    .await
    .unwrap();
    assert_eq!(s, 200, "{v}");
    fleet
}

/// `HOST`'s timeline from the ledger at `db`.
pub fn host_timeline(db: &std::path::Path) -> Vec<engine::forensics::Line> {
    engine::forensics::timeline(
        engine::forensics::Source::Db(db),
        &engine::forensics::Filter {
            host: Some(HOST.into()),
            ..Default::default()
        },
    )
    .unwrap()
}

/// A key slot whose current key is `root` (the org root key that signs bootstrap tokens).
pub fn org_root_slot(root: &ed25519_dalek::SigningKey) -> KeySlot {
    KeySlot {
        current: Some(fleet_ledger::trust::KeyText {
            algorithm: "ed25519".into(),
            public: b64(root.verifying_key().as_bytes()),
        }),
        ..KeySlot::default()
    }
}
