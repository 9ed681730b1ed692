//! `fleet-ledger-demo`: the daemon on a fresh ledger, CI posting a signed sample fleet, and
//! simulated agents over real HTTP through whole rollouts; then the ledger is verified and
//! its projections checked, and the commands to try next are printed. Not part of the
//! product: its CI key is a fixture, public on purpose.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Result, bail};
use clap::Parser;
use engine::materialize::CheckOutcome;
use fleet_ledger_demo as demo;
use ledger::keys;
use ledger::store::ReadOnlyStore;

/// Starts the daemon on a fresh ledger, drives simulated agents over HTTP through full
/// rollouts (with a failure, a rollback, a quarantine and a successor), verifies the ledger
/// and prints what to try next.
#[derive(Parser, Debug)]
#[command(name = "fleet-ledger-demo", version)]
struct Cli {
    /// Hosts in the sample fleet.
    #[arg(long, default_value_t = 200)]
    hosts: usize,
    /// Ledger database to create (default: in a new temporary directory).
    #[arg(long)]
    db: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.hosts, cli.db) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(hosts: usize, db: Option<PathBuf>) -> Result<()> {
    if hosts == 0 || hosts > 100_000 {
        bail!("--hosts must be between 1 and 100000");
    }
    let dir = match &db {
        Some(p) => {
            if p.exists() {
                bail!("{} already exists: choose another --db", p.display());
            }
            let parent = p
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            parent.join(format!(
                "{}.demo",
                p.file_name().and_then(|n| n.to_str()).unwrap_or("ledger")
            ))
        }
        None => tempfile::Builder::new()
            .prefix("fleet-ledger-demo-")
            .tempdir()?
            .keep(),
    };
    println!(
        "fleet-ledger demo: {hosts} hosts, files in {}",
        dir.display()
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let summary = runtime.block_on(demo::run(demo::Options {
        hosts,
        dir: dir.clone(),
        verbose: true,
        db,
    }))?;
    let genesis = keys::read_public_key(&summary.genesis_pub)?;
    let ro = ReadOnlyStore::open(&summary.db)?;
    let log = ro.snapshot()?.verify(&genesis, |_| {})?;
    drop(ro);
    println!(
        "\nverified the ledger: {} entries, {} signed checkpoints",
        log.size(),
        log.checkpoints()
    );
    match engine::materialize::check(&summary.db, |_| {})? {
        CheckOutcome::Identical { entries } => {
            println!("checked the projections: identical to a fold of the {entries} entries")
        }
        other => bail!("projection check: {other:?}"),
    }
    demo::print_summary(&summary, &dir);
    Ok(())
}
