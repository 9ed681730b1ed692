//! Witnessing against a witness this project did not write the checks of:
//! `fixtures/go/testwitness`, a C2SP tlog-witness on Go's `sumdb/note` (the log's signature)
//! and `sumdb/tlog` (the RFC 6962 consistency proof). The daemon's checkpoints are cosigned,
//! served and published with the cosignatures, and `verify --tiles --witnesses-required`
//! accepts them; a witness that does not trust the log refuses (403) and is counted; after a
//! restart the witness's 409 tells the daemon where to continue from.
//!
//! Needs Go (`.ci/run` installs it); `FLEET_SKIP_GO=1` skips knowingly.

mod common;
mod go;

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use fleet_ledger::witnessing::{WitnessEndpoint, WitnessingConfig};
use fleet_ledger_demo::Setup;

/// A running test witness: its URL, its verifier key, and where it logs each request.
struct GoWitness {
    child: Child,
    url: String,
    vkey: String,
    log: std::path::PathBuf,
}

impl Drop for GoWitness {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl GoWitness {
    fn start(exe: &Path, dir: &Path, name: &str, seed: u8, log_keys: &[String]) -> GoWitness {
        let log = dir.join(format!("{}.log", name.replace('/', "_")));
        let mut child = Command::new(exe)
            .args(["127.0.0.1:0", name, &hex(&[seed; 32])])
            .args(log_keys)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        let addr = line
            .trim()
            .strip_prefix("listening ")
            .unwrap_or_else(|| panic!("{line}"))
            .to_string();
        line.clear();
        out.read_line(&mut line).unwrap();
        let vkey = line.trim().strip_prefix("vkey ").unwrap().to_string();
        GoWitness {
            child,
            url: format!("http://{addr}"),
            vkey,
            log,
        }
    }

    fn requests(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap()
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

async fn witnessed(c: &fleet_ledger_demo::ApiClient, token: &str) -> Option<(u64, String)> {
    let r = c
        .http
        .get(format!("{}/v1/ledger/checkpoint/witnessed", c.base))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    if r.status() == 404 {
        return None;
    }
    assert_eq!(r.status(), 200);
    let note = r.text().await.unwrap();
    let size = ledger::checkpoint::parse_note(note.as_bytes())
        .unwrap()
        .checkpoint
        .size;
    Some((size, note))
}

/// Waits until the witnessed checkpoint is the committed head; returns its note.
async fn witnessed_head(
    c: &fleet_ledger_demo::ApiClient,
    token: &str,
    daemon: &fleet_ledger::daemon::Daemon,
) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let head = *daemon.shared.committed.borrow();
        let w = witnessed(c, token).await;
        if let Some((size, note)) = &w
            && *size == head
        {
            return note.clone();
        }
        assert!(
            Instant::now() < deadline,
            "witnessed {:?}, committed {head}",
            w.map(|w| w.0)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn checkpoints_are_cosigned_by_a_standard_witness_served_and_published() {
    let dir = tempfile::tempdir().unwrap();
    let Some(exe) = go::build("testwitness", dir.path()) else {
        return;
    };
    let setup = Setup::create(dir.path(), None, 3).unwrap();
    let log_key = std::fs::read_to_string(&setup.genesis_pub)
        .unwrap()
        .trim()
        .to_string();
    let good = GoWitness::start(&exe, dir.path(), "witness.test/w1", 1, &[log_key]);
    // Trusts another log's key: refuses this log's checkpoints with 403.
    let other_log = fixtures::genesis_signer().public().to_text();
    let wrong = GoWitness::start(&exe, dir.path(), "witness.test/w2", 2, &[other_log]);
    let tiles = dir.path().join("tiles");
    let mut config = setup.config.clone();
    config.witnessing = Some(WitnessingConfig {
        witnesses: vec![
            WitnessEndpoint {
                url: good.url.clone(),
                key: good.vkey.clone(),
            },
            WitnessEndpoint {
                url: wrong.url.clone(),
                key: wrong.vkey.clone(),
            },
        ],
        interval_secs: 1,
        timeout_secs: 5,
    });
    config.publish = Some(fleet_ledger::publish::PublishConfig {
        to: fleet_ledger::publish::Destination::Dir(tiles.clone()),
        interval_secs: 1,
        request_timeout_secs: 30,
    });
    let (daemon, c) = setup.start_with(config.clone()).await.unwrap();
    let auditor = setup.tokens.auditor.clone();
    let (fleet, _) = setup.signed_fleet().unwrap();
    c.ok(&setup.tokens.ci, "/v1/manifests/fleet", &fleet)
        .await
        .unwrap();

    let note = witnessed_head(&c, &auditor, &daemon).await;
    let parsed = ledger::checkpoint::parse_note(note.as_bytes()).unwrap();
    let w1 = ledger::witness::WitnessKey::from_text(&good.vkey).unwrap();
    let w2 = ledger::witness::WitnessKey::from_text(&wrong.vkey).unwrap();
    let found = ledger::witness::require_cosignatures(&parsed, &[w1, w2.clone()], 1).unwrap();
    assert_eq!(found.len(), 1, "only w1 cosigned: {note}");
    assert_eq!(found[0].witness, "witness.test/w1");
    assert!(
        wrong.requests().contains("status 403"),
        "{}",
        wrong.requests()
    );
    assert!(daemon.shared.metrics.witness_failures.get() > 0);
    let metrics = daemon.shared.metrics.render();
    assert!(
        metrics.contains("fleet_ledger_witnessed_entries ")
            && metrics.contains("fleet_ledger_witness_lag_entries "),
        "{metrics}"
    );
    // The plain checkpoint route carries the cosignature too, the head being witnessed.
    let plain = fetch(&c, &auditor, "/v1/ledger/checkpoint").await;
    assert_eq!(String::from_utf8_lossy(&plain), note);

    // The published checkpoint is the witnessed one; an auditor requiring the witness
    // accepts the tiles, one requiring both witnesses does not.
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::fs::read_to_string(tiles.join("checkpoint"))
        .ok()
        .as_deref()
        != Some(&note)
    {
        assert!(
            Instant::now() < deadline,
            "the witnessed checkpoint was not published"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let w1_file = dir.path().join("w1.vkey");
    let w2_file = dir.path().join("w2.vkey");
    std::fs::write(&w1_file, &good.vkey).unwrap();
    std::fs::write(&w2_file, &wrong.vkey).unwrap();
    let genesis = setup.genesis_pub.to_str().unwrap();
    let t = tiles.to_str().unwrap();
    let (w1f, w2f) = (w1_file.to_str().unwrap(), w2_file.to_str().unwrap());
    let out = succeeds(&[
        "verify",
        "--tiles",
        t,
        "--key",
        genesis,
        "--witness",
        w1f,
        "--witnesses-required",
        "1",
    ]);
    assert!(out.starts_with("OK: "), "{out}");
    let both = Command::new(EXE)
        .args(["verify", "--tiles", t, "--key", genesis])
        .args([
            "--witness",
            w1f,
            "--witness",
            w2f,
            "--witnesses-required",
            "2",
        ])
        .output()
        .unwrap();
    assert_eq!(both.status.code(), Some(1), "{both:?}");

    // A restart: the witnessed checkpoint is served at once (kept beside the database); the
    // daemon does not know what the witness holds, asks from 0, and the witness's 409 names
    // the size to prove consistency from.
    daemon.shutdown().await.unwrap();
    let (daemon, c) = setup.start_with(config).await.unwrap();
    let (size_before, _) = witnessed(&c, &auditor)
        .await
        .expect("kept across the restart");
    setup
        .post_rollout(&c, "canary", "c0ffee01", "/nix/store/c-canary")
        .await
        .unwrap();
    let note = witnessed_head(&c, &auditor, &daemon).await;
    let parsed = ledger::checkpoint::parse_note(note.as_bytes()).unwrap();
    assert!(parsed.checkpoint.size > size_before);
    let log = good.requests();
    // The first round after the restart may already see the rollout's commit (it races the
    // post): what matters is that it asked from 0 and was told the witnessed size, then
    // proved consistency from there.
    let asked_from_zero = log.lines().any(|l| {
        l.starts_with("status 409 old 0 size ") && l.ends_with(&format!(": cosigned {size_before}"))
    });
    // The rollout may commit in more than one batch (its manifest, then the planner's
    // tick), each witnessed in its own round: the proof after the restart starts from the
    // witnessed size, and the rounds chain up to the final size.
    let chained = log.contains(&format!("status 200 old {size_before} size "))
        && log.lines().any(|l| {
            l.starts_with("status 200 old ")
                && l.ends_with(&format!(" size {}", parsed.checkpoint.size))
        });
    assert!(asked_from_zero && chained, "{log}");
    daemon.shutdown().await.unwrap();
}

/// A verifying follower with a witness policy (issue 29) follows only up to the writer's
/// latest checkpoint its trusted witness cosigned: with the witness gone, the writer's head
/// moves on and the follower stays at the witnessed size; it serves that cosigned
/// checkpoint. A follower whose policy names a witness that never cosigned this log never
/// moves.
#[tokio::test(flavor = "multi_thread")]
async fn a_follower_with_a_witness_policy_follows_only_witnessed_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let Some(exe) = go::build("testwitness", dir.path()) else {
        return;
    };
    let setup = Setup::create(dir.path(), None, 3).unwrap();
    let log_key = std::fs::read_to_string(&setup.genesis_pub)
        .unwrap()
        .trim()
        .to_string();
    let w1 = GoWitness::start(&exe, dir.path(), "witness.test/w1", 1, &[log_key]);
    let stranger = ledger::witness::Witness::from_seed("witness.test/w9", &[9; 32]).unwrap();
    // The followers start from the log as it was created (they copy the writer batch by batch).
    let stranger_vkey = {
        let k = stranger.key();
        format!(
            "{}+{:08x}+{}",
            k.name(),
            k.id(),
            base64_key(&k.public_key())
        )
    };
    let followers: Vec<(std::path::PathBuf, std::path::PathBuf, u16)> = (0..2)
        .map(|i| {
            let fdir = dir.path().join(format!("follower-{i}"));
            std::fs::create_dir_all(&fdir).unwrap();
            let db = fdir.join("ledger.redb");
            std::fs::copy(&setup.db, &db).unwrap();
            let token = fdir.join("peer.token");
            std::fs::write(&token, &setup.tokens.auditor).unwrap();
            (db, token, free_port())
        })
        .collect();
    let mut config = setup.config.clone();
    config.witnessing = Some(WitnessingConfig {
        witnesses: vec![WitnessEndpoint {
            url: w1.url.clone(),
            key: w1.vkey.clone(),
        }],
        interval_secs: 1,
        timeout_secs: 5,
    });
    let (daemon, c) = setup.start_with(config).await.unwrap();
    let auditor = setup.tokens.auditor.clone();
    let mut procs = Vec::new();
    for (i, (db, token, port)) in followers.iter().enumerate() {
        let mut fc = serde_json::to_value(&setup.config).unwrap();
        fc.as_object_mut().unwrap().remove("signing_key");
        // The follower reads the writer with the auditor's token as its peer token, which
        // also makes it an auditor here: not listed twice.
        fc["tokens"]
            .as_array_mut()
            .unwrap()
            .retain(|t| t["role"] != "auditor");
        let vkey = if i == 0 {
            w1.vkey.clone()
        } else {
            stranger_vkey.clone()
        };
        fc["failover"] = serde_json::json!({
            "node": format!("r{i}"),
            "role": "follower",
            "peers": {"a": c.base.clone()},
            "token_file": token,
            "witnesses": [vkey],
        });
        let path = db.with_file_name("config.json");
        std::fs::write(&path, serde_json::to_string_pretty(&fc).unwrap()).unwrap();
        procs.push(spawn(db, &path, *port));
    }
    let clients: Vec<_> = followers
        .iter()
        .map(|(_, _, port)| {
            fleet_ledger_demo::ApiClient::new(&format!("http://127.0.0.1:{port}")).unwrap()
        })
        .collect();
    for f in &clients {
        wait_healthy(f).await;
    }
    let start = ledger::store::ReadOnlyStore::open(&followers[0].0)
        .map(|s| s.snapshot().unwrap().size())
        .unwrap_or(1);
    let (fleet, _) = setup.signed_fleet().unwrap();
    c.ok(&setup.tokens.ci, "/v1/manifests/fleet", &fleet)
        .await
        .unwrap();
    let note = witnessed_head(&c, &auditor, &daemon).await;
    let witnessed_size = ledger::checkpoint::parse_note(note.as_bytes())
        .unwrap()
        .checkpoint
        .size;

    // The trusting follower reaches the witnessed checkpoint and serves it, cosignature too.
    let served_size = |f: fleet_ledger_demo::ApiClient| {
        let auditor = auditor.clone();
        async move {
            let r = f
                .http
                .get(format!("{}/v1/ledger/checkpoint", f.base))
                .bearer_auth(&auditor)
                .send()
                .await
                .unwrap();
            let size: u64 = r.headers()["x-ledger-size"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            (size, r.text().await.unwrap())
        }
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (size, text) = served_size(clients[0].clone()).await;
        if size == witnessed_size {
            assert_eq!(text, note, "the follower serves the cosigned checkpoint");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the follower never reached {witnessed_size} (at {size})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let w = fetch(&clients[0], &auditor, "/v1/ledger/checkpoint/witnessed").await;
    assert_eq!(String::from_utf8_lossy(&w), note);

    // The witness goes away; the writer moves on; the follower stays at what was witnessed.
    drop(w1);
    setup
        .post_rollout(&c, "stable", "b2b2b2b2", &"b".repeat(32))
        .await
        .unwrap();
    let head = *daemon.shared.committed.borrow();
    assert!(head > witnessed_size, "the writer moved on");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(served_size(clients[0].clone()).await.0, witnessed_size);
    // The one trusting a witness that never cosigned this log never moved.
    assert_eq!(served_size(clients[1].clone()).await.0, start);
    drop(procs);
}

fn base64_key(k: &[u8; 32]) -> String {
    use base64::Engine as _;
    let mut raw = vec![0x04];
    raw.extend_from_slice(k);
    base64::engine::general_purpose::STANDARD.encode(raw)
}
