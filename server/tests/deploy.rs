//! Deployment: the systemd unit verifies and keeps its hardening score, the daemon tells
//! systemd it is ready (`Type=notify`), and the Nix flake, package and NixOS module parse and
//! the module evaluates to the unit docs/OPERATIONS.md describes.
//!
//! `.ci/run` installs Debian's `nix-bin` (nix-instantiate); systemd-analyze is on every Debian
//! machine. `FLEET_SKIP_NIX=1` / `FLEET_SKIP_SYSTEMD=1` skip knowingly where they are missing.

mod common;

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use fleet_ledger_demo::{ApiClient, Setup};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Whether `tool` runs here; if not, skips with `skip_var=1` or fails saying what to install.
fn have(tool: &str, package: &str, skip_var: &str) -> bool {
    if Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        return true;
    }
    let msg = format!("no {tool}: install Debian's `{package}` (.ci/run does)");
    if std::env::var(skip_var).as_deref() == Ok("1") {
        eprintln!("*** {msg}; {skip_var}=1: NOT RUN ***");
        return false;
    }
    panic!("{msg}, or set {skip_var}=1 to skip it knowingly");
}

#[test]
fn the_systemd_unit_verifies_and_is_hardened() {
    if !have("systemd-analyze", "systemd", "FLEET_SKIP_SYSTEMD") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // verify requires ExecStart's binary to exist: this build's.
    let unit = std::fs::read_to_string(root().join("deploy/fleet-ledger.service"))
        .unwrap()
        .replace("/usr/local/bin/fleet-ledger", EXE);
    let path = dir.path().join("fleet-ledger.service");
    std::fs::write(&path, unit).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "systemd-analyze verify: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(&path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let score: f64 = text
        .lines()
        .find_map(|l| l.split("fleet-ledger.service: ").nth(1))
        .and_then(|r| r.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in: {text}"));
    // 0 is a unit that can do nothing, 10 an unprotected one; a network daemon that needs
    // its state directory and sockets scores 1.2 with this unit.
    assert!(score <= 1.5, "exposure {score}: {text}");
    eprintln!("systemd-analyze security: overall exposure {score}");
}

/// Under `Type=notify` the daemon says READY=1 once it serves, and STOPPING=1 on SIGTERM.
#[tokio::test(flavor = "multi_thread")]
async fn the_daemon_notifies_systemd_when_ready_and_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let setup = Setup::create(dir.path(), None, 2).unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let port = free_port();
    let mut cmd = Command::new(EXE);
    cmd.env("NOTIFY_SOCKET", &socket_path);
    let child = serve(
        cmd,
        &setup.db,
        &dir.path().join("config.json"),
        port,
        Stdio::inherit(),
        "warn",
    );
    let mut buf = [0u8; 256];
    let n = socket.recv(&mut buf).unwrap();
    assert!(
        String::from_utf8_lossy(&buf[..n]).starts_with("READY=1"),
        "{:?}",
        String::from_utf8_lossy(&buf[..n])
    );
    // Ready means serving: the first request succeeds at once.
    let c = ApiClient::new(&format!("http://127.0.0.1:{port}")).unwrap();
    let r = c
        .http
        .get(format!("{}/healthz", c.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    sigterm(child.id());
    let n = socket.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"STOPPING=1");
    let mut child = child;
    assert!(child.wait().unwrap().success());
}

/// `files` parse (`nix-instantiate --parse`), and `eval` evaluates strictly to JSON.
fn nix_eval(files: &[&str], eval: &str) -> serde_json::Value {
    let root = root();
    for f in files {
        let out = Command::new("nix-instantiate")
            .arg("--parse")
            .arg(root.join(f))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{f}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = Command::new("nix-instantiate")
        .args(["--eval", "--strict", "--json"])
        .arg(root.join(eval))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn the_flake_and_the_nixos_module_parse_and_evaluate() {
    if !have("nix-instantiate", "nix-bin", "FLEET_SKIP_NIX") {
        return;
    }
    let root = root();
    let v = nix_eval(
        &["flake.nix", "nix/package.nix", "nix/module.nix"],
        "nix/tests/eval.nix",
    );
    assert!(
        v["assertions"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a == true),
        "{v}"
    );
    assert_eq!(v["firewall"], serde_json::json!([8443]));
    assert_eq!(v["type"], "notify");
    assert_eq!(v["environment"]["RUST_LOG_FORMAT"], "json");
    let exec = v["execStart"].as_str().unwrap();
    assert!(
        exec.contains(" serve --db '/var/lib/fleet-ledger/ledger.redb' --listen 0.0.0.0:8443 --config /nix/store/"),
        "{exec}"
    );
    // The failover options render into a `failover` section the daemon reads.
    let mut settings = v["settings"].clone();
    assert_eq!(settings["failover"]["node"], "cp-a");
    assert_eq!(
        settings["failover"]["token_file"],
        "/run/keys/failover.token"
    );
    assert_eq!(settings["failover"]["initial_writer"], "cp-a");
    settings["trust"] = serde_json::json!({"manifest_keys": []});
    settings["tokens"] = serde_json::json!([]);
    let config: fleet_ledger::config::Config = serde_json::from_value(settings).unwrap();
    let f = config.failover.unwrap();
    assert_eq!(
        (
            f.lease_ttl_secs,
            f.peers["cp-b"].as_str(),
            f.ship_timeout_ms
        ),
        (5, "http://10.0.0.12:8443", 1500)
    );
    assert!(f.witnesses.is_empty() && f.witnesses_required.is_none());
    // Every option is documented for operators.
    let ops = std::fs::read_to_string(root.join("docs/OPERATIONS.md")).unwrap();
    let failover = v["failoverOptions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| format!("failover.{}", o.as_str().unwrap()));
    for option in v["options"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o.as_str().unwrap().to_string())
        .chain(failover)
    {
        let name = format!("services.fleet-ledger.{option}");
        assert!(
            ops.contains(&name),
            "OPERATIONS.md does not document {name}"
        );
    }
}

/// The drop-in (issue 28): nixfleet's `services.nixfleet-control-plane` options, every one of
/// NIXFLEET-WIRE.md §11.1's table, map onto `services.fleet-ledger`, whose rendered settings
/// are a config the daemon reads; `trust.json` is written from `nixfleet.trust` as nixfleet's
/// module writes it (§11.2).
#[test]
fn nixfleets_module_options_map_onto_a_config_the_daemon_reads() {
    if !have("nix-instantiate", "nix-bin", "FLEET_SKIP_NIX") {
        return;
    }
    let root = root();
    let v = nix_eval(
        &["nix/nixfleet-control-plane.nix", "nix/nixfleet-trust.nix"],
        "nix/tests/nixfleet-eval.nix",
    );
    // nixfleet's options, by name (§11.1's table; `tls.*` and the source groups nest).
    let mut want = vec![
        "enable",
        "package",
        "listen",
        "tls",
        "artifactPath",
        "signaturePath",
        "trustFile",
        "observedPath",
        "freshnessWindowMinutes",
        "confirmDeadlineSecs",
        "agentCnSuffix",
        "agentCertValiditySecs",
        "strict",
        "fleetCaCert",
        "fleetCaKey",
        "tpmCaPubkeyRaw",
        "tpmCaSignWrapper",
        "allowFileCaKey",
        "auditLogPath",
        "dbPath",
        "closureUpstream",
        "rolloutsDir",
        "channelRefsSource",
        "revocationsSource",
        "bootstrapNoncesSource",
        "rolloutsSource",
        "openFirewall",
    ];
    want.sort_unstable();
    assert_eq!(v["options"], serde_json::json!(want));
    assert!(
        v["assertions"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a == true),
        "{v}"
    );
    assert_eq!(v["warnings"], serde_json::json!([]));
    let fl = &v["fleetLedger"];
    assert_eq!(
        (&fl["enable"], &fl["listen"]),
        (&serde_json::json!(true), &serde_json::json!("0.0.0.0:8080"))
    );
    // The rendered settings, with what nixfleet has no option for (the ledger's key, the
    // operators' tokens), are a config the daemon accepts (unknown fields are refused).
    let mut settings = fl["settings"].clone();
    assert_eq!(
        settings["manifest_dir"],
        "/var/lib/nixfleet-cp/fleet/releases"
    );
    assert_eq!(settings["trust"]["max_age_secs"], 10800);
    assert_eq!(
        settings["revocations"]["bearer_token_file"],
        "/run/secrets/ci-token"
    );
    assert!(
        settings.get("bootstrap_nonces").is_none(),
        "a source group with one URL is dropped, as nixfleet's module drops it"
    );
    settings["signing_key"] = serde_json::json!("/run/keys/cp.key");
    settings["tokens"] = serde_json::json!([]);
    let config: fleet_ledger::config::Config = serde_json::from_value(settings).unwrap();
    assert!(config.strict);
    let e = config.enrollment.unwrap();
    assert_eq!(
        e.tpm_ca_sign_wrapper.unwrap().to_str(),
        Some("/run/current-system/sw/bin/tpm-sign")
    );
    assert_eq!(
        config.pull.unwrap().rollout_url_template,
        "https://ci.lab.internal/releases/rollouts/{rolloutId}.json"
    );
    // As nixfleet's unit with a sign wrapper: the TPM device, the tss group.
    assert_eq!(
        v["serviceConfig"]["DeviceAllow"],
        serde_json::json!(["/dev/tpmrm0 rw"])
    );
    assert_eq!(v["serviceConfig"]["PrivateDevices"], false);
    // trust.json as §11.2's example has it: org root keys wrapped as ed25519.
    assert_eq!(
        v["trustJson"]["orgRootKey"]["current"],
        serde_json::json!({"algorithm": "ed25519", "public": "ROOT"})
    );
    assert_eq!(v["trustJson"]["schemaVersion"], 1);
    // Every option is documented for operators.
    let ops = std::fs::read_to_string(root.join("docs/OPERATIONS.md")).unwrap();
    for option in want {
        let name = format!("services.nixfleet-control-plane.{option}");
        assert!(
            ops.contains(&name),
            "OPERATIONS.md does not document {name}"
        );
    }
}

/// The Grafana dashboard queries only metrics the daemon exposes, by their exposed names:
/// fleet-ledger's own and nixfleet's (its fleet page).
#[test]
fn the_grafana_dashboard_uses_only_metrics_the_daemon_exposes() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ledger.redb");
    std::fs::write(&db, b"x").unwrap();
    let metrics = engine::metrics::Metrics::new(Some(&db));
    metrics
        .last_entry_us
        .store(1, std::sync::atomic::Ordering::Relaxed);
    metrics.reject("queue-full");
    let sample = engine::metrics::NixfleetSample {
        hosts: vec![engine::metrics::HostSample {
            host: "web-01".into(),
            channel: "stable".into(),
            converged: true,
            compliance_failures: 1,
            verified_events: 3,
        }],
        channels: vec![("stable".into(), 180)],
        fleet_signed_age_seconds: Some(60),
        gate_blocks: vec![("wave-promotion".into(), 1)],
        compliance_failures: vec![("access-control".into(), 1)],
    };
    let text = metrics.render_with(&sample);
    let exposed: std::collections::BTreeSet<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect();
    let dashboard: serde_json::Value = serde_json::from_slice(
        &std::fs::read(root().join("deploy/grafana-dashboard.json")).unwrap(),
    )
    .unwrap();
    let (mut used, mut nixfleet) = (0, 0);
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            let mut rest = expr;
            let next = |s: &str| {
                ["fleet_ledger_", "nixfleet_"]
                    .iter()
                    .filter_map(|p| s.find(p))
                    .min()
            };
            while let Some(i) = next(rest) {
                let name: String = rest[i..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                assert!(
                    exposed.contains(name.as_str()),
                    "panel {:?} queries {name}, which the daemon does not expose",
                    panel["title"]
                );
                used += 1;
                nixfleet += usize::from(name.starts_with("nixfleet_"));
                rest = &rest[i + name.len()..];
            }
        }
    }
    assert!(used >= 20, "{used}");
    assert!(nixfleet >= 5, "the fleet page: {nixfleet}");
}
