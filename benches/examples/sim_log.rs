//! Builds (once) the cached simulated log the benchmarks use: `cargo run --release -p
//! fleet-ledger-benches --example sim_log -- ENTRIES` prints its path. At 10M entries it takes
//! minutes and ~2.3 GB of disk; the streaming generator keeps memory flat at any length.

fn main() {
    let entries: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let t = std::time::Instant::now();
    let path = fleet_ledger_benches::cached_log(entries);
    println!("{} ({:.1} s)", path.display(), t.elapsed().as_secs_f64());
}
