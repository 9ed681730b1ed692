//! `fleet-ledger`: the command-line edge. Parses arguments, calls the ledger, prints one line
//! per outcome. Exit status: 0 valid/done, 1 verification failed, 2 bad usage or input.
//! The arguments and the dispatch are here; the commands are in `cli/`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Result, bail};
use clap::{Args, Parser, Subcommand};
use ledger::keys;

mod cli;
use crate::cli::forensics::{replay, report, timeline, why};
use crate::cli::ledger::{
    ImportFrom, backup, check, compact, export, import, init, keygen, openapi, prove_consistency,
    prove_inclusion, publish, read_witnesses, rebuild, rotate_key, token, trial_commit, verify,
    verify_proof,
};
use crate::cli::serve::{promote, serve};

/// mimalloc rather than glibc's malloc: the daemon allocates per request (HTTP, JSON, events,
/// rows) on several threads, and with glibc malloc, free and consolidation were 28% of an
/// append with projections (perf). Closed-loop ingest went from 17.7k to 28.5k events/s
/// (medians, `--bench ingest`), at ~30 MB more RSS. DECISIONS 50.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    /// Rotate the checkpoint signing key (the daemon stopped): records `KeyRotated` to the new
    /// key, signed off by the current one; every later checkpoint is signed by the new key.
    RotateKey {
        /// Ledger database.
        #[arg(long)]
        db: PathBuf,
        /// The key in force (private key file).
        #[arg(long)]
        key: PathBuf,
        /// The new key (private key file, from `keygen`).
        #[arg(long)]
        to: PathBuf,
        /// Why (recorded in the entry).
        #[arg(long)]
        reason: String,
    },
    /// Verify a ledger database or an export bundle offline against the genesis public key.
    Verify {
        #[command(flatten)]
        source: VerifySource,
        /// The genesis public key file (`NAME.pub`), the only thing trusted.
        #[arg(long)]
        key: PathBuf,
        /// With `--tiles`: the auditor's state file. If it exists, verify only what was
        /// published since the checkpoint it holds (O(new entries + log n)); either way,
        /// save the newly verified checkpoint in it for next time.
        #[arg(long, requires = "tiles")]
        since: Option<PathBuf>,
        /// A trusted witness's verifier key file; repeat for each witness. With `--tiles`, the
        /// published checkpoint's cosignatures are checked.
        #[arg(long = "witness", requires = "tiles")]
        witnesses: Vec<PathBuf>,
        /// How many distinct trusted witnesses must have cosigned the published checkpoint
        /// (default: every `--witness` given).
        #[arg(long, requires = "tiles")]
        witnesses_required: Option<usize>,
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
    /// Back up a ledger, even one the daemon is serving: a bundle of the log as of now,
    /// written atomically and verified before it is reported good.
    Backup {
        /// Ledger database (a daemon may have it open).
        #[arg(long)]
        db: PathBuf,
        /// Bundle file to write (must not exist).
        #[arg(long)]
        out: PathBuf,
    },
    /// Compact the database file: give back the pages freed by pruning and rebuilds (the
    /// daemon must be stopped; the content is unchanged).
    Compact {
        /// Ledger database.
        #[arg(long)]
        db: PathBuf,
    },
    /// Restore: verify a bundle against the genesis key and write it, byte for byte, as a new
    /// ledger (projections rebuilt); `serve` continues the same log.
    Import {
        #[command(flatten)]
        from: ImportSource,
        /// The log's genesis public key, pinned.
        #[arg(long)]
        key: PathBuf,
        /// New ledger database to create (must not exist).
        #[arg(long)]
        db: PathBuf,
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
        /// A trusted witness's verifier key file (C2SP tlog-cosignature,
        /// `<name>+<id>+base64(0x04 || key)`); repeat for each witness.
        #[arg(long = "witness")]
        witnesses: Vec<PathBuf>,
        /// How many distinct trusted witnesses must have cosigned the (newer) checkpoint
        /// (default: every `--witness` given).
        #[arg(long)]
        witnesses_required: Option<usize>,
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
        /// Only the log's own records: access changes, key rotations, manifests, annotations,
        /// quarantine lifts, refused inputs, the genesis.
        #[arg(long)]
        log: bool,
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
    /// Make a failover standby the writer by hand: it unseats the current writer (revokes
    /// its election lease) if it holds every acknowledged entry, then this waits until it
    /// answers /healthz/leader 200.
    Promote {
        /// The standby's API, e.g. http://10.0.0.12:8443.
        #[arg(long)]
        url: String,
        /// The failover peer token file (`failover.token_file`).
        #[arg(long)]
        token_file: PathBuf,
        /// Seconds to wait for it to lead.
        #[arg(long, default_value_t = 30)]
        wait: u64,
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
    /// Print the OpenAPI description of the HTTP API (what `GET /v1/openapi.json` serves).
    Openapi,
    /// Publish the log as C2SP tlog-tiles (checkpoint, hash tiles, entry bundles) into a
    /// directory, incrementally: what the directory already holds is kept.
    Publish {
        /// Ledger database (a daemon may have it open).
        #[arg(long)]
        db: PathBuf,
        /// Where to publish: a directory (created if missing; serve it with any static
        /// server), or `s3://BUCKET/PREFIX` (credentials, region and endpoint from the
        /// `AWS_*` environment: docs/OPERATIONS.md).
        #[arg(long)]
        to: fleet_ledger::publish::Destination,
    },
    /// Internal: commit an empty transaction to the file and exit (run in a child by the
    /// commands that write, to find a damaged file before it can abort them).
    #[command(hide = true)]
    TrialCommit {
        /// Ledger database.
        #[arg(long)]
        db: PathBuf,
    },
}

impl Command {
    /// The file the command reads or writes, named when it fails.
    fn subject(&self) -> Option<&Path> {
        match self {
            Command::Init { db, .. }
            | Command::RotateKey { db, .. }
            | Command::Export { db, .. }
            | Command::Backup { db, .. }
            | Command::Compact { db }
            | Command::Rebuild { db }
            | Command::Check { db }
            | Command::Serve { db, .. }
            | Command::TrialCommit { db }
            | Command::Publish { db, .. } => Some(db),
            Command::Verify { source, .. } => source
                .db
                .as_deref()
                .or(source.bundle.as_deref())
                .or(source.tiles.as_deref()),
            Command::Replay { source, .. }
            | Command::Timeline { source, .. }
            | Command::Why { source, .. }
            | Command::Report { source, .. } => source.db.as_deref().or(source.bundle.as_deref()),
            Command::Prove { proof } => match proof {
                ProveCommand::Inclusion { db, .. } | ProveCommand::Consistency { db, .. } => {
                    Some(db)
                }
            },
            Command::VerifyProof { proof, .. } => Some(proof),
            Command::Import { from, .. } => from.bundle.as_deref().or(from.tiles.as_deref()),
            Command::Keygen { .. }
            | Command::Token { .. }
            | Command::Promote { .. }
            | Command::Openapi => None,
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

/// What `verify` reads: a database, a bundle, or published tiles.
#[derive(Args, Debug)]
#[group(required = true, multiple = false)]
struct VerifySource {
    /// A ledger database.
    #[arg(long)]
    db: Option<PathBuf>,
    /// An export bundle.
    #[arg(long)]
    bundle: Option<PathBuf>,
    /// Published C2SP tlog-tiles (`fleet-ledger publish`): a directory, the URL prefix
    /// they are served at (`https://…`), or `s3://BUCKET/PREFIX`.
    #[arg(long)]
    tiles: Option<PathBuf>,
}

/// Where `import` reads the log.
#[derive(Args, Debug)]
#[group(required = true, multiple = false)]
struct ImportSource {
    /// A bundle (`export`, `backup`, or `GET /v1/ledger/export`).
    #[arg(long)]
    bundle: Option<PathBuf>,
    /// Published tiles (`publish`): a directory, a URL prefix or `s3://BUCKET/PREFIX`. They
    /// hold every entry but only the latest checkpoint, which is all the restored ledger has.
    #[arg(long)]
    tiles: Option<PathBuf>,
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
    contain_panics(matches!(cli.command, Command::TrialCommit { .. }));
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(cli.command)));
    let outcome = match outcome {
        Ok(outcome) => outcome,
        // A library (in practice redb, on a damaged file) panicked on this thread: one line
        // naming the file, never a backtrace; exit 2, as for any other unreadable input.
        // `println!` panics on a closed stdout ("failed printing to stdout: Broken pipe").
        Err(_) if last_panic().starts_with("failed printing to stdout") => Ok(()),
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
        // A reader that closed stdout (`… | head`) ends the command quietly, as in standard
        // Unix tools: it asked for no more.
        Err(e) if closed_stdout(&e) => ExitCode::SUCCESS,
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

/// Whether the command failed because its stdout was closed (EPIPE).
fn closed_stdout(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
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
///
/// `to_stderr`: also print it at once (the trial commit's child, which redb may abort before
/// the command's edge can report anything; its parent reads the line).
fn contain_panics(to_stderr: bool) {
    std::panic::set_hook(Box::new(move |info| {
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
        if to_stderr {
            eprintln!("panic: {text}");
        }
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
        Command::Init { db, key, origin } => init(&db, &key, &origin),
        Command::RotateKey {
            db,
            key,
            to,
            reason,
        } => rotate_key(&db, &key, &to, &reason),
        Command::Verify {
            source,
            key,
            since,
            witnesses,
            witnesses_required,
        } => {
            let key = keys::read_public_key(&key)?;
            let witnesses = read_witnesses(&witnesses, witnesses_required)?;
            verify(&source, &key, since.as_deref(), &witnesses)
        }
        Command::Export { db, out } => export(&db, &out),
        Command::Backup { db, out } => backup(&db, &out),
        Command::Compact { db } => compact(&db),
        Command::TrialCommit { db } => trial_commit(&db),
        Command::Import { from, key, db } => {
            let from = match (&from.bundle, &from.tiles) {
                (Some(b), _) => ImportFrom::Bundle(b),
                (None, Some(t)) => ImportFrom::Tiles(t),
                (None, None) => bail!("--bundle or --tiles is required"),
            };
            import(from, &key, &db)
        }
        Command::Prove { proof } => match proof {
            ProveCommand::Inclusion { db, seq, size } => prove_inclusion(&db, seq, size),
            ProveCommand::Consistency { db, from, to } => prove_consistency(&db, from, to),
        },
        Command::VerifyProof {
            proof,
            keys: key_files,
            witnesses,
            witnesses_required,
        } => verify_proof(&proof, &key_files, &witnesses, witnesses_required),
        Command::Rebuild { db } => rebuild(&db),
        Command::Check { db } => check(&db),
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
            log,
            json,
        } => timeline(
            &source,
            host,
            rollout.as_deref(),
            since.as_deref(),
            until.as_deref(),
            log,
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
        } => report(&source, &rollout, &out),
        Command::Token { role, name } => token(&role, &name),
        Command::Promote {
            url,
            token_file,
            wait,
        } => promote(&url, &token_file, wait),
        Command::Publish { db, to } => publish(&db, &to),
        Command::Openapi => openapi(),
    }
}
