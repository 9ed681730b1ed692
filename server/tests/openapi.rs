//! The OpenAPI description (`GET /v1/openapi.json`) describes the whole API: every route the
//! router has (read from the router's source) is described with its method, every described
//! operation is routed (asked of a running daemon), every error code the sources can answer
//! is enumerated, and every schema reference resolves.

use std::collections::BTreeSet;
use std::path::Path;

use fleet_ledger_demo::Setup;
use serde_json::Value;

/// `(METHOD, path)` of every `.route("path", get(..).post(..))` in the router's source.
fn routed() -> BTreeSet<(String, String)> {
    // The API's routes, and failover's (a standby's and a follower's routers).
    let src = ["src/api/mod.rs", "src/api/replica.rs"]
        .map(|f| std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(f)).unwrap())
        .join("\n");
    let mut out = BTreeSet::new();
    for (i, _) in src.match_indices(".route(\"") {
        let rest = &src[i + 8..];
        let path = &rest[..rest.find('"').unwrap()];
        // The method routers up to the call's closing parenthesis.
        let call = &rest[path.len()..];
        let mut depth = 1;
        let end = call
            .char_indices()
            .find(|(_, c)| {
                match c {
                    '(' => depth += 1,
                    ')' => depth -= 1,
                    _ => {}
                }
                depth == 0
            })
            .unwrap()
            .0;
        for method in ["get", "post", "put", "delete", "patch"] {
            let m = format!("{method}(");
            if call[..end]
                .match_indices(&m)
                .any(|(j, _)| j == 0 || !call.as_bytes()[j - 1].is_ascii_alphanumeric())
            {
                out.insert((method.to_uppercase(), path.to_string()));
            }
        }
    }
    assert!(out.len() > 20, "the router's source was not read: {out:?}");
    out
}

fn described(doc: &Value) -> BTreeSet<(String, String)> {
    doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, ops)| {
            ops.as_object()
                .unwrap()
                .keys()
                .map(move |m| (m.to_uppercase(), path.clone()))
        })
        .collect()
}

/// The error codes other crates' errors name (the string literals of every `fn code(&self)`:
/// planner refusals, the intake's and enrollment's errors), which the API answers through
/// `ErrorCode::of`: each must be one of `ErrorCode`'s, so none is ever answered as
/// `internal`. (The API's own errors are `ErrorCode` variants: the compiler holds them.)
fn codes_in_sources() -> BTreeSet<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = Vec::new();
    for dir in ["server/src", "planner/src"] {
        let mut stack = vec![root.join(dir)];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                } else if p.extension().is_some_and(|x| x == "rs") {
                    files.push(p);
                }
            }
        }
    }
    let literal = |s: &str| -> Option<String> {
        let s = s.trim_start();
        let s = s.strip_prefix('"')?;
        let end = s.find('"')?;
        let code = &s[..end];
        (!code.is_empty()
            && code
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'))
        .then(|| code.to_string())
    };
    let mut codes = BTreeSet::new();
    for f in files {
        let src = std::fs::read_to_string(&f).unwrap();
        for (i, _) in src.match_indices("fn code(&self)") {
            let body = &src[i..];
            let body = &body[..body.find("\n    }\n").unwrap_or(body.len())];
            for (j, _) in body.match_indices("=> ") {
                if let Some(c) = literal(&body[j + 3..]) {
                    codes.insert(c);
                }
            }
        }
    }
    assert!(codes.len() > 30, "the sources were not read: {codes:?}");
    codes
}

#[tokio::test(flavor = "multi_thread")]
async fn the_openapi_description_covers_every_route_and_error_code() {
    let dir = tempfile::tempdir().unwrap();
    let setup = Setup::create(dir.path(), None, 3).unwrap();
    let (daemon, c) = setup.start().await.unwrap();
    // Served to anyone, as JSON.
    let resp = c
        .http
        .get(format!("{}/v1/openapi.json", c.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-type"].to_str().unwrap(),
        "application/json"
    );
    let doc: Value = resp.json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));

    // Routes and operations are the same set.
    let routed = routed();
    let described = described(&doc);
    let undescribed: Vec<_> = routed.difference(&described).collect();
    assert!(
        undescribed.is_empty(),
        "routes the description lacks: {undescribed:?}"
    );
    let unrouted: Vec<_> = described.difference(&routed).collect();
    assert!(
        unrouted.is_empty(),
        "described but not routed: {unrouted:?}"
    );

    // And the running daemon routes each (whatever it then answers: auth, 404 for a record).
    for (method, path) in &described {
        let url = format!("{}{}", c.base, path.replace("{id}", "stable@0123abcd"));
        let resp = c
            .http
            .request(method.parse().unwrap(), &url)
            .header("content-type", "application/json")
            .body("{}")
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        assert_ne!(status, 405, "{method} {path}");
        assert!(
            !(status == 404 && body["reason"] == "no such route"),
            "{method} {path} is not routed"
        );
    }

    // Every error code another crate names is enumerated.
    let listed: BTreeSet<String> = doc["components"]["schemas"]["ErrorBody"]["properties"]["error"]
        ["oneOf"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["enum"][0].as_str().unwrap().to_string())
        .collect();
    let codes = codes_in_sources();
    let missing: Vec<_> = codes.difference(&listed).collect();
    assert!(
        missing.is_empty(),
        "error codes the description lacks: {missing:?}"
    );
    // The description lists exactly `ErrorCode`'s codes.
    let enumerated: BTreeSet<String> = fleet_ledger::api::ErrorCode::ALL
        .iter()
        .map(|c| c.code().to_string())
        .collect();
    assert_eq!(listed, enumerated);

    // Every reference resolves; the agent wire's twelve event kinds are described.
    let text = doc.to_string();
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    for (i, _) in text.match_indices("#/components/schemas/") {
        let name = &text[i + 21..];
        let name = &name[..name.find('"').unwrap()];
        assert!(schemas.contains_key(name), "dangling $ref {name}");
    }
    let kinds: BTreeSet<&str> = schemas["WireReport"]["oneOf"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["properties"]["kind"]["enum"][0].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        BTreeSet::from([
            "DispatchAck",
            "ActivationStarted",
            "ActivationCompleted",
            "ActivationFailed",
            "ActivationDeferred",
            "ProbeTopologyDeclared",
            "ProbeObservedFirst",
            "ProbeResult",
            "ProbeFailureFirst",
            "Failed",
            "RollbackComplete",
            "Converged",
        ])
    );
    // camelCase fields, as the wire has them.
    let result = schemas["WireReport"]["oneOf"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["properties"]["kind"]["enum"][0] == "ProbeResult")
        .unwrap();
    for field in ["probeName", "observedAt", "failureReason", "subResults"] {
        assert!(
            result["properties"].get(field).is_some(),
            "{field}: {result}"
        );
    }
    daemon.shutdown().await.unwrap();
}
