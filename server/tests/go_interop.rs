//! A standard transparency-log client checks fleet-ledger: Go's reference implementations of
//! signed notes and RFC 6962 proofs (`golang.org/x/mod/sumdb/note` and `sumdb/tlog`, from
//! Debian's `golang-golang-x-mod-dev`, built in GOPATH mode with `GOPROXY=off`) open every
//! checkpoint of a version-2 log with the log's verifier keys (across a key rotation, and with
//! a witness cosignature beside the log's signature) and check inclusion and consistency
//! proofs, through `fixtures/go/tlogcheck`, which shares no code with fleet-ledger. Tampered
//! proofs are refused.
//!
//! `.ci/run` installs Go; without it this test fails and says so, unless `FLEET_SKIP_GO=1`.

mod go;

use std::path::{Path, PathBuf};
use std::process::Command;

use ledger::store::ReadOnlyStore;

/// Builds `fixtures/go/tlogcheck`, or explains why it cannot.
fn tlogcheck(dir: &Path) -> Option<PathBuf> {
    go::build("tlogcheck", dir)
}

fn check(tool: &Path, kind: &str, proof: &str, keys: &[String], dir: &Path) -> (bool, String) {
    let file = dir.join("proof.json");
    std::fs::write(&file, proof).unwrap();
    let out = Command::new(tool)
        .arg(kind)
        .arg(&file)
        .args(keys)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success(), text)
}

#[test]
fn go_sumdb_note_and_tlog_check_fleet_ledger_checkpoints_and_proofs() {
    let dir = tempfile::tempdir().unwrap();
    let Some(tool) = tlogcheck(dir.path()) else {
        return;
    };
    let db = dir.path().join("sample.redb");
    drop(fixtures::build_sample(&db, 2));
    let ro = ReadOnlyStore::open(&db).unwrap();
    let snap = ro.snapshot().unwrap();
    let keys = [
        fixtures::genesis_signer().public().to_text(),
        fixtures::rotated_signer().public().to_text(),
    ];
    // Every checkpoint the log has (one per append batch; the key rotates half way).
    let sizes: Vec<u64> = (1..=snap.size())
        .filter(|n| snap.checkpoint(*n).unwrap().is_some())
        .collect();
    assert!(sizes.len() > 30, "{sizes:?}");

    let witness = ledger::witness::Witness::from_seed("witness.example/w1", &[7; 32]).unwrap();
    let mut checked = 0;
    for (i, &size) in sizes.iter().enumerate() {
        // Inclusion of the first, a middle and the last entry of each checkpointed tree.
        for seq in [0, size / 2, size - 1] {
            let proof = snap.inclusion_proof(seq, Some(size)).unwrap();
            let (ok, out) = check(&tool, "inclusion", &proof.to_json(), &keys, dir.path());
            assert!(ok, "seq {seq} at size {size}: {out}");
            assert!(out.starts_with(&format!("OK: record {seq} is in")), "{out}");
            checked += 1;
        }
        // Consistency with the previous checkpoint and with the first.
        for &from in [sizes[0], sizes[i.saturating_sub(1)]].iter() {
            let proof = snap.consistency_proof(from, size).unwrap();
            let (ok, out) = check(&tool, "consistency", &proof.to_json(), &keys, dir.path());
            assert!(ok, "{from} -> {size}: {out}");
            checked += 1;
        }
    }
    assert!(checked > 150);

    // A checkpoint that also carries a witness cosignature still opens (the cosignature is a
    // key Go's verifier does not know, which signed-note says to ignore).
    let last = *sizes.last().unwrap();
    let mut proof = snap.inclusion_proof(7, Some(last)).unwrap();
    let body = ledger::checkpoint::parse_note(proof.checkpoint.as_bytes())
        .unwrap()
        .body;
    proof
        .checkpoint
        .push_str(&witness.cosign(&body, 1_767_225_600));
    let (ok, out) = check(&tool, "inclusion", &proof.to_json(), &keys, dir.path());
    assert!(ok, "cosigned: {out}");

    // Tampering is caught by Go's code: another entry, a changed path hash, a note signed by
    // a key it does not trust.
    let good = snap.inclusion_proof(100, Some(last)).unwrap();
    let mut other_entry = good.clone();
    other_entry.entry = snap.entry(101).unwrap().unwrap();
    let mut bad_path = good.clone();
    bad_path.path[0].0[0] ^= 1;
    for (what, p, keys) in [
        ("another entry", &other_entry, &keys[..]),
        ("a changed path", &bad_path, &keys[..]),
        ("an untrusted key", &good, &keys[..1]),
    ] {
        let (ok, out) = check(&tool, "inclusion", &p.to_json(), keys, dir.path());
        assert!(!ok && out.starts_with("INVALID"), "{what}: {out}");
    }
    let mut bad = snap.consistency_proof(sizes[3], last).unwrap();
    bad.path[0].0[5] ^= 0x40;
    let (ok, out) = check(&tool, "consistency", &bad.to_json(), &keys, dir.path());
    assert!(!ok && out.starts_with("INVALID"), "{out}");
}

/// The log published as C2SP tlog-tiles, read by Go's `sumdb/tlog` (its tile hash reader
/// checks every tile against the signed root): every entry's inclusion is proven and checked
/// through the tiles, after each of several incremental publications, with an entry too large
/// for an entry bundle, a key rotation, and a tree deep enough for level-2 tiles.
#[test]
fn go_sumdb_tlog_reads_the_published_tiles() {
    use fleet_ledger::publish::{DirSink, publish};
    use ledger::event::{Annotation, Event};
    use ledger::store::{NewEntry, Store};
    let dir = tempfile::tempdir().unwrap();
    let Some(tool) = tlogcheck(dir.path()) else {
        return;
    };
    let db = dir.path().join("log.redb");
    let t0 = fixtures::SAMPLE_T0_US;
    let mut store =
        Store::create(&db, "tiles.example/log", fixtures::genesis_signer(), t0).unwrap();
    let out = dir.path().join("published");
    let sink = DirSink::new(&out).unwrap();
    let keys = [
        fixtures::genesis_signer().public().to_text(),
        fixtures::rotated_signer().public().to_text(),
    ];
    let mut published = 0;
    let mut check = |store: &Store, at: &str| {
        let ro = ReadOnlyStore::open(&db).unwrap();
        let snap = ro.snapshot().unwrap();
        let p = publish(&snap, &sink).unwrap();
        assert_eq!((p.from, p.to), (published, store.size()), "{at}");
        published = p.to;
        let out = Command::new(&tool)
            .arg("tiles")
            .arg(&out)
            .args(&keys)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{at}: {text}");
        assert!(
            text.starts_with(&format!(
                "OK: {} records of tiles.example/log",
                store.size()
            )),
            "{at}: {text}"
        );
        // fleet-ledger's own tile verifier agrees (entries, chain, rotation, every tile).
        let root = dir.path().join("published");
        let mut fetch = |path: &str| Ok(std::fs::read(root.join(path)).ok());
        let v = ledger::tiles::verify(
            &mut fetch,
            fixtures::genesis_signer().public().clone(),
            &Default::default(),
            &mut |_| {},
        )
        .unwrap_or_else(|e| panic!("{at}: {e}"));
        assert_eq!(v.log.size(), store.size());
    };
    check(&store, "genesis only");
    // Entry times are t0 + seq, non-decreasing as the format requires.
    let append = |store: &mut Store, k: u64, text: &dyn Fn(u64) -> String| {
        let first = store.size();
        let batch: Vec<NewEntry> = (first..first + k)
            .map(|seq| NewEntry {
                recorded_at_us: t0 + seq as i64,
                event: Event::Annotation(Annotation {
                    author: "tiles-test".into(),
                    text: text(seq),
                }),
            })
            .collect();
        store.append(&batch).unwrap();
    };
    append(&mut store, 299, &|i| format!("entry {i}"));
    // An entry over 64 KiB: published whole beside the bundles.
    append(&mut store, 1, &|_| "x".repeat(70_000));
    check(&store, "301 entries, one of them large");
    let at = t0 + store.size() as i64;
    store
        .rotate_key(fixtures::rotated_signer(), "scheduled", at)
        .unwrap();
    for _ in 0..66 {
        append(&mut store, 1000, &|i| format!("entry {i}"));
    }
    check(&store, "past 65,536 entries: level-2 tiles");
    assert!(out.join("tile/2/000.p/1").exists());
    assert!(out.join("tile/1/000").exists());
    assert!(out.join("entry/300").exists(), "the large entry");
    // Nothing new: nothing written but the answer.
    let ro = ReadOnlyStore::open(&db).unwrap();
    let p = publish(&ro.snapshot().unwrap(), &sink).unwrap();
    assert_eq!((p.from, p.to, p.files), (published, published, 0));
    // A changed tile or entry is caught by Go's reader.
    for file in ["tile/0/100", "tile/entries/100"] {
        let path = out.join(file);
        let good = std::fs::read(&path).unwrap();
        let mut bad = good.clone();
        bad[100] ^= 1;
        std::fs::write(&path, &bad).unwrap();
        let o = Command::new(&tool)
            .arg("tiles")
            .arg(&out)
            .args(&keys)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&o.stdout);
        assert!(
            !o.status.success() && text.starts_with("INVALID"),
            "{file}: {text}"
        );
        std::fs::write(&path, &good).unwrap();
    }
}
