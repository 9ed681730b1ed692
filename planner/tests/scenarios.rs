//! DOMAIN §9.6: the scenarios the reference could not pass.

mod common;

use common::*;
use ledger::domain::{AgentReport, HostState, OnHealthFailure, RolloutState};
use ledger::event::{Event, HostAssignment};
use planner::{Decision, FleetView, Manifests, RolloutManifest, plan};

fn manifest(channel_ref: &str, hosts: &[&str]) -> Manifests {
    let mut m = Manifests::default();
    m.fleet.channels.insert("stable".into(), "p".into());
    let rollout_id = rid(&format!("stable@{channel_ref}"));
    m.rollouts.insert(
        "stable".into(),
        RolloutManifest {
            rollout_id,
            manifest_hash: [1; 32],
            host_set: hosts
                .iter()
                .map(|h| HostAssignment {
                    hostname: h.to_string(),
                    wave: 0,
                    target_closure: TARGET.into(),
                })
                .collect(),
            budgets: vec![],
        },
    );
    m
}

fn plan_now(f: &Fleet, m: &Manifests) -> Vec<Decision> {
    // The planner reads the quarantine straight from the projection state: the fix for the
    // reference's inert quarantine gate.
    let view = FleetView {
        state: &f.state,
        compliance_available: true,
    };
    plan(&view, m, T0 + 60 * MIN)
}

#[test]
fn a_rollback_quarantine_blocks_the_next_dispatch_of_that_closure() {
    let m1 = manifest("aa", &["web-01"]);
    let mut f = Fleet::new();
    for d in plan_now(&f, &m1) {
        f.append(&d.into_events(), T0);
    }
    let r1 = rid("stable@aa");
    drive_to(&mut f, &r1, "web-01", HostState::Reverted);
    assert_eq!(f.state.rollouts[&r1].state, RolloutState::Reverted);
    // CI pushes a new ref that (wrongly) still targets the same closure: the planner sees the
    // quarantine and refuses to dispatch it.
    let m2 = manifest("bb", &["web-01", "web-02"]);
    for d in plan_now(&f, &m2) {
        f.append(&d.into_events(), T0 + MIN);
    }
    assert_eq!(f.state.rollouts[&r1].state, RolloutState::Superseded);
    let d = plan_now(&f, &m2);
    let blocked: Vec<_> = d
        .iter()
        .filter_map(|d| match d {
            Decision::Block(g) => g.block.as_ref().map(|b| (g.hostname.clone(), b.gate())),
            _ => None,
        })
        .collect();
    assert_eq!(
        blocked,
        [
            ("web-01".to_string(), "quarantine"),
            ("web-02".to_string(), "quarantine")
        ]
    );
    assert!(
        !d.iter()
            .any(|d| matches!(d, Decision::QueueDispatch { .. }))
    );
}

#[test]
fn waves_supersession_and_retention_are_log_events_and_a_rebuild_reproduces_them() {
    let r = rid("stable@aa");
    let mut f = Fleet::new();
    f.open(&r, &[("a", 0), ("b", 1)], T0);
    drive_to(&mut f, &r, "a", HostState::Converged);
    f.rollout_input(
        &r,
        planner::RolloutInput::AdvanceWave { waves: 2 },
        T0 + MIN,
    )
    .unwrap();
    drive_to(&mut f, &r, "b", HostState::Converged);
    f.open(&rid("stable@bb"), &[("a", 0)], T0 + 2 * MIN);
    f.rollout_input(&r, planner::RolloutInput::RetentionExpired, T0 + 3 * MIN)
        .unwrap();
    let rec = &f.state.rollouts[&r];
    assert_eq!((rec.state, rec.current_wave), (RolloutState::Pruned, 1));
    assert_eq!(
        f.rebuilt(),
        f.state,
        "a fold from empty gives the same state"
    );
}

#[test]
fn a_rejected_report_changes_nothing_and_says_why() {
    let r = rid("stable@aa");
    let mut f = Fleet::new();
    f.open(&r, &[("a", 0)], T0);
    let before = (f.state.clone(), f.log.len());
    let err = f
        .feed(
            &r,
            "a",
            agent(1, converged(TARGET, T0)),
            T0,
            OnHealthFailure::Halt,
        )
        .unwrap_err();
    assert_eq!(err.code(), "illegal-transition");
    assert_eq!(
        err.to_string(),
        "Converged is illegal for a host in state Pending"
    );
    assert_eq!((f.state.clone(), f.log.len()), before);
    let err = f
        .feed(&r, "nobody", agent(1, ack(T0)), T0, OnHealthFailure::Halt)
        .unwrap_err();
    assert_eq!(err.code(), "unknown-host");
    let err = f
        .feed(
            &rid("stable@ff"),
            "a",
            agent(1, ack(T0)),
            T0,
            OnHealthFailure::Halt,
        )
        .unwrap_err();
    assert_eq!(err.code(), "unknown-rollout");
}

#[test]
fn synthesized_reports_are_marked_and_never_take_an_agent_seq() {
    let r = rid("stable@aa");
    let mut f = Fleet::new();
    f.open(&r, &[("a", 0)], T0);
    f.dispatch(&r, "a", T0, 0);
    f.feed(&r, "a", agent(1, ack(T0)), T0, OnHealthFailure::Halt)
        .unwrap();
    let synth = planner::HostInput::Synthesized {
        report: AgentReport::ActivationCompleted {
            observed_current_closure: TARGET.into(),
            exit_code: 0,
            completed_at: T0 + MIN,
        },
        heartbeat_at: T0 + MIN,
        basis: "heartbeat: current closure equals target".into(),
    };
    f.feed(&r, "a", synth, T0 + MIN, OnHealthFailure::Halt)
        .unwrap();
    assert!(
        f.log
            .iter()
            .any(|e| matches!(e, Event::AgentEventSynthesized(_)))
    );
    // The agent's real seq 2 still lands: nothing was invented in its seq space.
    f.feed(
        &r,
        "a",
        agent(2, converged(TARGET, T0 + 2 * MIN)),
        T0 + 2 * MIN,
        OnHealthFailure::Halt,
    )
    .unwrap();
    assert_eq!(f.host(&r, "a").state, HostState::Converged);
}
