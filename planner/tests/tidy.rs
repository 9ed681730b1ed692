//! Tidy: the pure crates stay pure. `planner` and `projections` must not depend, even
//! transitively, on anything that does IO, reads the clock or runs an executor.

use std::process::Command;

const FORBIDDEN: &[&str] = &[
    "redb",
    "tokio",
    "mio",
    "axum",
    "hyper",
    "reqwest",
    "rusqlite",
    "chrono",
    "getrandom",
    "tracing-subscriber",
];

fn normal_deps(package: &str) -> Vec<String> {
    let out = Command::new(env!("CARGO"))
        .args([
            "tree",
            "--offline",
            "--locked",
            "-e",
            "normal",
            "--prefix",
            "none",
            "-p",
            package,
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run cargo tree");
    assert!(
        out.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

#[test]
fn pure_crates_have_no_io_dependencies() {
    for package in ["fleet-ledger-planner", "fleet-ledger-projections"] {
        let deps = normal_deps(package);
        assert!(
            deps.iter().any(|d| d == "fleet-ledger-core"),
            "{package}: tree looks wrong: {deps:?}"
        );
        for bad in FORBIDDEN {
            assert!(!deps.iter().any(|d| d == bad), "{package} depends on {bad}");
        }
    }
}
