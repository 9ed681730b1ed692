//! Rotating the checkpoint key while the daemon serves (`POST /v1/ledger/rotate-key`): the
//! rotation is an entry signed off by the old key, later checkpoints are signed by the new
//! one, verifiers (database and published tiles) follow it from the genesis key alone, bad
//! requests are refused with a reason and change nothing, and a restart with the old key is
//! refused with a message that says what to do.

mod common;

use std::process::{Command, Stdio};

use common::*;
use fleet_ledger_demo::{ApiClient, Setup};

async fn post(c: &ApiClient, token: &str, path: &str, body: serde_json::Value) -> (u16, String) {
    let r = c
        .http
        .post(format!("{}{path}", c.base))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_key_rotates_while_serving_and_verifiers_follow() {
    let dir = tempfile::tempdir().unwrap();
    let setup = Setup::create(dir.path(), None, 3).unwrap();
    let config_path = dir.path().join("config.json");
    let tiles = dir.path().join("tiles");
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&config_path).unwrap()).unwrap();
    config["publish"] = serde_json::json!({ "to": tiles, "interval_secs": 1 });
    std::fs::write(&config_path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
    let keys = dir.path().join("keys");
    succeeds(&[
        "keygen",
        "--out",
        keys.to_str().unwrap(),
        "--name",
        "cp-2027",
    ]);
    let new_key = keys.join("cp-2027.key");
    let new_pub = std::fs::read_to_string(keys.join("cp-2027.pub")).unwrap();

    let port = free_port();
    let child = spawn(&setup.db, &config_path, port);
    let c = ApiClient::new(&format!("http://127.0.0.1:{port}")).unwrap();
    wait_healthy(&c).await;
    let (fleet, _) = setup.signed_fleet().unwrap();
    c.ok(&setup.tokens.ci, "/v1/manifests/fleet", &fleet)
        .await
        .unwrap();
    let op = &setup.tokens.operator;
    let before = fetch(&c, op, "/v1/ledger/checkpoint").await;

    // Refused, with a reason, and nothing recorded.
    for (token, body, status, code) in [
        (
            &setup.tokens.auditor,
            serde_json::json!({"key_file": new_key, "reason": "r"}),
            403,
            "forbidden",
        ),
        (
            op,
            serde_json::json!({"key_file": new_key, "reason": " "}),
            400,
            "reason-required",
        ),
        (
            op,
            serde_json::json!({"key_file": "keys/cp-2027.key", "reason": "r"}),
            400,
            "bad-key-file",
        ),
        (
            op,
            serde_json::json!({"key_file": dir.path().join("nope.key"), "reason": "r"}),
            400,
            "bad-key-file",
        ),
        (
            op,
            serde_json::json!({"key_file": setup.config.signing_key, "reason": "r"}),
            409,
            "key-in-chain",
        ),
    ] {
        let (got, text) = post(&c, token, "/v1/ledger/rotate-key", body).await;
        assert_eq!(got, status, "{text}");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["error"], code, "{text}");
    }
    assert_eq!(fetch(&c, op, "/v1/ledger/checkpoint").await, before);

    let (status, text) = post(
        &c,
        op,
        "/v1/ledger/rotate-key",
        serde_json::json!({"key_file": new_key, "reason": "yearly rotation"}),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let rotated: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(rotated["key"], new_pub.trim());
    assert_eq!(rotated["signing_key"], new_key.to_str().unwrap());
    // Rotating to it again: refused.
    let (status, _) = post(
        &c,
        op,
        "/v1/ledger/rotate-key",
        serde_json::json!({"key_file": new_key, "reason": "again"}),
    )
    .await;
    assert_eq!(status, 409);

    // Later commits are signed by the new key (and only by it).
    setup
        .post_rollout(&c, "canary", "c0ffee01", "/nix/store/c-canary")
        .await
        .unwrap();
    let note = fetch(&c, op, "/v1/ledger/checkpoint").await;
    let parsed = ledger::checkpoint::parse_note(&note).unwrap();
    assert!(parsed.checkpoint.size > rotated["seq"].as_u64().unwrap());
    let new_verifier = ledger::keys::PublicKey::from_text(&new_pub).unwrap();
    let old_verifier = ledger::keys::read_public_key(&setup.genesis_pub).unwrap();
    assert!(ledger::checkpoint::verify_note(&note, &new_verifier).is_ok());
    assert!(ledger::checkpoint::verify_note(&note, &old_verifier).is_err());
    // The rotation is in the timeline, with the operator.
    let entry = fetch(
        &c,
        op,
        &format!(
            "/v1/ledger/entries?from={}&to={}",
            rotated["seq"],
            rotated["seq"].as_u64().unwrap() + 1
        ),
    )
    .await;
    assert!(
        String::from_utf8_lossy(&entry).contains("yearly rotation (operator alice)"),
        "{}",
        String::from_utf8_lossy(&entry)
    );
    // Publication follows (the next round publishes the new checkpoint).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let published = || {
        std::fs::read(tiles.join("checkpoint"))
            .ok()
            .and_then(|n| ledger::checkpoint::parse_note(&n).ok())
            .map_or(0, |n| n.checkpoint.size)
    };
    while published() < parsed.checkpoint.size {
        assert!(std::time::Instant::now() < deadline, "not published");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    stop_and_check(child, &setup);

    // Verifiers follow the rotation from the genesis key alone.
    let genesis = setup.genesis_pub.to_str().unwrap();
    let db = setup.db.to_str().unwrap();
    assert!(succeeds(&["verify", "--db", db, "--key", genesis]).starts_with("OK"));
    let t = tiles.to_str().unwrap();
    assert!(succeeds(&["verify", "--tiles", t, "--key", genesis]).starts_with("OK"));

    // The old key no longer starts the daemon, and says why.
    let out = Command::new(EXE)
        .args(["serve", "--db", db, "--listen", "127.0.0.1:0", "--config"])
        .arg(&config_path)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not the key in force") && err.contains("signing_key"),
        "{err}"
    );
    // Named in the config, the new key does.
    config["signing_key"] = serde_json::json!(new_key);
    std::fs::write(&config_path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
    let port = free_port();
    let child = spawn(&setup.db, &config_path, port);
    let c = ApiClient::new(&format!("http://127.0.0.1:{port}")).unwrap();
    wait_healthy(&c).await;
    stop_and_check(child, &setup);
}
