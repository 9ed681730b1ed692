//! Publication to S3, against a real S3 server on loopback: `s3s-fs` (crates.io; `.ci/run`
//! installs it into `target/tools`), which stores each object as a file and enforces the
//! conditional puts (`If-None-Match: *`, `If-Match`) the publisher relies on.
//!
//! `FLEET_S3S_FS` names the server binary; `FLEET_SKIP_S3=1` skips these tests where it
//! cannot be installed.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use fleet_ledger::publish::{S3Sink, Sink};

const ACCESS: &str = "fleet-test-access";
const SECRET: &str = "fleet-test-secret-key";
const BUCKET: &str = "fleet-tiles";

/// An `s3s-fs` server on a loopback port, killed when dropped.
struct S3Server {
    child: Child,
    port: u16,
    root: PathBuf,
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn s3s_fs() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("FLEET_S3S_FS") {
        return Some(PathBuf::from(p));
    }
    let tools = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/tools/bin/s3s-fs");
    if tools.is_file() {
        return Some(tools);
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("s3s-fs"))
            .find(|p| p.is_file())
    })
}

/// Starts the server with one bucket, or `None` when `FLEET_SKIP_S3=1` and it is missing.
fn s3_server(dir: &Path) -> Option<S3Server> {
    let Some(exe) = s3s_fs() else {
        if std::env::var("FLEET_SKIP_S3").as_deref() == Ok("1") {
            eprintln!("FLEET_SKIP_S3=1 and no s3s-fs: skipped");
            return None;
        }
        panic!(
            "no s3s-fs: install it with `cargo install s3s-fs@0.14.1 --locked --features binary \
             --root target/tools` (.ci/run does), or set FLEET_SKIP_S3=1"
        );
    };
    let root = dir.join("s3");
    std::fs::create_dir_all(root.join(BUCKET)).unwrap();
    let port = free_port();
    let child = Command::new(exe)
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["--access-key", ACCESS, "--secret-key", SECRET])
        .arg(&root)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start s3s-fs");
    let server = S3Server { child, port, root };
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "s3s-fs never listened");
        std::thread::sleep(Duration::from_millis(25));
    }
    Some(server)
}

impl S3Server {
    /// The `AWS_*` environment the publisher reads (as the AWS tools do).
    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", ACCESS.into()),
            ("AWS_SECRET_ACCESS_KEY", SECRET.into()),
            ("AWS_REGION", "us-east-1".into()),
            (
                "AWS_ENDPOINT_URL",
                format!("http://127.0.0.1:{}", self.port),
            ),
            ("AWS_ALLOW_HTTP", "true".into()),
        ]
    }

    /// The CLI with that environment.
    fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(EXE)
            .args(args)
            .envs(self.env())
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// A sink on the bucket under `prefix`, built in the test (no environment).
    fn sink(&self, prefix: &str, rt: &tokio::runtime::Runtime) -> S3Sink {
        let builder = object_store::aws::AmazonS3Builder::new()
            .with_bucket_name(BUCKET)
            .with_region("us-east-1")
            .with_endpoint(format!("http://127.0.0.1:{}", self.port))
            .with_allow_http(true)
            .with_access_key_id(ACCESS)
            .with_secret_access_key(SECRET);
        S3Sink::with(
            builder,
            prefix,
            rt.handle().clone(),
            fleet_ledger::publish::DEFAULT_REQUEST_TIMEOUT,
        )
        .unwrap()
    }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Every file under `dir`, as paths relative to it.
fn files(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(dir).unwrap().to_str().unwrap().to_string());
            }
        }
    }
    out.sort();
    out
}

/// `publish --to s3://…` writes the very files `publish --to DIR` writes; `verify --tiles
/// s3://…` checks them; a second publication adds only what is new, and the monitor's
/// incremental run follows it.
#[test]
fn publish_to_s3_writes_what_a_directory_gets_and_verifies() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(s3) = s3_server(tmp.path()) else {
        return;
    };
    let db = tmp.path().join("v2.redb");
    drop(fixtures::build_sample(&db, 2));
    let genesis = tmp.path().join("genesis.pub");
    std::fs::write(&genesis, fixtures::genesis_signer().public().to_text()).unwrap();
    let url = format!("s3://{BUCKET}/logs/prod");

    let first = s3.ok(&["publish", "--db", s(&db), "--to", &url]);
    assert!(first.starts_with("published size 300 (from 0)"), "{first}");
    let dir = tmp.path().join("tiles");
    succeeds(&["publish", "--db", s(&db), "--to", s(&dir)]);
    // s3s-fs keeps each object as a file at BUCKET/KEY: byte for byte what the directory got.
    let in_bucket = s3.root.join(BUCKET).join("logs/prod");
    let published = files(&dir);
    assert!(published.len() >= 6, "{published:?}");
    for f in &published {
        assert_eq!(
            std::fs::read(in_bucket.join(f)).unwrap(),
            std::fs::read(dir.join(f)).unwrap(),
            "{f}"
        );
    }
    let again = s3.ok(&["publish", "--db", s(&db), "--to", &url]);
    assert!(again.contains("already published at size 300"), "{again}");

    let state = tmp.path().join("monitor.json");
    let verify = || {
        s3.ok(&[
            "verify",
            "--tiles",
            &url,
            "--key",
            s(&genesis),
            "--since",
            s(&state),
        ])
    };
    let v = verify();
    assert!(v.starts_with("OK: 300 entries and every tile"), "{v}");

    // The log grows; the next publication starts where the bucket's checkpoint says, and the
    // monitor checks only the new part.
    {
        use ledger::event::{Annotation, Event};
        use ledger::store::{NewEntry, Store};
        let mut store = Store::open(&db, fixtures::rotated_signer()).unwrap();
        let t = fixtures::SAMPLE_T0_US + 10_000_000_000;
        let batch: Vec<NewEntry> = (0..300)
            .map(|i| NewEntry {
                recorded_at_us: t + i,
                event: Event::Annotation(Annotation {
                    author: "s3-test".into(),
                    text: format!("entry {i}"),
                }),
            })
            .collect();
        store.append(&batch).unwrap();
    }
    let grown = s3.ok(&["publish", "--db", s(&db), "--to", &url]);
    assert!(
        grown.starts_with("published size 600 (from 300)"),
        "{grown}"
    );
    let v = verify();
    assert!(v.starts_with("OK: 300 new entries since size 300"), "{v}");
}

/// The server enforces what the publisher asks: a tile is created only if absent (the one
/// there is kept), and the checkpoint is replaced only if it is still the one read, so a
/// publisher that lost a race fails instead of moving the checkpoint back.
#[test]
fn conditional_puts_keep_tiles_and_refuse_a_stale_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(s3) = s3_server(tmp.path()) else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let a = s3.sink("race", &rt);
    let b = s3.sink("race", &rt);

    a.put("tile/0/000", b"first", true).unwrap();
    b.put("tile/0/000", b"second", true).unwrap();
    assert_eq!(a.get("tile/0/000").unwrap().unwrap(), b"first");

    assert_eq!(a.get("checkpoint").unwrap(), None);
    a.put("checkpoint", b"size 1", false).unwrap();
    // b read nothing and creates: the object exists, so the server refuses.
    let err = b.put("checkpoint", b"size 0", false).unwrap_err();
    assert!(
        err.to_string().contains("changed since it was read"),
        "{err}"
    );
    // Both read size 1; b replaces it; a, behind, is refused.
    assert_eq!(a.get("checkpoint").unwrap().unwrap(), b"size 1");
    assert_eq!(b.get("checkpoint").unwrap().unwrap(), b"size 1");
    b.put("checkpoint", b"size 2", false).unwrap();
    let err = a.put("checkpoint", b"size 1b", false).unwrap_err();
    assert!(
        err.to_string().contains("changed since it was read"),
        "{err}"
    );
    assert_eq!(a.get("checkpoint").unwrap().unwrap(), b"size 2");
    // Having read the current one, it may replace it.
    a.put("checkpoint", b"size 3", false).unwrap();
    assert_eq!(b.get("checkpoint").unwrap().unwrap(), b"size 3");
}

/// The daemon publishes to S3 as it commits (config `publish.to = "s3://…"`, credentials from
/// its environment); an auditor verifies the bucket alone.
#[tokio::test(flavor = "multi_thread")]
async fn the_daemon_publishes_to_s3() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(s3) = s3_server(tmp.path()) else {
        return;
    };
    let setup = fleet_ledger_demo::Setup::create(tmp.path(), None, 3).unwrap();
    let config_path = tmp.path().join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&config_path).unwrap()).unwrap();
    let url = format!("s3://{BUCKET}/daemon");
    config["publish"] = serde_json::json!({ "to": url, "interval_secs": 1 });
    std::fs::write(&config_path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
    let port = free_port();
    let mut cmd = Command::new(EXE);
    cmd.envs(s3.env());
    let child = serve(cmd, &setup.db, &config_path, port, Stdio::inherit(), "warn");
    let c = fleet_ledger_demo::ApiClient::new(&format!("http://127.0.0.1:{port}")).unwrap();
    wait_healthy(&c).await;
    let (fleet, _) = setup.signed_fleet().unwrap();
    c.ok(&setup.tokens.ci, "/v1/manifests/fleet", &fleet)
        .await
        .unwrap();
    let head = fetch(&c, &setup.tokens.auditor, "/v1/ledger/checkpoint").await;
    let committed = ledger::checkpoint::parse_note(&head)
        .unwrap()
        .checkpoint
        .size;
    let checkpoint = s3.root.join(BUCKET).join("daemon/checkpoint");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let size = std::fs::read(&checkpoint)
            .ok()
            .and_then(|n| ledger::checkpoint::parse_note(&n).ok())
            .map(|n| n.checkpoint.size);
        if size >= Some(committed) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "published {size:?}, committed {committed}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        metric(
            &c,
            &setup.tokens.auditor,
            "fleet_ledger_publication_failures_total"
        )
        .await,
        0.0
    );
    stop_and_check(child, &setup);
    let v = s3.ok(&["verify", "--tiles", &url, "--key", s(&setup.genesis_pub)]);
    assert!(v.starts_with("OK: "), "{v}");
}

/// A destination that cannot be an S3 bucket is named before anything is written.
#[test]
fn a_bad_destination_is_refused_with_a_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("v2.redb");
    drop(fixtures::build_sample(&db, 2));
    for (to, says) in [
        ("s3://No_Such/x", "bucket must be 3 to 63"),
        ("s3://fleet-tiles/a//b", "empty, '.' or '..' segment"),
        ("gs://bucket/x", "no other scheme"),
    ] {
        let out = Command::new(EXE)
            .args(["publish", "--db", s(&db), "--to", to])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{to}: {out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{to}: {err}");
    }
}
