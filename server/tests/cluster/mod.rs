//! A failover cluster on loopback, shared by the real-process failover test and the
//! `failover` bench (which includes this file): node configs, the balancer (Debian's HAProxy
//! running `deploy/haproxy.cfg`), who leads, the register's history as etcd kept it, and the
//! signature oracle's files.
#![allow(dead_code, unreachable_pub)] // shared by binaries that each use a part

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use engine::register::Head;
use engine::run_check::SignedHead;
use fleet_ledger_demo::Setup;

/// The peer secret every node shares.
pub const PEER_TOKEN: &str = "failover-test-peer-secret-0123456789abcdef";

/// Node `name`'s config: the setup's, with a failover section naming the other nodes.
pub fn configure(
    setup: &Setup,
    dir: &Path,
    name: &str,
    nodes: &[(&str, u16)],
    etcd: &[String],
    lease_secs: u64,
) {
    let token = dir.join("peer.token");
    std::fs::write(&token, PEER_TOKEN).unwrap();
    let mut config = serde_json::to_value(&setup.config).unwrap();
    let peers: serde_json::Map<String, serde_json::Value> = nodes
        .iter()
        .filter(|(n, _)| *n != name)
        .map(|(n, port)| (n.to_string(), format!("http://127.0.0.1:{port}").into()))
        .collect();
    config["failover"] = serde_json::json!({
        "node": name,
        "etcd": etcd,
        "prefix": "/test-log",
        "lease_ttl_secs": lease_secs,
        "peers": peers,
        "token_file": token,
        "initial_writer": "a",
        "ship_timeout_ms": 1000,
    });
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_string_pretty(&config).unwrap(),
    )
    .unwrap();
}

/// A verifying read follower's config: no signing key, role `follower`, reading from the
/// writer-capable nodes.
pub fn configure_follower(setup: &Setup, dir: &Path, nodes: &[(&str, u16)]) {
    let token = dir.join("peer.token");
    std::fs::write(&token, PEER_TOKEN).unwrap();
    let mut config = serde_json::to_value(&setup.config).unwrap();
    config.as_object_mut().unwrap().remove("signing_key");
    let peers: serde_json::Map<String, serde_json::Value> = nodes
        .iter()
        .map(|(n, port)| (n.to_string(), format!("http://127.0.0.1:{port}").into()))
        .collect();
    config["failover"] = serde_json::json!({
        "node": "r",
        "role": "follower",
        "peers": peers,
        "token_file": token,
    });
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_string_pretty(&config).unwrap(),
    )
    .unwrap();
}

/// Which node answers `/healthz/leader` 200 (what the balancer routes agents to).
pub async fn leader(nodes: &[(&'static str, u16)]) -> Option<(&'static str, u16)> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    for (name, port) in nodes {
        if let Ok(r) = http
            .get(format!("http://127.0.0.1:{port}/healthz/leader"))
            .send()
            .await
            && r.status() == 200
        {
            return Some((name, *port));
        }
    }
    None
}

pub async fn wait_leader(nodes: &[(&'static str, u16)], within: Duration) -> (&'static str, u16) {
    let deadline = Instant::now() + within;
    loop {
        if let Some(l) = leader(nodes).await {
            return l;
        }
        assert!(Instant::now() < deadline, "no node became the leader");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The register's whole history, as etcd kept it (every revision of its key).
pub fn register_history(endpoints: &[String]) -> Vec<Head> {
    let out = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args([
            "--endpoints",
            &endpoints.join(","),
            "watch",
            "--rev",
            "1",
            "--prefix",
            "/test-log/register",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = out.id();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(3));
        let _ = Command::new("kill").arg(pid.to_string()).status();
    });
    let text = String::from_utf8(out.wait_with_output().unwrap().stdout).unwrap();
    text.lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| Head::from_bytes(l.as_bytes()).unwrap())
        .collect()
}

/// What a node's signature oracle file holds (`FLEET_LEDGER_SIGNATURE_ORACLE`): every
/// checkpoint it signed.
pub fn signed_heads(oracle: &Path, node: &str) -> Vec<SignedHead> {
    std::fs::read_to_string(oracle)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (size, root) = l.split_once(' ')?;
            Some(SignedHead {
                node: node.into(),
                size: size.parse().ok()?,
                root: ledger::hash::Hash::from_base64(root)?.0,
            })
        })
        .collect()
}

/// Whether HAProxy can be run: otherwise the test fails with a message, unless
/// `FLEET_SKIP_HAPROXY=1` says to skip it knowingly.
pub fn have_haproxy() -> bool {
    if Command::new("haproxy")
        .arg("-v")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        return true;
    }
    let msg = "no haproxy: install Debian's `haproxy` (.ci/run does)";
    if std::env::var("FLEET_SKIP_HAPROXY").as_deref() == Ok("1") {
        eprintln!("*** {msg}; FLEET_SKIP_HAPROXY=1: NOT RUN ***");
        return false;
    }
    panic!("{msg}, or set FLEET_SKIP_HAPROXY=1 to skip it knowingly");
}

/// HAProxy running `deploy/haproxy.cfg` as shipped, in front of nodes a and b.
pub fn haproxy(bind: u16, a: u16, b: u16) -> std::process::Child {
    let cfg = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/haproxy.cfg");
    Command::new("haproxy")
        .arg("-db")
        .arg("-f")
        .arg(cfg)
        .env("FLEET_LEDGER_BIND", format!("127.0.0.1:{bind}"))
        .env("FLEET_LEDGER_NODE_A", format!("127.0.0.1:{a}"))
        .env("FLEET_LEDGER_NODE_B", format!("127.0.0.1:{b}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// A node process on loopback: its directory (config, database, log, signature oracle), its
/// port, and the process while it runs (killed when dropped: a failed run leaves nothing).
pub struct Node {
    /// Its failover name.
    pub name: &'static str,
    /// `config.json`, `ledger.redb`, `serve.log`, `signed.txt`.
    pub dir: PathBuf,
    /// The database.
    pub db: PathBuf,
    /// Where it listens on 127.0.0.1.
    pub port: u16,
    process: Option<Child>,
}

impl Node {
    /// A node in `root/name`, its database copied from `from` (unless there already).
    pub fn new(root: &Path, name: &'static str, from: &Path) -> Node {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let db = dir.join("ledger.redb");
        if !db.exists() {
            std::fs::copy(from, &db).unwrap();
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        Node {
            name,
            dir,
            db,
            port,
            process: None,
        }
    }

    /// Its config file.
    pub fn config(&self) -> PathBuf {
        self.dir.join("config.json")
    }

    /// Its signature oracle's file (`FLEET_LEDGER_SIGNATURE_ORACLE`).
    pub fn oracle(&self) -> PathBuf {
        self.dir.join("signed.txt")
    }

    /// Starts `cmd` (which serves this node) with the signature oracle set and stderr to
    /// `serve.log`.
    pub fn start(&mut self, mut cmd: Command) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("serve.log"))
            .unwrap();
        self.process = Some(
            cmd.env("FLEET_LEDGER_SIGNATURE_ORACLE", self.oracle())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::from(log))
                .spawn()
                .unwrap(),
        );
    }

    /// Sends it a signal (`-STOP`, `-CONT`, `-TERM`).
    pub fn signal(&self, sig: &str) {
        if let Some(p) = &self.process {
            let _ = Command::new("kill")
                .args([sig, &p.id().to_string()])
                .status();
        }
    }

    /// `kill -9`, and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut p) = self.process.take() {
            let _ = p.kill();
            let _ = p.wait();
        }
    }

    /// SIGTERM (after SIGCONT, should it be stopped); whether it exited 0.
    pub fn stop(&mut self) -> bool {
        self.signal("-CONT");
        self.signal("-TERM");
        self.process
            .take()
            .is_some_and(|mut p| p.wait().is_ok_and(|s| s.success()))
    }

    /// A client for its API.
    pub fn client(&self) -> fleet_ledger_demo::ApiClient {
        fleet_ledger_demo::ApiClient::new(&format!("http://127.0.0.1:{}", self.port)).unwrap()
    }

    /// The last lines of its log (what a failure shows).
    pub fn log(&self) -> String {
        let text = std::fs::read_to_string(self.dir.join("serve.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        format!(
            "--- {} ---\n{}",
            self.name,
            lines[lines.len().saturating_sub(30)..].join("\n")
        )
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// (sent, answered) of every acknowledged request, as the agents record them.
pub type Oks = std::sync::Arc<std::sync::Mutex<Vec<(Instant, Instant)>>>;

/// When the first request sent after `t0` was acknowledged: the end of a failover as an
/// agent sees it.
pub fn first_ok_after(oks: &Oks, t0: Instant) -> Option<Instant> {
    oks.lock()
        .unwrap()
        .iter()
        .filter(|(sent, _)| *sent > t0)
        .map(|(_, answered)| *answered)
        .min()
}

/// The log size a node's `GET /v1/ledger/checkpoint` answer reflects (`X-Ledger-Size`);
/// `None` when it does not answer with one.
pub async fn served_size(c: &fleet_ledger_demo::ApiClient, token: &str) -> Option<u64> {
    let r = c
        .http
        .get(format!("{}/v1/ledger/checkpoint", c.base))
        .bearer_auth(token)
        .send()
        .await
        .ok()?;
    r.headers()
        .get("x-ledger-size")?
        .to_str()
        .ok()?
        .parse()
        .ok()
}
