//! `serve`: the writer thread, the HTTP server, the planner tick and the manifest directory
//! watcher, and an orderly shutdown: stop accepting, let in-flight requests finish, let the
//! writer drain the queue and commit, then return.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use ledger::domain::Micros;
use ledger::keys::Signer;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::api::{AppState, router};
use crate::config::Settings;
use crate::connections::{self, ConnLimits};
use engine::writer::{Clock, Input, Job, Replication, Shared, Work, Writer};
use std::sync::atomic::AtomicBool;

/// A running daemon.
#[derive(Debug)]
pub struct Daemon {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Readers and metrics (tests look at them).
    pub shared: Arc<Shared>,
    /// Re-reads the config (SIGHUP, `POST /v1/admin/reload`).
    pub reloader: Arc<crate::reload::Reloader>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<()>>,
}

/// The system clock in µs.
pub fn system_clock() -> Clock {
    Arc::new(|| chrono::Utc::now().timestamp_micros())
}

/// What a writer elected under failover runs with.
#[derive(Debug)]
pub struct WriterRole {
    /// Its register, epoch and standbys.
    pub replication: Replication,
    /// Whether it still leads (cleared when its lease is lost): `/healthz/leader`.
    pub leader: Arc<AtomicBool>,
    /// Notified when a standby taking over by hand asks this writer to step down
    /// (`POST /v1/replication/step-down`).
    pub step_down: Arc<tokio::sync::Notify>,
}

impl Daemon {
    /// Opens the ledger at `db` and serves on `listener` until [`Daemon::shutdown`] (or
    /// `stop` resolving, for `serve`'s signal handling).
    pub async fn start(
        db: PathBuf,
        settings: Settings,
        signer: Signer,
        listener: TcpListener,
        clock: Clock,
    ) -> Result<Daemon> {
        Daemon::start_as(db, settings, signer, listener, clock, None).await
    }

    /// [`Daemon::start`], as the writer of an epoch under failover when `role` is given:
    /// the writer takes the log over through the commit register before anything is served.
    pub async fn start_as(
        db: PathBuf,
        settings: Settings,
        signer: Signer,
        listener: TcpListener,
        clock: Clock,
        role: Option<WriterRole>,
    ) -> Result<Daemon> {
        let (replication, leader, step_down) = match role {
            Some(r) => (Some(r.replication), r.leader, Some(r.step_down)),
            None => (None, Arc::new(AtomicBool::new(true)), None),
        };
        let limits = settings.config.limits.clone();
        let batch = limits.batch_inputs;
        let retention = settings.retention_us();
        let every = settings.config.replay_snapshot_every;
        let quick_repair = settings.config.quick_repair;
        let path = db.clone();
        if settings.config.compact_on_start {
            let file = db.clone();
            let started = std::time::Instant::now();
            let (before, after) = tokio::task::spawn_blocking(move || {
                ledger::store::Maintenance::open(&file)?.compact()
            })
            .await?
            .with_context(|| format!("compacting {} at start", db.display()))?;
            tracing::info!(
                before,
                after,
                millis = started.elapsed().as_millis() as u64,
                "compacted the database at start"
            );
        }
        let writer_clock = Arc::clone(&clock);
        let (writer, shared) = tokio::task::spawn_blocking(move || {
            let (w, s) = Writer::open(db, signer, writer_clock, batch)?;
            let w = w.with_snapshots(every).with_quick_repair(quick_repair);
            match replication {
                Some(r) => w.with_replication(r).map(|w| (w, s)),
                None => Ok((w, s)),
            }
        })
        .await
        .map_err(|e| {
            // A panic inside the storage library: in practice a damaged file.
            anyhow::anyhow!(
                "opening {}: reading the file failed inside the storage library ({e}): the file is damaged; `fleet-ledger verify --db` says more",
                path.display()
            )
        })?
        .with_context(|| format!("opening the ledger {}", path.display()))?;
        let (tx, rx) = mpsc::channel::<Work>(limits.queue);
        // Resolves when the writer thread ends, however it ends (its sender is dropped with
        // the thread's closure, on return and on unwind alike).
        let (writer_alive, writer_ended) = oneshot::channel::<()>();
        let writer_thread = std::thread::Builder::new()
            .name("fleet-ledger-writer".into())
            .spawn(move || {
                let _alive = writer_alive;
                writer.run(rx)
            })
            .context("starting the writer thread")?;
        let access = crate::access::AccessCell::new(crate::access::Access::of(&settings));
        let reloader = Arc::new(crate::reload::Reloader::new(
            path.clone(),
            settings.config.clone(),
            access.clone(),
            tx.clone(),
            Arc::clone(&shared),
        ));
        let cn_suffix = settings
            .config
            .tls
            .as_ref()
            .and_then(|t| t.agent_cn_suffix.clone());
        let conn_limits = ConnLimits {
            header_read_timeout: Duration::from_secs(limits.header_read_timeout_secs),
            connections_max: limits.connections_max,
        }
        .fit_file_limit();
        let state = AppState {
            clock: Arc::clone(&clock),
            cn_suffix,
            operators: Arc::new(settings.operators.clone()),
            tx: tx.clone(),
            shared: Arc::clone(&shared),
            access: access.clone(),
            reloader: Arc::clone(&reloader),
            limits,
            enrollment: settings.enrollment.clone(),
            closure: match &settings.config.closure_upstream {
                Some(upstream) => Some(Arc::new(
                    crate::api::closure::ClosureProxy::new(
                        upstream,
                        Duration::from_secs(limits_closure_deadline(&settings.config.limits)),
                    )
                    .map_err(|e| anyhow::anyhow!(e))?,
                )),
                None => None,
            },
            strict: settings.config.strict,
            readiness: crate::api::Readiness {
                revocations: settings.config.revocations.is_some() || settings.config.strict,
                bootstrap_nonces: settings.config.bootstrap_nonces.is_some()
                    || settings.config.strict,
            },
            leader: Arc::clone(&leader),
            step_down,
            follow: None,
        };
        let ticker = tokio::spawn(tick(
            tx.clone(),
            Duration::from_millis(settings.config.plan_interval_ms),
            retention,
        ));
        let submitter = crate::sources::Submitter {
            tx: tx.clone(),
            access,
            shared: Arc::clone(&shared),
            clock: Arc::clone(&clock),
            reloader: Arc::clone(&reloader),
        };
        let watcher = settings
            .config
            .manifest_dir
            .clone()
            .map(|dir| tokio::spawn(crate::sources::watch(dir, submitter.clone())));
        let default_token = settings
            .config
            .pull
            .as_ref()
            .and_then(|p| p.bearer_token_file.clone());
        let pollers: Vec<_> = [
            (
                crate::intake::Target::Revocations,
                settings.config.revocations.clone(),
            ),
            (
                crate::intake::Target::BootstrapNonces,
                settings.config.bootstrap_nonces.clone(),
            ),
        ]
        .into_iter()
        .filter_map(|(target, source)| {
            source.map(|source| {
                tokio::spawn(crate::sources::poll_signed_file(
                    target,
                    source,
                    default_token.clone(),
                    submitter.clone(),
                ))
            })
        })
        .collect();
        let puller = settings
            .config
            .pull
            .clone()
            .map(|cfg| tokio::spawn(crate::sources::pull(cfg, submitter)));
        if settings.config.witnessing.is_some() {
            let (state, shared) = (crate::witnessing::state_path(&path), Arc::clone(&shared));
            tokio::task::spawn_blocking(move || crate::witnessing::restore(&state, &shared))
                .await?;
        }
        reloader.start_tasks(&settings.config).await;
        let tasks = Arc::clone(&reloader);
        drop(tx);
        let addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let (halt, halted) = watch::channel(false);
        let (serving, serving_rx) = watch::channel(connections::Serving {
            app: router(state.clone()),
            limits: conn_limits,
        });
        reloader.attach(
            serving,
            Box::new(move |limits| {
                let mut state = state.clone();
                state.limits = limits.clone();
                router(state)
            }),
        );
        let served = tokio::spawn(connections::serve(
            listener,
            settings.tls,
            serving_rx,
            Arc::clone(&shared),
            halted,
        ));
        let task = tokio::spawn(async move {
            let mut writer_ended = writer_ended;
            let writer_died = tokio::select! {
                _ = stopped => false,
                _ = &mut writer_ended => true,
            };
            // Stop accepting; requests in progress finish. Every queue sender is gone once the
            // server, the ticker, the watcher and the puller are: the writer drains what is
            // queued, commits, and ends.
            let _ = halt.send(true);
            ticker.abort();
            let _ = ticker.await;
            for source in [watcher, puller].into_iter().flatten().chain(pollers) {
                source.abort();
                let _ = source.await;
            }
            tasks.tasks.lock().await.stop().await;
            // The reloader's copy of the API state holds a queue sender: let it go, so the
            // writer drains and ends once the connections have.
            tasks.release();
            if writer_died {
                // Nothing can be recorded any more: answer what is in flight (503) for a
                // moment, then end so that a supervisor restarts the process.
                let _ = tokio::time::timeout(WRITER_DIED_GRACE, served).await;
                let _ = tokio::task::spawn_blocking(move || writer_thread.join()).await;
                anyhow::bail!(
                    "the writer thread stopped unexpectedly; exiting so that a supervisor restarts the daemon"
                );
            }
            served.await.context("serving HTTP")?;
            tokio::task::spawn_blocking(move || writer_thread.join())
                .await?
                .map_err(|_| anyhow::anyhow!("the writer thread panicked"))?;
            Ok(())
        });
        tracing::info!(%addr, "fleet-ledger listening");
        Ok(Daemon {
            addr,
            shared,
            reloader,
            stop: Some(stop),
            task,
        })
    }

    /// Stops accepting, finishes in-flight requests, drains and commits the queue.
    pub async fn shutdown(mut self) -> Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.await?
    }

    /// Runs until `signal` resolves (SIGTERM/SIGINT for `serve`), then shuts down in order.
    /// Returns an error at once if the daemon ends by itself first (its writer thread died):
    /// the process must not linger half-alive.
    pub async fn run_until(mut self, signal: impl std::future::Future<Output = ()>) -> Result<()> {
        tokio::select! {
            _ = signal => {}
            ended = &mut self.task => return ended?,
        }
        tracing::info!("shutting down: draining the queue");
        self.shutdown().await
    }
}

/// How long in-flight requests may still be answered after the writer thread died.
const WRITER_DIED_GRACE: Duration = Duration::from_secs(2);

/// The planner's safety tick: a `Tick` input every `every` (skipped when the queue is full).
async fn tick(tx: mpsc::Sender<Work>, every: Duration, retain_for: Option<Micros>) {
    let mut interval = tokio::time::interval(every);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        interval.tick().await;
        let (reply, _) = oneshot::channel();
        if let Err(mpsc::error::TrySendError::Closed(_)) = tx.try_send(
            Job {
                input: Input::Tick { retain_for },
                reply,
            }
            .into(),
        ) {
            return;
        }
    }
}

/// Reads the checkpoint signing key named by the config.
///
/// With `FLEET_LEDGER_SIGNATURE_ORACLE` naming a file, every checkpoint this process signs is
/// also appended to it, one line each (`<size> <root base64>`), before the signature is
/// used: the failover tests' signature oracle across real processes, which finds a fork if
/// any node ever signed one (issue 29). Unset (always, in production): nothing.
pub fn signer(path: &Path) -> Result<Signer> {
    let signer = ledger::keys::read_private_key(path)
        .with_context(|| format!("reading the signing key {}", path.display()))?;
    Ok(match std::env::var_os("FLEET_LEDGER_SIGNATURE_ORACLE") {
        Some(file) => signer.with_oracle(Arc::new(move |message: &[u8]| {
            use std::io::Write as _;
            let text = String::from_utf8_lossy(message);
            let mut lines = text.lines().skip(1);
            let (Some(size), Some(root)) = (lines.next(), lines.next()) else {
                return;
            };
            let line = format!("{size} {root}\n");
            if let Ok(mut f) = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&file)
            {
                let _ = f.write_all(line.as_bytes());
            }
        })),
        None => signer,
    })
}

/// The closure proxy's upstream deadline: nixfleet's 30 s, within the request's own limit so
/// that a slow cache is a 502 that says so, not the API's 408.
fn limits_closure_deadline(limits: &crate::config::Limits) -> u64 {
    limits.request_timeout_secs.saturating_sub(1).clamp(1, 30)
}
