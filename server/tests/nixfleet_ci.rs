//! CI's files as nixfleet's CI writes them: the NIXFLEET-WIRE.md §4 example documents
//! (`fixtures/nixfleet/`, JCS bytes), raw signature bytes in `.sig` files, one signed with an
//! ed25519 key and one with an ecdsa-p256 key (high s, as a TPM signs half the time), trusted
//! through a nixfleet trust file. Dropped in the watched directory, they open a rollout that a
//! nixfleet-shaped agent then works through.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine as _;
use fleet_ledger::config::TokenEntry;
use fleet_ledger_demo::Setup;
use serde_json::{Value, json};

mod fleet;
mod static_server;
use fleet::until_committed;
use static_server::StaticServer;

const ROLLOUT: &str = "stable@5d4b6c1e6cee214e4a2f486e3bcaba0438bf87e4";
const WEB01_TARGET: &str = "l3gla1g9aaaaaaaaaaaaaaaaaaaaaaaa-nixos-system-web-01-26.05";

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/nixfleet")
}

fn ed25519_key() -> ed25519_dalek::SigningKey {
    ed25519_dalek::SigningKey::from_bytes(&[9; 32])
}

fn p256_key() -> p256::ecdsa::SigningKey {
    p256::ecdsa::SigningKey::from_slice(&[7; 32]).unwrap()
}

fn p256_public(k: &p256::ecdsa::SigningKey) -> String {
    let point = k.verifying_key().to_sec1_point(false);
    base64::engine::general_purpose::STANDARD.encode(&point.as_bytes()[1..])
}

/// A P-256 signature with a high s: the other of the two valid (r, s) pairs.
fn p256_high_s(k: &p256::ecdsa::SigningKey, msg: &[u8]) -> Vec<u8> {
    use p256::ecdsa::signature::Signer as _;
    let sig: p256::ecdsa::Signature = k.sign(msg);
    let (r, s) = sig.split_scalars();
    let high = if sig.normalize_s() == sig { -*s } else { *s };
    let flipped = p256::ecdsa::Signature::from_scalars(r.to_bytes(), high.to_bytes()).unwrap();
    assert_ne!(flipped.normalize_s(), flipped, "the signature has a high s");
    flipped.to_bytes().to_vec()
}

/// A release directory as nixfleet's CI leaves it: the fixture documents, each with the raw
/// signature `sign` makes over its bytes beside it. Returns the directory and, for the fleet
/// and the rollout manifest, the bytes and the signature written.
#[allow(clippy::type_complexity)]
fn release_dir(
    dir: &Path,
    sign_fleet: impl Fn(&[u8]) -> Vec<u8>,
    sign_rollout: impl Fn(&[u8]) -> Vec<u8>,
) -> (PathBuf, (Vec<u8>, Vec<u8>), (Vec<u8>, Vec<u8>)) {
    let release = dir.join("release");
    std::fs::create_dir_all(release.join("rollouts")).unwrap();
    let mut written = Vec::new();
    for (name, to, sign) in [
        (
            "fleet.resolved.json".to_string(),
            release.join("fleet.resolved.json"),
            &sign_fleet as &dyn Fn(&[u8]) -> Vec<u8>,
        ),
        (
            format!("{ROLLOUT}.json"),
            release.join(format!("rollouts/{ROLLOUT}.json")),
            &sign_rollout,
        ),
    ] {
        let bytes = std::fs::read(fixtures().join(name)).unwrap();
        let sig = sign(&bytes);
        std::fs::write(&to, &bytes).unwrap();
        std::fs::write(to.with_extension("json.sig"), &sig).unwrap();
        written.push((bytes, sig));
    }
    let rollout = written.pop().unwrap();
    let fleet = written.pop().unwrap();
    (release, fleet, rollout)
}

fn ed25519_sign(bytes: &[u8]) -> Vec<u8> {
    use ed25519_dalek::Signer as _;
    ed25519_key().sign(bytes).to_bytes().to_vec()
}

#[tokio::test(flavor = "multi_thread")]
async fn nixfleet_ci_files_open_a_rollout_an_agent_works_through() {
    let dir = tempfile::tempdir().unwrap();
    let setup = Setup::create(dir.path(), None, 1).unwrap();
    let (watched, (fleet_bytes, fleet_sig), (rollout_bytes, rollout_sig)) =
        release_dir(dir.path(), ed25519_sign, |b| p256_high_s(&p256_key(), b));
    // Files this CP does not read are skipped, and said so.
    std::fs::write(watched.join("revocations.json"), b"{}").unwrap();
    let mut seen = Default::default();
    let (found, skipped) = fleet_ledger::intake::scan_dir(&watched, &mut seen);
    assert_eq!(found.len(), 2);
    assert!(
        skipped.len() == 1 && skipped[0].contains("revocations.json: skipped"),
        "{skipped:?}"
    );

    // nixfleet's trust file: P-256 is the current key, ed25519 the previous one.
    let trust = json!({"schemaVersion": 1, "ciReleaseKey": {
        "current": {"algorithm": "ecdsa-p256", "public": p256_public(&p256_key())},
        "previous": {"algorithm": "ed25519",
                     "public": base64::engine::general_purpose::STANDARD.encode(ed25519_key().verifying_key().as_bytes())},
        "rejectBefore": "2026-01-01T00:00:00Z"}, "cacheKeys": [], "issuanceCaPems": []});
    std::fs::write(dir.path().join("trust.json"), trust.to_string()).unwrap();
    let mut config = setup.config.clone();
    config.trust.manifest_keys.clear();
    config.trust.trust_file = Some(dir.path().join("trust.json"));
    config.manifest_dir = Some(watched);
    let token = fleet_ledger::auth::generate_token().unwrap();
    config.tokens.push(TokenEntry {
        sha256: fleet_ledger::auth::hex(&fleet_ledger::auth::digest(&token)),
        role: fleet_ledger::auth::Role::Agent,
        name: "web-01".into(),
    });
    // The CP's clock five minutes after CI signed (the documents say 2026-05-17T12:00). It is
    // months behind the ledger's genesis (written now): the writer stamps decisions no
    // earlier than the log's last entry, so the clock being behind costs no commit (a
    // regression test: before, every commit failed until the clock caught up).
    let signed = chrono::DateTime::parse_from_rfc3339("2026-05-17T12:05:00Z")
        .unwrap()
        .timestamp_micros();
    let offset = signed - chrono::Utc::now().timestamp_micros();
    let clock: engine::writer::Clock =
        Arc::new(move || chrono::Utc::now().timestamp_micros() + offset);
    let (daemon, c) = setup.start_with_clock(config, clock).await.unwrap();

    let op = setup.tokens.operator.clone();
    let mut rollouts = Value::Null;
    // The operator's view reads the committed tables; the manifests agents fetch are served
    // once the writer has published them, just after the commit (a long poll is woken only
    // then): wait for both.
    until_committed(
        &daemon,
        "the rollout from the release directory",
        async || {
            rollouts = c.get(&op, "/v1/ledger/rollouts").await.unwrap().1;
            let served = c
                .http
                .get(format!("{}/v1/rollouts/{ROLLOUT}", c.base))
                .bearer_auth(&op)
                .send()
                .await
                .is_ok_and(|r| r.status() == 200);
            served
                && rollouts["rollouts"]
                    .as_array()
                    .is_some_and(|r| r.iter().any(|r| r["rolloutId"] == ROLLOUT))
        },
    )
    .await;

    // The agent fetches what it must verify before activating: CI's bytes and signatures,
    // exactly (NIXFLEET-WIRE.md §4.6).
    let fetch = |path: String| {
        let (c, token) = (c.clone(), token.clone());
        async move {
            let r = c
                .http
                .get(format!("{}{path}", c.base))
                .bearer_auth(&token)
                .send()
                .await
                .unwrap();
            let ct = r.headers()["content-type"].to_str().unwrap().to_string();
            (r.status().as_u16(), ct, r.bytes().await.unwrap().to_vec())
        }
    };
    assert_eq!(
        fetch("/v1/fleet.resolved".into()).await,
        (200, "application/json".into(), fleet_bytes.clone())
    );
    assert_eq!(
        fetch("/v1/fleet.resolved/sig".into()).await,
        (200, "application/octet-stream".into(), fleet_sig.clone())
    );
    assert_eq!(
        fetch(format!("/v1/rollouts/{ROLLOUT}")).await,
        (200, "application/json".into(), rollout_bytes.clone())
    );
    assert_eq!(
        fetch(format!("/v1/rollouts/{ROLLOUT}/sig")).await,
        (200, "application/octet-stream".into(), rollout_sig.clone())
    );
    assert_eq!(fetch("/v1/rollouts/stable@ffff".into()).await.0, 404);
    let (s, v) = c
        .get(&op, &format!("/v1/rollouts/{ROLLOUT}/summary"))
        .await
        .unwrap();
    assert_eq!((s, &v["rolloutId"]), (200, &json!(ROLLOUT)), "{v}");

    // `nixfleet status` asks for the channel: NIXFLEET-WIRE.md §7.4's example, byte for byte
    // (snake_case, signedAt as chrono writes it, its nine digits kept).
    let channel = |name: &str| {
        let (c, op) = (c.clone(), op.clone());
        let url = format!("{}/v1/channels/{name}", c.base);
        async move {
            let r = c.http.get(url).bearer_auth(&op).send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    assert_eq!(
        channel("stable").await,
        (
            200,
            r#"{"name":"stable","declared_ci_commit":"5d4b6c1e6cee214e4a2f486e3bcaba0438bf87e4","signed_at":"2026-05-17T12:00:00.123456789+00:00","freshness_window_minutes":180}"#
                .to_string()
        )
    );
    let (s, body) = channel("edge").await;
    assert_eq!(s, 404, "{body}");

    // The agent: long poll, then report in nixfleet's envelope.
    let (s, d) = c.get(&token, "/v1/agent/dispatch?wait=10").await.unwrap();
    assert_eq!(s, 200, "{d}");
    assert_eq!(d["rollout_id"], ROLLOUT);
    assert_eq!(d["target_closure"], WEB01_TARGET);
    let ack = json!({"hostname": "web-01", "rolloutId": ROLLOUT, "event": {"kind": "DispatchAck",
        "currentClosureAtDispatch": WEB01_TARGET, "receivedAt": d["enqueued_at"], "seq": 1}});
    let (s, v) = c.post(&token, "/v1/agent/events", &ack).await.unwrap();
    assert_eq!((s, &v["duplicate"]), (200, &json!(false)), "{v}");
    assert!(v.get("refused").is_none(), "{v}");
    let hb = json!({"hostname": "web-01", "current_closure": "x7q-nixos-system-web-01-26.04",
        "at": "2026-05-17T12:05:01.123456789Z"});
    let (s, v) = c.post(&token, "/v1/agent/heartbeat", &hb).await.unwrap();
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["received_at"], "2026-05-17T12:05:01.123456Z");
    let snap = &v["bootstrap_rollouts"][0];
    assert_eq!(snap["rolloutId"], ROLLOUT);
    assert_eq!(snap["state"], "Activating");
    assert_eq!(snap["targetClosure"], WEB01_TARGET);
    assert_eq!(snap["lastEventSeq"], 1);
    assert!(snap["dispatchedAt"].is_string() && snap["dispatchAckedAt"].is_string());

    // `nixfleet status` lists the hosts (NIXFLEET-WIRE.md §7.3): web-01's entry, every field
    // in nixfleet's order; the declared closure is the fleet's, not the rollout's target.
    let fleet: Value = serde_json::from_slice(&fleet_bytes).unwrap();
    let declared = fleet["hosts"]["web-01"]["closureHash"].as_str().unwrap();
    let r = c
        .http
        .get(format!("{}/v1/hosts", c.base))
        .bearer_auth(&op)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body = r.text().await.unwrap();
    let web01 = format!(
        r#"{{"hostname":"web-01","channel":"stable","declaredClosureHash":"{declared}","currentClosureHash":null,"pendingClosureHash":"{WEB01_TARGET}","lastCheckinAt":null,"lastRolloutId":"{ROLLOUT}","converged":false,"outstandingComplianceFailures":0,"outstandingRuntimeGateErrors":0,"verifiedEventCount":1,"lastUptimeSecs":null,"rolloutState":"Activating","pendingReboot":false,"quarantinedClosure":null,"pin":null,"outstandingHealthFailures":0}}"#
    );
    assert!(body.starts_with(r#"{"hosts":[{"hostname":"#), "{body}");
    assert!(body.contains(&web01), "{body}");
    // `nixfleet rollout …`'s views (§7.5), in nixfleet's shapes and key orders.
    let text = |path: String| {
        let (c, op) = (c.clone(), op.clone());
        async move {
            let r = c
                .http
                .get(format!("{}{path}", c.base))
                .bearer_auth(&op)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    let (s, list) = text("/v1/rollouts".into()).await;
    assert_eq!(s, 200, "{list}");
    assert!(
        list.starts_with(r#"{"rollouts":[{"channel":"stable","createdAt":""#),
        "{list}"
    );
    assert!(
        list.contains(r#"+00:00","currentWave":0,"hostStates":{"web-01":"Activating","#),
        "{list}"
    );
    assert!(
        list.ends_with(&format!(r#"}},"rolloutId":"{ROLLOUT}"}}]}}"#)),
        "{list}"
    );
    let (s, hosts) = text(format!("/v1/rollouts/{ROLLOUT}/hosts")).await;
    assert_eq!(s, 200, "{hosts}");
    let prefix = format!(
        r#"{{"rollout_id":"{ROLLOUT}","hosts":[{{"host":"web-01","channel":"stable","wave":0,"targetClosureHash":"{WEB01_TARGET}","targetChannelRef":"{ROLLOUT}","dispatchedAt":""#
    );
    assert!(hosts.starts_with(&prefix), "{hosts}");
    assert!(
        hosts.contains(r#"+00:00","terminalState":null,"terminalAt":null}"#),
        "{hosts}"
    );
    assert_eq!(text("/v1/rollouts/stable@ffff/hosts".into()).await.0, 404);
    let (s, events) = text(format!("/v1/rollouts/{ROLLOUT}/events?limit=2")).await;
    assert_eq!(s, 200, "{events}");
    let events: Value = serde_json::from_str(&events).unwrap();
    assert_eq!(events["rollout_id"], ROLLOUT);
    let rows = events["events"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "the oldest two: {events}");
    assert!(
        rows[0]["seq"].as_u64() < rows[1]["seq"].as_u64(),
        "{events}"
    );
    assert_eq!(rows[1]["kind"], "rollout_event", "the opening: {events}");
    assert!(
        rows[1]["ts"].as_str().unwrap().ends_with("+00:00"),
        "{events}"
    );
    let (_, one) = text(format!("/v1/rollouts/{ROLLOUT}/events?limit=0")).await;
    assert_eq!(
        serde_json::from_str::<Value>(&one).unwrap()["events"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        text("/v1/rollouts/stable@ffff/events".into()).await,
        (
            200,
            r#"{"rollout_id":"stable@ffff","events":[]}"#.to_string()
        )
    );

    // nixfleet's metrics by name (§10), from the same records and the fleet in force.
    let (s, metrics) = text("/metrics".into()).await;
    assert_eq!(s, 200);
    for family in [
        "# TYPE nixfleet_host_converged gauge",
        "# TYPE nixfleet_host_outstanding_compliance_failures gauge",
        "# TYPE nixfleet_host_outstanding_runtime_gate_errors gauge",
        "# TYPE nixfleet_host_verified_event_count gauge",
        "# TYPE nixfleet_channel_freshness_window_minutes gauge",
        "# TYPE nixfleet_fleet_signed_age_seconds gauge",
        "# TYPE nixfleet_cp_build_info gauge",
    ] {
        assert!(metrics.contains(family), "{family}: {metrics}");
    }
    for series in [
        r#"nixfleet_host_converged{host="web-01",channel="stable"} 0"#,
        r#"nixfleet_host_verified_event_count{host="web-01",channel="stable"} 1"#,
        r#"nixfleet_host_outstanding_compliance_failures{host="web-01",channel="stable"} 0"#,
        r#"nixfleet_channel_freshness_window_minutes{channel="stable"} 180"#,
    ] {
        assert!(metrics.contains(series), "{series}: {metrics}");
    }
    // Signed at 12:00:00.12, the CP's clock five minutes and some later.
    let age: i64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("nixfleet_fleet_signed_age_seconds "))
        .expect("the fleet's age")
        .parse()
        .unwrap();
    assert!((299..400).contains(&age), "{age}");
    assert!(
        metrics.contains("nixfleet_cp_build_info{version=\""),
        "{metrics}"
    );
    assert!(metrics.ends_with("# EOF\n"), "one exposition");
    assert_eq!(metrics.matches("# EOF").count(), 1);

    let listed: Value = serde_json::from_str(&body).unwrap();
    let hosts = listed["hosts"].as_array().unwrap();
    assert_eq!(
        hosts.len(),
        fleet["hosts"].as_object().unwrap().len(),
        "one record per host of the rollout: {body}"
    );

    // The recorded manifests are CI's bytes, and name the key that verified each.
    let (_, page) = c
        .get(&op, &format!("/v1/ledger/rollouts/{ROLLOUT}/events"))
        .await
        .unwrap();
    let manifest = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "RolloutManifestSigned")
        .expect("the manifest entry")
        .clone();
    assert_eq!(manifest["payload"]["signer"], p256_public(&p256_key()));
    daemon.shutdown().await.unwrap();
}

/// nixfleet's CP pulls CI's published files; fleet-ledger does too. Served here by a real
/// HTTP server (Python's `http.server`) from a release directory on loopback.
#[tokio::test(flavor = "multi_thread")]
async fn ci_files_are_pulled_from_their_urls() {
    let dir = tempfile::tempdir().unwrap();
    let setup = Setup::create(dir.path(), None, 1).unwrap();
    let (release, _, _) = release_dir(dir.path(), ed25519_sign, ed25519_sign);
    let server = StaticServer::start(&release);
    let base = server.base();

    let mut config = setup.config.clone();
    config.trust.manifest_keys = vec![fleet_ledger::config::TrustedKey {
        algorithm: "ed25519".into(),
        public: base64::engine::general_purpose::STANDARD
            .encode(ed25519_key().verifying_key().as_bytes()),
    }];
    config.trust.max_age_secs = 400 * 24 * 3600;
    config.pull = Some(fleet_ledger::config::PullConfig {
        fleet_url: format!("{base}/fleet.resolved.json"),
        fleet_signature_url: None,
        rollout_url_template: format!("{base}/rollouts/{{rolloutId}}.json"),
        rollout_signature_url_template: None,
        bearer_token_file: None,
        interval_secs: 1,
    });
    let (daemon, c) = setup.start_with(config).await.unwrap();
    let op = setup.tokens.operator.clone();
    let mut rollouts = Value::Null;
    until_committed(&daemon, "the rollout pulled from CI's URLs", async || {
        rollouts = c.get(&op, "/v1/ledger/rollouts").await.unwrap().1;
        rollouts["rollouts"]
            .as_array()
            .is_some_and(|r| r.iter().any(|r| r["rolloutId"] == ROLLOUT))
    })
    .await;
    daemon.shutdown().await.unwrap();
    drop(server);
}

/// nixfleet re-reads its trust file at every poll (NIXFLEET-WIRE.md §9.6): CI's release key
/// rotated in `trust.json`, with no signal and no reload, verifies the next fleet the watched
/// directory brings, and the change is in the log (`AccessChanged`, by `trust-file`) before
/// the manifest it let in.
#[tokio::test(flavor = "multi_thread")]
async fn a_ci_key_rotated_in_the_trust_file_applies_at_the_next_poll() {
    use ed25519_dalek::Signer as _;
    let dir = tempfile::tempdir().unwrap();
    let setup = Setup::create(dir.path(), None, 1).unwrap();
    let (watched, (fleet_bytes, _), _) = release_dir(dir.path(), ed25519_sign, ed25519_sign);
    let b64 = |k: &ed25519_dalek::SigningKey| {
        base64::engine::general_purpose::STANDARD.encode(k.verifying_key().as_bytes())
    };
    let trust = |k: &ed25519_dalek::SigningKey| {
        json!({"schemaVersion": 1, "ciReleaseKey": {"current": {"algorithm": "ed25519", "public": b64(k)}},
               "cacheKeys": [], "issuanceCaPems": []})
        .to_string()
    };
    let trust_path = dir.path().join("trust.json");
    std::fs::write(&trust_path, trust(&ed25519_key())).unwrap();
    let mut config = setup.config.clone();
    config.trust.manifest_keys.clear();
    config.trust.trust_file = Some(trust_path.clone());
    config.manifest_dir = Some(watched.clone());
    let config_path = dir.path().join("config.json");
    std::fs::write(&config_path, serde_json::to_string(&config).unwrap()).unwrap();
    let signed = chrono::DateTime::parse_from_rfc3339("2026-05-17T12:05:00Z")
        .unwrap()
        .timestamp_micros();
    let offset = signed - chrono::Utc::now().timestamp_micros();
    let clock: engine::writer::Clock =
        Arc::new(move || chrono::Utc::now().timestamp_micros() + offset);
    let (daemon, c) = setup.start_with_clock(config, clock).await.unwrap();
    daemon.reloader.set_config_path(config_path);
    let op = setup.tokens.operator.clone();
    let served = |bytes: Vec<u8>| {
        let (c, op) = (c.clone(), op.clone());
        async move {
            let r = c
                .http
                .get(format!("{}/v1/fleet.resolved", c.base))
                .bearer_auth(&op)
                .send()
                .await
                .unwrap();
            r.status() == 200 && r.bytes().await.unwrap().to_vec() == bytes
        }
    };
    until_committed(&daemon, "the fleet under the first key", async || {
        served(fleet_bytes.clone()).await
    })
    .await;

    // CI rotates its key: the trust file names the new one, and the next release is signed
    // with it.
    let next = ed25519_dalek::SigningKey::from_bytes(&[77; 32]);
    assert_ne!(next.verifying_key(), ed25519_key().verifying_key());
    std::fs::write(&trust_path, trust(&next)).unwrap();
    let mut fleet: Value = serde_json::from_slice(&fleet_bytes).unwrap();
    fleet["meta"]["signedAt"] = json!("2026-05-17T12:01:00Z");
    let next_bytes = serde_json_canonicalizer::to_vec(&fleet).unwrap();
    std::fs::write(watched.join("fleet.resolved.json"), &next_bytes).unwrap();
    std::fs::write(
        watched.join("fleet.resolved.json.sig"),
        next.sign(&next_bytes).to_bytes(),
    )
    .unwrap();
    until_committed(&daemon, "the fleet under the rotated key", async || {
        served(next_bytes.clone()).await
    })
    .await;
    daemon.shutdown().await.unwrap();

    let entries: Vec<_> = engine::forensics::entries(engine::forensics::Source::Db(&setup.db))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let followed = entries
        .iter()
        .position(
            |e| matches!(&e.event, ledger::event::Event::AccessChanged(a) if a.by == "trust-file"),
        )
        .unwrap_or_else(|| {
            panic!(
                "the trust file's change is recorded: {:?}",
                entries
                    .iter()
                    .map(|e| e.event.kind().name())
                    .collect::<Vec<_>>()
            )
        });
    let fleets: Vec<usize> = entries
        .iter()
        .enumerate()
        .filter(|(_, e)| matches!(e.event, ledger::event::Event::FleetManifestSigned(_)))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(fleets.len(), 2, "both fleets are recorded");
    assert!(
        fleets[0] < followed && followed < fleets[1],
        "{followed} {fleets:?}"
    );
}
