//! Projections: incremental == rebuild == in-memory fold; the §9.4 rules; versioned folds;
//! `check` naming the first difference; a crash mid-append.

use std::path::Path;

use engine::materialize::{self, CheckOutcome, Ledger};
use fixtures::sim::{Group, Sim};
use ledger::store::Store;
use ledger::store::{NewEntry, ReadOnlyStore};
use ledger::tables::TableReader;
use ledger::tables::TableWriter;
use proptest::prelude::*;

const ORIGIN: &str = "test.example/cp";

fn signer() -> ledger::keys::Signer {
    fixtures::genesis_signer()
}

/// Appends the groups in batches of `batch` groups (each group stays whole).
fn append_all(ledger: &mut Ledger, groups: &[Group], batch: usize) {
    for chunk in groups.chunks(batch.max(1)) {
        let entries = fixtures::sim::entries(chunk);
        if !entries.is_empty() {
            ledger.append(entries).unwrap();
        }
    }
}

/// blake3 over every projection table's rows, in table and key order.
fn digest(path: &Path) -> blake3::Hash {
    let ro = ReadOnlyStore::open(path).unwrap();
    let snap = ro.snapshot().unwrap();
    let mut h = blake3::Hasher::new();
    for table in projections::tables::ALL
        .iter()
        .chain([&projections::tables::META])
    {
        h.update(table.as_bytes());
        snap.scan(table, &mut |k, v| {
            h.update(&(k.len() as u64).to_be_bytes());
            h.update(k);
            h.update(&(v.len() as u64).to_be_bytes());
            h.update(v);
            Ok(())
        })
        .unwrap();
    }
    h.finalize()
}

fn sim_ledger(path: &Path, seed: u64, ticks: usize, batch: usize) -> (Ledger, Sim) {
    let mut sim = Sim::new(seed, 24);
    let start = sim.now();
    let mut groups = Vec::new();
    for _ in 0..ticks {
        groups.extend(sim.tick());
    }
    let mut ledger = Ledger::create(path, ORIGIN, signer(), start).unwrap();
    append_all(&mut ledger, &groups, batch);
    (ledger, sim)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    /// Incremental materialisation in redb == the simulation's in-memory fold == a rebuild
    /// from the log, row by row and by digest, whatever the batching.
    #[test]
    fn incremental_equals_rebuild_equals_in_memory(seed in 1u64..1000, ticks in 20usize..250, batch in 1usize..40) {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("p.redb");
        let (ledger, sim) = sim_ledger(&path, seed, ticks, batch);
        prop_assert_eq!(ledger.state(), sim.state());
        let folded = materialize::fold_all(&ledger.store().snapshot().unwrap(), |_| {}).unwrap();
        prop_assert_eq!(&folded, ledger.state());
        drop(ledger);
        let outcome = materialize::check(&path, |_| {}).unwrap();
        prop_assert!(matches!(outcome, CheckOutcome::Identical { .. }), "check: {:?}", outcome);
        let before = digest(&path);
        materialize::rebuild(&path, |_| {}).unwrap();
        prop_assert_eq!(before, digest(&path), "a rebuild rewrites the same bytes");
        // Reopening loads the same state from the tables.
        let reopened = Ledger::open(&path, signer()).unwrap();
        prop_assert_eq!(reopened.state(), &folded);
    }
}

/// A heartbeat that names no rollout is about the active rollouts the host has a record in,
/// in opening order: the kept-up set of active rollouts gives what a scan of every rollout
/// gives, for every host, incrementally and after a reopen.
#[test]
fn the_active_rollouts_of_a_host_are_what_a_scan_of_every_rollout_finds() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("a.redb");
    let mut appended = Some(sim_ledger(&path, 7, 400, 10).0);
    // As appended (kept up entry by entry), then reopened (derived), then reopened live.
    for live in [false, false, true] {
        let ledger = match appended.take() {
            Some(l) => l,
            None if live => Ledger::open_live(&path, signer()).unwrap(),
            None => Ledger::open(&path, signer()).unwrap(),
        };
        let s = ledger.state();
        let mut rollouts: Vec<_> = s.rollouts.values().collect();
        rollouts.sort_by_key(|r| r.opened_seq);
        let hosts: std::collections::BTreeSet<&String> =
            s.hosts.iter().map(|((_, h), _)| h).collect();
        let (mut active, mut inactive) = (false, false);
        for host in hosts {
            let joined =
                |r: &&&projections::RolloutRecord| s.hosts.get(&r.rollout_id, host).is_some();
            let want: Vec<_> = rollouts
                .iter()
                .filter(joined)
                .filter(|r| r.is_active())
                .map(|r| &r.rollout_id)
                .collect();
            assert_eq!(
                s.active_rollouts_of(host).collect::<Vec<_>>(),
                want,
                "{host}"
            );
            active |= !want.is_empty();
            inactive |= rollouts.iter().filter(joined).any(|r| !r.is_active());
        }
        // (A live state holds no records of Pruned rollouts, the inactive ones here.)
        assert!(
            active && (inactive || live),
            "the simulation covers hosts of active and of inactive rollouts"
        );
    }
}

#[test]
fn a_failing_evidence_probe_with_an_observe_control_makes_exactly_one_row_at_its_seq() {
    use ledger::domain::{
        AgentReport, HostState, ProbeMode, ProbeStatus, ProbeSubResult, RolloutId,
    };
    use ledger::event::{Event, HostAssignment};
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("p.redb");
    let t0 = 1_767_225_600_000_000;
    let mut l = Ledger::create(&path, ORIGIN, signer(), t0).unwrap();
    let r = RolloutId::new("stable", "ab").unwrap();
    let host = HostAssignment {
        hostname: "web-01".into(),
        wave: 0,
        target_closure: "/nix/store/t".into(),
    };
    let open = planner::decide_open(l.state(), &r, [1; 32], &[host], &[]).unwrap();
    let append = |l: &mut Ledger, events: Vec<Event>| {
        let entries: Vec<NewEntry> = events
            .into_iter()
            .map(|event| NewEntry {
                recorded_at_us: t0,
                event,
            })
            .collect();
        l.append(entries).unwrap()
    };
    append(&mut l, open);
    let policy = planner::HostPolicy {
        on_health_failure: ledger::domain::OnHealthFailure::Halt,
    };
    let reports = [
        AgentReport::DispatchAck {
            current_closure_at_dispatch: "/nix/store/p".into(),
            received_at: t0,
        },
        AgentReport::ActivationCompleted {
            observed_current_closure: "/nix/store/t".into(),
            exit_code: 0,
            completed_at: t0,
        },
        AgentReport::ProbeResult {
            probe_name: "evidence-nis2".into(),
            mode: ProbeMode::Enforce,
            status: ProbeStatus::Fail,
            observed_at: t0,
            failure_reason: Some("2 controls failing".into()),
            sub_results: vec![
                ProbeSubResult {
                    control_id: "nis2.art21.a".into(),
                    status: ProbeStatus::Fail,
                    framework: "nis2-essential".into(),
                    article: Some("21".into()),
                    effective_mode: ProbeMode::Enforce,
                    override_reason: None,
                },
                ProbeSubResult {
                    control_id: "access-control".into(),
                    status: ProbeStatus::Fail,
                    framework: "nis2-essential".into(),
                    article: None,
                    effective_mode: ProbeMode::Observe,
                    override_reason: Some("accepted risk".into()),
                },
            ],
        },
    ];
    for (i, report) in reports.into_iter().enumerate() {
        let input = planner::HostInput::Agent {
            agent_seq: i as u64 + 1,
            report,
        };
        let events = planner::decide_report(l.state(), &r, "web-01", &input, t0, &policy).unwrap();
        append(&mut l, events);
    }
    assert_eq!(
        l.state()
            .hosts
            .get(&r, "web-01")
            .expect("web-01 joined")
            .state,
        HostState::Soaking
    );
    let rows: Vec<_> = l.state().probe_failures.iter().collect();
    assert_eq!(rows.len(), 1, "{rows:?}");
    let ((_, _, control), row) = rows[0];
    assert_eq!(control, "nis2.art21.a");
    // The row points at the seq of its own log entry.
    let bytes = l
        .store()
        .snapshot()
        .unwrap()
        .entry(row.created_seq)
        .unwrap()
        .unwrap();
    let event = ledger::entry::EntryRef::parse(&bytes)
        .unwrap()
        .event()
        .unwrap();
    assert!(
        matches!(event, Event::ProbeFailureRecorded(p) if p.control_id.as_deref() == Some("nis2.art21.a"))
    );
    // And the stored table says the same.
    drop(l);
    assert!(matches!(
        materialize::check(&path, |_| {}).unwrap(),
        CheckOutcome::Identical { .. }
    ));
}

/// Writes to a ledger's tables behind the fold's back, through the store's own table
/// interface (as a bug or a hand edit would).
fn tamper(path: &Path, f: impl FnOnce(&mut dyn TableWriter)) {
    let mut store = Store::open(path, signer()).unwrap();
    store
        .write_tables(|t| {
            f(t);
            Ok::<_, ledger::store::AppendError>(())
        })
        .unwrap();
}

/// The first row of a stored table.
fn first_row(path: &Path, table: &'static str) -> (Vec<u8>, Vec<u8>) {
    let ro = ReadOnlyStore::open(path).unwrap();
    let snap = ro.snapshot().unwrap();
    let mut first = None;
    snap.scan(table, &mut |k, v| {
        first.get_or_insert_with(|| (k.to_vec(), v.to_vec()));
        Ok(())
    })
    .unwrap();
    first.expect("a row")
}

fn rows(path: &Path, table: &'static str) -> usize {
    let ro = ReadOnlyStore::open(path).unwrap();
    let mut n = 0;
    ro.snapshot()
        .unwrap()
        .scan(table, &mut |_, _| {
            n += 1;
            Ok(())
        })
        .unwrap();
    n
}

#[test]
fn a_bumped_fold_version_or_a_lagging_watermark_is_repaired_on_open() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("p.redb");
    let (ledger, _) = sim_ledger(&path, 3, 120, 5);
    let expected = ledger.state().clone();
    drop(ledger);
    // Pretend the tables were written by fold version 0, with a table it wrote and this
    // version retired.
    let retired = projections::tables::RETIRED[0];
    tamper(&path, |t| {
        t.put(retired, b"k", b"v").unwrap();
        let old = projections::Watermark {
            fold_version: 0,
            next_seq: 1,
        };
        let bytes = bincode::serde::encode_to_vec(old, bincode::config::standard()).unwrap();
        t.put("proj.meta", b"watermark", &bytes).unwrap();
    });
    assert_eq!(rows(&path, retired), 1);
    assert!(matches!(
        materialize::check(&path, |_| {}).unwrap(),
        CheckOutcome::Stale { .. }
    ));
    let reopened = Ledger::open(&path, signer()).unwrap();
    assert_eq!(reopened.state(), &expected);
    drop(reopened);
    assert_eq!(
        rows(&path, retired),
        0,
        "the rebuild deletes a retired table"
    );
    assert!(matches!(
        materialize::check(&path, |_| {}).unwrap(),
        CheckOutcome::Identical { .. }
    ));

    // A ledger appended without projections (plain store) is caught up on open.
    let path2 = tmp.path().join("q.redb");
    let mut sim = Sim::new(4, 24);
    let start = sim.now();
    let groups: Vec<Group> = (0..80).flat_map(|_| sim.tick()).collect();
    let mut store = ledger::store::Store::create(&path2, ORIGIN, signer(), start).unwrap();
    for g in &groups {
        store.append(&fixtures::sim::entries([g])).unwrap();
    }
    drop(store);
    let caught_up = Ledger::open(&path2, signer()).unwrap();
    assert_eq!(caught_up.state(), sim.state());
}

#[test]
fn check_names_the_first_differing_table_and_key() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("p.redb");
    let (ledger, _) = sim_ledger(&path, 5, 60, 3);
    drop(ledger);
    let (k, mut v) = first_row(&path, "proj.hosts");
    *v.last_mut().unwrap() ^= 1;
    tamper(&path, |t| t.put("proj.hosts", &k, &v).unwrap());
    let outcome = materialize::check(&path, |_| {}).unwrap();
    let CheckOutcome::Differs { table, detail } = outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(table, "proj.hosts");
    assert!(detail.contains("stored row differs"), "{detail}");
    // (The CLI's one line for it: `server/tests/cli.rs`.) Rebuild repairs it.
    materialize::rebuild(&path, |_| {}).unwrap();
    assert!(matches!(
        materialize::check(&path, |_| {}).unwrap(),
        CheckOutcome::Identical { .. }
    ));
}

const CHILD_ENV: &str = "FLEET_LEDGER_PROJ_CRASH_DB";

/// Child side of the crash test: appends simulated groups through the materialised ledger.
#[test]
#[ignore = "child process of the crash test; run by it with --include-ignored"]
fn crash_child() {
    let Some(db) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let path = std::path::PathBuf::from(db);
    let mut sim = Sim::new(11, 30);
    let mut ledger = if path.exists() {
        Ledger::open(&path, signer()).unwrap()
    } else {
        Ledger::create(&path, ORIGIN, signer(), sim.now()).unwrap()
    };
    // Replay the simulation up to where the ledger is, so appends continue it.
    let mut skip = ledger.store().size() - 1;
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    loop {
        for g in sim.tick() {
            let n = g.events.len() as u64;
            if skip >= n {
                skip -= n;
                continue;
            }
            assert_eq!(skip, 0, "groups are appended whole");
            ledger.append(fixtures::sim::entries([&g])).unwrap();
            writeln!(out, "committed {}", ledger.store().size()).unwrap();
            out.flush().unwrap();
        }
    }
}

#[test]
fn a_crash_mid_append_leaves_projections_equal_to_a_fold_of_the_committed_log() {
    use std::io::{BufRead, BufReader};
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("crash.redb");
    let exe = std::env::current_exe().unwrap();
    let mut acknowledged = 0u64;
    for round in 0..3u64 {
        let mut child = std::process::Command::new(&exe)
            .args([
                "crash_child",
                "--exact",
                "--include-ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, &db)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut max = 0u64;
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(n) = line.strip_prefix("committed ") {
                    max = max.max(n.parse().unwrap());
                }
            }
            max
        });
        std::thread::sleep(std::time::Duration::from_millis(400 + 150 * round));
        child.kill().unwrap();
        child.wait().unwrap();
        acknowledged = acknowledged.max(reader.join().unwrap());
        let ledger = Ledger::open(&db, signer()).unwrap();
        assert!(
            ledger.store().size() >= acknowledged,
            "round {round}: lost acknowledged entries"
        );
        let folded = materialize::fold_all(&ledger.store().snapshot().unwrap(), |_| {}).unwrap();
        assert_eq!(&folded, ledger.state());
        drop(ledger);
        assert!(matches!(
            materialize::check(&db, |_| {}).unwrap(),
            CheckOutcome::Identical { .. }
        ));
    }
    assert!(acknowledged > 1, "the child never committed");
}

#[test]
fn a_live_ledger_keeps_pruned_rollouts_out_of_memory_but_in_the_tables() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("l.redb");
    let mut sim = Sim::new(7, 24);
    let start = sim.now();
    let mut first = Vec::new();
    for _ in 0..1500 {
        first.extend(sim.tick());
    }
    let mut full = Ledger::create(&path, ORIGIN, signer(), start).unwrap();
    append_all(&mut full, &first, 7);
    drop(full);

    let mut live = Ledger::open_live(&path, signer()).unwrap();
    let pruned: Vec<_> = live
        .state()
        .rollouts
        .values()
        .filter(|r| r.state == ledger::domain::RolloutState::Pruned)
        .map(|r| r.rollout_id.clone())
        .collect();
    assert!(
        !pruned.is_empty(),
        "the simulation should prune some rollouts"
    );
    // More history through the live ledger, pruning more rollouts as it goes.
    let mut more = Vec::new();
    for _ in 0..1500 {
        more.extend(sim.tick());
    }
    append_all(&mut live, &more, 5);
    let now_pruned = live
        .state()
        .rollouts
        .values()
        .filter(|r| r.state == ledger::domain::RolloutState::Pruned)
        .count();
    assert!(now_pruned > pruned.len(), "more rollouts pruned while live");
    // In memory: exactly the simulation's fold without the pruned rollouts' host rows.
    let s = live.state();
    let expect = sim.state();
    assert!(s.hosts.len() < expect.hosts.len());
    for ((r, h), rec) in expect.hosts.iter() {
        let dead = expect.rollouts[r].state == ledger::domain::RolloutState::Pruned;
        assert_eq!(s.hosts.get(r, h).is_none(), dead, "{r} {h}");
        if !dead {
            assert_eq!(s.hosts.get(r, h), Some(rec));
        }
    }
    assert_eq!(s.rollouts, expect.rollouts);
    assert_eq!(s.dispatch_queue, expect.dispatch_queue);
    assert_eq!(s.deferrals, expect.deferrals);
    drop(live);
    // On disk: every row, equal to a fold of the log.
    assert!(matches!(
        materialize::check(&path, |_| {}).unwrap(),
        CheckOutcome::Identical { .. }
    ));
}

#[test]
fn check_finds_a_missing_entry_index_row_and_rebuild_restores_it() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("p.redb");
    // More than one index block, so appends write index rows.
    let mut sim = Sim::new(9, 24);
    let start = sim.now();
    let groups = sim.run(projections::INDEX_BLOCK + 5_000);
    let mut ledger = Ledger::create(&path, ORIGIN, signer(), start).unwrap();
    append_all(&mut ledger, &groups, 40);
    drop(ledger);
    assert!(matches!(
        materialize::check(&path, |_| {}).unwrap(),
        CheckOutcome::Identical { .. }
    ));
    // A timeline through the index (and the scanned tail past it) equals a full scan.
    let host = Some("web-0005".to_string());
    let f = engine::forensics::Filter {
        host,
        ..Default::default()
    };
    let by_index = engine::forensics::timeline(engine::forensics::Source::Db(&path), &f).unwrap();
    let scanned: Vec<u64> = engine::forensics::entries(engine::forensics::Source::Db(&path))
        .unwrap()
        .map(Result::unwrap)
        .filter(|i| i.event.subject().1 == Some("web-0005"))
        .map(|i| i.seq)
        .collect();
    assert!(by_index.iter().any(|l| l.seq < projections::INDEX_BLOCK));
    assert!(by_index.iter().any(|l| l.seq >= projections::INDEX_BLOCK));
    assert_eq!(by_index.iter().map(|l| l.seq).collect::<Vec<_>>(), scanned);
    let (removed, _) = first_row(&path, projections::tables::HOST_ENTRIES);
    tamper(&path, |t| {
        t.delete(projections::tables::HOST_ENTRIES, &removed)
            .unwrap()
    });
    let outcome = materialize::check(&path, |_| {}).unwrap();
    let CheckOutcome::Differs { table, detail } = outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(table, projections::tables::HOST_ENTRIES);
    // Block 0 of some host: the detail names them.
    assert_eq!(removed[..8], [0; 8]);
    let host: String = projections::model::decode("", &removed[8..]).unwrap();
    assert!(
        detail.contains(&format!("host Some({host:?}) block 0 missing")),
        "{detail}"
    );
    materialize::rebuild(&path, |_| {}).unwrap();
    assert!(matches!(
        materialize::check(&path, |_| {}).unwrap(),
        CheckOutcome::Identical { .. }
    ));
}

/// Rebuild and check settle rows as they fold (a Pruned rollout's host records, complete
/// index blocks) so their memory follows the live fleet: on a log that prunes rollouts over
/// several index blocks, a rebuild still rewrites the same bytes, and check still finds a
/// changed, a foreign and a missing row wherever they are.
#[test]
fn streaming_rebuild_and_check_see_every_row_of_pruned_rollouts_and_past_blocks() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("p.redb");
    let mut sim = Sim::new(21, 24);
    let start = sim.now();
    let groups = sim.run(3 * projections::INDEX_BLOCK + 500);
    let mut ledger = Ledger::create(&path, ORIGIN, signer(), start).unwrap();
    append_all(&mut ledger, &groups, 40);
    let pruned: Vec<_> = ledger
        .state()
        .rollouts
        .values()
        .filter(|r| r.state == ledger::domain::RolloutState::Pruned)
        .map(|r| r.rollout_id.clone())
        .collect();
    assert!(pruned.len() >= 2, "the log must prune rollouts: {pruned:?}");
    drop(ledger);
    let identical = |path: &Path| {
        matches!(
            materialize::check(path, |_| {}).unwrap(),
            CheckOutcome::Identical { .. }
        )
    };
    assert!(identical(&path));
    let before = digest(&path);
    materialize::rebuild(&path, |_| {}).unwrap();
    assert_eq!(
        before,
        digest(&path),
        "a streaming rebuild rewrites the same bytes"
    );
    // Committed in chunks that end between settle points and index blocks: the same bytes.
    materialize::rebuild_in_chunks(&path, 1_000, |_| {}).unwrap();
    assert_eq!(before, digest(&path), "a rebuild in chunks");
    assert!(identical(&path));

    let differs = |path: &Path| match materialize::check(path, |_| {}).unwrap() {
        CheckOutcome::Differs { table, detail } => (table, detail),
        other => panic!("{other:?}"),
    };
    // A host record of the first rollout pruned (compared when it was pruned).
    let ro = ReadOnlyStore::open(&path).unwrap();
    let mut found = None;
    ro.snapshot()
        .unwrap()
        .scan_prefix(
            projections::tables::HOSTS,
            &projections::model::encode(&pruned[0]),
            &mut |k, v| {
                found.get_or_insert_with(|| (k.to_vec(), v.to_vec()));
                Ok(())
            },
        )
        .unwrap();
    drop(ro);
    let (key, mut row) = found.expect("a pruned rollout's records stay in the table");
    let (_, host): (ledger::domain::RolloutId, String) =
        projections::model::decode("", &key).unwrap();
    *row.last_mut().unwrap() ^= 1;
    tamper(&path, |t| {
        t.put(projections::tables::HOSTS, &key, &row).unwrap()
    });
    let (table, detail) = differs(&path);
    assert_eq!(table, projections::tables::HOSTS);
    assert!(
        detail.contains(&host) && detail.contains("differs"),
        "{detail}"
    );
    materialize::rebuild(&path, |_| {}).unwrap();
    assert!(identical(&path));

    // A record the fold never made, in a pruned rollout, and one in a rollout never opened.
    for rollout in [
        pruned[1].clone(),
        ledger::domain::RolloutId::new("nowhere", "00000000").unwrap(),
    ] {
        let key = projections::model::encode(&(&rollout, "web-9999"));
        tamper(&path, |t| {
            t.put(projections::tables::HOSTS, &key, &row).unwrap()
        });
        let (table, detail) = differs(&path);
        assert_eq!(table, projections::tables::HOSTS);
        assert!(detail.contains("web-9999"), "{detail}");
        tamper(&path, |t| {
            t.delete(projections::tables::HOSTS, &key).unwrap()
        });
        assert!(identical(&path));
    }

    // An index row of block 2 missing, and one past the index's watermark.
    let mut block2 = None;
    let ro = ReadOnlyStore::open(&path).unwrap();
    ro.snapshot()
        .unwrap()
        .scan_prefix(
            projections::tables::HOST_ENTRIES,
            &2u64.to_be_bytes(),
            &mut |k, v| {
                block2.get_or_insert_with(|| (k.to_vec(), v.to_vec()));
                Ok(())
            },
        )
        .unwrap();
    drop(ro);
    let (k, v) = block2.expect("block 2 is written");
    tamper(&path, |t| {
        t.delete(projections::tables::HOST_ENTRIES, &k).unwrap()
    });
    let (table, detail) = differs(&path);
    assert_eq!(table, projections::tables::HOST_ENTRIES);
    assert!(detail.contains("block 2 missing"), "{detail}");
    tamper(&path, |t| {
        t.put(projections::tables::HOST_ENTRIES, &k, &v).unwrap()
    });
    assert!(identical(&path));
    let mut stray = 9u64.to_be_bytes().to_vec();
    stray.extend_from_slice(&k[8..]);
    tamper(&path, |t| {
        t.put(projections::tables::HOST_ENTRIES, &stray, &v)
            .unwrap()
    });
    let (table, detail) = differs(&path);
    assert_eq!(table, projections::tables::HOST_ENTRIES);
    assert!(detail.contains("block 9 not in the log"), "{detail}");
}

/// A rebuild commits in chunks (its memory would otherwise grow with one transaction's size):
/// one cut short after some of them leaves tables that no reader takes as current, and the
/// next open rewrites them to the same bytes.
#[test]
fn a_rebuild_cut_short_leaves_stale_tables_that_the_next_open_rewrites() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("p.redb");
    let mut sim = Sim::new(22, 24);
    let start = sim.now();
    let groups = sim.run(projections::INDEX_BLOCK + 3_000);
    let mut ledger = Ledger::create(&path, ORIGIN, signer(), start).unwrap();
    append_all(&mut ledger, &groups, 40);
    let size = ledger.store().size();
    drop(ledger);
    let before = digest(&path);

    // Dies (as a SIGKILL would) once four chunks of 1,000 entries are committed.
    let cut = std::panic::catch_unwind(|| {
        materialize::rebuild_in_chunks(&path, 1_000, |n| {
            assert!(n < 5_000, "cut short");
        })
    });
    assert!(cut.is_err());
    let outcome = materialize::check(&path, |_| {}).unwrap();
    assert!(
        matches!(&outcome, CheckOutcome::Stale { detail } if detail.contains("no projection watermark")),
        "{outcome:?}"
    );
    assert_ne!(before, digest(&path), "the committed chunks are there");

    let ledger = Ledger::open(&path, signer()).unwrap();
    assert_eq!(ledger.store().size(), size);
    drop(ledger);
    assert_eq!(before, digest(&path), "the open rewrote the same tables");
    assert!(matches!(
        materialize::check(&path, |_| {}).unwrap(),
        CheckOutcome::Identical { .. }
    ));
}
