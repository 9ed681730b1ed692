//! File growth over a long history (issue 17, part 4): the simulated fleet (2,000 hosts,
//! rollouts opened, converged, failed, cleared and pruned by retention) appended as the daemon
//! appends it (batches of 1,000 with every projection in the same transaction), then the
//! database file compared with the bytes of its entries, before and after `compact`.
//!
//!   cargo bench -p fleet-ledger-benches --bench file_growth
//!   FLEET_GROWTH_ENTRIES=200000 cargo bench -p fleet-ledger-benches --bench file_growth
//!
//! Prints one line per measure; the figures go in benches/README.md.

use std::time::Instant;

use fleet_ledger_benches::{bench_dir, env_or, selected, stream};

fn main() {
    if !selected("file_growth") {
        return;
    }
    let entries: u64 = env_or("FLEET_GROWTH_ENTRIES", 1_000_000);
    let hosts: usize = env_or("FLEET_GROWTH_HOSTS", 2000);
    let dir = bench_dir();
    let path = dir.path().join("growth.redb");
    let t = Instant::now();
    // Simulated and appended as it goes: one batch of entries in memory at a time.
    let (start, batches) = stream(entries, hosts);
    let mut ledger = engine::materialize::Ledger::create(
        &path,
        "bench.example/cp",
        fixtures::genesis_signer(),
        start,
    )
    .expect("create");
    for batch in batches {
        ledger.append(batch).expect("append");
    }
    let appended = t.elapsed().as_secs_f64();
    eprintln!("simulated and appended {entries} entries in {appended:.1} s");
    let state = ledger.state();
    let rollouts = state.rollouts.len();
    let pruned = state
        .rollouts
        .values()
        .filter(|r| r.state == ledger::domain::RolloutState::Pruned)
        .count();
    let snap = ledger.store().snapshot().expect("snapshot");
    let size = snap.size();
    let entry_bytes: u64 = snap
        .rows(0..size)
        .expect("read entries")
        .map(|s| s.expect("read entries").bytes().len() as u64)
        .sum();
    drop(snap);
    drop(ledger);
    let file = std::fs::metadata(&path).expect("size").len();
    let t = Instant::now();
    let (before, after) = ledger::store::Maintenance::open(&path)
        .expect("open")
        .compact()
        .expect("compact");
    let compacted = t.elapsed().as_secs_f64();
    assert_eq!(before, file);
    println!("file_growth/entries {size} ({rollouts} rollouts, {pruned} pruned)");
    println!(
        "file_growth/entry_bytes {entry_bytes} ({:.0} B/entry)",
        entry_bytes as f64 / size as f64
    );
    println!(
        "file_growth/file_bytes {file} ({:.2}x the entry bytes, {:.0} B/entry)",
        file as f64 / entry_bytes as f64,
        file as f64 / size as f64
    );
    println!(
        "file_growth/compacted_bytes {after} ({:.2}x the entry bytes; compaction freed {:.1}% in {compacted:.1} s)",
        after as f64 / entry_bytes as f64,
        100.0 * before.saturating_sub(after) as f64 / before as f64
    );
}
