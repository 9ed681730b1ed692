//! HTTPS for the tests: a CA that issues server and client certificates, and one request
//! over rustls with an optional client certificate.
#![allow(dead_code, unreachable_pub)] // shared by test binaries that each use a part

use std::path::Path;
use std::sync::Arc;

use http_body_util::BodyExt as _;
use http_body_util::Full;
use hyper::Request;
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::Value;

pub struct Pki {
    pub ca: CertifiedIssuer<'static, KeyPair>,
}

impl Pki {
    pub fn new(name: &str) -> Pki {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, name);
        Pki {
            ca: CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap(),
        }
    }

    /// A leaf certificate and its key, PEM.
    pub fn leaf(&self, cn: &str, sans: &[&str]) -> (String, String) {
        self.leaf_with(cn, sans, KeyPair::generate().unwrap())
    }

    /// An agent's certificate as nixfleet issues it: an ed25519 key (the host's SSH key).
    pub fn ed25519_leaf(&self, cn: &str) -> (String, String) {
        self.leaf_with(
            cn,
            &[cn],
            KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap(),
        )
    }

    pub fn leaf_with(&self, cn: &str, sans: &[&str], key: KeyPair) -> (String, String) {
        let mut p =
            CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        let cert = p.signed_by(&key, &self.ca).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

pub fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// A rustls client trusting `ca_pem`, presenting `client` (certificate and key, PEM) if any.
pub fn client_config(ca_pem: &str, client: Option<&(String, String)>) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    match client {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                CertificateDer::pem_slice_iter(cert.as_bytes())
                    .map(Result::unwrap)
                    .collect(),
                PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    }
}

/// One HTTPS request with an optional client certificate; `Err` when the handshake or the
/// request fails.
pub async fn request(
    addr: std::net::SocketAddr,
    ca_pem: &str,
    client: Option<&(String, String)>,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> Result<(u16, Value), String> {
    request_with(addr, ca_pem, client, method, path, token, &[], body).await
}

/// [`request`] with extra headers.
#[allow(clippy::too_many_arguments)]
pub async fn request_with(
    addr: std::net::SocketAddr,
    ca_pem: &str,
    client: Option<&(String, String)>,
    method: &str,
    path: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> Result<(u16, Value), String> {
    let (status, bytes) =
        request_raw(addr, ca_pem, client, method, path, token, headers, body).await?;
    Ok((
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    ))
}

/// [`request_with`], answering the body's bytes.
#[allow(clippy::too_many_arguments)]
pub async fn request_raw(
    addr: std::net::SocketAddr,
    ca_pem: &str,
    client: Option<&(String, String)>,
    method: &str,
    path: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> Result<(u16, Vec<u8>), String> {
    let config = client_config(ca_pem, client);
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .map_err(|e| e.to_string())?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "localhost")
        .header("content-type", "application/json");
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let resp = send
        .send_request(req.body(Full::new(bytes::Bytes::from(body))).unwrap())
        .await
        .map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    Ok((status, bytes.to_vec()))
}
