//! The daemon under load, shared by the `ingest` and `scale` benchmarks: nixfleet agents
//! that reached Soaking sending probe results over raw keep-alive HTTP/1.1, open and closed
//! loops, and a daemon in a child process (so its RSS is its own).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fleet_ledger::config::Config;
use fleet_ledger::daemon::{Daemon, system_clock};
use fleet_ledger_demo::{ApiClient, Setup};
use serde_json::json;

/// The rollout the agents report for.
pub const ROLLOUT: &str = "stable@a1a1a1a1";
/// Its target closure.
pub const TARGET: &str = "/nix/store/bench-stable";

/// The `p` quantile of sorted durations.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

/// Milliseconds, for humans.
pub fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

/// One agent event (a probe result, as a soaking host sends) as JSON text, formatted
/// directly: building a `serde_json::Value` per event cost the load generator more than the
/// daemon spends parsing it.
pub fn event_json(host: &str, seq: u64) -> String {
    let now = wire::ts::format(chrono::Utc::now().timestamp_micros());
    format!(
        r#"{{"hostname":"{host}","rolloutId":"{ROLLOUT}","event":{{"kind":"ProbeResult","seq":{seq},"probeName":"evidence-nis2-essential","mode":"enforce","status":"pass","observedAt":"{now}","subResults":[{{"controlId":"nis2.art21.a","status":"pass","framework":"nis2-essential","article":"21","effectiveMode":"enforce"}},{{"controlId":"access-control","status":"fail","framework":"nis2-essential","effectiveMode":"observe","overrideReason":"accepted risk"}}]}}}}"#
    )
}

/// [`event_json`] as a JSON value.
pub fn event_body(host: &str, seq: u64) -> serde_json::Value {
    serde_json::from_str(&event_json(host, seq)).expect("event JSON")
}

/// An agent that has reached Soaking: it may send probe results forever.
#[derive(Clone, Debug)]
pub struct Agent {
    /// Host name.
    pub host: String,
    /// Its bearer token.
    pub token: String,
}

/// Sends one event through the general client; its latency.
pub async fn send(c: &ApiClient, a: &Agent, seq: u64) -> Duration {
    let s = Instant::now();
    let (status, v) = c
        .post(&a.token, "/v1/agent/events", &event_body(&a.host, seq))
        .await
        .expect("request");
    assert_eq!(status, 200, "{} seq {seq}: {v}", a.host);
    s.elapsed()
}

/// Posts the fleet and a rollout, then heartbeats every host to Soaking.
pub async fn prepare(setup: &Setup, c: &ApiClient) -> Vec<Agent> {
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
                &format!("/v1/ledger/rollouts/{ROLLOUT}/hosts"),
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
        let now = wire::ts::format(chrono::Utc::now().timestamp_micros());
        let hb =
            json!({"hostname": host, "rollout_id": ROLLOUT, "current_closure": TARGET, "at": now});
        c.ok(&token, "/v1/agent/heartbeat", &hb)
            .await
            .expect("heartbeat");
        agents.push(Agent { host, token });
    }
    agents
}

/// What a load phase measured.
#[derive(Debug)]
pub struct Phase {
    /// Events answered.
    pub events: u64,
    /// How long it ran.
    pub elapsed: Duration,
    /// Each event's latency, sorted.
    pub lat: Vec<Duration>,
}

/// One agent's keep-alive HTTP/1.1 connection for the closed loop. The load generator
/// shares this machine's two cores with the daemon, so it writes each request as bytes and
/// parses only the response head (as wrk-style generators do) instead of going through a
/// general client: with reqwest and `serde_json::Value` bodies it took a quarter of the
/// runtime's CPU. The daemon sees ordinary HTTP/1.1 requests.
#[derive(Debug)]
pub struct Conn {
    stream: tokio::net::TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    /// A keep-alive connection to the daemon at `base` (`http://host:port`).
    pub async fn open(base: &str) -> Conn {
        let addr = base.trim_start_matches("http://");
        let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        Conn {
            stream,
            buf: Vec::with_capacity(4096),
        }
    }

    /// Sends one event; its latency. Panics unless the daemon answers 200.
    pub async fn send(&mut self, a: &Agent, seq: u64) -> Duration {
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
pub async fn closed_loop(c: &ApiClient, agents: &[Agent], seqs: &mut [u64], d: Duration) -> Phase {
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
pub async fn open_loop(
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

/// Prints a phase's throughput and latency quantiles.
pub fn report(name: &str, p: &Phase) {
    println!(
        "{name:<34} {:>8.0} events/s  p50 {:>9}  p99 {:>9}  ({} events)",
        p.events as f64 / p.elapsed.as_secs_f64(),
        ms(percentile(&p.lat, 0.5)),
        ms(percentile(&p.lat, 0.99)),
        p.events
    );
}

/// Child mode: serve `db` with `config` until stdin closes; print the port when ready.
pub fn child(spec: &str) {
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

/// A `/proc/PID/status` field in KiB (0 when unreadable).
pub fn status_kb(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// A daemon serving a ledger in a child process of the running bench binary, whose `main`
/// calls [`child`] when the variable `env` is set.
#[derive(Debug)]
pub struct Served {
    /// The child (stdin closed = shut down).
    pub process: Child,
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// From spawning to its first accepted connection: open, catch-up, start.
    pub open: Duration,
    /// The fleet, tokens and CI key it serves.
    pub setup: Setup,
    /// A client for it.
    pub client: ApiClient,
}

/// Serves `db` (a ledger of the genesis fixture key) from a child process, with a fleet set
/// up under `dir` and its config changed by `configure`.
pub fn serve(db: &Path, dir: &Path, env: &str, configure: impl FnOnce(&mut Config)) -> Served {
    let setup = Setup::create(&dir.join("setup"), None, 66).expect("setup");
    let key = dir.join("genesis.key");
    ledger::keys::write_private_key(&key, &fixtures::genesis_signer()).expect("key");
    let mut config = setup.config.clone();
    config.signing_key = key;
    configure(&mut config);
    let config_path = dir.join("config.json");
    std::fs::write(&config_path, serde_json::to_vec(&config).expect("json")).expect("config");
    let exe = std::env::current_exe().expect("exe");
    let started = Instant::now();
    let mut process = Command::new(exe)
        .env(env, format!("{}|{}", config_path.display(), db.display()))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut out = std::io::BufReader::new(process.stdout.take().expect("stdout"));
    let mut line = String::new();
    std::io::BufRead::read_line(&mut out, &mut line).expect("ready line");
    let port: u16 = line
        .trim()
        .strip_prefix("ready ")
        .and_then(|p| p.parse().ok())
        .expect("ready PORT");
    let open = started.elapsed();
    let client = ApiClient::new(&format!("http://127.0.0.1:{port}")).expect("client");
    Served {
        process,
        port,
        open,
        setup,
        client,
    }
}

impl Served {
    /// Brings the fleet's stable hosts to Soaking, then runs the closed loop for `d`.
    pub fn closed_loop(&self, rt: &tokio::runtime::Runtime, d: Duration) -> Phase {
        rt.block_on(async {
            let agents = prepare(&self.setup, &self.client).await;
            let mut seqs = vec![0u64; agents.len()];
            closed_loop(&self.client, &agents, &mut seqs, d).await
        })
    }

    /// Closes its stdin and waits for it to shut down.
    pub fn stop(mut self) {
        drop(self.process.stdin.take());
        let _ = self.process.wait();
    }
}
