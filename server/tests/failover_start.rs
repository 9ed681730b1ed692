//! Failover nodes at the edges of their life (issue 29), as real processes on loopback with
//! three real etcd members (Debian's `etcd-server`):
//! - a node started while etcd is down stands by (the API up, writes refused, not the leader)
//!   and takes the log over once etcd is back, without a restart;
//! - a verifying follower whose writer dies keeps serving what it verified, reports itself
//!   out of date on `/healthz/follower` once the writer has been out of reach for 10 s, and
//!   follows again when a writer is back.

mod cluster;
mod common;
mod etcd;

use std::process::Command;
use std::time::{Duration, Instant};

use cluster::*;
use common::*;
use fleet_ledger_demo::{ApiClient, Setup};

fn serving(n: &Node) -> Command {
    serve_command(&n.db, &n.config(), n.port)
}

/// Three etcd members and a fleet's set-up in a directory of its own; `None` (the test
/// returns) without Debian's `etcd-server`.
fn start() -> Option<(etcd::Cluster, tempfile::TempDir, Setup)> {
    if !etcd::have_etcd() {
        return None;
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cluster = etcd::Cluster::start();
    let tmp = tempfile::tempdir().unwrap();
    let setup = Setup::create(&tmp.path().join("s"), None, 4).unwrap();
    Some((cluster, tmp, setup))
}

/// `GET path` on `c` without a token: the status.
async fn status(c: &ApiClient, path: &str) -> Option<u16> {
    c.http
        .get(format!("{}{path}", c.base))
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .ok()
        .map(|r| r.status().as_u16())
}

/// Waits until `GET path` answers `want` (within `secs`); panics with the node's log if not.
async fn wait_status(n: &Node, path: &str, want: u16, secs: u64) -> Duration {
    let (c, t0) = (n.client(), Instant::now());
    while status(&c, path).await != Some(want) {
        assert!(
            t0.elapsed() < Duration::from_secs(secs),
            "{path} never answered {want}\n{}",
            n.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    t0.elapsed()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_started_while_etcd_is_down_stands_by_and_takes_over_once_it_is_back() {
    let Some((mut cluster, tmp, setup)) = start() else {
        return;
    };
    let endpoints = cluster.endpoints();
    for i in 0..3 {
        cluster.kill_member(i);
    }
    let mut a = Node::new(tmp.path(), "a", &setup.db);
    configure(&setup, &a.dir, "a", &[("a", a.port)], &endpoints, 2);
    a.start(serving(&a));

    // Up, standing by: not the leader, writes refused, for as long as etcd is away.
    wait_status(&a, "/healthz", 200, 30).await;
    let c = a.client();
    let (fleet, _) = setup.signed_fleet().unwrap();
    for _ in 0..3 {
        assert_eq!(
            status(&c, "/healthz/leader").await,
            Some(503),
            "{}",
            a.log()
        );
        let (s, v) = c
            .post(&setup.tokens.ci, "/v1/manifests/fleet", &fleet)
            .await
            .unwrap();
        assert_eq!((s, v["error"].as_str()), (503, Some("not-leader")), "{v}");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    // etcd back: the initial writer takes the empty register and writes, same process.
    for i in 0..3 {
        cluster.start_member(i);
    }
    cluster.wait_healthy();
    let took = wait_status(&a, "/healthz/leader", 200, 60).await;
    eprintln!("leader {took:?} after etcd came back");
    let (s, v) = c
        .post(&setup.tokens.ci, "/v1/manifests/fleet", &fleet)
        .await
        .unwrap();
    assert_eq!(s, 200, "{v}\n{}", a.log());
    assert!(a.stop(), "{}", a.log());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_follower_whose_writer_dies_serves_what_it_verified_and_says_it_is_out_of_date() {
    let Some((cluster, tmp, setup)) = start() else {
        return;
    };
    let endpoints = cluster.endpoints();
    let mut a = Node::new(tmp.path(), "a", &setup.db);
    let ports = [("a", a.port)];
    configure(&setup, &a.dir, "a", &ports, &endpoints, 2);
    a.start(serving(&a));
    let mut r = Node::new(tmp.path(), "r", &setup.db);
    configure_follower(&setup, &r.dir, &ports);
    r.start(serving(&r));
    wait_leader(&ports, Duration::from_secs(30)).await;
    let (fleet, _) = setup.signed_fleet().unwrap();
    let (s, v) = a
        .client()
        .post(&setup.tokens.ci, "/v1/manifests/fleet", &fleet)
        .await
        .unwrap();
    assert_eq!(s, 200, "{v}");
    let auditor = setup.tokens.auditor.clone();
    let written = served_size(&a.client(), &auditor).await.unwrap();
    let t0 = Instant::now();
    while served_size(&r.client(), &auditor).await.unwrap_or(0) < written {
        assert!(t0.elapsed() < Duration::from_secs(20), "{}", r.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    wait_status(&r, "/healthz/follower", 200, 20).await;

    // The writer dies: the follower goes on serving what it verified, and says, within the
    // contact window (10 s) and not before, that it is out of date.
    a.kill();
    let killed = Instant::now();
    let out = wait_status(&r, "/healthz/follower", 503, 30).await;
    assert!(
        out >= Duration::from_secs(8),
        "out of date after {out:?}: before the contact window"
    );
    assert_eq!(served_size(&r.client(), &auditor).await, Some(written));
    let c = r.client();
    let (s, v) = c.get(&setup.tokens.operator, "/v1/hosts").await.unwrap();
    assert_eq!(s, 200, "{v}");
    eprintln!("out of date {:?} after the kill", killed.elapsed());

    // The writer back (it holds the head): the follower is in date again.
    a.start(serving(&a));
    wait_leader(&ports, Duration::from_secs(30)).await;
    wait_status(&r, "/healthz/follower", 200, 30).await;
    assert!(r.stop(), "{}", r.log());
    assert!(a.stop(), "{}", a.log());
}

/// OPERATIONS "Key rotation under failover", as an operator runs it: both nodes stopped
/// (the writer last), the key rotated offline on the writer's database, that database given
/// to the standby, both configs naming the new key; the rotated node, whose log now extends
/// the register's head, takes the log over from there, and the standby gets in sync; a
/// follower follows through the rotation.
#[tokio::test(flavor = "multi_thread")]
async fn a_key_rotation_under_failover_by_the_documented_procedure() {
    let Some((cluster, tmp, setup)) = start() else {
        return;
    };
    let endpoints = cluster.endpoints();
    let mut a = Node::new(tmp.path(), "a", &setup.db);
    let mut b = Node::new(tmp.path(), "b", &setup.db);
    let ports = [("a", a.port), ("b", b.port)];
    for n in [&a, &b] {
        configure(&setup, &n.dir, n.name, &ports, &endpoints, 2);
    }
    let mut r = Node::new(tmp.path(), "r", &setup.db);
    configure_follower(&setup, &r.dir, &ports);
    a.start(serving(&a));
    b.start(serving(&b));
    r.start(serving(&r));
    assert_eq!(wait_leader(&ports, Duration::from_secs(30)).await.0, "a");
    let (fleet, _) = setup.signed_fleet().unwrap();
    let (s, v) = a
        .client()
        .post(&setup.tokens.ci, "/v1/manifests/fleet", &fleet)
        .await
        .unwrap();
    assert_eq!(s, 200, "{v}");
    let keys = tmp.path().join("keys");
    succeeds(&["keygen", "--out", keys.to_str().unwrap(), "--name", "next"]);
    let new_key = keys.join("next.key");
    // Refused while serving under failover.
    let (s, v) = a
        .client()
        .post(
            &setup.tokens.operator,
            "/v1/ledger/rotate-key",
            &serde_json::json!({"key_file": new_key, "reason": "scheduled"}),
        )
        .await
        .unwrap();
    assert_eq!(s, 503, "{v}");

    // 1. Stop the standby, then the writer (SIGTERM: it drains).
    assert!(b.stop(), "{}", b.log());
    assert!(a.stop(), "{}", a.log());
    // 2. Rotate offline on the writer's database; every config names the new key.
    let old_key = setup.config.signing_key.clone();
    succeeds(&[
        "rotate-key",
        "--db",
        a.db.to_str().unwrap(),
        "--key",
        old_key.to_str().unwrap(),
        "--to",
        new_key.to_str().unwrap(),
        "--reason",
        "scheduled",
    ]);
    for n in [&a, &b] {
        let mut config: serde_json::Value =
            serde_json::from_slice(&std::fs::read(n.config()).unwrap()).unwrap();
        config["signing_key"] = new_key.to_str().unwrap().into();
        std::fs::write(n.config(), serde_json::to_vec_pretty(&config).unwrap()).unwrap();
    }
    // 3. The standby gets the rotated database.
    std::fs::copy(&a.db, &b.db).unwrap();
    // 4. The rotated node first: it takes the log over from the register's head.
    a.start(serving(&a));
    assert_eq!(wait_leader(&ports, Duration::from_secs(30)).await.0, "a");
    b.start(serving(&b));
    // Writes go on, and the standby (given the rotated log) gets in the sync set.
    let op = setup.tokens.operator.clone();
    let c = a.client();
    let t0 = Instant::now();
    for i in 0u32.. {
        // Each a newer manifest (signed a second after the one before).
        let doc = setup
            .rollout_doc(
                "stable",
                &format!("{i:08x}"),
                &"c".repeat(32),
                &setup.at(i64::from(i) + 1),
            )
            .unwrap();
        let (body, _) = setup.sign(&doc).unwrap();
        let written = c
            .ok(
                &setup.tokens.ci,
                &format!("/v1/manifests/rollouts/stable@{i:08x}"),
                &body,
            )
            .await;
        assert!(written.is_ok(), "{written:?}\n{}", a.log());
        let metrics = c
            .http
            .get(format!("{}/metrics", c.base))
            .bearer_auth(&op)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if metrics.lines().any(|l| l == "fleet_ledger_sync_set_size 1") {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "the standby never got in sync\n{}\n{}",
            a.log(),
            b.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // 5. The follower followed through the rotation to the writer's size.
    let auditor = setup.tokens.auditor.clone();
    let written = served_size(&c, &auditor).await.unwrap();
    let t0 = Instant::now();
    while served_size(&r.client(), &auditor).await.unwrap_or(0) < written {
        assert!(t0.elapsed() < Duration::from_secs(20), "{}", r.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for n in [&mut r, &mut b, &mut a] {
        assert!(n.stop(), "{}", n.log());
    }
    // Every node's log verifies from the genesis key.
    for n in [&a, &b, &r] {
        succeeds(&[
            "verify",
            "--db",
            n.db.to_str().unwrap(),
            "--key",
            setup.genesis_pub.to_str().unwrap(),
        ]);
    }
}
