//! The host state machine: DOMAIN §9.1 scenarios as data, the exhaustive legality table, and
//! properties.

mod common;

use common::*;
use ledger::domain::{
    AgentReport, HostState, OnHealthFailure, ProbeMode, ProbeStatus, ProbeSubResult,
};
use ledger::event::Event;
use planner::host::transition;
use planner::{HostInput, Rejection};

use HostState as S;
use OnHealthFailure::{Halt, RollbackAndHalt};

/// One step of a scenario: the input, then what must follow.
struct Step {
    input: HostInput,
    expect: Result<S, &'static str>,
}

fn step(input: HostInput, expect: Result<S, &'static str>) -> Step {
    Step { input, expect }
}

/// Runs a scenario for host web-01 in a fresh one-host rollout dispatched at T0 with a 5-minute
/// soak, and returns the fleet for further checks.
fn run(name: &str, policy: OnHealthFailure, steps: Vec<Step>) -> Fleet {
    let r = rid("stable@a1b2");
    let mut f = Fleet::new();
    f.open(&r, &[("web-01", 0)], T0);
    f.dispatch(&r, "web-01", T0, 5 * MIN);
    for (i, s) in steps.into_iter().enumerate() {
        let got = f.feed(&r, "web-01", s.input, T0 + 10 * MIN, policy);
        match (s.expect, got) {
            (Ok(state), Ok(_)) => assert_eq!(f.host(&r, "web-01").state, state, "{name} step {i}"),
            (Err(code), Err(e)) => assert_eq!(e.code(), code, "{name} step {i}: {e}"),
            (want, got) => panic!("{name} step {i}: wanted {want:?}, got {got:?}"),
        }
    }
    f
}

fn failed_report(policy: OnHealthFailure) -> AgentReport {
    AgentReport::Failed {
        failed_at: T0 + 3 * MIN,
        sustained_duration_secs: 120,
        failing_probes: vec!["http".into()],
        policy_applied: policy,
    }
}

fn probe(
    name: &str,
    mode: ProbeMode,
    status: ProbeStatus,
    subs: Vec<ProbeSubResult>,
) -> AgentReport {
    AgentReport::ProbeResult {
        probe_name: name.into(),
        mode,
        status,
        observed_at: T0 + 2 * MIN,
        failure_reason: (status == ProbeStatus::Fail).then(|| "down".into()),
        sub_results: subs,
    }
}

fn sub(control: &str, status: ProbeStatus, mode: ProbeMode, why: Option<&str>) -> ProbeSubResult {
    ProbeSubResult {
        control_id: control.into(),
        status,
        framework: "nis2-essential".into(),
        article: Some("21".into()),
        effective_mode: mode,
        override_reason: why.map(Into::into),
    }
}

fn rollback() -> AgentReport {
    AgentReport::RollbackComplete {
        reverted_to_closure: PRIOR.into(),
        exit_code: 0,
        completed_at: T0 + 4 * MIN,
    }
}

fn kinds(f: &Fleet) -> Vec<&'static str> {
    f.log.iter().map(|e| e.kind().name()).collect()
}

#[test]
fn happy_path_pending_to_converged() {
    let f = run(
        "happy",
        Halt,
        vec![
            step(agent(1, ack(T0)), Ok(S::Activating)),
            step(agent(2, completed(TARGET, T0 + MIN)), Ok(S::Soaking)),
            step(agent(3, converged(TARGET, T0 + 6 * MIN)), Ok(S::Converged)),
        ],
    );
    let last_transition = f.log.iter().rev().find_map(|e| match e {
        Event::HostTransitioned(t) => Some(t.to),
        _ => None,
    });
    assert_eq!(last_transition, Some(S::Converged));
    assert!(kinds(&f).contains(&"DispatchAcknowledged"));
    // The one host converged, so the rollout is Terminal.
    assert!(kinds(&f).ends_with(&["RolloutTransitioned"]));
}

#[test]
fn sustained_failure_rollback_path_reverts_and_quarantines_the_target() {
    let f = run(
        "rollback",
        RollbackAndHalt,
        vec![
            step(agent(1, ack(T0)), Ok(S::Activating)),
            step(agent(2, completed(TARGET, T0 + MIN)), Ok(S::Soaking)),
            step(agent(3, failed_report(RollbackAndHalt)), Ok(S::Failed)),
            step(agent(4, rollback()), Ok(S::Reverted)),
        ],
    );
    let r = rid("stable@a1b2");
    let h = f.host(&r, "web-01");
    assert_eq!(h.policy_applied, Some(RollbackAndHalt));
    assert_eq!(h.reverted_to.as_deref(), Some(PRIOR));
    let q = f.log.iter().find_map(|e| match e {
        Event::QuarantineAdded(q) => Some(q.clone()),
        _ => None,
    });
    let q = q.expect("a rollback quarantines");
    assert_eq!(
        (q.channel.as_str(), q.closure.as_str()),
        ("stable", TARGET),
        "the target, not the prior"
    );
}

#[test]
fn halt_policy_is_recorded_from_the_event_on_sustained_failure() {
    let f = run(
        "halt",
        RollbackAndHalt,
        vec![
            step(agent(1, ack(T0)), Ok(S::Activating)),
            step(agent(2, completed(TARGET, T0 + MIN)), Ok(S::Soaking)),
            step(agent(3, failed_report(Halt)), Ok(S::Failed)),
        ],
    );
    assert_eq!(
        f.host(&rid("stable@a1b2"), "web-01").policy_applied,
        Some(Halt)
    );
}

#[test]
fn activation_failure_records_the_policy_in_force() {
    let fail = AgentReport::ActivationFailed {
        exit_code: 4,
        stderr_tail: "unit failed".into(),
        failed_at: T0 + MIN,
    };
    let f = run(
        "activation-failed",
        RollbackAndHalt,
        vec![
            step(agent(1, ack(T0)), Ok(S::Activating)),
            step(agent(2, fail), Ok(S::Failed)),
        ],
    );
    let h = f.host(&rid("stable@a1b2"), "web-01");
    assert_eq!(h.policy_applied, Some(RollbackAndHalt));
    assert!(h.activation_failed_at.is_some() && h.failed_at.is_some());
}

#[test]
fn converged_invariants_are_enforced() {
    let soaking = || {
        vec![
            step(agent(1, ack(T0)), Ok(S::Activating)),
            step(agent(2, completed(TARGET, T0 + MIN)), Ok(S::Soaking)),
        ]
    };
    let mut wrong_closure = soaking();
    wrong_closure.push(step(
        agent(3, converged("/nix/store/other", T0 + 6 * MIN)),
        Err("invariant"),
    ));
    run("wrong-closure", Halt, wrong_closure);

    let mut early = soaking();
    early.push(step(
        agent(3, converged(TARGET, T0 + 4 * MIN)),
        Err("invariant"),
    ));
    run("before-soak", Halt, early);

    let mut failing = soaking();
    failing.push(step(
        agent(
            3,
            probe("http", ProbeMode::Enforce, ProbeStatus::Fail, vec![]),
        ),
        Ok(S::Soaking),
    ));
    failing.push(step(
        agent(4, converged(TARGET, T0 + 6 * MIN)),
        Err("invariant"),
    ));
    // The rejected report did not consume its seq: the agent may retry it later.
    failing.push(step(
        agent(
            4,
            probe("http", ProbeMode::Enforce, ProbeStatus::Pass, vec![]),
        ),
        Ok(S::Soaking),
    ));
    failing.push(step(
        agent(5, converged(TARGET, T0 + 6 * MIN)),
        Ok(S::Converged),
    ));
    run("failing-enforce-then-pass", Halt, failing);

    let mut observe = soaking();
    observe.push(step(
        agent(
            3,
            probe("http", ProbeMode::Enforce, ProbeStatus::Pass, vec![]),
        ),
        Ok(S::Soaking),
    ));
    observe.push(step(
        agent(
            4,
            probe("disk", ProbeMode::Observe, ProbeStatus::Fail, vec![]),
        ),
        Ok(S::Soaking),
    ));
    observe.push(step(
        agent(5, converged(TARGET, T0 + 6 * MIN)),
        Ok(S::Converged),
    ));
    run("observe-fail-ok", Halt, observe);
}

#[test]
fn probe_results_update_the_map_and_keep_sub_results_verbatim() {
    let subs = vec![
        sub(
            "access-control",
            ProbeStatus::Fail,
            ProbeMode::Observe,
            Some("vendor exception"),
        ),
        sub("nis2.art21.a", ProbeStatus::Pass, ProbeMode::Enforce, None),
    ];
    let report = probe(
        "evidence-nis2",
        ProbeMode::Enforce,
        ProbeStatus::Fail,
        subs.clone(),
    );
    let f = run(
        "probe",
        Halt,
        vec![
            step(agent(1, ack(T0)), Ok(S::Activating)),
            step(agent(2, completed(TARGET, T0 + MIN)), Ok(S::Soaking)),
            step(agent(3, report), Ok(S::Soaking)),
        ],
    );
    assert_eq!(f.host(&rid("stable@a1b2"), "web-01").probes.len(), 1);
    let recorded = f.log.iter().rev().find_map(|e| match e {
        Event::AgentEventRecorded(a) => Some(a.report.clone()),
        _ => None,
    });
    assert!(
        matches!(recorded, Some(AgentReport::ProbeResult { sub_results, .. }) if sub_results == subs)
    );
}

#[test]
fn activation_completed_clears_the_probe_map() {
    let r = rid("stable@a1b2");
    let mut f = Fleet::new();
    f.open(&r, &[("web-01", 0)], T0);
    drive_to(&mut f, &r, "web-01", S::Deferred);
    // Probes are illegal before activation completes.
    let err = f
        .feed(
            &r,
            "web-01",
            agent(
                10,
                probe("http", ProbeMode::Enforce, ProbeStatus::Pass, vec![]),
            ),
            T0,
            Halt,
        )
        .unwrap_err();
    assert_eq!(err.code(), "illegal-transition");
    f.feed(
        &r,
        "web-01",
        agent(10, completed(TARGET, T0 + MIN)),
        T0,
        Halt,
    )
    .unwrap();
    assert!(f.host(&r, "web-01").probes.is_empty());
}

fn probe_failure_rows(report: AgentReport) -> Vec<(Option<String>, String)> {
    let f = run(
        "rows",
        Halt,
        vec![
            step(agent(1, ack(T0)), Ok(S::Activating)),
            step(agent(2, completed(TARGET, T0 + MIN)), Ok(S::Soaking)),
            step(agent(3, report), Ok(S::Soaking)),
        ],
    );
    f.log
        .iter()
        .filter_map(|e| match e {
            Event::ProbeFailureRecorded(p) => Some((p.control_id.clone(), p.probe_name.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn probe_failure_rows_follow_the_per_control_rule() {
    assert_eq!(
        probe_failure_rows(probe("http", ProbeMode::Enforce, ProbeStatus::Fail, vec![])),
        vec![(None, "http".to_string())]
    );
    assert!(
        probe_failure_rows(probe("http", ProbeMode::Observe, ProbeStatus::Fail, vec![])).is_empty()
    );
    assert!(
        probe_failure_rows(probe("http", ProbeMode::Enforce, ProbeStatus::Pass, vec![])).is_empty()
    );
    // Two failing controls, one of them observe-mode: exactly one row.
    let rows = probe_failure_rows(probe(
        "evidence-nis2",
        ProbeMode::Enforce,
        ProbeStatus::Fail,
        vec![
            sub("nis2.art21.a", ProbeStatus::Fail, ProbeMode::Enforce, None),
            sub(
                "access-control",
                ProbeStatus::Fail,
                ProbeMode::Observe,
                Some("accepted risk"),
            ),
            sub("nis2.art21.b", ProbeStatus::Pass, ProbeMode::Enforce, None),
        ],
    ));
    assert_eq!(
        rows,
        vec![(
            Some("nis2.art21.a".to_string()),
            "evidence-nis2".to_string()
        )]
    );
}

#[test]
fn deferred_activation_and_its_completion() {
    let deferred = AgentReport::ActivationDeferred {
        component: "systemd".into(),
        deferred_at: T0 + MIN,
    };
    let f = run(
        "deferred",
        Halt,
        vec![
            step(agent(1, ack(T0)), Ok(S::Activating)),
            step(agent(2, deferred), Ok(S::Deferred)),
        ],
    );
    let h = f.host(&rid("stable@a1b2"), "web-01");
    assert_eq!(
        (h.current_closure.as_deref(), h.activation_completed_at),
        (None, None)
    );
    // After the reboot the heartbeat shows the target: the CP synthesizes the completion.
    let mut f = f;
    let r = rid("stable@a1b2");
    let events = f
        .feed(
            &r,
            "web-01",
            HostInput::Synthesized {
                report: completed(TARGET, T0 + 9 * MIN),
                heartbeat_at: T0 + 9 * MIN,
                basis: "heartbeat reports the target closure".into(),
            },
            T0 + 10 * MIN,
            Halt,
        )
        .unwrap();
    assert!(matches!(events[0], Event::AgentEventSynthesized(_)));
    let h = f.host(&r, "web-01");
    assert_eq!(h.state, S::Soaking);
    assert_eq!(h.last_event_seq, 2, "synthesis never consumes an agent seq");
    // The agent's own next report (seq 3) is still accepted.
    f.feed(
        &r,
        "web-01",
        agent(3, converged(TARGET, T0 + 9 * MIN)),
        T0 + 10 * MIN,
        Halt,
    )
    .unwrap();
}

#[test]
fn synthesized_reports_dated_in_the_future_are_refused() {
    let r = rid("stable@a1b2");
    let mut f = Fleet::new();
    f.open(&r, &[("web-01", 0)], T0);
    drive_to(&mut f, &r, "web-01", S::Activating);
    let err = f
        .feed(
            &r,
            "web-01",
            HostInput::Synthesized {
                report: completed(TARGET, T0 + 60 * MIN),
                heartbeat_at: T0,
                basis: "x".into(),
            },
            T0,
            Halt,
        )
        .unwrap_err();
    assert!(matches!(err, Rejection::Invariant(_)), "{err}");
}

#[test]
fn seq_regression_is_rejected_in_every_state() {
    for state in S::ALL {
        let r = rid("stable@a1b2");
        let mut f = Fleet::new();
        f.open(&r, &[("web-01", 0)], T0);
        drive_to(&mut f, &r, "web-01", state);
        let last = f.host(&r, "web-01").last_event_seq;
        // Equal (a retransmit) and lower (out of order); for Pending both are 0, never valid.
        for seq in [last, last.saturating_sub(1)] {
            let err = f
                .feed(&r, "web-01", agent(seq, ack(T0)), T0, Halt)
                .unwrap_err();
            assert!(
                matches!(err, Rejection::SeqRegression { .. }),
                "{state:?} seq {seq}: {err}"
            );
        }
    }
}

fn all_reports() -> Vec<AgentReport> {
    vec![
        ack(T0),
        AgentReport::ActivationStarted {
            started_at: T0,
            switch_method: "switch".into(),
        },
        completed(TARGET, T0),
        AgentReport::ActivationFailed {
            exit_code: 1,
            stderr_tail: String::new(),
            failed_at: T0,
        },
        AgentReport::ActivationDeferred {
            component: "kernel".into(),
            deferred_at: T0,
        },
        AgentReport::ProbeTopologyDeclared {
            probes: vec![],
            declared_at: T0,
        },
        AgentReport::ProbeObservedFirst {
            probe_name: "p".into(),
            mode: ProbeMode::Enforce,
            observed_at: T0,
        },
        probe("p", ProbeMode::Enforce, ProbeStatus::Pass, vec![]),
        AgentReport::ProbeFailureFirst {
            probe_name: "p".into(),
            mode: ProbeMode::Enforce,
            first_failed_at: T0,
        },
        failed_report(Halt),
        rollback(),
        converged(TARGET, T0),
    ]
}

/// 7 states × 12 reports: exactly these 14 pairs are legal, everything else is refused.
#[test]
fn exhaustive_state_event_legality_table() {
    let legal: &[(S, &str, Option<S>)] = &[
        (S::Pending, "DispatchAck", Some(S::Activating)),
        (S::Activating, "ActivationStarted", None),
        (S::Activating, "ActivationCompleted", Some(S::Soaking)),
        (S::Activating, "ActivationFailed", Some(S::Failed)),
        (S::Activating, "ActivationDeferred", Some(S::Deferred)),
        (S::Deferred, "ActivationCompleted", Some(S::Soaking)),
        (S::Deferred, "ActivationFailed", Some(S::Failed)),
        (S::Soaking, "ProbeTopologyDeclared", None),
        (S::Soaking, "ProbeObservedFirst", None),
        (S::Soaking, "ProbeResult", None),
        (S::Soaking, "ProbeFailureFirst", None),
        (S::Soaking, "Failed", Some(S::Failed)),
        (S::Soaking, "Converged", Some(S::Converged)),
        (S::Failed, "RollbackComplete", Some(S::Reverted)),
    ];
    let reports = all_reports();
    assert_eq!(reports.len(), 12);
    let mut legal_count = 0;
    for state in S::ALL {
        for report in &reports {
            let want = legal
                .iter()
                .find(|(s, n, _)| *s == state && *n == report.name());
            match (want, transition(state, report)) {
                (Some((_, _, to)), Ok(got)) => {
                    assert_eq!(got, *to, "{state:?} + {}", report.name());
                    legal_count += 1;
                }
                (None, Err(Rejection::IllegalForState { .. })) => {}
                (w, g) => panic!(
                    "{state:?} + {}: table says {w:?}, machine says {g:?}",
                    report.name()
                ),
            }
        }
    }
    assert_eq!(legal_count, legal.len());
    // Converged and Reverted absorb everything.
    for report in &reports {
        assert!(transition(S::Converged, report).is_err());
        assert!(transition(S::Reverted, report).is_err());
    }
}

mod props {
    use super::*;
    use proptest::prelude::*;

    fn report_strategy() -> impl Strategy<Value = (usize, u8)> {
        (0usize..12, 0u8..4)
    }

    proptest! {
        /// Any sequence of reports: decide is deterministic, the state changes only through
        /// HostTransitioned, last_event_seq only grows, Converged implies current == target.
        #[test]
        fn host_machine_invariants(steps in prop::collection::vec(report_strategy(), 1..40)) {
            let r = rid("stable@a1b2");
            let mut f = Fleet::new();
            f.open(&r, &[("web-01", 0)], T0);
            f.dispatch(&r, "web-01", T0, 0);
            let reports = all_reports();
            let mut seq = 0u64;
            for (i, jitter) in steps {
                let before = f.host(&r, "web-01").clone();
                seq += u64::from(jitter); // 0 sometimes: a regression
                let input = agent(seq, reports[i].clone());
                let policy = if jitter % 2 == 0 { Halt } else { RollbackAndHalt };
                let a = planner::decide_host(&before, &input, T0, &planner::HostPolicy { on_health_failure: policy });
                let b = planner::decide_host(&before, &input, T0, &planner::HostPolicy { on_health_failure: policy });
                prop_assert_eq!(&a, &b);
                if let Ok(events) = a {
                    let transitions = events.iter().filter(|e| matches!(e, Event::HostTransitioned(_))).count();
                    f.append(&events, T0);
                    let after = f.host(&r, "web-01");
                    prop_assert_eq!(transitions > 0, after.state != before.state);
                    prop_assert!(after.last_event_seq > before.last_event_seq);
                    if after.state == S::Converged {
                        prop_assert_eq!(after.current_closure.as_deref(), Some(after.target_closure.as_str()));
                    }
                } else {
                    prop_assert_eq!(f.host(&r, "web-01"), &before);
                }
            }
        }
    }
}
