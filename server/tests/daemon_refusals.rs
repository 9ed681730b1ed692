//! The daemon's refusals over real HTTP: every bad input gets a clear 4xx in the one error
//! shape (`{error, reason}`) and leaves the ledger exactly as it was.

use serde_json::{Value, json};

mod fleet;
use fleet::*;

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_gets_a_clear_4xx_and_leaves_the_ledger_unchanged() {
    let f = Fleet::start_quiet(5).await;
    f.post_fleet().await;
    f.post_rollout("canary", "a1a1a1a1", "/nix/store/c").await;
    f.wait("the rollout to open", |f| f.size() > 6).await;
    let c = &f.c;
    let agent = f.agent("web-0000");
    let raw = |token: &str, path: &str, body: Vec<u8>| {
        c.http
            .post(format!("{}{path}", c.base))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let json_of = |r: reqwest::Response| async move {
        let s = r.status().as_u16();
        (s, r.json::<Value>().await.unwrap_or(Value::Null))
    };
    // No safety tick runs (start_quiet), so nothing but these requests could append.
    let before = f.size();

    let got = json_of(
        raw(agent, "/v1/agent/events", b"{not json".to_vec())
            .await
            .unwrap(),
    )
    .await;
    f.refused(400, "malformed-json", got, before).await;
    let big = vec![b' '; 512 * 1024];
    let got = json_of(raw(agent, "/v1/agent/events", big).await.unwrap()).await;
    f.refused(413, "body-too-large", got, before).await;
    // Unknown fields are ignored, as every nixfleet reader does; missing ones are not.
    let unknown = json!({"hostname": "web-0000", "rolloutId": "canary@a1a1a1a1", "event": {"kind": "DispatchAck", "seq": 1, "currentClosureAtDispatch": "x", "receivedAt": T}, "extra": 1});
    let missing = json!({"hostname": "web-0000", "rolloutId": "canary@a1a1a1a1", "event": {"kind": "DispatchAck", "seq": 1, "currentClosureAtDispatch": "x"}});
    let got = c.post(agent, "/v1/agent/events", &missing).await.unwrap();
    f.refused(400, "malformed-event", got, before).await;
    let snake = json!({"hostname": "web-0000", "rollout_id": "canary@a1a1a1a1", "event": {"kind": "DispatchAck", "seq": 1, "currentClosureAtDispatch": "x", "receivedAt": T}});
    let got = c.post(agent, "/v1/agent/events", &snake).await.unwrap();
    f.refused(400, "malformed-json", got, before).await;
    let bad_kind = json!({"hostname": "web-0000", "rolloutId": "canary@a1a1a1a1", "event": {"kind": "ProbeTopologyDeclared", "seq": 1, "declaredAt": T, "probes": [{"probeName": "p", "kind": "a b", "mode": "enforce"}]}});
    let got = c.post(agent, "/v1/agent/events", &bad_kind).await.unwrap();
    f.refused(400, "malformed-event", got, before).await;
    let bad_time = json!({"hostname": "web-0000", "rolloutId": "canary@a1a1a1a1", "event": {"kind": "DispatchAck", "seq": 1, "currentClosureAtDispatch": "x", "receivedAt": "yesterday"}});
    let got = c.post(agent, "/v1/agent/events", &bad_time).await.unwrap();
    f.refused(400, "malformed-event", got, before).await;
    for bad_id in [
        "canary",
        "Canary@a1",
        "canary@A1",
        "canary@a1@b2",
        "canary@xyz",
    ] {
        let body = json!({"hostname": "web-0000", "rolloutId": bad_id, "event": {"kind": "DispatchAck", "seq": 1, "currentClosureAtDispatch": "x", "receivedAt": T}});
        let got = c.post(agent, "/v1/agent/events", &body).await.unwrap();
        f.refused(400, "malformed-rollout-id", got, before).await;
    }
    let got = c.get(f.op(), "/v1/rollouts/not-an-id").await.unwrap();
    f.refused(400, "malformed-rollout-id", got, before).await;
    let got = c.get(f.op(), "/v1/rollouts/canary@ffff").await.unwrap();
    f.refused(404, "not-found", got, before).await;

    // Authentication and roles.
    let got = c
        .post("no-such-token", "/v1/agent/events", &unknown)
        .await
        .unwrap();
    f.refused(401, "unauthorized", got, before).await;
    let got = c
        .post(
            &f.setup.tokens.auditor,
            "/v1/quarantine/lift",
            &json!({"channel": "canary", "closure": "x", "reason": "r"}),
        )
        .await
        .unwrap();
    f.refused(403, "forbidden", got, before).await;
    let got = c.get(agent, "/v1/ledger/rollouts").await.unwrap();
    f.refused(403, "forbidden", got, before).await;
    let (s, _) = c
        .get(&f.setup.tokens.auditor, "/v1/ledger/rollouts")
        .await
        .unwrap();
    assert_eq!(s, 200, "auditors read");
    let resp = c
        .http
        .get(format!("{}/healthz", c.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "healthz needs no token");
    let resp = c
        .http
        .get(format!("{}/metrics", c.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401, "metrics need a token");

    // Manifests: bad signature, stale, future-dated, another id than posted, another fleet.
    let ci = &f.setup.tokens.ci;
    let doc = f
        .setup
        .rollout_doc("canary", "b2b2b2b2", "/nix/store/d", &f.setup.at(-10))
        .unwrap();
    let (mut body, _) = f.setup.sign(&doc).unwrap();
    body["artifact"]["channel_ref"] = json!("b2b2b2b3");
    let got = c
        .post(ci, "/v1/manifests/rollouts/canary@b2b2b2b3", &body)
        .await
        .unwrap();
    f.refused(422, "manifest-bad-signature", got, before).await;
    let (body, _) = f.setup.sign(&doc).unwrap();
    let got = c
        .post(ci, "/v1/manifests/rollouts/canary@c3c3c3c3", &body)
        .await
        .unwrap();
    f.refused(422, "manifest-discriminator", got, before).await;
    let stale = f
        .setup
        .rollout_doc("canary", "b2b2b2b2", "/nix/store/d", "2020-01-01T00:00:00Z")
        .unwrap();
    let (body, _) = f.setup.sign(&stale).unwrap();
    let got = c
        .post(ci, "/v1/manifests/rollouts/canary@b2b2b2b2", &body)
        .await
        .unwrap();
    f.refused(422, "manifest-stale", got, before).await;
    let future = f
        .setup
        .rollout_doc("canary", "b2b2b2b2", "/nix/store/d", &f.setup.at(3600))
        .unwrap();
    let (body, _) = f.setup.sign(&future).unwrap();
    let got = c
        .post(ci, "/v1/manifests/rollouts/canary@b2b2b2b2", &body)
        .await
        .unwrap();
    f.refused(422, "manifest-future-dated", got, before).await;
    let mut other_fleet = doc.clone();
    other_fleet["fleet_resolved_hash"] = json!("00".repeat(32));
    let (body, _) = f.setup.sign(&other_fleet).unwrap();
    let got = c
        .post(ci, "/v1/manifests/rollouts/canary@b2b2b2b2", &body)
        .await
        .unwrap();
    f.refused(409, "manifest-fleet-mismatch", got, before).await;
    let older = f
        .setup
        .rollout_doc("canary", "b2b2b2b2", "/nix/store/d", &f.setup.at(-1000))
        .unwrap();
    let (body, _) = f.setup.sign(&older).unwrap();
    let got = c
        .post(ci, "/v1/manifests/rollouts/canary@b2b2b2b2", &body)
        .await
        .unwrap();
    f.refused(409, "manifest-outdated", got, before).await;
    let got = c
        .post(
            ci,
            "/v1/manifests/fleet",
            &json!({"artifact": {"schemaVersion": 2}, "signature": "AAAA"}),
        )
        .await
        .unwrap();
    f.refused(422, "manifest-not-signed", got, before).await;
    let got = c.post(agent, "/v1/manifests/fleet", &body).await.unwrap();
    f.refused(403, "forbidden", got, before).await;

    let m = metrics(c, f.op()).await;
    assert!(
        m.contains("fleet_ledger_rejections_total{reason=\"manifest-stale\"} 1"),
        "{m}"
    );
    assert!(m.contains("fleet_ledger_commit_seconds_bucket"), "{m}");
    f.daemon.shutdown().await.unwrap();
}

/// Issue 13, defect 7: every error answer is `{error, reason}` JSON, whatever produced it (a
/// wrong method, an over-long URI, a path that does not decode, a body without a JSON
/// Content-Type), and none of them writes anything.
#[tokio::test(flavor = "multi_thread")]
async fn every_error_answer_is_json_with_a_code_and_a_reason() {
    let f = Fleet::start_quiet(5).await;
    f.post_fleet().await;
    let before = f.size();
    let http = &f.c.http;
    let url = |p: &str| format!("{}{p}", f.c.base);
    let long = format!("/v1/rollouts?pad={}", "x".repeat(10_000));
    let host = json!({"hostname": "web-0000", "rolloutId": "canary@a1a1a1a1", "event": {"kind": "DispatchAck", "seq": 1, "currentClosureAtDispatch": "x", "receivedAt": T}}).to_string();
    let agent = f.agent("web-0000");
    let cases = [
        (
            http.put(url("/v1/ledger/rollouts")).bearer_auth(f.op()),
            405,
            "method-not-allowed",
        ),
        (http.delete(url("/healthz")), 405, "method-not-allowed"),
        (
            http.get(url("/v1/rollouts/%FF%FE")).bearer_auth(f.op()),
            400,
            "malformed-path",
        ),
        (
            http.get(url("/v1/rollouts/nochannel")).bearer_auth(f.op()),
            400,
            "malformed-rollout-id",
        ),
        (
            http.get(url(&long)).bearer_auth(f.op()),
            414,
            "uri-too-long",
        ),
        (http.get(url("/v1/nothing-here")), 404, "not-found"),
        (
            http.post(url("/v1/agent/events"))
                .bearer_auth(agent)
                .body(host.clone()),
            415,
            "unsupported-media-type",
        ),
        (
            http.post(url("/v1/agent/events"))
                .bearer_auth(agent)
                .header("content-type", "text/plain")
                .body(host.clone()),
            415,
            "unsupported-media-type",
        ),
    ];
    for (req, status, code) in cases {
        let resp = req.send().await.unwrap();
        let got = resp.status().as_u16();
        let ct = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let text = resp.text().await.unwrap();
        assert_eq!(got, status, "{code}: {text}");
        assert!(ct.starts_with("application/json"), "{code}: {ct}");
        let v: Value = serde_json::from_str(&text).unwrap();
        f.refused(status, code, (got, v), before).await;
    }
    // A JSON Content-Type with parameters is JSON.
    let resp = http
        .post(url("/v1/agent/events"))
        .bearer_auth(agent)
        .header("content-type", "application/json; charset=utf-8")
        .body(host)
        .send()
        .await
        .unwrap();
    assert_ne!(resp.status().as_u16(), 415);
    f.daemon.shutdown().await.unwrap();
}

/// Issue 13, defect 6, over HTTP: a validly signed fleet whose content the system could not
/// use is refused with a 422 naming the field, and nothing is recorded.
#[tokio::test(flavor = "multi_thread")]
async fn signed_manifests_with_unusable_content_are_refused_naming_the_field() {
    let f = Fleet::start_quiet(5).await;
    let before = f.size();
    let mut doc = f.setup.fleet_doc.clone();
    doc["hosts"]["web 0099"] = json!({"channel": "canary"});
    let (body, _) = f.setup.sign(&doc).unwrap();
    let got =
        f.c.post(&f.setup.tokens.ci, "/v1/manifests/fleet", &body)
            .await
            .unwrap();
    assert!(
        got.1["reason"]
            .as_str()
            .unwrap()
            .starts_with("hosts.\"web 0099\""),
        "{}",
        got.1
    );
    f.refused(422, "manifest-invalid-field", got, before).await;
    let mut doc = f.setup.fleet_doc.clone();
    doc["channel_edges"] = json!([{"gated": "canary", "gates": "canary"}]);
    let (body, _) = f.setup.sign(&doc).unwrap();
    let got =
        f.c.post(&f.setup.tokens.ci, "/v1/manifests/fleet", &body)
            .await
            .unwrap();
    f.refused(422, "manifest-invalid-field", got, before).await;
    // Issue 26, defect 14: a budget selector written as a string, in a fleet or a rollout
    // manifest, is refused naming the field (agents read these documents as nixfleet's).
    for (path, doc) in [
        ("/v1/manifests/fleet", {
            let mut doc = f.setup.fleet_doc.clone();
            doc["disruptionBudgets"] = json!([{"selector": "all", "maxInFlight": 1}]);
            doc
        }),
        ("/v1/manifests/rollouts/canary@c3c3c3c3", {
            let mut doc = f
                .setup
                .rollout_doc(
                    "canary",
                    "c3c3c3c3",
                    "/nix/store/c3-canary",
                    &f.setup.at(-5),
                )
                .unwrap();
            doc["disruption_budgets"] =
                json!([{"selector": "all", "hosts": ["web-0000"], "max_in_flight": 1}]);
            doc
        }),
    ] {
        let (body, _) = f.setup.sign(&doc).unwrap();
        let got = f.c.post(&f.setup.tokens.ci, path, &body).await.unwrap();
        assert!(
            got.1["reason"].as_str().unwrap().contains("selector"),
            "{path}: {}",
            got.1
        );
        f.refused(422, "manifest-invalid-field", got, before).await;
    }
    f.daemon.shutdown().await.unwrap();
}
