//! Tidy: the engine stays below the HTTP shell. It opens no socket and knows no HTTP: none of
//! the daemon's network crates is among its dependencies (at any depth), tokio comes with its
//! channels only, and no source file names a socket type. (`server/tests/tidy.rs` keeps the
//! daemon off redb the same way.)

use std::path::Path;

/// Crates that would mean the engine speaks HTTP or opens connections.
const NETWORK_CRATES: &[&str] = &[
    "axum",
    "hyper",
    "hyper-util",
    "reqwest",
    "rustls",
    "tokio-rustls",
    "tower",
    "tower-http",
    "object_store",
    "utoipa",
];

#[test]
fn the_engine_depends_on_no_network_crate() {
    let tree = fixtures::cargo_tree("fleet-ledger-engine", "normal", &["--format", "{p} {f}"]);
    for line in tree.lines() {
        let name = line.split(' ').next().unwrap_or_default();
        assert!(
            !NETWORK_CRATES.contains(&name),
            "the engine depends on {line}"
        );
        if name == "tokio" {
            let features = line.rsplit(' ').next().unwrap_or_default();
            assert!(
                features.split(',').all(|f| f == "sync"),
                "the engine takes tokio with more than its channels: {line}"
            );
        }
    }
}

#[test]
fn no_socket_type_appears_in_the_engine() {
    let mut offenders = Vec::new();
    visit(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &mut offenders,
    );
    assert!(offenders.is_empty(), "sockets named in {offenders:?}");
}

fn visit(dir: &Path, offenders: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            visit(&path, offenders);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path).unwrap();
            if [
                "std::net",
                "tokio::net",
                "TcpStream",
                "TcpListener",
                "UdpSocket",
            ]
            .iter()
            .any(|s| text.contains(s))
            {
                offenders.push(path.display().to_string());
            }
        }
    }
}
