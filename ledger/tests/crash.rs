//! Crash test: a child process appends in a loop and reports each durable commit; the parent
//! SIGKILLs it at random moments, reopens, and checks that everything reported is there and
//! the ledger verifies. The child is this same test binary, re-run on `crash_child`.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use ledger::store::{ReadOnlyStore, Store};

const CHILD_ENV: &str = "FLEET_LEDGER_CRASH_CHILD_DB";

/// Runs only as the child (when the parent sets the environment variable).
#[test]
#[ignore = "child process of the crash test; run by it with --include-ignored"]
fn crash_child() {
    let Some(db) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let db = std::path::PathBuf::from(db);
    let mut store = if db.exists() {
        Store::open(&db, signer_a()).unwrap()
    } else {
        Store::create(&db, ORIGIN, signer_a(), T0).unwrap()
    };
    // A tail the killed run left (the parent checked it): dropped, as a writer whose swap
    // never landed moves its tail aside.
    store.drop_tail().unwrap();
    let mut out = std::io::stdout().lock();
    for round in 0u64.. {
        let n = 1 + round % 50;
        let start = store.size();
        // Every third batch goes through the unsigned tail first (issue 29's order), and the
        // tail's durability is reported as a commit is.
        if round % 3 == 0 {
            let cp = store.write_tail(&batch(start, n)).unwrap();
            writeln!(out, "tailed {}", cp.size).unwrap();
            out.flush().unwrap();
        }
        store.append(&batch(start, n)).unwrap();
        // Report only after append returned: i.e. after the durable commit.
        writeln!(out, "committed {}", store.size()).unwrap();
        out.flush().unwrap();
    }
}

#[test]
fn sigkill_during_appends_loses_nothing_acknowledged() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("crash.redb");
    let exe = std::env::current_exe().unwrap();
    let mut acknowledged = 0u64;
    for round in 0..4u64 {
        let mut child = Command::new(&exe)
            .args([
                "crash_child",
                "--exact",
                "--include-ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, &db)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let (mut max, mut tailed) = (0u64, 0u64);
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(n) = line.strip_prefix("committed ") {
                    max = max.max(n.parse().unwrap());
                }
                if let Some(n) = line.strip_prefix("tailed ") {
                    tailed = tailed.max(n.parse().unwrap());
                }
            }
            (max, tailed)
        });
        // Let it get going, then kill it at a varying moment.
        let deadline = Instant::now() + Duration::from_millis(300 + 170 * round);
        while Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        child.kill().unwrap(); // SIGKILL on Unix
        child.wait().unwrap();
        let (reported, tailed) = reader.join().unwrap();
        assert!(reported >= acknowledged, "child reported going backwards");
        acknowledged = reported;

        // Reopen (redb recovers), then check with a read-only verifier. A reported tail is
        // in the log by now, or still the pending tail, whole.
        let store = Store::open(&db, signer_a()).unwrap();
        assert!(
            store.size() >= acknowledged,
            "round {round}: {acknowledged} entries acknowledged, {} present",
            store.size()
        );
        let tail = store.tail().unwrap();
        if let Some((first, _)) = tail.first() {
            assert_eq!(*first, store.size(), "a tail extends the log");
        }
        assert!(
            store.size() + tail.len() as u64 >= tailed,
            "round {round}: a tail to {tailed} was reported durable; log {} + tail {}",
            store.size(),
            tail.len()
        );
        drop(store);
        let log = ReadOnlyStore::open(&db)
            .unwrap()
            .snapshot()
            .unwrap()
            .verify(signer_a().public(), |_| {})
            .unwrap();
        assert!(log.size() >= acknowledged);
    }
    assert!(acknowledged > 0, "the child never committed anything");
}
