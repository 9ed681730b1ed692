//! `serve`: the daemon, its runtime and its signals.

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};

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
        // SIGHUP re-reads the config; installed now so that one during start-up is not the
        // default action (which ends the process).
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .context("installing the SIGHUP handler")?;
        let settings = fleet_ledger::config::Config::load(config)?;
        if !db.exists() {
            bail!(
                "{} does not exist: create it first with `fleet-ledger init --db {} --key KEY --origin ORIGIN`",
                db.display(),
                db.display()
            );
        }
        // A damaged file is refused here, with one line, rather than aborting the daemon on
        // its first commit (a crash loop under Restart=on-failure).
        super::ledger::refuse_damaged(&db)?;
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("listening on {listen}"))?;
        if let Some(fo) = &settings.config.failover {
            // A failover node: it stands by, and writes once elected (OPERATIONS, "Failover").
            tracing::info!(node = %fo.node, "failover node starting");
            let hups = tokio::spawn(async move {
                while hup.recv().await.is_some() {
                    tracing::warn!("SIGHUP: a failover node re-reads its config at its next change of role (restart it to apply a change now)");
                }
            });
            sd_notify("READY=1\nSTATUS=failover node");
            let clock = fleet_ledger::daemon::system_clock();
            let result = match fo.role {
                fleet_ledger::config::NodeRole::Standby => {
                    fleet_ledger::node::run(db, config, listener, clock, stop.recv()).await
                }
                fleet_ledger::config::NodeRole::Follower => {
                    fleet_ledger::node::run_follower(db, config, listener, clock, stop.recv())
                        .await
                }
            };
            sd_notify("STOPPING=1");
            hups.abort();
            return result;
        }
        let signer = fleet_ledger::daemon::signer(&settings.config.signing_key)?;
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
        daemon.reloader.set_config_path(config.to_path_buf());
        let reloader = std::sync::Arc::clone(&daemon.reloader);
        let reloads = tokio::spawn(async move {
            while hup.recv().await.is_some() {
                sd_notify("RELOADING=1");
                if let Err(e) = reloader.reload("SIGHUP").await {
                    tracing::error!(error = %e, "reload refused");
                }
                sd_notify("READY=1");
            }
        });
        sd_notify("READY=1\nSTATUS=serving");
        let result = daemon.run_until(stop.as_mut()).await;
        sd_notify("STOPPING=1");
        reloads.abort();
        result
    })
}

/// Tells systemd (`Type=notify`) the daemon's state, when it runs under it: a datagram to
/// `$NOTIFY_SOCKET` (a path, or `@` and an abstract name). Anything else: nothing to do; a
/// failure is logged, never fatal.
fn sd_notify(state: &str) {
    use std::os::unix::net::UnixDatagram;
    let Some(target) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let sent = UnixDatagram::unbound().and_then(|sock| {
        use std::os::unix::ffi::OsStrExt as _;
        match target.as_bytes().split_first() {
            Some((b'@', name)) => {
                use std::os::linux::net::SocketAddrExt as _;
                let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
                sock.send_to_addr(state.as_bytes(), &addr)
            }
            _ => sock.send_to(state.as_bytes(), &target),
        }
    });
    if let Err(e) = sent {
        tracing::warn!(socket = ?target, error = %e, "could not notify systemd");
    }
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

/// `promote`: asks a failover standby to take over by hand, then waits until it leads.
pub(crate) fn promote(url: &str, token_file: &Path, wait: u64) -> Result<()> {
    let token = std::fs::read_to_string(token_file)
        .with_context(|| format!("reading {}", token_file.display()))?;
    let base = url.trim_end_matches('/').to_string();
    if !(base.starts_with("http://") || base.starts_with("https://")) {
        bail!("--url {url:?}: the standby's API, http(s)://host:port");
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    runtime()?.block_on(async move {
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(10))
            .build()?;
        let resp = http
            .post(format!("{base}/v1/replication/promote"))
            .bearer_auth(token.trim())
            .send()
            .await
            .with_context(|| format!("reaching {base}"))?;
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        if !status.is_success() {
            bail!("{base} refused to take over ({status}): {}", body.trim());
        }
        println!("{}", body.trim());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(wait);
        loop {
            let leads = http
                .get(format!("{base}/healthz/leader"))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if leads {
                println!("{base} is the writer");
                return Ok(());
            }
            if std::time::Instant::now() > deadline {
                bail!("{base} did not become the writer within {wait} s (its log says why)");
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    })
}
