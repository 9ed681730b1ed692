//! A verifying follower's end (issue 29): it holds no key, and grows only by the writer's
//! entries with the writer's signed checkpoint, each checked before anything is written. A
//! checkpoint not signed by the log's key is refused; one the log's key signed that the
//! entries do not give halts it, with both notes kept.

use std::sync::Arc;

use engine::materialize::{CheckOutcome, Ledger, check_snapshot};
use engine::replicate::{FollowError, Follower};
use ledger::event::{Annotation, Event};
use ledger::keys::Signer;
use ledger::store::{NewEntry, Store};

const T0: i64 = 1_767_225_600_000_000;

fn note(n: u64) -> NewEntry {
    NewEntry {
        recorded_at_us: T0 + n as i64,
        event: Event::Annotation(Annotation {
            author: "test".into(),
            text: format!("note {n}"),
        }),
    }
}

/// The writer's entries from `from` on, and its latest checkpoint.
fn tail_of(db: &std::path::Path, from: u64) -> (Vec<Vec<u8>>, String) {
    let store = ledger::store::ReadOnlyStore::open(db).unwrap();
    let snap = store.snapshot().unwrap();
    let entries = snap
        .rows(from..)
        .unwrap()
        .map(|r| r.unwrap().bytes().to_vec())
        .collect();
    (entries, snap.latest_checkpoint().unwrap().unwrap().1)
}

#[test]
fn a_follower_takes_only_what_the_log_signed() {
    let dir = tempfile::tempdir().unwrap();
    let (writer_db, follower_db) = (dir.path().join("w.redb"), dir.path().join("f.redb"));
    drop(
        Store::create(
            &writer_db,
            "follow.example/log",
            fixtures::genesis_signer(),
            T0,
        )
        .unwrap(),
    );
    std::fs::copy(&writer_db, &follower_db).unwrap();
    {
        let mut w = Ledger::open_live(&writer_db, Arc::new(fixtures::genesis_signer())).unwrap();
        for b in 0..4 {
            w.append((0..3).map(|i| note(b * 3 + i + 1)).collect())
                .unwrap();
        }
    }
    let evidence = dir.path().join("evidence");
    let mut f = Follower::open(&follower_db, &evidence).unwrap();
    assert!(
        f.ledger().store().signer().is_none(),
        "a follower holds no key"
    );
    let (entries, cp) = tail_of(&writer_db, 1);

    // Signed by another key: refused, nothing written.
    let other = Signer::from_seed("not-the-log", &[9; 32]).unwrap();
    let body = cp.split("\n\n").next().unwrap().to_string() + "\n";
    let forged = ledger::checkpoint::parse_note(cp.as_bytes())
        .map(|_| {
            let c =
                ledger::checkpoint::verify_note(cp.as_bytes(), fixtures::genesis_signer().public())
                    .unwrap()
                    .checkpoint()
                    .clone();
            c.sign(&other)
        })
        .unwrap();
    assert!(forged.starts_with(&body));
    assert!(matches!(
        f.follow(&entries, &forged),
        Err(FollowError::Unverified(_))
    ));
    // The count does not end at the checkpoint.
    assert!(matches!(
        f.follow(&entries[1..], &cp),
        Err(FollowError::Invalid(_))
    ));
    // An entry changed in transit: the log's signed root is not what the entries give.
    let mut tampered = entries.clone();
    let last = tampered[5].len() - 1;
    tampered[5][last] ^= 1;
    match f.follow(&tampered, &cp) {
        Err(FollowError::Inconsistent { size, .. }) => assert_eq!(size, 13),
        other => panic!("{other:?}"),
    }
    assert!(evidence.join("inconsistent-13.theirs.note").exists());
    assert!(evidence.join("inconsistent-13.ours.note").exists());
    assert_eq!(f.ledger().store().size(), 1, "nothing was written");

    // The writer's entries and checkpoint: taken, projections folded, the same log.
    assert_eq!(f.follow(&entries, &cp).unwrap(), 13);
    drop(f);
    let (w, fo) = (tail_of(&writer_db, 0), tail_of(&follower_db, 0));
    assert_eq!(
        w, fo,
        "the follower's log is the writer's, checkpoint included"
    );
    let store = ledger::store::ReadOnlyStore::open(&follower_db).unwrap();
    let snap = store.snapshot().unwrap();
    snap.verify(fixtures::genesis_signer().public(), |_| {})
        .unwrap();
    assert!(matches!(
        check_snapshot(&snap, |_| {}).unwrap(),
        CheckOutcome::Identical { .. }
    ));
}
