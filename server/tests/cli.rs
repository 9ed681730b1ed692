//! The CLI end to end: real files, real process, exit codes and one-line failures.

use std::path::Path;
use std::process::{Command, Output};

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fleet-ledger"))
        .args(args)
        .output()
        .expect("run fleet-ledger")
}

fn ok(args: &[&str]) -> String {
    let out = run(args);
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn fails(args: &[&str], code: i32) -> String {
    let out = run(args);
    assert_eq!(out.status.code(), Some(code), "{args:?}: {out:?}");
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    err
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn keygen_init_verify_export_prove_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let keys = tmp.path().join("keys");
    ok(&["keygen", "--out", s(&keys), "--name", "cp-2026"]);
    let key = keys.join("cp-2026.key");
    let public = keys.join("cp-2026.pub");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    fails(&["keygen", "--out", s(&keys), "--name", "cp-2026"], 2);

    let db = tmp.path().join("l.redb");
    ok(&[
        "init",
        "--db",
        s(&db),
        "--key",
        s(&key),
        "--origin",
        "cp.example/fleet",
    ]);
    let out = ok(&["verify", "--db", s(&db), "--key", s(&public)]);
    assert!(out.starts_with("OK: 1 entries, 1 checkpoints"), "{out}");

    let bundle = tmp.path().join("l.bundle");
    ok(&["export", "--db", s(&db), "--out", s(&bundle)]);
    fails(&["export", "--db", s(&db), "--out", s(&bundle)], 2);
    assert!(
        ok(&["verify", "--bundle", s(&bundle), "--key", s(&public)]).starts_with("OK: 1 entries")
    );

    let proof = ok(&["prove", "inclusion", "--db", s(&db), "--seq", "0"]);
    let proof_path = tmp.path().join("p.json");
    std::fs::write(&proof_path, &proof).unwrap();
    assert!(
        ok(&[
            "verify-proof",
            "--proof",
            s(&proof_path),
            "--key",
            s(&public)
        ])
        .starts_with("OK: entry seq 0")
    );
    // A proof edited to claim another seq is refused with exit 1.
    std::fs::write(&proof_path, proof.replace("\"seq\": 0", "\"seq\": 1")).unwrap();
    let err = fails(
        &[
            "verify-proof",
            "--proof",
            s(&proof_path),
            "--key",
            s(&public),
        ],
        1,
    );
    assert!(err.starts_with("INVALID:"), "{err}");
    fails(&["prove", "inclusion", "--db", s(&db), "--seq", "5"], 2);
}

#[test]
fn frozen_sample_verifies_and_a_flipped_byte_names_the_problem() {
    let bundle = fixtures::path("ledger-v1/sample.bundle");
    let public = fixtures::path("ledger-v1/sample.pub");
    let out = ok(&["verify", "--bundle", s(&bundle), "--key", s(&public)]);
    assert!(out.starts_with("OK: 300 entries"), "{out}");

    let tmp = tempfile::tempdir().unwrap();
    let mut bytes = std::fs::read(&bundle).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x10;
    let bad = tmp.path().join("bad.bundle");
    std::fs::write(&bad, &bytes).unwrap();
    let err = fails(&["verify", "--bundle", s(&bad), "--key", s(&public)], 1);
    assert!(err.starts_with("INVALID: "), "{err}");

    // The rotated key is not the genesis key: refused, saying why.
    let other = tmp.path().join("other.pub");
    std::fs::write(&other, fixtures::rotated_signer().public().to_text()).unwrap();
    let err = fails(&["verify", "--bundle", s(&bundle), "--key", s(&other)], 1);
    assert!(err.contains("not the pinned key"), "{err}");
}

#[test]
fn bad_inputs_get_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let public = fixtures::path("ledger-v1/sample.pub");
    let garbage = tmp.path().join("garbage");
    std::fs::write(&garbage, b"hello, not a ledger").unwrap();
    let err = fails(&["verify", "--bundle", s(&garbage), "--key", s(&public)], 1);
    assert!(err.contains("not a fleet-ledger bundle"), "{err}");
    let err = fails(&["verify", "--db", s(&garbage), "--key", s(&public)], 2);
    assert!(err.contains("garbage"), "{err}");
    let err = fails(
        &[
            "verify",
            "--db",
            s(&tmp.path().join("none")),
            "--key",
            s(&public),
        ],
        2,
    );
    assert!(err.contains("does not exist"), "{err}");
    let err = fails(&["verify", "--bundle", s(&public), "--key", s(&garbage)], 2);
    assert!(err.contains("not a public key"), "{err}");

    // A private key readable by others is refused.
    let keys = tmp.path().join("k");
    ok(&["keygen", "--out", s(&keys), "--name", "k"]);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let key = keys.join("k.key");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let db = tmp.path().join("l.redb");
        let err = fails(
            &["init", "--db", s(&db), "--key", s(&key), "--origin", "o"],
            2,
        );
        assert!(err.contains("chmod 600"), "{err}");
        assert!(!db.exists());
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let err = fails(
        &[
            "init",
            "--db",
            s(&tmp.path().join("x.redb")),
            "--key",
            s(&keys.join("k.key")),
            "--origin",
            "has space",
        ],
        2,
    );
    assert!(err.contains("invalid origin"), "{err}");
}
