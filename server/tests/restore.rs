//! The backup and restore runbook (docs/OPERATIONS.md), end to end with the real binary:
//! serve under agent load, `backup` while serving, SIGKILL (the machine is lost), `import`
//! the backup into a fresh path, serve again: every event acknowledged before the backup is
//! there, the log continues the same chain, and the agents carry on.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use fleet_ledger_demo::{ApiClient, Setup};

#[tokio::test(flavor = "multi_thread")]
async fn backup_while_serving_then_restore_and_the_agents_continue() {
    let dir = tempfile::tempdir().unwrap();
    let setup = Setup::create(dir.path(), None, 16).unwrap();
    let config = dir.path().join("config.json");
    let (op, auditor) = (setup.tokens.operator.clone(), setup.tokens.auditor.clone());
    let port = free_port();
    let mut child = spawn(&setup.db, &config, port);
    let c = ApiClient::new(&format!("http://127.0.0.1:{port}")).unwrap();
    wait_healthy(&c).await;
    prepare(&c, &setup).await;

    let acked: Acked = Arc::default();
    let mut tasks = Vec::new();
    for (host, last) in last_seqs(&c, &op).await {
        let token = setup.tokens.agents[&host].clone();
        tasks.push(tokio::spawn(load(
            c.clone(),
            host,
            token,
            last,
            Arc::clone(&acked),
        )));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The backup, taken under load; the writer goes on meanwhile.
    let backup = dir.path().join("nightly.bundle");
    let (db, out) = (setup.db.clone(), backup.clone());
    let said = tokio::task::spawn_blocking(move || {
        succeeds(&[
            "backup",
            "--db",
            db.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ])
    })
    .await
    .unwrap();
    let backed_up: u64 = said
        .strip_prefix("backed up ")
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{said}"));
    let acked_during = acked.lock().unwrap().len();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        acked.lock().unwrap().len() > acked_during,
        "the writer stalled during the backup"
    );
    // The machine is lost.
    child.kill().unwrap();
    child.wait().unwrap();
    let mut last_acked = std::collections::BTreeMap::new();
    for t in tasks {
        let (host, seq, _) = t.await.unwrap();
        last_acked.insert(host, seq);
    }

    // Restore into a fresh path and serve it.
    let restored = dir.path().join("restored.redb");
    let out = succeeds(&[
        "import",
        "--bundle",
        backup.to_str().unwrap(),
        "--key",
        setup.genesis_pub.to_str().unwrap(),
        "--db",
        restored.to_str().unwrap(),
    ]);
    assert!(
        out.starts_with(&format!("imported {backed_up} entries")),
        "{out}"
    );
    // The restored ledger is served with compaction at start (the option an operator may set
    // after a restore or a rebuild).
    let mut with_compact: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&config).unwrap()).unwrap();
    with_compact["compact_on_start"] = serde_json::json!(true);
    let config = dir.path().join("config-compact.json");
    std::fs::write(&config, serde_json::to_vec_pretty(&with_compact).unwrap()).unwrap();
    let port = free_port();
    let child = spawn(&restored, &config, port);
    let c = ApiClient::new(&format!("http://127.0.0.1:{port}")).unwrap();
    wait_healthy(&c).await;
    let before: Vec<_> = acked
        .lock()
        .unwrap()
        .iter()
        .filter(|(seq, _, _)| *seq < backed_up)
        .cloned()
        .collect();
    assert!(
        before.len() > 10,
        "{} events before the backup",
        before.len()
    );
    all_present(&c, &auditor, &before).await;

    // The agents carry on from their own seqs (what was acknowledged after the backup is what
    // the backup lacks; agents resend what they still queue, anything above the CP's seq).
    for (host, seq) in &last_acked {
        let token = &setup.tokens.agents[host];
        let (status, v) = c
            .post(token, "/v1/agent/events", &probe_result(host, seq + 1))
            .await
            .unwrap();
        assert_eq!(status, 200, "{host}: {v}");
        assert!(v["seq"].as_u64().unwrap() >= backed_up, "{v}");
    }
    // What an operator watches: the log's size, the file's, how old the last checkpoint is.
    let entries = metric(&c, &auditor, "fleet_ledger_log_entries").await;
    assert!(entries > backed_up as f64, "{entries}");
    let bytes = metric(&c, &auditor, "fleet_ledger_database_bytes").await;
    assert_eq!(bytes, std::fs::metadata(&restored).unwrap().len() as f64);
    let age = metric(&c, &auditor, "fleet_ledger_last_checkpoint_age_seconds").await;
    assert!((0.0..60.0).contains(&age), "{age}");
    // The restored log is the same chain, continued: the backup is a prefix of its export.
    sigterm(child.id());
    let mut child = child;
    assert!(child.wait().unwrap().success());
    let r = restored.to_str().unwrap();
    let key = setup.genesis_pub.to_str().unwrap();
    assert!(succeeds(&["verify", "--db", r, "--key", key]).starts_with("OK"));
    succeeds(&["check", "--db", r]);
    succeeds(&["replay", "--db", r, "--check"]);
    let proof = succeeds(&[
        "prove",
        "consistency",
        "--db",
        r,
        "--from",
        &backed_up.to_string(),
        "--to",
        &read_size(&restored).to_string(),
    ]);
    let file = dir.path().join("consistency.json");
    std::fs::write(&file, proof).unwrap();
    succeeds(&[
        "verify-proof",
        "--proof",
        file.to_str().unwrap(),
        "--key",
        key,
    ]);
}

fn read_size(db: &std::path::Path) -> u64 {
    ledger::store::ReadOnlyStore::open(db)
        .unwrap()
        .snapshot()
        .unwrap()
        .size()
}
