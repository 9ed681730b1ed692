//! CI's security sidecars as nixfleet's CI writes them (NIXFLEET-WIRE.md §9.1, §9.2): a
//! signed `revocations.json` and `bootstrap-nonces.json` dropped into the watched release
//! directory (JCS bytes, raw `.sig`, ed25519 and ecdsa-p256 with a high s), or pulled from
//! their URLs. A revoked host's certificate is refused 401 on every route an agent uses and
//! at renewal, the refusal holds across a rebuild and a restart (the list is in the log),
//! the allowlist refuses enrollments in nixfleet's order, and a file that does not verify
//! leaves the list in force as it was.

mod enrolling;
mod fleet;
mod static_server;
mod tls;

use std::time::Duration;

use enrolling::*;
use fleet_ledger::config::{SignedFileSource, TrustedKey};
use fleet_ledger_demo::Setup;
use rcgen::KeyPair;
use serde_json::{Value, json};
use tls::{Pki, request_with};

fn ed25519_key() -> ed25519_dalek::SigningKey {
    ed25519_dalek::SigningKey::from_bytes(&[9; 32])
}

fn p256_key() -> p256::ecdsa::SigningKey {
    p256::ecdsa::SigningKey::from_slice(&[7; 32]).unwrap()
}

/// CI's keys as trusted: ed25519 and ecdsa-p256 (`X‖Y`, base64).
fn ci_keys() -> Vec<TrustedKey> {
    let point = p256_key().verifying_key().to_sec1_point(false);
    vec![
        TrustedKey {
            algorithm: "ed25519".into(),
            public: b64(ed25519_key().verifying_key().as_bytes()),
        },
        TrustedKey {
            algorithm: "ecdsa-p256".into(),
            public: b64(&point.as_bytes()[1..]),
        },
    ]
}

/// How a file is signed.
#[derive(Clone, Copy)]
enum Sig {
    Ed25519,
    /// P-256 with a high s, as a TPM signs half the time.
    P256HighS,
    /// A key nobody trusts.
    Untrusted,
}

fn sign(how: Sig, msg: &[u8]) -> Vec<u8> {
    use ed25519_dalek::Signer as _;
    match how {
        Sig::Ed25519 => ed25519_key().sign(msg).to_bytes().to_vec(),
        Sig::Untrusted => ed25519_dalek::SigningKey::from_bytes(&[1; 32])
            .sign(msg)
            .to_bytes()
            .to_vec(),
        Sig::P256HighS => {
            use p256::ecdsa::signature::Signer as _;
            let sig: p256::ecdsa::Signature = p256_key().sign(msg);
            let (r, s) = sig.split_scalars();
            let high = if sig.normalize_s() == sig { -*s } else { *s };
            let flipped =
                p256::ecdsa::Signature::from_scalars(r.to_bytes(), high.to_bytes()).unwrap();
            assert_ne!(flipped.normalize_s(), flipped);
            flipped.to_bytes().to_vec()
        }
    }
}

/// CI's `meta` (§4.1) signed at `signed_at`.
fn meta(signed_at: &str) -> Value {
    json!({"ciCommit": "5d4b6c1e6cee214e4a2f486e3bcaba0438bf87e4", "schemaVersion": 1,
           "signatureAlgorithm": "ed25519", "signedAt": signed_at})
}

/// Writes `doc` as CI does: its JCS bytes, and the raw signature in `<name>.sig`.
fn drop_signed(dir: &std::path::Path, name: &str, doc: &Value, how: Sig) {
    let bytes = serde_json_canonicalizer::to_vec(doc).unwrap();
    std::fs::write(dir.join(format!("{name}.sig")), sign(how, &bytes)).unwrap();
    std::fs::write(dir.join(name), bytes).unwrap();
}

fn not_before_of(pem: &str) -> i64 {
    use rustls::pki_types::pem::PemObject as _;
    let der = rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).unwrap();
    cert.validity().not_before.timestamp()
}

fn rfc3339_secs(secs: i64) -> String {
    chrono::DateTime::from_timestamp(secs, 0)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Polls `done` until it holds (what commits nothing: a refused file); ten seconds fail.
async fn until(what: &str, done: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_revoked_host_is_refused_everywhere_and_the_allowlist_gates_enrollment() {
    let dir = tempfile::tempdir().unwrap();
    let setup = Setup::create(dir.path(), None, 5).unwrap();
    let fleet_ca = Pki::new("fleet CA");
    let ca_pem = fleet_ca.ca.pem();
    let (server_cert, server_key) = fleet_ca.leaf("cp.test", &["localhost"]);
    let org_root = ed25519_dalek::SigningKey::from_bytes(&[42; 32]);
    let host_key = KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let other_key = KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let watched = dir.path().join("release");
    std::fs::create_dir_all(&watched).unwrap();

    let mut config = setup.config.clone();
    config.trust.manifest_keys.extend(ci_keys());
    config.manifest_dir = Some(watched.clone());
    with_enrollment(
        &mut config,
        dir.path(),
        &fleet_ca,
        (&server_cert, &server_key),
        Some(org_root_slot(&org_root)),
    );
    let (daemon, _) = setup.start_with(config.clone()).await.unwrap();
    let addr = daemon.addr;
    let op = setup.tokens.operator.clone();

    post_fleet_declaring(&setup, addr, &ca_pem, &host_key, &other_key).await;

    let enroll = |nonce: &'static str| {
        let ca = ca_pem.clone();
        let body = json!({
            "token": token(&org_root, HOST, &fingerprint(&host_key), &now_plus(-60), &now_plus(3600), nonce),
            "csrPem": csr(HOST, &host_key)});
        async move {
            request_with(addr, &ca, None, "POST", "/v1/enroll", None, &[], Some(body))
                .await
                .unwrap()
        }
    };
    // Before CI publishes an allowlist, a token's nonce is held to the once-ever rule only.
    let (s, v) = enroll("a1a1a1a1").await;
    assert_eq!(s, 200, "{v}");
    let cert_a = v["certPem"].as_str().unwrap().to_string();

    // CI's allowlist (ed25519): one nonce for this host, one for another, one expired, one
    // for later.
    let nonce = |n: &str, host: &str, expires: &str| {
        json!({"nonce": n, "hostname": host, "expiresAt": expires,
               "mintedAt": now_plus(-120), "mintedBy": "alice"})
    };
    drop_signed(
        &watched,
        "bootstrap-nonces.json",
        &json!({"schemaVersion": 1, "meta": meta(&now_plus(-50)), "bootstrapNonces": [
            nonce("b1b1b1b1", HOST, &now_plus(3600)),
            nonce("c1c1c1c1", "web-0003", &now_plus(3600)),
            nonce("d1d1d1d1", HOST, &now_plus(-10)),
            nonce("e1e1e1e1", HOST, &now_plus(3600)),
        ]}),
        Sig::Ed25519,
    );
    fleet::until_committed(&daemon, "the allowlist in force", async || {
        daemon
            .shared
            .allowlist_ready
            .load(std::sync::atomic::Ordering::Acquire)
    })
    .await;
    let size = |d: &fleet_ledger::daemon::Daemon| *d.shared.committed.borrow();
    let before = size(&daemon);
    for (nonce, code) in [
        ("f1f1f1f1", "nonce-not-allowed"),
        ("c1c1c1c1", "nonce-other-host"),
        ("d1d1d1d1", "nonce-expired"),
    ] {
        let (s, v) = enroll(nonce).await;
        assert_eq!((s, v["error"].as_str()), (401, Some(code)), "{nonce}: {v}");
    }
    assert_eq!(size(&daemon), before, "refused enrollments record nothing");
    let (s, v) = enroll("b1b1b1b1").await;
    assert_eq!(s, 200, "{v}");
    let cert_b = v["certPem"].as_str().unwrap().to_string();
    let (s, v) = enroll("b1b1b1b1").await;
    assert_eq!((s, v["error"].as_str()), (409, Some("nonce-used")), "{v}");

    // The agent with certificate B works.
    let agent = |cert: &str, method: &'static str, path: &'static str, body: Option<Value>| {
        let (ca, id) = (ca_pem.clone(), (cert.to_string(), host_key.serialize_pem()));
        async move {
            request_with(addr, &ca, Some(&id), method, path, None, &[], body)
                .await
                .unwrap()
        }
    };
    let beat =
        || Some(json!({"hostname": HOST, "current_closure": "/nix/store/x", "at": now_plus(0)}));
    assert_eq!(
        agent(&cert_b, "POST", "/v1/agent/heartbeat", beat())
            .await
            .0,
        200
    );

    // CI revokes the host's certificates issued before B's notBefore + 1 s (P-256, high s).
    let cutoff = not_before_of(&cert_b) + 1;
    let revocations = |signed_at: &str, hosts: &[&str]| {
        json!({"schemaVersion": 1, "meta": meta(signed_at), "revocations": hosts.iter().map(|h| json!(
            {"hostname": h, "notBefore": rfc3339_secs(cutoff), "reason": "decommissioned", "revokedBy": "alice"}
        )).collect::<Vec<_>>()})
    };
    drop_signed(
        &watched,
        "revocations.json",
        &revocations(&now_plus(-40), &[HOST]),
        Sig::P256HighS,
    );
    fleet::until_committed(&daemon, "the revocation list in force", async || {
        daemon.shared.revoked().list.is_some()
    })
    .await;

    // Every route the agent uses refuses both older certificates, 401.
    let event = json!({"hostname": HOST, "rolloutId": "canary@c0ffee01", "event":
        {"kind": "DispatchAck", "currentClosureAtDispatch": "/nix/store/x", "receivedAt": now_plus(0), "seq": 1}});
    for cert in [&cert_a, &cert_b] {
        for (method, path, body) in [
            ("POST", "/v1/agent/heartbeat", beat()),
            ("POST", "/v1/agent/events", Some(event.clone())),
            ("GET", "/v1/agent/dispatch?wait=0", None),
            ("GET", "/v1/fleet.resolved", None),
            ("GET", "/v1/fleet.resolved/sig", None),
            (
                "GET",
                "/v1/agent/closure/0c6kzph7l0dcbfmjap64f0czdafn3b7x",
                None,
            ),
            (
                "POST",
                "/v1/agent/renew",
                Some(json!({"csrPem": csr(HOST, &host_key)})),
            ),
        ] {
            let (s, v) = agent(cert, method, path, body).await;
            assert_eq!(
                (s, v["error"].as_str()),
                (401, Some("certificate-revoked")),
                "{method} {path}: {v}"
            );
        }
    }
    // Operators are not the revoked host: their reads go on.
    let (s, v) = request_with(
        addr,
        &ca_pem,
        None,
        "GET",
        "/v1/hosts",
        Some(&op),
        &[],
        None,
    )
    .await
    .unwrap();
    assert_eq!(s, 200, "{v}");

    // A newer list that does not verify (untrusted key), then one that does not parse (a
    // notBefore that is not a time): each refused and counted, the list in force stays.
    let rejections = |code: &'static str| {
        daemon
            .shared
            .metrics
            .render()
            .lines()
            .find(|l| l.contains(&format!("reason=\"{code}\"")) && !l.starts_with('#'))
            .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .unwrap_or(0)
    };
    drop_signed(
        &watched,
        "revocations.json",
        &revocations(&now_plus(-30), &[]),
        Sig::Untrusted,
    );
    until("the unsigned list refused", || {
        rejections("manifest-bad-signature") >= 1
    })
    .await;
    let mut malformed = revocations(&now_plus(-20), &[HOST]);
    malformed["revocations"][0]["notBefore"] = json!("yesterday");
    drop_signed(&watched, "revocations.json", &malformed, Sig::Ed25519);
    until("the malformed list refused", || {
        rejections("manifest-invalid-field") >= 1
    })
    .await;
    let (s, v) = agent(&cert_b, "POST", "/v1/agent/heartbeat", beat()).await;
    assert_eq!(
        (s, v["error"].as_str()),
        (401, Some("certificate-revoked")),
        "{v}"
    );

    // A certificate issued at or after the cutoff passes: the host enrolls again.
    while chrono::Utc::now().timestamp() < cutoff {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (s, v) = enroll("e1e1e1e1").await;
    assert_eq!(s, 200, "{v}");
    let cert_c = v["certPem"].as_str().unwrap().to_string();
    assert!(not_before_of(&cert_c) >= cutoff);
    assert_eq!(
        agent(&cert_c, "POST", "/v1/agent/heartbeat", beat())
            .await
            .0,
        200
    );
    daemon.shutdown().await.unwrap();

    // The list is in the log: rebuilt from it and restarted, the daemon still refuses B.
    engine::materialize::rebuild(&setup.db, |_| {}).unwrap();
    let (daemon, _) = setup.start_with(config.clone()).await.unwrap();
    let addr2 = daemon.addr;
    let agent2 = |cert: &str| {
        let (ca, id) = (ca_pem.clone(), (cert.to_string(), host_key.serialize_pem()));
        async move {
            request_with(
                addr2,
                &ca,
                Some(&id),
                "POST",
                "/v1/agent/heartbeat",
                None,
                &[],
                beat(),
            )
            .await
            .unwrap()
        }
    };
    let (s, v) = agent2(&cert_b).await;
    assert_eq!(
        (s, v["error"].as_str()),
        (401, Some("certificate-revoked")),
        "{v}"
    );
    assert_eq!(agent2(&cert_c).await.0, 200);

    // Removing the host from the list un-revokes it at once, as nixfleet deletes its row.
    drop_signed(
        &watched,
        "revocations.json",
        &revocations(&now_plus(-10), &["web-0003"]),
        Sig::Ed25519,
    );
    fleet::until_committed(&daemon, "the host un-revoked", async || {
        agent2(&cert_b).await.0 == 200
    })
    .await;
    daemon.shutdown().await.unwrap();

    // The host's timeline says who revoked it, from when and why; the check re-decides each
    // list from its bytes.
    let source = engine::forensics::Source::Db(&setup.db);
    let lines = host_timeline(&setup.db);
    let revoked: Vec<_> = lines
        .iter()
        .filter(|l| l.kind == "RevocationsAccepted")
        .collect();
    assert_eq!(revoked.len(), 1, "{lines:#?}");
    assert_eq!(
        revoked[0].summary,
        format!(
            "revoked: certificates before {}, by alice, reason: decommissioned",
            planner::decide::rfc3339(cutoff * 1_000_000)
        )
    );
    let report = engine::forensics::check(source).unwrap();
    assert!(report.divergence.is_none(), "{report:?}");
}

/// Pulled from CI's URLs (nixfleet's `--revocations-*-url`, `--bootstrap-nonces-*-url`):
/// until the first list of each verifies, agents are not served (503, "control plane not
/// ready"); then they are.
#[tokio::test(flavor = "multi_thread")]
async fn configured_lists_are_pulled_and_agents_wait_for_them() {
    let dir = tempfile::tempdir().unwrap();
    let setup = Setup::create(dir.path(), None, 2).unwrap();
    let served = dir.path().join("served");
    std::fs::create_dir_all(&served).unwrap();
    let web = static_server::StaticServer::start(&served);
    let url = |name: &str| format!("http://127.0.0.1:{}/{name}", web.port);
    let mut config = setup.config.clone();
    config.trust.manifest_keys.extend(ci_keys());
    config.revocations = Some(SignedFileSource {
        url: url("revocations.json"),
        signature_url: None,
        bearer_token_file: None,
        interval_secs: 1,
    });
    config.bootstrap_nonces = Some(SignedFileSource {
        url: url("bootstrap-nonces.json"),
        signature_url: Some(url("nonces.sig")),
        bearer_token_file: None,
        interval_secs: 1,
    });
    let (daemon, c) = setup.start_with(config).await.unwrap();
    let (signed, _) = setup.signed_fleet().unwrap();
    c.ok(&setup.tokens.ci, "/v1/manifests/fleet", &signed)
        .await
        .unwrap();
    let agent = setup.tokens.agents.values().next().unwrap().clone();
    let host = setup.tokens.agents.keys().next().unwrap().clone();
    let beat = json!({"hostname": host, "at": now_plus(0)});
    let (s, v) = c.post(&agent, "/v1/agent/heartbeat", &beat).await.unwrap();
    assert_eq!(s, 503, "{v}");
    assert_eq!(
        v["reason"],
        "control plane not ready: awaiting CI's first signed revocations.json"
    );

    drop_signed(
        &served,
        "revocations.json",
        &json!({"schemaVersion": 1, "meta": meta(&now_plus(-5)), "revocations": []}),
        Sig::P256HighS,
    );
    fleet::until_committed(&daemon, "the pulled revocation list", async || {
        daemon.shared.revoked().list.is_some()
    })
    .await;
    let (s, v) = c.post(&agent, "/v1/agent/heartbeat", &beat).await.unwrap();
    assert_eq!(s, 503, "{v}");
    assert_eq!(
        v["reason"],
        "control plane not ready: awaiting CI's first signed bootstrap-nonces.json"
    );
    let bytes = serde_json::to_vec(
        &json!({"schemaVersion": 1, "meta": meta(&now_plus(-5)), "bootstrapNonces": []}),
    )
    .unwrap();
    // Not canonical on purpose: the CP verifies the JCS form of what it fetched.
    let jcs = serde_json_canonicalizer::to_vec(&serde_json::from_slice::<Value>(&bytes).unwrap())
        .unwrap();
    std::fs::write(served.join("nonces.sig"), sign(Sig::P256HighS, &jcs)).unwrap();
    std::fs::write(served.join("bootstrap-nonces.json"), &bytes).unwrap();
    fleet::until_committed(&daemon, "the pulled allowlist", async || {
        daemon
            .shared
            .allowlist_ready
            .load(std::sync::atomic::Ordering::Acquire)
    })
    .await;
    let (s, v) = c.post(&agent, "/v1/agent/heartbeat", &beat).await.unwrap();
    assert_eq!(s, 200, "{v}");
    daemon.shutdown().await.unwrap();
}
