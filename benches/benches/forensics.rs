//! Forensics on the cached 1M-entry simulated log (`target/bench-scratch/`): replay to a
//! point (`replay --at-seq`), one host's timeline, and the determinism walk's fold. Medians
//! of 5 runs. Targets (issue 6): replay anywhere < 200 ms, one host's timeline < 100 ms.
//!
//! `cargo bench -p fleet-ledger-benches --bench forensics`

use std::time::{Duration, Instant};

use fleet_ledger::forensics::{self, Filter, Source};
use fleet_ledger_benches::cached_log;

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
    if std::env::args()
        .skip(1)
        .any(|a| !a.starts_with("--") && a != "forensics")
    {
        return;
    }
    let db = cached_log(1_000_000);
    let src = Source::Db(&db);
    for at in [1_000u64, 500_000, 999_999] {
        let d = median(|| {
            forensics::replay(src, Some(at), None).expect("replay");
        });
        println!(
            "replay --at-seq {at:>7}: median {:.0} ms",
            d.as_secs_f64() * 1e3
        );
    }
    let filter = Filter {
        host: Some("web-0042".into()),
        ..Filter::default()
    };
    let d = median(|| {
        forensics::timeline(src, &filter).expect("timeline");
    });
    println!(
        "timeline --host web-0042:  median {:.0} ms",
        d.as_secs_f64() * 1e3
    );
}
