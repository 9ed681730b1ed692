//! The commit register and the writer election against a real etcd cluster (three members of
//! Debian's etcd 3.4 on loopback), as issue 29's failover stands on them: a swap happens only
//! from the value the register holds, exactly one of many racing swaps wins, nothing is
//! swapped without a quorum (an error, never a success), and a writer whose lease lapsed is
//! fenced by the next epoch's swap however late it wakes.

mod etcd;

use std::sync::Arc;
use std::time::Duration;

use engine::register::{CommitRegister, Head, RegisterError, Swap};
use fleet_ledger::replication::{Etcd, EtcdRegister, campaign};

const TIMEOUT: Duration = Duration::from_secs(2);

fn head(size: u64, epoch: u64, sync: &[&str]) -> Head {
    Head {
        tree_size: size,
        root: [size as u8; 32],
        epoch,
        sync_set: sync.iter().map(|s| s.to_string()).collect(),
    }
}

/// Runs a synchronous register call off the runtime, as the writer's thread makes them.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

/// The first swap of a test, retried while a just-started cluster settles its leader (an
/// error is retried, an answer is returned).
async fn first_swap(r: &Arc<EtcdRegister>, next: &Head) -> Swap {
    for _ in 0..50 {
        let (rr, n) = (Arc::clone(r), next.clone());
        match blocking(move || rr.compare_and_swap(None, &n)).await {
            Ok(s) => return s,
            Err(e) => eprintln!("first swap, cluster settling: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("the cluster never took a first swap");
}

async fn register(c: &etcd::Cluster, prefix: &str) -> Arc<EtcdRegister> {
    let etcd = Etcd::new(&c.endpoints(), Some(TIMEOUT)).unwrap();
    Arc::new(EtcdRegister::new(
        etcd,
        prefix,
        tokio::runtime::Handle::current(),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_register_swaps_only_from_what_it_holds_and_one_racer_wins() {
    if !etcd::have_etcd() {
        return;
    }
    let cluster = etcd::Cluster::start();
    let r = register(&cluster, "/fleet-ledger/test").await;
    let first = head(1, 7, &["standby-a"]);
    assert_eq!(first_swap(&r, &first).await, Swap::Done);
    // From a head it does not hold: fenced, with what it holds.
    let rr = Arc::clone(&r);
    assert_eq!(
        blocking(move || rr.compare_and_swap(Some(&head(5, 7, &[])), &head(6, 7, &[]))).await,
        Ok(Swap::Fenced {
            actual: Some(first.clone())
        })
    );
    // Empty is not "anything": a swap from None is fenced once written.
    let rr = Arc::clone(&r);
    assert!(matches!(
        blocking(move || rr.compare_and_swap(None, &head(2, 8, &[]))).await,
        Ok(Swap::Fenced { .. })
    ));

    // Eight writers race from the same head: exactly one wins, every other is fenced and
    // sees the winner's head.
    let mut racers = Vec::new();
    for i in 0..8u64 {
        let (rr, from) = (Arc::clone(&r), first.clone());
        racers.push(tokio::task::spawn_blocking(move || {
            let next = head(2, 7, &[&format!("racer-{i}")]);
            (next.clone(), rr.compare_and_swap(Some(&from), &next))
        }));
    }
    let mut won = Vec::new();
    let mut seen = Vec::new();
    for r in racers {
        let (next, got) = r.await.unwrap();
        match got.unwrap() {
            Swap::Done => won.push(next),
            Swap::Fenced { actual } => seen.push(actual.unwrap()),
        }
    }
    assert_eq!(won.len(), 1, "exactly one racer wins: {won:?}");
    assert!(seen.iter().all(|h| *h == won[0]), "{seen:?} vs {won:?}");
    let rr = Arc::clone(&r);
    assert_eq!(blocking(move || rr.read()).await, Ok(Some(won[0].clone())));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_a_quorum_nothing_is_swapped_and_nothing_is_claimed() {
    if !etcd::have_etcd() {
        return;
    }
    let mut cluster = etcd::Cluster::start();
    let r = register(&cluster, "/fleet-ledger/quorum").await;
    let before = head(10, 3, &["s"]);
    assert_eq!(first_swap(&r, &before).await, Swap::Done);
    cluster.kill_member(1);
    cluster.kill_member(2);
    let (rr, b) = (Arc::clone(&r), before.clone());
    let started = std::time::Instant::now();
    let got = blocking(move || rr.compare_and_swap(Some(&b), &head(11, 3, &["s"]))).await;
    assert!(
        matches!(got, Err(RegisterError::Unavailable(_))),
        "no quorum must be an error, never a swap: {got:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "bounded by the timeouts"
    );
    let rr = Arc::clone(&r);
    assert!(blocking(move || rr.read()).await.is_err());

    // The majority back: the register holds what it held; the swap goes through now.
    cluster.start_member(1);
    cluster.start_member(2);
    cluster.wait_healthy();
    let mut held = None;
    for _ in 0..100 {
        let rr = Arc::clone(&r);
        if let Ok(h) = blocking(move || rr.read()).await {
            held = Some(h);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(held, Some(Some(before.clone())));
    let (rr, b) = (Arc::clone(&r), before.clone());
    assert_eq!(
        blocking(move || rr.compare_and_swap(Some(&b), &head(11, 3, &["s"]))).await,
        Ok(Swap::Done)
    );
}

/// The fencing story: writer A leads (epoch a) and swaps; its lease lapses (a pause, a
/// stalled VM); B wins the election with a higher epoch and swaps the register to its epoch;
/// A wakes and tries to extend its head: fenced.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_writer_whose_lease_lapsed_is_fenced_by_the_next_epoch() {
    if !etcd::have_etcd() {
        return;
    }
    let cluster = etcd::Cluster::start();
    let prefix = "/fleet-ledger/election";
    // (`cluster` is moved below to kill members.)
    let client = Etcd::new(&cluster.endpoints(), Some(TIMEOUT)).unwrap();
    let r = register(&cluster, prefix).await;
    let ttl = Duration::from_secs(2);
    let a = campaign(&client, prefix, "node-a", ttl).await.unwrap();
    let a_head = head(4, a.epoch, &["node-b"]);
    assert_eq!(first_swap(&r, &a_head).await, Swap::Done);

    // B campaigns behind A; it cannot lead while A's lease lives.
    let b_client = client.clone();
    let b = tokio::spawn(async move { campaign(&b_client, prefix, "node-b", ttl).await });
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(!b.is_finished(), "B led while A's lease was alive");
    let a_epoch = a.epoch;
    a.abandon();
    let b = tokio::time::timeout(Duration::from_secs(15), b)
        .await
        .expect("B leads once A's lease lapses")
        .unwrap()
        .unwrap();
    assert!(
        b.epoch > a_epoch,
        "epochs grow: {} then {}",
        a_epoch,
        b.epoch
    );

    // B takes over: the same acknowledged head, its epoch.
    let rr = Arc::clone(&r);
    let current = blocking(move || rr.read()).await.unwrap().unwrap();
    assert_eq!(current, a_head);
    let b_head = Head {
        epoch: b.epoch,
        sync_set: vec![],
        ..current.clone()
    };
    let (rr, bh) = (Arc::clone(&r), b_head.clone());
    assert_eq!(
        blocking(move || rr.compare_and_swap(Some(&current), &bh)).await,
        Ok(Swap::Done)
    );
    // A wakes and tries to extend its own head: fenced, whatever its clock says.
    let (rr, ah) = (Arc::clone(&r), a_head.clone());
    assert_eq!(
        blocking(move || rr.compare_and_swap(Some(&ah), &head(5, a_epoch, &["node-b"]))).await,
        Ok(Swap::Fenced {
            actual: Some(b_head)
        })
    );
    assert!(!*b.lost.borrow(), "B's lease is kept alive");

    // Without a quorum B cannot renew its lease: it learns it lost the lead within about a
    // TTL, and must stop writing (no other node can lead either until the quorum is back).
    let mut cluster = cluster;
    cluster.kill_member(1);
    cluster.kill_member(2);
    let mut lost = b.lost.clone();
    tokio::time::timeout(Duration::from_secs(10), lost.wait_for(|l| *l))
        .await
        .expect("the lost lease is noticed")
        .unwrap();
}
