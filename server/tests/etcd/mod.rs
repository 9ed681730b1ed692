//! A real etcd cluster for the tests (Debian's `etcd-server`): three members on loopback, in
//! a temporary directory, each of which a test can kill and start again. Stopped when
//! dropped.
#![allow(dead_code, unreachable_pub)] // shared by test binaries that each use a part

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Whether `etcd` can be run: otherwise the test fails with a message, unless
/// `FLEET_SKIP_ETCD=1` says to skip it knowingly.
pub fn have_etcd() -> bool {
    if Command::new("etcd")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        return true;
    }
    let msg = "no etcd: install Debian's `etcd-server` (.ci/run does)";
    if std::env::var("FLEET_SKIP_ETCD").as_deref() == Ok("1") {
        eprintln!("*** {msg}; FLEET_SKIP_ETCD=1: NOT RUN ***");
        return false;
    }
    panic!("{msg}, or set FLEET_SKIP_ETCD=1 to skip it knowingly");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Member {
    name: String,
    client: u16,
    peer: u16,
    child: Option<Child>,
}

/// Three etcd members.
pub struct Cluster {
    dir: tempfile::TempDir,
    members: Vec<Member>,
    initial: String,
}

impl Cluster {
    /// Starts three members and waits until the cluster answers.
    pub fn start() -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let members: Vec<Member> = (1..=3)
            .map(|i| Member {
                name: format!("m{i}"),
                client: free_port(),
                peer: free_port(),
                child: None,
            })
            .collect();
        let initial = members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer))
            .collect::<Vec<_>>()
            .join(",");
        let mut c = Cluster {
            dir,
            members,
            initial,
        };
        for i in 0..3 {
            c.start_member(i);
        }
        c.wait_healthy();
        c
    }

    /// The client endpoints (`http://127.0.0.1:PORT`).
    pub fn endpoints(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|m| format!("http://127.0.0.1:{}", m.client))
            .collect()
    }

    fn data_dir(&self, i: usize) -> PathBuf {
        self.dir.path().join(&self.members[i].name)
    }

    /// Starts member `i` (again: it keeps its data directory).
    pub fn start_member(&mut self, i: usize) {
        let data = self.data_dir(i);
        let state = if data.exists() { "existing" } else { "new" };
        let m = &self.members[i];
        let log = std::fs::File::create(self.dir.path().join(format!("{}.log", m.name))).unwrap();
        let child = Command::new("etcd")
            .args(["--name", &m.name])
            .arg("--data-dir")
            .arg(&data)
            .args([
                "--listen-client-urls",
                &format!("http://127.0.0.1:{}", m.client),
                "--advertise-client-urls",
                &format!("http://127.0.0.1:{}", m.client),
                "--listen-peer-urls",
                &format!("http://127.0.0.1:{}", m.peer),
                "--initial-advertise-peer-urls",
                &format!("http://127.0.0.1:{}", m.peer),
                "--initial-cluster",
                &self.initial,
                "--initial-cluster-state",
                state,
                "--initial-cluster-token",
                "fleet-ledger-test",
                // Fast elections on loopback.
                "--heartbeat-interval",
                "50",
                "--election-timeout",
                "500",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.members[i].child = Some(child);
    }

    /// SIGKILLs member `i`.
    pub fn kill_member(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Waits (20 s at most) until a linearizable read succeeds through every endpoint given.
    pub fn wait_healthy(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        for m in &self.members {
            if m.child.is_none() {
                continue;
            }
            loop {
                let ok = std::net::TcpStream::connect(("127.0.0.1", m.client)).is_ok()
                    && Command::new("etcdctl")
                        .env("ETCDCTL_API", "3")
                        .args([
                            "--endpoints",
                            &format!("http://127.0.0.1:{}", m.client),
                            "endpoint",
                            "health",
                        ])
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .status()
                        .is_ok_and(|s| s.success());
                if ok {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "etcd member {} did not become healthy",
                    m.name
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill_member(i);
        }
    }
}
