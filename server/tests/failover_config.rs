//! The `failover` section as an operator writes it (docs/OPERATIONS.md, "Failover"): each
//! mistake is refused at load with a line that names the field, and a valid one admits the
//! peer secret as an auditor (what a standby reads the writer's log with) and nothing more.

use std::path::Path;

use fleet_ledger::auth::Role;
use fleet_ledger::config::Config;
use fleet_ledger_demo::Setup;
use serde_json::{Value, json};

const SECRET: &str = "failover-config-peer-secret-0123456789abcdef";

/// The setup's config with `failover` (and the secret file it names) written beside it.
fn write(dir: &Path, base: &Value, failover: Value, secret: &str) -> std::path::PathBuf {
    std::fs::write(dir.join("peer.token"), secret).unwrap();
    let mut config = base.clone();
    config["failover"] = failover;
    let path = dir.join("config.json");
    std::fs::write(&path, serde_json::to_vec(&config).unwrap()).unwrap();
    path
}

#[test]
fn failover_settings_are_checked_when_loaded() {
    let dir = tempfile::tempdir().unwrap();
    let setup = Setup::create(&dir.path().join("s"), None, 3).unwrap();
    let base = serde_json::to_value(&setup.config).unwrap();
    let mut follower_base = base.clone();
    follower_base.as_object_mut().unwrap().remove("signing_key");
    let standby = json!({"node": "cp-a", "etcd": ["http://127.0.0.1:2379"],
        "peers": {"cp-b": "http://127.0.0.1:8443"}, "token_file": "peer.token"});
    let refused = |config: &Value, failover: Value, secret: &str, says: &str| {
        let path = write(dir.path(), config, failover, secret);
        let e = Config::load(&path).expect_err(says).to_string();
        assert!(e.contains(says), "{e} (wanted {says:?})");
    };
    let with = |change: Value| {
        let mut f = standby.clone();
        for (k, v) in change.as_object().unwrap() {
            f[k] = v.clone();
        }
        f
    };
    refused(&base, with(json!({"etcd": []})), SECRET, "failover.etcd");
    refused(
        &base,
        with(json!({"node": "cp a"})),
        SECRET,
        "failover.node",
    );
    refused(
        &base,
        with(json!({"peers": {"cp-b": "ftp://x"}})),
        SECRET,
        "failover.peers.cp-b",
    );
    refused(&base, standby.clone(), "short", "at least 32 characters");
    refused(
        &base,
        with(json!({"strict_sync": true, "min_sync": 2})),
        SECRET,
        "failover.min_sync",
    );
    refused(
        &base,
        with(json!({"initial_writer": "cp-z"})),
        SECRET,
        "failover.initial_writer",
    );
    refused(
        &base,
        with(json!({"lease_ttl_secs": 0})),
        SECRET,
        "lease_ttl_secs",
    );
    // A follower never holds the log's key, and reads from the writer-capable nodes.
    refused(
        &base,
        with(json!({"role": "follower"})),
        SECRET,
        "never holds the log's signing key",
    );
    refused(
        &follower_base,
        json!({"node": "r", "role": "follower", "token_file": "peer.token"}),
        SECRET,
        "failover.peers",
    );
    // A standby without a signing key is a config error, not a follower.
    refused(
        &follower_base,
        standby.clone(),
        SECRET,
        "signing_key is required",
    );

    // The peer token's name is reserved: no configured token takes it.
    let mut impostor = base.clone();
    impostor["tokens"].as_array_mut().unwrap().push(json!({
        "sha256": "ab".repeat(32), "role": "auditor", "name": "failover peer"}));
    refused(
        &impostor,
        standby.clone(),
        SECRET,
        "is reserved for failover.token_file",
    );

    // Valid: the secret reads as an auditor, and only as that.
    let path = write(dir.path(), &base, standby.clone(), &format!("{SECRET}\n"));
    let settings = Config::load(&path).unwrap();
    assert_eq!(settings.peer_token.as_deref(), Some(SECRET));
    let who = settings.tokens.authenticate(SECRET).unwrap();
    assert_eq!(who.role, Role::Auditor);
    let path = write(
        dir.path(),
        &follower_base,
        json!({"node": "r", "role": "follower", "peers": {"cp-a": "http://127.0.0.1:8443"},
               "token_file": "peer.token"}),
        SECRET,
    );
    let f = Config::load(&path).unwrap().config.failover.unwrap();
    assert_eq!(f.role, fleet_ledger::config::NodeRole::Follower);

    // A follower's witness policy: witness keys as witnesses publish them, a quorum between
    // one and all of them; a standby has none (its witnesses are `witnessing`).
    let w = ledger::witness::Witness::from_seed("witness.test/w1", &[1; 32]).unwrap();
    let vkey = {
        use base64::Engine as _;
        let mut raw = vec![0x04];
        raw.extend_from_slice(&w.key().public_key());
        format!(
            "{}+{:08x}+{}",
            w.key().name(),
            w.key().id(),
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    };
    let follower = |extra: Value| {
        let mut f = json!({"node": "r", "role": "follower",
            "peers": {"cp-a": "http://127.0.0.1:8443"}, "token_file": "peer.token"});
        for (k, v) in extra.as_object().unwrap() {
            f[k] = v.clone();
        }
        f
    };
    refused(
        &base,
        with(json!({"witnesses": [vkey]})),
        SECRET,
        "a witness policy is a follower's",
    );
    refused(
        &follower_base,
        follower(json!({"witnesses": ["witness.test/w1+00000000+AAAA"]})),
        SECRET,
        "failover.witnesses",
    );
    refused(
        &follower_base,
        follower(json!({"witnesses": [vkey], "witnesses_required": 2})),
        SECRET,
        "failover.witnesses_required",
    );
    let path = write(
        dir.path(),
        &follower_base,
        follower(json!({"witnesses": [vkey]})),
        SECRET,
    );
    let f = Config::load(&path).unwrap().config.failover.unwrap();
    let policy = f.witness_policy().unwrap();
    assert_eq!((policy.witnesses.len(), policy.required), (1, 1));
}
