//! `serve`: the daemon, its runtime and its signals.

use crate::*;

pub(crate) fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

pub(crate) fn serve(db: PathBuf, listen: std::net::SocketAddr, config: &Path) -> Result<()> {
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
pub(crate) struct Signals {
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
