//! The writer's side of a follower's tail (issue 29): `GET /v1/ledger/entries?from=N&wait=S`
//! waits (bounded) for the commit that brings entry N, then streams from there, and every
//! stream says which log it reflects (`X-Ledger-Size`).

use std::time::{Duration, Instant};

use fleet_ledger_demo::Setup;

#[tokio::test(flavor = "multi_thread")]
async fn a_long_poll_on_the_entries_returns_with_the_next_commit() {
    let dir = tempfile::tempdir().unwrap();
    let setup = Setup::create(dir.path(), None, 2).unwrap();
    let (daemon, c) = setup.start().await.unwrap();
    let auditor = setup.tokens.auditor.clone();
    let get = |path: String| {
        let (c, token) = (c.clone(), auditor.clone());
        async move {
            let r = c
                .http
                .get(format!("{}{path}", c.base))
                .bearer_auth(token)
                .send()
                .await
                .unwrap();
            let size: u64 = r.headers()["x-ledger-size"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            (r.status().as_u16(), size, r.bytes().await.unwrap().to_vec())
        }
    };
    let (s, size, body) = get("/v1/ledger/entries?from=0".into()).await;
    assert_eq!(s, 200);
    assert!(size >= 1 && !body.is_empty());

    // Nothing new: the wait runs out and the answer is empty, at the same size.
    let started = Instant::now();
    let (s, same, body) = get(format!("/v1/ledger/entries?from={size}&wait=1")).await;
    assert_eq!((s, same, body.len()), (200, size, 0));
    assert!(started.elapsed() >= Duration::from_millis(900));

    // A commit while the poll waits: it returns with the new entries.
    let poll = tokio::spawn(get(format!("/v1/ledger/entries?from={size}&wait=20")));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (signed, _) = setup.signed_fleet().unwrap();
    c.ok(&setup.tokens.ci, "/v1/manifests/fleet", &signed)
        .await
        .unwrap();
    let (s, grown, body) = tokio::time::timeout(Duration::from_secs(10), poll)
        .await
        .expect("the poll returns with the commit")
        .unwrap();
    assert_eq!(s, 200);
    assert!(grown > size, "{grown} > {size}");
    // u32be length, then the entry, for each of the new entries.
    let mut at = 0;
    let mut n = 0;
    while at < body.len() {
        let len = u32::from_be_bytes(body[at..at + 4].try_into().unwrap()) as usize;
        at += 4 + len;
        n += 1;
    }
    assert_eq!(at, body.len());
    assert_eq!(n, grown - size);
    daemon.shutdown().await.unwrap();
}
