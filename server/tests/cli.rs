//! The CLI end to end: real files, real process, exit codes and one-line failures.

mod static_server;

use std::path::Path;
use std::process::{Command, Output};

use static_server::StaticServer;

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

/// The version-2 sample ledger in `dir`, with its genesis key written beside it:
/// `(db, genesis.pub)`.
fn sample_v2(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let db = dir.join("v2.redb");
    drop(fixtures::build_sample(&db, 2));
    let genesis = dir.join("genesis.pub");
    std::fs::write(&genesis, fixtures::genesis_signer().public().to_text()).unwrap();
    (db, genesis)
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

    // Issue 26, defect 9: no token for an agent named `.` or `..`.
    for name in [".", ".."] {
        let err = fails(&["token", "--role", "agent", "--name", name], 2);
        assert!(err.contains("malformed host name"), "{err}");
    }
}

/// Proof files of a version-2 log, with C2SP witness cosignatures: `verify-proof` ignores
/// signature lines of keys it does not know (whatever their name or length), counts the
/// trusted witnesses' cosignatures, and refuses a checkpoint with fewer than required.
#[test]
fn verify_proof_checks_witness_cosignatures_on_a_version_2_log() {
    let tmp = tempfile::tempdir().unwrap();
    let (db, genesis) = sample_v2(tmp.path());
    let rotated = tmp.path().join("rotated.pub");
    std::fs::write(&rotated, fixtures::rotated_signer().public().to_text()).unwrap();
    let witness = ledger::witness::Witness::from_seed("witness.example/w1", &[7; 32]).unwrap();
    let witness_pub = tmp.path().join("w1.vkey");
    std::fs::write(&witness_pub, witness.key().to_text()).unwrap();

    // Adds lines to the note held in `field` of a proof file.
    let with_lines = |proof: &str, field: &str, lines: &dyn Fn(&str) -> String| {
        let mut v: serde_json::Value = serde_json::from_str(proof).unwrap();
        let note = v[field].as_str().unwrap().to_string();
        let body = ledger::checkpoint::parse_note(note.as_bytes())
            .unwrap()
            .body;
        v[field] = serde_json::json!(format!("{note}{}", lines(&body)));
        serde_json::to_string_pretty(&v).unwrap()
    };
    // A cosignature, and a line of a key nobody here knows: a non-ASCII name longer than 128
    // bytes and a signature of an unusual length (ignored, as signed-note requires).
    let cosigned = |body: &str| {
        let stranger = format!(
            "\u{2014} {} {}\n",
            "témoin.example/".repeat(10),
            base64::Engine::encode(&base64::engine::general_purpose::STANDARD, [1u8; 77])
        );
        format!("{}{stranger}", witness.cosign(body, 1_767_225_600))
    };
    let verify = |path: &Path, required: &str| {
        run(&[
            "verify-proof",
            "--proof",
            s(path),
            "--key",
            s(&genesis),
            "--key",
            s(&rotated),
            "--witness",
            s(&witness_pub),
            "--witnesses-required",
            required,
        ])
    };

    let inclusion = ok(&["prove", "inclusion", "--db", s(&db), "--seq", "42"]);
    assert!(inclusion.contains("fleet-ledger-inclusion-proof/v2"));
    let consistency = ok(&[
        "prove",
        "consistency",
        "--db",
        s(&db),
        "--from",
        "1",
        "--to",
        "300",
    ]);
    assert!(consistency.contains("fleet-ledger-consistency-proof/v2"));
    for (proof, field, what) in [
        (&inclusion, "checkpoint", "OK: entry seq 42"),
        (&consistency, "to_checkpoint", "OK: the log"),
    ] {
        let plain = tmp.path().join("plain.json");
        std::fs::write(&plain, proof).unwrap();
        let out = verify(&plain, "0");
        assert!(out.status.success(), "{out:?}");
        assert!(String::from_utf8_lossy(&out.stdout).starts_with(what));
        let out = verify(&plain, "1");
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr)
                .contains("0 of the trusted witnesses cosigned this checkpoint; 1 required"),
            "{out:?}"
        );
        let witnessed = tmp.path().join("witnessed.json");
        std::fs::write(&witnessed, with_lines(proof, field, &cosigned)).unwrap();
        let out = verify(&witnessed, "1");
        assert!(out.status.success(), "{out:?}");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("cosigned by witness.example/w1"),
            "{out:?}"
        );
        // A cosignature line of the trusted witness that does not verify rejects the note.
        let forged = tmp.path().join("forged.json");
        std::fs::write(
            &forged,
            with_lines(proof, field, &|body| {
                witness.cosign(&body.replace("fleet-ledger", "elsewhere"), 1)
            }),
        )
        .unwrap();
        let out = verify(&forged, "0");
        assert_eq!(out.status.code(), Some(1), "{out:?}");
    }
    // More witnesses required than given cannot be met.
    fails(
        &[
            "verify-proof",
            "--proof",
            s(&tmp.path().join("plain.json")),
            "--key",
            s(&genesis),
            "--witness",
            s(&witness_pub),
            "--witnesses-required",
            "2",
        ],
        2,
    );
}

/// `publish` writes tlog-tiles into a directory, incrementally; a version-1 ledger is refused
/// with a reason.
#[test]
fn publish_writes_tiles_and_refuses_version_1() {
    let tmp = tempfile::tempdir().unwrap();
    let (db, genesis) = sample_v2(tmp.path());
    let out = tmp.path().join("tiles");
    let first = ok(&["publish", "--db", s(&db), "--to", s(&out)]);
    assert!(first.starts_with("published size 300 (from 0)"), "{first}");
    for f in [
        "checkpoint",
        "tile/0/000",
        "tile/0/001.p/44",
        "tile/1/000.p/1",
        "tile/entries/000",
        "tile/entries/001.p/44",
    ] {
        assert!(out.join(f).is_file(), "{f}");
    }
    assert_eq!(
        std::fs::metadata(out.join("tile/0/000")).unwrap().len(),
        8192
    );
    let again = ok(&["publish", "--db", s(&db), "--to", s(&out)]);
    assert!(again.contains("already published at size 300"), "{again}");
    // An auditor verifies the published tiles alone against the genesis key, across the
    // sample's key rotation.
    let v = ok(&["verify", "--tiles", s(&out), "--key", s(&genesis)]);
    assert!(v.starts_with("OK: 300 entries and every tile"), "{v}");
    assert!(v.contains("2 key(s)"), "{v}");
    // FORMAT §12 (issue 26): the published checkpoint must be signed by the key in force for
    // it, as in a bundle. Signed only by the genesis key, retired since: refused. A bad line
    // of the key in force beside a good line of the retired key: refused.
    let cp_path = out.join("checkpoint");
    let published = std::fs::read_to_string(&cp_path).unwrap();
    let cp = ledger::checkpoint::parse_note(published.as_bytes())
        .unwrap()
        .checkpoint;
    let retired = cp.sign(&fixtures::genesis_signer());
    let current = fixtures::rotated_signer();
    let mut blob = current.public().id().to_be_bytes().to_vec();
    blob.extend_from_slice(&[0; 64]);
    use base64::Engine as _;
    let bad_line = format!(
        "\u{2014} {} {}\n",
        current.public().name(),
        base64::engine::general_purpose::STANDARD.encode(&blob)
    );
    for (forged, says) in [
        (retired.clone(), "rotated out"),
        (format!("{retired}{bad_line}"), "does not verify"),
    ] {
        std::fs::write(&cp_path, &forged).unwrap();
        let err = fails(&["verify", "--tiles", s(&out), "--key", s(&genesis)], 1);
        assert!(err.contains(says), "{err}");
    }
    std::fs::write(&cp_path, &published).unwrap();
    // FORMAT §12: an entry that fits a bundle is in it; one written out of line with length
    // 0 (the bytes unchanged, so every hash tile still agrees) is refused.
    let bundle_path = out.join("tile/entries/001.p/44");
    let bundle = std::fs::read(&bundle_path).unwrap();
    let (mut at, mut rewritten, mut moved) = (0, Vec::new(), None);
    for i in 0..44 {
        let len = u16::from_be_bytes([bundle[at], bundle[at + 1]]) as usize;
        let entry = &bundle[at + 2..at + 2 + len];
        if i == 4 {
            rewritten.extend_from_slice(&[0, 0]);
            moved = Some(entry.to_vec());
        } else {
            rewritten.extend_from_slice(&bundle[at..at + 2 + len]);
        }
        at += 2 + len;
    }
    std::fs::write(&bundle_path, &rewritten).unwrap();
    std::fs::create_dir_all(out.join("entry")).unwrap();
    std::fs::write(out.join("entry/260"), moved.unwrap()).unwrap();
    let err = fails(&["verify", "--tiles", s(&out), "--key", s(&genesis)], 1);
    assert!(
        err.contains("seq 260") && err.contains("written in its bundle"),
        "{err}"
    );
    std::fs::write(&bundle_path, &bundle).unwrap();
    std::fs::remove_file(out.join("entry/260")).unwrap();
    for (file, at) in [
        ("tile/0/000", "seq 0"),
        ("tile/1/000.p/1", "seq 0"),
        ("tile/entries/001.p/44", "seq 256"),
    ] {
        let path = out.join(file);
        let good = std::fs::read(&path).unwrap();
        let mut bad = good.clone();
        bad[7] ^= 1;
        std::fs::write(&path, &bad).unwrap();
        let err = fails(&["verify", "--tiles", s(&out), "--key", s(&genesis)], 1);
        assert!(err.contains(at), "{file}: {err}");
        std::fs::write(&path, &good).unwrap();
    }
    // Witnesses: the published checkpoint must carry the required cosignatures.
    let witness = ledger::witness::Witness::from_seed("witness.example/w1", &[7; 32]).unwrap();
    let vkey = tmp.path().join("w1.vkey");
    std::fs::write(&vkey, witness.key().to_text()).unwrap();
    let with_witness = |required: &str| {
        run(&[
            "verify",
            "--tiles",
            s(&out),
            "--key",
            s(&genesis),
            "--witness",
            s(&vkey),
            "--witnesses-required",
            required,
        ])
    };
    let o = with_witness("1");
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    let note = std::fs::read_to_string(out.join("checkpoint")).unwrap();
    let body = ledger::checkpoint::parse_note(note.as_bytes())
        .unwrap()
        .body;
    std::fs::write(
        out.join("checkpoint"),
        format!("{note}{}", witness.cosign(&body, 1_767_225_600)),
    )
    .unwrap();
    let o = with_witness("1");
    assert!(o.status.success(), "{o:?}");
    assert!(String::from_utf8_lossy(&o.stdout).contains("cosigned by witness.example/w1"));
    std::fs::remove_file(out.join("tile/0/001.p/44")).unwrap();
    let err = fails(&["verify", "--tiles", s(&out), "--key", s(&genesis)], 1);
    assert!(err.contains("tile/0/001.p/44 is missing"), "{err}");
    let v1 = tmp.path().join("v1.redb");
    drop(fixtures::build_sample(&v1, 1));
    let err = fails(
        &["publish", "--db", s(&v1), "--to", s(&tmp.path().join("t1"))],
        2,
    );
    assert!(err.contains("version-2"), "{err}");
}

/// `rotate-key` records the rotation; verification follows it from the genesis key alone,
/// and a key already in the chain, or a wrong current key, is refused.
#[test]
fn rotate_key_is_followed_by_verifiers() {
    let tmp = tempfile::tempdir().unwrap();
    let keys = tmp.path().join("keys");
    ok(&["keygen", "--out", s(&keys), "--name", "cp.example/fleet"]);
    ok(&["keygen", "--out", s(&keys), "--name", "cp-2027"]);
    // A key named as its log's origin: its files are named with '_' for '/'.
    let (k1, k2) = (keys.join("cp.example_fleet.key"), keys.join("cp-2027.key"));
    let db = tmp.path().join("l.redb");
    ok(&[
        "init",
        "--db",
        s(&db),
        "--key",
        s(&k1),
        "--origin",
        "cp.example/fleet",
    ]);
    let genesis_pub = k1.with_extension("pub");
    let out = ok(&[
        "rotate-key",
        "--db",
        s(&db),
        "--key",
        s(&k1),
        "--to",
        s(&k2),
        "--reason",
        "yearly",
    ]);
    assert!(out.starts_with("rotated at entry 1"), "{out}");
    let v = ok(&["verify", "--db", s(&db), "--key", s(&genesis_pub)]);
    assert!(
        v.starts_with("OK: 2 entries, 2 checkpoints, 2 key(s)"),
        "{v}"
    );
    // The old key is no longer in force; the new one cannot be rotated to twice.
    let err = fails(
        &[
            "rotate-key",
            "--db",
            s(&db),
            "--key",
            s(&k1),
            "--to",
            s(&k2),
            "--reason",
            "x",
        ],
        2,
    );
    assert!(err.contains("key"), "{err}");
    let err = fails(
        &[
            "rotate-key",
            "--db",
            s(&db),
            "--key",
            s(&k2),
            "--to",
            s(&k2),
            "--reason",
            "x",
        ],
        2,
    );
    assert!(err.contains("already in the log's key chain"), "{err}");
    fails(
        &[
            "rotate-key",
            "--db",
            s(&db),
            "--key",
            s(&k2),
            "--to",
            s(&k1),
            "--reason",
            " ",
        ],
        2,
    );
    // Published tiles verify across the rotation too.
    let tiles = tmp.path().join("tiles");
    ok(&["publish", "--db", s(&db), "--to", s(&tiles)]);
    let v = ok(&["verify", "--tiles", s(&tiles), "--key", s(&genesis_pub)]);
    assert!(v.contains("2 key(s)"), "{v}");
}

/// A monitor's loop: `verify --tiles --since STATE` verifies everything once, then only what
/// was published since, reading few files; a rewritten history is caught.
#[test]
fn verify_tiles_since_a_state_file_is_incremental() {
    use ledger::event::{Annotation, Event};
    use ledger::store::{NewEntry, Store};
    let tmp = tempfile::tempdir().unwrap();
    let (db, genesis) = sample_v2(tmp.path());
    let out = tmp.path().join("tiles");
    let state = tmp.path().join("monitor.json");
    let verify = || {
        run(&[
            "verify",
            "--tiles",
            s(&out),
            "--key",
            s(&genesis),
            "--since",
            s(&state),
        ])
    };
    ok(&["publish", "--db", s(&db), "--to", s(&out)]);
    let first = verify();
    let text = String::from_utf8_lossy(&first.stdout).to_string();
    assert!(text.starts_with("OK: 300 entries and every tile"), "{text}");
    assert!(state.is_file());
    // Nothing new: nothing but the checkpoint read.
    let again = String::from_utf8_lossy(&verify().stdout).to_string();
    assert!(
        again.starts_with("OK: 0 new entries since size 300"),
        "{again}"
    );
    // The log grows by 700 entries; the monitor reads only what it needs.
    let mut store = Store::open(&db, fixtures::rotated_signer()).unwrap();
    let t = fixtures::SAMPLE_T0_US + 10_000_000_000;
    for k in 0..7 {
        let batch: Vec<NewEntry> = (0..100)
            .map(|i| NewEntry {
                recorded_at_us: t + k * 100 + i,
                event: Event::Annotation(Annotation {
                    author: "monitor-test".into(),
                    text: format!("entry {k}/{i}"),
                }),
            })
            .collect();
        store.append(&batch).unwrap();
    }
    drop(store);
    ok(&["publish", "--db", s(&db), "--to", s(&out)]);
    let grown = String::from_utf8_lossy(&verify().stdout).to_string();
    assert!(
        grown.starts_with("OK: 700 new entries since size 300"),
        "{grown}"
    );
    let files: u64 = grown
        .split(" files read")
        .next()
        .and_then(|p| p.rsplit('(').next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(files < 12, "{grown}");
    // FORMAT §12: a narrower partial tile left by the publication at 300 is not part of the
    // tree of 1,000 and is not read: damaged, the tiles still verify (a client that trusts
    // size 300 checks it against that checkpoint).
    let leftover = out.join("tile/0/001.p/44");
    let mut bytes = std::fs::read(&leftover).unwrap();
    bytes[0] ^= 1;
    std::fs::write(&leftover, &bytes).unwrap();
    let full = ok(&["verify", "--tiles", s(&out), "--key", s(&genesis)]);
    assert!(
        full.starts_with("OK: 1000 entries and every tile"),
        "{full}"
    );
    bytes[0] ^= 1;
    std::fs::write(&leftover, &bytes).unwrap();
    // A split view: another history under the same origin and key, longer, published
    // elsewhere and shown to the monitor. Its tree for the size the monitor trusts has
    // another root: refused, and the state file keeps the trusted checkpoint.
    let forked = tmp.path().join("forked.redb");
    let mut store = Store::create(
        &forked,
        &fixtures::sample_origin(2),
        fixtures::genesis_signer(),
        fixtures::SAMPLE_T0_US,
    )
    .unwrap();
    for k in 0..11 {
        let batch: Vec<NewEntry> = (0..100)
            .map(|i| NewEntry {
                recorded_at_us: fixtures::SAMPLE_T0_US + k * 100 + i,
                event: Event::Annotation(Annotation {
                    author: "forger".into(),
                    text: format!("another {k}/{i}"),
                }),
            })
            .collect();
        store.append(&batch).unwrap();
    }
    drop(store);
    let trusted = std::fs::read(&state).unwrap();
    let fork_tiles = tmp.path().join("forked-tiles");
    ok(&["publish", "--db", s(&forked), "--to", s(&fork_tiles)]);
    let o = run(&[
        "verify",
        "--tiles",
        s(&fork_tiles),
        "--key",
        s(&genesis),
        "--since",
        s(&state),
    ]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    assert_eq!(std::fs::read(&state).unwrap(), trusted);
}

/// Tiles served over HTTP (Python's `http.server`, a static server like any other) verify
/// from their URL, fully and incrementally.
#[test]
fn verify_tiles_reads_a_url() {
    let tmp = tempfile::tempdir().unwrap();
    let (db, genesis) = sample_v2(tmp.path());
    let out = tmp.path().join("tiles");
    ok(&["publish", "--db", s(&db), "--to", s(&out)]);
    let server = StaticServer::start(&out);
    let url = server.base();
    let state = tmp.path().join("state.json");
    let full = ok(&[
        "verify",
        "--tiles",
        &url,
        "--key",
        s(&genesis),
        "--since",
        s(&state),
    ]);
    assert!(full.starts_with("OK: 300 entries and every tile"), "{full}");
    let again = ok(&[
        "verify",
        "--tiles",
        &url,
        "--key",
        s(&genesis),
        "--since",
        s(&state),
    ]);
    assert!(
        again.starts_with("OK: 0 new entries since size 300"),
        "{again}"
    );
    std::fs::remove_file(out.join("tile/0/000")).unwrap();
    let err = fails(&["verify", "--tiles", &url, "--key", s(&genesis)], 1);
    assert!(err.contains("tile/0/000 is missing"), "{err}");
    drop(server);
}

/// `import` from `flag` (`--bundle` or `--tiles`) `source` into `target` is refused with exit
/// `code` and a line containing `says`, and leaves neither `target` nor its temporary.
fn import_refused(flag: &str, source: &Path, key: &Path, target: &Path, code: i32, says: &str) {
    let args = [
        "import",
        flag,
        s(source),
        "--key",
        s(key),
        "--db",
        s(target),
    ];
    let err = fails(&args, code);
    assert!(err.contains(says), "{err}");
    let mut temporary = target.as_os_str().to_owned();
    temporary.push(".importing");
    assert!(!Path::new(&temporary).exists());
}

/// `import` restores a bundle as a ledger that is the source log byte for byte (its export is
/// the same bundle), with projections that `check` and `replay --check` accept; a bundle that
/// fails verification, or the wrong key, writes nothing; an existing database is never
/// overwritten. `backup` writes a verified bundle.
#[test]
fn import_restores_a_bundle_byte_for_byte_and_refuses_a_bad_one() {
    let tmp = tempfile::tempdir().unwrap();
    let (db, genesis) = sample_v2(tmp.path());
    let bundle = tmp.path().join("backup.bundle");
    let out = ok(&["backup", "--db", s(&db), "--out", s(&bundle)]);
    assert!(out.starts_with("backed up 300 entries"), "{out}");
    assert!(out.contains("verified"), "{out}");
    fails(&["backup", "--db", s(&db), "--out", s(&bundle)], 2);

    let restored = tmp.path().join("restored.redb");
    let out = ok(&[
        "import",
        "--bundle",
        s(&bundle),
        "--key",
        s(&genesis),
        "--db",
        s(&restored),
    ]);
    assert!(out.starts_with("imported 300 entries"), "{out}");
    assert!(out.contains("2 key(s)"), "{out}");
    assert!(!tmp.path().join("restored.redb.importing").exists());
    let again = tmp.path().join("again.bundle");
    ok(&["export", "--db", s(&restored), "--out", s(&again)]);
    assert_eq!(
        std::fs::read(&again).unwrap(),
        std::fs::read(&bundle).unwrap(),
        "the restored ledger exports the same bytes"
    );
    assert!(ok(&["verify", "--db", s(&restored), "--key", s(&genesis)]).starts_with("OK"));
    ok(&["check", "--db", s(&restored)]);
    ok(&["replay", "--db", s(&restored), "--check"]);

    // Never over an existing file.
    import_refused(
        "--bundle",
        &bundle,
        &genesis,
        &restored,
        2,
        "already exists",
    );
    // A flipped byte deep in the bundle, or another genesis key: refused, nothing written.
    let mut bad = std::fs::read(&bundle).unwrap();
    let at = bad.len() * 3 / 4;
    bad[at] ^= 0x20;
    let bad_bundle = tmp.path().join("bad.bundle");
    std::fs::write(&bad_bundle, &bad).unwrap();
    let other_key = tmp.path().join("other.pub");
    std::fs::write(&other_key, fixtures::rotated_signer().public().to_text()).unwrap();
    for (b, k) in [(&bad_bundle, &genesis), (&bundle, &other_key)] {
        let target = tmp.path().join("never.redb");
        import_refused("--bundle", b, k, &target, 1, "nothing was written");
        assert!(!target.exists());
    }
}

/// `import --tiles` restores from published tiles: every entry byte for byte and the key,
/// with the one checkpoint tiles keep; the result verifies, checks, replays, and takes appends
/// with the key in force. Tampered tiles write nothing; a log that rotated its key is restored
/// with the checkpoint the rotation took effect at, published beside the tiles.
#[test]
fn import_restores_from_published_tiles() {
    use ledger::event::{Annotation, Event};
    use ledger::store::{NewEntry, ReadOnlyStore, Store};
    let tmp = tempfile::tempdir().unwrap();
    let keys = tmp.path().join("keys");
    ok(&["keygen", "--out", s(&keys), "--name", "cp.example/fleet"]);
    let (key, genesis) = (
        keys.join("cp.example_fleet.key"),
        keys.join("cp.example_fleet.pub"),
    );
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
    // After the genesis entry, which `init` stamped with the wall clock.
    let t = chrono::Utc::now().timestamp_micros() + 1_000_000;
    let append = |db: &Path, n: u64, from: u64| {
        let mut store = Store::open(db, ledger::keys::read_private_key(&key).unwrap()).unwrap();
        for k in 0..n / 50 {
            let batch: Vec<NewEntry> = (0..50)
                .map(|i| NewEntry {
                    recorded_at_us: t + (from + k * 50 + i) as i64,
                    event: Event::Annotation(Annotation {
                        author: "restore-test".into(),
                        text: format!("entry {k}/{i}"),
                    }),
                })
                .collect();
            store.append(&batch).unwrap();
        }
    };
    append(&db, 300, 0);
    let tiles = tmp.path().join("tiles");
    ok(&["publish", "--db", s(&db), "--to", s(&tiles)]);
    let restored = tmp.path().join("from-tiles.redb");
    let out = ok(&[
        "import",
        "--tiles",
        s(&tiles),
        "--key",
        s(&genesis),
        "--db",
        s(&restored),
    ]);
    assert!(
        out.starts_with("imported 301 entries, 1 checkpoints and 1 key(s)"),
        "{out}"
    );
    {
        let (a, b) = (
            ReadOnlyStore::open(&db).unwrap(),
            ReadOnlyStore::open(&restored).unwrap(),
        );
        let (a, b) = (a.snapshot().unwrap(), b.snapshot().unwrap());
        for seq in 0..301 {
            assert_eq!(a.entry(seq).unwrap(), b.entry(seq).unwrap(), "entry {seq}");
        }
        assert_eq!(
            b.latest_checkpoint().unwrap().unwrap().1,
            std::fs::read_to_string(tiles.join("checkpoint")).unwrap()
        );
    }
    ok(&["verify", "--db", s(&restored), "--key", s(&genesis)]);
    ok(&["check", "--db", s(&restored)]);
    ok(&["replay", "--db", s(&restored), "--check"]);
    // The restored log continues.
    append(&restored, 50, 300);
    ok(&["verify", "--db", s(&restored), "--key", s(&genesis)]);

    // Tampered tiles: refused, nothing written.
    let bundle = tiles.join("tile/entries/001.p/45");
    let mut bad = std::fs::read(&bundle).unwrap();
    bad[10] ^= 1;
    std::fs::write(&bundle, &bad).unwrap();
    let target = tmp.path().join("never.redb");
    import_refused(
        "--tiles",
        &tiles,
        &genesis,
        &target,
        1,
        "nothing was written",
    );
    assert!(!target.exists());

    // A log that rotated its key (issue 26): the checkpoint the rotation took effect at is
    // published beside the tiles (`rotation/<seq>`), so the restored log has it, signed by the
    // key before the rotation, and verifies from the genesis key alone.
    let (sample, sample_genesis) = sample_v2(tmp.path());
    let sample_tiles = tmp.path().join("sample-tiles");
    ok(&["publish", "--db", s(&sample), "--to", s(&sample_tiles)]);
    let rotations: Vec<_> = std::fs::read_dir(sample_tiles.join("rotation"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(rotations.len(), 1, "{rotations:?}");
    let rotation_seq: u64 = rotations[0].parse().unwrap();
    let rotation_note =
        std::fs::read_to_string(sample_tiles.join("rotation").join(&rotations[0])).unwrap();
    let rotated_from_tiles = tmp.path().join("rotated-from-tiles.redb");
    let out = ok(&[
        "import",
        "--tiles",
        s(&sample_tiles),
        "--key",
        s(&sample_genesis),
        "--db",
        s(&rotated_from_tiles),
    ]);
    assert!(
        out.starts_with("imported 300 entries, 2 checkpoints and 2 key(s)"),
        "{out}"
    );
    ok(&[
        "verify",
        "--db",
        s(&rotated_from_tiles),
        "--key",
        s(&sample_genesis),
    ]);
    {
        let (a, b) = (
            ReadOnlyStore::open(&sample).unwrap(),
            ReadOnlyStore::open(&rotated_from_tiles).unwrap(),
        );
        let (a, b) = (a.snapshot().unwrap(), b.snapshot().unwrap());
        let size = ledger::checkpoint::parse_note(rotation_note.as_bytes())
            .unwrap()
            .checkpoint
            .size;
        assert!(size > rotation_seq);
        assert_eq!(a.checkpoint(size).unwrap().unwrap(), rotation_note);
        assert_eq!(b.checkpoint(size).unwrap().unwrap(), rotation_note);
        for seq in 0..300 {
            assert_eq!(a.entry(seq).unwrap(), b.entry(seq).unwrap(), "entry {seq}");
        }
    }
    // Without the rotation's checkpoint, the key chain cannot be followed: refused, named.
    let file = sample_tiles.join("rotation").join(&rotations[0]);
    std::fs::rename(&file, tmp.path().join("aside")).unwrap();
    import_refused(
        "--tiles",
        &sample_tiles,
        &sample_genesis,
        &target,
        1,
        &format!("rotation/{} is missing", rotations[0]),
    );
    assert!(!target.exists());
    // A publication writes it again (and any a destination published before it lacks).
    ok(&["publish", "--db", s(&sample), "--to", s(&sample_tiles)]);
    assert_eq!(std::fs::read_to_string(&file).unwrap(), rotation_note);
}

/// `compact` runs redb's compaction and leaves the ledger as it was (same export, byte for
/// byte; verify and check pass); it refuses a file a daemon (here: another open handle)
/// holds. (How much it frees on a long history is measured by the `file_growth` bench: on a
/// file this small it can even add a page of bookkeeping.)
#[test]
fn compact_changes_nothing_and_refuses_a_file_in_use() {
    let tmp = tempfile::tempdir().unwrap();
    let (db, genesis) = sample_v2(tmp.path());
    // Rebuilding the projections twice leaves freed pages behind.
    ok(&["rebuild", "--db", s(&db)]);
    ok(&["rebuild", "--db", s(&db)]);
    let before_bundle = tmp.path().join("before.bundle");
    ok(&["export", "--db", s(&db), "--out", s(&before_bundle)]);
    let before = std::fs::metadata(&db).unwrap().len();
    let out = ok(&["compact", "--db", s(&db)]);
    assert!(
        out.starts_with(&format!("compacted {}: {before} bytes -> ", s(&db))),
        "{out}"
    );
    let after = std::fs::metadata(&db).unwrap().len();
    assert!(after <= before + 4096, "{before} -> {after}");
    let after_bundle = tmp.path().join("after.bundle");
    ok(&["export", "--db", s(&db), "--out", s(&after_bundle)]);
    assert_eq!(
        std::fs::read(&before_bundle).unwrap(),
        std::fs::read(&after_bundle).unwrap()
    );
    ok(&["verify", "--db", s(&db), "--key", s(&genesis)]);
    ok(&["check", "--db", s(&db)]);
    // In use elsewhere: refused with the reason.
    let store = ledger::store::Store::open(&db, fixtures::rotated_signer()).unwrap();
    let err = fails(&["compact", "--db", s(&db)], 2);
    assert!(err.contains("stop the daemon first"), "{err}");
    drop(store);
}

/// Issue 26: a reader that closes stdout (`fleet-ledger timeline … | head`) ends the command
/// quietly, exit 0, as in standard Unix tools; not `error: Broken pipe (os error 32)`.
#[test]
fn a_closed_stdout_ends_a_command_quietly() {
    let bundle = fixtures::path("ledger-v2/sample.bundle");
    for args in [
        vec!["replay", "--bundle", s(&bundle), "--at-seq", "5", "--json"],
        vec!["replay", "--bundle", s(&bundle), "--at-seq", "5"],
        vec!["timeline", "--bundle", s(&bundle), "--log"],
    ] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_fleet-ledger"))
            .args(&args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{args:?}: {:?} {stderr}", out.status);
        assert!(stderr.is_empty(), "{args:?}: {stderr}");
    }
}

/// Issue 26, defect 11: `timeline --log` lists the log's own records (here the sample's
/// genesis, key rotation and annotations) by time, `--since` alone is a window, and a
/// timeline with nothing to narrow it says what to give.
#[test]
fn timeline_lists_the_logs_own_records_by_time() {
    let bundle = fixtures::path("ledger-v2/sample.bundle");
    let out = ok(&["timeline", "--bundle", s(&bundle), "--log"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len() as u64, fixtures::SAMPLE_ENTRIES, "{out}");
    assert!(lines[0].contains("Genesis"), "{}", lines[0]);
    assert!(out.contains("KeyRotated"), "{out}");
    let window = ok(&[
        "timeline",
        "--bundle",
        s(&bundle),
        "--since",
        "2026-01-01T00:02:00Z",
        "--json",
    ]);
    let seqs: Vec<u64> = window
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["seq"]
                .as_u64()
                .unwrap()
        })
        .collect();
    // One entry a second from 00:00:00: the window starts at seq 120.
    assert_eq!(seqs, (120..fixtures::SAMPLE_ENTRIES).collect::<Vec<_>>());
    let err = fails(&["timeline", "--bundle", s(&bundle)], 2);
    assert!(err.contains("--log"), "{err}");
}

/// `check` says in one line which projection table and key differ from the fold of the log,
/// and exits 1; `rebuild` repairs it (the engine's own test covers the comparison).
#[test]
fn check_names_a_differing_projection_row_in_one_line() {
    use ledger::tables::{TableReader as _, TableWriter as _};
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("p.redb");
    let mut sim = fixtures::sim::Sim::new(5, 24);
    let mut ledger = engine::materialize::Ledger::create(
        &path,
        "test.example/cp",
        fixtures::genesis_signer(),
        sim.now(),
    )
    .unwrap();
    for _ in 0..60 {
        let groups = sim.tick();
        if !groups.is_empty() {
            ledger.append(fixtures::sim::entries(&groups)).unwrap();
        }
    }
    drop(ledger);
    let mut first = None;
    {
        let ro = ledger::store::ReadOnlyStore::open(&path).unwrap();
        ro.snapshot()
            .unwrap()
            .scan("proj.hosts", &mut |k, v| {
                first.get_or_insert_with(|| (k.to_vec(), v.to_vec()));
                Ok(())
            })
            .unwrap();
    }
    let (k, mut v) = first.expect("a host row");
    *v.last_mut().unwrap() ^= 1;
    let mut store = ledger::store::Store::open(&path, fixtures::genesis_signer()).unwrap();
    store
        .write_tables(|t| {
            t.put("proj.hosts", &k, &v).unwrap();
            Ok::<_, ledger::store::AppendError>(())
        })
        .unwrap();
    drop(store);
    let err = fails(&["check", "--db", s(&path)], 1);
    assert!(err.starts_with("INVALID: table proj.hosts: key ("), "{err}");
    ok(&["rebuild", "--db", s(&path)]);
    ok(&["check", "--db", s(&path)]);
}
