//! Property tests: random logs verify; any single changed byte of a bundle fails.

mod common;

use common::*;
use ledger::bundle::verify_bundle;
use ledger::event::{Annotation, Event};
use ledger::store::{NewEntry, Store};
use proptest::prelude::*;

fn random_log(batches: &[Vec<String>], rotate_at: Option<usize>) -> Vec<u8> {
    let tmp = tempfile::tempdir().unwrap();
    let mut store = Store::create(&tmp.path().join("p.redb"), ORIGIN, signer_a(), T0).unwrap();
    let mut t = T0;
    for (i, texts) in batches.iter().enumerate() {
        if rotate_at == Some(i) {
            store.rotate_key(signer_b(), "prop", t).unwrap();
        }
        let batch: Vec<NewEntry> = texts
            .iter()
            .map(|text| {
                t += 1;
                NewEntry {
                    recorded_at_us: t,
                    event: Event::Annotation(Annotation {
                        author: "prop".into(),
                        text: text.clone(),
                    }),
                }
            })
            .collect();
        store.append(&batch).unwrap();
    }
    store
        .snapshot()
        .unwrap()
        .verify(signer_a().public(), |_| {})
        .unwrap();
    export(&store)
}

fn batches() -> impl Strategy<Value = Vec<Vec<String>>> {
    prop::collection::vec(prop::collection::vec(".{0,40}", 1..12), 1..6)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn random_batches_verify(b in batches(), rotate in prop::option::of(0usize..6)) {
        let bundle = random_log(&b, rotate);
        let log = verify_bundle(bundle.as_slice(), signer_a().public(), |_| {}).unwrap();
        let n: usize = b.iter().map(Vec::len).sum();
        let rotated = usize::from(rotate.is_some_and(|r| r < b.len()));
        prop_assert_eq!(log.size(), (1 + n + rotated) as u64);
    }

    #[test]
    fn any_single_byte_flip_fails(b in batches(), pos: prop::sample::Index, bit in 0u8..8) {
        let mut bundle = random_log(&b, Some(1));
        let i = pos.index(bundle.len());
        bundle[i] ^= 1 << bit;
        prop_assert!(verify_bundle(bundle.as_slice(), signer_a().public(), |_| {}).is_err(),
            "flip at byte {} bit {} verified", i, bit);
    }

    /// The same, with the END digest recomputed: the semantic checks alone catch every flip
    /// inside a record body.
    #[test]
    fn any_body_byte_flip_fails_even_with_a_fresh_digest(b in batches(), rec: prop::sample::Index, pos: prop::sample::Index, bit in 0u8..8) {
        let mut records = split(&random_log(&b, Some(1)));
        let r = rec.index(records.len());
        let body = &mut records[r].1;
        let i = pos.index(body.len());
        body[i] ^= 1 << bit;
        let bundle = join(&records);
        prop_assert!(verify_bundle(bundle.as_slice(), signer_a().public(), |_| {}).is_err(),
            "flip in record {} byte {} bit {} verified", r, i, bit);
    }
}
