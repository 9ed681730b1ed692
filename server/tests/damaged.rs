//! Issue 13, defect 3: every command given a damaged database file exits 1 or 2 with one line
//! that names the file, never a panic and a backtrace (exit 101), and `serve` never dies with
//! "task panicked".
//!
//! The damaged files are `fixtures/redb-panics/base.redb` with one byte changed: one mutation
//! for each of the places redb 4.6.0 itself panics when such a file is opened read-only and
//! read (found by `benches/examples/redb_mutations.rs`; see the fixture's README).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{EXE, Proc, free_port};

struct Mutation {
    site: String,
    offset: usize,
    to: u8,
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/redb-panics")
        .join(name)
}

fn mutations() -> Vec<Mutation> {
    let text = std::fs::read_to_string(fixture("mutations.tsv")).unwrap();
    text.lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            Mutation {
                site: f[0].to_string(),
                offset: f[1].parse().unwrap(),
                to: f[3].parse().unwrap(),
            }
        })
        .collect()
}

/// One failure line on stderr that names the file; exit 1 or 2.
fn one_line_naming(out: &Output, file: &Path, what: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    let code = out.status.code();
    assert!(
        matches!(code, Some(1) | Some(2)),
        "{what}: exit {:?}\n{stderr}",
        out.status
    );
    assert_eq!(stderr.trim_end().lines().count(), 1, "{what}: {stderr}");
    assert!(
        stderr.contains(&file.display().to_string()),
        "{what}: the line does not name the file: {stderr}"
    );
}

/// Starts `serve` on `db`: `None` once it listens (the `Proc` guard stops it), or its exit
/// status and stderr if it exits first.
fn serve_outcome(db: &Path, config: &Path) -> Option<(std::process::ExitStatus, String)> {
    let port = free_port();
    let mut child = Proc(
        Command::new(EXE)
            .args(["serve", "--db"])
            .arg(db)
            .args(["--listen", &format!("127.0.0.1:{port}"), "--config"])
            .arg(config)
            .env("RUST_LOG", "error")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() || Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    use std::io::Read as _;
    child
        .0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    Some((status, stderr))
}

fn run(args: &[&str]) -> Output {
    Command::new(EXE).args(args).output().unwrap()
}

#[test]
fn every_command_reports_a_damaged_file_in_one_line() {
    let base = std::fs::read(fixture("base.redb")).unwrap();
    let key = fixture("base.pub");
    let key = key.to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ms = mutations();
    assert!(ms.len() >= 7, "the fixture lists {} sites", ms.len());
    let (mut failed_cleanly, mut passed) = (0, 0);
    for m in &ms {
        let db = dir.path().join(format!("damaged-{}.redb", m.offset));
        let mut bytes = base.clone();
        bytes[m.offset] = m.to;
        std::fs::write(&db, &bytes).unwrap();
        let d = db.to_str().unwrap();
        let out_file = dir.path().join(format!("export-{}.bundle", m.offset));
        let commands: Vec<Vec<&str>> = vec![
            vec!["verify", "--db", d, "--key", key],
            vec!["check", "--db", d],
            vec!["export", "--db", d, "--out", out_file.to_str().unwrap()],
            vec!["prove", "inclusion", "--db", d, "--seq", "1"],
            vec!["replay", "--db", d, "--check"],
            vec!["replay", "--db", d, "--at-seq", "5"],
            vec!["timeline", "--db", d, "--host", "web-0003"],
        ];
        for args in commands {
            let out = run(&args);
            let what = format!("{} ({}): {args:?}", m.site, m.offset);
            if out.status.success() {
                // The byte is one this command never reads (another table, a free page).
                passed += 1;
                continue;
            }
            one_line_naming(&out, &db, &what);
            failed_cleanly += 1;
        }
        // verify reads every entry and checks every page: it never passes a damaged file
        // unless the byte is unused, and says so in one line when it fails.
        let _ = std::fs::remove_file(&out_file);
        assert_eq!(
            std::fs::read(&db).unwrap(),
            bytes,
            "a command wrote the file"
        );
    }
    assert!(
        failed_cleanly > ms.len(),
        "{failed_cleanly} clean failures, {passed} passes"
    );
}

/// `serve` on a damaged file either starts (the damage is somewhere it never reads) or exits
/// non-zero, its last line naming the file; never with a raw panic report.
#[test]
fn serve_refuses_a_damaged_file_in_one_line() {
    let base = std::fs::read(fixture("base.redb")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    for f in ["base.key", "config.json"] {
        std::fs::copy(fixture(f), dir.path().join(f)).unwrap();
    }
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(
        dir.path().join("base.key"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let config = dir.path().join("config.json");
    let mut refused = 0;
    for m in mutations() {
        let db = dir.path().join(format!("damaged-{}.redb", m.offset));
        let mut bytes = base.clone();
        bytes[m.offset] = m.to;
        std::fs::write(&db, &bytes).unwrap();
        let Some((status, stderr)) = serve_outcome(&db, &config) else {
            continue; // it serves
        };
        refused += 1;
        assert_eq!(status.code(), Some(2), "{}: {stderr}", m.site);
        let last = stderr.trim_end().lines().last().unwrap_or("");
        assert!(
            last.starts_with("error: ") && last.contains(&db.display().to_string()),
            "{}: {stderr}",
            m.site
        );
        assert!(!stderr.contains("RUST_BACKTRACE"), "{}: {stderr}", m.site);
    }
    assert!(refused > 0, "no damaged file was refused");
}

/// Issue 26, defect 2: `fixtures/redb-abort/` is a cleanly closed ledger with one byte changed
/// in redb's freed-page tree. redb 4.6 *aborts* (SIGABRT, exit 134) on it where it commits or
/// closes: a panic, then a second panic in a destructor during the unwind, which no
/// `catch_unwind` contains. Every command exits 0, 1 or 2 on it (one line naming the file when
/// it fails), none writes it, and `serve` refuses it at start in one line instead of
/// aborting on its first agent report.
#[test]
fn a_file_redb_aborts_on_is_refused_by_every_command_in_one_line() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/redb-abort");
    let dir = tempfile::tempdir().unwrap();
    let original = std::fs::read(fixtures.join("db-126978.redb")).unwrap();
    let db = dir.path().join("damaged.redb");
    let d = db.to_str().unwrap();
    let key = fixtures.join("cp.pub");
    let key = key.to_str().unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    for f in ["cp.key", "config.json"] {
        std::fs::copy(fixtures.join(f), dir.path().join(f)).unwrap();
    }
    let private = dir.path().join("cp.key");
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o600)).unwrap();
    let keys = dir.path().join("keys");
    assert!(
        run(&["keygen", "--out", keys.to_str().unwrap(), "--name", "next"])
            .status
            .success()
    );
    let next = keys.join("next.key");
    let out_file = dir.path().join("export.bundle");
    let commands: Vec<Vec<&str>> = vec![
        vec!["verify", "--db", d, "--key", key],
        vec!["check", "--db", d],
        vec!["export", "--db", d, "--out", out_file.to_str().unwrap()],
        vec!["prove", "inclusion", "--db", d, "--seq", "1"],
        vec!["replay", "--db", d, "--check"],
        vec!["replay", "--db", d, "--at-seq", "5"],
        vec!["timeline", "--db", d, "--host", "web-0003"],
        vec!["rebuild", "--db", d],
        vec!["compact", "--db", d],
        vec![
            "rotate-key",
            "--db",
            d,
            "--key",
            private.to_str().unwrap(),
            "--to",
            next.to_str().unwrap(),
            "--reason",
            "test",
        ],
    ];
    let mut refused = Vec::new();
    for args in commands {
        std::fs::write(&db, &original).unwrap();
        let out = run(&args);
        assert!(
            matches!(out.status.code(), Some(0..=2)),
            "{args:?}: {:?}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        if !out.status.success() {
            one_line_naming(&out, &db, &format!("{args:?}"));
            refused.push(args[0]);
        }
        assert!(
            std::fs::read(&db).unwrap() == original,
            "{args:?} wrote the file"
        );
    }
    // Those that write, and those that read every page, find the damage.
    for c in ["verify", "check", "rebuild", "compact", "rotate-key"] {
        assert!(refused.contains(&c), "{c} passed: refused only {refused:?}");
    }

    // serve: refused at start, exit 2, one line naming the file; never an abort.
    std::fs::write(&db, &original).unwrap();
    let (status, stderr) = serve_outcome(&db, &dir.path().join("config.json"))
        .expect("serve started on a file redb aborts on");
    assert_eq!(status.code(), Some(2), "{stderr}");
    let last = stderr.trim_end().lines().last().unwrap_or("");
    assert!(
        last.starts_with("error: ") && last.contains(d) && last.contains("damaged"),
        "{stderr}"
    );
    assert!(
        std::fs::read(&db).unwrap() == original,
        "serve wrote the file"
    );
}
