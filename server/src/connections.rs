//! Connections: accepting, TLS handshakes, HTTP/1.1 with a header-read timeout, a cap on open
//! connections that never sacrifices an authenticated client for an unauthenticated one, and
//! graceful shutdown.
//!
//! Why not `axum::serve`: it gives hyper no timer, so a connection that sends nothing (or one
//! header byte every half second) stays open forever, and it has no connection cap, so enough
//! idle sockets exhaust the file limit and nothing (not even `/healthz`) can be answered.
//!
//! * **Header-read timeout** (`limits.header_read_timeout_secs`): a connection must complete
//!   its TLS handshake, and then each request head, within this time of being opened or of its
//!   previous response. It is also the keep-alive idle timeout: hyper starts the same timer
//!   when it waits for the next request. A request in progress (a long poll, a body being
//!   read) is bounded by the request timeouts of the router instead.
//! * **Connection cap** (`limits.connections_max`, and never more than the file limit allows):
//!   when a new connection would exceed it, the oldest connection that has not yet made an
//!   authenticated request is closed to make room. A connection becomes *trusted* when a
//!   request on it authenticates (bearer token or client certificate), and a trusted
//!   connection is never evicted; only when every open connection is trusted is the new one
//!   refused. So a flood of anonymous sockets can only push out other anonymous sockets, and an
//!   agent that connects gets its turn.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt as _;

use engine::writer::Shared;

/// File descriptors kept back from the connection cap: the database, the log, the replay
/// cache, the listener, redb's and tokio's own.
const RESERVED_FDS: u64 = 64;

/// What a handler knows of its connection (`ConnectInfo<Peer>`).
#[derive(Clone, Debug, Default)]
pub struct Peer {
    /// The CN of a verified client certificate.
    pub cn: Option<String>,
    /// Its serial number (big-endian bytes), which a renewal records.
    pub serial: Option<Vec<u8>>,
    /// Its `notBefore`, µs (checked against CI's revocations).
    pub not_before: Option<ledger::domain::Micros>,
    /// The certificate itself (DER): whether it is an operator's is the API's question.
    pub leaf: Option<Arc<[u8]>>,
    /// The client's address.
    pub addr: Option<SocketAddr>,
    trusted: Arc<AtomicBool>,
}

impl Peer {
    /// A request on this connection authenticated: it is no longer evicted for newcomers.
    pub fn mark_trusted(&self) {
        self.trusted.store(true, Ordering::Relaxed);
    }
}

/// What the listener serves: the router and connection limits in force (a reload swaps them).
#[derive(Clone, Debug)]
pub struct Serving {
    /// The API.
    pub app: Router,
    /// The connection limits.
    pub limits: ConnLimits,
}

/// The connection limits (from the config's `limits`).
#[derive(Clone, Copy, Debug)]
pub struct ConnLimits {
    /// See the module doc.
    pub header_read_timeout: Duration,
    /// Open connections at most (TLS handshakes included).
    pub connections_max: usize,
}

impl ConnLimits {
    /// Raises the soft file limit to the hard one (as Go's runtime does) and lowers the
    /// connection cap to what that limit allows; says so in the log when it has to.
    pub fn fit_file_limit(mut self) -> ConnLimits {
        let files = match rlimit::increase_nofile_limit(u64::MAX) {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, "could not read or raise the open-file limit");
                return self;
            }
        };
        let room = files.saturating_sub(RESERVED_FDS).max(1);
        if (self.connections_max as u64) > room {
            tracing::warn!(
                configured = self.connections_max,
                open_files_max = files,
                using = room,
                "limits.connections_max exceeds the open-file limit: lowered (raise LimitNOFILE)"
            );
            self.connections_max = room as usize;
        }
        self
    }
}

/// One open connection, as the cap sees it.
#[derive(Debug)]
struct Slot {
    trusted: Arc<AtomicBool>,
    evict: Option<oneshot::Sender<()>>,
}

/// The open connections, oldest first (ids only grow).
#[derive(Debug, Default)]
struct Registry {
    next: u64,
    open: BTreeMap<u64, Slot>,
}

/// Removes its connection from the registry when the connection's task ends, however it ends.
struct Registered {
    registry: Arc<Mutex<Registry>>,
    id: u64,
    shared: Arc<Shared>,
}

impl Drop for Registered {
    fn drop(&mut self) {
        let mut r = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        r.open.remove(&self.id);
        self.shared
            .metrics
            .connections_open
            .set(r.open.len() as i64);
    }
}

/// Makes room for one more connection: `None` if the cap is reached and every open
/// connection is trusted (the newcomer is refused).
fn admit(
    registry: &Arc<Mutex<Registry>>,
    max: usize,
    shared: &Arc<Shared>,
) -> Option<(Registered, Arc<AtomicBool>, oneshot::Receiver<()>)> {
    let mut r = registry.lock().unwrap_or_else(|p| p.into_inner());
    if r.open.len() >= max {
        let victim = r
            .open
            .iter()
            .find(|(_, s)| !s.trusted.load(Ordering::Relaxed))
            .map(|(id, _)| *id)?;
        if let Some(mut slot) = r.open.remove(&victim)
            && let Some(evict) = slot.evict.take()
        {
            let _ = evict.send(());
        }
        shared.metrics.connections_evicted.inc();
    }
    let id = r.next;
    r.next += 1;
    let trusted = Arc::new(AtomicBool::new(false));
    let (evict, evicted) = oneshot::channel();
    r.open.insert(
        id,
        Slot {
            trusted: Arc::clone(&trusted),
            evict: Some(evict),
        },
    );
    shared.metrics.connections_open.set(r.open.len() as i64);
    Some((
        Registered {
            registry: Arc::clone(registry),
            id,
            shared: Arc::clone(shared),
        },
        trusted,
        evicted,
    ))
}

/// Serves `app` on `listener` until `shutdown` turns true, then stops accepting, lets every
/// request in progress finish, and returns when the last connection has closed.
///
/// `serving` holds the router and the connection limits; a reload replaces them, and each new
/// connection takes the ones in force (connections already open keep theirs).
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    serving: watch::Receiver<Serving>,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    let registry = Arc::new(Mutex::new(Registry::default()));
    let acceptor = tls.map(TlsAcceptor::from);
    let mut tasks = JoinSet::new();
    loop {
        let (stream, addr) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: wait for connections to close rather than spin.
                    tracing::warn!(error = %e, "accept");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
            _ = stopping(&mut shutdown) => break,
        };
        let Serving { app, limits } = serving.borrow().clone();
        let Some((registered, trusted, evicted)) =
            admit(&registry, limits.connections_max, &shared)
        else {
            shared.metrics.connections_refused.inc();
            tracing::debug!(%addr, "connection refused: every open connection is trusted and the cap is reached");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let conn = Connection {
            app,
            limits,
            peer: Peer {
                cn: None,
                serial: None,
                not_before: None,
                leaf: None,
                addr: Some(addr),
                trusted,
            },
            evicted,
            shutdown: shutdown.clone(),
            _registered: registered,
        };
        let acceptor = acceptor.clone();
        tasks.spawn(conn.run(stream, acceptor));
    }
    drop(listener);
    while tasks.join_next().await.is_some() {}
}

/// Resolves once shutdown is asked for (at once if it already was, or if the asker is gone).
async fn stopping(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// One connection's task.
struct Connection {
    app: Router,
    limits: ConnLimits,
    peer: Peer,
    evicted: oneshot::Receiver<()>,
    shutdown: watch::Receiver<bool>,
    _registered: Registered,
}

impl Connection {
    async fn run(mut self, stream: TcpStream, acceptor: Option<TlsAcceptor>) {
        let Some(acceptor) = acceptor else {
            return self.http(stream).await;
        };
        let addr = self.peer.addr;
        let handshake =
            tokio::time::timeout(self.limits.header_read_timeout, acceptor.accept(stream));
        let tls = tokio::select! {
            done = handshake => match done {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(?addr, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(?addr, "TLS handshake timed out");
                    return;
                }
            },
            _ = &mut self.evicted => return,
            _ = stopping(&mut self.shutdown) => return,
        };
        if let Some(leaf) = tls.get_ref().1.peer_certificates().and_then(|c| c.first())
            && let Some(cert) = crate::tls::client_identity(leaf)
        {
            self.peer.cn = Some(cert.cn);
            self.peer.serial = Some(cert.serial);
            self.peer.not_before = Some(cert.not_before);
            self.peer.leaf = Some(Arc::from(leaf.as_ref()));
        }
        self.http(tls).await
    }

    async fn http<I>(mut self, io: I)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let peer = self.peer.clone();
        let service =
            self.app
                .clone()
                .map_request(move |mut req: axum::http::Request<Incoming>| {
                    req.extensions_mut().insert(ConnectInfo(peer.clone()));
                    req
                });
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(self.limits.header_read_timeout)
            .keep_alive(true);
        let conn = builder.serve_connection(TokioIo::new(io), TowerToHyperService::new(service));
        tokio::pin!(conn);
        let mut draining = false;
        loop {
            tokio::select! {
                done = conn.as_mut() => {
                    if let Err(e) = done {
                        tracing::debug!(addr = ?self.peer.addr, error = %e, "connection ended");
                    }
                    return;
                }
                _ = &mut self.evicted => {
                    tracing::debug!(addr = ?self.peer.addr, "connection evicted for a newer one");
                    return;
                }
                _ = stopping(&mut self.shutdown), if !draining => {
                    draining = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
}
