//! The daemon publishes its log as C2SP tlog-tiles as it commits (config `publish`), without
//! the writer waiting on it: the published directory catches up with the committed log and
//! verifies from the tiles alone.

use fleet_ledger_demo::Setup;

#[tokio::test(flavor = "multi_thread")]
async fn the_daemon_publishes_tiles_as_it_commits() {
    let dir = tempfile::tempdir().unwrap();
    let setup = Setup::create(dir.path(), None, 5).unwrap();
    let tiles = dir.path().join("tiles");
    let mut config = setup.config.clone();
    config.publish = Some(fleet_ledger::publish::PublishConfig {
        to: fleet_ledger::publish::Destination::Dir(tiles.clone()),
        interval_secs: 1,
        request_timeout_secs: 30,
    });
    let (daemon, c) = setup.start_with(config).await.unwrap();
    let (fleet, _) = setup.signed_fleet().unwrap();
    c.ok(&setup.tokens.ci, "/v1/manifests/fleet", &fleet)
        .await
        .unwrap();
    setup
        .post_rollout(&c, "canary", "c0ffee01", "/nix/store/c-canary")
        .await
        .unwrap();
    // Publication follows the commits within a few of its intervals.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let published = loop {
        let head = *daemon.shared.committed.borrow();
        let size = std::fs::read(tiles.join("checkpoint"))
            .ok()
            .and_then(|n| ledger::checkpoint::parse_note(&n).ok())
            .map(|n| n.checkpoint.size);
        if size == Some(head) && head > 3 {
            break head;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "published {size:?}, committed {head}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    let metrics = daemon.shared.metrics.render();
    assert!(
        metrics.contains("fleet_ledger_published_entries ")
            && metrics.contains("fleet_ledger_publication_lag_entries "),
        "{metrics}"
    );
    let key = ledger::keys::read_public_key(&setup.genesis_pub).unwrap();
    let mut fetch = |path: &str| Ok(std::fs::read(tiles.join(path)).ok());
    let v = ledger::tiles::verify(&mut fetch, key, &Default::default(), &mut |_| {}).unwrap();
    assert!(v.log.size() >= published);
    assert_eq!(daemon.shared.metrics.publication_failures.get(), 0);
    daemon.shutdown().await.unwrap();
}

/// Issue 26, defect 4: the lag is committed − published at every commit and after every
/// round, so a publication that never succeeds shows the whole log, not 0.
#[tokio::test(flavor = "multi_thread")]
async fn the_publication_lag_counts_what_was_never_published() {
    let dir = tempfile::tempdir().unwrap();
    let setup = Setup::create(dir.path(), None, 5).unwrap();
    let tiles = dir.path().join("tiles");
    // Every round fails: the checkpoint's place is taken by a directory.
    std::fs::create_dir_all(tiles.join("checkpoint")).unwrap();
    let mut config = setup.config.clone();
    config.publish = Some(fleet_ledger::publish::PublishConfig {
        to: fleet_ledger::publish::Destination::Dir(tiles.clone()),
        interval_secs: 1,
        request_timeout_secs: 30,
    });
    let (daemon, c) = setup.start_with(config).await.unwrap();
    let (fleet, _) = setup.signed_fleet().unwrap();
    c.ok(&setup.tokens.ci, "/v1/manifests/fleet", &fleet)
        .await
        .unwrap();
    let m = &daemon.shared.metrics;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while m.publication_failures.get() < 2 {
        assert!(std::time::Instant::now() < deadline, "no round failed");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let head = *daemon.shared.committed.borrow();
    assert!(head > 1);
    assert_eq!(m.published_entries.get(), 0);
    assert_eq!(m.publication_lag_entries.get(), head as i64);
    // A reload that removes `publish`: no publication, no lag, however the log grows.
    let mut without = setup.config.clone();
    without.publish = None;
    let path = dir.path().join("config.json");
    std::fs::write(&path, serde_json::to_string(&without).unwrap()).unwrap();
    daemon.reloader.set_config_path(path);
    let report = daemon.reloader.reload("SIGHUP").await.unwrap();
    assert!(
        report
            .applied
            .contains(&"publish and witnessing".to_string()),
        "{report:?}"
    );
    let doc = setup
        .rollout_doc("canary", "a1a1a1a1", "/nix/store/c", &setup.at(0))
        .unwrap();
    let (rollout, _) = setup.sign(&doc).unwrap();
    c.ok(
        &setup.tokens.ci,
        "/v1/manifests/rollouts/canary@a1a1a1a1",
        &rollout,
    )
    .await
    .unwrap();
    assert!(*daemon.shared.committed.borrow() > head);
    assert_eq!(m.publication_lag_entries.get(), 0);
    daemon.shutdown().await.unwrap();
}

/// Issue 26, defect 5: an S3 endpoint that accepts the connection and never answers fails
/// each request at the deadline (object_store's own retries bounded by it too), with an
/// error the daemon counts as a timeout.
#[test]
fn a_hanging_s3_endpoint_fails_each_request_at_the_deadline() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    // Accepts and holds every connection, answering nothing.
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming() {
            held.push(stream);
        }
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let builder = object_store::aws::AmazonS3Builder::new()
        .with_bucket_name("tiles")
        .with_region("us-east-1")
        .with_endpoint(format!("http://127.0.0.1:{port}"))
        .with_allow_http(true)
        .with_access_key_id("a")
        .with_secret_access_key("b");
    let sink = fleet_ledger::publish::S3Sink::with(
        builder,
        "log",
        rt.handle().clone(),
        std::time::Duration::from_secs(1),
    )
    .unwrap();
    use fleet_ledger::publish::Sink as _;
    let started = std::time::Instant::now();
    let err = sink.get("checkpoint").unwrap_err();
    let took = started.elapsed();
    assert_eq!(err.kind(), std::io::ErrorKind::TimedOut, "{err}");
    assert!(took < std::time::Duration::from_secs(5), "took {took:?}");
    let err = sink.put("tile/0/000", b"x", true).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::TimedOut, "{err}");
    let e = fleet_ledger::publish::PublishError::Io {
        what: "reading checkpoint".into(),
        source: err,
    };
    assert!(e.is_timeout());
}
