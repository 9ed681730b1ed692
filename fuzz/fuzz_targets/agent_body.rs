//! Agent request bodies, decoded exactly as the daemon decodes them (`server/src/wire.rs`,
//! included as it is: it depends on nothing of the server but serde and the ledger's types).
#![no_main]

#[allow(dead_code, missing_docs, missing_debug_implementations)]
#[path = "../../server/src/wire.rs"]
mod wire;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(env) = serde_json::from_slice::<wire::AgentEnvelope>(data) {
        let _ = env.report();
    }
    let _ = serde_json::from_slice::<wire::Heartbeat>(data);
    let _ = serde_json::from_slice::<wire::Clearance>(data);
    let _ = serde_json::from_slice::<wire::Lift>(data);
});
