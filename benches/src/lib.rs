//! Shared helpers for the benchmarks: realistic entries and a scratch directory on the same
//! disk as the project (not tmpfs), so fsync costs what it costs in production.

pub mod load;

use std::path::{Path, PathBuf};

use fixtures::sim::{Group, Sim};
use ledger::event::{Annotation, Event};
use ledger::store::{NewEntry, ReadOnlyStore, Store};

/// A ~200-byte event, the size of a typical agent report.
pub fn entry_event(i: u64) -> Event {
    Event::Annotation(Annotation {
        author: format!("agent-web-{:04}", i % 5000),
        text: format!(
            "probe round {i}: enforce controls nis2.art21.a, access-control pass; closure /nix/store/{:032x}-nixos-system-web-{:04}",
            u128::from(i).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835),
            i % 5000
        ),
    })
}

/// `n` entries starting at logical index `start`, all at `t_us`.
pub fn make_batch(start: u64, n: usize, t_us: i64) -> Vec<NewEntry> {
    (start..start + n as u64)
        .map(|i| NewEntry {
            recorded_at_us: t_us,
            event: entry_event(i),
        })
        .collect()
}

/// A scratch directory under `target/`, on the project's disk.
pub fn bench_dir() -> tempfile::TempDir {
    let base = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench-scratch");
    std::fs::create_dir_all(&base).expect("create bench scratch dir");
    tempfile::tempdir_in(base).expect("tempdir")
}

/// The scratch directory itself (caches live here).
pub fn scratch() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench-scratch");
    std::fs::create_dir_all(&p).expect("scratch dir");
    p
}

/// The simulated event stream, as batches of exactly 1000 entries (the last may be short).
/// A decision's group of entries may straddle two batches: neither the store nor the folds
/// care where a commit boundary falls, and "batch 1000" then means 1000.
pub fn batches(entries: u64, hosts: usize) -> (i64, Vec<Vec<NewEntry>>) {
    let mut sim = Sim::new(42, hosts);
    let start = sim.now();
    let groups: Vec<Group> = sim.run(entries);
    let all = fixtures::sim::entries(&groups);
    (start, all.chunks(1000).map(<[NewEntry]>::to_vec).collect())
}

/// The simulated event stream in batches of exactly 1000 entries (the last may be short),
/// produced as they are consumed: one batch of entries and the live fleet's fold are held at
/// a time ([`Sim::streaming`]), so any length runs in bounded memory; and the CP time it
/// starts at. The same entries as [`batches`].
pub fn stream(entries: u64, hosts: usize) -> (i64, impl Iterator<Item = Vec<NewEntry>>) {
    let mut sim = Sim::streaming(42, hosts);
    let start = sim.now();
    let mut pending: std::collections::VecDeque<NewEntry> = Default::default();
    let mut emitted = 0u64;
    let batches = std::iter::from_fn(move || {
        while pending.len() < 1000 && emitted <= entries {
            for e in fixtures::sim::entries(&sim.tick()) {
                pending.push_back(e);
                emitted += 1;
            }
        }
        let n = pending.len().min(1000);
        (n > 0).then(|| pending.drain(..n).collect())
    });
    (start, batches)
}

/// A ledger of `entries` simulated entries, built once and reused across runs.
pub fn cached_log(entries: u64) -> PathBuf {
    let path = scratch().join(format!("sim-{entries}.redb"));
    if ReadOnlyStore::open(&path)
        .and_then(|s| s.snapshot())
        .is_ok_and(|s| s.size() > entries)
    {
        return path;
    }
    let _ = std::fs::remove_file(&path);
    eprintln!(
        "generating a {entries}-entry simulated log (once; cached at {})",
        path.display()
    );
    let (start, batches) = stream(entries, 2000);
    let mut store = Store::create(&path, "bench.example/cp", fixtures::genesis_signer(), start)
        .expect("create");
    for b in batches {
        store.append(&b).expect("append");
    }
    path
}

/// Whether a harness-less bench binary named `name` should run for these arguments (cargo
/// passes `--bench` and any filter; a filter naming another bench skips it).
pub fn selected(name: &str) -> bool {
    !std::env::args()
        .skip(1)
        .any(|a| !a.starts_with("--") && a != name)
}

/// A numeric setting from the environment, or `default` when unset or unparsable.
pub fn env_or<T: std::str::FromStr>(var: &str, default: T) -> T {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A ledger with projections and a plain store, both created empty in `dir` at CP time
/// `start`: the two sides of every with/without-projections comparison.
pub fn ledger_pair(dir: &std::path::Path, start: i64) -> (engine::materialize::Ledger, Store) {
    let with = engine::materialize::Ledger::create(
        &dir.join("with.redb"),
        "bench.example/cp",
        fixtures::genesis_signer(),
        start,
    )
    .expect("create");
    let without = Store::create(
        &dir.join("without.redb"),
        "bench.example/cp",
        fixtures::genesis_signer(),
        start,
    )
    .expect("create");
    (with, without)
}
