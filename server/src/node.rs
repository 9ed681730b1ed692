//! A failover node (issue 29): `serve` with `failover` in the config runs this instead of a
//! lone daemon. The node stands by (it takes the writer's shipped batches, and catches up
//! from the writer's log when it missed some) and campaigns in etcd's writer election while
//! it holds the head the commit register acknowledges. Elected, it closes its standby and
//! opens the full daemon on the same file as the writer of its epoch (the register swapped
//! to that epoch fences the previous writer). It steps down (back to standing by, in the
//! same process) when its lease is lost or another writer fenced it.
//!
//! etcd decides who tries; the register's swap decides who may sign (see
//! [`engine::writer::Replication`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use engine::replicate::{ShipRefusal, Shipment, Shipper, Standby, Target};
use engine::writer::{Clock, Replication, Shared};
use tokio::runtime::Handle;
use tokio::sync::watch;

use crate::api::replica::{self, StandbyState};
use crate::config::{Config, FailoverConfig};
use crate::connections::{self, ConnLimits, Serving};
use crate::daemon::{Daemon, WriterRole};
use crate::replication::{Blocking, Etcd, EtcdRegister, Leadership, campaign};

/// Where a node keeps the tails no register acknowledged: `<db>.aside/`.
pub fn aside_dir(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push(".aside");
    PathBuf::from(name)
}

/// Ships batches to the standbys over HTTP (`POST /v1/replication/batch`), to all at once,
/// each within the deadline.
pub struct HttpShipper {
    peers: BTreeMap<String, String>,
    http: reqwest::Client,
    token: String,
    timeout: Duration,
    runtime: Blocking,
}

impl std::fmt::Debug for HttpShipper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token.
        f.debug_struct("HttpShipper")
            .field("peers", &self.peers)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl HttpShipper {
    /// Ships to `peers` (name → base URL) with the peer token; the writer thread's calls run
    /// on `runtime`.
    pub fn new(
        peers: BTreeMap<String, String>,
        token: String,
        timeout: Duration,
        runtime: impl Into<Blocking>,
    ) -> Result<HttpShipper> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        Ok(HttpShipper {
            peers,
            http: reqwest::Client::builder()
                .connect_timeout(timeout)
                // See `Etcd::new`: no reuse of a connection idle long enough to be closed.
                .pool_idle_timeout(Duration::from_secs(2))
                .build()
                .context("building the shipping client")?,
            token,
            timeout,
            runtime: runtime.into(),
        })
    }
}

impl Shipper for HttpShipper {
    fn ship(&self, to: &[Target], s: &Shipment) -> Vec<Result<(), ShipRefusal>> {
        let body = axum::body::Bytes::from(replica::frame(&s.entries));
        let headers = replica::shipment_headers(s);
        let calls = to.iter().map(|Target { node, wait }| {
            let url = self
                .peers
                .get(node)
                .map(|u| format!("{}/v1/replication/batch", u.trim_end_matches('/')));
            let mut req = url.as_ref().map(|url| {
                self.http
                    .post(url)
                    .bearer_auth(&self.token)
                    .timeout(*wait)
                    .header("content-type", "application/octet-stream")
                    .body(body.clone())
            });
            for (name, value) in &headers {
                req = req.map(|r| r.header(*name, value));
            }
            async move {
                let Some(req) = req else {
                    return Err(ShipRefusal::Unavailable("not a configured peer".into()));
                };
                let resp = req
                    .send()
                    .await
                    .map_err(|e| ShipRefusal::Unavailable(e.to_string()))?;
                let status = resp.status();
                let headers = resp.headers().clone();
                let text = resp.text().await.unwrap_or_default();
                if status.is_success() {
                    Ok(())
                } else {
                    Err(replica::refusal_of(status, &headers, &text))
                }
            }
        });
        self.runtime.block_on(futures_util::future::join_all(calls))
    }
}

/// The config, its failover section and the peer token.
fn load(config: &Path) -> Result<(crate::config::Settings, FailoverConfig, String)> {
    let settings = Config::load(config)?;
    let fo = settings
        .config
        .failover
        .clone()
        .context("the config has no failover section")?;
    let token = settings
        .peer_token
        .clone()
        .context("failover needs its peer token")?;
    Ok((settings, fo, token))
}

/// Why a writer phase ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    /// SIGTERM/SIGINT: stop.
    Stop,
    /// The election lease was lost.
    LeaseLost,
    /// Another writer fenced this one.
    Fenced,
    /// A standby taking over by hand asked this writer to step down.
    SteppedDown,
}

/// Runs a failover node on `listener` until `stop` resolves. The config is re-read at each
/// change of role (so a promoted node runs with the settings in force).
pub async fn run(
    db: PathBuf,
    config: &Path,
    listener: tokio::net::TcpListener,
    clock: Clock,
    stop: impl std::future::Future<Output = ()>,
) -> Result<()> {
    let listener = listener
        .into_std()
        .context("keeping the listening socket")?;
    let mut stop = std::pin::pin!(stop);
    loop {
        let (settings, fo, token) = load(config)?;
        let etcd = Etcd::new(&fo.etcd, Some(Duration::from_secs(2)))
            .map_err(|e| anyhow::anyhow!("failover.etcd: {e}"))?;
        let signer = Arc::new(crate::daemon::signer(&settings.config.signing_key)?);
        let aside = aside_dir(&db);

        // Standing by.
        let opened = {
            let (db, signer, aside) = (db.clone(), Arc::clone(&signer), aside.clone());
            tokio::task::spawn_blocking(move || {
                // After stepping down, a request still finishing may hold the file a moment.
                let mut tries = 0;
                loop {
                    match Standby::open(&db, Arc::clone(&signer), &aside) {
                        Err(e) if tries < 50 && e.to_string().contains("already open") => {
                            tries += 1;
                            std::thread::sleep(Duration::from_millis(100));
                        }
                        other => return other,
                    }
                }
            })
            .await?
        };
        let standby = opened.with_context(|| format!("opening {} to stand by", db.display()))?;
        tracing::info!(node = %fo.node, size = standby.head().0, epoch = standby.epoch(), "standing by");
        let cell = Arc::new(Mutex::new(Some(standby)));
        let shipped = Arc::new(Mutex::new(None));
        let (promote_tx, promote_rx) = tokio::sync::mpsc::channel(4);
        let state = StandbyState {
            standby: Arc::clone(&cell),
            token: crate::auth::digest(&token),
            shipped: Arc::clone(&shipped),
            body_bytes: 512 * 1024 * 1024,
            peers: fo.peers.clone(),
            peer_token: token.as_str().into(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .context("building the catch-up client")?,
            promote: promote_tx,
        };
        let metrics = engine::metrics::Metrics::new(Some(&db));
        let shared = Arc::new(Shared::detached(metrics));
        let (halt, halted) = watch::channel(false);
        let limits = &settings.config.limits;
        let (_serving_tx, serving) = watch::channel(Serving {
            app: replica::standby_router(state),
            limits: ConnLimits {
                header_read_timeout: Duration::from_secs(limits.header_read_timeout_secs),
                connections_max: limits.connections_max,
            }
            .fit_file_limit(),
        });
        let served = tokio::spawn(connections::serve(
            tokio::net::TcpListener::from_std(listener.try_clone()?)?,
            settings.tls.clone(),
            serving,
            Arc::clone(&shared),
            halted,
        ));
        let catching_up = tokio::spawn(catch_up(
            etcd.clone(),
            fo.clone(),
            token.clone(),
            Arc::clone(&cell),
            Arc::clone(&shipped),
        ));
        let promoting = tokio::spawn(promotions(
            etcd.clone(),
            fo.clone(),
            token.clone(),
            Arc::clone(&cell),
            promote_rx,
        ));
        let elected = tokio::select! {
            _ = stop.as_mut() => None,
            lead = campaign_when_eligible(&etcd, &fo, &cell) => Some(lead),
        };
        catching_up.abort();
        let _ = catching_up.await;
        promoting.abort();
        let _ = promoting.await;
        let _ = halt.send(true);
        let _ = served.await;
        let Some(lead) = elected else {
            return Ok(());
        };
        // Close the standby: the writer opens the same file.
        let closed = Arc::clone(&cell);
        tokio::task::spawn_blocking(move || {
            closed.lock().unwrap_or_else(|p| p.into_inner()).take();
        })
        .await?;
        tracing::info!(node = %fo.node, epoch = lead.epoch, "elected: taking the log over");

        // Writing.
        let leader = Arc::new(AtomicBool::new(true));
        let step_down = Arc::new(tokio::sync::Notify::new());
        let replication = Replication {
            // The writer thread's swaps and the shipping thread's shipments each on a
            // runtime of their own, driven by the calling thread (DECISIONS 157).
            register: Arc::new(EtcdRegister::new(
                etcd.fresh()?,
                &fo.prefix,
                Blocking::own()?,
            )),
            node: fo.node.clone(),
            epoch: lead.epoch,
            standbys: fo.peers.keys().cloned().collect(),
            shipper: Some(Arc::new(HttpShipper::new(
                fo.peers.clone(),
                token.clone(),
                Duration::from_millis(fo.ship_timeout_ms),
                Blocking::own()?,
            )?)),
            strict_sync: fo.strict_sync,
            min_sync: fo.min_sync,
            ship_timeout: Duration::from_millis(fo.ship_timeout_ms),
            aside,
        };
        let signer = crate::daemon::signer(&settings.config.signing_key)?;
        let started = Daemon::start_as(
            db.clone(),
            settings,
            signer,
            tokio::net::TcpListener::from_std(listener.try_clone()?)?,
            Arc::clone(&clock),
            Some(WriterRole {
                replication,
                leader: Arc::clone(&leader),
                step_down: Arc::clone(&step_down),
            }),
        )
        .await;
        let daemon = match started {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(
                    error = format!("{e:#}"),
                    "could not take the log over; standing by again"
                );
                lead.resign(&etcd).await;
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let shared = Arc::clone(&daemon.shared);
        let mut lost = lead.lost.clone();
        let ended = Arc::new(Mutex::new(End::Stop));
        let why = Arc::clone(&ended);
        let watch_for = async {
            let end = tokio::select! {
                _ = stop.as_mut() => End::Stop,
                _ = lost.wait_for(|l| *l) => End::LeaseLost,
                _ = fenced(&shared) => End::Fenced,
                _ = step_down.notified() => End::SteppedDown,
            };
            leader.store(false, Ordering::Release);
            *why.lock().unwrap_or_else(|p| p.into_inner()) = end;
        };
        daemon.run_until(watch_for).await?;
        // The writer is closed; the reader the API shared keeps the file open until dropped
        // (the standby opens it next).
        *shared.reader.write().unwrap_or_else(|p| p.into_inner()) = None;
        drop(shared);
        let end = *ended.lock().unwrap_or_else(|p| p.into_inner());
        lead.resign(&etcd).await;
        match end {
            End::Stop => return Ok(()),
            End::LeaseLost => {
                tracing::warn!(node = %fo.node, "the election lease was lost: stepping down to stand by");
            }
            End::Fenced => {
                tracing::error!(node = %fo.node, "fenced by a newer writer: stepping down to stand by");
            }
            End::SteppedDown => {
                tracing::warn!(node = %fo.node, "stepped down for a standby taking over by hand: standing by");
            }
        }
    }
}

/// Resolves once the writer was fenced.
async fn fenced(shared: &Shared) {
    loop {
        if shared.metrics.fenced.get() != 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Whether this node holds the head the register acknowledges (signed, or as its tail):
/// only then may it take over. An empty register may be taken by `initial_writer` alone.
async fn eligible(
    etcd: &Etcd,
    fo: &FailoverConfig,
    cell: &Arc<Mutex<Option<Standby>>>,
) -> Result<bool, String> {
    let register = EtcdRegister::new(etcd.clone(), &fo.prefix, Handle::current());
    let held = register.read_async().await.map_err(|e| e.to_string())?;
    let Some(h) = held else {
        return Ok(fo.initial_writer.as_deref() == Some(fo.node.as_str()));
    };
    let cell = Arc::clone(cell);
    tokio::task::spawn_blocking(move || {
        let guard = cell.lock().unwrap_or_else(|p| p.into_inner());
        let Some(s) = guard.as_ref() else {
            return Ok(false);
        };
        s.holds((h.tree_size, h.root)).map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| e.to_string())?
}

/// Answers `fleet-ledger promote` (by hand): a node that holds the register's head asks the
/// writer to step down (it stops taking writes, answers and ships what it took, then resigns
/// its election lease), so that nothing is acknowledged without this node meanwhile; a writer
/// that does not answer is unseated through etcd instead (its election lease revoked). The
/// election then makes this node the writer (DECISIONS 154, 158).
async fn promotions(
    etcd: Etcd,
    fo: FailoverConfig,
    token: String,
    cell: Arc<Mutex<Option<Standby>>>,
    mut requests: tokio::sync::mpsc::Receiver<tokio::sync::oneshot::Sender<Result<String, String>>>,
) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap_or_default();
    while let Some(reply) = requests.recv().await {
        let eligible = eligible(&etcd, &fo, &cell).await;
        if let Ok(true) = eligible
            && let Some(writer) = find_leader(&http, &fo.peers).await
        {
            let asked = http
                .post(format!("{writer}/v1/replication/step-down"))
                .bearer_auth(&token)
                .send()
                .await
                .map(|r| r.status());
            if let Ok(reqwest::StatusCode::ACCEPTED) = asked {
                tracing::warn!(writer = %writer, "promoted by hand: the writer was asked to step down");
                let _ = reply.send(Ok(format!(
                    "the writer at {writer} steps down; {} takes over once elected",
                    fo.node
                )));
                continue;
            }
            tracing::warn!(writer = %writer, answer = ?asked, "the writer did not step down when asked; unseating it through etcd");
        }
        let answer = match eligible {
            Ok(true) => match etcd.unseat(&fo.prefix).await {
                Ok(Some(node)) => {
                    tracing::warn!(unseated = %node, "promoted by hand: the writer's election lease is revoked");
                    Ok(format!(
                        "{node}'s election lease is revoked; {} takes over once elected",
                        fo.node
                    ))
                }
                Ok(None) => Ok(format!(
                    "no writer leads; {} takes over once elected",
                    fo.node
                )),
                Err(e) => Err(format!("unseating the writer: {e}")),
            },
            Ok(false) => Err(format!(
                "{} does not hold the head the commit register acknowledges: it must catch up first",
                fo.node
            )),
            Err(e) => Err(format!("reading the commit register: {e}")),
        };
        let _ = reply.send(answer);
    }
}

/// Campaigns while eligible; returns once elected and still eligible.
async fn campaign_when_eligible(
    etcd: &Etcd,
    fo: &FailoverConfig,
    cell: &Arc<Mutex<Option<Standby>>>,
) -> Leadership {
    let ttl = Duration::from_secs(fo.lease_ttl_secs);
    let mut said = None;
    loop {
        match eligible(etcd, fo, cell).await {
            Ok(true) => match campaign(etcd, &fo.prefix, &fo.node, ttl).await {
                Ok(lead) => match eligible(etcd, fo, cell).await {
                    Ok(true) => return lead,
                    other => {
                        tracing::info!(result = ?other, "elected without the acknowledged head; resigning");
                        lead.resign(etcd).await;
                    }
                },
                Err(e) => tracing::warn!(error = %e, "campaigning"),
            },
            Ok(false) => {
                if said != Some(false) {
                    tracing::info!(
                        "not campaigning: this node does not hold the head the commit register acknowledges (catching up)"
                    );
                }
                said = Some(false);
            }
            Err(e) => tracing::warn!(error = %e, "reading the commit register"),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// While no shipment arrives, pulls what the writer committed beyond this standby's head
/// (its latest checkpoint, verified with the log's key; the entries up to it) and writes it.
async fn catch_up(
    etcd: Etcd,
    fo: FailoverConfig,
    token: String,
    cell: Arc<Mutex<Option<Standby>>>,
    shipped: Arc<Mutex<Option<Instant>>>,
) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap_or_default();
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let recent = shipped
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some_and(|t| t.elapsed() < Duration::from_secs(1));
        if recent {
            continue;
        }
        let Ok(Some(leader)) = etcd.leader(&fo.prefix).await else {
            continue;
        };
        let Some(url) = fo.peers.get(&leader) else {
            continue;
        };
        if let Err(e) = pull_once(&http, url, &token, &cell).await {
            tracing::debug!(error = %e, %leader, "catching up");
        }
    }
}

async fn pull_once(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    cell: &Arc<Mutex<Option<Standby>>>,
) -> Result<(), String> {
    let base = url.trim_end_matches('/');
    let mine = {
        let guard = cell.lock().unwrap_or_else(|p| p.into_inner());
        guard.as_ref().ok_or("closed")?.head().0
    };
    let (_, body) = get_bytes(
        http,
        &format!("{base}/v1/ledger/batches?from={mine}"),
        token,
    )
    .await?;
    let batches = replica::unbatch(&body)?;
    if batches.is_empty() {
        return Ok(());
    }
    let cell = Arc::clone(cell);
    let size = tokio::task::spawn_blocking(move || {
        let mut guard = cell.lock().unwrap_or_else(|p| p.into_inner());
        let s = guard
            .as_mut()
            .ok_or(ShipRefusal::Unavailable("closed".into()))?;
        if s.head().0 != mine {
            // A shipment moved it meanwhile.
            return Ok(s.head().0);
        }
        s.catch_up(&batches)
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| e.to_string())?;
    tracing::info!(size, "caught up from the writer");
    Ok(())
}

/// Runs a verifying read follower (`failover.role = "follower"`) on `listener` until `stop`:
/// it follows the writer's log (the entries and the signed checkpoint they end with, each
/// batch verified before it is written; see [`engine::replicate::Follower`]) and serves the
/// API's reads over what it verified. It holds no key and never writes the log's entries
/// itself; an inconsistent checkpoint halts the following (both notes kept in
/// `<db>.evidence/`), and it goes on serving what it verified.
pub async fn run_follower(
    db: PathBuf,
    config: &Path,
    listener: tokio::net::TcpListener,
    clock: Clock,
    stop: impl std::future::Future<Output = ()>,
) -> Result<()> {
    use engine::replicate::Follower;
    let (settings, fo, token) = load(config)?;
    let mut evidence = db.as_os_str().to_owned();
    evidence.push(".evidence");
    let evidence = PathBuf::from(evidence);
    let follower = {
        let (db, evidence) = (db.clone(), evidence.clone());
        tokio::task::spawn_blocking(move || Follower::open(&db, &evidence)).await?
    }
    .with_context(|| format!("opening {} to follow", db.display()))?;
    let metrics = engine::metrics::Metrics::new(Some(&db));
    let shared = Arc::new(Shared::detached(metrics));
    *shared.reader.write().unwrap_or_else(|p| p.into_inner()) =
        Some(follower.ledger().store().reader());
    engine::writer::publish_followed(&shared, follower.ledger());
    tracing::info!(node = %fo.node, size = follower.ledger().store().size(), "following");
    let follower = Arc::new(Mutex::new(follower));
    let status = Arc::new(replica::FollowStatus::default());

    // The API's state, with nothing that writes: the queue is never fed (the router refuses
    // every write before a handler runs).
    let (tx, _rx) = tokio::sync::mpsc::channel(1);
    let access = crate::access::AccessCell::new(crate::access::Access::of(&settings));
    let reloader = Arc::new(crate::reload::Reloader::new(
        db.clone(),
        settings.config.clone(),
        access.clone(),
        tx.clone(),
        Arc::clone(&shared),
    ));
    let limits = settings.config.limits.clone();
    let state = crate::api::AppState {
        clock: Arc::clone(&clock),
        cn_suffix: settings
            .config
            .tls
            .as_ref()
            .and_then(|t| t.agent_cn_suffix.clone()),
        operators: Arc::new(settings.operators.clone()),
        tx,
        shared: Arc::clone(&shared),
        access,
        reloader,
        limits: limits.clone(),
        enrollment: None,
        closure: None,
        strict: settings.config.strict,
        readiness: crate::api::Readiness {
            revocations: settings.config.revocations.is_some() || settings.config.strict,
            bootstrap_nonces: settings.config.bootstrap_nonces.is_some() || settings.config.strict,
        },
        leader: Arc::new(AtomicBool::new(false)),
        step_down: None,
        follow: Some(Arc::clone(&status)),
    };
    let (halt, halted) = watch::channel(false);
    let (_serving_tx, serving) = watch::channel(Serving {
        app: replica::follower_router(state),
        limits: ConnLimits {
            header_read_timeout: Duration::from_secs(limits.header_read_timeout_secs),
            connections_max: limits.connections_max,
        }
        .fit_file_limit(),
    });
    let served = tokio::spawn(connections::serve(
        listener,
        settings.tls.clone(),
        serving,
        Arc::clone(&shared),
        halted,
    ));
    let following = tokio::spawn(follow(
        fo,
        token,
        follower,
        Arc::clone(&shared),
        Arc::clone(&status),
    ));
    stop.await;
    following.abort();
    let _ = following.await;
    let _ = halt.send(true);
    served.await.context("serving HTTP")?;
    Ok(())
}

/// The node whose `/healthz/leader` answers 200, among `peers`.
async fn find_leader(http: &reqwest::Client, peers: &BTreeMap<String, String>) -> Option<String> {
    for url in peers.values() {
        let base = url.trim_end_matches('/');
        let ok = http
            .get(format!("{base}/healthz/leader"))
            .timeout(Duration::from_millis(500))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if ok {
            return Some(base.to_string());
        }
    }
    None
}

async fn get_bytes(
    http: &reqwest::Client,
    url: &str,
    token: &str,
) -> Result<(u64, axum::body::Bytes), String> {
    let resp = http
        .get(url)
        .bearer_auth(token)
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .map_err(|e| e.to_string())?;
    let size = resp
        .headers()
        .get("x-ledger-size")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Ok((size, resp.bytes().await.map_err(|e| e.to_string())?))
}

/// The writer's latest witnessed checkpoint, if it is beyond `known` and meets `policy`
/// ([`engine::replicate::Follower::check_witnessed`]): `Ok(None)` when the writer has none
/// or none newer.
async fn witnessed_beyond(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    follower: &Arc<Mutex<engine::replicate::Follower>>,
    policy: &ledger::witness::WitnessPolicy,
    known: &Option<(u64, String)>,
) -> Result<Option<(u64, String)>, engine::replicate::FollowError> {
    use engine::replicate::FollowError;
    let resp = http
        .get(format!("{base}/v1/ledger/checkpoint/witnessed"))
        .bearer_auth(token)
        .send()
        .await
        .map_err(|e| FollowError::Invalid(e.to_string()))?;
    if resp.status() == reqwest::StatusCode::NOT_FOUND {
        return Ok(None);
    }
    let note = resp
        .error_for_status()
        .map_err(|e| FollowError::Invalid(e.to_string()))?
        .text()
        .await
        .map_err(|e| FollowError::Invalid(e.to_string()))?;
    if known.as_ref().is_some_and(|(_, n)| *n == note) {
        return Ok(None);
    }
    let (f, policy) = (Arc::clone(follower), policy.clone());
    let checked = tokio::task::spawn_blocking(move || {
        let f = f.lock().unwrap_or_else(|p| p.into_inner());
        f.check_witnessed(&note, &policy).map(|cp| (cp.size, note))
    })
    .await
    .map_err(|e| FollowError::Invalid(e.to_string()))??;
    Ok(known
        .as_ref()
        .is_none_or(|(size, _)| checked.0 > *size)
        .then_some(checked))
}

/// The follower's loop: wait (long poll) for entries beyond its size, read the writer's
/// latest checkpoint and whatever entries lead to it, verify and append them.
async fn follow(
    fo: FailoverConfig,
    token: String,
    follower: Arc<Mutex<engine::replicate::Follower>>,
    shared: Arc<Shared>,
    status: Arc<replica::FollowStatus>,
) {
    use engine::replicate::FollowError;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap_or_default();
    // The witness policy (checked with the config): with one, the follower follows only up
    // to the latest witnessed checkpoint it verified.
    let policy = fo.witness_policy().unwrap_or_default();
    let mut witnessed: Option<(u64, String)> = None;
    let mut leader: Option<String> = None;
    loop {
        let Some(base) = leader.clone() else {
            leader = find_leader(&http, &fo.peers).await;
            if leader.is_none() {
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            continue;
        };
        let mine = *shared.committed.borrow();
        if !policy.witnesses.is_empty() {
            let checked =
                witnessed_beyond(&http, &base, &token, &follower, &policy, &witnessed).await;
            if !matches!(checked, Err(FollowError::Invalid(_))) {
                // The writer answered: in contact, even with nothing witnessed beyond.
                *status.contact.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
            }
            match checked {
                Ok(Some(w)) => {
                    shared.metrics.witnessed_entries.set(w.0 as i64);
                    *shared.witnessed.write().unwrap_or_else(|p| p.into_inner()) =
                        Some(crate::witnessing::Witnessed {
                            size: w.0,
                            note: w.1.clone(),
                        });
                    witnessed = Some(w);
                }
                Ok(None) => {}
                Err(e @ FollowError::Inconsistent { .. }) => {
                    tracing::error!(error = %e, "halted: the witnesses cosigned a tree the log's key did not sign here; serving what was verified");
                    *status.halted.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
                    return;
                }
                Err(FollowError::Invalid(e)) => {
                    // Not reached, or no answer: find the writer again.
                    tracing::debug!(error = %e, leader = %base, "following");
                    leader = None;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
                Err(e) => {
                    tracing::warn!(error = %e, leader = %base, "the writer's witnessed checkpoint does not meet the witness policy");
                }
            }
            if witnessed.as_ref().is_none_or(|(size, _)| *size <= mine) {
                // Nothing witnessed beyond what is served: wait for the next round.
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        }
        let fetched = get_bytes(
            &http,
            &format!("{base}/v1/ledger/batches?from={mine}&wait=2"),
            &token,
        )
        .await
        .and_then(|(size, body)| Ok((size, replica::unbatch(&body)?)));
        let (size, batches) = match fetched {
            Ok(x) => x,
            Err(e) => {
                tracing::debug!(error = %e, leader = %base, "following");
                leader = None;
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        status
            .leader_size
            .store(size, std::sync::atomic::Ordering::Release);
        *status.contact.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        shared
            .metrics
            .follower_lag_entries
            .set(size.saturating_sub(mine) as i64);
        if batches.is_empty() {
            continue;
        }
        let (f, sh) = (Arc::clone(&follower), Arc::clone(&shared));
        let up_to = witnessed.as_ref().map(|(_, note)| note.clone());
        let taken = tokio::task::spawn_blocking(move || {
            let mut f = f.lock().unwrap_or_else(|p| p.into_inner());
            let r = match &up_to {
                Some(note) => f.follow_witnessed(&batches, note),
                None => f.follow_batches(&batches),
            };
            if r.is_ok() {
                engine::writer::publish_followed(&sh, f.ledger());
            }
            r
        })
        .await;
        match taken {
            Ok(Ok(now)) => {
                shared
                    .metrics
                    .follower_lag_entries
                    .set(size.saturating_sub(now) as i64);
                tracing::debug!(size = now, "followed");
            }
            Ok(Err(e @ FollowError::Inconsistent { .. })) => {
                tracing::error!(error = %e, "halted: the writer's signed checkpoint disagrees with this follower's log or its witnesses; serving what was verified");
                *status.halted.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
                return;
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, leader = %base, "not followed");
                leader = None;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => {
                tracing::error!(error = %e, "following");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}
