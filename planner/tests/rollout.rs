//! The rollout state machine: DOMAIN §9.2 scenarios, the fixed defects, and properties.

mod common;

use common::*;
use ledger::domain::{HostState, OnHealthFailure, RolloutState};
use ledger::event::{Event, RolloutCause};
use planner::{RolloutInput, RolloutRejection};

use RolloutState as R;

fn state(f: &Fleet, r: &str) -> R {
    f.state.rollouts[&rid(r)].state
}

#[test]
fn opening_goes_through_the_machine_and_the_first_join_activates() {
    let mut f = Fleet::new();
    let events = f.open(&rid("stable@a1"), &[("web-02", 1), ("web-01", 0)], T0);
    let kinds: Vec<_> = events.iter().map(|e| e.kind().name()).collect();
    assert_eq!(
        kinds,
        [
            "RolloutOpened",
            "HostJoined",
            "HostJoined",
            "RolloutTransitioned"
        ]
    );
    assert_eq!(state(&f, "stable@a1"), R::Active);
    // A host in wave 1 joining does not move the cursor (D-027).
    assert_eq!(f.state.rollouts[&rid("stable@a1")].current_wave, 0);
    // Hosts join in (wave, name) order, whatever the manifest's order.
    assert!(matches!(&events[1], Event::HostJoined(j) if j.host.hostname == "web-01"));
}

#[test]
fn opening_without_superseding_the_active_rollout_is_refused() {
    let mut f = Fleet::new();
    f.open(&rid("stable@a1"), &[("web-01", 0)], T0);
    let err = planner::decide_open(&f.state, &rid("stable@b2"), [1; 32], &[], &[]).unwrap_err();
    assert!(
        matches!(err, RolloutRejection::SupersessionExpected { ref active, .. } if *active == rid("stable@a1")),
        "{err}"
    );
    // Another channel is unaffected, and reopening an existing rollout is illegal.
    assert!(planner::decide_open(&f.state, &rid("edge@a1"), [1; 32], &[], &[]).is_ok());
    assert!(matches!(
        planner::decide_open(
            &f.state,
            &rid("stable@a1"),
            [1; 32],
            &[],
            &[rid("stable@a1")]
        ),
        Err(RolloutRejection::IllegalForState { .. })
    ));
}

#[test]
fn a_successor_supersedes_and_records_who() {
    let mut f = Fleet::new();
    f.open(&rid("stable@a1"), &[("web-01", 0)], T0);
    f.open(&rid("stable@b2"), &[("web-01", 0)], T0 + MIN);
    assert_eq!(state(&f, "stable@a1"), R::Superseded);
    let old = &f.state.rollouts[&rid("stable@a1")];
    assert_eq!(old.superseded_by, Some(rid("stable@b2")));
    assert_eq!(old.superseded_at, Some(T0 + MIN));
    assert_eq!(state(&f, "stable@b2"), R::Active);
    // Superseded ignores host changes and may be pruned.
    let events = f
        .rollout_input(
            &rid("stable@a1"),
            RolloutInput::HostStateChanged {
                hostname: "web-01".into(),
                to: HostState::Failed,
            },
            T0,
        )
        .unwrap();
    assert!(events.is_empty());
    f.rollout_input(&rid("stable@a1"), RolloutInput::RetentionExpired, T0)
        .unwrap();
    assert_eq!(state(&f, "stable@a1"), R::Pruned);
}

#[test]
fn a_host_failure_fails_the_rollout_and_its_rollback_reverts_it() {
    let r = rid("stable@a1");
    let mut f = Fleet::new();
    f.open(&r, &[("web-01", 0), ("web-02", 0)], T0);
    drive_to(&mut f, &r, "web-01", HostState::Failed);
    assert_eq!(state(&f, "stable@a1"), R::Failed);
    drive_to(&mut f, &r, "web-02", HostState::Converged);
    assert_eq!(
        state(&f, "stable@a1"),
        R::Failed,
        "a late convergence does not undo a failure"
    );
    f.feed(
        &r,
        "web-01",
        agent(
            3,
            ledger::domain::AgentReport::RollbackComplete {
                reverted_to_closure: PRIOR.into(),
                exit_code: 0,
                completed_at: T0 + 3,
            },
        ),
        T0,
        OnHealthFailure::RollbackAndHalt,
    )
    .unwrap();
    assert_eq!(state(&f, "stable@a1"), R::Reverted);
    let cause = f.log.iter().rev().find_map(|e| match e {
        Event::RolloutTransitioned(t) => Some(t.cause.clone()),
        _ => None,
    });
    assert_eq!(
        cause,
        Some(RolloutCause::HostReverted {
            hostname: "web-01".into()
        })
    );
}

#[test]
fn waves_advance_only_through_events_and_the_last_wave_is_converging() {
    let r = rid("stable@a1");
    let mut f = Fleet::new();
    f.open(&r, &[("a", 0), ("b", 1), ("c", 2)], T0);
    let advance = |f: &mut Fleet| {
        f.rollout_input(&r, RolloutInput::AdvanceWave { waves: 3 }, T0)
            .unwrap()
    };
    assert!(advance(&mut f).is_empty(), "wave 0 not done");
    drive_to(&mut f, &r, "a", HostState::Deferred);
    let events = advance(&mut f);
    assert!(matches!(&events[..], [Event::WaveAdvanced(w)] if (w.from_wave, w.to_wave) == (0, 1)));
    assert_eq!(
        (state(&f, "stable@a1"), f.state.rollouts[&r].current_wave),
        (R::Active, 1)
    );
    drive_to(&mut f, &r, "b", HostState::Converged);
    let events = advance(&mut f);
    assert_eq!(events.len(), 2);
    assert_eq!(
        (state(&f, "stable@a1"), f.state.rollouts[&r].current_wave),
        (R::Converging, 2)
    );
    assert!(advance(&mut f).is_empty(), "no wave past the last");
    // Terminal needs every host Converged: the Deferred host holds it back.
    drive_to(&mut f, &r, "c", HostState::Converged);
    assert_eq!(state(&f, "stable@a1"), R::Converging);
    f.feed(
        &r,
        "a",
        agent(3, completed(TARGET, T0 + 1)),
        T0 + 10 * MIN,
        OnHealthFailure::Halt,
    )
    .unwrap();
    f.feed(
        &r,
        "a",
        agent(4, converged(TARGET, T0 + 6 * MIN)),
        T0 + 10 * MIN,
        OnHealthFailure::Halt,
    )
    .unwrap();
    assert_eq!(state(&f, "stable@a1"), R::Terminal);
    assert_eq!(f.state.rollouts[&r].terminal_at, Some(T0 + 10 * MIN));
    assert!(matches!(
        f.rollout_input(&r, RolloutInput::AdvanceWave { waves: 3 }, T0),
        Err(RolloutRejection::IllegalForState { .. })
    ));
}

#[test]
fn retention_prunes_finished_rollouts_only_and_pruned_absorbs_everything() {
    let r = rid("stable@a1");
    let mut f = Fleet::new();
    f.open(&r, &[("a", 0)], T0);
    assert!(matches!(
        f.rollout_input(&r, RolloutInput::RetentionExpired, T0),
        Err(RolloutRejection::IllegalForState {
            from: R::Active,
            ..
        })
    ));
    drive_to(&mut f, &r, "a", HostState::Converged);
    f.rollout_input(&r, RolloutInput::RetentionExpired, T0)
        .unwrap();
    assert_eq!(state(&f, "stable@a1"), R::Pruned);
    for input in [
        RolloutInput::RetentionExpired,
        RolloutInput::AdvanceWave { waves: 2 },
        RolloutInput::HostStateChanged {
            hostname: "a".into(),
            to: HostState::Failed,
        },
        RolloutInput::OperatorClearance {
            operator: "o".into(),
            reason: "r".into(),
        },
    ] {
        assert!(f.rollout_input(&r, input, T0).is_err());
    }
    // The host record and the rollout stay in the state: pruning deletes nothing.
    assert!(f.state.hosts.get(&r, "a").is_some());
}

#[test]
fn operator_clearance_releases_a_failed_rollout_for_ordering() {
    let r = rid("stable@a1");
    let mut f = Fleet::new();
    f.open(&r, &[("a", 0)], T0);
    assert!(
        f.rollout_input(
            &r,
            RolloutInput::OperatorClearance {
                operator: "alice".into(),
                reason: "x".into()
            },
            T0
        )
        .is_err()
    );
    drive_to(&mut f, &r, "a", HostState::Failed);
    assert!(!f.state.rollouts[&r].is_finished_for_ordering());
    let events = f
        .rollout_input(
            &r,
            RolloutInput::OperatorClearance {
                operator: "alice".into(),
                reason: "bad closure, pushing a fix".into(),
            },
            T0,
        )
        .unwrap();
    assert!(matches!(&events[..], [Event::RolloutCleared(c)] if c.operator == "alice"));
    let rec = &f.state.rollouts[&r];
    assert_eq!(
        rec.state,
        R::Failed,
        "clearance keeps the failure in history"
    );
    assert!(rec.is_finished_for_ordering());
    // A second clearance is a no-op.
    assert!(
        f.rollout_input(
            &r,
            RolloutInput::OperatorClearance {
                operator: "bob".into(),
                reason: "y".into()
            },
            T0
        )
        .unwrap()
        .is_empty()
    );
}

mod props {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Random host outcomes and rollout inputs: the cursor never moves back, every
        /// transition's `from` is the state it left, Terminal ⇒ terminal_at and all hosts
        /// Converged, Superseded ⇒ superseded_at, Pruned absorbs.
        #[test]
        fn rollout_machine_invariants(ops in prop::collection::vec((0u8..6, 0usize..3, 0usize..7), 1..30)) {
            let r = rid("stable@a1");
            let hosts = ["h0", "h1", "h2"];
            let mut f = Fleet::new();
            f.open(&r, &[("h0", 0), ("h1", 1), ("h2", 1)], T0);
            let mut wave = 0;
            let mut was_pruned = false;
            for (op, h, s) in ops {
                let before = f.state.rollouts[&r].clone();
                let outcome = match op {
                    0 | 1 => {
                        let target = HostState::ALL[s];
                        let host = hosts[h];
                        if was_pruned {
                            let err = f.feed(&r, host, agent(1, ack(T0)), T0, OnHealthFailure::Halt).unwrap_err();
                            prop_assert_eq!(err.code(), "rollout-pruned");
                        } else if before.state == R::Superseded {
                            // Host records of a superseded rollout are final (DECISIONS 111).
                            let err = f.feed(&r, host, agent(99, ack(T0)), T0, OnHealthFailure::Halt).unwrap_err();
                            prop_assert_eq!(err.code(), "rollout-superseded");
                        } else if f.host(&r, host).state == HostState::Pending && target != HostState::Pending {
                            drive_to(&mut f, &r, host, target);
                        }
                        Ok(())
                    }
                    2 => f.rollout_input(&r, RolloutInput::AdvanceWave { waves: 2 }, T0).map(|_| ()),
                    3 => f.rollout_input(&r, RolloutInput::RetentionExpired, T0).map(|_| ()),
                    4 => f.rollout_input(&r, RolloutInput::OperatorClearance { operator: "o".into(), reason: "r".into() }, T0).map(|_| ()),
                    _ => {
                        let successor = rid(&format!("stable@b{s}{h}"));
                        if !f.state.rollouts.contains_key(&successor) {
                            f.open(&successor, &[], T0);
                        }
                        Ok(())
                    }
                };
                let after = &f.state.rollouts[&r];
                if was_pruned {
                    prop_assert_eq!(&before, after);
                    prop_assert!(outcome.is_err() || op < 2 || op == 5);
                }
                prop_assert!(after.current_wave >= wave);
                wave = after.current_wave;
                if after.state == R::Terminal {
                    prop_assert!(after.terminal_at.is_some());
                    prop_assert!(f.state.hosts_of(&r).all(|h| h.state == HostState::Converged));
                }
                if after.state == R::Superseded {
                    prop_assert!(after.superseded_at.is_some() && after.superseded_by.is_some());
                }
                was_pruned = after.state == R::Pruned;
            }
            // Every recorded transition starts where the previous one ended.
            let mut cur = R::Opening;
            for e in &f.log {
                if let Event::RolloutTransitioned(t) = e && t.rollout_id == r {
                    prop_assert_eq!(t.from, cur);
                    prop_assert_ne!(t.from, t.to);
                    cur = t.to;
                }
            }
        }
    }
}

/// 8 states × 4 inputs (and opening), as a table: the outcome of each pair.
#[test]
fn exhaustive_rollout_state_input_table() {
    use RolloutInput as I;
    #[derive(Debug, PartialEq)]
    enum Out {
        Illegal,
        NoOp,
        To(R),
        Cleared,
    }
    let inputs = || {
        vec![
            (
                "host-failed",
                I::HostStateChanged {
                    hostname: "a".into(),
                    to: HostState::Failed,
                },
            ),
            (
                "host-reverted",
                I::HostStateChanged {
                    hostname: "a".into(),
                    to: HostState::Reverted,
                },
            ),
            (
                "host-soaking",
                I::HostStateChanged {
                    hostname: "a".into(),
                    to: HostState::Soaking,
                },
            ),
            ("advance", I::AdvanceWave { waves: 3 }),
            ("retention", I::RetentionExpired),
            (
                "clearance",
                I::OperatorClearance {
                    operator: "o".into(),
                    reason: "r".into(),
                },
            ),
        ]
    };
    use Out::*;
    let table: &[(R, [Out; 6])] = &[
        (
            R::Opening,
            [Illegal, Illegal, Illegal, Illegal, Illegal, Illegal],
        ),
        (
            R::Active,
            [To(R::Failed), To(R::Reverted), NoOp, NoOp, Illegal, Illegal],
        ),
        (
            R::Converging,
            [To(R::Failed), To(R::Reverted), NoOp, NoOp, Illegal, Illegal],
        ),
        (
            R::Terminal,
            [NoOp, NoOp, NoOp, Illegal, To(R::Pruned), Illegal],
        ),
        (
            R::Reverted,
            [NoOp, NoOp, NoOp, NoOp, To(R::Pruned), Cleared],
        ),
        (
            R::Failed,
            [NoOp, To(R::Reverted), NoOp, NoOp, To(R::Pruned), Cleared],
        ),
        (
            R::Superseded,
            [NoOp, NoOp, NoOp, NoOp, To(R::Pruned), Illegal],
        ),
        (
            R::Pruned,
            [Illegal, Illegal, Illegal, Illegal, Illegal, Illegal],
        ),
    ];
    assert_eq!(table.len(), R::ALL.len());
    for (state, outs) in table {
        for ((name, input), want) in inputs().into_iter().zip(outs) {
            // A state built directly: one rollout, two Pending hosts (wave 0 and 1), forced state.
            let r = rid("stable@a1");
            let mut f = Fleet::new();
            f.open(&r, &[("a", 0), ("b", 1)], T0);
            f.state.rollouts.get_mut(&r).unwrap().state = *state;
            let got = match planner::decide_rollout(&f.state, &r, &input, T0) {
                Err(RolloutRejection::IllegalForState { .. }) => Illegal,
                Err(e) => panic!("{state:?} + {name}: {e}"),
                Ok(events) => match &events[..] {
                    [] => NoOp,
                    [Event::RolloutTransitioned(t)] => To(t.to),
                    [Event::RolloutCleared(_)] => Cleared,
                    other => panic!("{state:?} + {name}: {other:?}"),
                },
            };
            assert_eq!(&got, want, "{state:?} + {name}");
        }
    }
}
