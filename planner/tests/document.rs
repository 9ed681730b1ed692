//! Manifest content is held to the rules the rest of the system applies (issue 13, defect 6):
//! a manifest naming a host no agent could authenticate as, a closure that is not a store
//! path, or a channel that gates on itself is refused, naming the field.

use planner::document::{DocumentError, parse_fleet, parse_rollout};
use serde_json::{Value, json};

fn fleet() -> Value {
    json!({
        "schemaVersion": 1,
        "hosts": {"web-01": {"channel": "canary"}, "web-02": {"channel": "stable"}},
        "channels": {
            "canary": {"rollout_policy": "fast"},
            "stable": {"rollout_policy": "fast"},
        },
        "rollout_policies": {"fast": {"strategy": "all-at-once", "waves": [{"soak_minutes": 0}], "on_health_failure": "halt"}},
        "waves": {"canary": [{"hosts": ["web-01"]}], "stable": [{"hosts": ["web-02"]}]},
        "channel_edges": [{"gated": "stable", "gates": "canary"}],
        "meta": {"schemaVersion": 1, "signedAt": "2026-11-30T12:00:00Z"},
    })
}

fn rollout() -> Value {
    json!({
        "schema_version": 1,
        "channel": "canary",
        "channel_ref": "a1a1a1a1",
        "fleet_resolved_hash": "00".repeat(32),
        "host_set": [{"hostname": "web-01", "wave_index": 0, "target_closure": "/nix/store/aaaa-system"}],
        "disruption_budgets": [{"selector": "all", "hosts": ["web-01"], "max_in_flight": 1}],
        "meta": {"schemaVersion": 1, "signedAt": "2026-11-30T12:00:00Z"},
    })
}

/// The field a refusal names (panics on any other outcome).
fn refused_field(r: Result<impl std::fmt::Debug, DocumentError>) -> String {
    match r {
        Err(DocumentError::Field { field, reason }) => {
            assert!(!reason.is_empty());
            field
        }
        other => panic!("expected a field refusal, got {other:?}"),
    }
}

fn fleet_with(edit: impl FnOnce(&mut Value)) -> String {
    let mut v = fleet();
    edit(&mut v);
    refused_field(parse_fleet(v.to_string().as_bytes()))
}

fn rollout_with(edit: impl FnOnce(&mut Value)) -> String {
    let mut v = rollout();
    edit(&mut v);
    refused_field(parse_rollout(v.to_string().as_bytes()))
}

#[test]
fn well_formed_manifests_parse() {
    parse_fleet(fleet().to_string().as_bytes()).unwrap();
    parse_rollout(rollout().to_string().as_bytes()).unwrap();
}

#[test]
fn host_names_agents_could_never_use_are_refused() {
    let long = "h".repeat(5000);
    for (name, shown) in [
        ("", "\"\""),
        ("web 01", "\"web 01\""),
        ("wéb-01", "\"wéb-01\""),
        ("../x", "\"../x\""),
        (long.as_str(), "\"hhhh"),
    ] {
        let f = fleet_with(|v| {
            v["hosts"][name] = json!({"channel": "canary"});
        });
        assert!(f.starts_with(&format!("hosts.{shown}")), "{name:?}: {f}");
        assert!(
            f.len() < 100,
            "the field echoes at most a short prefix: {f}"
        );
        let f = rollout_with(|v| v["host_set"][0]["hostname"] = json!(name));
        assert_eq!(f, "host_set[0].hostname");
        let f = rollout_with(|v| v["disruption_budgets"][0]["hosts"][0] = json!(name));
        assert_eq!(f, "disruption_budgets[0].hosts[0]");
    }
}

#[test]
fn edges_that_could_never_pass_are_refused() {
    let f = fleet_with(|v| v["channel_edges"] = json!([{"gated": "canary", "gates": "canary"}]));
    assert_eq!(f, "channel_edges[0]");
    let f = fleet_with(|v| {
        v["channel_edges"] = json!([
            {"gated": "stable", "gates": "canary"},
            {"gated": "canary", "gates": "stable"},
        ])
    });
    assert_eq!(f, "channel_edges");
    let f = fleet_with(|v| v["channel_edges"] = json!([{"gated": "stable", "gates": "nightly"}]));
    assert_eq!(f, "channel_edges[0].gates");
    let f = fleet_with(|v| v["edges"] = json!([{"gated": "web-01", "gates": "web-01"}]));
    assert_eq!(f, "edges[0]");
    let f = fleet_with(|v| v["edges"] = json!([{"gated": "web-09", "gates": "web-01"}]));
    assert_eq!(f, "edges[0].gated");
}

#[test]
fn closures_budgets_channels_and_policies_are_checked() {
    for closure in [
        "",
        "nix/store/x",
        "..",
        "/nix/store/a b",
        "/nix/store/../etc",
        "/nix/\u{7f}",
    ] {
        let f = rollout_with(|v| v["host_set"][0]["target_closure"] = json!(closure));
        assert_eq!(f, "host_set[0].target_closure", "{closure:?}");
    }
    // nixfleet's `closureHash` is the store path's basename: accepted, as a path is.
    let mut v = rollout();
    v["host_set"][0]["target_closure"] = json!("l3gla1g9aaaa-nixos-system-web-01-26.05");
    parse_rollout(v.to_string().as_bytes()).unwrap();
    let f = rollout_with(|v| v["disruption_budgets"][0]["max_in_flight"] = json!(0));
    assert_eq!(f, "disruption_budgets[0].max_in_flight");
    let f = rollout_with(|v| v["disruption_budgets"][0]["max_in_flight_pct"] = json!(101));
    assert_eq!(f, "disruption_budgets[0].max_in_flight_pct");
    let f = rollout_with(|v| v["disruption_budgets"][0]["selector"] = json!(""));
    assert_eq!(f, "disruption_budgets[0].selector");
    let f = fleet_with(|v| {
        v["channels"]["Stable!"] = json!({"rollout_policy": "fast"});
    });
    assert_eq!(f, "channels.\"Stable!\"");
    let f = fleet_with(|v| {
        v["rollout_policies"]["bad\npolicy"] = v["rollout_policies"]["fast"].clone();
    });
    assert!(f.starts_with("rollout_policies."), "{f}");
}

/// The nixfleet v0.2 documents of NIXFLEET-WIRE.md §4.1–4.2, as its CI writes them
/// (`fixtures/nixfleet/`): camelCase, selector objects, resolved soaks, host keys.
#[test]
fn nixfleet_documents_parse_as_ci_writes_them() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/nixfleet");
    let fleet_bytes = std::fs::read(dir.join("fleet.resolved.json")).unwrap();
    let fleet = parse_fleet(&fleet_bytes).unwrap();
    assert_eq!(fleet.signed_at, "2026-05-17T12:00:00.123456789Z");
    let f = &fleet.fleet;
    assert_eq!(f.channels["stable"], "all-at-once");
    assert_eq!(
        f.waves["stable"],
        vec![vec!["web-01".to_string(), "web-02".into()]]
    );
    assert_eq!(f.wave_soak_minutes["stable"], vec![0]);
    assert_eq!(
        f.rollout_policies["all-at-once"].on_health_failure,
        ledger::domain::OnHealthFailure::RollbackAndHalt
    );
    assert!(f.host_keys["web-01"].starts_with("ssh-ed25519 "));
    assert!(
        !f.host_keys.contains_key("web-02"),
        "a null pubkey is no key"
    );

    let rollout_bytes =
        std::fs::read(dir.join("stable@5d4b6c1e6cee214e4a2f486e3bcaba0438bf87e4.json")).unwrap();
    let r = parse_rollout(&rollout_bytes).unwrap();
    assert_eq!(
        r.rollout_id.to_string(),
        "stable@5d4b6c1e6cee214e4a2f486e3bcaba0438bf87e4"
    );
    assert_eq!(r.host_set.len(), 2);
    assert_eq!(
        r.host_set[0].target_closure,
        "l3gla1g9aaaaaaaaaaaaaaaaaaaaaaaa-nixos-system-web-01-26.05"
    );
    assert_eq!(r.budgets[0].max_in_flight, Some(10));
    assert!(
        r.budgets[0].selector.starts_with('{'),
        "{}",
        r.budgets[0].selector
    );
    planner::document::check_rollout(&r, f).unwrap();
    let m = planner::Manifests {
        fleet: f.clone(),
        ..Default::default()
    };
    assert_eq!(m.soak_minutes("stable", 0), 0);
}

/// Issue 26, defect 14: what agents read must follow nixfleet's schema, where a selector is
/// an object. A string (fleet-ledger's first documents wrote a name) is refused at intake,
/// naming the field; recorded entries are not re-checked (`parse_*` still read them).
#[test]
fn selectors_agents_read_are_objects() {
    use planner::document::check_agent_schema;
    let fleet_ok = {
        let mut v = fleet();
        v["disruptionBudgets"] = json!([{"selector": {"all": false, "channel": null, "hosts": [], "tags": ["web"], "tagsAny": []}, "maxInFlight": 1}]);
        v["rollout_policies"]["fast"]["waves"][0]["selector"] = json!({"all": true});
        v
    };
    check_agent_schema(&fleet_ok, true).unwrap();
    let refused = |v: &Value, fleet: bool| match check_agent_schema(v, fleet) {
        Err(DocumentError::Field { field, .. }) => field,
        other => panic!("expected a field refusal, got {other:?}"),
    };
    let mut v = fleet_ok.clone();
    v["disruptionBudgets"][0]["selector"] = json!("all");
    assert_eq!(refused(&v, true), "disruptionBudgets[0].selector");
    let mut v = fleet_ok.clone();
    v["rollout_policies"]["fast"]["waves"][0]["selector"] = json!("all");
    assert_eq!(refused(&v, true), "rollout_policies.fast.waves[0].selector");
    let mut v = fleet_ok.clone();
    v["disruptionBudgets"][0]["selector"]["tags"] = json!("web");
    assert_eq!(refused(&v, true), "disruptionBudgets[0].selector.tags");
    // The rollout manifest: the sample's string selector is refused at intake, and still
    // parses as a recorded entry.
    assert_eq!(refused(&rollout(), false), "disruption_budgets[0].selector");
    parse_rollout(rollout().to_string().as_bytes()).unwrap();
    let mut v = rollout();
    v["disruption_budgets"][0]["selector"] =
        json!({"all": true, "channel": null, "hosts": [], "tags": [], "tagsAny": []});
    check_agent_schema(&v, false).unwrap();
}
