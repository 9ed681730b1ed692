//! Where CI's signed files come from besides a POST: a release directory on disk (`watch`)
//! and CI's published URLs, pulled on nixfleet's schedule (`pull`, NIXFLEET-WIRE.md §4.5).
//! Either way each artifact is verified by the intake and submitted to the writer like a
//! POST, and what is refused or skipped is logged with why, once per change.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ledger::domain::RolloutId;
use tokio::sync::{mpsc, oneshot};

use crate::config::PullConfig;
use crate::intake::{self, Target};
use engine::writer::{Clock, Input, Job, Shared, Work};

/// What the sources share: the queue, the trust roots, the metrics, the clock.
#[derive(Clone)]
pub struct Submitter {
    /// The writer's queue.
    pub tx: mpsc::Sender<Work>,
    /// CI's keys (swapped by a reload).
    pub access: crate::access::AccessCell,
    /// The daemon's shared state (its metrics and readers).
    pub shared: Arc<Shared>,
    /// The daemon's clock.
    pub clock: Clock,
    /// Follows the trust file at every poll, as nixfleet re-reads it.
    pub reloader: Arc<crate::reload::Reloader>,
}

impl std::fmt::Debug for Submitter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Submitter")
    }
}

impl Submitter {
    /// Verifies one artifact and submits it; `Err` once the writer is gone. `origin` names
    /// where it came from in the log lines.
    async fn submit(
        &self,
        origin: &str,
        target: &Target,
        artifact: &serde_json::Value,
        signature: &[u8],
    ) -> Result<(), ()> {
        self.reloader.follow_trust_file().await;
        match intake::verify(
            target,
            artifact,
            signature,
            &self.access.get().trust,
            (self.clock)(),
        ) {
            Ok(v) => {
                let (reply, rx) = oneshot::channel();
                let job = Job {
                    input: Input::Manifest(Box::new(v)),
                    reply,
                };
                self.tx.send(job.into()).await.map_err(|_| ())?;
                match rx.await {
                    Ok(Ok(out)) => tracing::info!(origin, ?out, "manifest"),
                    Ok(Err(r)) => {
                        tracing::warn!(origin, code = r.code(), reason = %r, "manifest refused")
                    }
                    Err(_) => return Err(()),
                }
            }
            Err(e) => {
                self.shared.metrics.reject(e.code());
                tracing::warn!(origin, code = e.code(), reason = %e, "manifest refused");
            }
        }
        Ok(())
    }
}

/// Watches a release directory: every changed artifact is verified and submitted.
pub async fn watch(dir: PathBuf, s: Submitter) {
    let mut seen = BTreeMap::new();
    let mut interval = tokio::time::interval(intake::SCAN_INTERVAL);
    loop {
        interval.tick().await;
        let d = dir.clone();
        let scan = tokio::task::spawn_blocking(move || {
            let (found, errors) = intake::scan_dir(&d, &mut seen);
            (found, errors, seen)
        })
        .await;
        let Ok((found, errors, kept)) = scan else {
            return;
        };
        seen = kept;
        for e in errors {
            tracing::warn!(error = %e, "manifest directory");
        }
        for f in found {
            let origin = f.path.display().to_string();
            if s.submit(&origin, &f.target, &f.artifact, &f.signature)
                .await
                .is_err()
            {
                return;
            }
        }
    }
}

/// Fetches one URL's bytes (15 s, as nixfleet's CP); `Ok(None)` for 404. Also what
/// `verify --tiles URL` reads published tiles with.
pub async fn fetch(
    http: &reqwest::Client,
    url: &str,
    token: Option<&str>,
) -> Result<Option<Vec<u8>>, String> {
    let mut req = http.get(url).timeout(Duration::from_secs(15));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.map_err(|e| format!("GET {url}: {e}"))?;
    match resp.status().as_u16() {
        404 => Ok(None),
        200 => resp
            .bytes()
            .await
            .map(|b| Some(b.to_vec()))
            .map_err(|e| format!("GET {url}: {e}")),
        s => Err(format!("GET {url}: HTTP {s}")),
    }
}

/// One pull: the fleet, then each of its channels' rollout manifest at the fleet's commit.
/// Returns the problems, each a line.
async fn pull_once(
    http: &reqwest::Client,
    cfg: &PullConfig,
    token: Option<&str>,
    s: &Submitter,
) -> Result<Vec<String>, ()> {
    let mut problems = Vec::new();
    let fleet_sig_url = cfg
        .fleet_signature_url
        .clone()
        .unwrap_or_else(|| format!("{}.sig", cfg.fleet_url));
    let (fleet, sig) = match (
        fetch(http, &cfg.fleet_url, token).await,
        fetch(http, &fleet_sig_url, token).await,
    ) {
        (Ok(Some(f)), Ok(Some(s))) => (f, s),
        (Ok(None), _) | (_, Ok(None)) => {
            problems.push(format!("{} or its signature: not found", cfg.fleet_url));
            return Ok(problems);
        }
        (Err(e), _) | (_, Err(e)) => {
            // A failed fleet fetch keeps what is in force, as nixfleet's CP does.
            problems.push(e);
            return Ok(problems);
        }
    };
    let artifact: serde_json::Value = match serde_json::from_slice(&fleet) {
        Ok(v) => v,
        Err(e) => {
            problems.push(format!("{}: not JSON: {e}", cfg.fleet_url));
            return Ok(problems);
        }
    };
    s.submit(&cfg.fleet_url, &Target::Fleet, &artifact, &sig)
        .await?;
    // Each channel's rollout id is `<channel>@<the fleet's ciCommit>`.
    let commit = artifact["meta"]["ciCommit"].as_str().unwrap_or_default();
    let channels: Vec<String> = artifact["channels"]
        .as_object()
        .map(|c| c.keys().cloned().collect())
        .unwrap_or_default();
    for channel in channels {
        let Ok(id) = RolloutId::new(&channel, commit) else {
            problems.push(format!(
                "channel {channel:?} at commit {commit:?} is not a rollout id"
            ));
            continue;
        };
        let url = cfg
            .rollout_url_template
            .replace("{rolloutId}", &id.to_string());
        let sig_url = cfg.rollout_signature_url_template.as_ref().map_or_else(
            || format!("{url}.sig"),
            |t| t.replace("{rolloutId}", &id.to_string()),
        );
        match (
            fetch(http, &url, token).await,
            fetch(http, &sig_url, token).await,
        ) {
            (Ok(Some(m)), Ok(Some(sig))) => match serde_json::from_slice(&m) {
                Ok(artifact) => {
                    s.submit(&url, &Target::Rollout(id), &artifact, &sig)
                        .await?
                }
                Err(e) => problems.push(format!("{url}: not JSON: {e}")),
            },
            // A channel without built hosts has no manifest; a failed channel is left out of
            // this pull.
            (Ok(None), _) | (_, Ok(None)) => {}
            (Err(e), _) | (_, Err(e)) => problems.push(e),
        }
    }
    Ok(problems)
}

/// An HTTP client for CI's URLs: https verified against the system's roots, with the same
/// TLS library and crypto (ring) as the API's listener.
fn http_client(what: &str) -> Option<reqwest::Client> {
    // Already installed is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
    match reqwest::Client::builder().build() {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::error!(error = %e, "{what}: no HTTP client; polling is off");
            None
        }
    }
}

/// The bearer token a token file holds, re-read at every poll as nixfleet does (an
/// unreadable file is logged and the poll goes without).
fn read_token(file: Option<&std::path::Path>, what: &str) -> Option<String> {
    let p = file?;
    match ledger::keys::read_key_text(p) {
        Ok(t) => Some(t.trim().to_string()),
        Err(e) => {
            tracing::warn!(path = %p.display(), error = %e, "{what}: token file");
            None
        }
    }
}

/// Polls one of CI's signed files besides the manifests (the revocation list, the nonce
/// allowlist) every `interval_secs`, the first at once, as nixfleet does (NIXFLEET-WIRE.md
/// §9.1, §9.2). Each verified file is submitted like the manifests; one that is missing,
/// unsigned, stale or malformed leaves the list in force as it is, with a log line naming
/// why (once per change of the problem).
pub async fn poll_signed_file(
    target: Target,
    source: crate::config::SignedFileSource,
    default_token: Option<std::path::PathBuf>,
    s: Submitter,
) {
    let what = target.file_name();
    let Some(http) = http_client(&what) else {
        return;
    };
    let mut interval = tokio::time::interval(Duration::from_secs(source.interval_secs));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let sig_url = source.signature_url();
    let mut reported = None;
    loop {
        interval.tick().await;
        let token_file = source.bearer_token_file.as_ref().or(default_token.as_ref());
        let token = read_token(token_file.map(|p| p.as_path()), &what);
        let token = token.as_deref();
        let problem = match (
            fetch(&http, &source.url, token).await,
            fetch(&http, &sig_url, token).await,
        ) {
            (Ok(Some(file)), Ok(Some(sig))) => match serde_json::from_slice(&file) {
                Ok(artifact) => {
                    if s.submit(&source.url, &target, &artifact, &sig)
                        .await
                        .is_err()
                    {
                        return;
                    }
                    None
                }
                Err(e) => Some(format!("{}: not JSON: {e}", source.url)),
            },
            (Ok(None), _) => Some(format!("{}: not found", source.url)),
            (_, Ok(None)) => Some(format!("{sig_url}: not found")),
            (Err(e), _) | (_, Err(e)) => Some(e),
        };
        if problem != reported {
            if let Some(p) = &problem {
                tracing::warn!(file = %what, problem = %p, "poll failed; the list in force stays");
            }
            reported = problem;
        }
    }
}

/// Pulls CI's published files every `interval_secs` (the first at once).
pub async fn pull(cfg: PullConfig, s: Submitter) {
    let Some(http) = http_client("manifest pull") else {
        return;
    };
    let mut interval = tokio::time::interval(Duration::from_secs(cfg.interval_secs));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut reported = Vec::new();
    loop {
        interval.tick().await;
        let token = read_token(cfg.bearer_token_file.as_deref(), "manifest pull");
        let Ok(problems) = pull_once(&http, &cfg, token.as_deref(), &s).await else {
            return;
        };
        // Logged when they change, not every 30 s.
        if problems != reported {
            for p in &problems {
                tracing::warn!(problem = %p, "manifest pull");
            }
            reported = problems;
        }
    }
}
