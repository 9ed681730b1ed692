//! Key files: a public key (`NAME.pub`, a C2SP verifier key) and a private key (`NAME.key`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(k) = ledger::keys::PublicKey::from_text(text) {
        // What parses prints back to what parses to the same key.
        let again = ledger::keys::PublicKey::from_text(&k.to_text()).expect("round trip");
        assert_eq!(again, k);
    }
    if let Ok(s) = ledger::keys::Signer::from_text(text) {
        let _ = s.public().to_text();
    }
});
