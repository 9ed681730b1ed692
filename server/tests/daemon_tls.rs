//! HTTPS with client certificates: an agent is identified by its certificate's CN (minus the
//! configured suffix), may post only for itself, a certificate from another CA is refused at
//! the handshake, and token holders still authenticate over the same TLS listener.

mod tls;

use fleet_ledger::tls::TlsConfig;
use fleet_ledger_demo::Setup;
use serde_json::{Value, json};
use tls::{Pki, request, write};

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
    // The harness's client speaks plain HTTP; these tests speak HTTPS (`tls::request`).
    let (daemon, _) = setup.start_with(config).await.unwrap();
    let addr = daemon.addr;

    // Until a verified fleet is in force, agent routes answer 503 with Retry-After: 30, as
    // nixfleet's CP does (its agents retry); then CI posts one.
    let (s, v) = heartbeat(addr, &ca_pem, Some(&agent), "web-0002")
        .await
        .unwrap();
    assert_eq!((s, v["error"].as_str()), (503, Some("not-ready")), "{v}");
    // Authentication first (issue 26, defect 12): an anonymous caller or an unknown token
    // gets 401 before the fleet is ready too, not a readiness answer.
    let (s, v) = heartbeat(addr, &ca_pem, None, "web-0002").await.unwrap();
    assert_eq!((s, v["error"].as_str()), (401, Some("unauthorized")), "{v}");
    let (s, v) = request(
        addr,
        &ca_pem,
        None,
        "GET",
        "/v1/fleet.resolved",
        Some("not-a-token"),
        None,
    )
    .await
    .unwrap();
    assert_eq!((s, v["error"].as_str()), (401, Some("unauthorized")), "{v}");
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

/// Issue 26, defect 8: an answer given before the request's body was read (a path refused
/// by the router) must not leave the client a dead keep-alive connection. Over TLS the body
/// arrives in records of its own, after the answer; hyper then closes the connection after a
/// response that promised keep-alive. Here the body is sent only after the answer came, so
/// the answer always precedes it: it must say `Connection: close`. An error answered after
/// the body was read keeps the connection, and the next request on it is served.
#[tokio::test(flavor = "multi_thread")]
async fn an_early_answer_over_tls_never_leaves_a_dead_keep_alive_connection() {
    use http_body_util::{BodyExt as _, channel::Channel};
    let dir = tempfile::tempdir().unwrap();
    let setup = Setup::create(dir.path(), None, 2).unwrap();
    let pki = Pki::new("fleet test CA");
    let ca_pem = pki.ca.pem();
    let (server_cert, server_key) = pki.leaf("cp.test", &["localhost"]);
    let mut config = setup.config.clone();
    config.tls = Some(TlsConfig {
        cert: write(dir.path(), "server.pem", &server_cert),
        key: write(dir.path(), "server.key", &server_key),
        client_ca: None,
        agent_cn_suffix: None,
    });
    let (daemon, _) = setup.start_with(config).await.unwrap();
    let client = std::sync::Arc::new(tls::client_config(&ca_pem, None));
    let connect = || async {
        let tcp = tokio::net::TcpStream::connect(daemon.addr).await.unwrap();
        let tls = tokio_rustls::TlsConnector::from(client.clone())
            .connect(
                rustls::pki_types::ServerName::try_from("localhost").unwrap(),
                tcp,
            )
            .await
            .unwrap();
        let (send, conn) = hyper::client::conn::http1::handshake::<_, Channel<bytes::Bytes>>(
            hyper_util::rt::TokioIo::new(tls),
        )
        .await
        .unwrap();
        tokio::spawn(conn);
        send
    };
    let closes = |resp: &hyper::Response<hyper::body::Incoming>| {
        resp.headers()
            .get("connection")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"))
    };
    let post = |path: &str, token: &str, len: usize| {
        let (tx, body) = Channel::<bytes::Bytes>::new(1);
        let req = hyper::Request::post(path)
            .header("host", "localhost")
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/json")
            .header("content-length", len.to_string())
            .body(body)
            .unwrap();
        (tx, req)
    };
    for _ in 0..5 {
        let mut send = connect().await;
        let (mut tx, req) = post(
            "/v1/rollouts/..%2F..%2Fx/clearance",
            &setup.tokens.operator,
            16 * 1024,
        );
        let resp = send.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 400);
        assert!(
            closes(&resp),
            "answered before the body was read, yet kept alive: {:?}",
            resp.headers()
        );
        // The client may still send what it meant to; the connection is not reused.
        let _ = tx
            .send_data(bytes::Bytes::from(vec![b'x'; 16 * 1024]))
            .await;
    }
    // A refusal given after the body was read keeps the connection.
    let mut send = connect().await;
    let bad = b"{\"not\": \"a manifest\"}";
    let (mut tx, req) = post("/v1/manifests/fleet", &setup.tokens.ci, bad.len());
    let answer = tokio::spawn(send.send_request(req));
    tx.send_data(bytes::Bytes::from_static(bad)).await.unwrap();
    drop(tx);
    let resp = answer.await.unwrap().unwrap();
    assert!(resp.status().is_client_error(), "{:?}", resp.status());
    assert!(!closes(&resp), "{:?}", resp.headers());
    resp.into_body().collect().await.unwrap();
    let (tx, next) = Channel::<bytes::Bytes>::new(1);
    drop(tx);
    let next = hyper::Request::get("/healthz")
        .header("host", "localhost")
        .header("content-length", "0")
        .body(next)
        .unwrap();
    let resp = send.send_request(next).await.unwrap();
    assert_eq!(resp.status(), 200);
    daemon.shutdown().await.unwrap();
}
