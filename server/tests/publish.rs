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
    let v = ledger::tiles::verify(&mut fetch, key, &mut |_| {}).unwrap();
    assert!(v.log.size() >= published);
    assert_eq!(daemon.shared.metrics.publication_failures.get(), 0);
    daemon.shutdown().await.unwrap();
}
