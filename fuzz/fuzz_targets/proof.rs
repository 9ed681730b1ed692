//! A proof file (`verify-proof --proof`): JSON, then the proof checked against its checkpoints.
#![no_main]

use std::sync::LazyLock;

static KEY: LazyLock<ledger::keys::PublicKey> = LazyLock::new(|| {
    ledger::keys::PublicKey::from_text(include_str!("../../fixtures/ledger-v1/sample.pub").trim())
        .expect("the sample key parses")
});

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let keys = [KEY.clone()];
    if let Ok(p) = ledger::proof::InclusionProof::from_json(text) {
        let _ = p.verify(&keys);
    }
    if let Ok(p) = ledger::proof::ConsistencyProof::from_json(text) {
        let _ = p.verify(&keys);
    }
});
