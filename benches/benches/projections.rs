//! Projection benchmarks, each against its baseline in the same run:
//!
//! * `rebuild/fold_1m`: folding a realistic log (the deterministic fleet simulation) from
//!   empty, entries per second.
//! * `append_1000/*`: durable appends of 1000 simulated entries per commit, with the
//!   projections folded and written in the same transaction, and without them.
//! * `incumbent/*`: the reference applier's pattern on SQLite (WAL): an `event_log` row and the
//!   derived-table rows in separate transactions per event, with `synchronous=FULL` and
//!   `NORMAL`; and the same pattern batched 1000 events per transaction (its best case).
//!
//! `FLEET_BENCH_REBUILD_ENTRIES` sets the rebuild log size (default 1,000,000). The simulated
//! log is generated once and cached under `target/bench-scratch/`.

use std::path::Path;
use std::time::Duration;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use engine::materialize;
use ledger::event::Event;
use ledger::store::{NewEntry, ReadOnlyStore};

use fleet_ledger_benches::{batches, cached_log, ledger_pair, scratch};

/// The allocator the `fleet-ledger` binary runs with, so the library is measured as it ships.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn rebuild(c: &mut Criterion) {
    let n: u64 = fleet_ledger_benches::env_or("FLEET_BENCH_REBUILD_ENTRIES", 1_000_000);
    let path = cached_log(n);
    let ro = ReadOnlyStore::open(&path).expect("open");
    let snap = ro.snapshot().expect("snapshot");
    let mut g = c.benchmark_group("rebuild");
    g.sample_size(10).measurement_time(Duration::from_secs(20));
    g.throughput(Throughput::Elements(snap.size()));
    // Freeing the folded state is not part of a rebuild (its rows are written, then the
    // process moves on), so it is kept out of the timing.
    g.bench_function("fold_1m", |b| {
        b.iter_with_large_drop(|| materialize::fold_all(&snap, |_| {}).expect("fold"))
    });
    g.finish();
}

fn append(c: &mut Criterion) {
    // Enough fresh batches that neither ledger ever sees the stream twice: replaying it would
    // turn most joins into no-ops and flatter the projections.
    let (start, stream) = batches(500_000, 2000);
    let dir = tempfile::tempdir_in(scratch()).expect("tempdir");
    let mut g = c.benchmark_group("append_1000");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    g.throughput(Throughput::Elements(1000));

    let (mut with, mut without) = ledger_pair(dir.path(), start);
    let mut i = 0usize;
    // The batch is copied (and moved in time) outside the timing: the copy is the harness's.
    g.bench_function("with_projections", |b| {
        b.iter_batched(
            || {
                i += 1;
                shifted(&stream[(i - 1) % stream.len()], i, stream.len())
            },
            |batch| with.append(batch).expect("append"),
            BatchSize::PerIteration,
        )
    });
    let mut j = 0usize;
    g.bench_function("without_projections", |b| {
        b.iter_batched(
            || {
                j += 1;
                shifted(&stream[(j - 1) % stream.len()], j, stream.len())
            },
            |batch| without.append(&batch).expect("append"),
            BatchSize::PerIteration,
        )
    });
    g.finish();

    incumbent(c, &stream);
}

/// The stream replayed again after it wraps around, moved later in time so CP time never
/// goes backwards. (Sized so that it does not wrap; a warning says when it does.)
fn shifted(batch: &[NewEntry], i: usize, len: usize) -> Vec<NewEntry> {
    let lap = ((i - 1) / len) as i64;
    if lap > 0 && (i - 1).is_multiple_of(len) {
        eprintln!("warning: the append stream wrapped around; later figures replay it");
    }
    batch
        .iter()
        .map(|e| NewEntry {
            recorded_at_us: e.recorded_at_us + lap * 10_000_000_000_000,
            event: e.event.clone(),
        })
        .collect()
}

/// The reference applier's schema (DOMAIN §5), trimmed to the tables its events touch.
const SCHEMA: &str = "
PRAGMA journal_mode=WAL;
CREATE TABLE event_log (seq INTEGER PRIMARY KEY AUTOINCREMENT, ts TEXT NOT NULL, host_id TEXT,
  rollout_id TEXT, kind TEXT NOT NULL, payload TEXT NOT NULL);
CREATE INDEX event_log_host ON event_log(host_id, ts) WHERE host_id IS NOT NULL;
CREATE INDEX event_log_rollout ON event_log(rollout_id, seq) WHERE rollout_id IS NOT NULL;
CREATE TABLE host_rollout_records (rollout_id TEXT NOT NULL, hostname TEXT NOT NULL,
  state TEXT NOT NULL, payload TEXT NOT NULL, last_event_seq INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY (rollout_id, hostname));
CREATE TABLE rollouts (rollout_id TEXT PRIMARY KEY, state TEXT NOT NULL, current_wave INTEGER NOT NULL DEFAULT 0);
CREATE TABLE probe_failures (event_log_seq INTEGER, rollout_id TEXT NOT NULL, host_id TEXT NOT NULL,
  probe_name TEXT NOT NULL, control_id TEXT, observed_at TEXT NOT NULL);
CREATE TABLE dispatch_queue (hostname TEXT NOT NULL, rollout_id TEXT NOT NULL, target_closure TEXT NOT NULL,
  soak_due_at TEXT NOT NULL, PRIMARY KEY (hostname, rollout_id));
CREATE TABLE quarantined_closures (channel TEXT NOT NULL, closure_hash TEXT NOT NULL,
  PRIMARY KEY (channel, closure_hash));
";

fn sqlite(path: &Path, synchronous: &str) -> rusqlite::Connection {
    let _ = std::fs::remove_file(path);
    let conn = rusqlite::Connection::open(path).expect("open sqlite");
    conn.execute_batch(SCHEMA).expect("schema");
    conn.pragma_update(None, "synchronous", synchronous)
        .expect("pragma");
    conn
}

/// One event the way the reference applier writes it: the log row, then the derived rows.
fn write_log(tx: &rusqlite::Connection, e: &NewEntry) {
    let (host, rollout) = match &e.event {
        Event::AgentEventRecorded(a) => (Some(a.hostname.clone()), Some(a.rollout_id.to_string())),
        Event::HostTransitioned(a) => (Some(a.hostname.clone()), Some(a.rollout_id.to_string())),
        Event::DispatchQueued(a) => (Some(a.hostname.clone()), Some(a.rollout_id.to_string())),
        Event::GateDecision(a) => (Some(a.hostname.clone()), Some(a.rollout_id.to_string())),
        Event::RolloutTransitioned(a) => (None, Some(a.rollout_id.to_string())),
        _ => (None, None),
    };
    tx.execute(
        "INSERT INTO event_log (ts, host_id, rollout_id, kind, payload) VALUES (?1, ?2, ?3, ?4, ?5)",
        rusqlite::params![e.recorded_at_us.to_string(), host, rollout, e.event.kind().name(), format!("{:?}", e.event)],
    )
    .expect("insert log");
}

fn write_derived(tx: &rusqlite::Connection, e: &NewEntry) {
    match &e.event {
        Event::HostJoined(j) => {
            tx.execute(
                "INSERT OR REPLACE INTO host_rollout_records (rollout_id, hostname, state, payload) VALUES (?1, ?2, 'Pending', ?3)",
                rusqlite::params![j.rollout_id.to_string(), j.host.hostname, format!("{:?}", j.host)],
            )
            .expect("derived");
        }
        Event::AgentEventRecorded(a) => {
            tx.execute(
                "UPDATE host_rollout_records SET payload = ?3, last_event_seq = ?4 WHERE rollout_id = ?1 AND hostname = ?2",
                rusqlite::params![a.rollout_id.to_string(), a.hostname, format!("{:?}", a.report), a.agent_seq as i64],
            )
            .expect("derived");
        }
        Event::HostTransitioned(t) => {
            tx.execute(
                "UPDATE host_rollout_records SET state = ?3 WHERE rollout_id = ?1 AND hostname = ?2",
                rusqlite::params![t.rollout_id.to_string(), t.hostname, format!("{:?}", t.to)],
            )
            .expect("derived");
        }
        Event::RolloutOpened(o) => {
            tx.execute(
                "INSERT OR IGNORE INTO rollouts (rollout_id, state) VALUES (?1, 'Opening')",
                rusqlite::params![o.rollout_id.to_string()],
            )
            .expect("derived");
        }
        Event::RolloutTransitioned(t) => {
            tx.execute(
                "UPDATE rollouts SET state = ?2 WHERE rollout_id = ?1",
                rusqlite::params![t.rollout_id.to_string(), format!("{:?}", t.to)],
            )
            .expect("derived");
        }
        Event::WaveAdvanced(w) => {
            tx.execute(
                "UPDATE rollouts SET current_wave = ?2 WHERE rollout_id = ?1",
                rusqlite::params![w.rollout_id.to_string(), w.to_wave],
            )
            .expect("derived");
        }
        Event::ProbeFailureRecorded(p) => {
            tx.execute(
                "INSERT INTO probe_failures (event_log_seq, rollout_id, host_id, probe_name, control_id, observed_at) VALUES (NULL, ?1, ?2, ?3, ?4, ?5)",
                rusqlite::params![p.rollout_id.to_string(), p.hostname, p.probe_name, p.control_id, p.observed_at.to_string()],
            )
            .expect("derived");
        }
        Event::DispatchQueued(d) => {
            tx.execute(
                "INSERT OR REPLACE INTO dispatch_queue (hostname, rollout_id, target_closure, soak_due_at) VALUES (?1, ?2, ?3, ?4)",
                rusqlite::params![d.hostname, d.rollout_id.to_string(), d.target_closure, d.soak_due_at.to_string()],
            )
            .expect("derived");
        }
        Event::DispatchDelivered(d) => {
            tx.execute(
                "DELETE FROM dispatch_queue WHERE hostname = ?1 AND rollout_id = ?2",
                rusqlite::params![d.hostname, d.rollout_id.to_string()],
            )
            .expect("derived");
        }
        Event::QuarantineAdded(q) => {
            tx.execute(
                "INSERT OR IGNORE INTO quarantined_closures (channel, closure_hash) VALUES (?1, ?2)",
                rusqlite::params![q.channel, q.closure],
            )
            .expect("derived");
        }
        _ => {}
    }
}

fn incumbent(c: &mut Criterion, stream: &[Vec<NewEntry>]) {
    let events: Vec<&NewEntry> = stream.iter().flatten().collect();
    let dir = tempfile::tempdir_in(scratch()).expect("tempdir");
    let mut g = c.benchmark_group("incumbent");
    g.sample_size(10).measurement_time(Duration::from_secs(10));
    for sync in ["FULL", "NORMAL"] {
        let mut conn = sqlite(&dir.path().join(format!("per-event-{sync}.db")), sync);
        let mut k = 0usize;
        g.throughput(Throughput::Elements(100));
        g.bench_function(format!("sqlite_{sync}_per_event"), |b| {
            b.iter(|| {
                for _ in 0..100 {
                    let e = events[k % events.len()];
                    k += 1;
                    // Separate transactions, as the applier does: log row, then derived rows.
                    let tx = conn.transaction().expect("tx");
                    write_log(&tx, e);
                    tx.commit().expect("commit");
                    let tx = conn.transaction().expect("tx");
                    write_derived(&tx, e);
                    tx.commit().expect("commit");
                }
            })
        });
    }
    let mut conn = sqlite(&dir.path().join("batched.db"), "FULL");
    let mut k = 0usize;
    g.throughput(Throughput::Elements(1000));
    g.bench_function("sqlite_FULL_batched_1000", |b| {
        b.iter(|| {
            let tx = conn.transaction().expect("tx");
            for _ in 0..1000 {
                let e = events[k % events.len()];
                k += 1;
                write_log(&tx, e);
                write_derived(&tx, e);
            }
            tx.commit().expect("commit");
        })
    });
    g.finish();
}

criterion_group!(benches, append, rebuild);
criterion_main!(benches);
