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
        operator_cn_prefix: "operator-".into(),
        operator_ca: None,
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
        "/v1/ledger/rollouts",
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
        "/v1/ledger/rollouts",
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
        operator_cn_prefix: "operator-".into(),
        operator_ca: None,
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

/// nixfleet's operators authenticate with a client certificate from the offline fleet root
/// CA (`nixfleet mint-operator-cert`: CN `operator-<user>@<host>`; NIXFLEET-WIRE.md §7.1).
/// Such a certificate has a reader's rights and no agent's; an agent's certificate stays
/// confined to its host; a certificate that only looks like an operator's (the operator
/// prefix, another CA) is no operator's. `GET /v1/whoami` echoes the CN as presented.
#[tokio::test(flavor = "multi_thread")]
async fn operator_certificates_read_and_agent_certificates_stay_confined() {
    let dir = tempfile::tempdir().unwrap();
    let setup = Setup::create(dir.path(), None, 3).unwrap();
    let issuance = Pki::new("fleet issuance CA");
    let root = Pki::new("fleet root CA");
    let server_pem = issuance.ca.pem();
    let (server_cert, server_key) = issuance.leaf("cp.test", &["localhost"]);
    let operator = root.leaf("operator-alice@ws1", &[]);
    let agent = issuance.ed25519_leaf("agent-web-0002.agents.test");
    let lookalike = issuance.leaf("operator-mallory@ws2", &[]);
    let mut config = setup.config.clone();
    config.tls = Some(TlsConfig {
        cert: write(dir.path(), "server.pem", &server_cert),
        key: write(dir.path(), "server.key", &server_key),
        client_ca: Some(write(
            dir.path(),
            "client-ca.pem",
            &format!("{}{}", issuance.ca.pem(), root.ca.pem()),
        )),
        agent_cn_suffix: Some("agents.test".into()),
        operator_cn_prefix: "operator-".into(),
        operator_ca: Some(write(dir.path(), "fleet-root.pem", &root.ca.pem())),
    });
    let (daemon, _) = setup.start_with(config).await.unwrap();
    let addr = daemon.addr;
    let (fleet, _) = setup.signed_fleet().unwrap();
    let call = |cert: Option<&(String, String)>, token: Option<&str>, method: &str, path: &str| {
        let (cert, token, method, path) = (
            cert.cloned(),
            token.map(str::to_string),
            method.to_string(),
            path.to_string(),
        );
        let ca = server_pem.clone();
        async move {
            let body = (method == "POST").then(|| {
                json!({"hostname": "web-0002", "current_closure": "/nix/store/x", "at": "2026-11-26T12:00:00Z"})
            });
            request(
                addr,
                &ca,
                cert.as_ref(),
                &method,
                &path,
                token.as_deref(),
                body,
            )
            .await
            .unwrap()
        }
    };
    // No verified fleet yet: a channel cannot be answered.
    let (s, v) = call(Some(&operator), None, "GET", "/v1/channels/canary").await;
    assert_eq!((s, v["error"].as_str()), (503, Some("not-ready")), "{v}");
    let (s, v) = request(
        addr,
        &server_pem,
        None,
        "POST",
        "/v1/manifests/fleet",
        Some(&setup.tokens.ci),
        Some(fleet),
    )
    .await
    .unwrap();
    assert_eq!(s, 200, "{v}");

    // The operator: whoami echoes the CN and the CP's clock (chrono's RFC 3339, +00:00).
    let (s, v) = call(Some(&operator), None, "GET", "/v1/whoami").await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["cn"], "operator-alice@ws1", "{v}");
    let issued = v["issuedAt"].as_str().unwrap();
    assert!(issued.ends_with("+00:00"), "{v}");
    chrono::DateTime::parse_from_rfc3339(issued).unwrap();
    assert_eq!(
        v.as_object().unwrap().keys().collect::<Vec<_>>(),
        ["cn", "issuedAt"]
    );
    // A reader's rights: the read routes, and nothing of an agent's or an operator token's.
    for path in ["/v1/ledger/rollouts", "/v1/deferrals", "/v1/quarantine"] {
        let (s, v) = call(Some(&operator), None, "GET", path).await;
        assert_eq!(s, 200, "{path}: {v}");
    }
    let (s, v) = call(Some(&operator), None, "POST", "/v1/agent/heartbeat").await;
    assert_eq!((s, v["error"].as_str()), (403, Some("forbidden")), "{v}");
    // A channel of the fleet in force; one that states no freshness window gets the CP's.
    let (s, v) = call(Some(&operator), None, "GET", "/v1/channels/canary").await;
    assert_eq!(
        (s, &v["name"], &v["declared_ci_commit"]),
        (200, &json!("canary"), &json!("demo")),
        "{v}"
    );
    assert!(
        v["freshness_window_minutes"]
            .as_u64()
            .is_some_and(|m| m > 0),
        "{v}"
    );
    let (s, v) = call(Some(&operator), None, "GET", "/v1/channels/nope").await;
    assert_eq!((s, v["error"].as_str()), (404, Some("not-found")), "{v}");

    // The agent: whoami names the certificate as presented; the read routes stay closed.
    let (s, v) = call(Some(&agent), None, "GET", "/v1/whoami").await;
    assert_eq!(
        (s, v["cn"].as_str()),
        (200, Some("agent-web-0002.agents.test")),
        "{v}"
    );
    let (s, v) = call(Some(&agent), None, "GET", "/v1/ledger/rollouts").await;
    assert_eq!((s, v["error"].as_str()), (403, Some("forbidden")), "{v}");
    let (s, v) = call(Some(&agent), None, "POST", "/v1/agent/heartbeat").await;
    assert_eq!(s, 200, "{v}");

    // The operator prefix on a certificate the fleet root did not sign: no operator, and
    // not a host name either.
    for path in ["/v1/whoami", "/v1/ledger/rollouts"] {
        let (s, v) = call(Some(&lookalike), None, "GET", path).await;
        assert_eq!(
            (s, v["error"].as_str()),
            (401, Some("unauthorized")),
            "{path}: {v}"
        );
    }
    // A bearer token: whoami names the token's identity.
    let (s, v) = call(None, Some(&setup.tokens.auditor), "GET", "/v1/whoami").await;
    assert_eq!((s, v["cn"].as_str()), (200, Some("audrey")), "{v}");
    daemon.shutdown().await.unwrap();
}
