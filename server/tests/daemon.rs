//! The daemon end to end over real HTTP on 127.0.0.1:0 (DOMAIN §9.5 and the issue's bad-input
//! list). Every refusal is checked to leave the ledger exactly as it was.

use fleet_ledger::daemon::Daemon;
use fleet_ledger_demo::{self as demo, ApiClient, Setup};

mod fleet;
use fleet::*;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread")]
async fn manifests_open_rollouts_with_pending_hosts_in_real_waves() {
    let f = Fleet::start(8).await;
    let v = f.post_fleet().await;
    assert_eq!(v["duplicate"], false);
    // The same artifact again is recorded once.
    let again = f.post_fleet().await;
    assert_eq!(again["duplicate"], true);
    assert_eq!(again["seq"], v["seq"]);
    let (s, v) = f
        .post_rollout("stable", "a1a1a1a1", "/nix/store/x-stable")
        .await;
    assert_eq!(s, 200, "{v}");
    let c = &f.c;
    let mut hosts = Value::Null;
    until_committed(&f.daemon, "six hosts", async || {
        hosts = f.hosts("stable@a1a1a1a1").await;
        hosts["hosts"].as_array().is_some_and(|h| h.len() == 6)
    })
    .await;
    let rows = hosts["hosts"].as_array().expect("hosts");
    assert_eq!(rows.len(), 6, "{hosts}");
    let waves: Vec<u64> = rows.iter().map(|h| h["wave"].as_u64().unwrap()).collect();
    assert_eq!(
        waves,
        [0, 0, 1, 1, 2, 2],
        "real wave numbers, sorted by wave"
    );
    assert!(rows.iter().all(|h| h["targetChannelRef"] == "a1a1a1a1"));
    let (s, l) = c
        .get(f.op(), "/v1/rollouts/stable@a1a1a1a1/lifecycle")
        .await
        .unwrap();
    assert_eq!(s, 200);
    assert_eq!(l["state"], "Active", "{l}");
    assert_eq!(l["supersededBy"], Value::Null);
    // A successor supersedes it, and the lifecycle names the successor.
    let (s, v) = f
        .post_rollout_at("stable", "b2b2b2b2", "/nix/store/y-stable", -20)
        .await;
    assert_eq!(s, 200, "{v}");
    let mut l = Value::Null;
    until_committed(&f.daemon, "stable@a1a1a1a1 to be superseded", async || {
        l = c
            .get(f.op(), "/v1/rollouts/stable@a1a1a1a1/lifecycle")
            .await
            .unwrap()
            .1;
        l["state"] == "Superseded"
    })
    .await;
    assert_eq!(l["supersededBy"], "stable@b2b2b2b2");
    f.daemon.shutdown().await.unwrap();
}

async fn dispatched(f: &Fleet, host: &str) -> Value {
    let (s, d) =
        f.c.get(f.agent(host), "/v1/agent/dispatch?wait=10")
            .await
            .unwrap();
    assert_eq!(s, 200, "{d}");
    assert_eq!(d["hostname"], host);
    d
}

#[tokio::test(flavor = "multi_thread")]
async fn agent_events_retransmits_and_refusals() {
    let f = Fleet::start(5).await;
    f.post_fleet().await;
    let (s, _) = f
        .post_rollout("canary", "a1a1a1a1", "/nix/store/c-canary")
        .await;
    assert_eq!(s, 200);
    let r = "canary@a1a1a1a1";
    let d = dispatched(&f, "web-0000").await;
    assert_eq!(d["rollout_id"], r);
    assert_eq!(d["wave"], 0);
    let ack = json!({"kind": "DispatchAck", "currentClosureAtDispatch": "/nix/store/old", "receivedAt": T});

    let (s, v) = f.event("web-0000", r, 1, ack.clone()).await;
    assert_eq!(s, 200, "{v}");
    let seq = v["seq"].as_u64().unwrap();
    assert_eq!(v["duplicate"], false);
    let hosts = f.hosts(r).await;
    assert_eq!(hosts["hosts"][0]["state"], "Activating");
    assert_eq!(hosts["hosts"][0]["lastEventSeq"], 1);

    // A retransmit is answered with the original entry and appends nothing.
    let before = f.size();
    let (s, v) = f.event("web-0000", r, 1, ack.clone()).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        (v["seq"].as_u64(), &v["duplicate"]),
        (Some(seq), &json!(true))
    );
    assert_eq!(f.size(), before);

    // The same seq with another report, a regression, an illegal transition, unknown
    // rollout and host: recorded as refused, with why, and answered 2xx (a nixfleet agent
    // retries anything else forever). Another host's name: 403, nothing written.
    let started = json!({"kind": "ActivationStarted", "startedAt": T, "switchMethod": "switch-to-configuration"});
    let got = f.event("web-0000", r, 1, started.clone()).await;
    f.recorded_refusal("seq-reused", got, before).await;
    let (s, _) = f.event("web-0000", r, 3, started.clone()).await;
    assert_eq!(s, 200, "a gap is accepted");
    let before = f.size();
    let got = f.event("web-0000", r, 2, started.clone()).await;
    f.recorded_refusal("seq-regression", got, before).await;
    let before = f.size();
    let converged =
        json!({"kind": "Converged", "convergedAt": T, "currentClosure": "/nix/store/c-canary"});
    let got = f.event("web-0000", r, 4, converged).await;
    f.recorded_refusal("illegal-transition", got, before).await;
    let before = f.size();
    let got = f.event("web-0000", "canary@ffff", 1, ack.clone()).await;
    f.recorded_refusal("unknown-rollout", got, before).await;
    let before = f.size();
    let got = f.event("web-0002", r, 1, ack.clone()).await;
    f.recorded_refusal("unknown-host", got, before).await;
    let before = f.size();
    let body = json!({"hostname": "web-0001", "rolloutId": r, "event": {"kind": "DispatchAck", "seq": 1, "currentClosureAtDispatch": "x", "receivedAt": T}});
    let got =
        f.c.post(f.agent("web-0000"), "/v1/agent/events", &body)
            .await
            .unwrap();
    f.refused(403, "wrong-host", got, before).await;

    // The rollout's events, with cursor pagination.
    let (s, page) =
        f.c.get(f.op(), &format!("/v1/ledger/rollouts/{r}/events?limit=2"))
            .await
            .unwrap();
    assert_eq!(s, 200, "{page}");
    let events = page["events"].as_array().unwrap();
    assert_eq!(events.len(), 2);
    let cursor = page["nextAfter"].as_u64().expect("more pages");
    let (_, rest) =
        f.c.get(
            f.op(),
            &format!("/v1/ledger/rollouts/{r}/events?after={cursor}&limit=10000"),
        )
        .await
        .unwrap();
    assert_eq!(rest["nextAfter"], Value::Null, "{rest}");
    let all: Vec<&Value> = events
        .iter()
        .chain(rest["events"].as_array().unwrap())
        .collect();
    let seqs: Vec<u64> = all.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    assert!(all.iter().all(|e| e["rolloutId"] == r));
    assert!(
        all.iter()
            .any(|e| e["kind"] == "AgentEventRecorded" && e["host"] == "web-0000")
    );
    f.daemon.shutdown().await.unwrap();
}

/// The sequences a nixfleet agent runs (NIXFLEET-WIRE.md §3.3), in its shapes: a deferred
/// activation that completes after the reboot (the CP infers ActivationCompleted from the
/// heartbeat, which names no rollout, as nixfleet agents send it), probes, convergence; and
/// a probe failure through Failed and RollbackComplete.
#[tokio::test(flavor = "multi_thread")]
async fn nixfleet_agent_sequences_run_to_the_end() {
    let f = Fleet::start(5).await;
    f.post_fleet().await;
    let target = "/nix/store/c-canary";
    f.post_rollout("canary", "a1a1a1a1", target).await;
    let r = "canary@a1a1a1a1";
    // Agent times after the dispatch (the soak is 0 minutes: due at once).
    let at = || wire::ts::format(chrono::Utc::now().timestamp_micros());
    let state = |host: &'static str| {
        let f = &f;
        async move {
            let hosts = f.hosts(r).await;
            hosts["hosts"]
                .as_array()
                .unwrap()
                .iter()
                .find(|h| h["host"] == host)
                .map(|h| h["state"].clone())
                .unwrap()
        }
    };
    let send = |host: &'static str, seq: u64, event: Value| {
        let f = &f;
        async move {
            let (s, v) = f.event(host, r, seq, event).await;
            assert_eq!(s, 200, "{v}");
            assert!(v.get("refused").is_none(), "{host} seq {seq}: {v}");
        }
    };

    // Deferred, then the reboot.
    let d = dispatched(&f, "web-0000").await;
    send("web-0000", 1, json!({"kind": "DispatchAck", "currentClosureAtDispatch": target, "receivedAt": d["enqueued_at"]})).await;
    send("web-0000", 2, json!({"kind": "ActivationStarted", "startedAt": at(), "switchMethod": "switch-to-configuration"})).await;
    send(
        "web-0000",
        3,
        json!({"kind": "ActivationDeferred", "component": "kernel", "deferredAt": at()}),
    )
    .await;
    assert_eq!(state("web-0000").await, "Deferred");
    let hb = json!({"hostname": "web-0000", "current_closure": target, "at": at()});
    let (s, v) =
        f.c.post(f.agent("web-0000"), "/v1/agent/heartbeat", &hb)
            .await
            .unwrap();
    assert_eq!(s, 200, "{v}");
    assert!(v["synthesized_seq"].is_u64(), "{v}");
    assert_eq!(v["bootstrap_rollouts"][0]["state"], "Soaking", "{v}");
    send("web-0000", 4, json!({"kind": "ProbeTopologyDeclared", "probes": [{"probeName": "evidence-nis2-essential", "kind": "evidence", "mode": "enforce"}], "declaredAt": at()})).await;
    send("web-0000", 5, json!({"kind": "ProbeObservedFirst", "probeName": "evidence-nis2-essential", "mode": "enforce", "observedAt": at()})).await;
    send("web-0000", 6, json!({"kind": "ProbeResult", "probeName": "evidence-nis2-essential", "mode": "enforce", "status": "pass", "observedAt": at()})).await;
    send(
        "web-0000",
        7,
        json!({"kind": "Converged", "convergedAt": at(), "currentClosure": target}),
    )
    .await;
    assert_eq!(state("web-0000").await, "Converged");

    // A probe that keeps failing, then the rollback.
    let d = dispatched(&f, "web-0001").await;
    send("web-0001", 1, json!({"kind": "DispatchAck", "currentClosureAtDispatch": target, "receivedAt": d["enqueued_at"]})).await;
    send("web-0001", 2, json!({"kind": "ActivationStarted", "startedAt": at(), "switchMethod": "switch-to-configuration"})).await;
    send("web-0001", 3, json!({"kind": "ActivationCompleted", "observedCurrentClosure": target, "exitCode": 0, "completedAt": at()})).await;
    send("web-0001", 4, json!({"kind": "ProbeFailureFirst", "probeName": "evidence-nis2-essential", "mode": "enforce", "firstFailedAt": at()})).await;
    send("web-0001", 5, json!({"kind": "ProbeResult", "probeName": "evidence-nis2-essential", "mode": "enforce", "status": "fail", "observedAt": at(), "failureReason": "1 enforce-mode control failing",
        "subResults": [{"controlId": "access-control", "status": "fail", "framework": "nis2-essential", "article": "21.2.i", "effectiveMode": "enforce"}]})).await;
    send("web-0001", 6, json!({"kind": "Failed", "failedAt": at(), "sustainedDurationSecs": 121, "failingProbes": ["evidence-nis2-essential"], "policyApplied": "rollback-and-halt"})).await;
    send("web-0001", 7, json!({"kind": "RollbackComplete", "revertedToClosure": "/nix/store/prior", "exitCode": 0, "completedAt": at()})).await;
    assert_eq!(state("web-0001").await, "Reverted");
    // nixfleet's host list (NIXFLEET-WIRE.md §7.3) from the same records: the failing
    // control is outstanding on web-0001, none on web-0000, which converged.
    let (s, listed) = f.c.get(f.op(), "/v1/hosts").await.unwrap();
    assert_eq!(s, 200, "{listed}");
    let entry = |host: &str| {
        listed["hosts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h["hostname"] == host)
            .unwrap_or_else(|| panic!("{host} listed: {listed}"))
            .clone()
    };
    let (w0, w1) = (entry("web-0000"), entry("web-0001"));
    assert_eq!(
        (
            &w0["rolloutState"],
            &w0["converged"],
            &w0["outstandingComplianceFailures"]
        ),
        (&json!("Converged"), &json!(true), &json!(0)),
        "{w0}"
    );
    assert_eq!(w0["verifiedEventCount"], 7, "{w0}");
    assert_eq!(
        (
            &w1["rolloutState"],
            &w1["converged"],
            &w1["outstandingComplianceFailures"]
        ),
        (&json!("Reverted"), &json!(false), &json!(1)),
        "{w1}"
    );
    // What the host runs after its rollback (DECISIONS 131), and what it acknowledged.
    assert_eq!(
        (&w1["currentClosureHash"], &w1["pendingClosureHash"]),
        (&json!("/nix/store/prior"), &json!(target)),
        "{w1}"
    );
    assert_eq!(w1["lastRolloutId"], r, "{w1}");
    // The same in nixfleet's gauges (a fleet without `closureHash`: converged is the record's).
    let metrics =
        f.c.http
            .get(format!("{}/metrics", f.c.base))
            .bearer_auth(f.op())
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
    for series in [
        r#"nixfleet_host_converged{host="web-0000",channel="canary"} 1"#,
        r#"nixfleet_host_converged{host="web-0001",channel="canary"} 0"#,
        r#"nixfleet_host_outstanding_compliance_failures{host="web-0001",channel="canary"} 1"#,
        r#"nixfleet_host_verified_event_count{host="web-0001",channel="canary"} 7"#,
        // Counted from the log (the projection `proj.counters`), true after any restart.
        r#"nixfleet_compliance_failure_events_total{control_id="access-control"} 1"#,
        "nixfleet_runtime_gate_error_events_total 0",
    ] {
        assert!(metrics.contains(series), "{series}: {metrics}");
    }
    f.daemon.shutdown().await.unwrap();
    let report = engine::forensics::check(engine::forensics::Source::Db(&f.setup.db)).unwrap();
    assert_eq!(report.divergence, None);
}

#[tokio::test(flavor = "multi_thread")]
async fn heartbeat_synthesizes_bootstraps_and_asks_for_replay() {
    let f = Fleet::start(5).await;
    f.post_fleet().await;
    let target = "/nix/store/c-canary";
    f.post_rollout("canary", "a1a1a1a1", target).await;
    let r = "canary@a1a1a1a1";
    dispatched(&f, "web-0000").await;
    let ack = json!({"kind": "DispatchAck", "currentClosureAtDispatch": "/nix/store/old", "receivedAt": T});
    assert_eq!(f.event("web-0000", r, 1, ack).await.0, 200);
    let now = wire::ts::format(chrono::Utc::now().timestamp_micros());

    // Activating and already at the target: the CP synthesizes ActivationCompleted, marked
    // synthetic, without consuming an agent seq.
    let hb = json!({"hostname": "web-0000", "rollout_id": r, "current_closure": target, "at": now});
    let (s, v) =
        f.c.post(f.agent("web-0000"), "/v1/agent/heartbeat", &hb)
            .await
            .unwrap();
    assert_eq!(s, 200, "{v}");
    let seq = v["synthesized_seq"].as_u64().expect("synthesized");
    assert!(
        v.get("bootstrap_rollouts").is_none(),
        "named a rollout: no bootstrap"
    );
    let hosts = f.hosts(r).await;
    assert_eq!(hosts["hosts"][0]["state"], "Soaking");
    assert_eq!(hosts["hosts"][0]["lastEventSeq"], 1);
    let (_, page) =
        f.c.get(
            f.op(),
            &format!("/v1/ledger/rollouts/{r}/events?after={}", seq - 1),
        )
        .await
        .unwrap();
    assert_eq!(page["events"][0]["kind"], "AgentEventSynthesized", "{page}");

    // No rollout named: the answer carries snapshots of the host's active rollouts.
    let hb = json!({"hostname": "web-0001", "current_closure": "/nix/store/other", "at": now});
    let (s, v) =
        f.c.post(f.agent("web-0001"), "/v1/agent/heartbeat", &hb)
            .await
            .unwrap();
    assert_eq!(s, 200, "{v}");
    let boot = v["bootstrap_rollouts"].as_array().expect("bootstrap");
    assert_eq!(boot.len(), 1);
    assert_eq!(boot[0]["rolloutId"], r);
    assert!(boot[0]["dispatchedAt"].is_string(), "{v}");
    assert_eq!(boot[0]["lastEventSeq"], 0);
    assert_eq!(boot[0]["state"], "Pending");

    // A closure the CP did not hear about: the header names the last agent seq accepted, as
    // nixfleet's CP does.
    let before = f.size();
    let resp = f
        .c
        .http
        .post(format!("{}/v1/agent/heartbeat", f.c.base))
        .bearer_auth(f.agent("web-0000"))
        .json(&json!({"hostname": "web-0000", "rollout_id": r, "current_closure": "/nix/store/surprise", "at": now}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-nixfleet-replay-from"], "1");
    assert_eq!(f.size(), before);
    f.daemon.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn auditors_get_checkpoints_entries_proofs_and_exports_that_verify() {
    let f = Fleet::start(5).await;
    f.post_fleet().await;
    f.post_rollout("canary", "a1a1a1a1", "/nix/store/c").await;
    f.wait("the rollout to open", |f| f.size() > 6).await;
    let au = f.setup.tokens.auditor.clone();
    let get = |path: String| {
        f.c.http
            .get(format!("{}{path}", f.c.base))
            .bearer_auth(&au)
            .send()
    };
    let note = get("/v1/ledger/checkpoint".into())
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let genesis = ledger::keys::read_public_key(&f.setup.genesis_pub).unwrap();
    let verified = ledger::checkpoint::verify_note(note.as_bytes(), &genesis).unwrap();
    let cp = verified.checkpoint().clone();
    assert!(cp.size > 6);

    // Entries: length-prefixed stored bytes, whose chain links check.
    let bytes = get(format!("/v1/ledger/entries?from=0&to={}", cp.size))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let mut rest = &bytes[..];
    let mut prev = ledger::hash::Hash::ZERO;
    let mut n = 0;
    while !rest.is_empty() {
        let len = u32::from_be_bytes(rest[..4].try_into().unwrap()) as usize;
        let e = ledger::entry::EntryRef::parse(&rest[4..4 + len]).unwrap();
        assert_eq!(e.header.seq, n);
        assert_eq!(e.header.prev_hash, prev);
        prev = ledger::hash::leaf_hash(&rest[4..4 + len]);
        rest = &rest[4 + len..];
        n += 1;
    }
    assert_eq!(n, cp.size);

    let proof = get(format!("/v1/ledger/proof/inclusion?seq=3&size={}", cp.size))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let p = ledger::proof::InclusionProof::from_json(&proof).unwrap();
    p.verify(std::slice::from_ref(&genesis)).unwrap();
    let resp = get("/v1/ledger/proof/inclusion?seq=999999".into())
        .await
        .unwrap();
    assert_eq!(resp.status(), 422);

    let bundle = get("/v1/ledger/export".into())
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let log = ledger::bundle::verify_bundle(&bundle[..], &genesis, |_| {}).unwrap();
    assert!(log.size() >= cp.size);
    f.daemon.shutdown().await.unwrap();
}

/// The demo with `hosts` hosts, quietly, in `dir`.
async fn run_demo(dir: &tempfile::TempDir, hosts: usize) -> demo::Summary {
    demo::run(demo::Options {
        hosts,
        dir: dir.path().to_path_buf(),
        db: None,
        verbose: false,
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_demo_drives_full_rollouts_over_http_and_its_ledger_checks() {
    let dir = tempfile::tempdir().unwrap();
    let s = run_demo(&dir, 24).await;
    assert_eq!(s.rollouts["stable@a1a1a1a1"], "Superseded");
    assert_eq!(s.rollouts["stable@b2b2b2b2"], "Superseded");
    assert_eq!(s.rollouts["stable@c3c3c3c3"], "Terminal");
    assert_eq!(s.rollouts["canary@a1a1a1a1"], "Terminal");
    assert_eq!(s.hosts["Converged"], 24);
    let genesis = ledger::keys::read_public_key(&s.genesis_pub).unwrap();
    let ro = ledger::store::ReadOnlyStore::open(&s.db).unwrap();
    let snap = ro.snapshot().unwrap();
    snap.verify(&genesis, |_| {}).unwrap();
    // The story is in the log: a probe failure, a quarantine and its lift, a clearance.
    let mut kinds = std::collections::BTreeMap::<&str, u32>::new();
    for entry in snap.entries(0..).unwrap() {
        *kinds.entry(entry.unwrap().event.kind().name()).or_default() += 1;
    }
    for k in [
        "ProbeFailureRecorded",
        "QuarantineAdded",
        "QuarantineLifted",
        "RolloutCleared",
        "GateDecision",
        "WaveAdvanced",
    ] {
        assert!(kinds.contains_key(k), "no {k} in {kinds:?}");
    }
    assert_eq!(
        kinds["ProbeFailureRecorded"], 1,
        "one enforce control failed once"
    );
    drop(snap);
    drop(ro);
    assert_eq!(
        engine::materialize::check(&s.db, |_| {}).unwrap(),
        engine::materialize::CheckOutcome::Identical { entries: s.entries }
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn manifests_dropped_in_the_watched_directory_are_verified_and_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let setup = Setup::create(dir.path(), None, 5).unwrap();
    let watched = dir.path().join("manifests");
    std::fs::create_dir_all(watched.join("rollouts")).unwrap();
    let write = |name: &str, signed: &Value| {
        let artifact = serde_json::to_vec_pretty(&signed["artifact"]).unwrap();
        std::fs::write(watched.join(name), artifact).unwrap();
        std::fs::write(
            watched.join(format!("{name}.sig")),
            signed["signature"].as_str().unwrap(),
        )
        .unwrap();
    };
    let (fleet, _) = setup.signed_fleet().unwrap();
    write("fleet.resolved.json", &fleet);
    let doc = setup
        .rollout_doc("canary", "a1a1a1a1", "/nix/store/c", &setup.at(-5))
        .unwrap();
    let (rollout, _) = setup.sign(&doc).unwrap();
    write("rollouts/canary@a1a1a1a1.json", &rollout);
    // A tampered artifact is refused and logged, never recorded.
    let mut bad = rollout.clone();
    bad["artifact"]["channel"] = json!("stable");
    // Sorted before the good one, so it is refused before the rollout opens.
    write("rollouts/beta@a1a1a1a1.json", &bad);

    let mut config = setup.config.clone();
    config.manifest_dir = Some(watched);
    let (daemon, c) = setup.start_with(config).await.unwrap();
    let mut rollouts = Value::Null;
    until_committed(&daemon, "a rollout from the directory", async || {
        rollouts = c
            .get(&setup.tokens.operator, "/v1/ledger/rollouts")
            .await
            .unwrap()
            .1;
        rollouts["rollouts"]
            .as_array()
            .is_some_and(|r| !r.is_empty())
    })
    .await;
    let ids: Vec<&str> = rollouts["rollouts"]
        .as_array()
        .expect("a rollout opened from the directory")
        .iter()
        .map(|r| r["rolloutId"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["canary@a1a1a1a1"]);
    let m = metrics(&c, &setup.tokens.operator).await;
    assert!(
        m.contains("reason=\"manifest-bad-signature\"")
            || m.contains("reason=\"manifest-discriminator\""),
        "the tampered file was not counted as refused: {m}"
    );
    daemon.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn finished_rollouts_are_pruned_when_their_retention_passes() {
    let dir = tempfile::tempdir().unwrap();
    let s = run_demo(&dir, 12).await;
    assert_eq!(s.rollouts["stable@a1a1a1a1"], "Superseded");
    assert_eq!(s.rollouts["canary@a1a1a1a1"], "Terminal");
    let mut settings = fleet_ledger::config::Config::load(&dir.path().join("config.json")).unwrap();
    settings.config.retention_hours = 24;
    settings.config.plan_interval_ms = 20;
    let signer = fleet_ledger::daemon::signer(&settings.config.signing_key).unwrap();
    let op = std::fs::read_to_string(dir.path().join("operator.token"))
        .unwrap()
        .trim()
        .to_string();
    // A day and a minute later: every finished rollout's retention has passed.
    let later: engine::writer::Clock =
        std::sync::Arc::new(|| chrono::Utc::now().timestamp_micros() + 86_460_000_000);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let daemon = Daemon::start(s.db.clone(), settings, signer, listener, later)
        .await
        .unwrap();
    let c = ApiClient::new(&format!("http://{}", daemon.addr)).unwrap();
    let mut states = Value::Null;
    until_committed(&daemon, "every finished rollout pruned", async || {
        states = c.get(&op, "/v1/ledger/rollouts").await.unwrap().1;
        states["rollouts"]
            .as_array()
            .is_some_and(|r| r.iter().all(|r| r["state"] == "Pruned"))
    })
    .await;
    let rollouts = states["rollouts"].as_array().unwrap();
    assert_eq!(rollouts.len(), s.rollouts.len(), "{states}");
    assert!(rollouts.iter().all(|r| r["state"] == "Pruned"), "{states}");
    // Their host records stay readable: Pruned rollouts leave memory, not the tables.
    let (status, hosts) = c
        .get(&op, "/v1/ledger/rollouts/stable@c3c3c3c3/hosts")
        .await
        .unwrap();
    assert_eq!(status, 200, "{hosts}");
    let hosts = hosts["hosts"].as_array().unwrap();
    assert!(
        !hosts.is_empty() && hosts.iter().all(|h| h["state"] == "Converged"),
        "{hosts:?}"
    );
    daemon.shutdown().await.unwrap();
    let report = engine::forensics::check(engine::forensics::Source::Db(&s.db)).unwrap();
    assert_eq!(report.divergence, None);
    assert!(matches!(
        engine::materialize::check(&s.db, |_| {}).unwrap(),
        engine::materialize::CheckOutcome::Identical { .. }
    ));
}

/// A canary rollout whose two hosts share a disruption budget of one.
async fn post_paired(f: &Fleet, r: &str, secs: i64) -> (u16, Value) {
    let mut doc = f
        .setup
        .rollout_doc(
            "canary",
            r,
            &format!("/nix/store/{r}-canary"),
            &f.setup.at(secs),
        )
        .unwrap();
    doc["disruption_budgets"] = json!([{"selector": {"hosts": ["web-0000", "web-0001"]}, "hosts": ["web-0000", "web-0001"], "max_in_flight": 1}]);
    let (body, _) = f.setup.sign(&doc).unwrap();
    let path = format!("/v1/manifests/rollouts/canary@{r}");
    f.c.post(&f.setup.tokens.ci, &path, &body).await.unwrap()
}

/// Issue 13, defect 5, end to end: canary hosts web-0000 and web-0001 share a budget of one.
/// web-0000 acks rollout A's dispatch (Activating); rollout B supersedes A. B must dispatch at
/// once (A's abandoned activation holds no slot), and `replay --check` recomputes the same
/// decisions from the log.
#[tokio::test(flavor = "multi_thread")]
async fn a_superseded_rollouts_activation_does_not_block_its_successors_budget() {
    let f = Fleet::start(5).await;
    f.post_fleet().await;
    let (s, v) = post_paired(&f, "a1a1a1a1", -30).await;
    assert_eq!(s, 200, "{v}");
    let a = "canary@a1a1a1a1";
    let d = dispatched(&f, "web-0000").await;
    assert_eq!(d["rollout_id"], a);
    let ack = json!({"kind": "DispatchAck", "currentClosureAtDispatch": "/nix/store/old", "receivedAt": T});
    let (s, v) = f.event("web-0000", a, 1, ack).await;
    assert_eq!(s, 200, "{v}");

    let (s, v) = post_paired(&f, "b2b2b2b2", -20).await;
    assert_eq!(s, 200, "{v}");
    let b = "canary@b2b2b2b2";
    let d = dispatched(&f, "web-0000").await;
    assert_eq!(
        d["rollout_id"], b,
        "B dispatches web-0000 despite A's activation"
    );
    let (_, deferrals) = f.c.get(f.op(), "/v1/deferrals").await.unwrap();
    let blocks: Vec<&Value> = deferrals["deferrals"]
        .as_array()
        .map(|d| d.iter().collect())
        .unwrap_or_default();
    assert!(
        blocks
            .iter()
            .all(|d| d["hostname"] != "web-0000" && d["rollout_id"] != a),
        "{deferrals}"
    );
    f.daemon.shutdown().await.unwrap();
    let report = engine::forensics::check(engine::forensics::Source::Db(&f.setup.db)).unwrap();
    assert_eq!(report.divergence, None);
    assert!(report.plans > 0);
}

/// Issue 14, one clock: the API reads the daemon's clock, not the system's. A daemon whose
/// clock runs two hours behind sees a manifest signed a minute ago as signed in its future.
#[tokio::test(flavor = "multi_thread")]
async fn the_api_reads_the_daemons_clock() {
    let dir = tempfile::tempdir().unwrap();
    let setup = Setup::create(dir.path(), None, 5).unwrap();
    let behind: engine::writer::Clock =
        std::sync::Arc::new(|| chrono::Utc::now().timestamp_micros() - 7_200_000_000);
    let (daemon, c) = setup
        .start_with_clock(setup.config.clone(), behind)
        .await
        .unwrap();
    let (body, _) = setup.signed_fleet().unwrap();
    let (status, v) = c
        .post(&setup.tokens.ci, "/v1/manifests/fleet", &body)
        .await
        .unwrap();
    assert_eq!(
        (status, v["error"].as_str()),
        (422, Some("manifest-future-dated")),
        "{v}"
    );
    daemon.shutdown().await.unwrap();
}
