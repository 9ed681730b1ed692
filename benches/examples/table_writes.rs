//! What the projections write per batch: folds the simulated stream `--bench append_pair`
//! appends (400 batches of 1,000 entries, 2,000 hosts) and counts, per table, the rows put or
//! deleted and the bytes put, with the mix of event kinds. No store: a diagnostic for where
//! an append's extra work goes, not a timing.
//!
//! `cargo run --release -p fleet-ledger-benches --example table_writes`

use std::collections::BTreeMap;

use ledger::tables::{TableError, TableWriter};

/// Per table: rows written (puts and deletes), bytes put (keys and values), largest value.
#[derive(Default)]
struct Counts(BTreeMap<&'static str, (u64, u64, usize)>);

impl TableWriter for Counts {
    fn put(&mut self, table: &'static str, key: &[u8], value: &[u8]) -> Result<(), TableError> {
        let c = self.0.entry(table).or_default();
        c.0 += 1;
        c.1 += (key.len() + value.len()) as u64;
        c.2 = c.2.max(value.len());
        Ok(())
    }
    fn delete(&mut self, table: &'static str, _: &[u8]) -> Result<(), TableError> {
        self.0.entry(table).or_default().0 += 1;
        Ok(())
    }
    fn clear(&mut self, _: &'static str) -> Result<(), TableError> {
        Ok(())
    }
}

fn main() {
    const BATCHES: usize = 400;
    let (_, stream) = fleet_ledger_benches::batches(BATCHES as u64 * 1000 + 1000, 2000);
    let mut state = projections::State::default();
    let mut counts = Counts::default();
    let mut kinds: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut payload = 0usize;
    let mut seq = 1u64;
    for batch in stream.iter().take(BATCHES) {
        for e in batch {
            *kinds.entry(e.event.kind().name()).or_default() += 1;
            payload += e.event.encode_payload().len();
            state.apply(seq, e.recorded_at_us, &e.event);
            seq += 1;
        }
        state.flush(&mut counts).expect("counting cannot fail");
    }
    let per = |n: f64| n / BATCHES as f64;
    println!("{BATCHES} batches; entries by kind: {kinds:?}");
    println!("event payloads: {:.0} bytes per batch", per(payload as f64));
    println!(
        "{:28} {:>10} {:>12} {:>10}",
        "table", "rows/batch", "bytes/batch", "max value"
    );
    for (table, (rows, bytes, max)) in counts.0 {
        println!(
            "{table:28} {:10.1} {:12.0} {max:10}",
            per(rows as f64),
            per(bytes as f64)
        );
    }
}
