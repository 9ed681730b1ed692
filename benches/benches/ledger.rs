//! Ledger core benchmarks, each against its baseline in the same run:
//!
//! * `append/*`: durable append (chain, tree, signed checkpoint, fsync) at batch sizes 1, 10,
//!   100, 1000, against raw redb inserts of the same entry bytes at the same batch sizes, with
//!   redb's default one-phase commit and with the two-phase commit the ledger uses.
//! * `verify/*`: full verification of a 1M-entry log (one checkpoint per 1000-entry batch),
//!   from the store and from a bundle in memory, in format version 2 (SHA-256 tree) and 1
//!   (blake3 tree, the format before) built from the same batches; blake3 alone and blake3
//!   plus SHA-256 over the same entries as ceilings.
//! * `proof/*`: inclusion and consistency proof generation and verification on that log.
//!
//! `FLEET_BENCH_ENTRIES` shrinks the large log for a quick run (default 1,000,000).

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use fleet_ledger_benches::{bench_dir, entry_event, make_batch};
use ledger::bundle::verify_bundle;
use ledger::entry;
use ledger::hash::Hash;
use ledger::store::{ReadOnlyStore, Store};
use redb::{Database, Durability, TableDefinition};

/// The allocator the `fleet-ledger` binary runs with, so the library is measured as it ships.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

const RAW: TableDefinition<u64, &[u8]> = TableDefinition::new("raw");
const T0: i64 = 1_767_225_600_000_000;

fn append(c: &mut Criterion) {
    let mut g = c.benchmark_group("append");
    g.sample_size(10).measurement_time(Duration::from_secs(6));
    let dir = bench_dir();
    for batch in [1usize, 10, 100, 1000] {
        g.throughput(Throughput::Elements(batch as u64));
        let mut store = Store::create(
            &dir.path().join(format!("ledger-{batch}.redb")),
            "bench.example/log",
            fixtures::genesis_signer(),
            T0,
        )
        .expect("create");
        let entries = make_batch(0, batch, T0);
        g.bench_function(format!("ledger/{batch}"), |b| {
            b.iter(|| store.append(&entries).expect("append"))
        });
        // The same bytes the ledger stores, inserted raw.
        let bytes: Vec<Vec<u8>> = (0..batch as u64)
            .map(|i| {
                let e = entry_event(i);
                entry::encode(
                    entry::FORMAT_VERSION,
                    i,
                    T0,
                    e.kind(),
                    &Hash::ZERO,
                    &e.encode_payload(),
                )
            })
            .collect();
        for two_phase in [false, true] {
            let name = if two_phase {
                "raw_redb_2pc"
            } else {
                "raw_redb"
            };
            let db = Database::create(dir.path().join(format!("{name}-{batch}.redb"))).expect("db");
            let mut next = 0u64;
            g.bench_function(format!("{name}/{batch}"), |b| {
                b.iter(|| {
                    let mut txn = db.begin_write().expect("write");
                    txn.set_durability(Durability::Immediate)
                        .expect("durability");
                    txn.set_two_phase_commit(two_phase);
                    {
                        let mut t = txn.open_table(RAW).expect("table");
                        for v in &bytes {
                            t.insert(next, v.as_slice()).expect("insert");
                            next += 1;
                        }
                    }
                    txn.commit().expect("commit");
                })
            });
        }
    }
    g.finish();
}

fn large_entries() -> u64 {
    std::env::var("FLEET_BENCH_ENTRIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000)
}

/// A log of `n` entries in format `version`, one checkpoint per 1000-entry batch.
fn large_log(dir: &std::path::Path, n: u64, version: u8) -> std::path::PathBuf {
    let path = dir.join(format!("large-v{version}.redb"));
    let mut store = Store::create_versioned(
        &path,
        "bench.example/log",
        fixtures::genesis_signer(),
        T0,
        version,
    )
    .expect("create");
    while store.size() < n {
        let k = (n - store.size()).min(1000) as usize;
        store
            .append(&make_batch(store.size(), k, T0))
            .expect("append");
    }
    path
}

fn verify_and_proofs(c: &mut Criterion) {
    let dir = bench_dir();
    let n = large_entries();
    let v1 = ReadOnlyStore::open(&large_log(dir.path(), n, 1)).expect("open");
    let v1 = v1.snapshot().expect("snapshot");
    let path = large_log(dir.path(), n, entry::FORMAT_VERSION);
    let ro = ReadOnlyStore::open(&path).expect("open");
    let snap = ro.snapshot().expect("snapshot");
    let size = snap.size();
    let key = fixtures::genesis_signer().public().clone();
    let mut bundle = Vec::new();
    snap.export(&mut bundle, |_| {}).expect("export");
    let mut bundle_v1 = Vec::new();
    v1.export(&mut bundle_v1, |_| {}).expect("export");

    let mut g = c.benchmark_group("verify");
    g.sample_size(10).measurement_time(Duration::from_secs(15));
    g.throughput(Throughput::Elements(size));
    g.bench_function("store", |b| {
        b.iter(|| snap.verify(&key, |_| {}).expect("verify"))
    });
    g.bench_function("store_v1", |b| {
        b.iter(|| v1.verify(&key, |_| {}).expect("verify"))
    });
    g.bench_function("bundle", |b| {
        b.iter(|| verify_bundle(bundle.as_slice(), &key, |_| {}).expect("verify"))
    });
    g.bench_function("bundle_v1", |b| {
        b.iter(|| verify_bundle(bundle_v1.as_slice(), &key, |_| {}).expect("verify"))
    });
    drop(bundle_v1);
    let raw: Vec<Vec<u8>> = snap
        .rows(..)
        .expect("scan")
        .map(|s| s.expect("scan").bytes().to_vec())
        .collect();
    g.bench_function("blake3_only", |b| {
        b.iter(|| {
            for e in &raw {
                black_box(ledger::hash::leaf_hash(e));
            }
        })
    });
    g.bench_function("blake3_and_sha256", |b| {
        let tree = ledger::hash::TreeHash::Sha256;
        b.iter(|| {
            for e in &raw {
                black_box(ledger::hash::leaf_hash(e));
                black_box(tree.leaf(e));
            }
        })
    });
    g.finish();
    drop(raw);

    let mut g = c.benchmark_group("proof");
    let latest = size;
    let mut seq = 0x9e37_79b9u64;
    g.bench_function("inclusion_generate", |b| {
        b.iter(|| {
            seq = seq.wrapping_mul(6364136223846793005).wrapping_add(1);
            black_box(snap.inclusion_proof(seq % latest, None).expect("proof"))
        })
    });
    let keys = [key.clone()];
    let proof = snap.inclusion_proof(latest / 3, None).expect("proof");
    g.bench_function("inclusion_verify", |b| {
        b.iter(|| black_box(proof.verify(&keys).expect("valid")))
    });
    let from = 1 + 1000 * ((latest / 2) / 1000);
    g.bench_function("consistency_generate", |b| {
        b.iter(|| black_box(snap.consistency_proof(from, latest).expect("proof")))
    });
    let cproof = snap.consistency_proof(from, latest).expect("proof");
    g.bench_function("consistency_verify", |b| {
        b.iter(|| black_box(cproof.verify(&keys).expect("valid")))
    });
    g.finish();
}

criterion_group!(benches, append, verify_and_proofs);
criterion_main!(benches);
