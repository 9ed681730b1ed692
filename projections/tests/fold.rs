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

/// A Pruned rollout's host records are final: the fold ignores host events about it (no
/// decision makes them), so a fold that keeps them, one that drops them and one that hands
/// them out agree on everything else, and the kept records are the ones handed out.
#[test]
fn host_events_of_a_pruned_rollout_change_nothing_whatever_the_fold_keeps() {
    let mut sim = fixtures::sim::Sim::new(5, 40);
    let mut events: Vec<(i64, Event)> = Vec::new();
    let mut pruned = None;
    while pruned.is_none() {
        for g in sim.tick() {
            for e in g.events {
                if let Event::RolloutTransitioned(t) = &e
                    && t.to == ledger::domain::RolloutState::Pruned
                {
                    pruned.get_or_insert(t.rollout_id.clone());
                }
                events.push((g.at, e));
            }
        }
    }
    let pruned = pruned.unwrap();
    // A join and a report about the Pruned rollout, as a forged log could hold.
    let at = events.last().unwrap().0;
    let host = sim.state().hosts_of(&pruned).next().unwrap().clone();
    events.push((
        at,
        Event::HostJoined(ledger::event::HostJoined {
            rollout_id: pruned.clone(),
            host: ledger::event::HostAssignment {
                hostname: "web-late".into(),
                wave: 0,
                target_closure: host.target_closure.clone(),
            },
        }),
    ));
    events.push((
        at,
        Event::AgentEventRecorded(ledger::event::AgentEventRecorded {
            rollout_id: pruned.clone(),
            hostname: host.hostname.clone(),
            agent_seq: 999,
            report: ledger::domain::AgentReport::ActivationStarted {
                started_at: at,
                switch_method: "switch".into(),
            },
        }),
    ));
    let fold = |s: State| {
        let mut s = s;
        for (i, (at, e)) in events.iter().enumerate() {
            s.apply(i as u64 + 1, *at, e);
        }
        s
    };
    let kept = fold(State::untracked());
    let dropped = fold(State::untracked().dropping_retired());
    let mut handed = fold(State::untracked().handing_retired());
    let kept_records: Vec<_> = kept.hosts_of(&pruned).cloned().collect();
    assert!(kept_records.iter().all(|r| r.hostname != "web-late"));
    assert_eq!(kept.hosts.get(&pruned, &host.hostname), Some(&host));
    let out = handed.take_retired();
    let out: Vec<_> = out.into_iter().filter(|r| r.rollout == pruned).collect();
    assert_eq!(
        out[0]
            .hosts
            .iter()
            .map(|(_, r)| r.clone())
            .collect::<Vec<_>>(),
        kept_records
    );
    for other in [&dropped, &handed] {
        assert_eq!(other.hosts_of(&pruned).count(), 0);
        assert_eq!(other.rollouts, kept.rollouts);
        assert_eq!(other.probe_failures, kept.probe_failures);
        assert_eq!(
            other.hosts.len() as u64 + other.forgotten_hosts(),
            kept.hosts.len() as u64
        );
    }
}
