//! A lone durable append, interleaved with its baselines: one ledger append of one entry
//! (chain, tree, signed checkpoint, two-phase commit, fsync) against one raw redb insert of
//! the same entry bytes with two-phase commit and with redb's default one-phase commit, and
//! the two-phase insert again in redb's single-writer mode (the ledger's mode since issue 13:
//! read-only processes may open the file beside the writer), to show what that mode costs.
//!
//! At batch 1 every variant is one fsync-bound commit, and this machine's fsync latency
//! drifts by 3× within seconds, so criterion's consecutive runs (`--bench ledger`,
//! `append/*/1`) compare different disk weather. Here the three run in turn, round after
//! round, so drift hits each alike; medians over `FLEET_LONE_ROUNDS` rounds (default 3000).
//!
//! `cargo bench -p fleet-ledger-benches --bench lone_append`

use std::time::{Duration, Instant};

use fleet_ledger_benches::{bench_dir, entry_event, env_or, make_batch, selected};
use ledger::entry;
use ledger::hash::Hash;
use ledger::store::Store;
use redb::{Database, Durability, TableDefinition};

/// The allocator the `fleet-ledger` binary runs with, so the library is measured as it ships.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

const RAW: TableDefinition<u64, &[u8]> = TableDefinition::new("raw");
const T0: i64 = 1_767_225_600_000_000;

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn raw_insert(db: &Database, two_phase: bool, seq: u64, bytes: &[u8]) {
    let mut txn = db.begin_write().expect("write");
    txn.set_durability(Durability::Immediate)
        .expect("durability");
    txn.set_two_phase_commit(two_phase);
    {
        let mut t = txn.open_table(RAW).expect("table");
        t.insert(seq, bytes).expect("insert");
    }
    txn.commit().expect("commit");
}

fn main() {
    if !selected("lone_append") {
        return;
    }
    let rounds: usize = env_or("FLEET_LONE_ROUNDS", 3000);
    let dir = bench_dir();
    let mut store = Store::create(
        &dir.path().join("ledger.redb"),
        "bench.example/log",
        fixtures::genesis_signer(),
        T0,
    )
    .expect("create");
    let two = Database::create(dir.path().join("raw2pc.redb")).expect("db");
    let one = Database::create(dir.path().join("raw.redb")).expect("db");
    let shared = redb::Builder::new()
        .set_concurrency_mode(redb::ConcurrencyMode::SingleWriter)
        .create(dir.path().join("raw2pc-single-writer.redb"))
        .expect("db");
    let (mut l, mut r2, mut r1, mut rs) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for i in 0..rounds as u64 {
        let batch = make_batch(i, 1, T0);
        let e = entry_event(i);
        let bytes = entry::encode(
            entry::FORMAT_VERSION,
            i,
            T0,
            e.kind(),
            &Hash::ZERO,
            &e.encode_payload(),
        );
        // Rotate which goes first, so none always follows the same neighbour.
        for k in 0..4 {
            match (i as usize + k) % 4 {
                0 => {
                    let s = Instant::now();
                    store.append(&batch).expect("append");
                    l.push(s.elapsed());
                }
                1 => {
                    let s = Instant::now();
                    raw_insert(&two, true, i, &bytes);
                    r2.push(s.elapsed());
                }
                2 => {
                    let s = Instant::now();
                    raw_insert(&shared, true, i, &bytes);
                    rs.push(s.elapsed());
                }
                _ => {
                    let s = Instant::now();
                    raw_insert(&one, false, i, &bytes);
                    r1.push(s.elapsed());
                }
            }
        }
    }
    let (l, r2, r1, rs) = (
        median(&mut l),
        median(&mut r2),
        median(&mut r1),
        median(&mut rs),
    );
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!("lone append, medians of {rounds} interleaved rounds:");
    println!("  ledger append (1 entry)       {:8.1} µs", us(l));
    println!(
        "  raw redb insert, 2PC          {:8.1} µs   ledger = {:.0}% of its throughput",
        us(r2),
        100.0 * us(r2) / us(l)
    );
    println!(
        "  raw redb insert, 1PC          {:8.1} µs   ledger = {:.0}% of its throughput",
        us(r1),
        100.0 * us(r1) / us(l)
    );
    println!(
        "  raw redb insert, 2PC, single-writer mode {:8.1} µs   ({:+.0}% against exclusive)",
        us(rs),
        100.0 * (us(rs) - us(r2)) / us(r2)
    );
}
