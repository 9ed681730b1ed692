//! The failover run checker (issue 29) on a real store whose signer reports every signature
//! to an oracle: a clean run passes, and each violation it exists to find is found: a lost or
//! doubled acknowledgement, reports out of order, a fork signed, signed entries lost, the
//! register moving backwards or acknowledging another history, a follower ahead.

use std::sync::{Arc, Mutex};

use engine::register::Head;
use engine::run_check::{Acked, Evidence, SignedHead, check_run};
use ledger::domain::{AgentReport, RolloutId};
use ledger::event::{AgentEventRecorded, Event};
use ledger::keys::Signer;
use ledger::store::{NewEntry, Store};

const T0: i64 = 1_767_225_600_000_000;

fn report(host: &str, seq: u64) -> NewEntry {
    NewEntry {
        recorded_at_us: T0 + 10,
        event: Event::AgentEventRecorded(AgentEventRecorded {
            hostname: host.into(),
            rollout_id: RolloutId::parse("stable@a1").unwrap(),
            agent_seq: seq,
            report: AgentReport::DispatchAck {
                current_closure_at_dispatch: "/nix/store/x".into(),
                received_at: T0,
            },
        }),
    }
}

fn acked(host: &str, seq: u64) -> Acked {
    Acked {
        host: host.into(),
        rollout: "stable@a1".into(),
        agent_seq: seq,
    }
}

/// A store of three batches (genesis, then reports of web-01 and web-02), every signature
/// seen by the oracle; the evidence of that clean run.
fn clean_run(dir: &std::path::Path) -> (Store, Evidence) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = Arc::clone(&seen);
    let signer = Signer::from_seed("cp.test", &[5; 32])
        .unwrap()
        .with_oracle(Arc::new(move |m: &[u8]| {
            s.lock().unwrap().push(m.to_vec());
        }));
    let mut store = Store::create(&dir.join("l.redb"), "cp.test/log", signer, T0).unwrap();
    let mut register = Vec::new();
    let mut acks = Vec::new();
    for batch in [
        vec![report("web-01", 1), report("web-02", 1)],
        vec![report("web-01", 2)],
    ] {
        let r = store.append(&batch).unwrap();
        register.push(Head {
            tree_size: r.checkpoint.size,
            root: r.checkpoint.root.0,
            epoch: 1,
            sync_set: vec![],
        });
        for e in &batch {
            if let Event::AgentEventRecorded(a) = &e.event {
                acks.push(acked(&a.hostname, a.agent_seq));
            }
        }
    }
    let signed = seen
        .lock()
        .unwrap()
        .iter()
        .filter_map(|m| SignedHead::parse("node-a", m))
        .collect();
    let served = vec![("follower-1".to_string(), register[0].tree_size)];
    (
        store,
        Evidence {
            signed,
            register,
            served,
            acked: acks,
            annotations: Vec::new(),
        },
    )
}

#[test]
fn a_clean_run_passes_and_every_violation_is_found() {
    let dir = tempfile::tempdir().unwrap();
    let (store, clean) = clean_run(dir.path());
    assert_eq!(clean.signed.len(), 3, "genesis and two batches were signed");
    let snap = store.snapshot().unwrap();
    assert_eq!(check_run(&snap, &clean).unwrap(), Vec::<String>::new());

    let finds = |change: &dyn Fn(&mut Evidence), needle: &str| {
        let mut e = clean.clone();
        change(&mut e);
        let v = check_run(&snap, &e).unwrap();
        assert!(
            v.iter().any(|m| m.contains(needle)),
            "expected a violation containing {needle:?}, got {v:?}"
        );
    };
    finds(&|e| e.acked.push(acked("web-03", 1)), "is not in the log");
    finds(
        &|e| {
            let first = e.signed[1].clone();
            e.signed.push(SignedHead {
                node: "node-b".into(),
                root: [0xee; 32],
                ..first
            });
        },
        "a fork",
    );
    finds(
        &|e| {
            e.signed.push(SignedHead {
                node: "node-b".into(),
                size: 99,
                root: [0; 32],
            });
        },
        "signed entries were lost",
    );
    finds(
        &|e| {
            let first = e.register[0].clone();
            e.register.push(first);
        },
        "moved backwards",
    );
    finds(
        &|e| e.register[1].root = [1; 32],
        "a root the final log does not have",
    );
    finds(
        &|e| e.served.push(("follower-1".into(), 5)),
        "above the register's head",
    );
}

#[test]
fn a_report_recorded_twice_or_out_of_order_is_found() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::create(
        &dir.path().join("l.redb"),
        "cp.test/log",
        Signer::from_seed("cp.test", &[5; 32]).unwrap(),
        T0,
    )
    .unwrap();
    store
        .append(&[
            report("web-01", 2),
            report("web-01", 1),
            report("web-01", 2),
        ])
        .unwrap();
    let evidence = Evidence {
        acked: vec![acked("web-01", 1), acked("web-01", 2)],
        ..Evidence::default()
    };
    let v = check_run(&store.snapshot().unwrap(), &evidence).unwrap();
    assert!(v.iter().any(|m| m.contains("comes after #2")), "{v:?}");
    assert!(v.iter().any(|m| m.contains("in the log 2 times")), "{v:?}");
}
