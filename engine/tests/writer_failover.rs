//! The writer under failover (issue 29), on a real store and the in-memory commit register
//! with injected faults: it takes the log over (the register swapped to its epoch, the
//! hand-over recorded), acknowledges a batch only after the register holds it, settles a
//! lost reply by reading the register (the tail signed if the register holds it, set aside
//! if not), and once another writer took a newer epoch answers 503 and signs nothing more.
//! The run is held to the shared checker: no signature beyond the final log, the register
//! never backwards, every head it held in the log.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use engine::materialize::{CheckOutcome, check_snapshot};
use engine::register::{CommitRegister, Head, MemFault, MemRegister, Swap};
use engine::run_check::{Evidence, SignedHead, check_run};
use engine::writer::{Answer, Clock, Input, Job, Recording, Replication, Work, WriteError, Writer};
use ledger::domain::Micros;
use ledger::event::Event;
use ledger::keys::Signer;
use ledger::store::Store;
use tokio::sync::oneshot;

const T0: Micros = 1_767_225_600_000_000;

/// A newer fleet manifest each call (one entry each).
fn fleet(n: i64) -> Input {
    let signed_at = T0 + n * 1_000_000;
    let (doc, _, _) = fixtures::docs::fleet(5, &planner::decide::rfc3339(signed_at));
    let ci = Signer::from_seed("failover-ci", &[0x77; 32]).unwrap();
    Input::Manifest(Box::new(fixtures::docs::manifest(&doc, &ci, signed_at)))
}

/// Hands one input to the writer and returns its answer.
fn submit(w: &mut Writer, input: Input) -> Result<Answer, WriteError> {
    let (reply, mut rx) = oneshot::channel();
    w.handle([Work::Decide(Job { input, reply })]);
    rx.try_recv().expect("answered before handle returns")
}

#[test]
fn a_writer_signs_only_what_the_register_acknowledged_and_stops_once_fenced() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("l.redb");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let oracle = {
        let seen = Arc::clone(&seen);
        Arc::new(move |m: &[u8]| seen.lock().unwrap().push(m.to_vec()))
    };
    drop(Store::create(&db, "failover.example/log", fixtures::genesis_signer(), T0).unwrap());
    let clock_at = Arc::new(AtomicI64::new(T0 + 10_000_000));
    let c = Arc::clone(&clock_at);
    let clock: Clock = Arc::new(move || c.fetch_add(1_000, Ordering::SeqCst));
    let register = Arc::new(MemRegister::new());
    let signer = fixtures::genesis_signer().with_oracle(oracle);
    let (writer, shared) = Writer::open(db.clone(), signer, clock, 16).unwrap();
    let aside = dir.path().join("aside");
    let mut w = writer
        .with_replication(Replication::alone(
            register.clone(),
            "node-a",
            10,
            aside.clone(),
        ))
        .unwrap();

    // Taken over: the register at epoch 10, the hand-over recorded and acknowledged.
    let history = register.history();
    assert_eq!(history.len(), 2, "{history:?}");
    assert_eq!((history[0].tree_size, history[0].epoch), (1, 10));
    assert_eq!(history[1].tree_size, 2);

    // Acknowledged batches, and a recording (what an access change is) through the register
    // too.
    assert!(matches!(
        submit(&mut w, fleet(1)),
        Ok(Answer::Recorded { .. })
    ));
    let (reply, mut rx) = oneshot::channel();
    w.handle([Work::Record(Box::new(Recording {
        event: Event::Annotation(ledger::event::Annotation {
            author: "test".into(),
            text: "through the register".into(),
        }),
        reply,
    }))]);
    let recorded = rx.try_recv().unwrap().unwrap();
    assert_eq!(
        register.read().unwrap().unwrap().tree_size,
        recorded + 1,
        "the recording was acknowledged by the register"
    );
    // A reply lost, the swap applied: settled by reading, answered.
    register.set_fault(Some(MemFault::Ambiguous));
    assert!(matches!(
        submit(&mut w, fleet(2)),
        Ok(Answer::Recorded { .. })
    ));
    // Applied, then the register dark: 503; still dark: 503; back: the tail is signed (the
    // register holds it) before the next batch goes.
    register.set_fault(Some(MemFault::AppliedThenDark));
    assert!(matches!(
        submit(&mut w, fleet(3)),
        Err(WriteError::Unavailable(_))
    ));
    assert!(matches!(
        submit(&mut w, fleet(4)),
        Err(WriteError::Unavailable(_))
    ));
    register.set_fault(None);
    assert!(matches!(
        submit(&mut w, fleet(5)),
        Ok(Answer::Recorded { .. })
    ));
    // Not applied (no quorum): 503, and the tail is set aside before the next batch.
    register.set_fault(Some(MemFault::Unavailable));
    assert!(matches!(
        submit(&mut w, fleet(6)),
        Err(WriteError::Unavailable(_))
    ));
    register.set_fault(None);
    assert!(matches!(
        submit(&mut w, fleet(7)),
        Ok(Answer::Recorded { .. })
    ));
    let kept: Vec<_> = std::fs::read_dir(&aside).unwrap().collect();
    assert_eq!(kept.len(), 1, "the unacknowledged tail is kept aside");

    // Another writer takes epoch 11: this one is fenced, answers 503, signs nothing more.
    let now = register.read().unwrap().unwrap();
    let taken = Head {
        epoch: 11,
        ..now.clone()
    };
    assert_eq!(
        register.compare_and_swap(Some(&now), &taken),
        Ok(Swap::Done)
    );
    let signed_before = seen.lock().unwrap().len();
    assert!(
        matches!(submit(&mut w, fleet(8)), Err(WriteError::Unavailable(m)) if m.contains("commit register"))
    );
    assert!(
        matches!(submit(&mut w, fleet(9)), Err(WriteError::Unavailable(m)) if m.contains("fenced"))
    );
    assert_eq!(
        seen.lock().unwrap().len(),
        signed_before,
        "a fenced writer signs nothing"
    );
    drop(w);
    drop(shared);

    // The run, held to the shared checker.
    let store = Store::open(&db, fixtures::genesis_signer()).unwrap();
    let snap = store.snapshot().unwrap();
    let evidence = Evidence {
        signed: seen
            .lock()
            .unwrap()
            .iter()
            .filter_map(|m| SignedHead::parse("node-a", m))
            .collect(),
        register: register.history(),
        ..Evidence::default()
    };
    assert_eq!(check_run(&snap, &evidence).unwrap(), Vec::<String>::new());
    // Fleets 1, 2, 3 (signed once the register was back), 5 and 7 are in the log; 4 was never
    // decided, 6 was set aside, 8 and 9 were refused.
    let fleets = snap
        .entries(..)
        .unwrap()
        .filter(|e| {
            matches!(
                e.as_ref().unwrap().event,
                Event::FleetManifestSigned(_) | Event::FleetManifestAccepted(_)
            )
        })
        .count();
    assert_eq!(fleets, 5);
    assert!(
        snap.entries(..)
            .unwrap()
            .any(|e| matches!(e.unwrap().event, Event::WriterEpochStarted(w) if w.epoch == 10))
    );
    snap.verify(fixtures::genesis_signer().public(), |_| {})
        .unwrap();
    assert!(matches!(
        check_snapshot(&snap, |_| {}).unwrap(),
        CheckOutcome::Identical { .. }
    ));
}

#[test]
fn a_node_behind_the_register_or_at_an_older_epoch_does_not_write() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("l.redb");
    drop(Store::create(&db, "failover.example/log", fixtures::genesis_signer(), T0).unwrap());
    let clock: Clock = Arc::new(|| T0 + 10_000_000);
    let open = || {
        Writer::open(db.clone(), fixtures::genesis_signer(), clock.clone(), 16)
            .unwrap()
            .0
    };
    let replication = |register: &Arc<MemRegister>, epoch| {
        Replication::alone(register.clone(), "node-b", epoch, dir.path().join("aside"))
    };
    // The register acknowledges more than this node holds.
    let ahead = Arc::new(MemRegister::new());
    ahead
        .compare_and_swap(
            None,
            &Head {
                tree_size: 40,
                root: [1; 32],
                epoch: 3,
                sync_set: vec!["node-c".into()],
            },
        )
        .unwrap();
    let e = open().with_replication(replication(&ahead, 4)).unwrap_err();
    assert!(e.to_string().contains("catch up"), "{e}");
    // An epoch not above the register's.
    let e = open().with_replication(replication(&ahead, 3)).unwrap_err();
    assert!(e.to_string().contains("not below"), "{e}");
}

/// A node whose signed log extends the register's head (it wrote on alone, outside failover:
/// a key rotation, a time without etcd) holds every acknowledged entry, and takes the log
/// over from there; one whose log has another tree at the register's size does not.
#[test]
fn a_node_whose_log_extends_the_register_takes_over_and_a_diverged_one_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("l.redb");
    drop(Store::create(&db, "failover.example/log", fixtures::genesis_signer(), T0).unwrap());
    let clock: Clock = Arc::new(|| T0 + 10_000_000);
    let open = || {
        Writer::open(db.clone(), fixtures::genesis_signer(), clock.clone(), 16)
            .unwrap()
            .0
    };
    // Written alone: two batches; the register acknowledged the first only.
    let mut lone = open();
    for n in 1..=2 {
        assert!(matches!(
            submit(&mut lone, fleet(n)),
            Ok(Answer::Recorded { .. })
        ));
    }
    drop(lone);
    let (first, size) = {
        let store = ledger::store::ReadOnlyStore::open(&db).unwrap();
        let snap = store.snapshot().unwrap();
        let note = snap
            .checkpoint(2)
            .unwrap()
            .expect("the first batch ends at 2");
        let cp = ledger::checkpoint::parse_note(note.as_bytes())
            .unwrap()
            .checkpoint;
        (cp, snap.size())
    };
    assert_eq!(size, 3);
    let at = |root: [u8; 32]| {
        let register = Arc::new(MemRegister::new());
        register
            .compare_and_swap(
                None,
                &Head {
                    tree_size: first.size,
                    root,
                    epoch: 3,
                    sync_set: vec!["node-c".into()],
                },
            )
            .unwrap();
        register
    };
    let replication = |register: &Arc<MemRegister>| {
        Replication::alone(register.clone(), "node-b", 4, dir.path().join("aside"))
    };
    // Another tree at that size: refused, the register unmoved.
    let diverged = at([7; 32]);
    let e = open().with_replication(replication(&diverged)).unwrap_err();
    assert!(e.to_string().contains("catch up"), "{e}");
    assert_eq!(diverged.read().unwrap().unwrap().epoch, 3);
    // Its own tree: taken over from there, the hand-over recorded after what it wrote alone.
    let register = at(first.root.0);
    let w = open().with_replication(replication(&register)).unwrap();
    let head = register.read().unwrap().unwrap();
    assert_eq!((head.epoch, head.tree_size), (4, size + 1));
    drop(w);
    let store = ledger::store::ReadOnlyStore::open(&db).unwrap();
    let snap = store.snapshot().unwrap();
    assert!(matches!(
        snap.logged(size).unwrap().unwrap().event,
        Event::WriterEpochStarted(_)
    ));
}
