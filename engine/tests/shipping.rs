//! The writer's standbys (issue 29), on real stores: a batch is acknowledged with the standbys
//! that hold it as the register's sync set; a standby that stops answering is left out of it
//! and the writer goes on (degraded mode, counted); with `strict_sync` the writer refuses the
//! batch instead (503, the register unmoved, the tail set aside); a standby that holds
//! batches of a newer epoch fences the writer at once.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use engine::register::{CommitRegister, MemRegister};
use engine::replicate::{ShipRefusal, Shipment, Shipper, Standby, Target};
use engine::writer::{Answer, Clock, Input, Job, Replication, Work, WriteError, Writer};
use ledger::domain::Micros;
use ledger::keys::Signer;
use ledger::store::Store;
use tokio::sync::oneshot;

const T0: Micros = 1_767_225_600_000_000;

fn fleet(n: i64) -> Input {
    let signed_at = T0 + n * 1_000_000;
    let (doc, _, _) = fixtures::docs::fleet(5, &planner::decide::rfc3339(signed_at));
    let ci = Signer::from_seed("shipping-ci", &[0x66; 32]).unwrap();
    Input::Manifest(Box::new(fixtures::docs::manifest(&doc, &ci, signed_at)))
}

fn submit(w: &mut Writer, input: Input) -> Result<Answer, WriteError> {
    let (reply, mut rx) = oneshot::channel();
    w.handle([Work::Decide(Job { input, reply })]);
    rx.try_recv().expect("answered before handle returns")
}

/// One standby, in process, that can be cut off.
struct Link {
    standby: Mutex<Standby>,
    up: AtomicBool,
    /// Every shipment that reached it, in order.
    shipped: Mutex<Vec<Shipment>>,
}

impl Shipper for Link {
    fn ship(&self, to: &[Target], s: &Shipment) -> Vec<Result<(), ShipRefusal>> {
        to.iter()
            .map(|_| {
                if !self.up.load(Ordering::SeqCst) {
                    return Err(ShipRefusal::Unavailable("link down".into()));
                }
                self.shipped.lock().unwrap().push(s.clone());
                self.standby.lock().unwrap().receive(s).map(|_| ())
            })
            .collect()
    }
}

fn cluster(
    dir: &std::path::Path,
    strict: bool,
) -> (
    Writer,
    Arc<engine::writer::Shared>,
    Arc<MemRegister>,
    Arc<Link>,
) {
    let (a, b) = (dir.join("a.redb"), dir.join("b.redb"));
    drop(Store::create(&a, "ship.example/log", fixtures::genesis_signer(), T0).unwrap());
    std::fs::copy(&a, &b).unwrap();
    let link = Arc::new(Link {
        standby: Mutex::new(
            Standby::open(
                &b,
                Arc::new(fixtures::genesis_signer()),
                &dir.join("b-aside"),
            )
            .unwrap(),
        ),
        up: AtomicBool::new(true),
        shipped: Mutex::new(Vec::new()),
    });
    let register = Arc::new(MemRegister::new());
    let clock_at = Arc::new(AtomicI64::new(T0 + 10_000_000));
    let clock: Clock = Arc::new(move || clock_at.fetch_add(1_000, Ordering::SeqCst));
    let (w, shared) = Writer::open(a, fixtures::genesis_signer(), clock, 16).unwrap();
    let w = w
        .with_replication(Replication {
            register: register.clone(),
            node: "a".into(),
            epoch: 5,
            standbys: vec!["b".into()],
            shipper: Some(link.clone()),
            strict_sync: strict,
            min_sync: usize::from(strict),
            ship_timeout: Duration::from_secs(1),
            aside: dir.join("a-aside"),
        })
        .unwrap();
    (w, shared, register, link)
}

#[test]
fn a_standby_that_stops_answering_is_left_out_and_the_writer_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let (mut w, shared, register, link) = cluster(dir.path(), false);
    assert!(matches!(
        submit(&mut w, fleet(1)),
        Ok(Answer::Recorded { .. })
    ));
    let held = register.read().unwrap().unwrap();
    assert_eq!(held.sync_set, vec!["b".to_string()], "the standby holds it");
    // The standby holds every acknowledged entry: signed, or as its tail.
    let standby_holds = |link: &Link, size: u64| {
        let s = link.standby.lock().unwrap();
        s.head().0 == size || s.tail_head().unwrap().map(|(n, _)| n) == Some(size)
    };
    assert!(standby_holds(&link, held.tree_size));

    // Cut off: the batch is acknowledged without it, the sync set is empty, it is counted.
    link.up.store(false, Ordering::SeqCst);
    assert!(matches!(
        submit(&mut w, fleet(2)),
        Ok(Answer::Recorded { .. })
    ));
    let degraded = register.read().unwrap().unwrap();
    assert!(degraded.sync_set.is_empty(), "{degraded:?}");
    assert!(degraded.tree_size > held.tree_size);
    assert_eq!(shared.metrics.standbys_dropped.get(), 1);
    assert_eq!(shared.metrics.sync_set_size.get(), 0);
    // Still cut off: not counted again (it was out already), writes go on.
    assert!(matches!(
        submit(&mut w, fleet(3)),
        Ok(Answer::Recorded { .. })
    ));
    assert_eq!(shared.metrics.standbys_dropped.get(), 1);
}

#[test]
fn with_strict_sync_a_batch_no_standby_holds_is_refused_and_the_register_stays() {
    let dir = tempfile::tempdir().unwrap();
    let (mut w, _shared, register, link) = cluster(dir.path(), true);
    assert!(matches!(
        submit(&mut w, fleet(1)),
        Ok(Answer::Recorded { .. })
    ));
    let before = register.read().unwrap().unwrap();
    link.up.store(false, Ordering::SeqCst);
    match submit(&mut w, fleet(2)) {
        Err(WriteError::Unavailable(why)) => assert!(why.contains("strict_sync"), "{why}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        register.read().unwrap().unwrap(),
        before,
        "the register did not move"
    );
    let aside: Vec<_> = std::fs::read_dir(dir.path().join("a-aside"))
        .unwrap()
        .collect();
    assert_eq!(aside.len(), 1, "the refused batch's tail is kept aside");
    // Back: the next batch is taken (the standby sets its own copy of nothing aside; it
    // never got the refused batch) and acknowledged with it.
    link.up.store(true, Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(1100)); // out of the sync set: shipped once a second
    assert!(matches!(
        submit(&mut w, fleet(3)),
        Ok(Answer::Recorded { .. })
    ));
    let after = register.read().unwrap().unwrap();
    assert_eq!(after.sync_set, vec!["b".to_string()]);
}

#[test]
fn a_standby_of_a_newer_epoch_fences_the_writer() {
    let dir = tempfile::tempdir().unwrap();
    let (mut w, _shared, register, link) = cluster(dir.path(), false);
    assert!(matches!(
        submit(&mut w, fleet(1)),
        Ok(Answer::Recorded { .. })
    ));
    // The standby took a batch from a writer of epoch 9 (another node took over and shipped
    // to it before this writer's next swap): it refuses epoch 5.
    {
        let mut s = link.standby.lock().unwrap();
        let (size, root) = s.head();
        let refused = s.receive(&Shipment {
            epoch: 9,
            node: "c".into(),
            base: (size + 100, root),
            checkpoint: ledger::checkpoint::Checkpoint {
                origin: "ship.example/log".into(),
                size: size + 101,
                root: ledger::hash::Hash([0; 32]),
                head: ledger::hash::Hash([0; 32]),
            },
            entries: vec![vec![0]],
        });
        assert!(refused.is_err(), "behind, but the epoch is kept");
        assert_eq!(s.epoch(), 9);
    }
    let before = register.read().unwrap().unwrap();
    match submit(&mut w, fleet(2)) {
        Err(WriteError::Unavailable(why)) => assert!(why.contains("epoch 9"), "{why}"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        submit(&mut w, fleet(3)),
        Err(WriteError::Unavailable(why)) if why.contains("fenced")
    ));
    assert_eq!(
        register.read().unwrap().unwrap(),
        before,
        "nothing was swapped"
    );
}

/// A standby signs the tail a shipment shows acknowledged and holds the shipped batch in the
/// same durable transaction (DECISIONS 155); a shipment that does not continue its chain as
/// shipped is refused and kept aside, and the acknowledged tail beneath it is signed all the
/// same; the true shipment is then taken.
#[test]
fn a_standby_signs_what_was_acknowledged_and_holds_the_next_batch_or_refuses_a_bad_one() {
    let dir = tempfile::tempdir().unwrap();
    let (mut w, _shared, register, link) = cluster(dir.path(), false);
    for n in 1..=2 {
        assert!(matches!(
            submit(&mut w, fleet(n)),
            Ok(Answer::Recorded { .. })
        ));
    }
    let shipped = link.shipped.lock().unwrap().clone();
    assert_eq!(shipped.len(), 3, "the hand-over and two manifests");
    let held = register.read().unwrap().unwrap();
    {
        let s = link.standby.lock().unwrap();
        // Signed up to the second batch (the third's base), the third held as the tail.
        assert_eq!(s.head(), shipped[2].base);
        assert_eq!(s.tail_head().unwrap(), Some((held.tree_size, held.root)));
    }
    // A fresh standby from the genesis: the first shipment is held; the second, altered in
    // one entry byte, is refused, the first signed beneath it, the altered batch kept aside.
    let c = dir.path().join("c.redb");
    drop(Store::create(&c, "ship.example/log", fixtures::genesis_signer(), T0).unwrap());
    let aside = dir.path().join("c-aside");
    let mut standby = Standby::open(&c, Arc::new(fixtures::genesis_signer()), &aside).unwrap();
    standby.receive(&shipped[0]).unwrap();
    let mut altered = shipped[1].clone();
    let last = altered.entries[0].len() - 1;
    altered.entries[0][last] ^= 1;
    match standby.receive(&altered) {
        // The byte re-encodes as altered, so the entries end with another checkpoint.
        Err(ShipRefusal::Invalid(why)) => assert!(why.contains("checkpoint"), "{why}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        standby.head(),
        shipped[1].base,
        "the acknowledged batch is signed"
    );
    assert_eq!(standby.tail_head().unwrap(), None);
    assert_eq!(std::fs::read_dir(&aside).unwrap().count(), 1, "kept aside");
    // The true one is taken, then the next signs it.
    standby.receive(&shipped[1]).unwrap();
    standby.receive(&shipped[2]).unwrap();
    assert_eq!(standby.head(), shipped[2].base);
    assert_eq!(
        standby.tail_head().unwrap(),
        Some((held.tree_size, held.root))
    );
    // Durable: reopened on its file, it holds the same, and its projections are the log's.
    drop(standby);
    let standby = Standby::open(&c, Arc::new(fixtures::genesis_signer()), &aside).unwrap();
    assert_eq!(standby.head(), shipped[2].base);
    assert_eq!(
        standby.tail_head().unwrap(),
        Some((held.tree_size, held.root))
    );
    drop(standby);
    assert!(matches!(
        engine::materialize::check(&c, |_| ()).unwrap(),
        engine::materialize::CheckOutcome::Identical { .. }
    ));
}
