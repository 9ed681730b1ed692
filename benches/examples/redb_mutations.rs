//! Single-byte mutations of a ledger file, read two ways: with redb alone (open read-only,
//! read every table), to find where redb panics on a damaged file (the upstream report in
//! `fixtures/redb-panics/`), and the way `fleet-ledger verify --db` and `check --db` read it,
//! to count what still escapes as a panic.
//!
//! `cargo run --release -p fleet-ledger-benches --example redb_mutations -- DB MUTATIONS SEED [OUT]`
//!
//! With OUT, one mutation per distinct redb panic site is appended to that file as a line
//! `site<TAB>offset<TAB>from<TAB>to` (the format of `fixtures/redb-panics/mutations.tsv`).

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::Path;
use std::sync::Mutex;

use redb::{ReadableDatabase, ReadableTable, TableDefinition, TableHandle};

static LAST: Mutex<String> = Mutex::new(String::new());

const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("ledger.log");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("ledger.meta");

/// xorshift64*: a seeded stream of offsets, so a sweep can be repeated exactly.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// What redb alone does with the file: open it read-only and read every table through.
/// `Err` is a clean error; a panic propagates.
fn read_with_redb(path: &Path) -> Result<u64, String> {
    let db = redb::Builder::new()
        .open_read_only(path)
        .map_err(|e| e.to_string())?;
    let txn = db.begin_read().map_err(|e| e.to_string())?;
    let mut rows = 0u64;
    let log = txn.open_table(LOG).map_err(|e| e.to_string())?;
    for r in log.iter().map_err(|e| e.to_string())? {
        let (_, v) = r.map_err(|e| e.to_string())?;
        rows += v.value().len() as u64;
    }
    let meta = txn.open_table(META).map_err(|e| e.to_string())?;
    for r in meta.iter().map_err(|e| e.to_string())? {
        r.map_err(|e| e.to_string())?;
        rows += 1;
    }
    for t in txn.list_tables().map_err(|e| e.to_string())? {
        let name = t.name().to_string();
        if name.starts_with("ledger.") {
            continue;
        }
        let def: TableDefinition<&[u8], &[u8]> = TableDefinition::new(&name);
        let table = txn.open_table(def).map_err(|e| e.to_string())?;
        for r in table.iter().map_err(|e| e.to_string())? {
            r.map_err(|e| e.to_string())?;
            rows += 1;
        }
    }
    Ok(rows)
}

/// What `verify --db` and `check --db` do with it.
fn read_like_the_cli(path: &Path, key: &ledger::keys::PublicKey) -> Result<(), String> {
    let ro = ledger::store::ReadOnlyStore::open_with(path, true).map_err(|e| e.to_string())?;
    let snap = ro.snapshot().map_err(|e| e.to_string())?;
    snap.verify(key, |_| {}).map_err(|e| e.to_string())?;
    drop(snap);
    drop(ro);
    engine::materialize::check(path, |_| {}).map_err(|e| e.to_string())?;
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, db, n, seed, rest @ ..] = args.as_slice() else {
        eprintln!("usage: redb_mutations DB MUTATIONS SEED [OUT]");
        std::process::exit(2);
    };
    let n: u64 = n.parse().expect("MUTATIONS");
    let mut rng = Rng(seed
        .parse::<u64>()
        .expect("SEED")
        .wrapping_mul(2)
        .wrapping_add(1));
    let out = rest.first().map(Path::new);
    let original = std::fs::read(db).expect("reading DB");
    let key = {
        let ro = ledger::store::ReadOnlyStore::open(Path::new(db)).expect("DB opens");
        let snap = ro.snapshot().expect("snapshot");
        snap.keys_in_force().expect("keys")[0].clone()
    };
    std::panic::set_hook(Box::new(|info| {
        let at = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| (*s).to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        *LAST.lock().unwrap() = format!("{at}\t{msg}");
    }));
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("mutated.redb");
    let mut sites: BTreeMap<String, (u64, u8, u8)> = BTreeMap::new();
    let (mut redb_panics, mut cli_panics, mut cli_errors) = (0u64, 0u64, 0u64);
    for _ in 0..n {
        let offset = rng.next() % original.len() as u64;
        let xor = (rng.next() % 255 + 1) as u8;
        let mut bytes = original.clone();
        bytes[offset as usize] ^= xor;
        std::fs::write(&file, &bytes).expect("writing the mutation");
        if std::panic::catch_unwind(|| read_with_redb(&file)).is_err() {
            redb_panics += 1;
            let site = LAST.lock().unwrap().clone();
            let site = site.split('\t').next().unwrap_or("").to_string();
            // The registry path up to the crate is this machine's, not the bug's.
            let site = site.rsplit("redb-").next().unwrap_or(&site).to_string();
            sites.entry(format!("redb-{site}")).or_insert((
                offset,
                original[offset as usize],
                bytes[offset as usize],
            ));
        }
        std::fs::write(&file, &bytes).expect("writing the mutation");
        match std::panic::catch_unwind(|| read_like_the_cli(&file, &key)) {
            Ok(Ok(())) => {}
            Ok(Err(_)) => cli_errors += 1,
            Err(_) => {
                cli_panics += 1;
                eprintln!(
                    "cli path panicked at byte {offset}: {}",
                    LAST.lock().unwrap()
                );
            }
        }
    }
    println!(
        "{n} single-byte mutations of {db} ({} bytes), seed {seed}",
        original.len()
    );
    println!(
        "  redb alone (read-only open, read every table): {redb_panics} panics at {} sites",
        sites.len()
    );
    println!("  verify + check path: {cli_errors} clean errors, {cli_panics} panics");
    for (site, (offset, was, now)) in &sites {
        println!("  {site} (byte {offset}: {was:#04x} -> {now:#04x})");
        if let Some(out) = out {
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(out)
                .expect("OUT");
            writeln!(f, "{site}\t{offset}\t{was}\t{now}").expect("writing OUT");
        }
    }
}
