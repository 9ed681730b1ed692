//! The `serve` binary under concurrent agent load, SIGKILLed several times and finally
//! SIGTERMed: every acknowledged event is in the ledger after each restart, and at the end
//! `verify` and `check` pass on the database.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fleet_ledger::demo::{ApiClient, Setup};
use serde_json::json;

const EXE: &str = env!("CARGO_BIN_EXE_fleet-ledger");
const ROLLOUT: &str = "stable@a1a1a1a1";
const TARGET: &str = "/nix/store/t-stable";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A daemon process that is killed if the test panics first (a failed test must not leave a
/// daemon ticking in the background).
struct Proc(Child);

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

fn spawn(db: &Path, config: &Path, port: u16) -> Proc {
    serve(Command::new(EXE), db, config, port, Stdio::inherit())
}

/// `cmd` (the binary, or a wrapper that execs it with these arguments) running `serve`.
fn serve(mut cmd: Command, db: &Path, config: &Path, port: u16, stderr: Stdio) -> Proc {
    Proc(
        cmd.args(["serve", "--db"])
            .arg(db)
            .args(["--listen", &format!("127.0.0.1:{port}"), "--config"])
            .arg(config)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap(),
    )
}

async fn wait_healthy(c: &ApiClient) {
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
fn spawn_limited(db: &Path, config: &Path, port: u16, max_bytes: u64) -> Proc {
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
    serve(python, db, config, port, Stdio::null())
}

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

    // The database may not grow by a byte: commits succeed while redb finds free pages in
    // the file, then fail.
    let size = std::fs::metadata(&setup.db).unwrap().len();
    let port = free_port();
    let mut child = spawn_limited(&setup.db, &config, port, size);
    let c = ApiClient::new(&format!("http://127.0.0.1:{port}")).unwrap();
    wait_healthy(&c).await;
    let acked: Acked = Arc::default();
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
    let (status, v) = post_b2().await.unwrap();
    assert_eq!(status, 503, "{v}");
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
    let failures: f64 = metrics
        .lines()
        .find(|l| l.starts_with("fleet_ledger_commit_failures"))
        .and_then(|l| l.split_whitespace().last()?.parse().ok())
        .unwrap_or(0.0);
    assert!(failures >= 1.0, "{metrics}");

    // Room again, in the same process: the refused manifest is not in force, so posting it
    // again records it (a writer that kept it in memory would call it a duplicate of an
    // entry that does not exist).
    let raised = Command::new("python3")
        .args([
            "-c",
            "import resource, sys\n\
             inf = resource.RLIM_INFINITY\n\
             resource.prlimit(int(sys.argv[1]), resource.RLIMIT_FSIZE, (inf, inf))",
            &child.id().to_string(),
        ])
        .status()
        .unwrap();
    assert!(raised.success());
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
    let entry = c
        .http
        .get(format!(
            "{}/v1/ledger/entries?from={manifest_seq}&to={}",
            c.base,
            manifest_seq + 1
        ))
        .bearer_auth(&auditor)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    match ledger::entry::EntryRef::parse(&entry[4..])
        .unwrap()
        .event()
        .unwrap()
    {
        ledger::Event::RolloutManifestAccepted(m) => {
            assert_eq!(m.rollout_id.to_string(), "stable@b2b2b2b2")
        }
        other => panic!("entry {manifest_seq} is {other:?}"),
    }
    stop_and_check(child, &setup);
}

/// SIGTERM (the daemon exits 0), then the chain verifies, the projections equal a fold of
/// the log, and replaying the decisions reproduces them.
fn stop_and_check(mut child: Proc, setup: &Setup) {
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

/// Runs the CLI and requires exit 0.
fn succeeds(args: &[&str]) {
    let out = Command::new(EXE).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// (ledger seq, host, agent seq) of every acknowledged event.
type Acked = Arc<Mutex<Vec<(u64, String, u64)>>>;

/// Sends probe results back to back until one is not acknowledged; returns that one's agent
/// seq and the daemon's answer (None: the connection failed).
async fn load(
    c: ApiClient,
    host: String,
    token: String,
    mut seq: u64,
    acked: Acked,
) -> (String, u64, Option<serde_json::Value>) {
    loop {
        seq += 1;
        let now = fleet_ledger::wire::ts::format(chrono::Utc::now().timestamp_micros());
        let body = json!({"hostname": host, "rollout_id": ROLLOUT, "event": {
            "kind": "ProbeResult", "seq": seq, "probe_name": "evidence-nis2", "mode": "enforce",
            "status": "pass", "observed_at": now, "sub_results": []}});
        match c.post(&token, "/v1/agent/events", &body).await {
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
async fn prepare(c: &ApiClient, setup: &Setup) {
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
            .get(op, &format!("/v1/rollouts/{ROLLOUT}/hosts"))
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
        let now = fleet_ledger::wire::ts::format(chrono::Utc::now().timestamp_micros());
        let hb =
            json!({"hostname": host, "rollout_id": ROLLOUT, "current_closure": TARGET, "at": now});
        c.ok(token, "/v1/agent/heartbeat", &hb).await.unwrap();
    }
}

async fn last_seqs(c: &ApiClient, op: &str) -> Vec<(String, u64)> {
    let (s, v) = c
        .get(op, &format!("/v1/rollouts/{ROLLOUT}/hosts"))
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

/// Every acknowledged event is at its seq, as the event that was acknowledged.
async fn all_present(c: &ApiClient, auditor: &str, acked: &[(u64, String, u64)]) {
    let bytes = c
        .http
        .get(format!("{}/v1/ledger/entries?from=0", c.base))
        .bearer_auth(auditor)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let mut entries = Vec::new();
    let mut rest = &bytes[..];
    while !rest.is_empty() {
        let len = u32::from_be_bytes(rest[..4].try_into().unwrap()) as usize;
        entries.push(rest[4..4 + len].to_vec());
        rest = &rest[4 + len..];
    }
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

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_under_load_loses_no_acknowledged_event() {
    let dir = tempfile::tempdir().unwrap();
    let setup = Setup::create(dir.path(), None, 16).unwrap();
    let config = dir.path().join("config.json");
    let (op, auditor) = (setup.tokens.operator.clone(), setup.tokens.auditor.clone());
    let acked: Acked = Arc::default();

    for cycle in 0..4 {
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
        tokio::time::sleep(Duration::from_millis(300 + 150 * cycle)).await;
        if cycle < 3 {
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
    // A read-only open cannot run redb's crash recovery: verifying a SIGKILLed file says so.
    child.kill().unwrap();
    child.wait().unwrap();
    let out = Command::new(EXE)
        .args(["verify", "--db"])
        .arg(&setup.db)
        .arg("--key")
        .arg(&setup.genesis_pub)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("crash recovery"));
    let port = free_port();
    let child = spawn(&setup.db, &config, port);
    let c = ApiClient::new(&format!("http://127.0.0.1:{port}")).unwrap();
    wait_healthy(&c).await;
    stop_and_check(child, &setup);
}
