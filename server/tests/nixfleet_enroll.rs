//! An agent's life as a nixfleet v0.2 agent runs it (NIXFLEET-WIRE.md §3–5), over real
//! HTTPS: the operator mints a bootstrap token with the org root key (its claims signed in
//! their JCS form, written out here byte for byte, not by fleet-ledger's code), the agent
//! posts it with a CSR of its SSH ed25519 host key, gets a certificate from the fleet CA and
//! from then on talks mTLS with it (CN `agent-<host>.<suffix>`): heartbeat, long poll,
//! fetch and verify the rollout manifest, report through Converged, then renew. Each refusal
//! has nixfleet's status; the two issuances are ledger entries that `replay --check`
//! re-decides and the host's timeline shows.

mod enrolling;
mod tls;

use enrolling::*;

use fleet_ledger::daemon::Daemon;
use fleet_ledger_demo::Setup;
use rcgen::KeyPair;
use serde_json::{Value, json};
use sha2::Digest as _;
use tls::{Pki, request_raw, request_with, write};

/// Runs `fixtures/independent/tls_client_auth.py` (Python's ssl, i.e. OpenSSL) as a TLS
/// server that requires a client certificate from `client_ca`, connects to it presenting
/// `client`, and answers the CN and SANs OpenSSL verified.
async fn openssl_accepts(
    dir: &std::path::Path,
    server: &(String, String),
    server_ca_pem: &str,
    client_ca: &str,
    client: &(String, String),
) -> (String, Vec<String>) {
    use std::io::BufRead as _;
    use tokio::io::AsyncReadExt as _;
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/independent/tls_client_auth.py");
    let mut child = std::process::Command::new("python3")
        .arg(script)
        .arg(write(dir, "openssl-server.pem", &server.0))
        .arg(write(dir, "openssl-server.key", &server.1))
        .arg(write(dir, "openssl-client-ca.pem", client_ca))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let port: u16 = line.trim().parse().unwrap();

    let config = tls::client_config(server_ca_pem, Some(client));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(
            rustls::pki_types::ServerName::try_from("localhost").unwrap(),
            tcp,
        )
        .await
        .unwrap();
    let mut ok = Vec::new();
    let _ = tls.read_to_end(&mut ok).await;
    line.clear();
    out.read_line(&mut line).unwrap();
    assert!(child.wait().unwrap().success(), "OpenSSL refused: {line}");
    assert_eq!(ok, b"ok\n");
    let v: Value = serde_json::from_str(&line).unwrap();
    (
        v["cn"].as_str().unwrap().to_string(),
        v["san"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_string())
            .collect(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_nixfleet_agent_enrolls_works_a_rollout_over_mtls_and_renews() {
    let dir = tempfile::tempdir().unwrap();
    let setup = Setup::create(dir.path(), None, 5).unwrap();
    // The fleet CA is a P-256 file key (as nixfleet's); the server's certificate comes from
    // another CA the agent trusts.
    let fleet_ca = Pki::new("fleet CA");
    let server_ca = Pki::new("server CA");
    let server_ca_pem = server_ca.ca.pem();
    let (server_cert, server_key) = server_ca.leaf("cp.test", &["localhost"]);
    let org_root = ed25519_dalek::SigningKey::from_bytes(&[42; 32]);
    let host_key = KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let other_key = KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();

    let mut config = setup.config.clone();
    with_enrollment(
        &mut config,
        dir.path(),
        &fleet_ca,
        (&server_cert, &server_key),
        Some(org_root_slot(&org_root)),
    );
    // The harness's client speaks plain HTTP; these tests speak HTTPS (`tls::request`).
    let (daemon, _) = setup.start_with(config).await.unwrap();
    let addr = daemon.addr;
    let proto = [("x-nixfleet-protocol", "1")];
    let enroll = |body: Value| {
        let ca = server_ca_pem.clone();
        async move {
            request_with(
                addr,
                &ca,
                None,
                "POST",
                "/v1/enroll",
                None,
                &proto,
                Some(body),
            )
            .await
            .unwrap()
        }
    };
    let good_token = token(
        &org_root,
        HOST,
        &fingerprint(&host_key),
        &now_plus(-60),
        &now_plus(3600),
        "00112233445566778899aabbccddeeff",
    );
    let good = json!({"token": good_token, "csrPem": csr(HOST, &host_key)});

    // Before a verified fleet, nixfleet's agent retries a 503 that says so.
    let (s, v) = enroll(good.clone()).await;
    assert_eq!(s, 503, "{v}");
    assert!(
        v["reason"]
            .as_str()
            .unwrap()
            .contains("control plane not ready")
    );

    // CI's fleet declares web-0002's SSH host key (and web-0003's, which is another key).
    let fleet = post_fleet_declaring(&setup, addr, &server_ca_pem, &host_key, &other_key).await;

    // Refusals, each with nixfleet's status, none of them recorded.
    let refused = [
        (
            "an expired token",
            json!({"token": token(&org_root, HOST, &fingerprint(&host_key), &now_plus(-7200), &now_plus(-3600), "01"), "csrPem": csr(HOST, &host_key)}),
            401,
            "token-not-valid-now",
        ),
        (
            "a token signed by another key",
            json!({"token": token(&ed25519_dalek::SigningKey::from_bytes(&[7; 32]), HOST, &fingerprint(&host_key), &now_plus(-60), &now_plus(3600), "02"), "csrPem": csr(HOST, &host_key)}),
            401,
            "bad-token-signature",
        ),
        (
            "a token minted for another key than the CSR's",
            json!({"token": token(&org_root, HOST, &fingerprint(&other_key), &now_plus(-60), &now_plus(3600), "03"), "csrPem": csr(HOST, &host_key)}),
            401,
            "csr-fingerprint-mismatch",
        ),
        (
            "a CSR for another host than the token",
            json!({"token": token(&org_root, HOST, &fingerprint(&host_key), &now_plus(-60), &now_plus(3600), "04"), "csrPem": csr("web-0003", &host_key)}),
            401,
            "csr-host-mismatch",
        ),
        (
            "a key the fleet does not declare for the host",
            json!({"token": token(&org_root, HOST, &fingerprint(&other_key), &now_plus(-60), &now_plus(3600), "05"), "csrPem": csr(HOST, &other_key)}),
            401,
            "host-key-mismatch",
        ),
        (
            "a host the fleet does not declare",
            json!({"token": token(&org_root, "web-9999", &fingerprint(&host_key), &now_plus(-60), &now_plus(3600), "06"), "csrPem": csr("web-9999", &host_key)}),
            401,
            "host-not-in-fleet",
        ),
        (
            "a P-256 CSR (agents use their SSH ed25519 host key)",
            json!({"token": token(&org_root, HOST, &fingerprint(&host_key), &now_plus(-60), &now_plus(3600), "07"), "csrPem": csr(HOST, &KeyPair::generate().unwrap())}),
            400,
            "csr-key-not-ed25519",
        ),
        (
            "a CSR that is not PEM",
            json!({"token": good_token, "csrPem": "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"}),
            400,
            "malformed-csr",
        ),
    ];
    let size = |d: &Daemon| *d.shared.committed.borrow();
    let before = size(&daemon);
    for (what, body, status, code) in refused {
        let (s, v) = enroll(body).await;
        assert_eq!(
            (s, v["error"].as_str()),
            (status, Some(code)),
            "{what}: {v}"
        );
    }
    assert_eq!(size(&daemon), before, "refusals record nothing");

    // The good token: a certificate for agent-web-0002.agents.test, from the fleet CA.
    let (s, v) = enroll(good.clone()).await;
    assert_eq!(s, 200, "{v}");
    let cert_pem = v["certPem"].as_str().unwrap().to_string();
    assert!(v["notAfter"].as_str().unwrap().ends_with('Z'), "{v}");
    assert_eq!(cn_of(&cert_pem), format!("agent-{HOST}.{SUFFIX}"));
    let first_serial = serial_of(&cert_pem);
    // The nonce is spent: the same token again is a replay.
    let (s, v) = enroll(good).await;
    assert_eq!((s, v["error"].as_str()), (409, Some("nonce-used")), "{v}");

    // The agent now talks mTLS with the certificate and its host key; the CN rule names it.
    let identity = (cert_pem.clone(), host_key.serialize_pem());
    let beat = json!({"hostname": HOST, "current_closure": "/nix/store/x", "at": now_plus(0)});
    let (s, v) = request_with(
        addr,
        &server_ca_pem,
        Some(&identity),
        "POST",
        "/v1/agent/heartbeat",
        None,
        &[],
        Some(beat),
    )
    .await
    .unwrap();
    assert_eq!(s, 200, "{v}");

    // CI's canary rollout; the agent works through it over mTLS, as nixfleet's does.
    let rollout = "canary@c0ffee01";
    let target = "/nix/store/c-canary";
    let doc = setup
        .rollout_doc("canary", "c0ffee01", target, &setup.at(0))
        .unwrap();
    let mut doc = doc;
    let (_, fleet_hash) = setup.sign(&fleet).unwrap();
    doc["fleet_resolved_hash"] = json!(fleet_hash);
    let (signed, _) = setup.sign(&doc).unwrap();
    let (s, v) = request_with(
        addr,
        &server_ca_pem,
        None,
        "POST",
        &format!("/v1/manifests/rollouts/{rollout}"),
        Some(&setup.tokens.ci),
        &[],
        Some(signed),
    )
    .await
    .unwrap();
    assert_eq!(s, 200, "{v}");
    let agent = |method: &'static str, path: String, body: Option<Value>| {
        let (ca, id) = (server_ca_pem.clone(), identity.clone());
        async move {
            request_raw(addr, &ca, Some(&id), method, &path, None, &[], body)
                .await
                .unwrap()
        }
    };
    let (s, d) = agent("GET", "/v1/agent/dispatch?wait=10".into(), None).await;
    assert_eq!(s, 200);
    let d: Value = serde_json::from_slice(&d).unwrap();
    assert_eq!(
        (d["rollout_id"].as_str(), d["target_closure"].as_str()),
        (Some(rollout), Some(target))
    );
    // Before activating, the agent fetches the manifest and its raw signature and verifies
    // them with CI's key.
    let (s, bytes) = agent("GET", format!("/v1/rollouts/{rollout}"), None).await;
    assert_eq!(s, 200);
    let (s, sig) = agent("GET", format!("/v1/rollouts/{rollout}/sig"), None).await;
    assert_eq!(s, 200);
    let ci = ed25519_dalek::VerifyingKey::from_bytes(&setup.ci.public().bytes()).unwrap();
    ci.verify_strict(&bytes, &ed25519_dalek::Signature::from_slice(&sig).unwrap())
        .expect("the served manifest verifies with CI's key");
    // And the fleet it was built against, whose hash it names.
    let (s, fleet_bytes) = agent("GET", "/v1/fleet.resolved".into(), None).await;
    assert_eq!(s, 200);
    let (s, fleet_sig) = agent("GET", "/v1/fleet.resolved/sig".into(), None).await;
    assert_eq!(s, 200);
    ci.verify_strict(
        &fleet_bytes,
        &ed25519_dalek::Signature::from_slice(&fleet_sig).unwrap(),
    )
    .expect("the served fleet verifies with CI's key");
    let named: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(
        named["fleet_resolved_hash"].as_str().unwrap(),
        fleet_ledger::auth::hex(&sha2::Sha256::digest(&fleet_bytes))
    );
    let at = || wire::ts::format(chrono::Utc::now().timestamp_micros());
    let events = [
        json!({"kind": "DispatchAck", "currentClosureAtDispatch": target, "receivedAt": at()}),
        json!({"kind": "ActivationStarted", "startedAt": at(), "switchMethod": "switch-to-configuration"}),
        json!({"kind": "ActivationCompleted", "observedCurrentClosure": target, "exitCode": 0, "completedAt": at()}),
        json!({"kind": "ProbeTopologyDeclared", "probes": [{"probeName": "evidence-nis2-essential", "kind": "evidence", "mode": "enforce"}], "declaredAt": at()}),
        json!({"kind": "ProbeResult", "probeName": "evidence-nis2-essential", "mode": "enforce", "status": "pass", "observedAt": at()}),
        json!({"kind": "Converged", "convergedAt": at(), "currentClosure": target}),
    ];
    for (i, mut event) in events.into_iter().enumerate() {
        event["seq"] = json!(i + 1);
        let body = json!({"hostname": HOST, "rolloutId": rollout, "event": event});
        let (s, v) = agent("POST", "/v1/agent/events".into(), Some(body)).await;
        let v: Value = serde_json::from_slice(&v).unwrap();
        assert_eq!(s, 200, "{v}");
        assert!(v.get("refused").is_none(), "event {}: {v}", i + 1);
    }
    let (s, v) = request_with(
        addr,
        &server_ca_pem,
        None,
        "GET",
        &format!("/v1/ledger/rollouts/{rollout}/hosts"),
        Some(&setup.tokens.operator),
        &[],
        None,
    )
    .await
    .unwrap();
    assert_eq!(s, 200, "{v}");
    let me = v["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["host"] == HOST)
        .unwrap();
    assert_eq!(me["state"], "Converged", "{v}");

    // Renewal: the same CSR over mTLS; a bearer token cannot renew.
    let renew = |identity: Option<(String, String)>, token: Option<String>, key: &KeyPair| {
        let (ca, body) = (server_ca_pem.clone(), json!({"csrPem": csr(HOST, key)}));
        async move {
            request_with(
                addr,
                &ca,
                identity.as_ref(),
                "POST",
                "/v1/agent/renew",
                token.as_deref(),
                &proto,
                Some(body),
            )
            .await
            .unwrap()
        }
    };
    let agent_token = setup.tokens.agents[HOST].clone();
    let (s, v) = renew(None, Some(agent_token), &host_key).await;
    assert_eq!(
        (s, v["error"].as_str()),
        (401, Some("certificate-required")),
        "{v}"
    );
    let (s, v) = renew(Some(identity.clone()), None, &other_key).await;
    assert_eq!(
        (s, v["error"].as_str()),
        (401, Some("host-key-mismatch")),
        "{v}"
    );
    // Issue 26, defect 7: the certificate alone says who renews. Another host's bearer token
    // beside it is refused, and nothing is recorded.
    let other_token = setup
        .tokens
        .agents
        .iter()
        .find(|(h, _)| h.as_str() != HOST)
        .map(|(_, t)| t.clone())
        .unwrap();
    let size = |db: &std::path::Path| {
        ledger::store::ReadOnlyStore::open(db)
            .unwrap()
            .snapshot()
            .unwrap()
            .size()
    };
    let before = size(&setup.db);
    let (s, v) = renew(Some(identity.clone()), Some(other_token), &host_key).await;
    assert_eq!(
        (s, v["error"].as_str()),
        (401, Some("mixed-credentials")),
        "{v}"
    );
    assert_eq!(
        size(&setup.db),
        before,
        "a refused renewal recorded something"
    );
    let (s, v) = renew(Some(identity.clone()), None, &host_key).await;
    assert_eq!(s, 200, "{v}");
    let renewed = v["certPem"].as_str().unwrap().to_string();
    // OpenSSL, as a TLS server requiring the fleet CA's client certificates, accepts it.
    let (cn, san) = openssl_accepts(
        dir.path(),
        &(server_cert.clone(), server_key.clone()),
        &server_ca_pem,
        &fleet_ca.ca.pem(),
        &(renewed.clone(), host_key.serialize_pem()),
    )
    .await;
    assert_eq!(cn, format!("agent-{HOST}.{SUFFIX}"));
    assert_eq!(san, vec![cn.clone()]);
    assert_eq!(cn_of(&renewed), format!("agent-{HOST}.{SUFFIX}"));
    assert_ne!(serial_of(&renewed), first_serial, "a new serial");
    let (s, v) = request_with(
        addr,
        &server_ca_pem,
        Some(&(renewed, host_key.serialize_pem())),
        "POST",
        "/v1/agent/heartbeat",
        None,
        &[],
        Some(json!({"hostname": HOST, "at": now_plus(0)})),
    )
    .await
    .unwrap();
    assert_eq!(s, 200, "{v}");
    daemon.shutdown().await.unwrap();

    // The audit trail: who got which identity, on what token; re-decided by the check.
    let source = engine::forensics::Source::Db(&setup.db);
    let lines = host_timeline(&setup.db);
    let issued: Vec<_> = lines
        .iter()
        .filter(|l| l.kind == "AgentEnrolled" || l.kind == "AgentCertificateRenewed")
        .collect();
    assert_eq!(issued.len(), 2, "{lines:#?}");
    assert!(
        issued[0]
            .summary
            .contains("on bootstrap token 00112233445566778899aabbccddeeff"),
        "{}",
        issued[0].summary
    );
    let hex: String = first_serial.iter().map(|b| format!("{b:02x}")).collect();
    assert!(
        issued[1]
            .summary
            .contains(&format!("replacing serial {hex}")),
        "{}",
        issued[1].summary
    );
    let report = engine::forensics::check(source).unwrap();
    assert!(report.divergence.is_none(), "{report:?}");
}

/// Issue 26, defect 10: the org root key is re-read at a reload. Rotating `orgRootKey` in the
/// trust file and reloading makes tokens of the new key enroll and the old key's fail, the
/// report names what it applied, and the change is in the log (`AccessChanged`) before its
/// first use.
#[tokio::test(flavor = "multi_thread")]
async fn an_org_root_key_rotated_in_the_trust_file_applies_at_reload() {
    let dir = tempfile::tempdir().unwrap();
    let setup = Setup::create(dir.path(), None, 5).unwrap();
    let fleet_ca = Pki::new("fleet CA");
    let ca_pem = fleet_ca.ca.pem();
    let (server_cert, server_key) = fleet_ca.leaf("cp.test", &["localhost"]);
    let old_root = ed25519_dalek::SigningKey::from_bytes(&[42; 32]);
    let new_root = ed25519_dalek::SigningKey::from_bytes(&[43; 32]);
    let trust = |root: &ed25519_dalek::SigningKey| {
        json!({"schemaVersion": 1, "ciReleaseKey": {}, "orgRootKey": {"current":
            {"algorithm": "ed25519", "public": b64(root.verifying_key().as_bytes())}}})
        .to_string()
    };
    let trust_path = write(dir.path(), "trust.json", &trust(&old_root));
    let mut config = setup.config.clone();
    config.trust.trust_file = Some(trust_path.clone());
    with_enrollment(
        &mut config,
        dir.path(),
        &fleet_ca,
        (&server_cert, &server_key),
        None,
    );
    let config_path = write(
        dir.path(),
        "config.json",
        &serde_json::to_string(&config).unwrap(),
    );
    let (daemon, _) = setup.start_with(config).await.unwrap();
    daemon.reloader.set_config_path(config_path);
    let addr = daemon.addr;
    let post = |path: &'static str, token: Option<String>, body: Value| {
        let ca = ca_pem.clone();
        async move {
            request_with(
                addr,
                &ca,
                None,
                "POST",
                path,
                token.as_deref(),
                &[],
                Some(body),
            )
            .await
            .unwrap()
        }
    };
    let host_key = KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let mut fleet = setup.fleet_doc.clone();
    fleet["hosts"][HOST]["pubkey"] = json!(openssh_line(&host_key));
    let (signed, _) = setup.sign(&fleet).unwrap();
    let (s, v) = post("/v1/manifests/fleet", Some(setup.tokens.ci.clone()), signed).await;
    assert_eq!(s, 200, "{v}");
    let enroll = |root: &ed25519_dalek::SigningKey, nonce: &str| {
        json!({"token": token(root, HOST, &fingerprint(&host_key), &now_plus(-60), &now_plus(3600), nonce),
               "csrPem": csr(HOST, &host_key)})
    };
    let (s, v) = post("/v1/enroll", None, enroll(&new_root, "a1")).await;
    assert_eq!((s, v["error"].as_str()), (401, Some("bad-token-signature")));

    std::fs::write(&trust_path, trust(&new_root)).unwrap();
    let report = daemon.reloader.reload("SIGHUP").await.unwrap();
    let key = |k: &ed25519_dalek::SigningKey| {
        format!("org-root:ed25519:{}", b64(k.verifying_key().as_bytes()))
    };
    assert_eq!(report.keys_added, vec![key(&new_root)], "{report:?}");
    assert_eq!(report.keys_removed, vec![key(&old_root)], "{report:?}");
    assert_eq!(
        report.applied,
        vec!["org root keys".to_string()],
        "{report:?}"
    );
    assert!(report.needs_restart.is_empty(), "{report:?}");
    let recorded = report.access_changed_seq.expect("the change is recorded");

    let (s, v) = post("/v1/enroll", None, enroll(&old_root, "a2")).await;
    assert_eq!((s, v["error"].as_str()), (401, Some("bad-token-signature")));
    let (s, v) = post("/v1/enroll", None, enroll(&new_root, "a3")).await;
    assert_eq!(s, 200, "{v}");
    // The enrollment was recorded after the change that allowed it.
    assert!(*daemon.shared.committed.borrow() > recorded + 1);

    // nixfleet re-reads the trust file at every enrollment (NIXFLEET-WIRE.md §9.6): the key
    // rotated back with no signal and no reload applies to the next enrollment, and the
    // change is recorded first, by `trust-file`.
    std::fs::write(&trust_path, trust(&old_root)).unwrap();
    let (s, v) = post("/v1/enroll", None, enroll(&old_root, "a4")).await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = post("/v1/enroll", None, enroll(&new_root, "a5")).await;
    assert_eq!((s, v["error"].as_str()), (401, Some("bad-token-signature")));
    daemon.shutdown().await.unwrap();
    let entries: Vec<_> = engine::forensics::entries(engine::forensics::Source::Db(&setup.db))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let followed = entries
        .iter()
        .rposition(
            |e| matches!(&e.event, ledger::event::Event::AccessChanged(a) if a.by == "trust-file"),
        )
        .expect("the trust file's change is recorded");
    let enrolled = entries
        .iter()
        .rposition(|e| matches!(e.event, ledger::event::Event::AgentEnrolled(_)))
        .unwrap();
    assert!(followed < enrolled, "recorded before its first use");
}
