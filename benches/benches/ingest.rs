//! HTTP ingest benchmark: a Rust load generator against the daemon over real HTTP, with
//! durable group commit, on this machine (client and daemon share its cores).
//!
//! Reports, as medians over the run:
//! * the fsync baseline (4 KiB write + fdatasync) and one durable single-row redb commit;
//! * a lone event's latency (one client, idle daemon) as a multiple of that fsync;
//! * closed-loop throughput with concurrent agents (events/s, p50/p99);
//! * open-loop latency at fixed offered loads (1k, 5k events/s), measured from each event's
//!   scheduled send time, so a stalled daemon cannot hide queueing (no coordinated omission);
//! * daemon RSS (current and peak) serving a 1M-entry simulated ledger, in a child process.
//!
//! `cargo bench -p fleet-ledger-benches --bench ingest`. `FLEET_INGEST_SECS` sets the length
//! of each load phase (default 8).

use std::io::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use fleet_ledger_benches::load::{
    child, closed_loop, ms, open_loop, percentile, prepare, report, send, serve, status_kb,
};
use fleet_ledger_benches::{bench_dir, cached_log};
use fleet_ledger_demo::Setup;

/// The allocator the `fleet-ledger` binary runs with, so the library is measured as it ships.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

const CHILD: &str = "FLEET_INGEST_CHILD";

fn secs() -> u64 {
    fleet_ledger_benches::env_or("FLEET_INGEST_SECS", 8)
}

/// Median of `n` durable 4 KiB writes (write + fdatasync) in the scratch directory.
fn fsync_baseline(dir: &Path, n: usize) -> Duration {
    let mut f = std::fs::File::create(dir.join("fsync.probe")).expect("probe file");
    let block = [0x5au8; 4096];
    let mut t: Vec<Duration> = (0..n)
        .map(|_| {
            let s = Instant::now();
            f.write_all(&block).expect("write");
            f.sync_data().expect("fdatasync");
            s.elapsed()
        })
        .collect();
    t.sort();
    percentile(&t, 0.5)
}

/// Median of `n` durable redb commits of one small row (2PC, Immediate), like the ledger's.
fn redb_commit_baseline(dir: &Path, n: usize) -> Duration {
    let db = redb::Database::create(dir.join("baseline.redb")).expect("redb");
    let table: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("t");
    let mut t: Vec<Duration> = (0..n as u64)
        .map(|i| {
            let s = Instant::now();
            let mut txn = db.begin_write().expect("begin");
            txn.set_two_phase_commit(true);
            {
                let mut tb = txn.open_table(table).expect("table");
                tb.insert(i, &[0u8; 200][..]).expect("insert");
            }
            txn.commit().expect("commit");
            s.elapsed()
        })
        .collect();
    t.sort();
    percentile(&t, 0.5)
}

/// Daemon RSS on a copy of the cached 1M-entry simulated log, idle and under load.
fn rss_1m(rt: &tokio::runtime::Runtime) {
    let src = cached_log(1_000_000);
    let dir = bench_dir();
    let db = dir.path().join("ledger.redb");
    std::fs::copy(&src, &db).expect("copy the 1M log");
    // The steady state: projection tables current, as after any restart. (A first open of a
    // log without tables folds all of it once; that peak is not the daemon's footprint.)
    engine::materialize::rebuild(&db, |_| {}).expect("rebuild the projection tables");
    let served = serve(&db, dir.path(), CHILD, |_| {});
    let pid = served.process.id();
    let idle = status_kb(pid, "VmRSS:");
    let loaded = served.closed_loop(rt, Duration::from_secs(secs().min(5)));
    let busy = status_kb(pid, "VmRSS:");
    let peak = status_kb(pid, "VmHWM:");
    let open = served.open;
    served.stop();
    report("load on the 1M-entry ledger", &loaded);
    println!(
        "daemon RSS, 1M-entry ledger: open+catch-up {:.1} s, idle {} MB, under load {} MB, peak {} MB",
        open.as_secs_f64(),
        idle / 1024,
        busy / 1024,
        peak / 1024
    );
}

fn main() {
    if let Ok(spec) = std::env::var(CHILD) {
        child(&spec);
        return;
    }
    // `cargo bench` passes `--bench`; a filter argument that is not ours skips the run.
    if !fleet_ledger_benches::selected("ingest") {
        return;
    }
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let dir = bench_dir();
    let fsync = fsync_baseline(dir.path(), 300);
    let redb1 = redb_commit_baseline(dir.path(), 300);
    println!("baseline: fsync (4 KiB + fdatasync) median {}", ms(fsync));
    println!("baseline: redb durable 1-row commit median {}", ms(redb1));

    let d = Duration::from_secs(secs());
    rt.block_on(async {
        let setup = Setup::create(&dir.path().join("daemon"), None, 66).expect("setup");
        let (daemon, c) = setup.start().await.expect("daemon");
        let agents = prepare(&setup, &c).await;
        let mut seqs = vec![0u64; agents.len()];

        // A lone event: one client, an otherwise idle daemon.
        let mut lone = Vec::new();
        for i in 0..300 {
            seqs[0] += 1;
            lone.push(send(&c, &agents[0], seqs[0]).await);
            if i % 10 == 0 {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
        lone.sort();
        let lone_med = percentile(&lone, 0.5);
        let rendered = daemon.shared.metrics.render();
        let pick = |name: &str| {
            rendered
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().last())
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        println!(
            "  (writer: mean commit {:.3} ms over {} commits)",
            1e3 * pick("fleet_ledger_commit_seconds_sum")
                / pick("fleet_ledger_commit_seconds_count"),
            pick("fleet_ledger_commit_seconds_count")
        );
        println!(
            "lone event over HTTP: median {} = {:.2}x fsync, {:.2}x a redb 1-row commit; p99 {}",
            ms(lone_med),
            lone_med.as_secs_f64() / fsync.as_secs_f64(),
            lone_med.as_secs_f64() / redb1.as_secs_f64(),
            ms(percentile(&lone, 0.99))
        );
        for rate in [1000.0, 5000.0] {
            let p = open_loop(&c, &agents, &mut seqs, rate, d).await;
            report(&format!("offered {rate:.0} events/s (open loop)"), &p);
        }
        let p = closed_loop(&c, &agents, &mut seqs, d).await;
        report(&format!("closed loop, {} agents", agents.len()), &p);
        let m = &daemon.shared.metrics;
        println!(
            "daemon: {} commits for {} entries",
            m.commits.get(),
            m.entries.get()
        );
        daemon.shutdown().await.expect("shutdown");

        // The same closed loop with the daemon publishing tiles (config `publish`, every
        // second): ingest with publication on, how far publication trails the commits, and
        // the published bytes per entry.
        let setup = Setup::create(&dir.path().join("publishing"), None, 66).expect("setup");
        let tiles = dir.path().join("tiles");
        let mut config = setup.config.clone();
        config.publish = Some(fleet_ledger::publish::PublishConfig {
            to: fleet_ledger::publish::Destination::Dir(tiles.clone()),
            interval_secs: 1,
            request_timeout_secs: 30,
        });
        let (daemon, c) = setup.start_with(config).await.expect("daemon");
        let agents = prepare(&setup, &c).await;
        let mut seqs = vec![0u64; agents.len()];
        let shared = std::sync::Arc::clone(&daemon.shared);
        let sampler = tokio::spawn(async move {
            let mut behind = Vec::new();
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let head = *shared.committed.borrow();
                let published = shared.metrics.published_entries.get() as u64;
                behind.push(head.saturating_sub(published));
                if behind.len() as u64 >= 10 * secs() {
                    return behind;
                }
            }
        });
        let p = closed_loop(&c, &agents, &mut seqs, d).await;
        report(
            &format!("closed loop, {} agents, publishing", agents.len()),
            &p,
        );
        let mut behind = sampler.await.expect("sampler");
        behind.sort();
        let rate = p.events as f64 / p.elapsed.as_secs_f64();
        let med = behind[behind.len() / 2];
        let max = *behind.last().unwrap_or(&0);
        println!(
            "publication lag (committed minus published, sampled every 100 ms): median {med} entries, max {max}; at this rate {:.2} s and {:.2} s",
            med as f64 / rate,
            max as f64 / rate
        );
        let entries = *daemon.shared.committed.borrow();
        daemon.shutdown().await.expect("shutdown");
        let mut bytes = 0u64;
        let mut stack = vec![tiles.clone()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).expect("tiles dir") {
                let e = e.expect("entry");
                let m = e.metadata().expect("metadata");
                if m.is_dir() {
                    stack.push(e.path());
                } else {
                    bytes += m.len();
                }
            }
        }
        println!(
            "published tiles: {bytes} bytes for {entries} entries ({:.1} bytes per entry)",
            bytes as f64 / entries.max(1) as f64
        );
    });
    rss_1m(&rt);
}
