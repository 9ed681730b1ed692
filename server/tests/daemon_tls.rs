//! HTTPS with client certificates: an agent is identified by its certificate's CN (minus the
//! configured suffix), may post only for itself, a certificate from another CA is refused at
//! the handshake, and token holders still authenticate over the same TLS listener.

use std::path::Path;
use std::sync::Arc;

use fleet_ledger::daemon::{Daemon, system_clock};
use fleet_ledger::tls::TlsConfig;
use fleet_ledger_demo::Setup;
use http_body_util::BodyExt as _;
use http_body_util::Full;
use hyper::Request;
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::{Value, json};

struct Pki {
    ca: CertifiedIssuer<'static, KeyPair>,
}

impl Pki {
    fn new(name: &str) -> Pki {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, name);
        Pki {
            ca: CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap(),
        }
    }

    /// A leaf certificate and its key, PEM.
    fn leaf(&self, cn: &str, sans: &[&str]) -> (String, String) {
        self.leaf_with(cn, sans, KeyPair::generate().unwrap())
    }

    /// An agent's certificate as nixfleet issues it: an ed25519 key (the host's SSH key).
    fn ed25519_leaf(&self, cn: &str) -> (String, String) {
        self.leaf_with(
            cn,
            &[cn],
            KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap(),
        )
    }

    fn leaf_with(&self, cn: &str, sans: &[&str], key: KeyPair) -> (String, String) {
        let mut p =
            CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        let cert = p.signed_by(&key, &self.ca).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// One HTTPS request with an optional client certificate; `Err` when the handshake or the
/// request fails.
async fn request(
    addr: std::net::SocketAddr,
    ca_pem: &str,
    client: Option<&(String, String)>,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> Result<(u16, Value), String> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let config = match client {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                CertificateDer::pem_slice_iter(cert.as_bytes())
                    .map(Result::unwrap)
                    .collect(),
                PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
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
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let resp = send
        .send_request(req.body(Full::new(bytes::Bytes::from(body))).unwrap())
        .await
        .map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    Ok((
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    ))
}

/// A heartbeat for `host` over a connection presenting `cert` (or none).
async fn heartbeat(
    addr: std::net::SocketAddr,
    ca_pem: &str,
    cert: Option<&(String, String)>,
    host: &str,
) -> Result<(u16, Value), String> {
    let body =
        json!({"hostname": host, "current_closure": "/nix/store/x", "at": "2026-11-26T12:00:00Z"});
    request(
        addr,
        ca_pem,
        cert,
        "POST",
        "/v1/agent/heartbeat",
        None,
        Some(body),
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn agents_are_identified_by_client_certificates_over_https() {
    let dir = tempfile::tempdir().unwrap();
    let setup = Setup::create(dir.path(), None, 5).unwrap();
    let pki = Pki::new("fleet test CA");
    let ca_pem = pki.ca.pem();
    let (server_cert, server_key) = pki.leaf("cp.test", &["localhost"]);
    // nixfleet's CN rule: its CA issues `agent-<id>.<suffix>`; any other CN is the id as it
    // is (a legacy bare `web-0003`), so another suffix names another host.
    let agent = pki.ed25519_leaf("agent-web-0002.agents.test");
    let bare = pki.leaf("web-0003", &[]);
    let wrong_suffix = pki.leaf("agent-web-0002.elsewhere", &[]);
    let rogue = Pki::new("rogue CA").leaf("agent-web-0002.agents.test", &[]);

    let mut config = setup.config.clone();
    config.tls = Some(TlsConfig {
        cert: write(dir.path(), "server.pem", &server_cert),
        key: write(dir.path(), "server.key", &server_key),
        client_ca: Some(write(dir.path(), "ca.pem", &ca_pem)),
        agent_cn_suffix: Some("agents.test".into()),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let daemon = Daemon::start(
        setup.db.clone(),
        config.settings().unwrap(),
        setup.signer().unwrap(),
        listener,
        system_clock(),
    )
    .await
    .unwrap();
    let addr = daemon.addr;

    // Until a verified fleet is in force, agent routes answer 503 with Retry-After: 30, as
    // nixfleet's CP does (its agents retry); then CI posts one.
    let (s, v) = heartbeat(addr, &ca_pem, Some(&agent), "web-0002")
        .await
        .unwrap();
    assert_eq!((s, v["error"].as_str()), (503, Some("not-ready")), "{v}");
    let (fleet, _) = setup.signed_fleet().unwrap();
    let (s, v) = request(
        addr,
        &ca_pem,
        None,
        "POST",
        "/v1/manifests/fleet",
        Some(&setup.tokens.ci),
        Some(fleet),
    )
    .await
    .unwrap();
    assert_eq!(s, 200, "{v}");

    // The certificate's CN names the agent.
    let (s, v) = heartbeat(addr, &ca_pem, Some(&agent), "web-0002")
        .await
        .unwrap();
    assert_eq!(s, 200, "{v}");
    let (s, v) = heartbeat(addr, &ca_pem, Some(&agent), "web-0003")
        .await
        .unwrap();
    assert_eq!((s, v["error"].as_str()), (403, Some("wrong-host")), "{v}");
    // Agents may not read the operators' views.
    let (s, _) = request(
        addr,
        &ca_pem,
        Some(&agent),
        "GET",
        "/v1/rollouts",
        None,
        None,
    )
    .await
    .unwrap();
    assert_eq!(s, 403);
    // Another suffix is another machine id (the CN as it is), so not web-0002.
    let (s, v) = heartbeat(addr, &ca_pem, Some(&wrong_suffix), "web-0002")
        .await
        .unwrap();
    assert_eq!((s, v["error"].as_str()), (403, Some("wrong-host")), "{v}");
    // A bare CN is the machine id.
    let (s, v) = heartbeat(addr, &ca_pem, Some(&bare), "web-0003")
        .await
        .unwrap();
    assert_eq!(s, 200, "{v}");
    // No certificate, no token.
    let (s, _) = heartbeat(addr, &ca_pem, None, "web-0002").await.unwrap();
    assert_eq!(s, 401);
    // A certificate from another CA does not get through the handshake.
    assert!(
        heartbeat(addr, &ca_pem, Some(&rogue), "web-0002")
            .await
            .is_err()
    );
    // Token holders use the same listener without a certificate.
    let (s, v) = request(
        addr,
        &ca_pem,
        None,
        "GET",
        "/v1/rollouts",
        Some(&setup.tokens.operator),
        None,
    )
    .await
    .unwrap();
    assert_eq!(s, 200, "{v}");
    daemon.shutdown().await.unwrap();
}
