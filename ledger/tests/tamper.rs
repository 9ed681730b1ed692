//! Every tamper class is detected, and the error names the right place.
//!
//! The log: genesis, batches of 3, 4 (then a rotation to key b), 5 and 6 entries:
//! 20 entries, checkpoints at sizes 1, 4, 8, 9, 14, 20.

mod common;

use common::*;
use ledger::bundle::verify_bundle;
use ledger::checkpoint::{Checkpoint, parse_note};
use ledger::hash::Hash;
use ledger::verify::{Failure, Location, VerifiedLog, VerifyError};

fn records() -> Vec<(u8, Vec<u8>)> {
    let tmp = tempfile::tempdir().unwrap();
    let store = build(&tmp.path().join("l.redb"), &[3, 4, 5, 6], Some(1));
    split(&export(&store))
}

fn verify(records: &[(u8, Vec<u8>)]) -> Result<VerifiedLog, VerifyError> {
    verify_bundle(join(records).as_slice(), signer_a().public(), |_| {})
}

fn checkpoint_index(records: &[(u8, Vec<u8>)], size: u64) -> usize {
    records
        .iter()
        .position(|(t, b)| *t == 3 && parse_note(b).unwrap().checkpoint.size == size)
        .unwrap()
}

#[test]
fn untouched_log_verifies() {
    let log = verify(&records()).unwrap();
    assert_eq!(log.size(), 20);
    assert_eq!(log.checkpoints(), 6);
    assert_eq!(log.keys().len(), 2);
}

#[test]
fn flipped_payload_bit_names_that_seq() {
    for seq in [0u64, 2, 5, 10, 13, 19] {
        let mut r = records();
        let i = entry_index(&r, seq);
        let last = r[i].1.len() - 1;
        r[i].1[last] ^= 0x01;
        let err = verify(&r).unwrap_err();
        assert_eq!(err.at, Location::Seq(seq), "seq {seq}: {err}");
    }
}

#[test]
fn flipped_header_bit_names_that_seq() {
    // Byte 16 is the low byte of recorded_at_us; byte 18 the low byte of kind.
    for (seq, byte) in [(6u64, 16usize), (11, 18), (19, 16)] {
        let mut r = records();
        let i = entry_index(&r, seq);
        r[i].1[byte] ^= 0x04;
        let err = verify(&r).unwrap_err();
        assert_eq!(err.at, Location::Seq(seq), "seq {seq}: {err}");
    }
}

#[test]
fn flipped_prev_hash_bit_names_that_seq() {
    for seq in [1u64, 5, 9, 15] {
        let mut r = records();
        let i = entry_index(&r, seq);
        r[i].1[30] ^= 0x80;
        let err = verify(&r).unwrap_err();
        assert_eq!(err.at, Location::Seq(seq), "seq {seq}: {err}");
        assert!(matches!(err.failure, Failure::BrokenLink { .. }), "{err}");
    }
}

#[test]
fn flipped_signature_bit_names_the_checkpoint() {
    let mut r = records();
    let i = checkpoint_index(&r, 8);
    let len = r[i].1.len();
    // The base64 signature ends the note; change one character of it.
    r[i].1[len - 10] = if r[i].1[len - 10] == b'A' { b'B' } else { b'A' };
    let err = verify(&r).unwrap_err();
    assert_eq!(err.at, Location::Checkpoint(8), "{err}");
}

#[test]
fn deleted_duplicated_reordered_inserted_entries_are_named() {
    let mut r = records();
    r.remove(entry_index(&r, 6));
    assert_eq!(verify(&r).unwrap_err().at, Location::Seq(6));

    let mut r = records();
    let i = entry_index(&r, 6);
    let dup = r[i].clone();
    r.insert(i + 1, dup);
    assert_eq!(verify(&r).unwrap_err().at, Location::Seq(7));

    let mut r = records();
    let (a, b) = (entry_index(&r, 11), entry_index(&r, 12));
    r.swap(a, b);
    assert_eq!(verify(&r).unwrap_err().at, Location::Seq(11));

    // An inserted forgery with the right seq and link still breaks the next link.
    let mut r = records();
    let i = entry_index(&r, 11);
    let mut forged = r[i].clone();
    forged.1[16] ^= 1;
    r.insert(i, forged);
    let err = verify(&r).unwrap_err();
    assert!(
        matches!(err.at, Location::Seq(11) | Location::Seq(12)),
        "{err}"
    );
}

#[test]
fn truncated_tail_is_detected() {
    // Entries after the last checkpoint, without it.
    let mut r = records();
    r.pop(); // the size-20 checkpoint
    let err = verify(&r).unwrap_err();
    assert_eq!(err.at, Location::Seq(14), "{err}");
    assert!(matches!(
        err.failure,
        Failure::Uncovered {
            covered: 14,
            count: 6
        }
    ));

    // A bundle cut short in the middle of a record, or with no END, is refused.
    let full = join(&records());
    for cut in [full.len() - 1, full.len() - 53, full.len() - 100, 11] {
        let err = verify_bundle(&full[..cut], signer_a().public(), |_| {}).unwrap_err();
        assert!(matches!(err.at, Location::BundleOffset(_)), "{err}");
        assert!(err.to_string().contains("truncated"), "{err}");
    }
}

fn resign(
    r: &mut [(u8, Vec<u8>)],
    size: u64,
    edit: impl FnOnce(&mut Checkpoint),
    by: &ledger::keys::Signer,
) {
    let i = checkpoint_index(r, size);
    let mut cp = parse_note(&r[i].1).unwrap().checkpoint;
    edit(&mut cp);
    r[i].1 = cp.sign(by).into_bytes();
}

#[test]
fn checkpoint_by_unknown_key_is_named() {
    let mut r = records();
    let stranger = ledger::keys::Signer::from_seed("stranger", &[9; 32]).unwrap();
    resign(&mut r, 4, |_| {}, &stranger);
    let err = verify(&r).unwrap_err();
    assert_eq!(err.at, Location::Checkpoint(4));
    assert!(
        err.to_string().contains("no signature by key test-a"),
        "{err}"
    );
}

#[test]
fn checkpoint_whose_size_or_root_disagrees_is_named() {
    let mut r = records();
    resign(&mut r, 14, |cp| cp.size = 13, &signer_b());
    let err = verify(&r).unwrap_err();
    assert_eq!(err.at, Location::Checkpoint(14), "{err}");
    assert!(matches!(
        err.failure,
        Failure::CheckpointSize {
            stated: 13,
            entries: 14
        }
    ));

    let mut r = records();
    resign(&mut r, 14, |cp| cp.root = Hash([7; 32]), &signer_b());
    let err = verify(&r).unwrap_err();
    assert_eq!(err.at, Location::Checkpoint(14), "{err}");
    assert!(matches!(err.failure, Failure::RootMismatch { .. }), "{err}");
}

#[test]
fn rotated_out_key_after_rotation_is_refused() {
    // The rotation entry is seq 8, covered by the checkpoint at 9 (signed by a). From the
    // checkpoint at 14 on, only b may sign.
    let mut r = records();
    resign(&mut r, 14, |_| {}, &signer_a());
    let err = verify(&r).unwrap_err();
    assert_eq!(err.at, Location::Checkpoint(14));
    assert!(matches!(err.failure, Failure::RotatedOutKey(_)), "{err}");

    // And the new key may not sign the checkpoint that covers its own rotation.
    let mut r = records();
    resign(&mut r, 9, |_| {}, &signer_b());
    let err = verify(&r).unwrap_err();
    assert_eq!(err.at, Location::Checkpoint(9));
    assert!(matches!(err.failure, Failure::KeyNotYetInForce(_)), "{err}");
}

#[test]
fn wrong_pinned_key_is_refused() {
    let bytes = join(&records());
    let err = verify_bundle(bytes.as_slice(), signer_b().public(), |_| {}).unwrap_err();
    assert!(err.to_string().contains("not the pinned key"), "{err}");
}

/// KEY records that differ from the log's key chain are named at the first record that
/// differs, or, for a key missing at the end, where the records after the keys start (FORMAT
/// §7): the bundle's header is 10 bytes, each record 5 + its length.
#[test]
fn key_records_must_match_the_log_key_chain() {
    let r = records();
    assert_eq!((r[0].0, r[1].0, r[2].0), (1, 1, 2));
    let offset = |records: &[(u8, Vec<u8>)], i: usize| {
        10 + records[..i]
            .iter()
            .map(|(_, b)| 5 + b.len() as u64)
            .sum::<u64>()
    };
    // The rotated-to key missing: named where the first entry starts.
    let mut missing = r.clone();
    missing.remove(1);
    let err = verify(&missing).unwrap_err();
    assert_eq!(err.at, Location::BundleOffset(offset(&missing, 1)), "{err}");
    assert!(err.to_string().contains("key chain has 2"), "{err}");
    // Another key in its place: named at that record.
    let mut other = r.clone();
    other[1].1 = ledger::keys::Signer::from_seed("other", &[9; 32])
        .unwrap()
        .public()
        .to_text()
        .into_bytes();
    let err = verify(&other).unwrap_err();
    assert_eq!(err.at, Location::BundleOffset(offset(&other, 1)), "{err}");
    assert!(
        err.to_string().contains("KEY record 2 is not key 2"),
        "{err}"
    );
}

/// Exhaustive: every bit of every record body of a small log with a rotation, with the END
/// digest recomputed each time, so only the semantic checks can catch it.
#[test]
fn every_single_bit_flip_in_any_record_fails_even_with_a_fresh_digest() {
    let tmp = tempfile::tempdir().unwrap();
    let store = build(&tmp.path().join("l.redb"), &[1, 2], Some(0));
    let records = split(&export(&store));
    let mut checked = 0;
    for r in 0..records.len() {
        for i in 0..records[r].1.len() {
            for bit in 0..8 {
                let mut t = records.clone();
                t[r].1[i] ^= 1 << bit;
                assert!(
                    verify(&t).is_err(),
                    "record {r} (tag {}) byte {i} bit {bit} still verifies",
                    t[r].0
                );
                checked += 1;
            }
        }
    }
    assert!(checked > 10_000, "{checked}");
}

/// A raised time in entry k breaks monotonicity at entry k+1 and its own link at once: the
/// naming rule names entry k, the one altered (FORMAT §7).
#[test]
fn a_raised_time_names_the_entry_whose_time_was_raised() {
    for seq in [2u64, 9, 13] {
        let mut r = records();
        let i = entry_index(&r, seq);
        // The top byte of recorded_at_us (bytes 9..17): far past every later entry.
        r[i].1[9] ^= 0x10;
        let err = verify(&r).unwrap_err();
        assert_eq!(err.at, Location::Seq(seq), "seq {seq}: {err}");
        assert!(matches!(err.failure, Failure::EntryAltered { .. }), "{err}");
    }
}

/// The genesis payload must be the one encoding of its value: a non-minimal varint (bincode
/// reads it) is refused, so verifiers cannot disagree on it (FORMAT §3).
#[test]
fn a_non_minimal_varint_in_the_genesis_payload_is_refused() {
    let mut r = records();
    let i = entry_index(&r, 0);
    let entry = &r[i].1;
    // The payload starts with the origin's length, one byte (< 251); write it as 0xFB + u16.
    let len = entry[55];
    let mut payload = vec![0xFB, len, 0];
    payload.extend_from_slice(&entry[56..]);
    let mut bytes = entry[..55].to_vec();
    bytes[51..55].copy_from_slice(&(payload.len() as u32).to_be_bytes());
    bytes.extend_from_slice(&payload);
    r[i].1 = bytes;
    let err = verify(&r).unwrap_err();
    assert_eq!(err.at, Location::Seq(0), "{err}");
    assert!(matches!(err.failure, Failure::NonCanonical(_)), "{err}");
}

/// A KEY record is exactly the key text: a trailing newline is refused (FORMAT §8).
#[test]
fn a_key_record_with_a_newline_is_refused() {
    let mut r = records();
    let k = r.iter().position(|(t, _)| *t == 1).unwrap();
    r[k].1.push(b'\n');
    let err = verify(&r).unwrap_err();
    assert!(err.to_string().contains("KEY record"), "{err}");
}
