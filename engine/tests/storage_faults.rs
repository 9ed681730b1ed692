//! The ledger (store and projections in one transaction) on a simulated disk that crashes and
//! fails, in the manner of redb's own crash-consistency tests (issue 13's fault tests).
//!
//! * **Lost unsynced writes.** The workload (create, appends with projections, a key
//!   rotation, a reopen) runs until the disk dies at operation N, for every N. What survives
//!   is what was synced, plus none, all, or a prefix of the writes since (the last of them
//!   torn). Every such image must open, verify, `check` (projections equal a fold of the log)
//!   and hold exactly a prefix of the reference log that includes every acknowledged batch.
//! * **IO errors at every write and sync.** The Nth write or sync fails once (EIO or ENOSPC).
//!   The append that hit it returns an error and nothing of its batch is visible; the store is
//!   reopened (never an fsync retry, as the daemon does) and the workload goes on; at the end
//!   the ledger holds every acknowledged batch, the failed one at most whole, and verifies.

use std::io;
use std::path::Path;

use engine::materialize::{CheckOutcome, Ledger, check_snapshot};
use ledger::keys::Signer;
use ledger::sim_disk::{Disk, Fault, Op, Survives};
use ledger::store::{NewEntry, Store};

const ORIGIN: &str = "faults.example/log";
const T0: i64 = 1_767_225_600_000_000;

fn signer_a() -> Signer {
    fixtures::genesis_signer()
}

fn signer_b() -> Signer {
    fixtures::rotated_signer()
}

/// The workload's batches: a simulated fleet's events, about 40 entries a batch.
fn batches() -> Vec<Vec<NewEntry>> {
    let mut sim = fixtures::sim::Sim::new(7, 12);
    let groups = sim.run(400);
    let mut out = Vec::new();
    let mut cur = Vec::new();
    for g in &groups {
        cur.push(g.clone());
        let n: usize = cur
            .iter()
            .map(|g: &fixtures::sim::Group| g.events.len())
            .sum();
        if n >= 40 {
            out.push(fixtures::sim::entries(&cur));
            cur.clear();
        }
    }
    out.truncate(9);
    out
}

fn label() -> &'static Path {
    Path::new("simulated-disk")
}

/// What the workload had acknowledged: the log size after each durable step.
#[derive(Debug, Default)]
struct Acked {
    sizes: Vec<u64>,
    /// The size the step in progress would have reached.
    attempted: Option<u64>,
}

/// Create, 4 batches, rotate the key, reopen, 5 batches; stops at the first error (crash mode)
/// or reopens and goes on (fault mode, `recover`). With `quick`, every commit after the
/// genesis saves redb's allocator state (config `quick_repair`), so an open after a crash
/// loads it instead of rebuilding it.
fn workload(
    disk: &Disk,
    batches: &[Vec<NewEntry>],
    acked: &mut Acked,
    recover: bool,
    quick: bool,
) -> bool {
    let store = match Store::create_with_backend(disk.clone(), label(), ORIGIN, signer_a(), T0) {
        Ok(s) => s,
        Err(e) => {
            acked.attempted = Some(1);
            return stopped("create", e);
        }
    };
    acked.sizes.push(store.size());
    let mut ledger = match Ledger::from_store(store) {
        Ok(l) => l,
        Err(_) if recover => return reopen_and_go_on(disk, batches, 0, acked, quick),
        Err(e) => return stopped("materialize", e),
    };
    ledger.set_quick_repair(quick);
    for (i, batch) in batches.iter().enumerate() {
        if i == 4 {
            // Rotation, then a reopen of everything.
            let mut store = ledger.into_store();
            acked.attempted = Some(store.size() + 1);
            let at = store.last_time();
            match store.rotate_key(signer_b(), "scheduled", at) {
                Ok(_) => acked.sizes.push(store.size()),
                Err(_) if recover => {
                    drop(store);
                    return reopen_and_go_on(disk, batches, i, acked, quick);
                }
                Err(e) => return stopped("rotate", e),
            }
            drop(store);
            let reopened = Store::open_with_backend(disk.clone(), label(), signer_b())
                .map_err(|e| e.to_string())
                .and_then(|s| Ledger::from_store(s).map_err(|e| e.to_string()));
            ledger = match reopened {
                Ok(l) => l,
                Err(_) if recover => return reopen_and_go_on(disk, batches, i, acked, quick),
                Err(e) => return stopped("reopen", e),
            };
            ledger.set_quick_repair(quick);
        }
        let before = ledger.store().size();
        acked.attempted = Some(before + batch.len() as u64);
        match ledger.append(batch.clone()) {
            Ok(_) => acked.sizes.push(ledger.store().size()),
            Err(_) if recover => {
                // Nothing of the batch is visible to a new reader.
                assert_eq!(ledger.store().snapshot().unwrap().size(), before);
                drop(ledger);
                return reopen_and_go_on(disk, batches, i + 1, acked, quick);
            }
            Err(e) => return stopped("append", e),
        }
    }
    true
}

/// The workload stops at the crash (`FAULTS_DEBUG=1` says where and why).
fn stopped(what: &str, e: impl std::fmt::Display) -> bool {
    if std::env::var_os("FAULTS_DEBUG").is_some() {
        eprintln!("{what}: {e}");
    }
    false
}

/// After a fault: reopen from the same disk (the daemon's recovery) and append the rest.
fn reopen_and_go_on(
    disk: &Disk,
    batches: &[Vec<NewEntry>],
    from: usize,
    acked: &mut Acked,
    quick: bool,
) -> bool {
    // The failed step may have landed whole (a sync failed after its commit was written):
    // the key in force tells whether the rotation did.
    let store = Store::open_with_backend(disk.clone(), label(), signer_a())
        .or_else(|_| Store::open_with_backend(disk.clone(), label(), signer_b()))
        .expect("the store reopens after a transient fault");
    let mut ledger = Ledger::from_store(store).expect("projections catch up after a fault");
    ledger.set_quick_repair(quick);
    let size = ledger.store().size();
    assert!(
        acked.sizes.last().is_none_or(|&s| s == size) || acked.attempted == Some(size),
        "after the fault the log has {size} entries: neither the acknowledged {:?} nor the attempted {:?}",
        acked.sizes.last(),
        acked.attempted
    );
    if acked.attempted == Some(size) && acked.sizes.last() != Some(&size) {
        // The failed step had landed whole: it is in the log from here on.
        acked.sizes.push(size);
    }
    for batch in &batches[from.min(batches.len())..] {
        let before = ledger.store().size();
        acked.attempted = Some(before + batch.len() as u64);
        ledger.append(batch.clone()).expect("no second fault");
        acked.sizes.push(ledger.store().size());
    }
    true
}

/// Opens an image as the daemon would, verifies it and checks its projections; returns the
/// log's entries.
fn recovered(image: Vec<u8>) -> Result<Vec<Vec<u8>>, String> {
    let disk = Disk::holding(image);
    let store = Store::open_with_backend(disk.clone(), label(), signer_a())
        .or_else(|_| Store::open_with_backend(disk.clone(), label(), signer_b()))
        .map_err(|e| format!("open: {e}"))?;
    let ledger = Ledger::from_store(store).map_err(|e| format!("catch-up: {e}"))?;
    let snap = ledger.store().snapshot().map_err(|e| e.to_string())?;
    snap.verify(signer_a().public(), |_| {})
        .map_err(|e| format!("verify: {e}"))?;
    match check_snapshot(&snap, |_| {}).map_err(|e| e.to_string())? {
        CheckOutcome::Identical { .. } => {}
        other => return Err(format!("check: {other:?}")),
    }
    snap.rows(0..)
        .map_err(|e| e.to_string())?
        .map(|s| s.map(|s| s.bytes().to_vec()).map_err(|e| e.to_string()))
        .collect()
}

/// The reference run: no fault. Its log, and how many disk operations it took.
fn reference(batches: &[Vec<NewEntry>], quick: bool) -> (Vec<Vec<u8>>, u64, u64, u64) {
    let disk = Disk::default();
    let mut acked = Acked::default();
    assert!(workload(&disk, batches, &mut acked, false, quick));
    let (ops, writes, syncs) = {
        let s = disk.state();
        (s.ops, s.writes, s.syncs)
    };
    let log = recovered(disk.image(Survives::None)).expect("the reference run recovers");
    (log, ops, writes, syncs)
}

#[test]
fn every_crash_point_leaves_a_verifying_prefix_with_every_acknowledged_batch() {
    crash_points(false);
}

/// The same with `quick_repair`: the open after the crash loads the allocator state the last
/// commit saved instead of walking the file, and still finds every acknowledged batch.
#[test]
fn with_quick_repair_every_crash_point_keeps_every_acknowledged_batch() {
    let quick = crash_points(true);
    let plain = reference(&batches(), false).1;
    assert!(
        quick > plain,
        "the commits saved the allocator state: {quick} disk operations, {plain} without"
    );
}

/// Crashes the workload at each of its disk operations; returns how many there were.
fn crash_points(quick: bool) -> u64 {
    let batches = batches();
    let (log, ops, _, _) = reference(&batches, quick);
    let mut images = 0u64;
    for crash_at in 1..=ops {
        let disk = Disk::default();
        disk.state().crash_at = Some(crash_at);
        let mut acked = Acked::default();
        // Whether it finished or not (a crash while closing is after the last step).
        workload(&disk, &batches, &mut acked, false, quick);
        let last_acked = acked.sizes.last().copied().unwrap_or(0);
        for survives in [Survives::None, Survives::All, Survives::Torn] {
            let image = disk.image(survives);
            images += 1;
            if acked.sizes.is_empty() && image.iter().all(|&b| b == 0) {
                continue; // died before the genesis commit: nothing to open
            }
            let got = match recovered(image) {
                Ok(got) => got,
                Err(e) if acked.sizes.is_empty() => {
                    // Nothing was acknowledged: a file that is not yet a ledger is refused
                    // with an error, never a panic, and nothing was promised.
                    let _ = e;
                    continue;
                }
                Err(e) => panic!("crash at op {crash_at} ({survives:?}): {e}"),
            };
            let size = got.len() as u64;
            assert!(
                size >= last_acked,
                "crash at op {crash_at} ({survives:?}): {size} entries, {last_acked} acknowledged"
            );
            assert!(
                acked.sizes.contains(&size) || acked.attempted == Some(size),
                "crash at op {crash_at} ({survives:?}): {size} entries is no batch boundary ({:?}, attempted {:?})",
                acked.sizes,
                acked.attempted
            );
            assert_eq!(
                got[..],
                log[..got.len()],
                "crash at op {crash_at}: not a prefix"
            );
        }
    }
    println!("{ops} crash points, {images} crash images checked");
    assert!(ops > 50, "the workload did only {ops} disk operations");
    ops
}

#[test]
fn an_io_error_at_any_write_or_sync_loses_nothing_acknowledged() {
    let batches = batches();
    let (log, _, writes, syncs) = reference(&batches, false);
    let mut injected = 0u64;
    for (kind, count) in [(Op::Write, writes), (Op::Sync, syncs)] {
        for at in 1..=count {
            let error = if at % 2 == 0 {
                io::ErrorKind::StorageFull
            } else {
                io::ErrorKind::Other
            };
            let disk = Disk::default();
            disk.state().fault = Some(Fault { kind, at, error });
            let mut acked = Acked::default();
            let done = workload(&disk, &batches, &mut acked, true, false);
            injected += disk.state().injected;
            if !done {
                // The fault hit `init`'s genesis commit: it failed with an error, and there is
                // no ledger to recover (the operator runs `init` again).
                assert!(acked.sizes.is_empty(), "{kind:?} fault at {at}");
                continue;
            }
            let got = recovered(disk.image(Survives::None))
                .unwrap_or_else(|e| panic!("{kind:?} fault at {at}: {e}"));
            // Every batch is there once (the failed one re-appended after the reopen, or
            // landed whole before the error): the same events as the reference, at most with
            // the failed batch's entries twice... never half.
            let size = *acked.sizes.last().unwrap();
            assert_eq!(got.len() as u64, size, "{kind:?} fault at {at}");
            if got.len() == log.len() {
                assert_eq!(got, log, "{kind:?} fault at {at}");
            }
        }
    }
    println!("{injected} IO faults injected ({writes} writes, {syncs} syncs per run)");
    assert_eq!(injected, writes + syncs, "every fault fired once");
}
