//! Forensics on the cached 1M-entry simulated log (`target/bench-scratch/`): replay to a
//! point (`replay --at-seq`, from the nearest replay snapshot; the first replay, which folds
//! the whole log and writes the snapshots, is timed once on its own) and one host's timeline
//! (through the entry index). Medians of 5 runs. Targets (issue 6): replay anywhere
//! < 200 ms, one host's timeline < 100 ms.
//!
//! `cargo bench -p fleet-ledger-benches --bench forensics`

use std::time::{Duration, Instant};

use engine::forensics::{self, Filter, Source};
use fleet_ledger_benches::cached_log;

/// The allocator the `fleet-ledger` binary runs with, so the library is measured as it ships.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn median(mut f: impl FnMut()) -> Duration {
    let mut t: Vec<Duration> = (0..5)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed()
        })
        .collect();
    t.sort();
    t[2]
}

fn main() {
    if !fleet_ledger_benches::selected("forensics") {
        return;
    }
    // A copy with its projection tables (and entry index) built, as a daemon's database has.
    let dir = fleet_ledger_benches::bench_dir();
    let db = dir.path().join("ledger.redb");
    std::fs::copy(cached_log(1_000_000), &db).expect("copy the 1M log");
    engine::materialize::rebuild(&db, |_| {}).expect("rebuild");
    let src = Source::Db(&db);
    let point = |at| forensics::Point {
        seq: Some(at),
        time: None,
    };
    let every = engine::replay_cache::SNAPSHOT_EVERY;
    let s = Instant::now();
    forensics::replay(src, point(999_999), every).expect("replay");
    let cache = engine::replay_cache::cache_path(&db);
    println!(
        "first replay (full fold, writes the snapshots: {} MB): {:.0} ms",
        std::fs::metadata(&cache).map_or(0, |m| m.len()) >> 20,
        s.elapsed().as_secs_f64() * 1e3
    );
    for at in [1_000u64, 500_000, 524_287, 999_999] {
        let d = median(|| {
            forensics::replay(src, point(at), every).expect("replay");
        });
        println!(
            "replay --at-seq {at:>7}: median {:.0} ms",
            d.as_secs_f64() * 1e3
        );
    }
    let d = median(|| {
        forensics::replay_full(src, Some(500_000), None).expect("replay");
    });
    println!(
        "baseline: full fold to 500,000 with every row (--include-pruned): median {:.0} ms",
        d.as_secs_f64() * 1e3
    );
    let filter = Filter {
        host: Some("web-0042".into()),
        ..Filter::default()
    };
    let d = median(|| {
        forensics::timeline(src, &filter).expect("timeline");
    });
    let n = forensics::timeline(src, &filter).expect("timeline").len();
    println!(
        "timeline --host web-0042 ({n} entries, through the entry index): median {:.1} ms",
        d.as_secs_f64() * 1e3
    );
}
