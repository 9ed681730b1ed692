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

/// A writer's log of four batches of three entries after its genesis (sizes 4, 7, 10, 13),
/// and a follower's copy of it at the genesis.
fn writer_and_follower(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let (writer_db, follower_db) = (dir.join("w.redb"), dir.join("f.redb"));
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
    let mut w = Ledger::open_live(&writer_db, Arc::new(fixtures::genesis_signer())).unwrap();
    for b in 0..4 {
        w.append((0..3).map(|i| note(b * 3 + i + 1)).collect())
            .unwrap();
    }
    (writer_db, follower_db)
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
    let (writer_db, follower_db) = writer_and_follower(dir.path());
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

/// The writer's batches from `from` on, each with its signed checkpoint.
fn batches_of(db: &std::path::Path, from: u64) -> Vec<engine::replicate::Batch> {
    let store = ledger::store::ReadOnlyStore::open(db).unwrap();
    let snap = store.snapshot().unwrap();
    let mut out = Vec::new();
    let mut batch = Vec::new();
    for row in snap.rows(from..).unwrap() {
        let row = row.unwrap();
        batch.push(row.bytes().to_vec());
        if row.ends_batch() {
            let note = snap.checkpoint(row.seq() + 1).unwrap().unwrap();
            out.push((note, std::mem::take(&mut batch)));
        }
    }
    out
}

/// A follower with a witness policy (issue 29) follows only up to a checkpoint enough
/// trusted witnesses cosigned: a checkpoint with too few cosignatures, or of another log,
/// moves nothing; a witnessed tree the log's key did not sign halts it with both notes kept,
/// whether the follower holds that size already or reaches it.
#[test]
fn a_follower_with_a_witness_policy_follows_only_what_the_witnesses_cosigned() {
    use ledger::witness::{Witness, WitnessPolicy};
    let dir = tempfile::tempdir().unwrap();
    let (writer_db, follower_db) = writer_and_follower(dir.path());
    let batches = batches_of(&writer_db, 1);
    assert_eq!(batches.len(), 4);
    let (w1, w2) = (
        Witness::from_seed("w1.example", &[1; 32]).unwrap(),
        Witness::from_seed("w2.example", &[2; 32]).unwrap(),
    );
    let policy = WitnessPolicy {
        witnesses: vec![w1.key().clone(), w2.key().clone()],
        required: 2,
    };
    let cosign = |note: &str, by: &[&Witness]| {
        let mut out = note.to_string();
        let body = ledger::checkpoint::parse_note(note.as_bytes())
            .unwrap()
            .body;
        for w in by {
            out.push_str(&w.cosign(&body, 1_767_225_700));
        }
        out
    };
    // The writer's checkpoint after its second batch, cosigned by both witnesses.
    let second = &batches[1].0;
    let witnessed = cosign(second, &[&w1, &w2]);

    let evidence = dir.path().join("evidence");
    let mut f = Follower::open(&follower_db, &evidence).unwrap();
    // One cosignature where two are required: refused, nothing to follow to.
    match f.check_witnessed(&cosign(second, &[&w1]), &policy) {
        Err(FollowError::Unverified(why)) => assert!(why.contains("witness"), "{why}"),
        other => panic!("{other:?}"),
    }
    // Another log's checkpoint, however cosigned: refused.
    let other_log = ledger::checkpoint::Checkpoint {
        origin: "elsewhere.example/log".into(),
        ..ledger::checkpoint::parse_note(second.as_bytes())
            .unwrap()
            .checkpoint
    };
    let other_note = cosign(
        &other_log.sign(&Signer::from_seed("elsewhere", &[5; 32]).unwrap()),
        &[&w1, &w2],
    );
    assert!(matches!(
        f.check_witnessed(&other_note, &policy),
        Err(FollowError::Unverified(_))
    ));
    // Witnessed: followed up to it, not beyond.
    let to = f.check_witnessed(&witnessed, &policy).unwrap();
    assert_eq!(to.size, 7);
    assert_eq!(f.follow_witnessed(&batches, &witnessed).unwrap(), 7);
    assert_eq!(f.follow_witnessed(&batches[2..], &witnessed).unwrap(), 7);
    assert!(!evidence.exists());

    // The witnesses cosigned another tree of size 7 than the one the follower holds (the
    // writer showed them a fork): halted, both notes kept.
    let forked = ledger::checkpoint::Checkpoint {
        root: ledger::hash::Hash([7; 32]),
        ..to.clone()
    };
    let forked_note = cosign(&forked.sign(&fixtures::genesis_signer()), &[&w1, &w2]);
    match f.check_witnessed(&forked_note, &policy) {
        Err(FollowError::Inconsistent { size: 7, .. }) => {}
        other => panic!("{other:?}"),
    }
    let kept = std::fs::read_to_string(evidence.join("inconsistent-7.theirs.note")).unwrap();
    assert_eq!(kept, forked_note);

    // Reaching a witnessed size whose batch the log's key signed with another tree: the
    // batch is not taken.
    let third = ledger::checkpoint::parse_note(batches[2].0.as_bytes())
        .unwrap()
        .checkpoint;
    let forked_third = ledger::checkpoint::Checkpoint {
        root: ledger::hash::Hash([3; 32]),
        ..third
    };
    let witnessed_fork = cosign(&forked_third.sign(&fixtures::genesis_signer()), &[&w1, &w2]);
    f.check_witnessed(&witnessed_fork, &policy).unwrap();
    match f.follow_witnessed(&batches[2..], &witnessed_fork) {
        Err(FollowError::Inconsistent { size: 10, .. }) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(f.ledger().store().size(), 7, "nothing of it was written");
    assert!(evidence.join("inconsistent-10.ours.note").exists());
}

/// A follower follows the writer's log through a key rotation (FORMAT §6): the rotation's
/// batch is taken with its checkpoint signed by the key it replaces, and the new key checks
/// the notes after it; a note of the old key after the rotation is refused. A standby, which
/// signs with the key in force, refuses the rotation by name rather than hold a log it
/// could not sign on from.
#[test]
fn a_follower_follows_through_a_key_rotation_and_a_standby_says_it_lacks_the_new_key() {
    let dir = tempfile::tempdir().unwrap();
    let (writer_db, follower_db) = writer_and_follower(dir.path());
    let standby_db = dir.path().join("s.redb");
    std::fs::copy(&follower_db, &standby_db).unwrap();
    let next = Arc::new(Signer::from_seed("follow.example/log", &[0x42; 32]).unwrap());
    {
        let mut w = Ledger::open_live(&writer_db, Arc::new(fixtures::genesis_signer())).unwrap();
        w.rotate_key(Arc::clone(&next), "scheduled", T0 + 100)
            .unwrap();
        for b in 0..2 {
            w.append((0..3).map(|i| note(100 + b * 3 + i)).collect())
                .unwrap();
        }
    }
    let batches = batches_of(&writer_db, 1);
    assert_eq!(batches.len(), 7, "four, the rotation, two");

    let evidence = dir.path().join("evidence");
    let mut f = Follower::open(&follower_db, &evidence).unwrap();
    // Before the rotation, a note of the new key is not the log's.
    let forged_early = ledger::checkpoint::parse_note(batches[0].0.as_bytes())
        .unwrap()
        .checkpoint
        .sign(&next);
    assert!(matches!(
        f.follow(&batches[0].1, &forged_early),
        Err(FollowError::Unverified(_))
    ));
    assert_eq!(f.follow_batches(&batches[..5]).unwrap(), 14);
    assert_eq!(
        f.ledger().store().public_key().to_text(),
        next.public().to_text()
    );
    // After it, a note of the old key is refused; the new key's are taken.
    let old_note = ledger::checkpoint::parse_note(batches[5].0.as_bytes())
        .unwrap()
        .checkpoint
        .sign(&fixtures::genesis_signer());
    assert!(matches!(
        f.follow(&batches[5].1, &old_note),
        Err(FollowError::Unverified(_))
    ));
    assert_eq!(f.follow_batches(&batches[5..]).unwrap(), 20);
    assert!(!evidence.exists());
    // Its log is the writer's, and its projections are its log's, after a reopen too.
    drop(f);
    let f = Follower::open(&follower_db, &evidence).unwrap();
    assert_eq!(
        f.ledger().store().public_key().to_text(),
        next.public().to_text()
    );
    drop(f);
    let latest = |db: &std::path::Path| {
        ledger::store::ReadOnlyStore::open(db)
            .unwrap()
            .snapshot()
            .unwrap()
            .latest_checkpoint()
            .unwrap()
    };
    assert_eq!(latest(&follower_db), latest(&writer_db));
    let snap = ledger::store::ReadOnlyStore::open(&follower_db)
        .unwrap()
        .snapshot()
        .unwrap();
    assert!(matches!(
        check_snapshot(&snap, |_| ()).unwrap(),
        CheckOutcome::Identical { .. }
    ));

    // A standby holding the old key catches up to the rotation and refuses it, saying why.
    let mut s = engine::replicate::Standby::open(
        &standby_db,
        Arc::new(fixtures::genesis_signer()),
        &dir.path().join("aside"),
    )
    .unwrap();
    match s.catch_up(&batches[..5]) {
        Err(engine::replicate::ShipRefusal::Unavailable(why)) => {
            assert!(why.contains("does not hold the new one"), "{why}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(s.head().0, 13, "everything before the rotation taken");
}
