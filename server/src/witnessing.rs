//! Witnessing (C2SP tlog-witness): the daemon submits its checkpoints to the configured
//! witnesses, each with a consistency proof from the size that witness last cosigned, and
//! keeps their cosignatures (C2SP tlog-cosignature) with the checkpoint. A split view (one
//! history shown to some auditors, another to others) then needs the witnesses to collude:
//! each cosigns only checkpoints consistent with what it cosigned before.
//!
//! Rounds, at most one every `interval_secs` and only when the log has a newer checkpoint:
//! the latest checkpoint goes to every witness at once (one request in flight per witness),
//! so that they cosign the same checkpoint. A witness's `409 Conflict` names the size it
//! last cosigned (after a restart this daemon does not know it): the request is made once
//! more from that size. The round's cosignatures that verify are kept in memory
//! ([`engine::writer::Shared::witnessed`]) and in `<db>.witnessed` (atomically replaced), served
//! with the checkpoint (`GET /v1/ledger/checkpoint`, `GET /v1/ledger/checkpoint/witnessed`)
//! and published (the published `checkpoint` is then the latest witnessed one).
//!
//! Nothing here is in the log: cosignatures are attestations about the log, collected after
//! the fact, and appending them would make a new checkpoint to witness.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ledger::checkpoint::parse_note;
use ledger::hash::Hash;
use ledger::witness::WitnessKey;
use thiserror::Error;
use tracing::Instrument as _;

use engine::writer::Shared;

/// The `witnessing` section of the config.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WitnessingConfig {
    /// The witnesses.
    pub witnesses: Vec<WitnessEndpoint>,
    /// At most one round every this many seconds (default 10).
    #[serde(default = "default_interval")]
    pub interval_secs: u64,
    /// A witness that has not answered in this many seconds has failed this round
    /// (default 10).
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
}

fn default_interval() -> u64 {
    10
}

fn default_timeout() -> u64 {
    10
}

/// One witness.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WitnessEndpoint {
    /// Its submission prefix: requests go to `<url>/add-checkpoint`.
    pub url: String,
    /// Its verifier key, `<name>+<hex id>+<base64(0x04 || key)>`.
    pub key: String,
}

impl WitnessingConfig {
    /// The witnesses' keys, or why the section is wrong.
    pub fn check(&self) -> Result<Vec<WitnessKey>, String> {
        if self.witnesses.is_empty() {
            return Err("witnessing.witnesses is empty".into());
        }
        let mut keys: Vec<WitnessKey> = Vec::new();
        for (i, w) in self.witnesses.iter().enumerate() {
            if !(w.url.starts_with("http://") || w.url.starts_with("https://")) {
                return Err(format!(
                    "witnessing.witnesses[{i}].url {:?} must be an http(s) URL",
                    w.url
                ));
            }
            let key = WitnessKey::from_text(&w.key)
                .map_err(|e| format!("witnessing.witnesses[{i}].key: {e}"))?;
            if keys.iter().any(|k| k.name() == key.name()) {
                return Err(format!(
                    "witnessing.witnesses[{i}]: witness {:?} is listed twice",
                    key.name()
                ));
            }
            keys.push(key);
        }
        if self.interval_secs == 0 || self.timeout_secs == 0 {
            return Err("witnessing.interval_secs and timeout_secs must be at least 1".into());
        }
        Ok(keys)
    }
}

pub use engine::writer::Witnessed;

/// Where a daemon on `db` keeps its latest witnessed checkpoint.
pub fn state_path(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push(".witnessed");
    PathBuf::from(name)
}

/// The body of an `add-checkpoint` request: `old <size>`, the consistency proof, a blank
/// line, the checkpoint.
pub fn add_checkpoint_body(old: u64, proof: &[Hash], note: &str) -> String {
    let mut body = format!("old {old}\n");
    for h in proof {
        body.push_str(&B64.encode(h.0));
        body.push('\n');
    }
    body.push('\n');
    body.push_str(note);
    body
}

/// Why a witness did not cosign.
#[derive(Debug, Error)]
pub enum WitnessError {
    /// The request did not complete.
    #[error("request failed: {0}")]
    Http(String),
    /// The witness refused (403: it does not trust this log's key; 404: it does not know
    /// this origin; 422: it found the consistency proof wrong; 400: the request).
    #[error("refused with {status}: {body}")]
    Refused {
        /// The HTTP status.
        status: u16,
        /// What it said (truncated).
        body: String,
    },
    /// The witness has cosigned a larger tree than this log has: the log was rolled back,
    /// or another log signs with this origin and key.
    #[error("it has cosigned size {witness}, beyond this log's {ours}: rolled back or forked")]
    Ahead {
        /// The witness's size.
        witness: u64,
        /// This log's.
        ours: u64,
    },
    /// The witness holds another root for this size: a fork.
    #[error("it holds another tree of size {0}: the log forked")]
    Fork(u64),
    /// Its answer did not hold a valid cosignature of its key on the checkpoint.
    #[error("its answer has no valid cosignature: {0}")]
    BadCosignature(String),
    /// Reading the log for the proof.
    #[error("building the consistency proof: {0}")]
    Proof(String),
}

/// One witness's client state.
struct Client {
    endpoint: String,
    key: WitnessKey,
    /// The size this witness last cosigned, as far as known (0 at start: its 409 says).
    cosigned: u64,
    failing: bool,
}

fn truncate(s: &str) -> String {
    let s = s.trim();
    match s.char_indices().nth(200) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// The consistency proof from `from` to `to`, read from a snapshot of the committed log.
async fn proof(shared: &Arc<Shared>, from: u64, to: u64) -> Result<Vec<Hash>, WitnessError> {
    if from == 0 || from == to {
        return Ok(Vec::new());
    }
    let shared = Arc::clone(shared);
    tokio::task::spawn_blocking(move || {
        let guard = shared.reader.read().unwrap_or_else(|p| p.into_inner());
        let snap = guard
            .as_ref()
            .ok_or_else(|| WitnessError::Proof("the ledger is being reopened".into()))?
            .snapshot()
            .map_err(|e| WitnessError::Proof(e.to_string()))?;
        drop(guard);
        ledger::merkle::consistency_proof(&snap, from, to)
            .map_err(|e| WitnessError::Proof(e.to_string()))?
            .map_err(|e| WitnessError::Proof(e.to_string()))
    })
    .await
    .map_err(|e| WitnessError::Proof(e.to_string()))?
}

impl Client {
    /// Submits the checkpoint `note` of size `size`; returns this witness's cosignature
    /// lines.
    async fn submit(
        &mut self,
        http: &reqwest::Client,
        shared: &Arc<Shared>,
        size: u64,
        note: &str,
    ) -> Result<Vec<String>, WitnessError> {
        let url = format!("{}/add-checkpoint", self.endpoint.trim_end_matches('/'));
        // A second attempt only after a 409 that names another size.
        for _ in 0..2 {
            let old = self.cosigned.min(size);
            let body = add_checkpoint_body(old, &proof(shared, old, size).await?, note);
            let resp = http
                .post(&url)
                .body(body)
                .send()
                .await
                .map_err(|e| WitnessError::Http(e.to_string()))?;
            let status = resp.status().as_u16();
            let is_size = resp
                .headers()
                .get(reqwest::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with("text/x.tlog.size"));
            let text = resp
                .text()
                .await
                .map_err(|e| WitnessError::Http(e.to_string()))?;
            match status {
                200 => {
                    let lines = self.cosignature_lines(note, &text)?;
                    self.cosigned = size;
                    return Ok(lines);
                }
                409 if is_size => {
                    let theirs: u64 =
                        text.trim_end_matches('\n')
                            .parse()
                            .map_err(|_| WitnessError::Refused {
                                status,
                                body: truncate(&text),
                            })?;
                    if theirs > size {
                        return Err(WitnessError::Ahead {
                            witness: theirs,
                            ours: size,
                        });
                    }
                    if theirs == old {
                        return Err(WitnessError::Refused {
                            status,
                            body: truncate(&text),
                        });
                    }
                    self.cosigned = theirs;
                }
                409 => return Err(WitnessError::Fork(size)),
                _ => {
                    return Err(WitnessError::Refused {
                        status,
                        body: truncate(&text),
                    });
                }
            }
        }
        Err(WitnessError::Refused {
            status: 409,
            body: "the witness's size moved twice in one round".into(),
        })
    }

    /// The lines of `answer` that are this witness's valid cosignatures on `note`.
    fn cosignature_lines(&self, note: &str, answer: &str) -> Result<Vec<String>, WitnessError> {
        let bad = |why: String| WitnessError::BadCosignature(why);
        if !answer.ends_with('\n') || answer.len() > 16 * 1024 {
            return Err(bad(truncate(answer)));
        }
        let mine: Vec<String> = answer
            .lines()
            .filter(|l| {
                l.strip_prefix("\u{2014} ")
                    .and_then(|rest| rest.split_once(' '))
                    .is_some_and(|(name, _)| name == self.key.name())
            })
            .map(|l| format!("{l}\n"))
            .collect();
        if mine.is_empty() {
            return Err(bad(format!(
                "no line of {}: {}",
                self.key.name(),
                truncate(answer)
            )));
        }
        let combined = format!("{note}{}", mine.concat());
        let parsed = parse_note(combined.as_bytes()).map_err(|e| bad(e.to_string()))?;
        ledger::witness::require_cosignatures(&parsed, std::slice::from_ref(&self.key), 1)
            .map_err(|e| bad(e.to_string()))?;
        Ok(mine)
    }
}

/// Puts the witnessed checkpoint a previous run left at `path` in force, so that it is served
/// from the first request (the daemon calls this before serving).
pub fn restore(path: &Path, shared: &Shared) {
    if let Some(w) = load(path, shared) {
        shared.metrics.witnessed_entries.set(w.size as i64);
        *shared.witnessed.write().unwrap_or_else(|p| p.into_inner()) = Some(w);
    }
}

/// Reads the latest witnessed checkpoint a previous run left at `path`, if it is a checkpoint
/// of this log as stored (its log signatures unchanged).
pub fn load(path: &Path, shared: &Shared) -> Option<Witnessed> {
    let text = std::fs::read_to_string(path).ok()?;
    let parsed = parse_note(text.as_bytes()).ok()?;
    let size = parsed.checkpoint.size;
    let guard = shared.reader.read().unwrap_or_else(|p| p.into_inner());
    let stored = guard.as_ref()?.snapshot().ok()?.checkpoint(size).ok()??;
    if !text.starts_with(&stored) {
        tracing::warn!(path = %path.display(), size, "ignoring a witnessed checkpoint that is not this log's");
        return None;
    }
    Some(Witnessed { size, note: text })
}

fn save(path: &Path, w: &Witnessed) -> std::io::Result<()> {
    use std::io::Write as _;
    let tmp = path.with_extension("witnessed.tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(w.note.as_bytes())?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// The daemon's witnessing task (see the module's documentation).
pub async fn run(cfg: WitnessingConfig, shared: Arc<Shared>, state: PathBuf) {
    let keys = match cfg.check() {
        Ok(k) => k,
        Err(e) => {
            tracing::error!(error = %e, "witnessing is off");
            return;
        }
    };
    // reqwest is built without a default crypto provider: the daemon's (ring).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = match reqwest::Client::builder()
        .timeout(Duration::from_secs(cfg.timeout_secs))
        .user_agent(concat!("fleet-ledger/", env!("CARGO_PKG_VERSION")))
        .build()
    {
        Ok(h) => h,
        Err(e) => {
            tracing::error!(error = %e, "witnessing is off: no HTTP client");
            return;
        }
    };
    let mut clients: Vec<Client> = cfg
        .witnesses
        .iter()
        .zip(keys)
        .map(|(w, key)| Client {
            endpoint: w.url.clone(),
            key,
            cosigned: 0,
            failing: false,
        })
        .collect();
    // The checkpoint a previous run had witnessed: loaded by the daemon before it serves.
    let mut round_size = shared
        .witnessed
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .as_ref()
        .map_or(0, |w| w.size);
    // The round: the checkpoint being witnessed and the cosignature lines collected for it,
    // by witness name. A witness that failed is retried at the next interval for the same
    // checkpoint, unless a newer one has been made by then.
    let mut round: std::collections::BTreeMap<String, String> = Default::default();
    let every = Duration::from_secs(cfg.interval_secs);
    let mut committed = shared.committed.subscribe();
    shared.metrics.witnessed_entries.set(round_size as i64);
    shared
        .metrics
        .witnessing
        .store(true, std::sync::atomic::Ordering::Relaxed);
    shared.metrics.update_lags(*shared.committed.borrow());
    loop {
        committed.mark_unchanged();
        let latest = {
            let shared2 = Arc::clone(&shared);
            tokio::task::spawn_blocking(move || {
                let guard = shared2.reader.read().unwrap_or_else(|p| p.into_inner());
                guard.as_ref()?.snapshot().ok()?.latest_checkpoint().ok()?
            })
            .await
            .ok()
            .flatten()
        };
        let mut pending_failed = false;
        if let Some((size, note)) = latest.filter(|(size, _)| *size >= round_size) {
            if size > round_size {
                round_size = size;
                round.clear();
            }
            let pending: Vec<&mut Client> = clients
                .iter_mut()
                .filter(|c| !round.contains_key(c.key.name()))
                .collect();
            let results = futures_util::future::join_all(pending.into_iter().map(|c| {
                let (http, shared, note) = (&http, &shared, &note);
                async move { (c.submit(http, shared, size, note).await, c) }
            }))
            .instrument(tracing::info_span!("witness_round", size))
            .await;
            let mut added = false;
            for (result, client) in results {
                match result {
                    Ok(lines) => {
                        round.insert(client.key.name().to_string(), lines.concat());
                        added = true;
                        if client.failing {
                            tracing::info!(
                                witness = client.key.name(),
                                size,
                                "the witness cosigns again"
                            );
                            client.failing = false;
                        }
                    }
                    Err(e) => {
                        pending_failed = true;
                        shared.metrics.witness_failures.inc();
                        // Forks and rollbacks are always loud; the rest once per outage.
                        if matches!(e, WitnessError::Ahead { .. } | WitnessError::Fork(_)) {
                            tracing::error!(witness = client.key.name(), size, error = %e, "the witness disagrees with this log");
                        } else if !client.failing {
                            tracing::warn!(witness = client.key.name(), size, error = %e, "the witness did not cosign; retrying");
                        }
                        client.failing = true;
                    }
                }
            }
            if added {
                let lines: String = round.values().map(String::as_str).collect();
                let w = Witnessed {
                    size,
                    note: format!("{note}{lines}"),
                };
                let state2 = state.clone();
                let w2 = w.clone();
                match tokio::task::spawn_blocking(move || save(&state2, &w2)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        tracing::warn!(path = %state.display(), error = %e, "could not save the witnessed checkpoint")
                    }
                    Err(e) => tracing::warn!(error = %e, "saving the witnessed checkpoint"),
                }
                shared.metrics.witnessed_entries.set(size as i64);
                *shared.witnessed.write().unwrap_or_else(|p| p.into_inner()) = Some(w);
            }
        }
        shared.metrics.update_lags(*shared.committed.borrow());
        tokio::time::sleep(every).await;
        // Nothing to retry and nothing new: wait for a commit.
        if !pending_failed
            && !committed.has_changed().unwrap_or(false)
            && committed.changed().await.is_err()
        {
            return;
        }
    }
}
