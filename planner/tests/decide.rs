//! The one decision function, input by input, with no daemon and no HTTP: heartbeat
//! synthesis, which dispatch a long poll takes, retention, lifts, retransmits and whether a
//! manifest replaces the one in force. The harness's log folds what is staged, as the
//! writer's ledger and the determinism check do.

mod common;

use common::*;
use ledger::domain::{
    AgentReport, HostState, Hostname, Micros, OnHealthFailure, RolloutId, RolloutState,
};
use ledger::event::{Event, QuarantineAdded};
use planner::{Answer, Input, ManifestRefusal, Manifests, Refusal, Rejection, decide};
use proptest::prelude::*;
use serde_json::{Value, json};

fn run(f: &mut Fleet, input: Input, now: Micros) -> Result<(Answer, bool, Vec<Event>), Refusal> {
    let mut m = Manifests::default();
    run_with(f, &mut m, input, now)
}

/// Decides `input`; returns the answer, whether to replan, and what was staged.
fn run_with(
    f: &mut Fleet,
    m: &mut Manifests,
    input: Input,
    now: Micros,
) -> Result<(Answer, bool, Vec<Event>), Refusal> {
    let before = f.log.len();
    let decided = decide(f, m, input, now)?;
    Ok((decided.answer, decided.replan, f.log[before..].to_vec()))
}

fn h(name: &str) -> Hostname {
    Hostname::parse(name).unwrap()
}

fn kinds(events: &[Event]) -> Vec<&'static str> {
    events.iter().map(|e| e.kind().name()).collect()
}

fn heartbeat(host: &str, rollout: Option<&RolloutId>, current: Option<&str>, at: Micros) -> Input {
    Input::Heartbeat {
        host: h(host),
        rollout: rollout.cloned(),
        current_closure: current.map(str::to_string),
        at,
    }
}

/// A rollout with one host brought to `state` by the agent's own reports.
fn host_in(state: HostState) -> (Fleet, RolloutId) {
    let r = rid("canary@a1a1");
    let mut f = Fleet::new();
    f.open(&r, &[("web-01", 0)], T0);
    let halt = OnHealthFailure::Halt;
    let mut seq = 0;
    let mut feed = |f: &mut Fleet, report: AgentReport| {
        seq += 1;
        f.feed(&r, "web-01", agent(seq, report), T0 + MIN, halt)
            .unwrap();
    };
    match state {
        HostState::Pending => {}
        HostState::Activating => feed(&mut f, ack(T0)),
        HostState::Deferred => {
            feed(&mut f, ack(T0));
            feed(
                &mut f,
                AgentReport::ActivationDeferred {
                    component: "kernel".into(),
                    deferred_at: T0,
                },
            );
        }
        HostState::Soaking => {
            feed(&mut f, ack(T0));
            feed(&mut f, completed(TARGET, T0));
        }
        other => panic!("no recipe for {other:?}"),
    }
    assert_eq!(f.host(&r, "web-01").state, state);
    (f, r)
}

#[test]
fn a_heartbeat_at_the_target_synthesizes_what_the_host_state_implies() {
    use HostState as S;
    let table: &[(S, &[&str], S)] = &[
        (
            S::Pending,
            &[
                "AgentEventSynthesized",
                "HostTransitioned",
                "AgentEventSynthesized",
                "HostTransitioned",
            ],
            S::Soaking,
        ),
        (
            S::Activating,
            &["AgentEventSynthesized", "HostTransitioned"],
            S::Soaking,
        ),
        (
            S::Deferred,
            &["AgentEventSynthesized", "HostTransitioned"],
            S::Soaking,
        ),
        // Converged is never synthesized: the soak must be observed by the agent's probes.
        (S::Soaking, &[], S::Soaking),
    ];
    for (from, expect, to) in table {
        let (mut f, r) = host_in(*from);
        let at = T0 + 2 * MIN;
        for named in [false, true] {
            let (mut f, r) = (
                Fleet {
                    state: f.state.clone(),
                    seq: f.seq,
                    log: f.log.clone(),
                    headers: f.headers.clone(),
                },
                r.clone(),
            );
            let input = heartbeat("web-01", named.then_some(&r), Some(TARGET), at);
            let (answer, replan, staged) = run(&mut f, input, at + 1).unwrap();
            let staged_kinds: Vec<_> = kinds(&staged)
                .into_iter()
                .filter(|k| *k != "RolloutTransitioned" && *k != "WaveAdvanced")
                .collect();
            assert_eq!(staged_kinds, *expect, "from {from:?} (named {named})");
            assert_eq!(f.host(&r, "web-01").state, *to, "from {from:?}");
            assert_eq!(replan, !expect.is_empty(), "from {from:?}");
            let Answer::Heartbeat {
                synthesized,
                bootstrap,
                replay_from,
            } = answer
            else {
                panic!("a heartbeat answer");
            };
            assert_eq!(synthesized.is_some(), !expect.is_empty());
            assert_eq!(replay_from, None);
            // Only an unnamed heartbeat asks for the records to bootstrap from.
            assert_eq!(bootstrap.map(|b| b.len()), (!named).then_some(1));
        }
        // The basis says which heartbeat, in the log's time format.
        if let Some(Event::AgentEventSynthesized(e)) = run(
            &mut f,
            heartbeat("web-01", Some(&r), Some(TARGET), at),
            at + 1,
        )
        .unwrap()
        .2
        .first()
        {
            assert_eq!(
                e.basis,
                format!(
                    "heartbeat at {}: host runs its target closure",
                    planner::decide::rfc3339(at)
                )
            );
        }
    }
}

#[test]
fn a_heartbeat_off_the_target_synthesizes_nothing_and_may_ask_for_a_replay() {
    let (mut f, r) = host_in(HostState::Activating);
    let at = T0 + 2 * MIN;
    // Named, and the CP does not know the host runs this: resend from the next agent seq.
    let (answer, replan, staged) =
        run(&mut f, heartbeat("web-01", Some(&r), Some(PRIOR), at), at).unwrap();
    assert!(staged.is_empty() && !replan);
    let last = f.host(&r, "web-01").last_event_seq;
    assert!(matches!(answer, Answer::Heartbeat { replay_from: Some(s), .. } if s == last + 1));
    // Unnamed: nothing to ask (the agent bootstraps from the records instead).
    let (answer, _, staged) = run(&mut f, heartbeat("web-01", None, Some(PRIOR), at), at).unwrap();
    assert!(staged.is_empty());
    assert!(matches!(
        answer,
        Answer::Heartbeat {
            replay_from: None,
            bootstrap: Some(_),
            ..
        }
    ));
    // No closure at all: nothing inferred.
    let (_, _, staged) = run(&mut f, heartbeat("web-01", Some(&r), None, at), at).unwrap();
    assert!(staged.is_empty());
}

#[test]
fn a_heartbeat_naming_a_rollout_the_host_is_not_in_is_refused() {
    let (mut f, r) = host_in(HostState::Pending);
    let err = run(&mut f, heartbeat("db-01", Some(&r), Some(TARGET), T0), T0).unwrap_err();
    assert!(matches!(err, Refusal::Host(Rejection::UnknownHost { .. })));
    assert_eq!(err.code(), "unknown-host");
    // Unnamed, an unknown host simply has nothing to bootstrap.
    let (answer, _, staged) = run(&mut f, heartbeat("db-01", None, Some(TARGET), T0), T0).unwrap();
    assert!(staged.is_empty());
    assert!(matches!(answer, Answer::Heartbeat { bootstrap: Some(b), .. } if b.is_empty()));
}

#[test]
fn a_long_poll_takes_the_oldest_dispatch_then_the_smaller_rollout_id() {
    let a = rid("canary@a1a1");
    let b = rid("stable@b2b2");
    let c = rid("edge@c3c3");
    let mut f = Fleet::new();
    for r in [&a, &b, &c] {
        f.open(r, &[("web-01", 0), ("web-02", 0)], T0);
    }
    f.dispatch(&b, "web-01", T0 + MIN, 0);
    f.dispatch(&a, "web-01", T0 + 2 * MIN, 0);
    f.dispatch(&c, "web-01", T0 + MIN, 0);
    f.dispatch(&a, "web-02", T0, 0);
    let take = |f: &mut Fleet| {
        let (answer, replan, staged) =
            run(f, Input::TakeDispatch { host: h("web-01") }, T0 + 3 * MIN).unwrap();
        assert!(!replan);
        match answer {
            Answer::Dispatch(Some(d)) => {
                assert_eq!(kinds(&staged), ["DispatchDelivered"]);
                assert_eq!(d.seq, f.seq - 1);
                assert_eq!(d.host.as_str(), "web-01");
                Some(d.rollout)
            }
            Answer::Dispatch(None) => {
                assert!(staged.is_empty());
                None
            }
            other => panic!("{other:?}"),
        }
    };
    // b and c were queued at the same time: the smaller id (edge@…) goes first.
    assert_eq!(take(&mut f), Some(c));
    assert_eq!(take(&mut f), Some(b));
    assert_eq!(take(&mut f), Some(a));
    // web-02's dispatch is never web-01's.
    assert_eq!(take(&mut f), None);
}

#[test]
fn retention_prunes_finished_rollouts_once_their_time_has_passed() {
    let old = rid("canary@a1a1");
    let new = rid("canary@b2b2");
    let mut f = Fleet::new();
    f.open(&old, &[("web-01", 0)], T0);
    f.open(&new, &[("web-01", 0)], T0 + MIN);
    assert_eq!(f.state.rollouts[&old].state, RolloutState::Superseded);
    let keep = 10 * MIN;
    let table: &[(Micros, &[&RolloutId])] = &[
        (T0 + MIN, &[]),
        (T0 + MIN + keep - 1, &[]),
        (T0 + MIN + keep, &[&old]),
    ];
    for (now, due) in table {
        let got = planner::retention_due(&f.state, keep, *now);
        assert_eq!(got.iter().collect::<Vec<_>>(), *due, "at {now}");
    }
    // No retention: a tick prunes nothing, but still plans.
    let (answer, replan, staged) =
        run(&mut f, Input::Tick { retain_for: None }, T0 + 99 * MIN).unwrap();
    assert!(staged.is_empty() && replan);
    assert_eq!(answer, Answer::Done { entries: 0 });
    let (answer, _, staged) = run(
        &mut f,
        Input::Tick {
            retain_for: Some(keep),
        },
        T0 + MIN + keep,
    )
    .unwrap();
    assert_eq!(kinds(&staged), ["RolloutTransitioned"]);
    assert_eq!(answer, Answer::Done { entries: 1 });
    assert_eq!(f.state.rollouts[&old].state, RolloutState::Pruned);
    // The active rollout is never due, and the machine refuses to prune it if asked.
    let err = run(&mut f, Input::Expire { rollout: new }, T0 + 999 * MIN).unwrap_err();
    assert_eq!(err.code(), "illegal-transition");
}

#[test]
fn only_a_quarantined_closure_can_be_lifted() {
    let r = rid("canary@a1a1");
    let mut f = Fleet::new();
    f.open(&r, &[("web-01", 0)], T0);
    let lift = || Input::Lift {
        channel: "canary".into(),
        closure: TARGET.into(),
        operator: "alice".into(),
        reason: "fixed upstream".into(),
    };
    let err = run(&mut f, lift(), T0).unwrap_err();
    assert!(matches!(err, Refusal::NotQuarantined { .. }));
    assert_eq!(err.code(), "not-quarantined");
    assert_eq!(f.log.len(), 3, "a refusal stages nothing");
    f.append(
        &[Event::QuarantineAdded(QuarantineAdded {
            channel: "canary".into(),
            closure: TARGET.into(),
            rollout_id: r.clone(),
            hostname: "web-01".into(),
        })],
        T0,
    );
    let (answer, replan, staged) = run(&mut f, lift(), T0 + MIN).unwrap();
    assert_eq!(kinds(&staged), ["QuarantineLifted"]);
    assert!(replan);
    assert!(matches!(answer, Answer::Recorded { entries: 1, .. }));
    assert!(f.state.quarantine.is_empty());
    assert!(matches!(
        run(&mut f, lift(), T0 + MIN),
        Err(Refusal::NotQuarantined { .. })
    ));
}

#[test]
fn the_last_agent_seq_again_is_a_retransmit_or_a_reused_seq() {
    let (mut f, r) = host_in(HostState::Activating);
    let report = |agent_seq, at| Input::Report {
        host: h("web-01"),
        rollout: r.clone(),
        agent_seq,
        report: ack(at),
    };
    let size = f.log.len();
    let (answer, replan, staged) = run(&mut f, report(1, T0), T0 + MIN).unwrap();
    assert!(staged.is_empty() && !replan);
    let first = f.host(&r, "web-01").last_report_seq;
    assert_eq!(answer, Answer::Duplicate { seq: first });
    assert_eq!(f.log.len(), size);
    // Refused reports are recorded as refused, whole, with the refusal's code: the agent is
    // answered 2xx and its queue moves on.
    let host_before = f.host(&r, "web-01").clone();
    for (agent_seq, code) in [(1, "seq-reused"), (0, "seq-regression")] {
        let (answer, replan, staged) = run(&mut f, report(agent_seq, T0 + 1), T0 + MIN).unwrap();
        assert!(!replan);
        let Answer::Refused { seq, refusal } = answer else {
            panic!("{answer:?}")
        };
        assert_eq!(refusal.code(), code);
        assert_eq!(seq, f.seq - 1);
        let [Event::AgentReportRefused(e)] = staged.as_slice() else {
            panic!("{staged:?}")
        };
        assert_eq!((e.agent_seq, e.code.as_str()), (agent_seq, code));
        assert_eq!(e.report, ack(T0 + 1));
        assert_eq!(e.reason, refusal.to_string());
    }
    assert_eq!(
        f.host(&r, "web-01"),
        &host_before,
        "a refused report changes no row"
    );
}

fn fleet_doc(signed_at: &str, policy: &str) -> Value {
    json!({
        "schemaVersion": 1,
        "hosts": {"web-01": {"channel": "canary"}},
        "channels": {"canary": {"rollout_policy": policy}},
        "rollout_policies": {policy: {"strategy": "all-at-once", "waves": [{"soak_minutes": 0}], "on_health_failure": "halt"}},
        "waves": {"canary": [{"hosts": ["web-01"]}]},
        "meta": {"schemaVersion": 1, "signedAt": signed_at},
    })
}

fn rollout_doc(fleet_hash: [u8; 32], signed_at: &str) -> Value {
    json!({
        "schema_version": 1,
        "channel": "canary",
        "channel_ref": "a1a1a1a1",
        "fleet_resolved_hash": fleet_hash.iter().map(|b| format!("{b:02x}")).collect::<String>(),
        "host_set": [{"hostname": "web-01", "wave_index": 0, "target_closure": "/nix/store/aaaa-system"}],
        "disruption_budgets": [],
        "meta": {"schemaVersion": 1, "signedAt": signed_at},
    })
}

#[test]
fn a_manifest_replaces_the_one_in_force_only_when_newer_and_consistent() {
    let mut f = Fleet::new();
    let mut m = Manifests::default();
    let t = "2026-11-30T12:00:00Z";
    // A rollout manifest needs a fleet in force, and the same one.
    let err = run_with(
        &mut f,
        &mut m,
        manifest(&rollout_doc([1; 32], t), 9, T0),
        T0,
    )
    .unwrap_err();
    assert_eq!(err, Refusal::Manifest(ManifestRefusal::NoFleet));

    let (answer, replan, staged) =
        run_with(&mut f, &mut m, manifest(&fleet_doc(t, "fast"), 1, T0), T0).unwrap();
    assert_eq!(kinds(&staged), ["FleetManifestSigned"]);
    assert!(replan);
    let Answer::Recorded { seq: fleet_seq, .. } = answer else {
        panic!("{answer:?}")
    };
    assert_eq!(m.fleet_in_force.map(|f| f.seq), Some(fleet_seq));

    // The same bytes again: a duplicate of the entry in force, nothing staged.
    let (answer, _, staged) =
        run_with(&mut f, &mut m, manifest(&fleet_doc(t, "fast"), 1, T0), T0).unwrap();
    assert!(staged.is_empty());
    assert_eq!(answer, Answer::Duplicate { seq: fleet_seq });
    // Other bytes signed at the same time or earlier: no rollback to an older artifact.
    for at in [T0, T0 - 1] {
        let err = run_with(&mut f, &mut m, manifest(&fleet_doc(t, "slow"), 2, at), T0).unwrap_err();
        assert_eq!(err.code(), "manifest-outdated");
    }

    let err = run_with(
        &mut f,
        &mut m,
        manifest(&rollout_doc([7; 32], t), 9, T0),
        T0,
    )
    .unwrap_err();
    assert_eq!(err.code(), "manifest-fleet-mismatch");
    let (_, _, staged) = run_with(
        &mut f,
        &mut m,
        manifest(&rollout_doc([1; 32], t), 9, T0),
        T0,
    )
    .unwrap();
    assert_eq!(kinds(&staged), ["RolloutManifestSigned"]);
    assert!(m.rollouts.contains_key("canary"));

    // A newer fleet replaces the one in force: a rollout manifest built against the old one
    // is now refused, even signed later.
    let (_, _, staged) = run_with(
        &mut f,
        &mut m,
        manifest(&fleet_doc(t, "slow"), 3, T0 + 1),
        T0,
    )
    .unwrap();
    assert_eq!(kinds(&staged), ["FleetManifestSigned"]);
    let err = run_with(
        &mut f,
        &mut m,
        manifest(&rollout_doc([1; 32], t), 10, T0 + 1),
        T0,
    )
    .unwrap_err();
    assert_eq!(err.code(), "manifest-fleet-mismatch");
    // The rollout manifest in force itself, posted again after the newer fleet: the
    // duplicate answer DECISIONS 40 promises (issue 26, defect 15), nothing staged.
    let in_force = m.rollout_in_force["canary"].seq;
    let (answer, _, staged) = run_with(
        &mut f,
        &mut m,
        manifest(&rollout_doc([1; 32], t), 9, T0),
        T0,
    )
    .unwrap();
    assert!(staged.is_empty());
    assert_eq!(answer, Answer::Duplicate { seq: in_force });
}

proptest! {
    /// The log's time text is chrono's RFC 3339, over chrono's whole range.
    #[test]
    fn log_times_read_as_chrono_writes_them(us in -8_210_266_876_799_999_999i64..=8_210_298_412_799_999_999i64) {
        let chrono = chrono::DateTime::from_timestamp_micros(us)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true));
        if let Some(c) = chrono {
            prop_assert_eq!(planner::decide::rfc3339(us), c);
        }
    }
}

proptest! {
    /// The times in CI's signed files read as chrono reads them: any offset, any fraction
    /// (finer than µs truncated), `T`/`t`/space, `Z`/`z`, years 0000–9999.
    #[test]
    fn signed_file_times_read_as_chrono_reads_them(
        us in -62_135_596_800_000_000i64..=253_402_300_799_999_999i64,
        digits in 0usize..=9,
        extra in 0u32..1000,
        offset_min in -(23 * 60 + 59)..=(23 * 60 + 59i32),
        sep in prop::sample::select(vec!['T', 't', ' ']),
        zulu in prop::sample::select(vec!["Z", "z", "+00:00", "offset"]),
    ) {
        let t = chrono::DateTime::from_timestamp_micros(us).unwrap();
        let text = if zulu == "offset" {
            let off = chrono::FixedOffset::east_opt(offset_min * 60).unwrap();
            t.with_timezone(&off).format("%Y-%m-%dT%H:%M:%S%.6f%:z").to_string()
        } else {
            format!("{}{zulu}", t.format("%Y-%m-%dT%H:%M:%S%.6f"))
        };
        // Re-cut the fraction to `digits` digits (more: append `extra`'s digits).
        let dot = text.find('.').unwrap();
        let frac: String = text[dot + 1..dot + 7].to_string();
        let rest = &text[dot + 7..];
        let frac = if digits <= 6 { frac[..digits].to_string() } else { format!("{frac}{extra:03}")[..digits].to_string() };
        let mut text = if digits == 0 { format!("{}{rest}", &text[..dot]) } else { format!("{}.{frac}{rest}", &text[..dot]) };
        text.replace_range(10..11, &sep.to_string());
        let want = chrono::DateTime::parse_from_rfc3339(&text).map(|t| t.timestamp_micros());
        match want {
            Ok(w) => prop_assert_eq!(planner::decide::parse_rfc3339(&text), Ok(w), "{}", text),
            Err(_) => prop_assert!(planner::decide::parse_rfc3339(&text).is_err(), "{}", text),
        }
    }
}

#[test]
fn signed_file_times_refused_as_chrono_refuses_them() {
    for text in [
        "2026-02-29T00:00:00Z",
        "2026-13-01T00:00:00Z",
        "2026-01-01T24:00:00Z",
        "2026-01-01T00:00:00",
        "2026-01-01T00:00:00.Z",
        "2026-01-01T00:00:00+24:00",
        "2026-01-01T00:00:00Zx",
        "2026-1-01T00:00:00Z",
        "",
    ] {
        assert!(
            chrono::DateTime::parse_from_rfc3339(text).is_err(),
            "{text}"
        );
        assert!(planner::decide::parse_rfc3339(text).is_err(), "{text}");
    }
    for text in [
        "2024-02-29T23:59:60Z",
        "2026-05-17T11:00:00.123456789+02:00",
    ] {
        let want = chrono::DateTime::parse_from_rfc3339(text)
            .unwrap()
            .timestamp_micros();
        assert_eq!(planner::decide::parse_rfc3339(text), Ok(want), "{text}");
    }
}

#[test]
fn log_times_at_the_edges() {
    for us in [
        0,
        -1,
        1,
        951_782_400_000_000,
        4_107_542_400_000_000,
        T0,
        -62_135_596_800_000_001,
    ] {
        let c = chrono::DateTime::from_timestamp_micros(us)
            .unwrap()
            .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        assert_eq!(planner::decide::rfc3339(us), c);
    }
}

/// Once a rollout is pruned, a report to it is refused as such, even the last one again:
/// whether its host records are still in memory (the writer forgets them after the commit,
/// a replay at once) must not change the answer.
#[test]
fn a_report_to_a_pruned_rollout_is_refused_even_as_a_retransmit() {
    let (mut f, r) = host_in(HostState::Activating);
    let report = Input::Report {
        host: h("web-01"),
        rollout: r.clone(),
        agent_seq: 1,
        report: ack(T0),
    };
    let (answer, _, _) = run(&mut f, report.clone(), T0 + MIN).unwrap();
    assert!(matches!(answer, Answer::Duplicate { .. }));
    f.open(&rid("canary@b2b2"), &[("web-01", 0)], T0 + MIN);
    assert_eq!(f.state.rollouts[&r].state, RolloutState::Superseded);
    run(&mut f, Input::Expire { rollout: r.clone() }, T0 + 99 * MIN).unwrap();
    assert_eq!(f.state.rollouts[&r].state, RolloutState::Pruned);
    assert!(f.state.hosts.get(&r, "web-01").is_some(), "still in memory");
    let (answer, _, staged) = run(&mut f, report, T0 + 99 * MIN).unwrap();
    let Answer::Refused { refusal, .. } = answer else {
        panic!("{answer:?}")
    };
    assert_eq!(refusal.code(), "rollout-pruned");
    assert_eq!(kinds(&staged), ["AgentReportRefused"]);
}

/// Issue 26, defect 16 (DECISIONS 111): a late report to a Superseded rollout is recorded as
/// refused (`rollout-superseded`, an `AgentReportRefused` entry, answered 2xx) and moves
/// nothing; a retransmit of a report recorded before the supersession is still a duplicate.
#[test]
fn a_late_report_to_a_superseded_rollout_is_recorded_as_refused_and_moves_nothing() {
    let (mut f, r) = host_in(HostState::Activating);
    f.open(&rid("canary@b2b2"), &[("web-01", 0)], T0 + MIN);
    assert_eq!(f.state.rollouts[&r].state, RolloutState::Superseded);
    let before = f.host(&r, "web-01").clone();
    let late = Input::Report {
        host: h("web-01"),
        rollout: r.clone(),
        agent_seq: 2,
        report: completed(TARGET, T0 + 2 * MIN),
    };
    let (answer, _, staged) = run(&mut f, late, T0 + 3 * MIN).unwrap();
    let Answer::Refused { refusal, .. } = answer else {
        panic!("{answer:?}")
    };
    assert_eq!(refusal.code(), "rollout-superseded");
    assert_eq!(kinds(&staged), ["AgentReportRefused"]);
    assert_eq!(f.host(&r, "web-01"), &before, "the host did not move");
    let retransmit = Input::Report {
        host: h("web-01"),
        rollout: r.clone(),
        agent_seq: 1,
        report: ack(T0),
    };
    let (answer, _, _) = run(&mut f, retransmit, T0 + 3 * MIN).unwrap();
    assert!(matches!(answer, Answer::Duplicate { .. }), "{answer:?}");
}

/// The batch rule: every input is decided first, then the planner runs once if any of them
/// moved (or a plan was asked for by name, which is answered with that one run's entries).
#[test]
fn a_batch_plans_once_after_its_inputs_and_only_if_something_moved() {
    let t = "2026-11-30T12:00:00Z";
    let mut f = Fleet::new();
    let mut m = Manifests::default();
    let answers = planner::decide_batch(
        &mut f,
        &mut m,
        [
            manifest(&fleet_doc(t, "fast"), 1, T0),
            Input::Plan,
            manifest(&rollout_doc([1; 32], t), 9, T0),
        ],
        T0,
    );
    let answers: Vec<Answer> = answers.into_iter().map(Result::unwrap).collect();
    // The planner ran after the rollout manifest (it opened the rollout), once.
    assert_eq!(
        kinds(&f.log),
        [
            "FleetManifestSigned",
            "RolloutManifestSigned",
            "RolloutOpened",
            "HostJoined",
            "RolloutTransitioned"
        ]
    );
    assert_eq!(answers[1], Answer::Done { entries: 3 });
    // Nothing moved: no planner run, though it would decide something now.
    let before = f.log.len();
    let answers = planner::decide_batch(
        &mut f,
        &mut m,
        [Input::TakeDispatch { host: h("web-01") }],
        T0 + MIN,
    );
    assert_eq!(answers.len(), 1);
    assert_eq!(f.log.len(), before, "{:?}", kinds(&f.log[before..]));
    let mut again = planner::Batch::default();
    again
        .decide(&mut f, &mut m, Input::Tick { retain_for: None }, T0 + MIN)
        .unwrap();
    assert!(again.replans());
    assert!(
        again.finish(&mut f, &mut m, T0 + MIN) > 0,
        "the dispatch is queued"
    );
}

/// NIXFLEET-WIRE.md §9.1 and §9.2's examples, byte for byte (`fixtures/nixfleet/`), read as
/// the lists the ledger records.
#[test]
fn nixfleets_example_lists_parse_to_what_the_ledger_records() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/nixfleet");
    let at = |t: &str| {
        chrono::DateTime::parse_from_rfc3339(t)
            .unwrap()
            .timestamp_micros()
    };
    let r =
        planner::document::parse_revocations(&std::fs::read(dir.join("revocations.json")).unwrap())
            .unwrap();
    assert_eq!(r.signed_at, "2026-05-17T12:00:00Z");
    assert_eq!(
        r.revocations,
        vec![ledger::event::Revocation {
            hostname: "web-03".into(),
            not_before: at("2026-05-17T11:00:00Z"),
            reason: Some("decommissioned".into()),
            revoked_by: Some("alice".into()),
        }]
    );
    let n = planner::document::parse_bootstrap_nonces(
        &std::fs::read(dir.join("bootstrap-nonces.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        n.nonces,
        vec![ledger::event::AllowedNonce {
            nonce: "3f1c9a0d5e7b2c4a8f6e1d0b9c7a5e3f".into(),
            hostname: "web-07".into(),
            expires_at: at("2026-05-18T12:00:00Z"),
            minted_at: Some(at("2026-05-17T12:00:00Z")),
            minted_by: Some("alice".into()),
        }]
    );
    // Refused: another schema version, a time that is not RFC 3339, no signedAt.
    for bad in [
        r#"{"schemaVersion":2,"revocations":[],"meta":{"signedAt":"2026-05-17T12:00:00Z"}}"#,
        r#"{"schemaVersion":1,"revocations":[{"hostname":"a","notBefore":"May 17"}],"meta":{"signedAt":"2026-05-17T12:00:00Z"}}"#,
        r#"{"schemaVersion":1,"revocations":[],"meta":{}}"#,
    ] {
        assert!(
            planner::document::parse_revocations(bad.as_bytes()).is_err(),
            "{bad}"
        );
    }
}
