//! Agent request bodies, decoded exactly as the daemon decodes them (the `fleet-ledger-wire` crate).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(env) = serde_json::from_slice::<wire::AgentEnvelope>(data) {
        let _ = env.report();
    }
    let _ = serde_json::from_slice::<wire::Heartbeat>(data);
    let _ = serde_json::from_slice::<wire::Clearance>(data);
    let _ = serde_json::from_slice::<wire::Lift>(data);
});
