//! What the tests that run the `serve` binary share: spawning it (plainly, or under a file
//! size limit), waiting for it, loading it with agents, and checking what it acknowledged.
#![allow(dead_code, unreachable_pub)] // shared by test binaries that each use a part

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fleet_ledger_demo::{ApiClient, Setup};
use serde_json::json;

pub const EXE: &str = env!("CARGO_BIN_EXE_fleet-ledger");
pub const ROLLOUT: &str = "stable@a1a1a1a1";
pub const TARGET: &str = "/nix/store/t-stable";

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A daemon process that is killed if the test panics first (a failed test must not leave a
/// daemon ticking in the background).
pub struct Proc(pub Child);

impl std::ops::Deref for Proc {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Proc {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

pub fn spawn(db: &Path, config: &Path, port: u16) -> Proc {
    serve(
        Command::new(EXE),
        db,
        config,
        port,
        Stdio::inherit(),
        "warn",
    )
}

/// The binary's `serve` on `db` with `config`, listening on 127.0.0.1:`port`, logging at
/// info (for a caller that directs its output).
pub fn serve_command(db: &Path, config: &Path, port: u16) -> Command {
    let mut cmd = Command::new(EXE);
    cmd.args(["serve", "--db"])
        .arg(db)
        .args(["--listen", &format!("127.0.0.1:{port}"), "--config"])
        .arg(config)
        .env("RUST_LOG", "info");
    cmd
}

/// `cmd` (the binary, or a wrapper that execs it with these arguments) running `serve`.
pub fn serve(
    mut cmd: Command,
    db: &Path,
    config: &Path,
    port: u16,
    stderr: Stdio,
    rust_log: &str,
) -> Proc {
    Proc(
        cmd.args(["serve", "--db"])
            .arg(db)
            .args(["--listen", &format!("127.0.0.1:{port}"), "--config"])
            .arg(config)
            .env("RUST_LOG", rust_log)
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap(),
    )
}

pub async fn wait_healthy(c: &ApiClient) {
    for _ in 0..400 {
        if let Ok(r) = c.http.get(format!("{}/healthz", c.base)).send().await
            && r.status() == 200
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the daemon never became healthy");
}

/// `serve`, unable to grow any file past `max_bytes` (the soft RLIMIT_FSIZE, set by python3
/// before it execs the daemon; the hard limit stays unlimited so the test can lift it; SIGXFSZ
/// ignored so a write past it fails with EFBIG instead of killing the process): the disk-full
/// failure of a real commit, with nothing mocked.
pub fn spawn_limited(db: &Path, config: &Path, port: u16, max_bytes: u64) -> Proc {
    serve(limited(max_bytes), db, config, port, Stdio::null(), "warn")
}

/// A command that runs the binary with the file size limit of [`spawn_limited`].
pub fn limited(max_bytes: u64) -> Command {
    let mut python = Command::new("python3");
    python.args([
        "-c",
        "import os, resource, signal, sys\n\
         signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n\
         n = int(sys.argv[1])\n\
         resource.setrlimit(resource.RLIMIT_FSIZE, (n, resource.RLIM_INFINITY))\n\
         os.execv(sys.argv[2], sys.argv[2:])",
        &max_bytes.to_string(),
        EXE,
    ]);
    python
}

/// Lifts the file size limit of a process started by [`limited`].
pub fn lift_file_limit(pid: u32) {
    let raised = Command::new("python3")
        .args([
            "-c",
            "import resource, sys\n\
             inf = resource.RLIM_INFINITY\n\
             resource.prlimit(int(sys.argv[1]), resource.RLIMIT_FSIZE, (inf, inf))",
            &pid.to_string(),
        ])
        .status()
        .unwrap();
    assert!(raised.success());
}

/// Sends SIGTERM to a process.
pub fn sigterm(pid: u32) {
    let status = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// The body of an authenticated GET.
pub async fn fetch(c: &ApiClient, token: &str, path: &str) -> bytes::Bytes {
    c.http
        .get(format!("{}{path}", c.base))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap()
}

/// A counter or gauge from `/metrics` (0 when absent).
pub async fn metric(c: &ApiClient, token: &str, name: &str) -> f64 {
    let body = fetch(c, token, "/metrics").await;
    String::from_utf8_lossy(&body)
        .lines()
        .find(|l| l.starts_with(name) && !l.starts_with('#'))
        .and_then(|l| l.split_whitespace().last()?.parse().ok())
        .unwrap_or(0.0)
}

/// SIGTERM (the daemon exits 0), then the chain verifies, the projections equal a fold of
/// the log, and replaying the decisions reproduces them.
pub fn stop_and_check(mut child: Proc, setup: &Setup) {
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(child.wait().unwrap().success());
    let key = setup.genesis_pub.to_str().unwrap();
    let db = setup.db.to_str().unwrap();
    succeeds(&["verify", "--db", db, "--key", key]);
    succeeds(&["check", "--db", db]);
    succeeds(&["replay", "--db", db, "--check"]);
}

/// Runs the CLI, requires exit 0, returns its standard output.
pub fn succeeds(args: &[&str]) -> String {
    let out = Command::new(EXE).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// (ledger seq, host, agent seq) of every acknowledged event.
pub type Acked = Arc<Mutex<Vec<(u64, String, u64)>>>;

/// Sends probe results back to back until one is not acknowledged; returns that one's agent
/// seq and the daemon's answer (None: the connection failed).
pub async fn load(
    c: ApiClient,
    host: String,
    token: String,
    mut seq: u64,
    acked: Acked,
) -> (String, u64, Option<serde_json::Value>) {
    loop {
        seq += 1;
        match c
            .post(&token, "/v1/agent/events", &probe_result(&host, seq))
            .await
        {
            Ok((200, v)) => {
                acked
                    .lock()
                    .unwrap()
                    .push((v["seq"].as_u64().unwrap(), host.clone(), seq))
            }
            // 503: not recorded. A failed connection (the daemon died mid-request): the event
            // may or may not be durable.
            Ok((503, v)) => return (host, seq, Some(v)),
            Err(_) => return (host, seq, None),
            Ok((s, v)) => panic!("{host} seq {seq}: {s} {v}"),
        }
    }
}

/// Posts the fleet and the rollout, waits for its hosts, and moves them to Soaking with
/// heartbeats at the target (synthesized, marked so), so they may send probe results.
pub async fn prepare(c: &ApiClient, setup: &Setup) {
    let op = &setup.tokens.operator;
    let (body, _) = setup.signed_fleet().unwrap();
    c.ok(&setup.tokens.ci, "/v1/manifests/fleet", &body)
        .await
        .unwrap();
    let doc = setup
        .rollout_doc("stable", "a1a1a1a1", TARGET, &setup.at(-10))
        .unwrap();
    let (body, _) = setup.sign(&doc).unwrap();
    c.ok(
        &setup.tokens.ci,
        &format!("/v1/manifests/rollouts/{ROLLOUT}"),
        &body,
    )
    .await
    .unwrap();
    for _ in 0..400 {
        let (s, v) = c
            .get(op, &format!("/v1/ledger/rollouts/{ROLLOUT}/hosts"))
            .await
            .unwrap();
        if s == 200 && v["hosts"].as_array().is_some_and(|h| h.len() == 14) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    for (host, token) in &setup.tokens.agents {
        if host.as_str() < "web-0002" {
            continue;
        }
        let now = wire::ts::format(chrono::Utc::now().timestamp_micros());
        let hb =
            json!({"hostname": host, "rollout_id": ROLLOUT, "current_closure": TARGET, "at": now});
        c.ok(token, "/v1/agent/heartbeat", &hb).await.unwrap();
    }
}

pub async fn last_seqs(c: &ApiClient, op: &str) -> Vec<(String, u64)> {
    let (s, v) = c
        .get(op, &format!("/v1/ledger/rollouts/{ROLLOUT}/hosts"))
        .await
        .unwrap();
    assert_eq!(s, 200, "{v}");
    v["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["host"].as_str().unwrap().to_string(),
                h["lastEventSeq"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// A passing probe result of `host` in [`ROLLOUT`] at agent seq `seq`.
pub fn probe_result(host: &str, seq: u64) -> serde_json::Value {
    let now = wire::ts::format(chrono::Utc::now().timestamp_micros());
    json!({"hostname": host, "rolloutId": ROLLOUT, "event": {
        "kind": "ProbeResult", "seq": seq, "probeName": "evidence-nis2", "mode": "enforce",
        "status": "pass", "observedAt": now}})
}

/// The raw entries `[from, to)` over the entries route (FORMAT.md §9a).
pub async fn entries(c: &ApiClient, auditor: &str, from: u64, to: Option<u64>) -> Vec<Vec<u8>> {
    let to = to.map(|t| format!("&to={t}")).unwrap_or_default();
    let bytes = fetch(c, auditor, &format!("/v1/ledger/entries?from={from}{to}")).await;
    let mut entries = Vec::new();
    let mut rest = &bytes[..];
    while !rest.is_empty() {
        let len = u32::from_be_bytes(rest[..4].try_into().unwrap()) as usize;
        entries.push(rest[4..4 + len].to_vec());
        rest = &rest[4 + len..];
    }
    entries
}

/// Every acknowledged event is at its seq, as the event that was acknowledged.
pub async fn all_present(c: &ApiClient, auditor: &str, acked: &[(u64, String, u64)]) {
    let entries = entries(c, auditor, 0, None).await;
    for (seq, host, agent_seq) in acked {
        let bytes = entries
            .get(*seq as usize)
            .unwrap_or_else(|| panic!("acknowledged entry {seq} is gone"));
        let e = ledger::entry::EntryRef::parse(bytes).unwrap();
        match e.event().unwrap() {
            ledger::Event::AgentEventRecorded(r) => {
                assert_eq!(
                    (&r.hostname, r.agent_seq),
                    (host, *agent_seq),
                    "entry {seq}"
                )
            }
            other => panic!("entry {seq} is {other:?}, not the acknowledged report"),
        }
    }
}
