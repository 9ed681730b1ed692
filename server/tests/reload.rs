//! Reloading the config while serving (SIGHUP and `POST /v1/admin/reload`): a token added
//! works at once and the change is in the log (`AccessChanged`, before it takes effect); a
//! config that does not load is refused and the one in force stays; a removed token stops
//! working; a change that needs a restart is reported, not applied.

mod common;

use std::time::{Duration, Instant};

use common::*;
use fleet_ledger_demo::{ApiClient, Setup};
use sha2::Digest as _;

async fn status(c: &ApiClient, token: &str) -> u16 {
    c.http
        .get(format!("{}/v1/ledger/rollouts", c.base))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// The decoded `AccessChanged` entries of the log.
async fn access_changes(c: &ApiClient, auditor: &str) -> Vec<ledger::event::AccessChanged> {
    entries(c, auditor, 0, None)
        .await
        .iter()
        .filter_map(
            |b| match ledger::entry::EntryRef::parse(b).unwrap().event().unwrap() {
                ledger::Event::AccessChanged(a) => Some(a),
                _ => None,
            },
        )
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_and_the_reload_route_apply_tokens_and_record_the_change() {
    let dir = tempfile::tempdir().unwrap();
    let setup = Setup::create(dir.path(), None, 2).unwrap();
    let config_path = dir.path().join("config.json");
    let original = std::fs::read(&config_path).unwrap();
    let mut config: serde_json::Value = serde_json::from_slice(&original).unwrap();
    let port = free_port();
    let child = spawn(&setup.db, &config_path, port);
    let c = ApiClient::new(&format!("http://127.0.0.1:{port}")).unwrap();
    wait_healthy(&c).await;
    let (op, auditor) = (&setup.tokens.operator, &setup.tokens.auditor);

    let bob = "bob-operator-token-0123456789abcdef";
    assert_eq!(status(&c, bob).await, 401);
    config["tokens"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({
            "sha256": sha2::Sha256::digest(bob.as_bytes())
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>(),
            "role": "operator",
            "name": "bob",
        }));
    std::fs::write(&config_path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
    sigterm_like(child.id(), "-HUP");
    let deadline = Instant::now() + Duration::from_secs(20);
    while status(&c, bob).await != 200 {
        assert!(Instant::now() < deadline, "bob's token never took effect");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let changes = access_changes(&c, auditor).await;
    assert_eq!(changes.len(), 1, "{changes:?}");
    assert_eq!(changes[0].by, "SIGHUP");
    assert_eq!(changes[0].tokens_added.len(), 1);
    assert_eq!(
        (
            changes[0].tokens_added[0].role.as_str(),
            changes[0].tokens_added[0].name.as_str()
        ),
        ("operator", "bob")
    );
    assert!(changes[0].tokens_removed.is_empty() && changes[0].keys_added.is_empty());

    // A config that does not load: refused, the one in force stays (SIGHUP and the route).
    std::fs::write(&config_path, b"{ not json").unwrap();
    sigterm_like(child.id(), "-HUP");
    let deadline = Instant::now() + Duration::from_secs(20);
    while metric(&c, auditor, "fleet_ledger_reload_failures_total").await < 1.0 {
        assert!(
            Instant::now() < deadline,
            "the bad SIGHUP was never refused"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (s, v) = c
        .post(op, "/v1/admin/reload", &serde_json::json!({}))
        .await
        .unwrap();
    assert_eq!(s, 409, "{v}");
    assert_eq!(v["error"], "config-invalid");
    assert_eq!(status(&c, bob).await, 200);
    assert_eq!(access_changes(&c, auditor).await.len(), 1);
    // Agents and auditors may not reload.
    let (s, _) = c
        .post(auditor, "/v1/admin/reload", &serde_json::json!({}))
        .await
        .unwrap();
    assert_eq!(s, 403);

    // Back to the original tokens, with limits changed: bob is removed at once, recorded;
    // the body limit applies to new connections; the queue's size and `quick_repair` need a
    // restart and say so.
    let mut restored: serde_json::Value = serde_json::from_slice(&original).unwrap();
    let mut limits = restored["limits"].clone();
    if !limits.is_object() {
        limits = serde_json::json!({});
    }
    limits["body_bytes"] = serde_json::json!(2048);
    limits["queue"] = serde_json::json!(777);
    restored["limits"] = limits;
    restored["quick_repair"] = serde_json::json!(true);
    std::fs::write(&config_path, serde_json::to_vec_pretty(&restored).unwrap()).unwrap();
    let big = serde_json::json!({ "reason": "x".repeat(4096) });
    let clearance = "/v1/rollouts/stable@a1a1a1a1/clearance";
    let (s, _) = c.post(op, clearance, &big).await.unwrap();
    assert_ne!(s, 413, "the old limit allows it");
    let (s, v) = c
        .post(op, "/v1/admin/reload", &serde_json::json!({}))
        .await
        .unwrap();
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["tokens_removed"], serde_json::json!(["operator:bob"]));
    assert_eq!(
        v["needs_restart"],
        serde_json::json!(["limits.queue", "quick_repair"])
    );
    assert!(
        v["applied"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!("limits (new connections)")),
        "{v}"
    );
    let fresh = ApiClient::new(&c.base).unwrap();
    let (s, refused) = fresh.post(op, clearance, &big).await.unwrap();
    assert_eq!(s, 413, "{refused}");
    assert!(v["access_changed_seq"].as_u64().is_some(), "{v}");
    assert_eq!(status(&c, bob).await, 401);
    let changes = access_changes(&c, auditor).await;
    assert_eq!(changes.len(), 2);
    assert_eq!(changes[1].by, "operator:alice");
    // Nothing changed: nothing recorded.
    let (s, v) = c
        .post(op, "/v1/admin/reload", &serde_json::json!({}))
        .await
        .unwrap();
    assert_eq!(s, 200, "{v}");
    assert!(v["access_changed_seq"].is_null(), "{v}");
    assert_eq!(access_changes(&c, auditor).await.len(), 2);
    // The timeline names it; replay --check takes the entries as recorded.
    stop_and_check(child, &setup);
}

fn sigterm_like(pid: u32, signal: &str) {
    let ok = std::process::Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
}
