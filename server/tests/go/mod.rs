//! Builds the Go programs under `fixtures/go` with Debian's Go and `golang.org/x/mod` in
//! GOPATH mode (`GOPROXY=off`: nothing is downloaded).

#![allow(unreachable_pub)] // shared by test binaries

use std::path::{Path, PathBuf};
use std::process::Command;

/// Builds `fixtures/go/<name>` with Debian's Go and x/mod into `dir`, or explains why it
/// cannot (`None`: skipped knowingly with `FLEET_SKIP_GO=1`).
pub fn build(name: &str, dir: &Path) -> Option<PathBuf> {
    let gopath = "/usr/share/gocode";
    let have_go = Command::new("go")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    let have_mod = Path::new(gopath)
        .join("src/golang.org/x/mod/sumdb/tlog")
        .is_dir();
    if !(have_go && have_mod) {
        let msg = "NO GO: install Debian's `golang-go` and `golang-golang-x-mod-dev` (.ci/run does) to run the Go interop test";
        if std::env::var("FLEET_SKIP_GO").as_deref() == Ok("1") {
            eprintln!("\n*** {msg}; FLEET_SKIP_GO=1: NOT RUN ***\n");
            return None;
        }
        panic!("{msg}, or set FLEET_SKIP_GO=1 to skip it knowingly");
    }
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/go")
        .join(name)
        .join("main.go");
    let out = dir.join(name);
    let built = Command::new("go")
        .args(["build", "-o"])
        .arg(&out)
        .arg(&src)
        .env("GO111MODULE", "off")
        .env("GOPATH", gopath)
        .env("GOPROXY", "off")
        .env("GOCACHE", dir.join("gocache"))
        .env("GOFLAGS", "")
        .output()
        .unwrap();
    assert!(
        built.status.success(),
        "go build: {}",
        String::from_utf8_lossy(&built.stderr)
    );
    Some(out)
}
