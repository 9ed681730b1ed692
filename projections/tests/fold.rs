//! The fold's one promise, on the in-memory tables (no redb, no daemon): whatever the
//! batching, rows flushed batch by batch, as the writer stages and commits them, equal a
//! rebuild from the log byte for byte, and loading them gives back the fold.

use ledger::event::{Event, Genesis};
use ledger::tables::MemTables;
use projections::State;
use proptest::prelude::*;

/// A simulated fleet's groups, the CP time of its genesis, and the simulation's own fold.
fn history(seed: u64, ticks: usize) -> (i64, Vec<fixtures::sim::Group>, State) {
    let mut sim = fixtures::sim::Sim::new(seed, 24);
    let start = sim.now();
    let groups = (0..ticks).flat_map(|_| sim.tick()).collect();
    (start, groups, sim.state().clone())
}

/// The rows of every table (a table that lost its last row and one never written are alike).
fn rows(t: &MemTables) -> Vec<(&str, &Vec<u8>, &Vec<u8>)> {
    t.tables
        .iter()
        .flat_map(|(name, rows)| rows.iter().map(move |(k, v)| (*name, k, v)))
        .collect()
}

fn genesis() -> Event {
    Event::Genesis(Genesis {
        origin: "fold.example/cp".into(),
        key: fixtures::genesis_signer().public().record(),
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    #[test]
    fn flushed_batches_equal_a_rebuild_and_load_back_as_the_fold(
        seed in 1u64..1000,
        ticks in 20usize..250,
        batch in 1usize..40,
    ) {
        let (start, groups, simulated) = history(seed, ticks);

        // As the writer: a new ledger is a rebuild of its genesis; then each batch's events
        // are folded (staged) and the rows they changed flushed (committed) together.
        let mut tables = MemTables::default();
        let mut incremental = State::untracked();
        incremental.apply(0, start, &genesis());
        incremental.set_tracking(true);
        incremental.write_all(&mut tables).unwrap();
        let mut seq = 1;
        for chunk in groups.chunks(batch) {
            for g in chunk {
                for e in &g.events {
                    incremental.apply(seq, g.at, e);
                    seq += 1;
                }
            }
            incremental.flush(&mut tables).unwrap();
        }

        // A rebuild: one untracked fold of the whole log, every table written afresh.
        let mut folded = State::untracked();
        folded.apply(0, start, &genesis());
        for g in &groups {
            for e in &g.events {
                folded.apply(folded.next_seq, g.at, e);
            }
        }
        // As `rebuild` does: tracking on once the fold is done, then every table written.
        folded.set_tracking(true);
        prop_assert_eq!(&incremental, &folded);
        prop_assert_eq!(&folded, &simulated, "the simulation's own fold agrees");
        let mut rebuilt = MemTables::default();
        folded.write_all(&mut rebuilt).unwrap();
        prop_assert!(rows(&rebuilt) == rows(&tables), "flushed rows differ from a rebuild");

        // What `check` does (compare), and what opening does (load).
        prop_assert_eq!(folded.diff(&tables).unwrap(), None);
        let loaded = State::load(&tables).unwrap();
        prop_assert_eq!(loaded.next_seq, folded.next_seq);
        prop_assert_eq!(&loaded.rollouts, &folded.rollouts);
        prop_assert_eq!(&loaded.hosts, &folded.hosts);
        prop_assert_eq!(&loaded.deferrals, &folded.deferrals);
        prop_assert_eq!(&loaded.dispatch_queue, &folded.dispatch_queue);
    }
}
