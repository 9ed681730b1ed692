//! HTTP ingest benchmark: a Rust load generator against the daemon over real HTTP, with
//! durable group commit, on this machine (client and daemon share its cores).
//!
//! Reports, as medians over the run:
//! * the fsync baseline (4 KiB write + fdatasync) and one durable single-row redb commit;
//! * a lone event's latency (one client, idle daemon) as a multiple of that fsync;
//! * closed-loop throughput with concurrent agents (events/s, p50/p99);
//! * open-loop latency at fixed offered loads (1k, 5k events/s), measured from each event's
//!   scheduled send time, so a stalled daemon cannot hide queueing (no coordinated omission);
//! * daemon RSS (current and peak) serving a 1M-entry simulated ledger, in a child process.
//!
//! `cargo bench -p fleet-ledger-benches --bench ingest`. `FLEET_INGEST_SECS` sets the length
//! of each load phase (default 8).

use std::io::{BufRead as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fleet_ledger::config::Config;
use fleet_ledger::daemon::{Daemon, system_clock};
use fleet_ledger_benches::{bench_dir, cached_log};
use fleet_ledger_demo::{ApiClient, Setup};

use serde_json::json;

/// The allocator the `fleet-ledger` binary runs with, so the library is measured as it ships.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ROLLOUT: &str = "stable@a1a1a1a1";
const TARGET: &str = "/nix/store/bench-stable";
const CHILD: &str = "FLEET_INGEST_CHILD";

fn secs() -> u64 {
    fleet_ledger_benches::env_or("FLEET_INGEST_SECS", 8)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

/// Median of `n` durable 4 KiB writes (write + fdatasync) in the scratch directory.
fn fsync_baseline(dir: &Path, n: usize) -> Duration {
    let mut f = std::fs::File::create(dir.join("fsync.probe")).expect("probe file");
    let block = [0x5au8; 4096];
    let mut t: Vec<Duration> = (0..n)
        .map(|_| {
            let s = Instant::now();
            f.write_all(&block).expect("write");
            f.sync_data().expect("fdatasync");
            s.elapsed()
        })
        .collect();
    t.sort();
    percentile(&t, 0.5)
}

/// Median of `n` durable redb commits of one small row (2PC, Immediate), like the ledger's.
fn redb_commit_baseline(dir: &Path, n: usize) -> Duration {
    let db = redb::Database::create(dir.join("baseline.redb")).expect("redb");
    let table: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("t");
    let mut t: Vec<Duration> = (0..n as u64)
        .map(|i| {
            let s = Instant::now();
            let mut txn = db.begin_write().expect("begin");
            txn.set_two_phase_commit(true);
            {
                let mut tb = txn.open_table(table).expect("table");
                tb.insert(i, &[0u8; 200][..]).expect("insert");
            }
            txn.commit().expect("commit");
            s.elapsed()
        })
        .collect();
    t.sort();
    percentile(&t, 0.5)
}

/// One agent event (a probe result, as a soaking host sends) as JSON text, formatted
/// directly: building a `serde_json::Value` per event cost the load generator more than the
/// daemon spends parsing it.
fn event_json(host: &str, seq: u64) -> String {
    let now = fleet_ledger::wire::ts::format(chrono::Utc::now().timestamp_micros());
    format!(
        r#"{{"hostname":"{host}","rolloutId":"{ROLLOUT}","event":{{"kind":"ProbeResult","seq":{seq},"probeName":"evidence-nis2-essential","mode":"enforce","status":"pass","observedAt":"{now}","subResults":[{{"controlId":"nis2.art21.a","status":"pass","framework":"nis2-essential","article":"21","effectiveMode":"enforce"}},{{"controlId":"access-control","status":"fail","framework":"nis2-essential","effectiveMode":"observe","overrideReason":"accepted risk"}}]}}}}"#
    )
}

fn event_body(host: &str, seq: u64) -> serde_json::Value {
    serde_json::from_str(&event_json(host, seq)).expect("event JSON")
}

/// An agent that has reached Soaking: it may send probe results forever.
#[derive(Clone, Debug)]
struct Agent {
    host: String,
    token: String,
}

async fn send(c: &ApiClient, a: &Agent, seq: u64) -> Duration {
    let s = Instant::now();
    let (status, v) = c
        .post(&a.token, "/v1/agent/events", &event_body(&a.host, seq))
        .await
        .expect("request");
    assert_eq!(status, 200, "{} seq {seq}: {v}", a.host);
    s.elapsed()
}

/// Posts the fleet and a rollout, then heartbeats every host to Soaking.
async fn prepare(setup: &Setup, c: &ApiClient) -> Vec<Agent> {
    let (body, _) = setup.signed_fleet().expect("fleet");
    c.ok(&setup.tokens.ci, "/v1/manifests/fleet", &body)
        .await
        .expect("fleet accepted");
    let doc = setup
        .rollout_doc("stable", "a1a1a1a1", TARGET, &setup.at(-5))
        .expect("rollout");
    let (body, _) = setup.sign(&doc).expect("sign");
    c.ok(
        &setup.tokens.ci,
        &format!("/v1/manifests/rollouts/{ROLLOUT}"),
        &body,
    )
    .await
    .expect("rollout accepted");
    let stable: Vec<String> = setup.stable_waves.iter().flatten().cloned().collect();
    loop {
        let (s, v) = c
            .get(
                &setup.tokens.operator,
                &format!("/v1/rollouts/{ROLLOUT}/hosts"),
            )
            .await
            .expect("hosts");
        if s == 200
            && v["hosts"]
                .as_array()
                .is_some_and(|h| h.len() == stable.len())
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut agents = Vec::new();
    for host in stable {
        let token = setup.tokens.agents[&host].clone();
        let now = fleet_ledger::wire::ts::format(chrono::Utc::now().timestamp_micros());
        let hb =
            json!({"hostname": host, "rollout_id": ROLLOUT, "current_closure": TARGET, "at": now});
        c.ok(&token, "/v1/agent/heartbeat", &hb)
            .await
            .expect("heartbeat");
        agents.push(Agent { host, token });
    }
    agents
}

struct Phase {
    events: u64,
    elapsed: Duration,
    lat: Vec<Duration>,
}

/// One agent's keep-alive HTTP/1.1 connection for the closed loop. The load generator
/// shares this machine's two cores with the daemon, so it writes each request as bytes and
/// parses only the response head (as wrk-style generators do) instead of going through a
/// general client: with reqwest and `serde_json::Value` bodies it took a quarter of the
/// runtime's CPU. The daemon sees ordinary HTTP/1.1 requests.
struct Conn {
    stream: tokio::net::TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    async fn open(base: &str) -> Conn {
        let addr = base.trim_start_matches("http://");
        let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        Conn {
            stream,
            buf: Vec::with_capacity(4096),
        }
    }

    /// Sends one event; its latency. Panics unless the daemon answers 200.
    async fn send(&mut self, a: &Agent, seq: u64) -> Duration {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let s = Instant::now();
        let body = event_json(&a.host, seq);
        let req = format!(
            "POST /v1/agent/events HTTP/1.1\r\nhost: bench\r\nauthorization: Bearer {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            a.token,
            body.len()
        );
        self.stream.write_all(req.as_bytes()).await.expect("write");
        self.buf.clear();
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 16];
            let mut resp = httparse::Response::new(&mut headers);
            if let httparse::Status::Complete(head) = resp.parse(&self.buf).expect("response") {
                let status = resp.code.expect("status");
                let len: usize = resp
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                    .and_then(|h| std::str::from_utf8(h.value).ok()?.parse().ok())
                    .expect("content-length");
                while self.buf.len() < head + len {
                    let n = self.stream.read_buf(&mut self.buf).await.expect("read");
                    assert!(n > 0, "connection closed");
                }
                assert_eq!(
                    status,
                    200,
                    "{} seq {seq}: {}",
                    a.host,
                    String::from_utf8_lossy(&self.buf[head..])
                );
                return s.elapsed();
            }
            let n = self.stream.read_buf(&mut self.buf).await.expect("read");
            assert!(n > 0, "connection closed");
        }
    }
}

/// Every agent sends back to back for `d`, each on its own keep-alive connection.
async fn closed_loop(c: &ApiClient, agents: &[Agent], seqs: &mut [u64], d: Duration) -> Phase {
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (a, seq) in agents.iter().zip(seqs.iter()) {
        let (base, a, mut seq) = (c.base.clone(), a.clone(), *seq);
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::open(&base).await;
            let mut lat = Vec::new();
            while start.elapsed() < d {
                seq += 1;
                lat.push(conn.send(&a, seq).await);
            }
            (seq, lat)
        }));
    }
    let mut lat = Vec::new();
    for (t, s) in tasks.into_iter().zip(seqs.iter_mut()) {
        let (seq, l) = t.await.expect("task");
        *s = seq;
        lat.extend(l);
    }
    lat.sort();
    Phase {
        events: lat.len() as u64,
        elapsed: start.elapsed(),
        lat,
    }
}

/// `rate` events/s spread over the agents on a fixed schedule; latency is measured from each
/// event's scheduled time.
async fn open_loop(
    c: &ApiClient,
    agents: &[Agent],
    seqs: &mut [u64],
    rate: f64,
    d: Duration,
) -> Phase {
    let start = tokio::time::Instant::now() + Duration::from_millis(50);
    let n = agents.len() as f64;
    let mut tasks = Vec::new();
    for (i, (a, seq)) in agents.iter().zip(seqs.iter()).enumerate() {
        let (c, a, mut seq) = (c.clone(), a.clone(), *seq);
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut k = 0u64;
            loop {
                let offset = (k as f64 * n + i as f64) / rate;
                if offset >= d.as_secs_f64() {
                    break;
                }
                let due = start + Duration::from_secs_f64(offset);
                tokio::time::sleep_until(due).await;
                seq += 1;
                send(&c, &a, seq).await;
                lat.push(due.elapsed());
                k += 1;
            }
            (seq, lat)
        }));
    }
    let mut lat = Vec::new();
    for (t, s) in tasks.into_iter().zip(seqs.iter_mut()) {
        let (seq, l) = t.await.expect("task");
        *s = seq;
        lat.extend(l);
    }
    lat.sort();
    Phase {
        events: lat.len() as u64,
        elapsed: d,
        lat,
    }
}

fn report(name: &str, p: &Phase) {
    println!(
        "{name:<34} {:>8.0} events/s  p50 {:>9}  p99 {:>9}  ({} events)",
        p.events as f64 / p.elapsed.as_secs_f64(),
        ms(percentile(&p.lat, 0.5)),
        ms(percentile(&p.lat, 0.99)),
        p.events
    );
}

/// Child mode: serve `db` with `config` until stdin closes; print the port when ready.
fn child(spec: &str) {
    let (config, db) = spec.split_once('|').expect("config|db");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let settings = Config::load(Path::new(config)).expect("config");
        let signer = fleet_ledger::daemon::signer(&settings.config.signing_key).expect("key");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let daemon = Daemon::start(
            PathBuf::from(db),
            settings,
            signer,
            listener,
            system_clock(),
        )
        .await
        .expect("daemon");
        println!("ready {}", daemon.addr.port());
        let _ = tokio::task::spawn_blocking(|| {
            let mut line = String::new();
            let _ = std::io::stdin().read_line(&mut line);
        })
        .await;
        daemon.shutdown().await.expect("shutdown");
    });
}

fn status_kb(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Daemon RSS on a copy of the cached 1M-entry simulated log, idle and under load.
fn rss_1m(rt: &tokio::runtime::Runtime) {
    let src = cached_log(1_000_000);
    let dir = bench_dir();
    let db = dir.path().join("ledger.redb");
    std::fs::copy(&src, &db).expect("copy the 1M log");
    // The steady state: projection tables current, as after any restart. (A first open of a
    // log without tables folds all of it once; that peak is not the daemon's footprint.)
    fleet_ledger::materialize::rebuild(&db, |_| {}).expect("rebuild the projection tables");
    let setup = Setup::create(&dir.path().join("setup"), None, 66).expect("setup");
    let key = dir.path().join("genesis.key");
    ledger::keys::write_private_key(&key, &fixtures::genesis_signer()).expect("key");
    let mut config = setup.config.clone();
    config.signing_key = key;
    let config_path = dir.path().join("config.json");
    std::fs::write(&config_path, serde_json::to_vec(&config).expect("json")).expect("config");
    let exe = std::env::current_exe().expect("exe");
    let started = Instant::now();
    let mut child = Command::new(exe)
        .env(CHILD, format!("{}|{}", config_path.display(), db.display()))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut out = std::io::BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    out.read_line(&mut line).expect("ready line");
    let port: u16 = line
        .trim()
        .strip_prefix("ready ")
        .and_then(|p| p.parse().ok())
        .expect("ready PORT");
    let open = started.elapsed();
    let pid = child.id();
    let idle = status_kb(pid, "VmRSS:");
    let c = ApiClient::new(&format!("http://127.0.0.1:{port}")).expect("client");
    let loaded = rt.block_on(async {
        let agents = prepare(&setup, &c).await;
        let mut seqs = vec![0u64; agents.len()];
        closed_loop(&c, &agents, &mut seqs, Duration::from_secs(secs().min(5))).await
    });
    let busy = status_kb(pid, "VmRSS:");
    let peak = status_kb(pid, "VmHWM:");
    drop(child.stdin.take());
    let _ = child.wait();
    report("load on the 1M-entry ledger", &loaded);
    println!(
        "daemon RSS, 1M-entry ledger: open+catch-up {:.1} s, idle {} MB, under load {} MB, peak {} MB",
        open.as_secs_f64(),
        idle / 1024,
        busy / 1024,
        peak / 1024
    );
}

fn main() {
    if let Ok(spec) = std::env::var(CHILD) {
        child(&spec);
        return;
    }
    // `cargo bench` passes `--bench`; a filter argument that is not ours skips the run.
    if !fleet_ledger_benches::selected("ingest") {
        return;
    }
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let dir = bench_dir();
    let fsync = fsync_baseline(dir.path(), 300);
    let redb1 = redb_commit_baseline(dir.path(), 300);
    println!("baseline: fsync (4 KiB + fdatasync) median {}", ms(fsync));
    println!("baseline: redb durable 1-row commit median {}", ms(redb1));

    let d = Duration::from_secs(secs());
    rt.block_on(async {
        let setup = Setup::create(&dir.path().join("daemon"), None, 66).expect("setup");
        let (daemon, c) = setup.start().await.expect("daemon");
        let agents = prepare(&setup, &c).await;
        let mut seqs = vec![0u64; agents.len()];

        // A lone event: one client, an otherwise idle daemon.
        let mut lone = Vec::new();
        for i in 0..300 {
            seqs[0] += 1;
            lone.push(send(&c, &agents[0], seqs[0]).await);
            if i % 10 == 0 {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
        lone.sort();
        let lone_med = percentile(&lone, 0.5);
        let rendered = daemon.shared.metrics.render();
        let pick = |name: &str| {
            rendered
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().last())
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        println!(
            "  (writer: mean commit {:.3} ms over {} commits)",
            1e3 * pick("fleet_ledger_commit_seconds_sum")
                / pick("fleet_ledger_commit_seconds_count"),
            pick("fleet_ledger_commit_seconds_count")
        );
        println!(
            "lone event over HTTP: median {} = {:.2}x fsync, {:.2}x a redb 1-row commit; p99 {}",
            ms(lone_med),
            lone_med.as_secs_f64() / fsync.as_secs_f64(),
            lone_med.as_secs_f64() / redb1.as_secs_f64(),
            ms(percentile(&lone, 0.99))
        );
        for rate in [1000.0, 5000.0] {
            let p = open_loop(&c, &agents, &mut seqs, rate, d).await;
            report(&format!("offered {rate:.0} events/s (open loop)"), &p);
        }
        let p = closed_loop(&c, &agents, &mut seqs, d).await;
        report(&format!("closed loop, {} agents", agents.len()), &p);
        let m = &daemon.shared.metrics;
        println!(
            "daemon: {} commits for {} entries",
            m.commits.get(),
            m.entries.get()
        );
        daemon.shutdown().await.expect("shutdown");

        // The same closed loop with the daemon publishing tiles (config `publish`, every
        // second): ingest with publication on, how far publication trails the commits, and
        // the published bytes per entry.
        let setup = Setup::create(&dir.path().join("publishing"), None, 66).expect("setup");
        let tiles = dir.path().join("tiles");
        let mut config = setup.config.clone();
        config.publish = Some(fleet_ledger::publish::PublishConfig {
            to: fleet_ledger::publish::Destination::Dir(tiles.clone()),
            interval_secs: 1,
        });
        let (daemon, c) = setup.start_with(config).await.expect("daemon");
        let agents = prepare(&setup, &c).await;
        let mut seqs = vec![0u64; agents.len()];
        let shared = std::sync::Arc::clone(&daemon.shared);
        let sampler = tokio::spawn(async move {
            let mut behind = Vec::new();
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let head = *shared.committed.borrow();
                let published = shared.metrics.published_entries.get() as u64;
                behind.push(head.saturating_sub(published));
                if behind.len() as u64 >= 10 * secs() {
                    return behind;
                }
            }
        });
        let p = closed_loop(&c, &agents, &mut seqs, d).await;
        report(
            &format!("closed loop, {} agents, publishing", agents.len()),
            &p,
        );
        let mut behind = sampler.await.expect("sampler");
        behind.sort();
        let rate = p.events as f64 / p.elapsed.as_secs_f64();
        let med = behind[behind.len() / 2];
        let max = *behind.last().unwrap_or(&0);
        println!(
            "publication lag (committed minus published, sampled every 100 ms): median {med} entries, max {max}; at this rate {:.2} s and {:.2} s",
            med as f64 / rate,
            max as f64 / rate
        );
        let entries = *daemon.shared.committed.borrow();
        daemon.shutdown().await.expect("shutdown");
        let mut bytes = 0u64;
        let mut stack = vec![tiles.clone()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).expect("tiles dir") {
                let e = e.expect("entry");
                let m = e.metadata().expect("metadata");
                if m.is_dir() {
                    stack.push(e.path());
                } else {
                    bytes += m.len();
                }
            }
        }
        println!(
            "published tiles: {bytes} bytes for {entries} entries ({:.1} bytes per entry)",
            bytes as f64 / entries.max(1) as f64
        );
    });
    rss_1m(&rt);
}
