//! Append with projections against append without, at batch 1000, interleaved.
//!
//! `--bench projections` (criterion) runs `append_1000/with_projections` for a few seconds,
//! then `without_projections`: on this machine the fsync latency and the CPU share drift
//! within seconds, so the two figures come from different weather, and the with-ledger's
//! tables are larger by the time it stops. Here both ledgers take the same simulated batches
//! in turn, round after round (which goes first alternates), so drift and growth hit both
//! alike. Medians of `FLEET_PAIR_ROUNDS` rounds (default 400 batches of 1000 entries), and
//! the ratio of total times.
//!
//! `cargo bench -p fleet-ledger-benches --bench append_pair`

use std::time::{Duration, Instant};

use fleet_ledger_benches::{batches, bench_dir, env_or, ledger_pair, selected};

/// The allocator the `fleet-ledger` binary runs with, so the library is measured as it ships.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Where the extra time goes: batches grouped by their most frequent event kind (and
/// whether they wrote an entry-index block), with the summed with-minus-without time.
fn detail(stream: &[Vec<ledger::store::NewEntry>], w: &[Duration], wo: &[Duration]) {
    use std::collections::BTreeMap;
    let mut groups: BTreeMap<String, (usize, f64, f64)> = BTreeMap::new();
    let mut seq = 1u64;
    for (i, b) in stream.iter().enumerate() {
        let mut kinds: BTreeMap<&'static str, usize> = BTreeMap::new();
        for e in b {
            *kinds.entry(e.event.kind().name()).or_default() += 1;
        }
        let top = kinds
            .iter()
            .max_by_key(|(_, n)| **n)
            .map_or("-", |(k, _)| k);
        let crosses = (seq / 16_384) != ((seq + b.len() as u64) / 16_384);
        seq += b.len() as u64;
        let g = groups
            .entry(format!("{top}{}", if crosses { " +index" } else { "" }))
            .or_default();
        g.0 += 1;
        g.1 += (w[i].as_secs_f64() - wo[i].as_secs_f64()) * 1e3;
        g.2 += wo[i].as_secs_f64() * 1e3;
    }
    for (k, (n, extra, base)) in groups {
        println!(
            "  {k:32} {n:4} batches  extra {extra:8.1} ms total, {:5.2} ms each (base {:5.2})",
            extra / n as f64,
            base / n as f64
        );
    }
}

fn main() {
    if !selected("append_pair") {
        return;
    }
    let rounds: usize = env_or("FLEET_PAIR_ROUNDS", 400);
    let (start, stream) = batches(rounds as u64 * 1000 + 1000, 2000);
    let dir = bench_dir();
    let (mut with, mut without) = ledger_pair(dir.path(), start);
    let (mut w, mut wo) = (Vec::new(), Vec::new());
    let mut entries = 0usize;
    for (i, batch) in stream.iter().take(rounds).enumerate() {
        entries += batch.len();
        for k in 0..2 {
            if (i + k) % 2 == 0 {
                // The copy is the harness's (the ledger takes its batch by value).
                let batch = batch.clone();
                let s = Instant::now();
                with.append(batch).expect("append");
                w.push(s.elapsed());
            } else {
                let s = Instant::now();
                without.append(batch).expect("append");
                wo.push(s.elapsed());
            }
        }
    }
    let per_batch = entries as f64 / w.len() as f64;
    // Totals include the batches that also write an entry-index block (one in 16), which
    // the medians leave out.
    let (tw, two): (Duration, Duration) = (w.iter().sum(), wo.iter().sum());
    let (wv, wov) = (w.clone(), wo.clone());
    let (w, wo) = (median(&mut w), median(&mut wo));
    let rate = |d: Duration| per_batch / d.as_secs_f64() / 1000.0;
    println!(
        "append, batches of ~{per_batch:.0} simulated entries, medians of {} interleaved rounds:",
        rounds
    );
    println!(
        "  with projections     {:7.2} ms  {:6.1}k entries/s",
        w.as_secs_f64() * 1e3,
        rate(w)
    );
    println!(
        "  without projections  {:7.2} ms  {:6.1}k entries/s",
        wo.as_secs_f64() * 1e3,
        rate(wo)
    );
    println!(
        "  with / without       {:.0}% of the throughput",
        100.0 * wo.as_secs_f64() / w.as_secs_f64()
    );
    if env_or("FLEET_PAIR_DETAIL", 0) == 1 {
        detail(&stream[..rounds], &wv, &wov);
    }
    println!(
        "  totals               {:.2} s with, {:.2} s without: {:.0}%",
        tw.as_secs_f64(),
        two.as_secs_f64(),
        100.0 * two.as_secs_f64() / tw.as_secs_f64()
    );
}
