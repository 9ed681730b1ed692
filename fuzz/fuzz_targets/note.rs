//! A signed note (a checkpoint from a bundle, a proof file, the checkpoint route).
#![no_main]

use std::sync::LazyLock;

static KEY: LazyLock<ledger::keys::PublicKey> = LazyLock::new(|| {
    ledger::keys::PublicKey::from_text(include_str!("../../fixtures/ledger-v1/sample.pub").trim())
        .expect("the sample key parses")
});

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(note) = ledger::checkpoint::parse_note(data) {
        let _ = note.checkpoint.body();
        let _ = note.verify(&KEY);
    }
    let _ = ledger::checkpoint::verify_note(data, &KEY);
});
