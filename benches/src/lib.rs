//! Shared helpers for the benchmarks: realistic entries and a scratch directory on the same
//! disk as the project (not tmpfs), so fsync costs what it costs in production.

use ledger::event::{Annotation, Event};
use ledger::store::NewEntry;

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
