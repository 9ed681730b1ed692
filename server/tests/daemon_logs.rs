//! `RUST_LOG_FORMAT=json`: the daemon logs one JSON object per line, for a log pipeline.

mod common;

use std::io::Read as _;
use std::process::{Command, Stdio};

use common::*;
use fleet_ledger_demo::{ApiClient, Setup};

#[tokio::test(flavor = "multi_thread")]
async fn json_log_lines_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let setup = Setup::create(dir.path(), None, 2).unwrap();
    let config = dir.path().join("config.json");
    let port = free_port();
    let mut cmd = Command::new(EXE);
    cmd.env("RUST_LOG_FORMAT", "json");
    let mut child = serve(cmd, &setup.db, &config, port, Stdio::piped(), "info");
    let c = ApiClient::new(&format!("http://127.0.0.1:{port}")).unwrap();
    wait_healthy(&c).await;
    let (fleet, _) = setup.signed_fleet().unwrap();
    c.ok(&setup.tokens.ci, "/v1/manifests/fleet", &fleet)
        .await
        .unwrap();
    sigterm(child.id());
    let mut text = String::new();
    child
        .0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    assert!(child.0.wait().unwrap().success());
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
