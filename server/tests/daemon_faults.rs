//! The `serve` binary against the faults of its surroundings (issue 13): a log sink that
//! fails (full disk, closed pipe), SIGTERM at any moment of start-up, and a writer thread that
//! dies. The daemon must keep recording, exit 0 when asked to stop, and never linger
//! half-alive.

mod common;

use std::fs::OpenOptions;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use fleet_ledger_demo::{ApiClient, Setup};

/// Posts `n` probe results for web-0002 after `prepare` and requires each to be recorded.
async fn record(c: &ApiClient, setup: &Setup, from_seq: u64, n: u64) {
    let token = &setup.tokens.agents["web-0002"];
    for seq in from_seq..from_seq + n {
        let body = probe_result("web-0002", seq);
        let (status, v) = c.post(token, "/v1/agent/events", &body).await.unwrap();
        assert_eq!(status, 200, "seq {seq}: {v}");
    }
}

async fn healthz(c: &ApiClient) -> u16 {
    c.http
        .get(format!("{}/healthz", c.base))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

/// Defect 1 as reported: stderr appended to a log file that cannot grow (EFBIG: the file size
/// limit, as on a full disk), with debug logging so the writer thread logs every commit.
/// Every write is still recorded, `/healthz` stays 200, the lost lines are counted; once the
/// file can grow again, lines flow again; SIGTERM still ends in exit 0.
#[tokio::test(flavor = "multi_thread")]
async fn a_full_log_file_never_stops_the_writer() {
    let dir = tempfile::tempdir().unwrap();
    let setup = Setup::create(dir.path(), None, 16).unwrap();
    let config = dir.path().join("config.json");
    // Large enough for the database to grow through the test, and the log already that big.
    let limit = (std::fs::metadata(&setup.db).unwrap().len() * 8).max(32 << 20);
    let log_path = dir.path().join("serve.log");
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .unwrap();
    log.set_len(limit).unwrap();
    let port = free_port();
    let child = serve(
        limited(limit),
        &setup.db,
        &config,
        port,
        Stdio::from(log),
        "debug",
    );
    let c = ApiClient::new(&format!("http://127.0.0.1:{port}")).unwrap();
    wait_healthy(&c).await;
    prepare(&c, &setup).await;
    record(&c, &setup, 100, 20).await;
    assert_eq!(healthz(&c).await, 200);
    let op = &setup.tokens.operator;
    let dropped = metric(&c, op, "fleet_ledger_log_lines_dropped_total").await;
    assert!(dropped > 0.0, "no log line was counted as lost");
    assert_eq!(std::fs::metadata(&log_path).unwrap().len(), limit);

    lift_file_limit(child.id());
    record(&c, &setup, 200, 5).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::metadata(&log_path).unwrap().len() == limit {
        assert!(
            Instant::now() < deadline,
            "no log line after the file could grow"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop_and_check(child, &setup);
}

/// Defect 1, the other failures of a sink: stderr on a full device (ENOSPC, `/dev/full`) and
/// a pipe whose reader is gone (EPIPE).
#[tokio::test(flavor = "multi_thread")]
async fn a_failing_stderr_never_stops_the_writer() {
    let dir = tempfile::tempdir().unwrap();
    let setup = Setup::create(dir.path(), None, 16).unwrap();
    let config = dir.path().join("config.json");
    for (round, sink) in ["/dev/full", "closed pipe"].into_iter().enumerate() {
        let port = free_port();
        let stderr = if sink == "/dev/full" {
            Stdio::from(OpenOptions::new().write(true).open(sink).unwrap())
        } else {
            Stdio::piped()
        };
        let mut child = serve(Command::new(EXE), &setup.db, &config, port, stderr, "debug");
        drop(child.0.stderr.take()); // the reader is gone
        let c = ApiClient::new(&format!("http://127.0.0.1:{port}")).unwrap();
        wait_healthy(&c).await;
        if round == 0 {
            prepare(&c, &setup).await;
        }
        record(&c, &setup, 1000 * (round as u64 + 1), 20).await;
        assert_eq!(healthz(&c).await, 200, "{sink}");
        sigterm(child.id());
        let exit = child.wait().unwrap();
        assert!(exit.success(), "{sink}: serve exited with {exit}");
    }
}

/// Whether the process has a handler installed for SIGTERM (bit 15 of `SigCgt`).
fn catches_sigterm(pid: u32) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return false;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("SigCgt:"))
        .and_then(|m| u64::from_str_radix(m.trim(), 16).ok())
        .is_some_and(|mask| mask & (1 << (15 - 1)) != 0)
}

/// Defect 4: the SIGTERM handler is installed before the daemon opens the ledger or listens,
/// so a SIGTERM at any moment after it (while the config loads, the ledger opens, the
/// listener binds, or right after `/healthz` first answers) ends in exit 0 and a file that
/// needs no recovery.
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_at_any_moment_of_start_up_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let setup = Setup::create(dir.path(), None, 16).unwrap();
    let config = dir.path().join("config.json");
    for round in 0..10u64 {
        let port = free_port();
        let mut child = spawn(&setup.db, &config, port);
        let c = ApiClient::new(&format!("http://127.0.0.1:{port}")).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let waiting = |child: &mut Proc| {
            assert!(
                Instant::now() < deadline,
                "round {round}: serve never got there"
            );
            assert!(child.try_wait().unwrap().is_none(), "serve ended early");
            std::thread::sleep(Duration::from_micros(200));
        };
        match round {
            // As soon as the handler exists, then after a growing delay.
            0..=5 => {
                while !catches_sigterm(child.id()) {
                    waiting(&mut child);
                }
                std::thread::sleep(Duration::from_millis(round * round * 3));
            }
            // Right after the port is bound: the ledger is still opening.
            6..=7 => {
                while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                    waiting(&mut child);
                }
            }
            // The reported moment: right after `/healthz` first answers.
            _ => {
                while healthz(&c).await != 200 {
                    waiting(&mut child);
                }
                assert!(
                    catches_sigterm(child.id()),
                    "healthy before handling SIGTERM"
                );
            }
        }
        sigterm(child.id());
        let exit = child.wait().unwrap();
        assert!(exit.success(), "round {round}: serve exited with {exit}");
    }
    // Never left needing recovery: a read-only command opens the file as it is.
    let out = Command::new(EXE)
        .args(["check", "--db"])
        .arg(&setup.db)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Defect 1's second half: if the writer thread ends anyway (here its clock panics), the
/// daemon does not linger answering 503 forever: `run_until` returns an error at once (and
/// `serve` exits non-zero, so a supervisor restarts it).
#[tokio::test(flavor = "multi_thread")]
async fn a_dead_writer_ends_the_daemon_with_an_error() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let dir = tempfile::tempdir().unwrap();
    let setup = Setup::create(dir.path(), None, 5).unwrap();
    let failing = Arc::new(AtomicBool::new(false));
    let fail = Arc::clone(&failing);
    let clock = Arc::new(move || {
        let writer = std::thread::current().name() == Some("fleet-ledger-writer");
        assert!(
            !(writer && fail.load(Ordering::Relaxed)),
            "the clock fails on the writer thread (test)"
        );
        chrono::Utc::now().timestamp_micros()
    });
    let (daemon, c) = setup
        .start_with_clock(setup.config.clone(), clock)
        .await
        .unwrap();
    let (body, _) = setup.signed_fleet().unwrap();
    let (status, _) = c
        .post(&setup.tokens.ci, "/v1/manifests/fleet", &body)
        .await
        .unwrap();
    assert_eq!(status, 200, "the first batch commits");
    // The next batch's clock reading panics on the writer thread.
    failing.store(true, Ordering::Relaxed);
    let doc = setup
        .rollout_doc("stable", "a1a1a1a1", TARGET, &setup.at(-10))
        .unwrap();
    let (body, _) = setup.sign(&doc).unwrap();
    let (status, v) = c
        .post(
            &setup.tokens.ci,
            "/v1/manifests/rollouts/stable@a1a1a1a1",
            &body,
        )
        .await
        .unwrap();
    assert_eq!(status, 503, "{v}");
    let ended = tokio::time::timeout(
        Duration::from_secs(10),
        daemon.run_until(std::future::pending()),
    )
    .await
    .expect("the daemon lingered after its writer died");
    let err = ended.expect_err("a dead writer is an error");
    assert!(err.to_string().contains("writer"), "{err:#}");
}

/// A daemon whose limits `tune` adjusts.
async fn daemon_with(
    tune: impl FnOnce(&mut fleet_ledger::config::Limits),
) -> (tempfile::TempDir, Setup, fleet_ledger::daemon::Daemon) {
    let dir = tempfile::tempdir().unwrap();
    let setup = Setup::create(dir.path(), None, 5).unwrap();
    let mut config = setup.config.clone();
    tune(&mut config.limits);
    let (daemon, _) = setup.start_with(config).await.unwrap();
    (dir, setup, daemon)
}

/// Reads until the server closes the connection; how long that took.
async fn until_closed(s: &mut tokio::net::TcpStream, within: Duration) -> Duration {
    use tokio::io::AsyncReadExt as _;
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    tokio::time::timeout(within, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .expect("the server kept the connection open");
    started.elapsed()
}

/// Defect 2: a silent connection and one trickling its request head are closed once
/// `header_read_timeout_secs` passes, and so is a keep-alive connection left idle.
#[tokio::test(flavor = "multi_thread")]
async fn silent_slow_and_idle_connections_are_closed() {
    use tokio::io::AsyncWriteExt as _;
    let (_dir, _setup, daemon) = daemon_with(|l| l.header_read_timeout_secs = 1).await;
    let addr = daemon.addr;
    let mut silent = tokio::net::TcpStream::connect(addr).await.unwrap();
    let took = until_closed(&mut silent, Duration::from_secs(10)).await;
    assert!(
        took >= Duration::from_millis(800),
        "closed too early: {took:?}"
    );

    // One header byte every 200 ms: 40 bytes would take 8 s.
    let trickle = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut rd, mut wr) = trickle.into_split();
    let writer = tokio::spawn(async move {
        for b in b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n" {
            if wr.write_all(&[*b]).await.is_err() {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        true
    });
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        use tokio::io::AsyncReadExt as _;
        while let Ok(n) = rd.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "a trickling client kept its connection");
    assert!(started.elapsed() < Duration::from_secs(3));
    writer.abort();

    // Keep-alive: one request answered, then the idle connection is closed.
    let mut idle = tokio::net::TcpStream::connect(addr).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let took = until_closed(&mut idle, Duration::from_secs(10)).await;
    assert!(
        took >= Duration::from_millis(800),
        "closed too early: {took:?}"
    );
    daemon.shutdown().await.unwrap();
}

/// A keep-alive HTTP/1.1 connection that sends one authenticated GET per call.
struct KeptAlive(hyper::client::conn::http1::SendRequest<http_body_util::Empty<bytes::Bytes>>);

impl KeptAlive {
    async fn open(addr: std::net::SocketAddr) -> KeptAlive {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
            .await
            .unwrap();
        tokio::spawn(conn);
        KeptAlive(send)
    }

    async fn get(&mut self, token: &str) -> Result<u16, String> {
        let req = hyper::Request::get("/v1/ledger/rollouts")
            .header("host", "localhost")
            .header("authorization", format!("Bearer {token}"))
            .body(http_body_util::Empty::new())
            .unwrap();
        self.0
            .send_request(req)
            .await
            .map(|r| r.status().as_u16())
            .map_err(|e| e.to_string())
    }
}

/// Defect 2: at `connections_max`, a newcomer pushes out the oldest connection that never
/// authenticated; authenticated connections are never pushed out, and when every open
/// connection is authenticated the newcomer is refused.
#[tokio::test(flavor = "multi_thread")]
async fn anonymous_connections_cannot_starve_authenticated_ones() {
    let (_dir, setup, daemon) = daemon_with(|l| l.connections_max = 8).await;
    let addr = daemon.addr;
    let op = &setup.tokens.operator;
    let mut idle = Vec::new();
    for _ in 0..8 {
        idle.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    // Full of anonymous sockets: an operator still gets in, and so does a health check.
    let c = ApiClient::new(&format!("http://{addr}")).unwrap();
    let (status, v) = c.get(op, "/v1/ledger/rollouts").await.unwrap();
    assert_eq!(status, 200, "{v}");
    assert_eq!(healthz(&c).await, 200);

    let metrics = &daemon.shared.metrics;
    assert!(metrics.connections_evicted.get() >= 1);
    drop(c);
    drop(idle);
    let deadline = Instant::now() + Duration::from_secs(5);
    while metrics.connections_open.get() > 0 {
        assert!(
            Instant::now() < deadline,
            "closed connections stay registered"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // Eight authenticated keep-alive connections fill the cap ...
    let mut trusted = Vec::new();
    for _ in 0..8 {
        let mut k = KeptAlive::open(addr).await;
        assert_eq!(k.get(op).await, Ok(200));
        trusted.push(k);
    }
    // ... a flood of anonymous connections is refused, and evicts none of them.
    let evicted = metrics.connections_evicted.get();
    for _ in 0..20 {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        until_closed(&mut s, Duration::from_secs(5)).await;
    }
    for k in &mut trusted {
        assert_eq!(k.get(op).await, Ok(200));
    }
    assert_eq!(metrics.connections_evicted.get(), evicted);
    assert_eq!(metrics.connections_refused.get(), 20);
    drop(trusted);
    daemon.shutdown().await.unwrap();
}
