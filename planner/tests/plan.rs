//! The planner and its gates: DOMAIN §9.3 scenarios, the fixes, and determinism.

mod common;

use common::*;
use ledger::domain::{HostState, OnHealthFailure, RolloutId};
use ledger::event::{Event, GateBlock, HostAssignment};
use planner::{Budget, Decision, Edge, FleetView, Manifests, RolloutManifest, RolloutPolicy, plan};

/// A fleet: channel `stable` with the given waves, optional more channels.
fn manifests(channels: &[(&str, &str, Vec<Vec<&str>>)]) -> Manifests {
    let mut m = Manifests::default();
    m.fleet.rollout_policies.insert(
        "canary".into(),
        RolloutPolicy {
            wave_soak_minutes: vec![5, 30],
            on_health_failure: OnHealthFailure::RollbackAndHalt,
        },
    );
    for (channel, channel_ref, waves) in channels {
        m.fleet
            .channels
            .insert(channel.to_string(), "canary".into());
        let mut host_set = Vec::new();
        for (i, wave) in waves.iter().enumerate() {
            for h in wave {
                m.fleet.hosts.insert(h.to_string(), channel.to_string());
                host_set.push(HostAssignment {
                    hostname: h.to_string(),
                    wave: i as u32,
                    target_closure: TARGET.into(),
                });
            }
        }
        m.fleet.waves.insert(
            channel.to_string(),
            waves
                .iter()
                .map(|w| w.iter().map(|h| h.to_string()).collect())
                .collect(),
        );
        let rollout_id = RolloutId::new(channel, channel_ref).unwrap();
        m.rollouts.insert(
            channel.to_string(),
            RolloutManifest {
                rollout_id,
                manifest_hash: [3; 32],
                host_set,
                budgets: vec![],
            },
        );
    }
    m
}

#[derive(Default)]
struct Views {
    compliance_unavailable: bool,
}

fn run(f: &Fleet, m: &Manifests, v: &Views) -> Vec<Decision> {
    let view = FleetView {
        state: &f.state,
        compliance_available: !v.compliance_unavailable,
    };
    plan(&view, m, T0 + 60 * MIN)
}

fn quarantine(f: &mut Fleet, channel: &str) {
    f.append(
        &[Event::QuarantineAdded(ledger::event::QuarantineAdded {
            channel: channel.into(),
            closure: TARGET.into(),
            rollout_id: rid("other@ee"),
            hostname: "x".into(),
        })],
        T0,
    );
}

fn failing(f: &mut Fleet, r: &RolloutId, host: &str, controls: &[&str]) {
    for c in controls {
        f.append(
            &[Event::ProbeFailureRecorded(
                ledger::event::ProbeFailureRecorded {
                    rollout_id: r.clone(),
                    hostname: host.into(),
                    probe_name: "evidence".into(),
                    control_id: Some(c.to_string()),
                    framework: Some("nis2-essential".into()),
                    observed_at: T0,
                },
            )],
            T0,
        );
    }
}

/// Opens everything the manifests name, applying the planner's own decisions.
fn opened(m: &Manifests) -> Fleet {
    let mut f = Fleet::new();
    for d in run(&f, m, &Views::default()) {
        if let Decision::OpenRollout { events, .. } = d {
            f.append(&events, T0);
        }
    }
    f
}

fn dispatched(d: &[Decision]) -> Vec<String> {
    d.iter()
        .filter_map(|d| match d {
            Decision::QueueDispatch { dispatch, .. } => Some(dispatch.hostname.clone()),
            _ => None,
        })
        .collect()
}

fn block_of<'a>(d: &'a [Decision], host: &str) -> Option<&'a GateBlock> {
    d.iter().find_map(|d| match d {
        Decision::Block(g) if g.hostname == host => g.block.as_ref(),
        _ => None,
    })
}

#[test]
fn opens_the_rollout_a_manifest_names_keyed_by_rollout_id() {
    let m = manifests(&[("stable", "ab12", vec![vec!["web-01"]])]);
    let d = run(&Fleet::new(), &m, &Views::default());
    assert!(
        matches!(&d[..], [Decision::OpenRollout { rollout_id, .. }] if rollout_id.to_string() == "stable@ab12")
    );
    // Two channels sharing a ref are two rollouts.
    let m = manifests(&[
        ("stable", "dead", vec![vec!["a"]]),
        ("edge", "dead", vec![vec!["b"]]),
    ]);
    let f = opened(&m);
    assert_eq!(f.state.rollouts.len(), 2);
}

#[test]
fn queues_a_pending_host_with_no_gate_blocking_and_computes_soak_at_dispatch() {
    let m = manifests(&[("stable", "ab12", vec![vec!["web-01"]])]);
    let f = opened(&m);
    let d = run(&f, &m, &Views::default());
    let [
        Decision::QueueDispatch {
            dispatch,
            cleared: None,
        },
    ] = &d[..]
    else {
        panic!("{d:?}")
    };
    assert_eq!(dispatch.hostname, "web-01");
    // now (T0 + 60 min) + wave 0's 5-minute soak: computed at dispatch, not at open.
    assert_eq!(dispatch.soak_due_at, T0 + 65 * MIN);
}

#[test]
fn acked_and_already_queued_hosts_are_skipped() {
    let m = manifests(&[("stable", "ab12", vec![vec!["a", "b"]])]);
    let mut f = opened(&m);
    let r = rid("stable@ab12");
    drive_to(&mut f, &r, "a", HostState::Activating);
    f.dispatch(&r, "b", T0, 5 * MIN);
    assert!(dispatched(&run(&f, &m, &Views::default())).is_empty());
}

#[test]
fn quarantine_gate_reads_the_quarantine_model() {
    let m = manifests(&[("stable", "ab12", vec![vec!["a"]])]);
    let mut f = opened(&m);
    quarantine(&mut f, "stable");
    let d = run(&f, &m, &Views::default());
    assert!(dispatched(&d).is_empty());
    assert_eq!(block_of(&d, "a").map(GateBlock::gate), Some("quarantine"));
    // Another channel's quarantine of the same closure does not block.
    let mut f = opened(&m);
    quarantine(&mut f, "edge");
    assert_eq!(dispatched(&run(&f, &m, &Views::default())), ["a"]);
}

#[test]
fn channel_edges_follow_the_predecessors_current_rollout() {
    let mut m = manifests(&[
        ("infra", "aa", vec![vec!["i1"]]),
        ("stable", "bb", vec![vec!["s1"]]),
    ]);
    m.fleet.channel_edges.push(Edge {
        gated: "stable".into(),
        gates: "infra".into(),
    });
    // Predecessor manifest present, rollout not opened yet: block (fresh-boot protection).
    let empty = Fleet::new();
    let mut f = Fleet::new();
    let open_infra_only = run(&empty, &m, &Views::default());
    for d in open_infra_only {
        if let Decision::OpenRollout { rollout_id, events } = d
            && rollout_id.channel == "stable"
        {
            f.append(&events, T0);
        }
    }
    let d = run(&f, &m, &Views::default());
    assert!(matches!(
        block_of(&d, "s1"),
        Some(GateBlock::ChannelEdges {
            predecessor_rollout: None,
            ..
        })
    ));
    // Predecessor active: block.
    let mut f = opened(&m);
    let d = run(&f, &m, &Views::default());
    assert_eq!(dispatched(&d), ["i1"]);
    assert!(matches!(
        block_of(&d, "s1"),
        Some(GateBlock::ChannelEdges {
            predecessor_rollout: Some(_),
            ..
        })
    ));
    // Predecessor terminal: pass.
    drive_to(&mut f, &rid("infra@aa"), "i1", HostState::Converged);
    assert_eq!(dispatched(&run(&f, &m, &Views::default())), ["s1"]);
    // No predecessor manifest: pass.
    m.rollouts.remove("infra");
    let f = opened(&m);
    assert_eq!(dispatched(&run(&f, &m, &Views::default())), ["s1"]);
}

#[test]
fn wave_promotion_and_unstaged_hosts() {
    let mut m = manifests(&[("stable", "ab12", vec![vec!["a"], vec!["b"]])]);
    m.rollouts
        .get_mut("stable")
        .unwrap()
        .host_set
        .push(HostAssignment {
            hostname: "stray".into(),
            wave: 0,
            target_closure: TARGET.into(),
        });
    let f = opened(&m);
    let d = run(&f, &m, &Views::default());
    assert_eq!(dispatched(&d), ["a"]);
    assert!(matches!(
        block_of(&d, "b"),
        Some(GateBlock::WavePromotion {
            host_wave: 1,
            current_wave: 0
        })
    ));
    assert!(matches!(
        block_of(&d, "stray"),
        Some(GateBlock::HostUnstaged { .. })
    ));
    // A channel with no waves passes everyone.
    let mut m = manifests(&[("stable", "ab12", vec![vec!["a"], vec!["b"]])]);
    m.fleet.waves.clear();
    let f = opened(&m);
    assert_eq!(dispatched(&run(&f, &m, &Views::default())).len(), 2);
}

#[test]
fn host_edges_wait_for_converged_or_deferred() {
    let mut m = manifests(&[("stable", "ab12", vec![vec!["db", "app"]])]);
    m.fleet.host_edges.push(Edge {
        gated: "app".into(),
        gates: "db".into(),
    });
    let r = rid("stable@ab12");
    let mut f = opened(&m);
    drive_to(&mut f, &r, "db", HostState::Soaking);
    let d = run(&f, &m, &Views::default());
    assert!(matches!(
        block_of(&d, "app"),
        Some(GateBlock::HostEdge {
            gating_state: Some(HostState::Soaking),
            ..
        })
    ));
    let mut f = opened(&m);
    drive_to(&mut f, &r, "db", HostState::Deferred);
    assert_eq!(dispatched(&run(&f, &m, &Views::default())), ["app"]);
}

fn with_budget(hosts: &[&str], max: u32) -> Manifests {
    with_budget_at("ab12", hosts, max)
}

/// Channel `stable` at `channel_ref`, one wave of `hosts`, a budget of `max` over them.
fn with_budget_at(channel_ref: &str, hosts: &[&str], max: u32) -> Manifests {
    let mut m = manifests(&[("stable", channel_ref, vec![hosts.to_vec()])]);
    m.rollouts.get_mut("stable").unwrap().budgets.push(Budget {
        selector: "tag:db".into(),
        hosts: hosts.iter().map(|h| h.to_string()).collect(),
        max_in_flight: Some(max),
        max_in_flight_pct: None,
    });
    m
}

#[test]
fn disruption_budget_counts_in_flight_hosts_and_this_ticks_dispatches() {
    let r = rid("stable@ab12");
    // One Activating, max 1: blocked.
    let m = with_budget(&["a", "b"], 1);
    let mut f = opened(&m);
    drive_to(&mut f, &r, "a", HostState::Activating);
    let d = run(&f, &m, &Views::default());
    assert!(matches!(
        block_of(&d, "b"),
        Some(GateBlock::DisruptionBudget {
            in_flight: 1,
            max_in_flight: 1,
            ..
        })
    ));
    // Under the cap: passes. Converged hosts do not count.
    let m2 = with_budget(&["a", "b"], 2);
    assert_eq!(dispatched(&run(&f, &m2, &Views::default())), ["b"]);
    let mut f = opened(&m);
    drive_to(&mut f, &r, "a", HostState::Converged);
    assert_eq!(dispatched(&run(&f, &m, &Views::default())), ["b"]);
    // D-008 B: max 1 and three Pending hosts in one tick: exactly one dispatch.
    let m = with_budget(&["a", "b", "c"], 1);
    let f = opened(&m);
    assert_eq!(dispatched(&run(&f, &m, &Views::default())), ["a"]);
    // A dispatched-but-unacked host holds its slot on the next tick.
    let mut f = opened(&m);
    f.dispatch(&r, "a", T0, 5 * MIN);
    let d = run(&f, &m, &Views::default());
    assert!(dispatched(&d).is_empty(), "a is still queued; b and c wait");
    assert!(matches!(
        block_of(&d, "b"),
        Some(GateBlock::DisruptionBudget { in_flight: 1, .. })
    ));
    // Delivered but never acked: a may be dispatched again (its own slot), the others wait.
    f.append(
        &[Event::DispatchDelivered(ledger::event::DispatchDelivered {
            hostname: "a".into(),
            rollout_id: r.clone(),
        })],
        T0,
    );
    assert_eq!(dispatched(&run(&f, &m, &Views::default())), ["a"]);
}

/// Issue 13, defect 5: e1 activates rollout A; rollout B supersedes A. A's Activating e1 holds
/// no slot of B's budget (DECISIONS 24): B dispatches at once, within its own budget.
#[test]
fn hosts_of_a_superseded_rollout_hold_no_budget_slot() {
    let (a, b) = (rid("stable@ab12"), rid("stable@cd34"));
    let ma = with_budget_at("ab12", &["e1", "e2"], 1);
    let mut f = opened(&ma);
    drive_to(&mut f, &a, "e1", HostState::Activating);
    let mb = with_budget_at("cd34", &["e1", "e2"], 1);
    for d in run(&f, &mb, &Views::default()) {
        if let Decision::OpenRollout { events, .. } = d {
            f.append(&events, T0);
        }
    }
    assert_eq!(
        f.state.rollouts.get(&a).map(|r| r.state),
        Some(ledger::domain::RolloutState::Superseded)
    );
    assert_eq!(f.host(&a, "e1").state, HostState::Activating);
    let d = run(&f, &mb, &Views::default());
    assert_eq!(dispatched(&d), ["e1"], "B dispatches one host at once");
    assert!(d.iter().all(|d| match d {
        Decision::QueueDispatch { dispatch, .. } => dispatch.rollout_id == b,
        _ => true,
    }));
    // e2 waits for B's own e1, not for A's.
    assert!(matches!(
        block_of(&d, "e2"),
        Some(GateBlock::DisruptionBudget {
            in_flight: 1,
            max_in_flight: 1,
            ..
        })
    ));
}

#[test]
fn compliance_wave_blocks_on_earlier_failures_and_fails_closed() {
    let m = manifests(&[("stable", "ab12", vec![vec!["a"], vec!["b"]])]);
    let r = rid("stable@ab12");
    let mut f = opened(&m);
    drive_to(&mut f, &r, "a", HostState::Converged);
    f.append(
        &[Event::WaveAdvanced(ledger::event::WaveAdvanced {
            rollout_id: r.clone(),
            from_wave: 0,
            to_wave: 1,
        })],
        T0,
    );
    assert_eq!(dispatched(&run(&f, &m, &Views::default())), ["b"]);
    let v = Views {
        compliance_unavailable: true,
    };
    let d = run(&f, &m, &v);
    assert!(matches!(
        block_of(&d, "b"),
        Some(GateBlock::ComplianceWave {
            failing_controls: None,
            ..
        })
    ));
    failing(&mut f, &r, "a", &["nis2.art21.a", "nis2.art21.b"]);
    let d = run(&f, &m, &Views::default());
    assert!(matches!(
        block_of(&d, "b"),
        Some(GateBlock::ComplianceWave {
            failing_controls: Some(2),
            host_wave: 1
        })
    ));
}

#[test]
fn a_gate_decision_is_emitted_only_when_the_block_changes() {
    let m = manifests(&[("stable", "ab12", vec![vec!["a"]])]);
    let mut f = opened(&m);
    quarantine(&mut f, "stable");
    let first = run(&f, &m, &Views::default());
    assert!(block_of(&first, "a").is_some());
    for d in first {
        f.append(&d.into_events(), T0);
    }
    assert!(
        run(&f, &m, &Views::default()).is_empty(),
        "same block, tick after tick: nothing to log"
    );
    // Lifted: the dispatch carries the clearing decision.
    f.append(
        &[Event::QuarantineLifted(ledger::event::QuarantineLifted {
            channel: "stable".into(),
            closure: TARGET.into(),
            operator: "alice".into(),
            reason: "fixed".into(),
        })],
        T0,
    );
    let d = run(&f, &m, &Views::default());
    assert!(
        matches!(&d[..], [Decision::QueueDispatch { cleared: Some(c), .. }] if c.block.is_none())
    );
    let kinds: Vec<_> = d
        .into_iter()
        .flat_map(Decision::into_events)
        .map(|e| e.kind().name())
        .collect();
    assert_eq!(kinds, ["GateDecision", "DispatchQueued"]);
}

#[test]
fn plan_advances_a_finished_wave_through_an_event() {
    let m = manifests(&[("stable", "ab12", vec![vec!["a"], vec!["b"]])]);
    let r = rid("stable@ab12");
    let mut f = opened(&m);
    drive_to(&mut f, &r, "a", HostState::Converged);
    let d = run(&f, &m, &Views::default());
    assert!(d.iter().any(|d| matches!(d, Decision::AdvanceWave { .. })));
    for d in d {
        if let Decision::AdvanceWave { events, .. } = d {
            f.append(&events, T0);
        }
    }
    assert_eq!(f.state.rollouts[&r].current_wave, 1);
    assert_eq!(dispatched(&run(&f, &m, &Views::default())), ["b"]);
}

mod props {
    use super::*;
    use proptest::prelude::*;

    fn encoded(d: Vec<Decision>) -> Vec<u8> {
        d.into_iter()
            .flat_map(Decision::into_events)
            .flat_map(|e| e.encode_payload())
            .collect()
    }

    proptest! {
        /// The same fleet built in any order plans byte-identical events.
        #[test]
        fn planning_is_deterministic(mut hosts in prop::collection::btree_set("[a-z]{1,6}", 1..12), seed: u64, max in 1u32..4) {
            let names: Vec<String> = std::mem::take(&mut hosts).into_iter().collect();
            let mut shuffled = names.clone();
            // A deterministic shuffle from the seed.
            let mut s = seed | 1;
            for i in (1..shuffled.len()).rev() {
                s ^= s << 13; s ^= s >> 7; s ^= s << 17;
                shuffled.swap(i, (s % (i as u64 + 1)) as usize);
            }
            let build = |order: &[String]| {
                let refs: Vec<&str> = order.iter().map(String::as_str).collect();
                let m = with_budget(&refs, max);
                let f = opened(&m);
                (encoded(run(&f, &m, &Views::default())), dispatched(&run(&f, &m, &Views::default())).len())
            };
            let (a, na) = build(&names);
            let (b, nb) = build(&shuffled);
            prop_assert_eq!(a, b);
            prop_assert_eq!(na, nb);
            prop_assert_eq!(na as u32, max.min(names.len() as u32));
        }
    }
}
