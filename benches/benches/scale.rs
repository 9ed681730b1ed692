//! Years of history: what each operation costs on simulated logs of 1M, 10M and (when
//! `FLEET_SCALE_MAX` allows) 100M entries, 2,000 hosts. Only reading all of history (verify,
//! rebuild, check, a cold replay) should grow with it, and even those in bounded memory;
//! start-up, the daemon's footprint, ingest, a warm replay and a timeline should stay flat.
//!
//! Per size it reports: `rebuild`, `check` and `verify` (time, entries/s, peak RSS, each in a
//! child process so its RSS is its own); a cold `replay` (no snapshot cache) to 90% of the
//! log and a warm one to 50% (cache present); one host's `timeline`; the writer's open of the
//! ledger, clean and after a SIGKILLed writer (redb's repair: a full walk of the file, or
//! loading the saved allocator state with `quick_repair`); the daemon's start to serving, its
//! RSS idle and under the closed-loop ingest load (64 agents) and that load's throughput,
//! without and with `quick_repair`; the file's bytes per entry.
//!
//! `cargo bench -p fleet-ledger-benches --bench scale`. `FLEET_SCALE_MAX` (default
//! 10000000) is the largest size run; `FLEET_SCALE_SECS` (default 5) the load phase. The
//! logs are generated once (`FLEET_SCALE_MAX=100000000`: ~90 minutes and ~20 GB of disk)
//! and cached under `target/bench-scratch/`; the runs write projection tables and replay
//! caches into them and the ingest load appends to them (a few hundred thousand entries per
//! run), so sizes are "at least N".

use std::path::Path;
use std::time::{Duration, Instant};

use engine::forensics::{Filter, Point, Source};
use fleet_ledger_benches::load::{child, serve, status_kb};
use fleet_ledger_benches::{bench_dir, cached_log, env_or};

/// The allocator the `fleet-ledger` binary runs with, so the library is measured as it ships.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Makes the bench binary a daemon (see [`child`]).
const DAEMON: &str = "FLEET_SCALE_DAEMON";
/// Makes the bench binary run one operation: `OP|DB`.
const OP: &str = "FLEET_SCALE_OP";

/// One operation's result, as the child prints it.
#[derive(Debug)]
struct Measured {
    secs: f64,
    /// Entries it went through (folded, verified, lines).
    n: u64,
    peak_mb: u64,
}

/// Child mode: runs one operation on `db` and prints `secs n peak_kb`.
fn run_op(spec: &str) {
    let (op, db) = spec.split_once('|').expect("OP|DB");
    let db = Path::new(db);
    let size = ledger::store::ReadOnlyStore::open(db)
        .and_then(|s| s.snapshot())
        .expect("open")
        .size();
    let t = Instant::now();
    let n = match op {
        "rebuild" => engine::materialize::rebuild(db, |_| {}).expect("rebuild"),
        "check" => match engine::materialize::check(db, |_| {}).expect("check") {
            engine::materialize::CheckOutcome::Identical { entries } => entries,
            other => panic!("check: {other:?}"),
        },
        "verify" => {
            let ro = ledger::store::ReadOnlyStore::open(db).expect("open");
            let key = fixtures::genesis_signer().public().clone();
            ro.snapshot()
                .expect("snapshot")
                .verify(&key, |_| {})
                .expect("verify")
                .size()
        }
        "replay-cold" | "replay-warm" => {
            let pct = if op == "replay-cold" { 90 } else { 50 };
            let point = Point {
                seq: Some(size * pct / 100),
                time: None,
            };
            let r = engine::forensics::replay(
                Source::Db(db),
                point,
                engine::replay_cache::SNAPSHOT_EVERY,
            )
            .expect("replay");
            assert!(r.cache_warning.is_none(), "{:?}", r.cache_warning);
            r.folded
        }
        "timeline" => {
            let f = Filter {
                host: Some("web-0005".into()),
                ..Default::default()
            };
            // As the CLI prints it: line by line.
            let mut n = 0u64;
            engine::forensics::timeline_each(Source::Db(db), &f, |l| {
                std::hint::black_box(&l);
                n += 1;
                Ok::<(), engine::forensics::ForensicsError>(())
            })
            .expect("timeline");
            n
        }
        "open" => {
            // What the daemon's writer does first: open the file (repairing it after a
            // crash) and load the live models.
            let l = engine::materialize::Ledger::open_live(db, fixtures::genesis_signer())
                .expect("open");
            l.state().hosts.len() as u64
        }
        "crash" | "crash-quick" => {
            // Opens for writing, commits one entry (saving the allocator state with it for
            // `crash-quick`), says so, and waits to be killed.
            let mut l = engine::materialize::Ledger::open_live(db, fixtures::genesis_signer())
                .expect("open");
            l.set_quick_repair(op == "crash-quick");
            let at = l.store().last_time();
            l.append(fleet_ledger_benches::make_batch(0, 1, at))
                .expect("append");
            println!("committed");
            std::thread::sleep(Duration::from_secs(3600));
            0
        }
        other => panic!("unknown op {other}"),
    };
    let secs = t.elapsed().as_secs_f64();
    println!("{secs} {n} {}", status_kb(std::process::id(), "VmHWM:"));
}

fn measure(op: &str, db: &Path) -> Measured {
    let out = std::process::Command::new(std::env::current_exe().expect("exe"))
        .env(OP, format!("{op}|{}", db.display()))
        .output()
        .expect("spawn");
    assert!(
        out.status.success(),
        "{op}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let mut f = text.split_whitespace();
    let mut next = || f.next().expect("three fields");
    Measured {
        secs: next().parse().expect("secs"),
        n: next().parse().expect("n"),
        peak_mb: next().parse::<u64>().expect("kb") / 1024,
    }
}

/// Leaves `db` as a SIGKILLed writer does: opened for writing, one commit, no close. `op` is
/// `crash` or `crash-quick` (the commit saved redb's allocator state: config `quick_repair`).
fn crash(db: &Path, op: &str) {
    use std::io::BufRead as _;
    let mut child = std::process::Command::new(std::env::current_exe().expect("exe"))
        .env(OP, format!("{op}|{}", db.display()))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut out = std::io::BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    out.read_line(&mut line).expect("read");
    assert_eq!(line.trim(), "committed");
    child.kill().expect("SIGKILL");
    child.wait().expect("wait");
}

fn line(name: &str, entries: u64, m: &Measured, rate: bool) {
    let per = if rate {
        format!("{:>7.0}k entries/s", m.n as f64 / m.secs / 1e3)
    } else {
        format!("{:>7} items      ", m.n)
    };
    println!(
        "{:>5}M  {name:<22} {:>8.2} s  {per}  peak RSS {:>5} MB",
        entries / 1_000_000,
        m.secs,
        m.peak_mb
    );
}

fn scale(entries: u64, rt: &tokio::runtime::Runtime) {
    let db = cached_log(entries);
    let size = ledger::store::ReadOnlyStore::open(&db)
        .and_then(|s| s.snapshot())
        .expect("open")
        .size();
    // Full folds and scans: they read all of history, in bounded memory.
    for op in ["rebuild", "check", "verify"] {
        line(op, entries, &measure(op, &db), true);
    }
    let _ = std::fs::remove_file(engine::replay_cache::cache_path(&db));
    line(
        "replay cold (to 90%)",
        entries,
        &measure("replay-cold", &db),
        true,
    );
    let warm = measure("replay-warm", &db);
    line("replay warm (to 50%)", entries, &warm, false);
    line(
        "timeline one host",
        entries,
        &measure("timeline", &db),
        false,
    );
    line("open (clean)", entries, &measure("open", &db), false);
    crash(&db, "crash");
    line("open after SIGKILL", entries, &measure("open", &db), false);
    crash(&db, "crash-quick");
    line("  with quick_repair", entries, &measure("open", &db), false);

    // The daemon: start to serving, its footprint, ingest on this ledger; then the same
    // with `quick_repair` (what saving the allocator state costs each commit).
    for quick in [false, true] {
        let dir = bench_dir();
        let served = serve(&db, dir.path(), DAEMON, |c| c.quick_repair = quick);
        let pid = served.process.id();
        let idle = status_kb(pid, "VmRSS:") / 1024;
        let secs = env_or("FLEET_SCALE_SECS", 5u64);
        let load = served.closed_loop(rt, Duration::from_secs(secs));
        let busy = status_kb(pid, "VmRSS:") / 1024;
        let peak = status_kb(pid, "VmHWM:") / 1024;
        let open = served.open;
        served.stop();
        println!(
            "{:>5}M  daemon{} start to serving {:>6.2} s; RSS idle {idle} MB, under load {busy} MB (peak {peak} MB); ingest {:.0} events/s (closed loop, 64 agents)",
            entries / 1_000_000,
            if quick { " (quick_repair)" } else { "" },
            open.as_secs_f64(),
            load.events as f64 / load.elapsed.as_secs_f64()
        );
    }
    let bytes = std::fs::metadata(&db).expect("metadata").len();
    println!(
        "{:>5}M  database file {:.2} GB for {size} entries: {:.0} bytes per entry",
        entries / 1_000_000,
        bytes as f64 / 1e9,
        bytes as f64 / size as f64
    );
}

fn main() {
    if let Ok(spec) = std::env::var(DAEMON) {
        child(&spec);
        return;
    }
    if let Ok(spec) = std::env::var(OP) {
        run_op(&spec);
        return;
    }
    if !fleet_ledger_benches::selected("scale") {
        return;
    }
    let max: u64 = env_or("FLEET_SCALE_MAX", 10_000_000);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    for entries in [1_000_000u64, 10_000_000, 100_000_000] {
        if entries <= max {
            scale(entries, &rt);
        }
    }
}
