//! Forensics on a freshly generated (demo) ledger and its bundle: the determinism check
//! passes, names the first divergence when a decision was altered, and timelines, `why` and
//! replay-at-a-point show what happened.

use std::path::{Path, PathBuf};

use engine::forensics::{self, Filter, Source};
use engine::materialize::Ledger;
use fleet_ledger_demo as demo;
use ledger::event::Event;
use ledger::read::Logged;
use ledger::store::{NewEntry, ReadOnlyStore};

fn demo_ledger(dir: &Path) -> demo::Summary {
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(demo::run(demo::Options {
            hosts: 16,
            dir: dir.to_path_buf(),
            db: None,
            verbose: false,
        }))
        .unwrap()
}

fn items(db: &Path) -> Vec<Logged> {
    forensics::entries(Source::Db(db))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

fn export(db: &Path) -> PathBuf {
    let out = db.with_extension("bundle");
    let ro = ReadOnlyStore::open(db).unwrap();
    let f = std::fs::File::create(&out).unwrap();
    ro.snapshot().unwrap().export(f, |_| {}).unwrap();
    out
}

#[test]
fn a_daemon_ledger_replays_deterministically_from_the_db_and_from_a_bundle() {
    let dir = tempfile::tempdir().unwrap();
    let s = demo_ledger(dir.path());
    for source in [Source::Db(&s.db), Source::Bundle(&export(&s.db))] {
        let r = forensics::check(source).unwrap();
        assert_eq!(r.divergence, None);
        assert_eq!(r.entries, s.entries);
        assert!(r.decisions > 16 * 4 && r.plans > 3, "{r:?}");
    }
}

/// The seqs that end a batch of the log at `db` (its checkpoints).
fn batch_ends(db: &Path) -> std::collections::BTreeSet<u64> {
    let ro = ReadOnlyStore::open(db).unwrap();
    let snap = ro.snapshot().unwrap();
    snap.rows(..)
        .unwrap()
        .map(Result::unwrap)
        .filter(|s| s.ends_batch())
        .map(|s| s.seq())
        .collect()
}

/// The demo's log at `db` re-recorded (signed anew) in the same batches, with `alter`
/// applied to each entry: it returns the events to record in its place.
fn rerecorded(
    dir: &Path,
    name: &str,
    db: &Path,
    all: &[Logged],
    alter: impl Fn(&Logged) -> Vec<Event>,
) -> PathBuf {
    rerecorded_in(dir, name, &batch_ends(db), all, alter)
}

/// [`rerecorded`] in batches ending at `ends`.
fn rerecorded_in(
    dir: &Path,
    name: &str,
    ends: &std::collections::BTreeSet<u64>,
    all: &[Logged],
    alter: impl Fn(&Logged) -> Vec<Event>,
) -> PathBuf {
    let copy = dir.join(format!("{name}.redb"));
    let mut l = Ledger::create(&copy, demo::ORIGIN, fixtures::genesis_signer(), all[0].at).unwrap();
    let mut batch = Vec::new();
    for i in &all[1..] {
        batch.extend(alter(i).into_iter().map(|event| NewEntry {
            recorded_at_us: i.at,
            event,
        }));
        if ends.contains(&i.seq) {
            l.append(std::mem::take(&mut batch)).unwrap();
        }
    }
    assert!(batch.is_empty(), "the log ends with a checkpoint");
    copy
}

#[test]
fn an_altered_decision_is_the_first_divergence() {
    let dir = tempfile::tempdir().unwrap();
    let s = demo_ledger(dir.path());
    let all = items(&s.db);
    // One transition's agent time moved by a microsecond.
    let victim = all
        .iter()
        .find(|i| matches!(i.event, Event::HostTransitioned(_)))
        .unwrap()
        .seq;
    let copy = rerecorded(dir.path(), "altered", &s.db, &all, |i| {
        let mut event = i.event.clone();
        if i.seq == victim
            && let Event::HostTransitioned(t) = &mut event
        {
            t.at += 1;
        }
        vec![event]
    });
    let r = forensics::check(Source::Db(&copy)).unwrap();
    let d = r.divergence.expect("a divergence");
    assert_eq!(d.seq, victim);
    assert!(d.recorded.starts_with("HostTransitioned"), "{d:?}");
    assert!(d.recomputed.starts_with("HostTransitioned"), "{d:?}");
    assert_ne!(d.recorded, d.recomputed);
}

/// The check holds each recorded batch to the writer's rule: the planner runs once, last, if
/// anything in the batch moved. Its output split off into a batch of its own, or an input
/// decided after it in the same batch, is a divergence where the rule is broken.
#[test]
fn the_batch_rule_is_checked_at_every_batch_end() {
    let dir = tempfile::tempdir().unwrap();
    let s = demo_ledger(dir.path());
    let all = items(&s.db);
    let ends = batch_ends(&s.db);
    let planned = |e: &Event| matches!(e, Event::DispatchQueued(_) | Event::WaveAdvanced(_));
    // A batch whose inputs moved hosts and whose end is the planner's output.
    let (start, first_planned, end) = ends
        .iter()
        .zip(ends.iter().skip(1))
        .find_map(|(&prev, &end)| {
            let batch = &all[prev as usize + 1..=end as usize];
            let first = batch.iter().position(|i| planned(&i.event))?;
            (first > 0 && matches!(batch[0].event, Event::AgentEventRecorded(_))).then_some((
                prev + 1,
                prev + 1 + first as u64,
                end,
            ))
        })
        .expect("a batch of reports and the planner's output");
    assert!(start < first_planned && first_planned <= end);

    // Split: the inputs committed alone, the planner's output in the next batch.
    let mut split = ends.clone();
    split.insert(first_planned - 1);
    let copy = rerecorded_in(dir.path(), "split", &split, &all, |i| vec![i.event.clone()]);
    let d = forensics::check(Source::Db(&copy))
        .unwrap()
        .divergence
        .expect("a divergence");
    assert_eq!(d.seq, first_planned, "{d:?}");
    assert!(d.recorded.starts_with("the end of the batch"), "{d:?}");
    assert!(!d.recomputed.starts_with("nothing"), "{d:?}");

    // Merged with the next batch: its first input comes after this batch's planner run.
    let next_end = *ends.range(end + 1..).next().expect("a later batch");
    let mut merged = ends.clone();
    merged.remove(&end);
    let copy = rerecorded_in(dir.path(), "merged", &merged, &all, |i| {
        vec![i.event.clone()]
    });
    let d = forensics::check(Source::Db(&copy))
        .unwrap()
        .divergence
        .expect("a divergence");
    assert!(d.seq > end && d.seq <= next_end, "{d:?}");
    assert!(
        d.recomputed.starts_with("nothing (the batch's planner run"),
        "{d:?}"
    );

    // The same batches as recorded check clean: the copies differ only where said.
    let copy = rerecorded_in(dir.path(), "same", &ends, &all, |i| vec![i.event.clone()]);
    assert_eq!(
        forensics::check(Source::Db(&copy)).unwrap().divergence,
        None
    );
}

/// Every input the daemon decides is re-decided by the check, not only the planner's and
/// the state machines': a manifest that could not have replaced the one in force, a dispatch
/// delivered that was never queued, a lift of a closure that was never quarantined.
#[test]
fn inputs_the_daemon_would_have_refused_are_divergences() {
    let dir = tempfile::tempdir().unwrap();
    let s = demo_ledger(dir.path());
    let all = items(&s.db);
    let first = |pick: fn(&Event) -> bool| all.iter().find(|i| pick(&i.event)).unwrap().clone();
    let fleet = first(|e| matches!(e, Event::FleetManifestSigned(_)));
    let delivered = first(|e| matches!(e, Event::DispatchDelivered(_)));
    let cases: Vec<(&str, u64, Event, &str)> = vec![
        // The same fleet again: the daemon answers a duplicate and records nothing.
        ("fleet-twice", fleet.seq, fleet.event.clone(), "nothing"),
        // Delivered again: nothing is queued for the host any more.
        (
            "delivered-twice",
            delivered.seq,
            delivered.event.clone(),
            "nothing",
        ),
        (
            "lift-unknown",
            fleet.seq,
            Event::QuarantineLifted(ledger::event::QuarantineLifted {
                channel: "canary".into(),
                closure: "/nix/store/never-quarantined".into(),
                operator: "mallory".into(),
                reason: "none".into(),
            }),
            "a refusal (not-quarantined)",
        ),
        // A transition no input decided: staged only by a decision, never alone.
        (
            "transition-alone",
            fleet.seq,
            first(|e| matches!(e, Event::HostTransitioned(_))).event,
            "nothing (no decision",
        ),
    ];
    for (name, after, extra, recomputed) in cases {
        let copy = rerecorded(dir.path(), name, &s.db, &all, |i| {
            let mut events = vec![i.event.clone()];
            if i.seq == after {
                events.push(extra.clone());
            }
            events
        });
        let r = forensics::check(Source::Db(&copy)).unwrap();
        let d = r
            .divergence
            .unwrap_or_else(|| panic!("{name}: no divergence"));
        assert_eq!(d.seq, after + 1, "{name}: {d:?}");
        assert!(d.recomputed.starts_with(recomputed), "{name}: {d:?}");
    }
}

#[test]
fn timeline_why_and_replay_show_what_happened() {
    let dir = tempfile::tempdir().unwrap();
    let s = demo_ledger(dir.path());
    let src = Source::Db(&s.db);
    let all = items(&s.db);
    // The host that failed its compliance probe.
    let victim = all
        .iter()
        .find_map(|i| match &i.event {
            Event::QuarantineAdded(q) => Some(q.hostname.clone()),
            _ => None,
        })
        .unwrap();
    let lines = forensics::timeline(
        src,
        &Filter {
            host: Some(victim.clone()),
            ..Filter::default()
        },
    )
    .unwrap();
    assert!(
        lines
            .iter()
            .all(|l| l.host.as_deref() == Some(victim.as_str()))
    );
    assert!(lines.windows(2).all(|w| w[0].seq < w[1].seq));
    assert!(lines.iter().any(|l| l.kind == "ProbeFailureRecorded"));
    assert!(lines.iter().any(|l| l.agent_time.is_some()));
    // A time window narrows it.
    let mid = lines[lines.len() / 2].cp_time.clone();
    let since = wire::ts::parse(&mid).unwrap();
    let later = forensics::timeline(
        src,
        &Filter {
            host: Some(victim.clone()),
            since: Some(since),
            ..Filter::default()
        },
    )
    .unwrap();
    assert!(!later.is_empty() && later.len() < lines.len());

    let rollout = ledger::domain::RolloutId::parse("stable@a1a1a1a1").unwrap();
    let (chain, host, r) = forensics::why(src, &victim, &rollout).unwrap();
    let kinds: Vec<&str> = chain.iter().map(|l| l.kind).collect();
    for k in [
        "HostJoined",
        "DispatchQueued",
        "ProbeFailureRecorded",
        "QuarantineAdded",
        "RolloutCleared",
    ] {
        assert!(kinds.contains(&k), "{k} missing from {kinds:?}");
    }
    assert_eq!(host.unwrap().state, ledger::domain::HostState::Reverted);
    assert_eq!(r.unwrap().state, ledger::domain::RolloutState::Superseded);
    // Operator text, not Rust's Debug (issue 26): "superseded by stable@…", no braces.
    let superseded = chain
        .iter()
        .find(|l| l.kind == "RolloutTransitioned" && l.summary.contains("Superseded"))
        .expect("the rollout was superseded");
    assert!(
        superseded.summary.contains("superseded by stable@"),
        "{}",
        superseded.summary
    );
    for l in chain.iter().chain(&lines) {
        assert!(
            !l.summary.contains('{') && !l.summary.contains("RolloutId"),
            "{}",
            l.summary
        );
    }

    // The log's own records by time (issue 26, defect 11): every entry about no host or
    // rollout, and the manifests, from the database and from the bundle alike; a window
    // found by time on the database equals the same window scanned in the bundle.
    let bundle = export(&s.db);
    let log_lines = |src, since| {
        forensics::timeline(
            src,
            &Filter {
                log: true,
                since,
                ..Filter::default()
            },
        )
        .unwrap()
    };
    let records = log_lines(src, None);
    let kinds: std::collections::BTreeSet<&str> = records.iter().map(|l| l.kind).collect();
    for k in [
        "Genesis",
        "FleetManifestSigned",
        "RolloutManifestSigned",
        "QuarantineLifted",
    ] {
        assert!(kinds.contains(k), "{k} missing from {kinds:?}");
    }
    assert!(records.iter().all(|l| l.host.is_none()));
    let seqs = |ls: &[forensics::Line]| ls.iter().map(|l| l.seq).collect::<Vec<_>>();
    assert_eq!(
        seqs(&records),
        seqs(&log_lines(Source::Bundle(&bundle), None))
    );
    for at in [
        all[1].at,
        all[all.len() / 2].at,
        all[all.len() - 1].at,
        i64::MAX,
    ] {
        let window = |src| {
            forensics::timeline(
                src,
                &Filter {
                    since: Some(at),
                    ..Filter::default()
                },
            )
            .unwrap()
        };
        let from_db = window(src);
        let expected: Vec<u64> = all.iter().filter(|i| i.at >= at).map(|i| i.seq).collect();
        assert_eq!(seqs(&from_db), expected);
        assert_eq!(seqs(&window(Source::Bundle(&bundle))), expected);
    }

    // Replay to a point equals the fold of that prefix; to the end, the stored tables.
    let at = all.len() as u64 / 2;
    let state = forensics::replay_full(src, Some(at), None).unwrap();
    assert_eq!(state.next_seq, at + 1);
    let mut prefix = projections::State::default();
    for i in &all[..=at as usize] {
        prefix.apply(i.seq, i.at, &i.event);
    }
    assert_eq!(state, prefix);
    let by_time = forensics::replay_full(src, None, Some(all[at as usize].at)).unwrap();
    assert!(by_time.next_seq > at);
    let end = forensics::replay_full(src, None, None).unwrap();
    let ro = ReadOnlyStore::open(&s.db).unwrap();
    assert_eq!(end.diff(&ro.snapshot().unwrap()).unwrap(), None);
    assert!(forensics::state_text(&state).contains("ROLLOUTS"));
    assert!(forensics::state_json(&state)["hosts"].is_array());
}

/// A ledger of the fleet simulation (`seed`, `hosts`, about `entries` entries), appended 30
/// planner groups per batch.
fn sim_ledger(db: &Path, seed: u64, hosts: usize, entries: u64) {
    let mut sim = fixtures::sim::Sim::new(seed, hosts);
    let start = sim.now();
    let groups = sim.run(entries);
    let mut ledger = Ledger::create(db, demo::ORIGIN, fixtures::genesis_signer(), start).unwrap();
    for chunk in groups.chunks(30) {
        ledger.append(fixtures::sim::entries(chunk)).unwrap();
    }
}

/// The state `replay` shows after `n` entries: the fold of that prefix without the host
/// records of Pruned rollouts.
fn expected_at(all: &[Logged], n: usize) -> (projections::State, usize) {
    let mut s = projections::State::untracked().without_index();
    for i in &all[..n] {
        s.apply(i.seq, i.at, &i.event);
    }
    s.drop_pruned_hosts();
    s.set_tracking(true);
    let omitted = s.forgotten_hosts() as usize;
    (s, omitted)
}

#[test]
fn replay_from_snapshots_equals_the_fold_and_never_trusts_a_stale_cache() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("sim.redb");
    sim_ledger(&db, 5, 16, 12_000);
    let all = items(&db);
    let bundle = export(&db);
    let every = 1_000;
    for path in [&db, &bundle] {
        let src = if path == &db {
            Source::Db(path)
        } else {
            Source::Bundle(path)
        };
        let cache = engine::replay_cache::cache_path(path);
        // The first replay folds from entry 0 and leaves snapshots up to its point.
        let mid = 6_500u64;
        let r = forensics::replay(
            src,
            forensics::Point {
                seq: Some(mid),
                time: None,
            },
            every,
        )
        .unwrap();
        assert_eq!((r.from_snapshot, r.folded), (None, mid + 1));
        assert_eq!(r.cache_warning, None);
        let (want, omitted) = expected_at(&all, mid as usize + 1);
        assert_eq!(r.state, want);
        assert_eq!(r.pruned_hosts_omitted, omitted);
        // Later replays start from the nearest snapshot, at any point, by seq or by time.
        for n in [
            1u64,
            999,
            1_000,
            1_001,
            4_321,
            6_500,
            9_999,
            all.len() as u64 - 1,
        ] {
            let r = forensics::replay(
                src,
                forensics::Point {
                    seq: Some(n),
                    time: None,
                },
                every,
            )
            .unwrap();
            let (want, omitted) = expected_at(&all, n as usize + 1);
            assert_eq!(r.state, want, "at seq {n}");
            assert_eq!(r.pruned_hosts_omitted, omitted);
            if n >= 1_000 && n <= mid {
                assert_eq!(r.from_snapshot, Some((n + 1) / every * every), "at seq {n}");
                assert!(r.folded < every);
            }
        }
        let t = all[7_777].at;
        let r = forensics::replay(
            src,
            forensics::Point {
                seq: None,
                time: Some(t),
            },
            every,
        )
        .unwrap();
        let upto = all.iter().take_while(|i| i.at <= t).count();
        assert_eq!(r.state, expected_at(&all, upto).0);
        assert!(r.from_snapshot.is_some());
        // The last point ends with every snapshot there is.
        assert!(r.pruned_hosts_omitted > 0, "the simulation prunes rollouts");

        // A damaged snapshot body is not used: the replay folds from an earlier one.
        let mut bytes = std::fs::read(&cache).unwrap();
        let n = bytes.len();
        bytes[n - 10] ^= 1;
        std::fs::write(&cache, &bytes).unwrap();
        let r = forensics::replay(
            src,
            forensics::Point {
                seq: Some(all.len() as u64 - 1),
                time: None,
            },
            every,
        )
        .unwrap();
        assert_eq!(r.state, expected_at(&all, all.len()).0);
        assert!(r.from_snapshot.unwrap() < all.len() as u64 / every * every);
    }
    // A cache made on another log is ignored and replaced. (Both simulations start at the same
    // time with the same key and origin, so their entry 0 is the same: a forked log, caught
    // by the entry hash at the snapshot.)
    let other = dir.path().join("other.redb");
    sim_ledger(&other, 6, 8, 3_000);
    std::fs::copy(
        engine::replay_cache::cache_path(&db),
        engine::replay_cache::cache_path(&other),
    )
    .unwrap();
    let others = items(&other);
    let r = forensics::replay(
        Source::Db(&other),
        forensics::Point {
            seq: Some(2_500),
            time: None,
        },
        every,
    )
    .unwrap();
    assert_eq!(r.from_snapshot, None);
    assert_eq!(r.state, expected_at(&others, 2_501).0);
    // ... and its own snapshots replace the foreign ones.
    let r = forensics::replay(
        Source::Db(&other),
        forensics::Point {
            seq: Some(2_600),
            time: None,
        },
        every,
    )
    .unwrap();
    assert_eq!(r.from_snapshot, Some(2_000));
    assert_eq!(r.state, expected_at(&others, 2_601).0);
}

/// The report in a real headless browser: it loads with no script errors and draws one row
/// per host. `.ci/run` installs Debian's `chromium`; without it this test fails and says so,
/// unless `FLEET_SKIP_BROWSER=1` is set (then it says loudly that it did not run).
#[test]
fn the_rollout_report_renders_one_row_per_host_in_headless_chromium() {
    let dir = tempfile::tempdir().unwrap();
    let s = demo_ledger(dir.path());
    let rollout = ledger::domain::RolloutId::parse("stable@a1a1a1a1").unwrap();
    let html = forensics::report(Source::Db(&s.db), &rollout)
        .unwrap()
        .unwrap();
    for fetcher in [
        " src=",
        " href=",
        "fetch(",
        "XMLHttpRequest",
        "@import",
        "url(",
    ] {
        assert!(
            !html.contains(fetcher),
            "the page must not fetch anything ({fetcher})"
        );
    }
    let page = dir.path().join("report.html");
    std::fs::write(&page, &html).unwrap();
    let hosts = s.hosts.values().sum::<usize>() - 2; // the canary hosts are not in stable
    let browser = ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|b| {
            std::process::Command::new(b)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        });
    let Some(browser) = browser else {
        let msg = "NO HEADLESS BROWSER: install Debian's `chromium` (.ci/run does) to run the report test";
        if std::env::var("FLEET_SKIP_BROWSER").as_deref() == Ok("1") {
            eprintln!("\n*** {msg}; FLEET_SKIP_BROWSER=1: NOT RUN ***\n");
            return;
        }
        panic!("{msg}, or set FLEET_SKIP_BROWSER=1 to skip it knowingly");
    };
    let out = std::process::Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--enable-logging=stderr",
            "--virtual-time-budget=5000",
            "--dump-dom",
        ])
        .arg(format!("file://{}", page.display()))
        .output()
        .unwrap();
    let dom = String::from_utf8_lossy(&out.stdout);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        dom.contains(&format!("data-rows=\"{hosts}\"")),
        "expected {hosts} host rows; body: {:?}",
        dom.lines().find(|l| l.contains("<body"))
    );
    assert!(
        dom.contains("data-errors=\"0\""),
        "script errors on the page"
    );
    assert!(!log.contains("Uncaught"), "console errors: {log}");
    assert_eq!(dom.matches("class=\"host-row\"").count(), hosts);
}

#[tokio::test(flavor = "multi_thread")]
async fn replay_starts_from_the_snapshots_the_daemon_leaves_beside_its_database() {
    let dir = tempfile::tempdir().unwrap();
    let mut setup = demo::Setup::create(dir.path(), None, 16).unwrap();
    setup.config.replay_snapshot_every = 16;
    let (daemon, c) = setup.start().await.unwrap();
    let (body, _) = setup.signed_fleet().unwrap();
    c.ok(&setup.tokens.ci, "/v1/manifests/fleet", &body)
        .await
        .unwrap();
    let doc = setup
        .rollout_doc("stable", "a1a1a1a1", "/nix/store/t-stable", &setup.at(-10))
        .unwrap();
    let (body, _) = setup.sign(&doc).unwrap();
    c.ok(
        &setup.tokens.ci,
        "/v1/manifests/rollouts/stable@a1a1a1a1",
        &body,
    )
    .await
    .unwrap();
    // Heartbeats at the target: every host reports, so the log grows past a few multiples.
    for (host, token) in &setup.tokens.agents {
        let now = wire::ts::format(chrono::Utc::now().timestamp_micros());
        let hb = serde_json::json!({"hostname": host, "current_closure": "/nix/store/t-stable", "at": now});
        c.ok(token, "/v1/agent/heartbeat", &hb).await.unwrap();
    }
    daemon.shutdown().await.unwrap();

    let cache = engine::replay_cache::Cache::open(&setup.db);
    let marks = cache.marks().to_vec();
    assert!(marks.len() >= 2, "{marks:?}");
    let all = items(&setup.db);
    for m in &marks {
        // Each was taken at the end of the commit that crossed a multiple of 16.
        let r = forensics::replay(
            Source::Db(&setup.db),
            forensics::Point {
                seq: Some(m.seq - 1),
                time: None,
            },
            engine::replay_cache::SNAPSHOT_EVERY,
        )
        .unwrap();
        assert_eq!((r.from_snapshot, r.folded), (Some(m.seq), 0));
        let (want, omitted) = expected_at(&all, m.seq as usize);
        assert_eq!(r.state, want, "snapshot at {}", m.seq);
        assert_eq!(r.pruned_hosts_omitted, omitted);
    }
}
