//! Failover's commit protocol on the ledger (issue 29): a batch is made durable as the
//! store's unsigned tail, the acknowledgement (the commit register's swap) is asked with the
//! checkpoint it would end with, and only then is it signed with its projection rows. A
//! refused acknowledgement signs nothing and leaves the tail to resolve: signed once the
//! register is found to hold it, or set aside (kept in a file, never silently dropped).

use std::sync::Arc;

use engine::materialize::{CheckOutcome, Ledger, MaterializeError, check_snapshot};
use ledger::event::{Event, Revocation, RevocationsAccepted, SIDECAR_REVOCATIONS, SignedFile};
use ledger::keys::Signer;
use ledger::store::Store;

const T0: i64 = 1_767_225_600_000_000;

fn signer() -> Arc<Signer> {
    Arc::new(Signer::from_seed("cp.test", &[3; 32]).unwrap())
}

/// A revocation list (folded into `proj.revocations` and `proj.sidecars`).
fn revocations(n: u8) -> Event {
    Event::RevocationsAccepted(RevocationsAccepted {
        file: SignedFile {
            content_hash: [n; 32],
            signer: "ci".into(),
            algorithm: "ed25519".into(),
            signature: vec![n; 64],
            signed_at: T0 + i64::from(n),
            canonical: vec![b'{', b'}'],
        },
        revocations: vec![Revocation {
            hostname: format!("web-0{n}"),
            not_before: T0,
            reason: None,
            revoked_by: None,
        }],
    })
}

#[derive(Debug)]
enum Refused {
    Fenced,
    Ledger(String),
}

impl From<MaterializeError> for Refused {
    fn from(e: MaterializeError) -> Refused {
        Refused::Ledger(e.to_string())
    }
}

fn tables_equal_a_fold(ledger: &Ledger) {
    let snap = ledger.store().snapshot().unwrap();
    assert!(matches!(
        check_snapshot(&snap, |_| {}).unwrap(),
        CheckOutcome::Identical { .. }
    ));
}

#[test]
fn a_batch_is_signed_only_once_acknowledged_and_a_refused_tail_is_resolved() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("l.redb");
    drop(
        Store::create(
            &path,
            "cp.test/log",
            Signer::from_seed("cp.test", &[3; 32]).unwrap(),
            T0,
        )
        .unwrap(),
    );
    let mut ledger = Ledger::open(&path, signer()).unwrap();

    // Acknowledged: signed, folded, no tail left.
    ledger.stage(T0 + 1, vec![revocations(1)]);
    let mut asked = None;
    let receipt = ledger
        .commit_through(|cp, _| {
            asked = Some((cp.size, cp.root));
            Ok::<(), Refused>(())
        })
        .unwrap()
        .unwrap();
    assert_eq!(
        asked,
        Some((receipt.checkpoint.size, receipt.checkpoint.root))
    );
    assert!(ledger.store().tail().unwrap().is_empty());
    assert!(
        ledger
            .state()
            .revocations
            .contains_key(&"web-01".to_string())
    );
    tables_equal_a_fold(&ledger);

    // Refused (fenced, or no answer): nothing signed, the models are back at the log, the
    // tail is durable.
    let size = ledger.store().size();
    ledger.stage(T0 + 2, vec![revocations(2)]);
    match ledger.commit_through(|_, _| Err::<(), _>(Refused::Fenced)) {
        Err(Refused::Fenced) => {}
        Err(Refused::Ledger(e)) => panic!("the ledger failed: {e}"),
        Ok(r) => panic!("committed without acknowledgement: {r:?}"),
    }
    assert_eq!(ledger.store().size(), size);
    assert_eq!(ledger.next_seq(), size);
    assert!(
        !ledger
            .state()
            .revocations
            .contains_key(&"web-02".to_string())
    );
    assert_eq!(ledger.store().tail().unwrap().len(), 1);
    tables_equal_a_fold(&ledger);

    // The register turns out to hold it: the tail is signed, projections and all (after a
    // restart too: the tail survived it).
    drop(ledger);
    let mut ledger = Ledger::open(&path, signer()).unwrap();
    let signed = ledger.sign_tail().unwrap().unwrap();
    assert_eq!(signed.checkpoint.size, size + 1);
    assert!(
        ledger
            .state()
            .revocations
            .contains_key(&"web-02".to_string())
    );
    assert_eq!(
        ledger
            .state()
            .sidecars
            .get(&SIDECAR_REVOCATIONS.to_string())
            .map(|r| r.seq),
        Some(size)
    );
    tables_equal_a_fold(&ledger);

    // A tail the register never acknowledged is set aside: its entries kept in a file.
    ledger.stage(T0 + 3, vec![revocations(3)]);
    assert!(
        ledger
            .commit_through(|_, _| Err::<(), _>(Refused::Fenced))
            .is_err()
    );
    let tail = ledger.store().tail().unwrap();
    let file = ledger
        .set_tail_aside(&dir.path().join("aside"))
        .unwrap()
        .unwrap();
    let kept = std::fs::read(&file).unwrap();
    let mut want = (tail[0].1.len() as u32).to_be_bytes().to_vec();
    want.extend_from_slice(&tail[0].1);
    assert_eq!(kept, want);
    assert!(ledger.store().tail().unwrap().is_empty());
    assert!(ledger.sign_tail().unwrap().is_none());
    // The log goes on; what it holds verifies and folds.
    ledger.stage(T0 + 4, vec![revocations(4)]);
    ledger.commit().unwrap().unwrap();
    ledger
        .store()
        .snapshot()
        .unwrap()
        .verify(signer().public(), |_| {})
        .unwrap();
    tables_equal_a_fold(&ledger);
    assert!(
        !ledger
            .state()
            .revocations
            .contains_key(&"web-03".to_string())
    );
}
