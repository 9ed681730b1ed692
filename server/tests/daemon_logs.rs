//! `RUST_LOG_FORMAT=json`: the daemon logs one JSON object per line, for a log pipeline.

mod common;

use std::io::Read as _;
use std::process::{Command, Stdio};

use common::*;
use fleet_ledger_demo::{ApiClient, Setup};

/// SIGTERMs the daemon, checks that it exited 0, and returns what it logged.
fn stop_and_read_log(mut child: Proc) -> String {
    sigterm(child.id());
    let mut text = String::new();
    child
        .0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    assert!(child.0.wait().unwrap().success(), "{text}");
    text
}

#[tokio::test(flavor = "multi_thread")]
async fn json_log_lines_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let setup = Setup::create(dir.path(), None, 2).unwrap();
    let config = dir.path().join("config.json");
    let port = free_port();
    let mut cmd = Command::new(EXE);
    cmd.env("RUST_LOG_FORMAT", "json");
    let child = serve(cmd, &setup.db, &config, port, Stdio::piped(), "info");
    let c = ApiClient::new(&format!("http://127.0.0.1:{port}")).unwrap();
    wait_healthy(&c).await;
    let (fleet, _) = setup.signed_fleet().unwrap();
    c.ok(&setup.tokens.ci, "/v1/manifests/fleet", &fleet)
        .await
        .unwrap();
    let text = stop_and_read_log(child);
    let lines: Vec<serde_json::Value> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(lines.len() >= 2, "{text}");
    for l in &lines {
        assert!(l["timestamp"].is_string() && l["level"].is_string(), "{l}");
    }
    assert!(
        lines
            .iter()
            .any(|l| l["fields"]["message"] == "fleet-ledger listening"),
        "{text}"
    );
}

/// Issue 26, "logs people read": a log going to a file or a pipe carries no colour codes, and
/// a client's fault is not the daemon's error. While the fleet waits for its first release,
/// agents get 503 `not-ready` and strangers 401: expected answers, so nothing is logged at
/// ERROR or WARN for them.
#[tokio::test(flavor = "multi_thread")]
async fn logs_off_a_terminal_are_plain_and_client_faults_are_not_errors() {
    let dir = tempfile::tempdir().unwrap();
    let setup = Setup::create(dir.path(), None, 2).unwrap();
    let config = dir.path().join("config.json");
    let port = free_port();
    let mut cmd = Command::new(EXE);
    cmd.env_remove("NO_COLOR").env_remove("RUST_LOG_FORMAT");
    // debug: every line the daemon might write about these requests is in the pipe.
    let child = serve(cmd, &setup.db, &config, port, Stdio::piped(), "debug");
    let c = ApiClient::new(&format!("http://127.0.0.1:{port}")).unwrap();
    wait_healthy(&c).await;
    let agent = setup.tokens.agents.values().next().unwrap().clone();
    for _ in 0..5 {
        let (s, v) = c
            .post(&agent, "/v1/agent/heartbeat", &serde_json::json!({}))
            .await
            .unwrap();
        assert_eq!((s, v["error"].as_str()), (503, Some("not-ready")), "{v}");
        let (s, _) = c.get("nobody", "/v1/fleet.resolved").await.unwrap();
        assert_eq!(s, 401);
        let (s, _) = c
            .get(&setup.tokens.operator, "/v1/no-such-route")
            .await
            .unwrap();
        assert_eq!(s, 404);
    }
    let text = stop_and_read_log(child);
    assert!(text.contains("fleet-ledger listening"), "{text}");
    assert!(
        !text.contains('\x1b'),
        "colour codes in a piped log:\n{text}"
    );
    let loud: Vec<&str> = text
        .lines()
        .filter(|l| l.contains(" ERROR ") || l.contains(" WARN "))
        .collect();
    assert!(
        loud.is_empty(),
        "client faults logged loudly:\n{}",
        loud.join("\n")
    );
}
