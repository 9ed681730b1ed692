//! Tidy: the boundary between the ledger and the server stays sealed. Storage is the
//! `ledger` crate's: the server reaches it through `Store`, `Snapshot` and the table
//! interface, never through redb (issue 14).

use std::path::Path;
use std::process::Command;

#[test]
fn the_server_does_not_depend_on_redb() {
    let out = Command::new(env!("CARGO"))
        .args([
            "tree",
            "--offline",
            "--locked",
            "-e",
            "normal,dev",
            "--depth",
            "1",
            "--prefix",
            "none",
            "-p",
            "fleet-ledger",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run cargo tree");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let direct = String::from_utf8(out.stdout).unwrap();
    assert!(
        !direct.lines().any(|l| l.starts_with("redb ")),
        "fleet-ledger depends on redb directly:\n{direct}"
    );
}

#[test]
fn no_redb_type_appears_in_the_server() {
    let mut offenders = Vec::new();
    for dir in ["src", "tests"] {
        visit(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join(dir),
            &mut offenders,
        );
    }
    assert!(offenders.is_empty(), "redb named in {offenders:?}");
}

fn visit(dir: &Path, offenders: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            visit(&path, offenders);
        } else if path.extension().is_some_and(|e| e == "rs") && !path.ends_with("tidy.rs") {
            let text = std::fs::read_to_string(&path).unwrap();
            if text.contains("redb::") || text.contains("use redb") {
                offenders.push(path.display().to_string());
            }
        }
    }
}
