//! The inverse map round-trips every input kind: what a decision records, [`input_of`] turns
//! back into an input that, decided again from the same state at the same time, stages the
//! same events. That is what `replay --check` relies on for each recorded decision.

mod common;

use std::collections::BTreeSet;

use base64::Engine as _;
use common::*;
use ledger::domain::{AgentReport, Hostname, Micros, OnHealthFailure, RolloutId};
use ledger::event::{
    AgentCertificateRenewed, AgentEnrolled, BootstrapTokenRecord, Event, IssuedCertificate,
    QuarantineAdded,
};
use planner::{Input, Manifests, decide, input_of};
use serde_json::json;

/// Every input kind, named: no wildcard, so a new kind does not compile here until the
/// scenario below covers it and [`KINDS`] lists it.
fn listed(input: &Input) {
    match input {
        Input::Report { .. }
        | Input::Heartbeat { .. }
        | Input::Manifest(_)
        | Input::Clear { .. }
        | Input::Lift { .. }
        | Input::TakeDispatch { .. }
        | Input::Tick { .. }
        | Input::Expire { .. }
        | Input::Plan
        | Input::Enroll(_)
        | Input::Renew { .. } => {}
    }
}

const KINDS: [&str; 11] = [
    "report",
    "heartbeat",
    "manifest",
    "clear",
    "lift",
    "take-dispatch",
    "tick",
    "expire",
    "plan",
    "enroll",
    "renew",
];

/// A log and the manifests in force, decided into as the writer does.
struct Run {
    fleet: Fleet,
    manifests: Manifests,
    covered: BTreeSet<&'static str>,
}

impl Run {
    /// Decides `input` at `now`, then checks that the entry it starts with maps back to an
    /// input deciding the same events from the state before it. Returns what was staged.
    fn step(&mut self, input: Input, now: Micros) -> Vec<Event> {
        listed(&input);
        let name = input.name();
        let (before, manifests) = (self.fleet.clone(), self.manifests.clone());
        let from = self.fleet.log.len();
        decide(&mut self.fleet, &mut self.manifests, input, now)
            .unwrap_or_else(|e| panic!("{name}: refused: {e}"));
        let staged = self.fleet.log[from..].to_vec();
        assert!(!staged.is_empty(), "{name}: recorded nothing");
        let rebuilt = input_of(&staged[0])
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .unwrap_or_else(|| panic!("{name}: {} maps to no input", staged[0].kind().name()));
        let (mut again, mut m) = (before, manifests);
        let from = again.log.len();
        decide(&mut again, &mut m, rebuilt, now)
            .unwrap_or_else(|e| panic!("{name}: the rebuilt input is refused: {e}"));
        assert_eq!(again.log[from..], staged[..], "{name}: decided again");
        self.covered.insert(name);
        staged
    }
}

fn h(name: &str) -> Hostname {
    Hostname::parse(name).unwrap()
}

/// An OpenSSH ed25519 public key line for raw key `key`.
fn ssh_line(key: [u8; 32]) -> String {
    let mut blob = vec![0, 0, 0, 11];
    blob.extend_from_slice(b"ssh-ed25519");
    blob.extend_from_slice(&[0, 0, 0, 32]);
    blob.extend_from_slice(&key);
    format!(
        "ssh-ed25519 {} root@web-01",
        base64::engine::general_purpose::STANDARD.encode(&blob)
    )
}

fn certificate(serial: u8, key: [u8; 32]) -> IssuedCertificate {
    IssuedCertificate {
        der: vec![0x30, serial],
        serial: vec![serial],
        common_name: "agent-web-01.fleet.test".into(),
        public_key: key,
        not_before: T0,
        not_after: T0 + 30 * 24 * 60 * MIN,
    }
}

#[test]
fn every_input_kind_round_trips_through_the_inverse_map() {
    let key = [0x42; 32];
    let t = "2026-01-01T00:00:00Z";
    let mut run = Run {
        fleet: Fleet::new(),
        manifests: Manifests::default(),
        covered: BTreeSet::new(),
    };
    let fleet = json!({
        "schemaVersion": 1,
        "hosts": {"web-01": {"channel": "canary", "pubkey": ssh_line(key)}},
        "channels": {"canary": {"rollout_policy": "fast"}},
        "rollout_policies": {"fast": {"strategy": "all-at-once", "waves": [{"soak_minutes": 0}], "on_health_failure": "halt"}},
        "waves": {"canary": [{"hosts": ["web-01"]}]},
        "meta": {"schemaVersion": 1, "signedAt": t},
    });
    run.step(manifest(&fleet, 1, T0), T0);
    run.step(
        Input::Enroll(Box::new(AgentEnrolled {
            hostname: "web-01".into(),
            token: BootstrapTokenRecord {
                version: 1,
                claims: b"{}".to_vec(),
                signature: vec![7; 64],
                signer: "org-root".into(),
                nonce: "n-1".into(),
                issued_at: T0,
                expires_at: T0 + 60 * MIN,
            },
            certificate: certificate(1, key),
        })),
        T0 + 1,
    );
    run.step(
        Input::Renew {
            renewed: Box::new(AgentCertificateRenewed {
                hostname: "web-01".into(),
                presented_serial: vec![1],
                certificate: certificate(2, key),
            }),
            presented_not_before: None,
        },
        T0 + 2,
    );
    // CI's lists (NIXFLEET-WIRE.md §9.1, §9.2): decided from their bytes like manifests.
    let revoked = run.step(
        manifest(
            &json!({"schemaVersion": 1, "meta": {"schemaVersion": 1, "signedAt": t},
                "revocations": [{"hostname": "web-01", "notBefore": "2026-01-01T00:00:00.5Z",
                                 "reason": "stolen", "revokedBy": "alice"}]}),
            20,
            T0 + 2,
        ),
        T0 + 2,
    );
    assert!(matches!(&revoked[0], Event::RevocationsAccepted(r)
        if r.revocations[0].not_before == T0 + 500_000 && r.file.signature == vec![20; 64]));
    run.step(
        manifest(
            &json!({"schemaVersion": 1, "meta": {"schemaVersion": 1, "signedAt": t},
                "bootstrapNonces": [{"nonce": "n-2", "hostname": "web-01",
                                     "expiresAt": "2026-01-01T01:00:00Z"}]}),
            21,
            T0 + 2,
        ),
        T0 + 2,
    );
    // Refused by them: a renewal presenting a certificate from before the cutoff (revoked
    // between the API's check and the decision), an enrollment on an unlisted nonce.
    let refused = |input: Input| {
        let (mut f, mut m) = (run.fleet.clone(), run.manifests.clone());
        match decide(&mut f, &mut m, input, T0 + 2) {
            Err(planner::Undecided::Refused(r)) => r.code(),
            other => panic!("not refused: {other:?}"),
        }
    };
    let renewal = |not_before: Micros| Input::Renew {
        renewed: Box::new(AgentCertificateRenewed {
            hostname: "web-01".into(),
            presented_serial: vec![2],
            certificate: certificate(3, key),
        }),
        presented_not_before: Some(not_before),
    };
    assert_eq!(refused(renewal(T0)), "certificate-revoked");
    let enrollment = |nonce: &str| {
        Input::Enroll(Box::new(AgentEnrolled {
            hostname: "web-01".into(),
            token: BootstrapTokenRecord {
                version: 1,
                claims: b"{}".to_vec(),
                signature: vec![7; 64],
                signer: "org-root".into(),
                nonce: nonce.into(),
                issued_at: T0,
                expires_at: T0 + 60 * MIN,
            },
            certificate: certificate(4, key),
        }))
    };
    assert_eq!(refused(enrollment("n-3")), "nonce-not-allowed");
    run.step(enrollment("n-2"), T0 + 2);
    run.step(renewal(T0 + 500_000), T0 + 2);
    let rollout = json!({
        "schema_version": 1,
        "channel": "canary",
        "channel_ref": "a1a1a1a1",
        "fleet_resolved_hash": "01".repeat(32),
        "host_set": [{"hostname": "web-01", "wave_index": 0, "target_closure": TARGET}],
        "disruption_budgets": [],
        "meta": {"schemaVersion": 1, "signedAt": t},
    });
    run.step(manifest(&rollout, 9, T0 + 3), T0 + 3);
    // The planner opens the rollout, then (its next run) queues the host's dispatch.
    let opened = run.step(Input::Plan, T0 + 4);
    assert!(matches!(opened[0], Event::RolloutOpened(_)), "{opened:?}");
    let queued = run.step(Input::Plan, T0 + 4);
    assert!(
        queued.iter().any(|e| matches!(e, Event::DispatchQueued(_))),
        "{queued:?}"
    );
    let r = RolloutId::parse("canary@a1a1a1a1").unwrap();
    run.step(Input::TakeDispatch { host: h("web-01") }, T0 + 5);
    let report = |agent_seq, report| Input::Report {
        host: h("web-01"),
        rollout: r.clone(),
        agent_seq,
        report,
    };
    run.step(report(1, ack(T0 + 6)), T0 + 6);
    // A report the machines refuse is recorded as refused, and decided again as refused.
    let refused = run.step(report(2, converged(TARGET, T0 + 7)), T0 + 7);
    assert!(matches!(refused[0], Event::AgentReportRefused(_)));
    // The host runs its target: the heartbeat implies the activation.
    let synthesized = run.step(
        Input::Heartbeat {
            host: h("web-01"),
            rollout: Some(r.clone()),
            current_closure: Some(TARGET.into()),
            at: T0 + 8,
        },
        T0 + 8,
    );
    assert!(matches!(synthesized[0], Event::AgentEventSynthesized(_)));
    run.fleet.append(
        &[Event::QuarantineAdded(QuarantineAdded {
            channel: "canary".into(),
            closure: TARGET.into(),
            rollout_id: r.clone(),
            hostname: "web-01".into(),
        })],
        T0 + 9,
    );
    run.step(
        Input::Lift {
            channel: "canary".into(),
            closure: TARGET.into(),
            operator: "alice".into(),
            reason: "fixed upstream".into(),
        },
        T0 + 10,
    );
    // The host fails under a halting policy: the rollout fails, and an operator clears it.
    run.step(
        report(
            3,
            AgentReport::Failed {
                failed_at: T0 + 11,
                sustained_duration_secs: 120,
                failing_probes: vec!["http".into()],
                policy_applied: OnHealthFailure::Halt,
            },
        ),
        T0 + 11,
    );
    run.step(
        Input::Clear {
            rollout: r.clone(),
            operator: "alice".into(),
            reason: "investigated".into(),
        },
        T0 + 12,
    );
    // A finished rollout past its retention: a tick prunes it, recorded as its expiry.
    let keep = 10 * MIN;
    let pruned = run.step(
        Input::Tick {
            retain_for: Some(keep),
        },
        T0 + 12 + keep,
    );
    assert!(
        matches!(&pruned[0], Event::RolloutTransitioned(t) if t.rollout_id == r),
        "{pruned:?}"
    );
    // What a tick records is an expiry's decision: the expiry kind, directly.
    let other = rid("canary@b2b2");
    run.fleet.open(&other, &[("web-01", 0)], T0 + 13 + keep);
    let third = rid("canary@c3c3");
    run.fleet.open(&third, &[("web-01", 0)], T0 + 14 + keep);
    run.step(Input::Expire { rollout: other }, T0 + 14 + 2 * keep);
    assert_eq!(run.covered, KINDS.into_iter().collect());
}
