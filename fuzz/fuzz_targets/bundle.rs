//! An export bundle, verified against the sample's genesis key: the whole streaming verifier
//! (records, entries, chain, tree, checkpoints, keys, rotations) on untrusted bytes.
#![no_main]

use std::sync::LazyLock;

static KEY: LazyLock<ledger::keys::PublicKey> = LazyLock::new(|| {
    ledger::keys::PublicKey::from_text(include_str!("../../fixtures/ledger-v1/sample.pub").trim())
        .expect("the sample key parses")
});

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = ledger::bundle::verify_bundle(data, &KEY, |_| {});
});
