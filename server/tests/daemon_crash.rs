//! The `serve` binary under concurrent agent load, SIGKILLed many times and finally
//! SIGTERMed: every acknowledged event is in the ledger after each restart, and at the end
//! `verify` and `check` pass on the database. A commit that fails (disk full) answers 503
//! and records nothing.

mod common;

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use fleet_ledger_demo::{ApiClient, Setup};

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_commit_answers_503_and_leaves_the_ledger_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let setup = Setup::create(dir.path(), None, 16).unwrap();
    let config = dir.path().join("config.json");
    let (op, auditor) = (setup.tokens.operator.clone(), setup.tokens.auditor.clone());
    let port = free_port();
    let mut child = spawn(&setup.db, &config, port);
    let c = ApiClient::new(&format!("http://127.0.0.1:{port}")).unwrap();
    wait_healthy(&c).await;
    prepare(&c, &setup).await;
    let before = last_seqs(&c, &op).await;
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(child.wait().unwrap().success());

    // The database may grow by at most 1 MiB: commits succeed while there is room, then
    // fail. (Not a byte: whether the file then had free pages for a first commit depended on
    // the exact sizes of the entries before.)
    let size = std::fs::metadata(&setup.db).unwrap().len();
    let port = free_port();
    let mut child = spawn_limited(&setup.db, &config, port, size + (1 << 20));
    let c = ApiClient::new(&format!("http://127.0.0.1:{port}")).unwrap();
    wait_healthy(&c).await;
    let acked: Acked = Arc::default();
    // Operators read while commits fail and the store reopens: never a 500 (issue 26: redb's
    // "Previous I/O error" on the failed database was answered as an internal error).
    let reading = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let (c, op, reading) = (c.clone(), op.clone(), Arc::clone(&reading));
            tokio::spawn(async move {
                let mut statuses = std::collections::BTreeMap::<u16, u64>::new();
                while reading.load(std::sync::atomic::Ordering::Relaxed) {
                    for path in ["/v1/ledger/rollouts", "/v1/ledger/checkpoint"] {
                        let (status, v) = c.get(&op, path).await.unwrap();
                        assert!(
                            status == 200 || status == 503,
                            "GET {path} answered {status} while the store failed: {v}"
                        );
                        *statuses.entry(status).or_default() += 1;
                    }
                }
                statuses
            })
        })
        .collect();
    let mut tasks = Vec::new();
    for (host, last) in &before {
        let token = setup.tokens.agents[host].clone();
        tasks.push(tokio::spawn(load(
            c.clone(),
            host.clone(),
            token,
            *last,
            Arc::clone(&acked),
        )));
    }
    let mut refused = Vec::new();
    for t in tasks {
        refused.push(t.await.unwrap());
    }
    // Every agent stopped at a 503 (no connection failed: the daemon stayed up), and the
    // failures were commits that failed, not a full queue.
    let reasons: Vec<String> = refused
        .iter()
        .map(|(h, s, v)| match v {
            Some(v) => v["reason"].as_str().unwrap_or_default().to_string(),
            None => panic!("{h} seq {s}: the connection failed"),
        })
        .collect();
    assert!(
        reasons.iter().any(|r| r.contains("commit failed")),
        "{reasons:?}"
    );
    // A manifest is refused alike, and must not come into force unrecorded.
    let doc = setup
        .rollout_doc("stable", "b2b2b2b2", TARGET, &setup.at(-5))
        .unwrap();
    let (body, _) = setup.sign(&doc).unwrap();
    let post_b2 = || {
        c.post(
            &setup.tokens.ci,
            "/v1/manifests/rollouts/stable@b2b2b2b2",
            &body,
        )
    };
    // Each refusal is a failed commit and a reopen, with the readers going on beside it.
    for _ in 0..20 {
        let (status, v) = post_b2().await.unwrap();
        assert_eq!(status, 503, "{v}");
    }
    reading.store(false, std::sync::atomic::Ordering::Relaxed);
    for r in readers {
        let statuses = r.await.unwrap();
        assert!(statuses.contains_key(&200), "{statuses:?}");
    }
    let failures = metric(&c, &op, "fleet_ledger_commit_failures").await;
    assert!(failures >= 1.0, "{failures}");

    // Room again, in the same process: the refused manifest is not in force, so posting it
    // again records it (a writer that kept it in memory would call it a duplicate of an
    // entry that does not exist).
    lift_file_limit(child.id());
    let mut recorded = None;
    for _ in 0..100 {
        let (status, v) = post_b2().await.unwrap();
        if status == 200 {
            recorded = Some(v);
            break;
        }
        assert_eq!(status, 503, "{v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let recorded = recorded.expect("the manifest was never accepted once the disk had room");
    assert_eq!(recorded["duplicate"], false, "{recorded}");
    let manifest_seq = recorded["seq"].as_u64().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();

    // Restarted: every acknowledged event is there and nothing refused is; the manifest is
    // at the seq its answer named; the ledger verifies, its projections equal a fold of the
    // log, and replaying its decisions reproduces them.
    let acked = acked.lock().unwrap().clone();
    assert!(
        !acked.is_empty(),
        "no event was acknowledged before the disk filled"
    );
    let port = free_port();
    let child = spawn(&setup.db, &config, port);
    let c = ApiClient::new(&format!("http://127.0.0.1:{port}")).unwrap();
    wait_healthy(&c).await;
    all_present(&c, &auditor, &acked).await;
    let after: std::collections::BTreeMap<String, u64> =
        last_seqs(&c, &op).await.into_iter().collect();
    for (host, seq, _) in &refused {
        assert!(after[host] < *seq, "{host}: refused seq {seq} was recorded");
    }
    let entry = entries(&c, &auditor, manifest_seq, Some(manifest_seq + 1)).await;
    match ledger::entry::EntryRef::parse(&entry[0])
        .unwrap()
        .event()
        .unwrap()
    {
        ledger::Event::RolloutManifestSigned(m) => {
            assert_eq!(m.rollout_id.to_string(), "stable@b2b2b2b2")
        }
        other => panic!("entry {manifest_seq} is {other:?}"),
    }
    stop_and_check(child, &setup);
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_under_load_loses_no_acknowledged_event() {
    let dir = tempfile::tempdir().unwrap();
    let setup = Setup::create(dir.path(), None, 16).unwrap();
    let config = dir.path().join("config.json");
    let (op, auditor) = (setup.tokens.operator.clone(), setup.tokens.auditor.clone());
    let acked: Acked = Arc::default();

    // 21 SIGKILLs at varying moments of the load, then a SIGTERM. Every other run saves the
    // allocator state with each commit (`quick_repair`), so restarts recover both ways and
    // after a switch between them.
    const KILLS: u64 = 21;
    for cycle in 0..=KILLS {
        set_quick_repair(&config, cycle % 2 == 1);
        let port = free_port();
        let mut child = spawn(&setup.db, &config, port);
        let c = ApiClient::new(&format!("http://127.0.0.1:{port}")).unwrap();
        wait_healthy(&c).await;
        let so_far = acked.lock().unwrap().clone();
        all_present(&c, &auditor, &so_far).await;
        if cycle == 0 {
            prepare(&c, &setup).await;
        }
        let at_start = acked.lock().unwrap().len();
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
        if cycle < 2 {
            // Beside the daemon under load: its committed snapshots verify and check.
            let (db, key) = (setup.db.clone(), setup.genesis_pub.clone());
            let out = tokio::task::spawn_blocking(move || {
                let (db, key) = (db.to_str().unwrap(), key.to_str().unwrap());
                let out = succeeds(&["verify", "--db", db, "--key", key]);
                succeeds(&["check", "--db", db]);
                out
            })
            .await
            .unwrap();
            assert!(out.contains("beside the running writer"), "{out}");
        }
        tokio::time::sleep(Duration::from_millis(120 + (cycle * 97) % 380)).await;
        if cycle < KILLS {
            child.kill().unwrap(); // SIGKILL
            child.wait().unwrap();
        } else {
            // SIGTERM: stop accepting, drain, commit, exit 0.
            let status = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status()
                .unwrap();
            assert!(status.success());
            let exit = child.wait().unwrap();
            assert!(exit.success(), "serve exited with {exit} on SIGTERM");
        }
        for t in tasks {
            let _ = t.await.unwrap();
        }
        assert!(
            acked.lock().unwrap().len() > at_start,
            "cycle {cycle}: no load was acknowledged"
        );
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > 100,
        "only {} events acknowledged",
        acked.len()
    );

    // After the last stop: every acknowledged event, a valid chain, projections that equal
    // a fold of the log.
    let port = free_port();
    let mut child = spawn(&setup.db, &config, port);
    let c = ApiClient::new(&format!("http://127.0.0.1:{port}")).unwrap();
    wait_healthy(&c).await;
    all_present(&c, &auditor, &acked).await;
    // A SIGKILLed file verifies and checks as it is: redb's recovery runs in memory, and the
    // file is left byte for byte as the crash left it (issue 13, defect 8).
    child.kill().unwrap();
    child.wait().unwrap();
    let before = std::fs::read(&setup.db).unwrap();
    let key = setup.genesis_pub.to_str().unwrap();
    let db = setup.db.to_str().unwrap();
    let out = succeeds(&["verify", "--db", db, "--key", key]);
    assert!(out.contains("recovered in memory"), "{out}");
    succeeds(&["check", "--db", db]);
    assert!(
        std::fs::read(&setup.db).unwrap() == before,
        "a read-only command wrote the file"
    );
    let port = free_port();
    let child = spawn(&setup.db, &config, port);
    let c = ApiClient::new(&format!("http://127.0.0.1:{port}")).unwrap();
    wait_healthy(&c).await;
    stop_and_check(child, &setup);
}

/// Sets `quick_repair` in the config file.
fn set_quick_repair(config: &std::path::Path, on: bool) {
    let mut c: serde_json::Value = serde_json::from_slice(&std::fs::read(config).unwrap()).unwrap();
    c["quick_repair"] = serde_json::json!(on);
    std::fs::write(config, serde_json::to_vec_pretty(&c).unwrap()).unwrap();
}
