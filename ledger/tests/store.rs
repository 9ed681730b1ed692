//! The redb store: append, hooks, reopen, rotation, proofs, export, and refusals.

mod common;

use common::*;
use ledger::bundle::verify_bundle;
use ledger::proof::{ConsistencyProof, InclusionProof};
use ledger::store::{AppendError, NewEntry, OpenError, ReadOnlyStore, Store};
use ledger::tables::TableReader as _;
use ledger::verify::Location;
use redb::{ReadableTable, TableDefinition};

const SIDE_NAME: &str = "test.side";
const SIDE: TableDefinition<&[u8], &[u8]> = TableDefinition::new(SIDE_NAME);

#[test]
fn append_reopen_rotate_verify_export() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("l.redb");
    let store = build(&db, &[1, 10, 100], Some(1));
    assert_eq!(store.size(), 1 + 1 + 10 + 1 + 100);
    drop(store);
    // After the rotation only key b opens it for writing.
    let err = Store::open(&db, signer_a()).unwrap_err();
    assert!(matches!(err, OpenError::WrongKey { .. }), "{err}");
    let mut store = Store::open(&db, signer_b()).unwrap();
    let r = store.append(&batch(500, 7)).unwrap();
    assert_eq!((r.first_seq, r.count, r.checkpoint.size), (113, 7, 120));
    let snap = store.snapshot().unwrap();
    let log = snap.verify(signer_a().public(), |_| {}).unwrap();
    assert_eq!(log.size(), 120);
    assert_eq!(log.checkpoint(), &r.checkpoint);
    let bundle = export(&store);
    let from_bundle = verify_bundle(bundle.as_slice(), signer_a().public(), |_| {}).unwrap();
    assert_eq!(from_bundle.checkpoint(), log.checkpoint());
    // A read-only handle sees the same and verifies after the writer closes.
    drop(snap);
    drop(store);
    let ro = ReadOnlyStore::open(&db).unwrap();
    assert_eq!(
        ro.snapshot()
            .unwrap()
            .verify(signer_a().public(), |_| {})
            .unwrap()
            .size(),
        120
    );
}

/// Issue 13, defect 8: a read-only store opens beside the writer (single-writer mode), reads
/// its commits as they land and verifies them; with no writer it reads through a private
/// layer, after redb's integrity check, and holds off a writer until it is closed.
#[test]
fn read_only_stores_read_beside_the_writer_and_follow_its_commits() {
    use ledger::store::ReadMode;
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("l.redb");
    let mut store = build(&db, &[4], None);
    let ro = ReadOnlyStore::open_with(&db, true).unwrap();
    assert_eq!(ro.mode(), ReadMode::BesideWriter);
    let before = ro.snapshot().unwrap();
    store.append(&batch(100, 6)).unwrap();
    let after = ro.snapshot().unwrap();
    assert_eq!((before.size(), after.size()), (5, 11));
    assert_eq!(
        after.verify(signer_a().public(), |_| {}).unwrap().size(),
        11
    );
    // A snapshot is one commit, whole, while the writer goes on.
    store.append(&batch(200, 3)).unwrap();
    assert_eq!(
        before.verify(signer_a().public(), |_| {}).unwrap().size(),
        5
    );
    drop((before, after, ro, store));

    let ro = ReadOnlyStore::open_with(&db, true).unwrap();
    assert_eq!(
        ro.mode(),
        ReadMode::Private {
            recovered: false,
            checked: true
        }
    );
    let err = Store::open(&db, signer_a()).unwrap_err();
    assert!(matches!(err, OpenError::InUse { .. }), "{err}");
    let snap = ro.snapshot().unwrap();
    drop(ro);
    // The snapshot keeps the private handle open.
    assert_eq!(snap.verify(signer_a().public(), |_| {}).unwrap().size(), 14);
    drop(snap);
    Store::open(&db, signer_a()).unwrap();
}

/// Found by the storage fault sweep (issue 13): a ledger whose last batch is a key rotation
/// was refused by `open` with the new key ("latest checkpoint: no signature by" it), and the
/// old key was no longer the key in force: the ledger could not be opened for writing at all.
/// That checkpoint is the old key's by design (a rotation takes effect after the first
/// checkpoint covering it).
#[test]
fn a_ledger_ending_in_a_rotation_reopens_with_the_new_key() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("l.redb");
    let mut store = build(&db, &[3], None);
    let at = store.last_time();
    store.rotate_key(signer_b(), "scheduled", at).unwrap();
    drop(store);
    let err = Store::open(&db, signer_a()).unwrap_err();
    assert!(matches!(err, OpenError::WrongKey { .. }), "{err}");
    let mut store = Store::open(&db, signer_b()).unwrap();
    store.append(&batch(50, 2)).unwrap();
    let log = store
        .snapshot()
        .unwrap()
        .verify(signer_a().public(), |_| {})
        .unwrap();
    assert_eq!(log.size(), 1 + 3 + 1 + 2);
}

#[test]
fn every_inclusion_and_consistency_proof_verifies_offline() {
    let tmp = tempfile::tempdir().unwrap();
    let store = build(&tmp.path().join("l.redb"), &[3, 1, 8, 5, 16, 2], Some(2));
    let snap = store.snapshot().unwrap();
    let keys = [signer_a().public().clone(), signer_b().public().clone()];
    let sizes = [1u64, 4, 5, 13, 14, 19, 35, 37];
    for &size in &sizes {
        assert!(
            snap.checkpoint(size).unwrap().is_some(),
            "checkpoint at {size}"
        );
        for seq in 0..size {
            let p = snap.inclusion_proof(seq, Some(size)).unwrap();
            let p = InclusionProof::from_json(&p.to_json()).unwrap();
            assert_eq!(p.verify(&keys).unwrap().checkpoint().size, size);
            // Another entry's bytes do not verify with this path.
            let mut wrong = p.clone();
            wrong.entry = snap.entry((seq + 1) % size).unwrap().unwrap();
            if size > 1 {
                assert!(wrong.verify(&keys).is_err());
            }
        }
        for &from in sizes.iter().filter(|&&f| f <= size) {
            let p = snap.consistency_proof(from, size).unwrap();
            let p = ConsistencyProof::from_json(&p.to_json()).unwrap();
            p.verify(&keys).unwrap();
        }
    }
    // Proofs are relative to checkpoints only.
    let err = snap.inclusion_proof(0, Some(6)).unwrap_err();
    assert!(
        err.to_string().contains("no checkpoint at tree size 6"),
        "{err}"
    );
    assert!(snap.inclusion_proof(40, None).is_err());
    // A key that signed nothing verifies nothing.
    let stranger = ledger::keys::Signer::from_seed("s", &[1; 32]).unwrap();
    let p = snap.inclusion_proof(3, None).unwrap();
    assert!(p.verify(&[stranger.public().clone()]).is_err());
}

#[test]
fn hook_writes_commit_with_the_batch_and_a_failing_hook_leaves_nothing() {
    use ledger::tables::{TableError, TableWriter as _};
    /// A caller's own error: the hook's comes back as itself, the store's through `From`.
    #[derive(Debug)]
    enum Projection {
        Refused(&'static str),
        Table,
        Store(AppendError),
    }
    impl From<AppendError> for Projection {
        fn from(e: AppendError) -> Projection {
            Projection::Store(e)
        }
    }
    impl From<TableError> for Projection {
        fn from(_: TableError) -> Projection {
            Projection::Table
        }
    }
    let tmp = tempfile::tempdir().unwrap();
    let mut store = build(&tmp.path().join("l.redb"), &[2], None);
    store
        .append_with(&batch(10, 3), |tables, appended| {
            for a in appended {
                tables.put(SIDE_NAME, &a.seq.to_be_bytes(), &(a.seq * 10).to_be_bytes())?;
            }
            Ok::<(), Projection>(())
        })
        .unwrap();
    let before = store.size();
    let err = store
        .append_with(&batch(20, 3), |tables, _| {
            tables.put(SIDE_NAME, &999u64.to_be_bytes(), &[1])?;
            Err(Projection::Refused("projection refused"))
        })
        .unwrap_err();
    assert!(
        matches!(err, Projection::Refused("projection refused")),
        "{err:?}"
    );
    // The store's own refusals reach the caller's error through `From`.
    let err = store
        .append_with(&[], |_, _| Ok::<(), Projection>(()))
        .unwrap_err();
    assert!(
        matches!(err, Projection::Store(AppendError::Empty)),
        "{err:?}"
    );
    assert_eq!(store.size(), before);
    // Read back through the table interface of a snapshot, as projections do.
    let snap = store.snapshot().unwrap();
    let mut rows = 0;
    snap.scan(SIDE_NAME, &mut |_, _| {
        rows += 1;
        Ok(())
    })
    .unwrap();
    assert_eq!(rows, 3);
    assert!(
        snap.get(SIDE_NAME, &999u64.to_be_bytes())
            .unwrap()
            .is_none()
    );
    assert_eq!(
        snap.get(SIDE_NAME, &4u64.to_be_bytes()).unwrap().unwrap(),
        40u64.to_be_bytes()
    );
    drop(snap);
    // The store is still usable and consistent.
    store.append(&batch(30, 1)).unwrap();
    store
        .snapshot()
        .unwrap()
        .verify(signer_a().public(), |_| {})
        .unwrap();
}

/// The gate (issue 29's commit register) sees the batch as it would be signed, before
/// anything is signed or written: refused, the ledger is unchanged and the next batch takes
/// the same seqs; passed, the signed checkpoint is the one it saw.
#[test]
fn a_gate_sees_the_unsigned_batch_and_its_refusal_signs_and_writes_nothing() {
    #[derive(Debug, PartialEq)]
    enum Gate {
        Fenced,
        Store(String),
    }
    impl From<AppendError> for Gate {
        fn from(e: AppendError) -> Gate {
            Gate::Store(e.to_string())
        }
    }
    let tmp = tempfile::tempdir().unwrap();
    let mut store = build(&tmp.path().join("l.redb"), &[2], None);
    let before = store.size();
    let latest = store.snapshot().unwrap().latest_checkpoint().unwrap();
    let mut seen = None;
    let err = store
        .append_gated(
            &batch(10, 3),
            |g| {
                seen = Some((g.checkpoint.size, g.entries().count()));
                Err(Gate::Fenced)
            },
            |_, _| Ok(()),
        )
        .unwrap_err();
    assert_eq!(err, Gate::Fenced);
    assert_eq!(seen, Some((before + 3, 3)));
    assert_eq!(store.size(), before, "nothing written");
    assert_eq!(
        store.snapshot().unwrap().latest_checkpoint().unwrap(),
        latest,
        "nothing signed"
    );
    // Passed: what is signed is what the gate saw.
    let mut saw = None;
    let receipt = store
        .append_gated(
            &batch(10, 3),
            |g| {
                saw = Some((g.checkpoint.size, g.checkpoint.root, g.checkpoint.head));
                Ok::<(), Gate>(())
            },
            |_, _| Ok(()),
        )
        .unwrap();
    assert_eq!(
        receipt.first_seq, before,
        "the refused batch's seqs are taken again"
    );
    assert_eq!(
        saw,
        Some((
            receipt.checkpoint.size,
            receipt.checkpoint.root,
            receipt.checkpoint.head
        ))
    );
    store
        .snapshot()
        .unwrap()
        .verify(signer_a().public(), |_| {})
        .unwrap();
}

/// The unsigned tail (issue 29): durable beside the log, invisible to it, kept across a
/// reopen; the same batch appended signs it into the log, another batch is refused, and a
/// tail dropped (after being kept aside) lets the log go on.
#[test]
fn an_unsigned_tail_is_durable_beside_the_log_until_the_same_batch_signs_it() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("l.redb");
    let mut store = build(&path, &[2], None);
    let size = store.size();
    let latest = store.snapshot().unwrap().latest_checkpoint().unwrap();
    let unsigned = store.write_tail(&batch(10, 3)).unwrap();
    assert_eq!(unsigned.size, size + 3);
    assert_eq!(store.size(), size, "the log is unchanged");
    assert_eq!(
        store.snapshot().unwrap().latest_checkpoint().unwrap(),
        latest
    );
    // One tail at a time.
    assert!(matches!(
        store.write_tail(&batch(10, 1)),
        Err(AppendError::TailPending(3))
    ));
    // Durable: a reopen finds it; the log still verifies without it.
    let written = store.tail().unwrap();
    assert_eq!(written.len(), 3);
    drop(store);
    let mut store = Store::open(&path, signer_a()).unwrap();
    assert_eq!(store.tail().unwrap(), written);
    // Read back as the batch it was and the checkpoint it would sign, for comparing with
    // the commit register after a restart.
    let (again, cp) = store.tail_batch().unwrap().unwrap();
    assert_eq!(again, batch(10, 3));
    assert_eq!((cp.size, cp.root), (unsigned.size, unsigned.root));
    assert_ne!(
        store.root(),
        cp.root,
        "the log's own root is the signed one's"
    );
    store
        .snapshot()
        .unwrap()
        .verify(signer_a().public(), |_| {})
        .unwrap();
    // Only the same batch may follow: another is refused and changes nothing.
    let r = store.append(&batch(11, 3));
    assert!(matches!(r, Err(AppendError::TailMismatch(_))), "{r:?}");
    assert!(matches!(
        store.append(&batch(10, 2)),
        Err(AppendError::TailMismatch(_))
    ));
    assert_eq!(store.size(), size);
    // The same batch signs it: the checkpoint is the one the tail announced.
    let receipt = store.append(&batch(10, 3)).unwrap();
    assert_eq!(
        (receipt.checkpoint.size, receipt.checkpoint.root),
        (unsigned.size, unsigned.root)
    );
    assert!(store.tail().unwrap().is_empty());
    // A tail the register never acknowledged is dropped once kept aside; the log goes on.
    store.write_tail(&batch(20, 2)).unwrap();
    assert_eq!(store.drop_tail().unwrap(), 2);
    store.append(&batch(30, 1)).unwrap();
    drop(store);
    let store = Store::open(&path, signer_a()).unwrap();
    assert!(store.tail().unwrap().is_empty());
    store
        .snapshot()
        .unwrap()
        .verify(signer_a().public(), |_| {})
        .unwrap();
}

#[test]
fn bad_appends_are_refused_and_change_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("l.redb");
    let mut store = build(&db, &[2], None);
    let size = store.size();
    assert!(matches!(store.append(&[]), Err(AppendError::Empty)));
    let err = store
        .append(&[NewEntry {
            recorded_at_us: T0 - 1,
            event: note(1),
        }])
        .unwrap_err();
    assert!(matches!(err, AppendError::TimeRegression { .. }), "{err}");
    let genesis = store.snapshot().unwrap().entry(0).unwrap().unwrap();
    let event = ledger::entry::EntryRef::parse(&genesis)
        .unwrap()
        .event()
        .unwrap();
    let err = store
        .append(&[NewEntry {
            recorded_at_us: T0 + 100,
            event,
        }])
        .unwrap_err();
    assert!(matches!(err, AppendError::ReservedKind("Genesis")), "{err}");
    assert_eq!(store.size(), size);
    drop(store);
    assert!(matches!(
        Store::create(&db, ORIGIN, signer_a(), T0),
        Err(ledger::store::CreateError::Exists(_))
    ));
}

const ENTRIES: TableDefinition<u64, &[u8]> = TableDefinition::new("ledger.log");

fn tamper(db: &std::path::Path, f: impl FnOnce(&mut redb::Table<u64, &[u8]>)) {
    let d = redb::Database::open(db).unwrap();
    let w = d.begin_write().unwrap();
    {
        let mut t = w.open_table(ENTRIES).unwrap();
        f(&mut t);
    }
    w.commit().unwrap();
}

#[test]
fn tampered_store_is_caught_by_verify_or_open_naming_the_seq() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("l.redb");
    drop(build(&db, &[5, 5, 5], None));
    tamper(&db, |t| {
        let mut v = t.get(7).unwrap().unwrap().value().to_vec();
        *v.last_mut().unwrap() ^= 1;
        t.insert(7, v.as_slice()).unwrap();
    });
    let err = ReadOnlyStore::open(&db)
        .unwrap()
        .snapshot()
        .unwrap()
        .verify(signer_a().public(), |_| {})
        .unwrap_err();
    assert_eq!(err.at, Location::Seq(7), "{err}");

    let db2 = tmp.path().join("l2.redb");
    drop(build(&db2, &[5, 5, 5], None));
    tamper(&db2, |t| {
        t.remove(3).unwrap();
    });
    let snap = ReadOnlyStore::open(&db2).unwrap().snapshot().unwrap();
    let err = snap.verify(signer_a().public(), |_| {}).unwrap_err();
    assert_eq!(err.at, Location::Seq(3), "{err}");
    drop(snap);
    assert!(matches!(
        Store::open(&db2, signer_a()),
        Err(OpenError::Inconsistent { .. })
    ));

    // A truncated tail: head, tree and checkpoint disagree on open; verify names the tail.
    let db3 = tmp.path().join("l3.redb");
    drop(build(&db3, &[5, 5, 5], None));
    tamper(&db3, |t| {
        t.remove(15).unwrap();
    });
    let err = Store::open(&db3, signer_a()).unwrap_err();
    assert!(matches!(err, OpenError::Inconsistent { .. }), "{err}");
    let err = ReadOnlyStore::open(&db3)
        .unwrap()
        .snapshot()
        .unwrap()
        .verify(signer_a().public(), |_| {})
        .unwrap_err();
    // The checkpoint rode in the removed row: the tail it covered is now unsigned.
    assert_eq!(err.at, Location::Seq(11), "{err}");
    assert!(
        err.to_string().contains("not covered by any signature"),
        "{err}"
    );
}

#[test]
fn corrupt_truncated_and_foreign_files_get_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let garbage = tmp.path().join("garbage.redb");
    std::fs::write(&garbage, vec![0x5a; 10_000]).unwrap();
    let empty = tmp.path().join("empty.redb");
    std::fs::write(&empty, b"").unwrap();
    let foreign = tmp.path().join("foreign.redb");
    {
        let d = redb::Database::create(&foreign).unwrap();
        let w = d.begin_write().unwrap();
        w.open_table(SIDE)
            .unwrap()
            .insert([1u8].as_slice(), [1u8].as_slice())
            .unwrap();
        w.commit().unwrap();
    }
    let real = tmp.path().join("real.redb");
    drop(build(&real, &[50, 50], None));
    let truncated = tmp.path().join("truncated.redb");
    let bytes = std::fs::read(&real).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 3]).unwrap();
    let missing = tmp.path().join("missing.redb");

    for path in [&garbage, &empty, &foreign, &truncated, &missing] {
        let w = Store::open(path, signer_a());
        assert!(w.is_err(), "{} opened for writing", path.display());
        let msg = w.unwrap_err().to_string();
        assert!(!msg.is_empty());
        let r = ReadOnlyStore::open(path).and_then(|s| s.snapshot());
        assert!(r.is_err(), "{} opened read-only", path.display());
    }
    // A bundle that is not a bundle.
    let err = verify_bundle(&bytes[..], signer_a().public(), |_| {}).unwrap_err();
    assert!(
        err.to_string().contains("not a fleet-ledger bundle"),
        "{err}"
    );
}

/// One rotation path (issue 27): the store itself refuses a rotation to a key its chain
/// already holds, the key in force or an earlier one, before writing anything.
#[test]
fn a_rotation_to_a_key_of_the_chain_is_refused_by_the_store() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("l.redb");
    let mut store = build(&db, &[3], None);
    let at = store.last_time();
    store.rotate_key(signer_b(), "scheduled", at).unwrap();
    let size = store.size();
    for key in [signer_a(), signer_b()] {
        let err = store.rotate_key(key, "again", at).unwrap_err();
        assert!(
            matches!(err, ledger::store::AppendError::KeyInChain(_)),
            "{err}"
        );
        assert_eq!(store.size(), size);
    }
    // The store still takes appends, signed by the key in force.
    store.append(&batch(60, 1)).unwrap();
}

/// A database and its export read as the same entries, through one item type; a bundle
/// read resumes at an entry's offset; a broken bundle ends its entries with one error.
#[test]
fn a_database_and_its_bundle_yield_the_same_entries() {
    use ledger::bundle::BundleReader;
    use ledger::read::ReadError;
    let tmp = tempfile::tempdir().unwrap();
    let store = build(&tmp.path().join("l.redb"), &[3, 1, 4], Some(1));
    let snap = store.snapshot().unwrap();
    let from_db: Vec<_> = snap.entries(..).unwrap().map(Result::unwrap).collect();
    assert_eq!(from_db.len() as u64, snap.size());
    assert!(from_db.iter().enumerate().all(|(i, e)| e.seq == i as u64));
    let mut bundle = Vec::new();
    snap.export(&mut bundle, |_| {}).unwrap();
    let stored: Vec<_> = BundleReader::new(bundle.as_slice())
        .unwrap()
        .entries(0)
        .map(Result::unwrap)
        .collect();
    let from_bundle: Vec<_> = stored.iter().map(|s| s.decode().unwrap()).collect();
    assert_eq!(from_bundle, from_db);
    // The same bytes as the database's rows.
    for (s, row) in stored.iter().zip(snap.rows(..).unwrap()) {
        assert_eq!(s.bytes(), row.unwrap().bytes());
    }
    // Resumed at entry 5's record, a read yields entries 5.. with their seqs.
    let at = &stored[5];
    let tail: Vec<_> = BundleReader::resume(&bundle[at.offset() as usize..], at.offset())
        .entries(5)
        .map(|s| s.unwrap().decode().unwrap())
        .collect();
    assert_eq!(tail, from_db[5..]);
    // One entry read alone, and one past the end.
    assert_eq!(snap.logged(4).unwrap().as_ref(), Some(&from_db[4]));
    assert!(snap.logged(snap.size()).unwrap().is_none());
    // Cut inside entry 6's record: entries 0..6, then the framing error, then nothing.
    let cut = &bundle[..stored[6].offset() as usize + 7];
    let mut entries = BundleReader::new(cut).unwrap().entries(0);
    for _ in 0..6 {
        entries.next().unwrap().unwrap();
    }
    let err = entries.next().unwrap().unwrap_err();
    assert!(matches!(err, ReadError::Bundle(_)), "{err}");
    assert!(err.to_string().contains("truncated"), "{err}");
    assert!(entries.next().is_none());
}

/// An entry whose payload does not decode is read with an error naming its seq; the entries
/// around it read as before.
#[test]
fn an_entry_that_does_not_decode_is_one_error_with_its_seq() {
    let bytes = ledger::entry::encode(
        2,
        7,
        T0,
        ledger::event::Kind::KeyRotated,
        &ledger::hash::Hash([0; 32]),
        b"not a payload",
    );
    let err = ledger::read::decode(7, &bytes).unwrap_err();
    assert!(err.to_string().starts_with("entry 7: "), "{err}");
    let err = ledger::read::decode(9, &bytes[..10]).unwrap_err();
    assert!(err.to_string().starts_with("entry 9: "), "{err}");
}
