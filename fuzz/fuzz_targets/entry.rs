//! An entry's bytes (from a bundle, the entries route, a database row): shape check, hash,
//! payload decode. Any input must give a value or an error, never a panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(entry) = ledger::entry::EntryRef::parse(data) {
        let _ = entry.hash();
        if let Ok(event) = entry.event() {
            // A decoded event re-encodes to a payload that decodes to the same event.
            let payload = event.encode_payload();
            let again = ledger::entry::encode(
                entry.header.version,
                entry.header.seq,
                entry.header.recorded_at_us,
                event.kind(),
                &entry.header.prev_hash,
                &payload,
            );
            let reparsed = ledger::entry::EntryRef::parse(&again).expect("re-encoded entry parses");
            assert_eq!(reparsed.event().expect("re-encoded payload decodes"), event);
        }
    }
});
