//! Helpers shared by the ledger's integration tests.
#![allow(dead_code, unreachable_pub)] // shared by test binaries that each use a part

use std::path::Path;

use ledger::event::{Annotation, Event};
use ledger::keys::Signer;
use ledger::store::{NewEntry, Store};

pub const ORIGIN: &str = "test.example/log";
pub const T0: i64 = 1_767_225_600_000_000;

pub fn signer_a() -> Signer {
    Signer::from_seed("test-a", &[0xa1; 32]).unwrap()
}
pub fn signer_b() -> Signer {
    Signer::from_seed("test-b", &[0xb2; 32]).unwrap()
}

pub fn note(i: u64) -> Event {
    Event::Annotation(Annotation {
        author: format!("op{}", i % 3),
        text: format!("entry number {i} with some padding to look like a real report"),
    })
}

pub fn batch(start: u64, n: u64) -> Vec<NewEntry> {
    (start..start + n)
        .map(|i| NewEntry {
            recorded_at_us: T0 + i as i64,
            event: note(i),
        })
        .collect()
}

/// 1 genesis + batches of the given sizes; a rotation to signer_b after batch `rotate_after`.
pub fn build(path: &Path, sizes: &[u64], rotate_after: Option<usize>) -> Store {
    let mut store = Store::create(path, ORIGIN, signer_a(), T0).unwrap();
    let mut i = 1;
    for (b, &n) in sizes.iter().enumerate() {
        store.append(&batch(i, n)).unwrap();
        i += n;
        if rotate_after == Some(b) {
            store
                .rotate_key(signer_b(), "test rotation", T0 + i as i64)
                .unwrap();
            i += 1;
        }
    }
    store
}

pub fn export(store: &Store) -> Vec<u8> {
    let mut out = Vec::new();
    store.snapshot().unwrap().export(&mut out, |_| {}).unwrap();
    out
}

/// A bundle as records (tag, body), END excluded.
pub fn split(bundle: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    let mut at = 10;
    loop {
        let tag = bundle[at];
        let len = u32::from_be_bytes(bundle[at + 1..at + 5].try_into().unwrap()) as usize;
        if tag == 0xFF {
            return out;
        }
        out.push((tag, bundle[at + 5..at + 5 + len].to_vec()));
        at += 5 + len;
    }
}

/// Reassembles records with a correct END (so tests see semantic failures, not the digest).
pub fn join(records: &[(u8, Vec<u8>)]) -> Vec<u8> {
    let mut out = b"FLBUNDLE\x00\x01".to_vec();
    let (mut e, mut c, mut k) = (0u64, 0u64, 0u32);
    for (tag, body) in records {
        out.push(*tag);
        out.extend_from_slice(&(body.len() as u32).to_be_bytes());
        out.extend_from_slice(body);
        match tag {
            1 => k += 1,
            2 => e += 1,
            _ => c += 1,
        }
    }
    let digest = *blake3::hash(&out).as_bytes();
    out.push(0xFF);
    out.extend_from_slice(&52u32.to_be_bytes());
    out.extend_from_slice(&e.to_be_bytes());
    out.extend_from_slice(&c.to_be_bytes());
    out.extend_from_slice(&k.to_be_bytes());
    out.extend_from_slice(&digest);
    out
}

/// Index in `records` of the entry with this seq.
pub fn entry_index(records: &[(u8, Vec<u8>)], seq: u64) -> usize {
    records
        .iter()
        .enumerate()
        .filter(|(_, (t, _))| *t == 2)
        .nth(seq as usize)
        .unwrap()
        .0
}
