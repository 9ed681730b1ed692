//! Failover with real processes, as Jepsen does it (issue 29, test 3): three etcd members
//! (Debian's etcd), two `serve` nodes on loopback (a writer and a standby, `failover` in their
//! configs), and agents under closed-loop load through Debian's HAProxy running
//! `deploy/haproxy.cfg` as shipped (it routes to whichever node answers `/healthz/leader`). Faults: `kill -9` of the writer,
//! `SIGSTOP` past its lease then `SIGCONT`, the etcd majority killed (the writer must answer
//! 503 and acknowledge nothing until etcd is back). After the run, held to the shared
//! checker: every acknowledged report in the final log exactly once and in per-host order,
//! no checkpoint any process signed off the final log (the signature oracle), the register's
//! whole history (read back from etcd) never backwards and in the log; both nodes' logs
//! identical; `verify`, `check` and `replay --check` pass on each.
//!
//! `FAILOVER_CYCLES` sets how many failovers (default 6); the `failover` bench runs more.

mod cluster;
mod common;
mod etcd;

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cluster::*;
use common::*;
use engine::run_check::{Acked as Ack, Evidence, check_run};
use fleet_ledger_demo::{ApiClient, Setup};

const LEASE_SECS: u64 = 2;

/// The `serve` command of a node.
fn serving(n: &Node) -> Command {
    serve_command(&n.db, &n.config(), n.port)
}

/// An agent: probe results back to back through the balancer, each acknowledged one
/// recorded with when it was sent and answered; a refused or failed one is not retried (the
/// next seq follows).
async fn agent(
    host: String,
    token: String,
    mut seq: u64,
    port: u16,
    acked: Acked,
    oks: Arc<Mutex<Vec<(Instant, Instant)>>>,
    running: Arc<AtomicBool>,
) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()
        .unwrap();
    while running.load(Ordering::Relaxed) {
        seq += 1;
        let at = Instant::now();
        let sent = http
            .post(format!("http://127.0.0.1:{port}/v1/agent/events"))
            .bearer_auth(&token)
            .json(&probe_result(&host, seq))
            .send()
            .await;
        match sent {
            Ok(r) if r.status() == 200 => {
                let v: serde_json::Value = r.json().await.unwrap();
                acked
                    .lock()
                    .unwrap()
                    .push((v["seq"].as_u64().unwrap(), host.clone(), seq));
                oks.lock().unwrap().push((at, Instant::now()));
            }
            Ok(r) => {
                let status = r.status().as_u16();
                let body = r.text().await.unwrap_or_default();
                assert!(
                    status == 503,
                    "{host} seq {seq}: {status} {body} (only 503 may refuse a write)"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failover_under_load_loses_nothing_acknowledged_and_signs_no_fork() {
    if !etcd::have_etcd() || !have_haproxy() {
        return;
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut cluster = etcd::Cluster::start();
    let endpoints = cluster.endpoints();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    let _tmp = if std::env::var_os("FAILOVER_KEEP").is_some() {
        eprintln!("keeping {}", root.display());
        std::mem::forget(tmp);
        None
    } else {
        Some(tmp)
    };
    let setup = Setup::create(&root.join("a"), None, 16).unwrap();
    let mut nodes = vec![
        Node::new(&root, "a", &setup.db),
        Node::new(&root, "b", &setup.db),
    ];
    let ports: Vec<(&'static str, u16)> = nodes.iter().map(|n| (n.name, n.port)).collect();
    for n in &mut nodes {
        configure(&setup, &n.dir, n.name, &ports, &endpoints, LEASE_SECS);
        n.start(serving(n));
    }
    // A verifying read follower beside them.
    let mut reader = Node::new(&root, "r", &setup.db);
    configure_follower(&setup, &reader.dir, &ports);
    reader.start(serving(&reader));
    let (first, _) = wait_leader(&ports, Duration::from_secs(30)).await;
    assert_eq!(first, "a", "the initial writer takes the empty register");
    let c = nodes[0].client();
    prepare(&c, &setup).await;
    let op = setup.tokens.operator.clone();

    // The balancer, routing agents to the node answering /healthz/leader.
    let balancer = free_port();
    let _haproxy = Proc(haproxy(balancer, ports[0].1, ports[1].1));
    let running = Arc::new(AtomicBool::new(true));
    let acked: Acked = Arc::default();
    let oks = Arc::new(Mutex::new(Vec::new()));
    // What the follower serves, every 50 ms: the log size each read answer reflects.
    let served = {
        let (running, c, auditor) = (
            Arc::clone(&running),
            reader.client(),
            setup.tokens.auditor.clone(),
        );
        tokio::spawn(async move {
            let mut sizes = Vec::new();
            while running.load(Ordering::Relaxed) {
                if let Ok(r) = c
                    .http
                    .get(format!("{}/v1/ledger/checkpoint", c.base))
                    .bearer_auth(&auditor)
                    .send()
                    .await
                    && r.status() == 200
                {
                    let size: u64 = r.headers()["x-ledger-size"]
                        .to_str()
                        .unwrap()
                        .parse()
                        .unwrap();
                    sizes.push(("r".to_string(), size));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            sizes
        })
    };
    let agents: Vec<_> = last_seqs(&c, &op)
        .await
        .into_iter()
        .map(|(host, last)| {
            tokio::spawn(agent(
                host.clone(),
                setup.tokens.agents[&host].clone(),
                last,
                balancer,
                Arc::clone(&acked),
                Arc::clone(&oks),
                Arc::clone(&running),
            ))
        })
        .collect();

    let cycles: usize = std::env::var("FAILOVER_CYCLES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(6);
    let mut failovers = Vec::new();
    for cycle in 0..cycles {
        // Let the load run, with the standby in the sync set.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let (lead, port) = wait_leader(&ports, Duration::from_secs(30)).await;
        let lc = ApiClient::new(&format!("http://127.0.0.1:{port}")).unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while metric(&lc, &op, "fleet_ledger_sync_set_size").await < 1.0 {
            assert!(
                Instant::now() < deadline,
                "the standby never got in sync\n{}\n{}",
                nodes[0].log(),
                nodes[1].log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let i = nodes.iter().position(|n| n.name == lead).unwrap();
        let acked_before = acked.lock().unwrap().len();
        let t0 = Instant::now();
        let paused = cycle % 3 == 2;
        if paused {
            // Stopped past its lease: the standby takes over; woken, it is fenced.
            nodes[i].signal("-STOP");
        } else {
            nodes[i].kill();
        }
        // The first acknowledgement of a request sent after the fault (the new writer's).
        let deadline = Instant::now() + Duration::from_secs(60);
        let took = loop {
            if let Some(at) = first_ok_after(&oks, t0) {
                break at - t0;
            }
            assert!(
                Instant::now() < deadline,
                "cycle {cycle}: no write acknowledged after the writer {lead} was {} ({acked_before} before)\n{}\n{}",
                if paused { "paused" } else { "killed" },
                nodes[0].log(),
                nodes[1].log()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        failovers.push(took);
        eprintln!(
            "cycle {cycle}: {lead} {} after {acked_before} acks; failover in {took:?}",
            if paused { "paused" } else { "killed" }
        );
        if paused {
            nodes[i].signal("-CONT");
        } else {
            let cmd = serving(&nodes[i]);
            nodes[i].start(cmd);
        }
    }

    // The etcd majority lost: nothing is acknowledged until it is back.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    cluster.kill_member(1);
    cluster.kill_member(2);
    // Writes in flight when the quorum went may still be answered; then none.
    tokio::time::sleep(Duration::from_millis(3000)).await;
    let during = acked.lock().unwrap().len();
    tokio::time::sleep(Duration::from_millis(3000)).await;
    assert_eq!(
        acked.lock().unwrap().len(),
        during,
        "a write was acknowledged without an etcd quorum"
    );
    cluster.start_member(1);
    cluster.start_member(2);
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs(60);
    while acked.lock().unwrap().len() == during {
        assert!(
            Instant::now() < deadline,
            "writes never resumed once etcd was back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("etcd quorum back: writes resumed in {:?}", t0.elapsed());
    tokio::time::sleep(Duration::from_millis(1000)).await;

    // A switchover by hand: `fleet-ledger promote` makes the standby the writer while the
    // writer runs; the writes go on.
    let (lead, port) = wait_leader(&ports, Duration::from_secs(30)).await;
    let lc = ApiClient::new(&format!("http://127.0.0.1:{port}")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while metric(&lc, &op, "fleet_ledger_sync_set_size").await < 1.0 {
        assert!(Instant::now() < deadline, "the standby never got in sync");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let standby = nodes.iter().find(|n| n.name != lead).unwrap();
    // Without the peer secret a standby takes nothing: neither a batch nor a promotion.
    let sc = standby.client();
    let anonymous = sc
        .http
        .post(format!("{}/v1/replication/batch", sc.base))
        .body(vec![0u8; 8])
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    let wrong = root.join("wrong.token");
    std::fs::write(&wrong, "not-the-failover-peer-secret-0123456789").unwrap();
    let refused = Command::new(EXE)
        .args(["promote", "--url", &sc.base, "--token-file"])
        .arg(&wrong)
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(2));
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(
        said.contains("refused to take over") && said.contains("401"),
        "{said}"
    );
    // Nor does the writer step down for anyone but a peer: an auditor is forbidden.
    let asked = lc
        .http
        .post(format!("{}/v1/replication/step-down", lc.base))
        .bearer_auth(&setup.tokens.auditor)
        .send()
        .await
        .unwrap();
    assert_eq!(asked.status(), 403);
    assert_eq!(leader(&ports).await.map(|(n, _)| n), Some(lead));
    let out = succeeds(&[
        "promote",
        "--url",
        &format!("http://127.0.0.1:{}", standby.port),
        "--token-file",
        standby.dir.join("peer.token").to_str().unwrap(),
    ]);
    assert!(out.contains("is the writer"), "{out}");
    // The old writer was asked to step down, and did (DECISIONS 158).
    let stepped = nodes.iter().find(|n| n.name == lead).unwrap();
    assert!(
        stepped
            .log()
            .contains("stepped down for a standby taking over by hand"),
        "{}",
        stepped.log()
    );
    // It stops answering /healthz/leader.
    let deadline = Instant::now() + Duration::from_secs(10);
    while leader(&ports).await.map(|(n, _)| n) != Some(standby.name) {
        assert!(
            Instant::now() < deadline,
            "the promoted node does not lead alone"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let before = acked.lock().unwrap().len();
    let deadline = Instant::now() + Duration::from_secs(30);
    while acked.lock().unwrap().len() == before {
        assert!(Instant::now() < deadline, "no write after the switchover");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    running.store(false, Ordering::Relaxed);
    for a in agents {
        a.await.unwrap();
    }
    let served: Vec<(String, u64)> = served
        .await
        .unwrap()
        .into_iter()
        .filter(|(_, size)| *size > 1)
        .collect();
    assert!(
        served.len() > 20,
        "the follower served {} reads",
        served.len()
    );
    // Read-your-writes on the follower: the last acknowledged entry, asked for by size.
    let last_seq = acked
        .lock()
        .unwrap()
        .iter()
        .map(|(s, _, _)| *s)
        .max()
        .unwrap();
    let rc = reader.client();
    let r = rc
        .http
        .get(format!(
            "{}/v1/ledger/rollouts?min_size={}",
            rc.base,
            last_seq + 1
        ))
        .bearer_auth(&op)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let reflected: u64 = r.headers()["x-ledger-size"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(reflected > last_seq, "{reflected} <= {last_seq}");
    // The follower refuses writes, and says it is in date.
    let (status, v) = rc
        .post(
            &setup.tokens.agents["web-0002"],
            "/v1/agent/events",
            &probe_result("web-0002", 1),
        )
        .await
        .unwrap();
    assert_eq!((status, v["error"].as_str()), (503, Some("not-leader")));
    let health = rc
        .http
        .get(format!("{}/healthz/follower?max_lag=100000", rc.base))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200, "{}", health.text().await.unwrap());
    // Let the standby catch up, then stop both nodes.
    let (lead, port) = wait_leader(&ports, Duration::from_secs(30)).await;
    let lc = ApiClient::new(&format!("http://127.0.0.1:{port}")).unwrap();
    let size = metric(&lc, &op, "fleet_ledger_log_entries").await as u64;
    let history = register_history(&endpoints);
    tokio::time::sleep(Duration::from_secs(3)).await;
    // The follower and the standby first: stopping the writer first would let the standby
    // take over.
    assert!(reader.stop(), "the follower did not stop cleanly");
    nodes.sort_by_key(|n| n.name == lead);
    for n in &mut nodes {
        assert!(n.stop(), "{} did not stop cleanly", n.name);
    }

    // The checker, on the last writer's log.
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > 100,
        "only {} writes acknowledged",
        acked.len()
    );
    let last = nodes.iter().find(|n| n.name == lead).unwrap();
    let store = ledger::store::ReadOnlyStore::open(&last.db).unwrap();
    let snap = store.snapshot().unwrap();
    assert!(snap.size() >= size);
    let evidence = Evidence {
        signed: nodes
            .iter()
            .flat_map(|n| signed_heads(&n.oracle(), n.name))
            .collect(),
        register: history.clone(),
        acked: acked
            .iter()
            .map(|(_, host, seq)| Ack {
                host: host.clone(),
                rollout: ROLLOUT.into(),
                agent_seq: *seq,
            })
            .collect(),
        served,
        ..Evidence::default()
    };
    assert!(evidence.signed.len() > 10 && history.len() > 10);
    assert!(
        signed_heads(&reader.oracle(), "r").is_empty(),
        "a follower signs nothing"
    );
    let violations = check_run(&snap, &evidence).unwrap();
    assert!(violations.is_empty(), "{violations:#?}");
    let epochs = snap
        .entries(..)
        .unwrap()
        .filter(|e| {
            matches!(
                e.as_ref().unwrap().event,
                ledger::Event::WriterEpochStarted(_)
            )
        })
        .count();
    assert!(
        epochs > cycles,
        "{epochs} writer epochs in the log for {cycles} failovers"
    );
    let root = |db: &Path| {
        let s = ledger::store::ReadOnlyStore::open(db).unwrap();
        let snap = s.snapshot().unwrap();
        (snap.size(), snap.latest_checkpoint().unwrap())
    };
    drop(snap);
    drop(store);
    assert_eq!(
        root(&nodes[0].db),
        root(&nodes[1].db),
        "the standby holds the writer's log"
    );
    assert_eq!(
        root(&nodes[0].db),
        root(&reader.db),
        "the follower holds the writer's log"
    );
    let key = setup.genesis_pub.to_str().unwrap();
    for n in nodes.iter().chain([&reader]) {
        let db = n.db.to_str().unwrap();
        succeeds(&["verify", "--db", db, "--key", key]);
        succeeds(&["check", "--db", db]);
        succeeds(&["replay", "--db", db, "--check"]);
    }
    let mut sorted = failovers.clone();
    sorted.sort();
    eprintln!(
        "{} acknowledged, {epochs} epochs, failover times {sorted:?}",
        acked.len()
    );
}
