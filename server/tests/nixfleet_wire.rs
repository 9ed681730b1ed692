//! nixfleet v0.2's agent events, byte for byte as NIXFLEET-WIRE.md §3.1 and §3.3 show them
//! (the document's `…` abbreviations spelled out), decode into the reports fleet-ledger
//! records, with every field where the wire put it. All twelve kinds.

use ledger::domain::{AgentReport, OnHealthFailure, ProbeKind, ProbeMode, ProbeStatus};
use wire::{AgentEnvelope, ts};

/// The envelope of §3.1 around an event object of §3.3.
fn envelope(event: &str) -> String {
    format!(
        r#"{{"hostname":"web-01","rolloutId":"stable@5d4b6c1e6cee214e4a2f486e3bcaba0438bf87e4","event":{event}}}"#
    )
}

fn decode(body: &str) -> (u64, AgentReport) {
    let env: AgentEnvelope = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    assert_eq!(env.hostname, "web-01");
    assert_eq!(
        env.rollout_id,
        "stable@5d4b6c1e6cee214e4a2f486e3bcaba0438bf87e4"
    );
    env.report().unwrap_or_else(|e| panic!("{e}: {body}"))
}

fn t(text: &str) -> i64 {
    ts::parse(text).unwrap()
}

#[test]
fn the_envelope_example_of_section_3_1_decodes() {
    let body = r#"{"hostname":"web-01","rolloutId":"stable@5d4b6c1e6cee214e4a2f486e3bcaba0438bf87e4",
 "event":{"kind":"DispatchAck","currentClosureAtDispatch":"l3gla1g9aaaa-nixos-system-web-01-26.05","receivedAt":"2026-05-17T12:00:00.123456Z","seq":1}}"#;
    let (seq, report) = decode(body);
    assert_eq!(seq, 1);
    assert_eq!(
        report,
        AgentReport::DispatchAck {
            current_closure_at_dispatch: "l3gla1g9aaaa-nixos-system-web-01-26.05".into(),
            received_at: t("2026-05-17T12:00:00.123456Z"),
        }
    );
}

#[test]
fn every_event_example_of_section_3_3_decodes() {
    let examples: &[(&str, u64, &str)] = &[
        (
            r#"{"kind":"ActivationStarted","startedAt":"2026-05-17T12:00:01.5Z","switchMethod":"switch-to-configuration","seq":2}"#,
            2,
            "ActivationStarted",
        ),
        (
            r#"{"kind":"ActivationCompleted","observedCurrentClosure":"l3gla1g9aaaa-web-01-26.05","exitCode":0,"completedAt":"2026-05-17T12:00:03.123456789Z","seq":3}"#,
            3,
            "ActivationCompleted",
        ),
        (
            r#"{"kind":"ActivationFailed","exitCode":-3,"stderrTail":"/run/current-system flipped to a third closure","failedAt":"2026-05-17T12:00:03Z","seq":3}"#,
            3,
            "ActivationFailed",
        ),
        (
            r#"{"kind":"ActivationDeferred","component":"kernel","deferredAt":"2026-05-17T12:00:03Z","seq":3}"#,
            3,
            "ActivationDeferred",
        ),
        (
            r#"{"kind":"ProbeTopologyDeclared","probes":[{"probeName":"evidence-nis2-essential","kind":"evidence","mode":"enforce"}],"declaredAt":"2026-05-17T12:00:09Z","seq":4}"#,
            4,
            "ProbeTopologyDeclared",
        ),
        (
            r#"{"kind":"ProbeObservedFirst","probeName":"evidence-nis2-essential","mode":"enforce","observedAt":"2026-05-17T12:00:09.1Z","seq":5}"#,
            5,
            "ProbeObservedFirst",
        ),
        (
            r#"{"kind":"ProbeFailureFirst","probeName":"evidence-nis2-essential","mode":"enforce","firstFailedAt":"2026-05-17T12:00:09.2Z","seq":6}"#,
            6,
            "ProbeFailureFirst",
        ),
        (
            r#"{"kind":"ProbeResult","probeName":"evidence-nis2-essential","mode":"enforce","status":"fail","observedAt":"2026-05-17T12:00:09.2Z",
 "failureReason":"1 enforce-mode control failing","subResults":[
   {"controlId":"access-control","status":"fail","framework":"nis2-essential","article":"21.2.i","effectiveMode":"enforce"},
   {"controlId":"agent-egress-exemption","status":"fail","framework":"nis2-essential","effectiveMode":"observe","overrideReason":"Phase-out window for legacy egress policy"}],"seq":7}"#,
            7,
            "ProbeResult",
        ),
        (
            r#"{"kind":"Failed","failedAt":"2026-05-17T12:02:10Z","sustainedDurationSecs":121,"failingProbes":["evidence-nis2-essential"],"policyApplied":"rollback-and-halt","seq":12}"#,
            12,
            "Failed",
        ),
        (
            r#"{"kind":"RollbackComplete","revertedToClosure":"x7qaaaa-nixos-system-web-02-26.05.0000000","exitCode":0,"completedAt":"2026-05-17T12:02:40Z","seq":13}"#,
            13,
            "RollbackComplete",
        ),
        (
            r#"{"kind":"Converged","convergedAt":"2026-05-17T12:05:00Z","currentClosure":"l3gla1g9aaaa-web-01-26.05","seq":9}"#,
            9,
            "Converged",
        ),
    ];
    for (event, seq, kind) in examples {
        let (got_seq, report) = decode(&envelope(event));
        assert_eq!((got_seq, report.name()), (*seq, *kind), "{event}");
    }
}

#[test]
fn fields_land_where_the_wire_put_them() {
    let (_, r) = decode(&envelope(
        r#"{"kind":"ProbeResult","probeName":"evidence-nis2-essential","mode":"enforce","status":"fail","observedAt":"2026-05-17T12:00:09.2Z",
 "failureReason":"1 enforce-mode control failing","subResults":[
   {"controlId":"access-control","status":"fail","framework":"nis2-essential","article":"21.2.i","effectiveMode":"enforce"},
   {"controlId":"agent-egress-exemption","status":"fail","framework":"nis2-essential","effectiveMode":"observe","overrideReason":"Phase-out window for legacy egress policy"},
   {"controlId":"defaulted","status":"pass","framework":"nis2-essential"}],"seq":7}"#,
    ));
    let AgentReport::ProbeResult {
        status,
        failure_reason,
        sub_results,
        observed_at,
        ..
    } = r
    else {
        panic!("{r:?}")
    };
    assert_eq!(status, ProbeStatus::Fail);
    assert_eq!(observed_at, t("2026-05-17T12:00:09.2Z"));
    assert_eq!(
        failure_reason.as_deref(),
        Some("1 enforce-mode control failing")
    );
    assert_eq!(sub_results[0].article.as_deref(), Some("21.2.i"));
    assert_eq!(sub_results[1].effective_mode, ProbeMode::Observe);
    assert_eq!(
        sub_results[1].override_reason.as_deref(),
        Some("Phase-out window for legacy egress policy")
    );
    // An absent effectiveMode is nixfleet's default, enforce.
    assert_eq!(sub_results[2].effective_mode, ProbeMode::Enforce);

    let (_, r) = decode(&envelope(
        r#"{"kind":"Failed","failedAt":"2026-05-17T12:02:10Z","sustainedDurationSecs":121,"failingProbes":["evidence-nis2-essential"],"policyApplied":"rollback-and-halt","seq":12}"#,
    ));
    assert!(matches!(
        r,
        AgentReport::Failed {
            sustained_duration_secs: 121,
            policy_applied: OnHealthFailure::RollbackAndHalt,
            ..
        }
    ));

    // Probe kinds are a free string on the wire.
    let (_, r) = decode(&envelope(
        r#"{"kind":"ProbeTopologyDeclared","probes":[{"probeName":"p","kind":"dns","mode":"observe"},{"probeName":"q","kind":"http","mode":"disabled"}],"declaredAt":"2026-05-17T12:00:09Z","seq":4}"#,
    ));
    let AgentReport::ProbeTopologyDeclared { probes, .. } = r else {
        panic!("{r:?}")
    };
    assert_eq!(probes[0].kind, ProbeKind::Other("dns".into()));
    assert_eq!(probes[1].kind, ProbeKind::Http);
    assert_eq!(probes[1].mode, ProbeMode::Disabled);

    // Agents write nanoseconds; the ledger keeps microseconds.
    let (_, r) = decode(&envelope(
        r#"{"kind":"Converged","convergedAt":"2026-05-17T12:00:00.123456789Z","currentClosure":"c","seq":9}"#,
    ));
    assert_eq!(r.at(), t("2026-05-17T12:00:00.123456Z"));
}

#[test]
fn unknown_fields_are_ignored_and_missing_ones_refused() {
    let (seq, _) = decode(&envelope(
        r#"{"kind":"Converged","convergedAt":"2026-05-17T12:05:00Z","currentClosure":"c","seq":9,"fromTheFuture":true}"#,
    ));
    assert_eq!(seq, 9);
    let env: AgentEnvelope = serde_json::from_str(&envelope(
        r#"{"kind":"Converged","currentClosure":"c","seq":9}"#,
    ))
    .unwrap();
    let err = env.report().unwrap_err();
    assert!(err.contains("convergedAt"), "{err}");
    let env: AgentEnvelope = serde_json::from_str(&envelope(
        r#"{"kind":"Rebooted","at":"2026-05-17T12:05:00Z","seq":9}"#,
    ))
    .unwrap();
    assert!(env.report().is_err(), "an unknown kind is refused");
}
