//! nixfleet's `--strict` (NIXFLEET-WIRE.md §9.3) and its closure proxy (§9.5): strict
//! refuses to start without every security setting, naming each missing one, and then
//! requires `X-Nixfleet-Protocol`; the proxy answers the binary cache's narinfo as it came,
//! 501 unset, 502 when the cache cannot be reached.

mod enrolling;
mod fleet;
mod static_server;
mod tls;

use enrolling::*;
use fleet_ledger::trust::{KeySlot, KeyText};
use fleet_ledger_demo::Setup;
use serde_json::json;
use tls::{Pki, request_raw, request_with};

/// A store path hash (32 characters of Nix's base-32).
const HASH: &str = "0c6kzph7l0dcbfmjap64f0czdafn3b7x";

#[test]
fn strict_refuses_to_start_and_names_every_missing_setting() {
    let dir = tempfile::tempdir().unwrap();
    let setup = Setup::create(dir.path(), None, 1).unwrap();
    let mut config = setup.config.clone();
    config.strict = true;
    let fleet_ca = Pki::new("fleet CA");
    let (cert, key) = fleet_ca.leaf("cp.test", &["localhost"]);
    with_enrollment(&mut config, dir.path(), &fleet_ca, (&cert, &key), None);
    config.tls.as_mut().unwrap().client_ca = None;
    let err = config.clone().settings().unwrap_err().to_string();
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(
        lines[0],
        "config: strict refuses to start: the following security settings are unset:"
    );
    for (line, setting) in lines[1..5].iter().zip([
        "tls.client_ca",
        "revocations, or manifest_dir",
        "bootstrap_nonces, or manifest_dir",
        "enrollment.tpm_ca_pubkey_raw + enrollment.tpm_ca_sign_wrapper",
    ]) {
        assert!(line.starts_with(&format!("  - {setting} ")), "{err}");
    }
    assert_eq!(
        lines[5],
        "Either set the missing settings or drop strict for development."
    );

    // The binary says so and exits 2, as nixfleet's `serve` does.
    let path = dir.path().join("strict.json");
    std::fs::write(&path, serde_json::to_string(&config).unwrap()).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_fleet-ledger"))
        .args(["serve", "--listen", "127.0.0.1:0", "--db"])
        .arg(&setup.db)
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("strict refuses to start") && stderr.contains("  - tls.client_ca ("),
        "{stderr}"
    );

    // Each setting made (the file CA key allowed), it starts.
    config.tls.as_mut().unwrap().client_ca = Some(dir.path().join("fleet-ca.pem"));
    config.manifest_dir = Some(dir.path().to_path_buf());
    config.enrollment.as_mut().unwrap().org_root_key = Some(KeySlot {
        current: Some(KeyText {
            algorithm: "ed25519".into(),
            public: b64(&[3; 32]),
        }),
        ..KeySlot::default()
    });
    assert!(config.clone().settings().is_err());
    config.enrollment.as_mut().unwrap().allow_file_ca_key = true;
    config.settings().unwrap();
}

/// Strict and running: a request without `X-Nixfleet-Protocol` is 400 on `/v1/*` and
/// `/metrics`; with it, served; agents wait for CI's revocation list and allowlist.
#[tokio::test(flavor = "multi_thread")]
async fn strict_requires_the_protocol_header_and_ci_lists() {
    let dir = tempfile::tempdir().unwrap();
    let setup = Setup::create(dir.path(), None, 1).unwrap();
    let fleet_ca = Pki::new("fleet CA");
    let ca_pem = fleet_ca.ca.pem();
    let (cert, key) = fleet_ca.leaf("cp.test", &["localhost"]);
    let mut config = setup.config.clone();
    config.strict = true;
    config.manifest_dir = Some(dir.path().join("release"));
    std::fs::create_dir_all(dir.path().join("release")).unwrap();
    with_enrollment(
        &mut config,
        dir.path(),
        &fleet_ca,
        (&cert, &key),
        Some(KeySlot {
            current: Some(KeyText {
                algorithm: "ed25519".into(),
                public: b64(&[3; 32]),
            }),
            ..KeySlot::default()
        }),
    );
    config.enrollment.as_mut().unwrap().allow_file_ca_key = true;
    let (daemon, _) = setup.start_with(config).await.unwrap();
    let op = setup.tokens.operator.clone();
    let proto = [("x-nixfleet-protocol", "1")];
    for path in ["/v1/hosts", "/metrics"] {
        let (s, v) = request_with(
            daemon.addr,
            &ca_pem,
            None,
            "GET",
            path,
            Some(&op),
            &[],
            None,
        )
        .await
        .unwrap();
        assert_eq!(
            (s, v["error"].as_str()),
            (400, Some("bad-protocol-header")),
            "{path}: {v}"
        );
        let (s, _) = request_raw(
            daemon.addr,
            &ca_pem,
            None,
            "GET",
            path,
            Some(&op),
            &proto,
            None,
        )
        .await
        .unwrap();
        assert_eq!(s, 200, "{path}");
    }
    // /healthz is not versioned.
    let (s, _) = request_raw(
        daemon.addr,
        &ca_pem,
        None,
        "GET",
        "/healthz",
        None,
        &[],
        None,
    )
    .await
    .unwrap();
    assert_eq!(s, 200);

    // A verified fleet is not enough for agents: strict waits for CI's lists too.
    let (signed, _) = setup.signed_fleet().unwrap();
    let (s, v) = request_with(
        daemon.addr,
        &ca_pem,
        None,
        "POST",
        "/v1/manifests/fleet",
        Some(&setup.tokens.ci),
        &proto,
        Some(signed),
    )
    .await
    .unwrap();
    assert_eq!(s, 200, "{v}");
    let host = setup.tokens.agents.keys().next().unwrap().clone();
    let agent = setup.tokens.agents[&host].clone();
    let (s, v) = request_with(
        daemon.addr,
        &ca_pem,
        None,
        "POST",
        "/v1/agent/heartbeat",
        Some(&agent),
        &proto,
        Some(json!({"hostname": host, "at": now_plus(0)})),
    )
    .await
    .unwrap();
    assert_eq!(
        (s, v["reason"].as_str()),
        (
            503,
            Some("control plane not ready: awaiting CI's first signed revocations.json")
        )
    );
    daemon.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_closure_proxy_answers_the_caches_narinfo_as_it_came() {
    let dir = tempfile::tempdir().unwrap();
    let setup = Setup::create(dir.path(), None, 1).unwrap();
    let cache = dir.path().join("cache");
    std::fs::create_dir_all(&cache).unwrap();
    let narinfo = format!(
        "StorePath: /nix/store/{HASH}-hello-2.12\nURL: nar/1w1fff338fvdw53sqgamddn1b2xgds473pv6y13gizdbqjv4i5p3.nar.xz\nCompression: xz\nNarHash: sha256:1w1fff338fvdw53sqgamddn1b2xgds473pv6y13gizdbqjv4i5p3\nNarSize: 226560\n"
    );
    std::fs::write(cache.join(format!("{HASH}.narinfo")), &narinfo).unwrap();
    let web = static_server::StaticServer::start(&cache);

    // Unset: nixfleet's 501, byte for byte.
    let (daemon, c) = setup.start().await.unwrap();
    let (signed, _) = setup.signed_fleet().unwrap();
    c.ok(&setup.tokens.ci, "/v1/manifests/fleet", &signed)
        .await
        .unwrap();
    let agent = setup.tokens.agents.values().next().unwrap().clone();
    let get = |c: fleet_ledger_demo::ApiClient, token: Option<String>, path: String| async move {
        let mut req = c.http.get(format!("{}{path}", c.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let r = req.send().await.unwrap();
        let ct = r
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string());
        (r.status().as_u16(), ct, r.text().await.unwrap())
    };
    let path = format!("/v1/agent/closure/{HASH}");
    assert_eq!(
        get(c.clone(), Some(agent.clone()), path.clone()).await,
        (
            501,
            Some("application/json".into()),
            format!(
                r#"{{"closure":"{HASH}","error":"closure proxy not configured","tracking":"set services.nixfleet-control-plane.closureUpstream"}}"#
            )
        )
    );
    daemon.shutdown().await.unwrap();

    // Set: the cache's answer, status and body as they came.
    let mut config = setup.config.clone();
    config.closure_upstream = Some(format!("http://127.0.0.1:{}/", web.port));
    let (daemon, c) = setup.start_with(config.clone()).await.unwrap();
    assert_eq!(
        get(c.clone(), Some(agent.clone()), path.clone()).await,
        (200, Some("text/x-nix-narinfo".into()), narinfo.clone())
    );
    let missing = "1c6kzph7l0dcbfmjap64f0czdafn3b7x";
    let (s, ct, _) = get(
        c.clone(),
        Some(agent.clone()),
        format!("/v1/agent/closure/{missing}"),
    )
    .await;
    assert_eq!((s, ct.as_deref()), (404, Some("text/x-nix-narinfo")));
    // Not a store path hash: refused before anything goes upstream.
    let (s, _, body) = get(
        c.clone(),
        Some(agent.clone()),
        "/v1/agent/closure/..%2F..%2Fetc".into(),
    )
    .await;
    assert_eq!(s, 400, "{body}");
    // Agents are authenticated.
    assert_eq!(get(c.clone(), None, path.clone()).await.0, 401);
    daemon.shutdown().await.unwrap();

    // A cache that cannot be reached: 502, saying why.
    drop(web);
    let (daemon, c) = setup.start_with(config).await.unwrap();
    let (s, ct, body) = get(c.clone(), Some(agent), path).await;
    assert_eq!(s, 502, "{body}");
    assert_eq!(ct, None);
    assert!(body.starts_with("upstream error: "), "{body}");
    daemon.shutdown().await.unwrap();
}
