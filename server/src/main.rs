//! `fleet-ledger`: the command-line edge. Parses arguments, calls the ledger, prints one line
//! per outcome. Exit status: 0 valid/done, 1 verification failed, 2 bad usage or input.

use std::fs;
use std::io::{BufReader, BufWriter, IsTerminal as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result, bail};
use clap::{Args, Parser, Subcommand};
use fleet_ledger::materialize::{CheckOutcome, Ledger};

/// mimalloc rather than glibc's malloc: the daemon allocates per request (HTTP, JSON, events,
/// rows) on several threads, and with glibc malloc, free and consolidation were 28% of an
/// append with projections (perf). Closed-loop ingest went from 17.7k to 28.5k events/s
/// (medians, `--bench ingest`), at ~30 MB more RSS. DECISIONS 50.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;
use indicatif::{ProgressBar, ProgressStyle};
use ledger::bundle::verify_bundle;
use ledger::keys::{self, PublicKey, Signer};
use ledger::proof::{ConsistencyProof, InclusionProof};
use ledger::store::{ReadOnlyStore, Snapshot};

#[derive(Parser, Debug)]
#[command(
    name = "fleet-ledger",
    version,
    about = "The signed, hash-chained ledger of a NixOS fleet control plane"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Generate an ed25519 signing key: DIR/NAME.key (mode 0600) and DIR/NAME.pub.
    Keygen {
        /// Directory to write the key files into (created if missing).
        #[arg(long)]
        out: PathBuf,
        /// Key name, as it appears in checkpoint signature lines.
        #[arg(long, default_value = "fleet-ledger")]
        name: String,
    },
    /// Create a new ledger whose genesis entry pins the given signing key.
    Init {
        /// Ledger database to create (must not exist).
        #[arg(long)]
        db: PathBuf,
        /// Private key file (from `keygen`).
        #[arg(long)]
        key: PathBuf,
        /// The log's origin line, e.g. `cp.example.org/fleet`.
        #[arg(long)]
        origin: String,
    },
    /// Verify a ledger database or an export bundle offline against the genesis public key.
    Verify {
        #[command(flatten)]
        source: Source,
        /// The genesis public key file (`NAME.pub`), the only thing trusted.
        #[arg(long)]
        key: PathBuf,
    },
    /// Export a ledger database as a portable bundle.
    Export {
        /// Ledger database.
        #[arg(long)]
        db: PathBuf,
        /// Bundle file to write (must not exist).
        #[arg(long)]
        out: PathBuf,
    },
    /// Produce an inclusion or consistency proof, as JSON on stdout.
    Prove {
        #[command(subcommand)]
        proof: ProveCommand,
    },
    /// Check a proof file against one or more trusted public keys.
    VerifyProof {
        /// Proof file (from `prove`).
        #[arg(long)]
        proof: PathBuf,
        /// Trusted public key file; repeat for every key the checkpoints may be signed by.
        #[arg(long = "key", required = true)]
        keys: Vec<PathBuf>,
    },
    /// Rebuild every projection table from the log.
    Rebuild {
        /// Ledger database.
        #[arg(long)]
        db: PathBuf,
    },
    /// Rebuild the projections in memory and compare them with the stored tables.
    Check {
        /// Ledger database.
        #[arg(long)]
        db: PathBuf,
    },
    /// The projections at any point of the log, or (--check) the determinism check: re-run
    /// every decision over the recorded inputs with the recorded time and compare.
    Replay {
        #[command(flatten)]
        source: Source,
        /// State after this entry.
        #[arg(long, conflicts_with_all = ["at_time", "check"])]
        at_seq: Option<u64>,
        /// State after the last entry recorded at or before this RFC 3339 time.
        #[arg(long, conflicts_with = "check")]
        at_time: Option<String>,
        /// Re-run the decisions and report the first divergence (exit 1).
        #[arg(long)]
        check: bool,
        /// Also show the host records of Pruned rollouts (frozen since pruning): a full fold
        /// from entry 0 instead of from the nearest replay snapshot.
        #[arg(long, conflicts_with = "check")]
        include_pruned: bool,
        /// JSON instead of tables.
        #[arg(long)]
        json: bool,
    },
    /// Every entry about one host or one rollout, one line each.
    Timeline {
        #[command(flatten)]
        source: Source,
        /// Host name.
        #[arg(long)]
        host: Option<String>,
        /// Rollout id (`channel@ref`).
        #[arg(long)]
        rollout: Option<String>,
        /// From this RFC 3339 time (CP clock).
        #[arg(long)]
        since: Option<String>,
        /// Up to this RFC 3339 time (CP clock).
        #[arg(long)]
        until: Option<String>,
        /// JSON lines instead of text.
        #[arg(long)]
        json: bool,
    },
    /// The chain of decisions for one host in one rollout: gates, dispatches, reports,
    /// transitions, and how it ended.
    Why {
        #[command(flatten)]
        source: Source,
        /// Host name.
        #[arg(long)]
        host: String,
        /// Rollout id (`channel@ref`).
        #[arg(long)]
        rollout: String,
        /// JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// One rollout as a self-contained HTML page (hosts by wave, states over time, gate
    /// blocks, failures and rollbacks; click for the entry).
    Report {
        #[command(flatten)]
        source: Source,
        /// Rollout id (`channel@ref`).
        #[arg(long)]
        rollout: String,
        /// The HTML file to write.
        #[arg(long)]
        out: PathBuf,
    },
    /// Run the control-plane daemon: HTTP API, single writer with group commit.
    Serve {
        /// Ledger database (created with `init`).
        #[arg(long)]
        db: PathBuf,
        /// Address to listen on, e.g. 127.0.0.1:8080.
        #[arg(long)]
        listen: std::net::SocketAddr,
        /// Configuration file (JSON; see docs/OPERATIONS.md).
        #[arg(long)]
        config: PathBuf,
    },
    /// Generate an API token and print it with the config entry that admits it.
    Token {
        /// agent, operator, auditor or ci.
        #[arg(long)]
        role: String,
        /// The host name (agents) or the person or system.
        #[arg(long)]
        name: String,
    },
}

impl Command {
    /// The file the command reads or writes, named when it fails.
    fn subject(&self) -> Option<&Path> {
        match self {
            Command::Init { db, .. }
            | Command::Export { db, .. }
            | Command::Rebuild { db }
            | Command::Check { db }
            | Command::Serve { db, .. } => Some(db),
            Command::Verify { source, .. }
            | Command::Replay { source, .. }
            | Command::Timeline { source, .. }
            | Command::Why { source, .. }
            | Command::Report { source, .. } => source.db.as_deref().or(source.bundle.as_deref()),
            Command::Prove { proof } => match proof {
                ProveCommand::Inclusion { db, .. } | ProveCommand::Consistency { db, .. } => {
                    Some(db)
                }
            },
            Command::VerifyProof { proof, .. } => Some(proof),
            Command::Keygen { .. } | Command::Token { .. } => None,
        }
    }
}

#[derive(Args, Debug)]
#[group(required = true, multiple = false)]
struct Source {
    /// A ledger database.
    #[arg(long)]
    db: Option<PathBuf>,
    /// An export bundle.
    #[arg(long)]
    bundle: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
enum ProveCommand {
    /// Prove that entry SEQ is in the tree of the checkpoint at SIZE (default: latest).
    Inclusion {
        /// Ledger database.
        #[arg(long)]
        db: PathBuf,
        /// The entry's seq.
        #[arg(long)]
        seq: u64,
        /// A checkpointed tree size.
        #[arg(long)]
        size: Option<u64>,
    },
    /// Prove that the checkpoint at TO extends the checkpoint at FROM.
    Consistency {
        /// Ledger database.
        #[arg(long)]
        db: PathBuf,
        /// Older checkpointed size.
        #[arg(long)]
        from: u64,
        /// Newer checkpointed size.
        #[arg(long)]
        to: u64,
    },
}

/// A failed verification: reported as one line, exit status 1.
#[derive(Debug)]
struct Invalid(String);

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for Invalid {}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let subject = cli.command.subject().map(Path::to_path_buf);
    contain_panics();
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(cli.command)));
    let outcome = match outcome {
        Ok(outcome) => outcome,
        // A library (in practice redb, on a damaged file) panicked on this thread: one line
        // naming the file, never a backtrace; exit 2, as for any other unreadable input.
        Err(_) => {
            let what = subject.map_or_else(String::new, |p| format!("{}: ", p.display()));
            Err(anyhow::anyhow!(
                "{what}reading the file failed inside the storage library ({}): the file is damaged",
                last_panic()
            ))
        }
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if let Some(invalid) = e.downcast_ref::<Invalid>() {
                eprintln!("INVALID: {invalid}");
                ExitCode::from(1)
            } else {
                eprintln!("error: {e:#}");
                ExitCode::from(2)
            }
        }
    }
}

/// The message and place of the last panic on any thread.
static LAST_PANIC: std::sync::Mutex<String> = std::sync::Mutex::new(String::new());

fn last_panic() -> String {
    LAST_PANIC
        .lock()
        .map(|m| m.clone())
        .unwrap_or_else(|p| p.into_inner().clone())
}

/// Replaces the default panic report (several lines and a backtrace hint on stderr) with a
/// record the command's edge turns into one line, and a log event for the daemon.
fn contain_panics() {
    std::panic::set_hook(Box::new(|info| {
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| (*s).to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".to_string());
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let text = format!("{msg}{at}");
        let thread = std::thread::current()
            .name()
            .unwrap_or("unnamed")
            .to_string();
        tracing::error!(thread, panic = %text, "a thread panicked");
        if let Ok(mut last) = LAST_PANIC.lock() {
            *last = text;
        }
    }));
}

fn run(command: Command) -> Result<()> {
    match command {
        Command::Keygen { out, name } => keygen(&out, &name),
        Command::Init { db, key, origin } => {
            let signer = keys::read_private_key(&key)?;
            let ledger = Ledger::create(&db, &origin, signer, now_us())?;
            println!(
                "created {} (origin {origin}, genesis key {})",
                db.display(),
                ledger.store().public_key().to_text()
            );
            Ok(())
        }
        Command::Verify { source, key } => {
            let key = keys::read_public_key(&key)?;
            verify(&source, &key)
        }
        Command::Export { db, out } => export(&db, &out),
        Command::Prove { proof } => {
            let json = match proof {
                ProveCommand::Inclusion { db, seq, size } => open_ro(&db)?
                    .snapshot()?
                    .inclusion_proof(seq, size)?
                    .to_json(),
                ProveCommand::Consistency { db, from, to } => open_ro(&db)?
                    .snapshot()?
                    .consistency_proof(from, to)?
                    .to_json(),
            };
            println!("{json}");
            Ok(())
        }
        Command::VerifyProof {
            proof,
            keys: key_files,
        } => verify_proof(&proof, &key_files),
        Command::Rebuild { db } => {
            let size = open_ro(&db)?.snapshot()?.size();
            let bar = progress(Some(size), "rebuilding");
            let n = fleet_ledger::materialize::rebuild(&db, |n| bar.set_position(n))?;
            bar.finish_and_clear();
            println!(
                "rebuilt {} projection tables from {n} entries",
                projections::tables::ALL.len()
            );
            Ok(())
        }
        Command::Check { db } => {
            let size = open_ro(&db)?.snapshot()?.size();
            let bar = progress(Some(size), "checking");
            let outcome = fleet_ledger::materialize::check(&db, |n| bar.set_position(n))?;
            bar.finish_and_clear();
            match outcome {
                CheckOutcome::Identical { entries } => {
                    println!("OK: every projection table equals a fold of the {entries} entries");
                    Ok(())
                }
                CheckOutcome::Differs { table, detail } => {
                    Err(Invalid(format!("table {table}: {detail}")).into())
                }
                CheckOutcome::Stale { detail } => Err(Invalid(format!(
                    "projections are stale: {detail} (run `fleet-ledger rebuild`)"
                ))
                .into()),
            }
        }
        Command::Serve { db, listen, config } => serve(db, listen, &config),
        Command::Replay {
            source,
            at_seq,
            at_time,
            check,
            include_pruned,
            json,
        } => replay(
            &source,
            at_seq,
            at_time.as_deref(),
            check,
            include_pruned,
            json,
        ),
        Command::Timeline {
            source,
            host,
            rollout,
            since,
            until,
            json,
        } => timeline(
            &source,
            host,
            rollout.as_deref(),
            since.as_deref(),
            until.as_deref(),
            json,
        ),
        Command::Why {
            source,
            host,
            rollout,
            json,
        } => why(&source, &host, &rollout, json),
        Command::Report {
            source,
            rollout,
            out,
        } => {
            let rid = ledger::domain::RolloutId::parse(&rollout)?;
            let Some(html) = fleet_ledger::forensics::report(forensic_source(&source), &rid)?
            else {
                bail!("no entry is about rollout {rollout}");
            };
            fs::write(&out, html).with_context(|| format!("writing {}", out.display()))?;
            println!("wrote {}", out.display());
            Ok(())
        }
        Command::Token { role, name } => token(&role, &name),
    }
}

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

fn open_ro(db: &Path) -> Result<ReadOnlyStore> {
    ReadOnlyStore::open(db).with_context(|| format!("opening {}", db.display()))
}

/// For commands that read the whole file anyway: redb's integrity check first, so a damaged
/// file is reported as such (unless a daemon has it open: then its snapshots are read).
fn open_checked(db: &Path) -> Result<ReadOnlyStore> {
    ReadOnlyStore::open_with(db, true).with_context(|| format!("opening {}", db.display()))
}

/// How a database was read, for the verdict line.
fn read_note(ro: &ReadOnlyStore) -> &'static str {
    match ro.mode() {
        ledger::store::ReadMode::BesideWriter => {
            " (read beside the running writer: its latest commit)"
        }
        ledger::store::ReadMode::Private {
            recovered: true, ..
        } => " (the file was not closed cleanly: recovered in memory, the file left unchanged)",
        ledger::store::ReadMode::Private { .. } => "",
    }
}

fn keygen(out: &Path, name: &str) -> Result<()> {
    let signer = Signer::generate(name)?;
    fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let key_path = out.join(format!("{name}.key"));
    let pub_path = out.join(format!("{name}.pub"));
    if pub_path.exists() {
        bail!(
            "{} already exists: refusing to overwrite a key",
            pub_path.display()
        );
    }
    keys::write_private_key(&key_path, &signer)?;
    keys::write_public_key(&pub_path, signer.public())?;
    println!("private key: {} (mode 0600)", key_path.display());
    println!("public key:  {}", pub_path.display());
    println!("{}", signer.public().to_text());
    Ok(())
}

/// A progress bar on stderr, only when stderr is a terminal.
fn progress(total: Option<u64>, what: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = match total {
        Some(n) => ProgressBar::new(n).with_style(
            ProgressStyle::with_template(
                "{msg} [{bar:40}] {pos}/{len} entries ({per_sec}, eta {eta})",
            )
            .expect("valid template"),
        ),
        None => ProgressBar::new_spinner().with_style(
            ProgressStyle::with_template("{spinner} {msg} {pos} entries ({per_sec})")
                .expect("valid template"),
        ),
    };
    bar.set_message(what.to_string());
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

fn verify(source: &Source, key: &PublicKey) -> Result<()> {
    let mut note = "";
    let result = if let Some(db) = &source.db {
        let ro = open_checked(db)?;
        note = read_note(&ro);
        let snap = ro.snapshot()?;
        let bar = progress(Some(snap.size()), "verifying");
        let r = snap.verify(key, |n| bar.set_position(n));
        bar.finish_and_clear();
        r
    } else {
        let path = source.bundle.as_ref().expect("clap enforces one source");
        let file = fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let bar = progress(None, "verifying");
        let r = verify_bundle(BufReader::with_capacity(1 << 20, file), key, |n| {
            bar.set_position(n)
        });
        bar.finish_and_clear();
        r
    };
    let log = result.map_err(|e| Invalid(e.to_string()))?;
    let cp = log.checkpoint();
    println!(
        "OK: {} entries, {} checkpoints, {} key(s); origin {}; root {}; head {}{note}",
        log.size(),
        log.checkpoints(),
        log.keys().len(),
        log.origin(),
        cp.root.to_base64(),
        cp.head.to_base64()
    );
    Ok(())
}

fn export(db: &Path, out: &Path) -> Result<()> {
    if out.exists() {
        bail!("{} already exists: refusing to overwrite", out.display());
    }
    let ro = open_checked(db)?;
    let snap = ro.snapshot()?;
    let (entries, checkpoints) = write_bundle(&snap, out)?;
    println!(
        "exported {entries} entries and {checkpoints} checkpoints to {}",
        out.display()
    );
    Ok(())
}

/// Writes the bundle to a temporary sibling, fsyncs, then renames: a bundle file either
/// exists whole or not at all.
fn write_bundle(snap: &Snapshot, out: &Path) -> Result<(u64, u64)> {
    let dir = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    let bar = progress(Some(snap.size()), "exporting");
    let mut w = BufWriter::with_capacity(1 << 20, tmp.as_file());
    let counts = snap.export(&mut w, |n| bar.set_position(n))?;
    w.flush()?;
    drop(w);
    bar.finish_and_clear();
    tmp.as_file().sync_all()?;
    tmp.persist_noclobber(out)
        .map_err(|e| e.error)
        .with_context(|| format!("writing {}", out.display()))?;
    Ok(counts)
}

fn verify_proof(proof: &Path, key_files: &[PathBuf]) -> Result<()> {
    let keys = key_files
        .iter()
        .map(|k| keys::read_public_key(k).with_context(|| format!("reading {}", k.display())))
        .collect::<Result<Vec<_>>>()?;
    let meta = fs::metadata(proof).with_context(|| format!("reading {}", proof.display()))?;
    if meta.len() > 64 << 20 {
        bail!(
            "{} is {} bytes: too large for a proof file",
            proof.display(),
            meta.len()
        );
    }
    let text = fs::read_to_string(proof).with_context(|| format!("reading {}", proof.display()))?;
    let kind = text
        .find("\"format\"")
        .map(|i| &text[i..])
        .unwrap_or_default();
    if kind.contains(ledger::proof::CONSISTENCY_FORMAT) {
        let p = ConsistencyProof::from_json(&text)?;
        let (old, new) = p.verify(&keys).map_err(|e| Invalid(e.to_string()))?;
        println!(
            "OK: the log {} at size {} extends size {}",
            new.origin, new.size, old.size
        );
    } else {
        let p = InclusionProof::from_json(&text)?;
        let cp = p.verify(&keys).map_err(|e| Invalid(e.to_string()))?;
        println!(
            "OK: entry seq {} is in the log {} at size {} (root {})",
            p.seq,
            cp.origin,
            cp.size,
            cp.root.to_base64()
        );
    }
    Ok(())
}

fn forensic_source(s: &Source) -> fleet_ledger::forensics::Source<'_> {
    match (&s.db, &s.bundle) {
        (Some(db), _) => fleet_ledger::forensics::Source::Db(db),
        (_, Some(b)) => fleet_ledger::forensics::Source::Bundle(b),
        (None, None) => unreachable!("clap requires one of --db and --bundle"),
    }
}

fn time_arg(name: &str, v: Option<&str>) -> Result<Option<i64>> {
    v.map(|t| fleet_ledger::wire::ts::parse(t).map_err(|e| anyhow::anyhow!("--{name}: {e}")))
        .transpose()
}

fn replay(
    s: &Source,
    at_seq: Option<u64>,
    at_time: Option<&str>,
    check: bool,
    include_pruned: bool,
    json: bool,
) -> Result<()> {
    let src = forensic_source(s);
    if check {
        let r = fleet_ledger::forensics::check(src)?;
        if json {
            println!(
                "{}",
                serde_json::json!({"entries": r.entries, "decisions": r.decisions, "plans": r.plans,
                    "divergence": r.divergence.as_ref().map(|d| serde_json::json!({"seq": d.seq, "recorded": d.recorded, "recomputed": d.recomputed}))})
            );
        }
        return match r.divergence {
            None => {
                if !json {
                    println!(
                        "deterministic: {} entries, {} decisions and {} planner runs recomputed, all identical",
                        r.entries, r.decisions, r.plans
                    );
                }
                Ok(())
            }
            Some(d) => Err(Invalid(format!(
                "divergence at seq {}: recorded {}; recomputed {}",
                d.seq, d.recorded, d.recomputed
            ))
            .into()),
        };
    }
    let at_time = time_arg("at-time", at_time)?;
    if at_seq.is_none() && at_time.is_none() {
        bail!("give --at-seq N, --at-time T or --check");
    }
    let point = fleet_ledger::forensics::Point {
        seq: at_seq,
        time: at_time,
    };
    let (state, omitted) = if include_pruned {
        (
            fleet_ledger::forensics::replay_full(src, point.seq, point.time)?,
            0,
        )
    } else {
        let r =
            fleet_ledger::forensics::replay(src, point, fleet_ledger::snapshots::SNAPSHOT_EVERY)?;
        if let Some(w) = &r.cache_warning {
            eprintln!("warning: replay snapshots not saved ({w}); replays stay full folds");
        }
        (r.state, r.pruned_hosts_omitted)
    };
    if json {
        let mut v = fleet_ledger::forensics::state_json(&state);
        v["pruned_hosts_omitted"] = omitted.into();
        println!("{v}");
    } else {
        print!("{}", fleet_ledger::forensics::state_text(&state));
        if omitted > 0 {
            println!(
                "\n({omitted} host records of Pruned rollouts not shown; --include-pruned shows them)"
            );
        }
    }
    Ok(())
}

fn timeline(
    s: &Source,
    host: Option<String>,
    rollout: Option<&str>,
    since: Option<&str>,
    until: Option<&str>,
    json: bool,
) -> Result<()> {
    if host.is_none() && rollout.is_none() {
        bail!("give --host H or --rollout R");
    }
    let filter = fleet_ledger::forensics::Filter {
        host,
        rollout: rollout.map(ledger::domain::RolloutId::parse).transpose()?,
        since: time_arg("since", since)?,
        until: time_arg("until", until)?,
    };
    let lines = fleet_ledger::forensics::timeline(forensic_source(s), &filter)?;
    let mut out = std::io::stdout().lock();
    for l in &lines {
        if json {
            writeln!(out, "{}", serde_json::to_string(l)?)?;
        } else {
            writeln!(
                out,
                "{:>8}  {}  {:<27}  {:<22} {:<20} {}",
                l.seq,
                l.cp_time,
                l.agent_time.as_deref().unwrap_or("-"),
                l.kind,
                l.host.as_deref().or(l.rollout.as_deref()).unwrap_or("-"),
                l.summary
            )?;
        }
    }
    Ok(())
}

fn why(s: &Source, host: &str, rollout: &str, json: bool) -> Result<()> {
    let rid = ledger::domain::RolloutId::parse(rollout)?;
    let (lines, rec, r) = fleet_ledger::forensics::why(forensic_source(s), host, &rid)?;
    if rec.is_none() {
        bail!("host {host} was never part of rollout {rollout}");
    }
    if json {
        println!(
            "{}",
            serde_json::json!({"entries": lines, "host": rec, "rollout": r})
        );
        return Ok(());
    }
    println!("why: {host} in {rollout}\n");
    for l in &lines {
        println!("{:>8}  {}  {}", l.seq, l.cp_time, l.summary);
    }
    if let (Some(h), Some(r)) = (rec, r) {
        println!(
            "\nnow: host {:?} (wave {}, last agent seq {}, changed at seq {}); rollout {:?} at wave {}",
            h.state, h.wave, h.last_event_seq, h.updated_seq, r.state, r.current_wave
        );
    }
    Ok(())
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

fn serve(db: PathBuf, listen: std::net::SocketAddr, config: &Path) -> Result<()> {
    let _log = fleet_ledger::logging::init();
    runtime()?.block_on(async move {
        // The signal handlers come first: a SIGTERM at any later moment of start-up or
        // shutdown is a request to stop cleanly (exit 0), never the default action that
        // kills the process and leaves the file needing recovery.
        let stop = Signals::install()?;
        let settings = fleet_ledger::config::Config::load(config)?;
        let signer = fleet_ledger::daemon::signer(&settings.config.signing_key)?;
        if !db.exists() {
            bail!(
                "{} does not exist: create it first with `fleet-ledger init --db {} --key KEY --origin ORIGIN`",
                db.display(),
                db.display()
            );
        }
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("listening on {listen}"))?;
        let start = fleet_ledger::daemon::Daemon::start(
            db,
            settings,
            signer,
            listener,
            fleet_ledger::daemon::system_clock(),
        );
        // A signal while the ledger opens: let the open finish (it is not interruptible
        // mid-transaction), then shut down at once.
        let mut stop = std::pin::pin!(stop.recv());
        let daemon = start.await?;
        daemon.run_until(stop.as_mut()).await
    })
}

/// SIGTERM and SIGINT, registered with the runtime.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            term: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
            int: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
        })
    }

    /// The first SIGTERM or SIGINT (including one that arrived before this was polled).
    async fn recv(mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}

fn token(role: &str, name: &str) -> Result<()> {
    let role: fleet_ledger::auth::Role = serde_json::from_value(serde_json::json!(role))
        .map_err(|_| anyhow::anyhow!("--role must be agent, operator, auditor or ci"))?;
    if role == fleet_ledger::auth::Role::Agent {
        ledger::domain::check_host(name)?;
    }
    let t = fleet_ledger::auth::generate_token()?;
    let entry = fleet_ledger::config::TokenEntry {
        sha256: fleet_ledger::auth::hex(&fleet_ledger::auth::digest(&t)),
        role,
        name: name.to_string(),
    };
    println!("token (give it to {name}; it is not stored anywhere): {t}");
    println!(
        "config entry for \"tokens\": {}",
        serde_json::to_string(&entry)?
    );
    Ok(())
}
