//! Manifest bodies: the signed envelope CI posts, and the fleet and rollout documents inside
//! it, with every content check (`planner::document`); CI's revocation list and nonce
//! allowlist, whose times the pure core parses itself.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(signed) = serde_json::from_slice::<wire::SignedManifest>(data) {
        let bytes = serde_json::to_vec(&signed.artifact).unwrap_or_default();
        let _ = planner::document::parse_fleet(&bytes);
        let _ = planner::document::parse_rollout(&bytes);
    }
    if let Ok(fleet) = planner::document::parse_fleet(data) {
        if let Ok(rollout) = planner::document::parse_rollout(data) {
            let _ = planner::document::check_rollout(&rollout, &fleet.fleet);
        }
    }
    let _ = planner::document::parse_rollout(data);
    let _ = planner::document::parse_revocations(data);
    let _ = planner::document::parse_bootstrap_nonces(data);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = planner::rfc3339::parse_rfc3339(text);
    }
});
