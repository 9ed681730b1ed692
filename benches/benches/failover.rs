//! Failover benchmark (issue 29): three etcd members, two writer-capable nodes and a verifying
//! read follower on loopback, each node a child process of this binary, agents under
//! closed-loop load.
//!
//! Reports:
//! * closed-loop ingest with one sync standby, against the same daemon alone (no failover),
//!   interleaved rounds in the same run, medians (the follower stopped meanwhile: every
//!   process here shares the same cores);
//! * follower lag under load: from the moment the writer has committed a size to the
//!   moment the follower serves it (p50, p99);
//! * over `FLEET_FAILOVER_KILLS` writer kills (default 20) and `FLEET_FAILOVER_PAUSES`
//!   pauses past the lease (default 5), with the default lease (5 s) and agents through
//!   HAProxy running `deploy/haproxy.cfg`: acknowledged events lost and forks signed (both
//!   must be 0; the shared checker over the final log, every node's signature oracle, the
//!   register's history as etcd kept it), and the failover time from the fault to the first
//!   2xx of a request sent after it (p50, p99).
//!
//! `cargo bench -p fleet-ledger-benches --bench failover`. Needs Debian's `etcd-server`,
//! `etcd-client` and `haproxy` (`.ci/run` installs them). `FLEET_FAILOVER_SECS` sets the
//! length of each ingest round (default 8).

#[path = "../../server/tests/cluster/mod.rs"]
mod cluster;
#[path = "../../server/tests/etcd/mod.rs"]
mod etcd;

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cluster::{Node, served_size};
use engine::run_check::{Acked, Evidence, check_run};
use fleet_ledger_benches::env_or;
use fleet_ledger_benches::load::{Agent, closed_loop, event_json, ms, percentile, prepare as soak};
use fleet_ledger_demo::{ApiClient, Setup};

/// The allocator the `fleet-ledger` binary runs with, so the library is measured as it ships.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

const CHILD: &str = "FLEET_FAILOVER_CHILD";
const ROLLOUT: &str = fleet_ledger_benches::load::ROLLOUT;

/// Child mode: `serve` as the `fleet-ledger` binary does (a failover node, a follower, or a
/// lone daemon, by the config), on `port`, until SIGTERM.
fn child(spec: &str) {
    let mut parts = spec.split('|');
    let (config, db, port) = (
        PathBuf::from(parts.next().expect("config")),
        PathBuf::from(parts.next().expect("db")),
        parts.next().expect("port").parse::<u16>().expect("port"),
    );
    let _log = fleet_ledger::logging::init();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM");
        let stop = async move {
            term.recv().await;
        };
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind");
        let settings = fleet_ledger::config::Config::load(&config).expect("config");
        let clock = fleet_ledger::daemon::system_clock();
        match settings.config.failover.as_ref().map(|f| f.role) {
            Some(fleet_ledger::config::NodeRole::Standby) => {
                fleet_ledger::node::run(db, &config, listener, clock, stop).await
            }
            Some(fleet_ledger::config::NodeRole::Follower) => {
                fleet_ledger::node::run_follower(db, &config, listener, clock, stop).await
            }
            None => {
                let signer =
                    fleet_ledger::daemon::signer(&settings.config.signing_key).expect("key");
                let daemon =
                    fleet_ledger::daemon::Daemon::start(db, settings, signer, listener, clock)
                        .await
                        .expect("daemon");
                daemon.run_until(stop).await
            }
        }
        .expect("serve");
    });
}

/// A node's command: this binary in child mode, serving it.
fn serving(n: &Node) -> Command {
    let mut cmd = Command::new(std::env::current_exe().expect("exe"));
    cmd.env(
        CHILD,
        format!("{}|{}|{}", n.config().display(), n.db.display(), n.port),
    )
    .env("RUST_LOG", "warn");
    cmd
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("port")
        .local_addr()
        .expect("addr")
        .port()
}

async fn wait_healthy(c: &ApiClient) {
    for _ in 0..600 {
        if let Ok(r) = c.http.get(format!("{}/healthz", c.base)).send().await
            && r.status() == 200
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{} never became healthy", c.base);
}

async fn metric(c: &ApiClient, token: &str, name: &str) -> f64 {
    let Ok(r) = c
        .http
        .get(format!("{}/metrics", c.base))
        .bearer_auth(token)
        .send()
        .await
    else {
        return 0.0;
    };
    r.text()
        .await
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.split_whitespace().last()?.parse().ok())
        .unwrap_or(0.0)
}

/// An agent through the balancer: back to back, each 2xx recorded with when it was sent and
/// answered; a refused or failed request is not retried (the next seq follows).
async fn agent(
    a: Agent,
    mut seq: u64,
    port: u16,
    acked: Arc<Mutex<Vec<Acked>>>,
    oks: Arc<Mutex<Vec<(Instant, Instant)>>>,
    running: Arc<AtomicBool>,
) -> u64 {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()
        .expect("client");
    while running.load(Ordering::Relaxed) {
        seq += 1;
        let at = Instant::now();
        let sent = http
            .post(format!("http://127.0.0.1:{port}/v1/agent/events"))
            .bearer_auth(&a.token)
            .header("content-type", "application/json")
            .body(event_json(&a.host, seq))
            .send()
            .await;
        match sent {
            Ok(r) if r.status() == 200 => {
                acked.lock().expect("acked").push(Acked {
                    host: a.host.clone(),
                    rollout: ROLLOUT.into(),
                    agent_seq: seq,
                });
                oks.lock().expect("oks").push((at, Instant::now()));
            }
            Ok(r) => {
                let status = r.status().as_u16();
                assert_eq!(
                    status, 503,
                    "{} seq {seq}: only 503 may refuse a write",
                    a.host
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    seq
}

fn main() {
    if let Ok(spec) = std::env::var(CHILD) {
        child(&spec);
        return;
    }
    if !fleet_ledger_benches::selected("failover") {
        return;
    }
    if !etcd::have_etcd() || !cluster::have_haproxy() {
        return;
    }
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let dir = fleet_ledger_benches::bench_dir();
    let root = dir.path().to_path_buf();
    let secs: u64 = env_or("FLEET_FAILOVER_SECS", 8);
    let kills: usize = env_or("FLEET_FAILOVER_KILLS", 20);
    let pauses: usize = env_or("FLEET_FAILOVER_PAUSES", 5);
    let hosts: usize = env_or("FLEET_FAILOVER_HOSTS", 66);
    let etcd_cluster = etcd::Cluster::start();
    let endpoints = etcd_cluster.endpoints();
    rt.block_on(async move {
        // The lone daemon, and the cluster: a writer, a standby, a follower.
        let lone_setup = Setup::create(&root.join("lone-setup"), None, hosts).expect("setup");
        let mut lone = Node::new(&root, "lone", &lone_setup.db);
        std::fs::write(
            lone.config(),
            serde_json::to_vec(&lone_setup.config).expect("json"),
        )
        .expect("config");
        lone.start(serving(&lone));
        let setup = Setup::create(&root.join("setup"), None, hosts).expect("setup");
        let mut nodes = vec![
            Node::new(&root, "a", &setup.db),
            Node::new(&root, "b", &setup.db),
        ];
        let ports: Vec<(&'static str, u16)> = nodes.iter().map(|n| (n.name, n.port)).collect();
        for n in &mut nodes {
            cluster::configure(&setup, &n.dir, n.name, &ports, &endpoints, 5);
            n.start(serving(n));
        }
        let mut reader = Node::new(&root, "r", &setup.db);
        cluster::configure_follower(&setup, &reader.dir, &ports);
        reader.start(serving(&reader));
        let (lone_c, reader_c) = (lone.client(), reader.client());
        wait_healthy(&lone_c).await;
        wait_healthy(&reader_c).await;
        let (_, port) = cluster::wait_leader(&ports, Duration::from_secs(60)).await;
        let writer_c = ApiClient::new(&format!("http://127.0.0.1:{port}")).expect("client");
        let lone_agents = soak(&lone_setup, &lone_c).await;
        let agents = soak(&setup, &writer_c).await;
        let op = setup.tokens.operator.clone();
        let auditor = setup.tokens.auditor.clone();
        let deadline = Instant::now() + Duration::from_secs(60);
        while metric(&writer_c, &op, "fleet_ledger_sync_set_size").await < 1.0 {
            assert!(Instant::now() < deadline, "the standby never got in sync");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }

        // Ingest, interleaved rounds: the lone daemon, then the writer with its sync standby,
        // three times. The follower is stopped meanwhile (SIGSTOP): on this machine every
        // process shares the same two cores, and the configuration measured is one sync
        // standby. Then a round with the follower following, for its lag.
        let d = Duration::from_secs(secs);
        let (mut lone_seqs, mut seqs) = (vec![0u64; lone_agents.len()], vec![0u64; agents.len()]);
        let (mut lone_rates, mut rates, mut lags) = (Vec::new(), Vec::new(), Vec::new());
        reader.signal("-STOP");
        for round in 0..3 {
            let p = closed_loop(&lone_c, &lone_agents, &mut lone_seqs, d).await;
            lone_rates.push(p.events as f64 / p.elapsed.as_secs_f64());
            let p = closed_loop(&writer_c, &agents, &mut seqs, d).await;
            rates.push(p.events as f64 / p.elapsed.as_secs_f64());
            println!(
                "round {round}: lone {:.0} events/s, with a sync standby {:.0} events/s",
                lone_rates[round], rates[round]
            );
        }
        reader.signal("-CONT");
        let deadline = Instant::now() + Duration::from_secs(120);
        let target = served_size(&writer_c, &auditor).await.unwrap_or(0);
        while served_size(&reader_c, &auditor).await.unwrap_or(0) < target {
            assert!(Instant::now() < deadline, "the follower never caught up");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let follower_rate = {
            let sampling = Arc::new(AtomicBool::new(true));
            let sampler = {
                let (w, r, t, on) = (
                    writer_c.clone(),
                    reader_c.clone(),
                    auditor.clone(),
                    Arc::clone(&sampling),
                );
                tokio::spawn(async move {
                    // Each probe: the writer's committed size now; how long until the
                    // follower serves it.
                    let mut lags = Vec::new();
                    while on.load(Ordering::Relaxed) {
                        let Some(target) = served_size(&w, &t).await else {
                            continue;
                        };
                        let t0 = Instant::now();
                        loop {
                            if served_size(&r, &t).await.is_some_and(|s| s >= target) {
                                lags.push(t0.elapsed());
                                break;
                            }
                            if t0.elapsed() > Duration::from_secs(30) {
                                lags.push(t0.elapsed());
                                break;
                            }
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    lags
                })
            };
            let p = closed_loop(&writer_c, &agents, &mut seqs, d).await;
            sampling.store(false, Ordering::Relaxed);
            lags.extend(sampler.await.expect("sampler"));
            p.events as f64 / p.elapsed.as_secs_f64()
        };
        // Where a batch's time goes on the writer (means over the rounds).
        let mean = |sum: f64, count: f64| if count > 0.0 { 1e3 * sum / count } else { 0.0 };
        let mut parts = Vec::new();
        for name in ["commit_seconds", "ship_seconds", "register_seconds", "batch_inputs"] {
            let sum = metric(&writer_c, &op, &format!("fleet_ledger_{name}_sum")).await;
            let count = metric(&writer_c, &op, &format!("fleet_ledger_{name}_count")).await;
            parts.push(if name == "batch_inputs" {
                format!("inputs per batch {:.1}", sum / count.max(1.0))
            } else {
                format!("{name} {:.2} ms", mean(sum, count))
            });
        }
        println!("writer, mean per batch: {}", parts.join(", "));
        let _ = lone.stop();
        let median = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let (lone_med, fo_med) = (median(&mut lone_rates), median(&mut rates));
        lags.sort();
        println!(
            "closed-loop ingest, {} agents: lone {:.0} events/s, with one sync standby {:.0} events/s = {:.0}% (medians of 3 interleaved rounds of {secs} s)",
            agents.len(),
            lone_med,
            fo_med,
            100.0 * fo_med / lone_med
        );
        println!(
            "follower lag under load ({follower_rate:.0} events/s with the follower following): p50 {}, p99 {}, max {} ({} probes)",
            ms(percentile(&lags, 0.5)),
            ms(percentile(&lags, 0.99)),
            ms(lags.last().copied().unwrap_or_default()),
            lags.len()
        );

        // Faults: kills and pauses of the writer under closed-loop load through HAProxy.
        let balancer = free_port();
        let mut haproxy = cluster::haproxy(balancer, ports[0].1, ports[1].1);
        let running = Arc::new(AtomicBool::new(true));
        let acked = Arc::new(Mutex::new(Vec::new()));
        let oks = Arc::new(Mutex::new(Vec::new()));
        let tasks: Vec<_> = agents
            .iter()
            .zip(&seqs)
            .map(|(a, seq)| {
                tokio::spawn(agent(
                    a.clone(),
                    *seq,
                    balancer,
                    Arc::clone(&acked),
                    Arc::clone(&oks),
                    Arc::clone(&running),
                ))
            })
            .collect();
        let mut kill_times = Vec::new();
        let mut pause_times = Vec::new();
        let total = kills + pauses;
        for cycle in 0..total {
            let (lead, port) = cluster::wait_leader(&ports, Duration::from_secs(120)).await;
            let lc = ApiClient::new(&format!("http://127.0.0.1:{port}")).expect("client");
            let deadline = Instant::now() + Duration::from_secs(120);
            while metric(&lc, &op, "fleet_ledger_sync_set_size").await < 1.0 {
                assert!(Instant::now() < deadline, "the standby never got in sync");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            tokio::time::sleep(Duration::from_millis(1000)).await;
            let i = nodes.iter().position(|n| n.name == lead).expect("leader");
            // Pauses spread among the kills.
            let pause = pauses > 0 && cycle % (total / pauses).max(1) == (total / pauses).max(1) - 1
                && pause_times.len() < pauses;
            let t0 = Instant::now();
            if pause {
                nodes[i].signal("-STOP");
            } else {
                nodes[i].kill();
            }
            let took = loop {
                if let Some(at) = cluster::first_ok_after(&oks, t0) {
                    break at - t0;
                }
                assert!(
                    t0.elapsed() < Duration::from_secs(120),
                    "no write acknowledged after the fault"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            };
            println!(
                "fault {cycle}: {lead} {} , first 2xx after {}",
                if pause { "paused" } else { "killed" },
                ms(took)
            );
            if pause {
                pause_times.push(took);
                nodes[i].signal("-CONT");
            } else {
                kill_times.push(took);
                let cmd = serving(&nodes[i]);
                nodes[i].start(cmd);
            }
        }
        running.store(false, Ordering::Relaxed);
        for t in tasks {
            t.await.expect("agent");
        }
        let _ = haproxy.kill();
        let _ = haproxy.wait();

        // The checker over the last writer's log.
        let (lead, _) = cluster::wait_leader(&ports, Duration::from_secs(120)).await;
        let history = cluster::register_history(&endpoints);
        tokio::time::sleep(Duration::from_secs(3)).await;
        let _ = reader.stop();
        nodes.sort_by_key(|n| n.name == lead);
        for n in &mut nodes {
            let _ = n.stop();
        }
        let last = nodes.iter().find(|n| n.name == lead).expect("leader");
        let store = ledger::store::ReadOnlyStore::open(&last.db).expect("open");
        let snap = store.snapshot().expect("snapshot");
        let acked = acked.lock().expect("acked").clone();
        let evidence = Evidence {
            signed: nodes
                .iter()
                .chain([&reader])
                .flat_map(|n| cluster::signed_heads(&n.oracle(), n.name))
                .collect(),
            register: history,
            acked: acked.clone(),
            ..Evidence::default()
        };
        let violations = check_run(&snap, &evidence).expect("check");
        let lost = violations.iter().filter(|v| v.contains("not in the log")).count();
        let forks = violations.iter().filter(|v| v.contains("fork")).count();
        for v in &violations {
            println!("VIOLATION: {v}");
        }
        let mut all: Vec<Duration> = kill_times.iter().chain(&pause_times).copied().collect();
        all.sort();
        kill_times.sort();
        pause_times.sort();
        println!(
            "{} writer kills and {} pauses under load: {} writes acknowledged, {lost} lost, {forks} forks signed, {} violations",
            kill_times.len(),
            pause_times.len(),
            acked.len(),
            violations.len()
        );
        println!(
            "failover time (fault to the first 2xx): all p50 {}, p99 {}; kills p50 {}, p99 {}; pauses p50 {}, p99 {}",
            ms(percentile(&all, 0.5)),
            ms(percentile(&all, 0.99)),
            ms(percentile(&kill_times, 0.5)),
            ms(percentile(&kill_times, 0.99)),
            ms(percentile(&pause_times, 0.5)),
            ms(percentile(&pause_times, 0.99)),
        );
    });
    drop(etcd_cluster);
}
