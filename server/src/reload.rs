//! Re-reading the config while serving (SIGHUP, `POST /v1/admin/reload`).
//!
//! What takes effect at once: the tokens, the trusted CI keys (`trust`, its trust file
//! included), the org root keys that sign bootstrap tokens (as nixfleet re-reads them at
//! every enrollment), publication (`publish`) and witnessing (`witnessing`), whose tasks are
//! restarted, and the request and connection limits, for connections accepted from then on.
//! The rest (the signing key, TLS, enrollment, the queue's size and batch bound, sources,
//! intervals) is bound to what was built at start: a change there is reported as needing a
//! restart and not applied. A config that does not load or validate is refused with its reason and the one in
//! force stays.
//!
//! A change of who may write (a token, a CI key or an org root key added or removed) is recorded in the log
//! (`AccessChanged`, kind 33) before it takes effect: an auditor sees every change of access
//! no later than its first use. If it cannot be recorded, it is not applied.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use ledger::event::{AccessChanged, Event, TokenGrant};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::access::{Access, AccessCell};
use crate::config::{Config, Limits};
use crate::connections::{ConnLimits, Serving};
use engine::writer::{Recording, Shared, Work};

/// What a reload did.
#[derive(Debug, Clone, Default, serde::Serialize, utoipa::ToSchema)]
pub struct ReloadReport {
    /// Seq of the `AccessChanged` entry, when who may write changed.
    pub access_changed_seq: Option<u64>,
    /// Tokens added and removed, as `role:name`.
    pub tokens_added: Vec<String>,
    /// Tokens no longer accepted.
    pub tokens_removed: Vec<String>,
    /// CI keys added, as `algorithm:public`.
    pub keys_added: Vec<String>,
    /// CI keys no longer trusted.
    pub keys_removed: Vec<String>,
    /// Sections applied without a restart that changed (`publish`, `witnessing`, `trust`).
    pub applied: Vec<String>,
    /// Sections that changed but take effect only at the next start.
    pub needs_restart: Vec<String>,
}

/// Why a reload was refused (the config in force stays).
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The daemon was started without a config file (the demo, tests).
    #[error("this daemon was started without a config file: nothing to re-read")]
    NoConfigFile,
    /// The new config does not load or validate.
    #[error("the new config is refused, the one in force stays: {0}")]
    Invalid(String),
    /// The change of access could not be recorded, so it was not applied.
    #[error("the change of access could not be recorded, so nothing was applied: {0}")]
    NotRecorded(String),
}

/// The background tasks a reload restarts.
#[derive(Debug, Default)]
pub struct Tasks {
    /// The publisher (`publish`).
    pub publisher: Option<JoinHandle<()>>,
    /// The witnessing rounds (`witnessing`).
    pub witnesser: Option<JoinHandle<()>>,
}

impl Tasks {
    /// Stops both (at shutdown, or before a restart).
    pub async fn stop(&mut self) {
        for t in [self.publisher.take(), self.witnesser.take()]
            .into_iter()
            .flatten()
        {
            t.abort();
            let _ = t.await;
        }
    }
}

/// Re-reads the config on request; one reload at a time.
#[derive(Debug)]
pub struct Reloader {
    config_path: Mutex<Option<PathBuf>>,
    db: PathBuf,
    access: AccessCell,
    in_force: Mutex<Config>,
    /// The tasks a reload restarts (the daemon stops them at shutdown).
    pub tasks: tokio::sync::Mutex<Tasks>,
    /// Weak: the writer drains and ends when the last strong sender is gone at shutdown,
    /// whoever still holds the reloader.
    tx: mpsc::WeakSender<Work>,
    shared: Arc<Shared>,
    one_at_a_time: tokio::sync::Mutex<()>,
    /// What the listener serves, and how to build its router for new limits.
    serving: Mutex<Option<(watch::Sender<Serving>, Builder)>>,
}

/// A [`RouterBuilder`], shown by name only.
struct Builder(RouterBuilder);

impl std::fmt::Debug for Builder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RouterBuilder")
    }
}

/// Builds the API's router for request limits: the daemon hands it to the reloader, which
/// knows the limits but not the API (`api` depends on `reload`, not the other way round).
/// It owns the API state, which holds a queue sender: dropped at [`Reloader::release`].
pub type RouterBuilder = Box<dyn Fn(&Limits) -> axum::Router + Send + Sync>;

impl Reloader {
    /// A reloader for a daemon on `db` whose config in force is `config`.
    pub fn new(
        db: PathBuf,
        config: Config,
        access: AccessCell,
        tx: mpsc::Sender<Work>,
        shared: Arc<Shared>,
    ) -> Reloader {
        Reloader {
            config_path: Mutex::new(None),
            db,
            access,
            in_force: Mutex::new(config),
            tasks: tokio::sync::Mutex::new(Tasks::default()),
            tx: tx.downgrade(),
            shared,
            one_at_a_time: tokio::sync::Mutex::new(()),
            serving: Mutex::new(None),
        }
    }

    /// The listener's router and limits, which a reload of `limits` rebuilds with `build`.
    pub fn attach(&self, serving: watch::Sender<Serving>, build: RouterBuilder) {
        *self.serving.lock().unwrap_or_else(|p| p.into_inner()) = Some((serving, Builder(build)));
    }

    /// At shutdown: drops the API state (it holds a queue sender, which would keep the
    /// writer from ending) and serves an empty router to whoever still looks.
    pub fn release(&self) {
        if let Some((serving, _)) = self
            .serving
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            serving.send_modify(|s| s.app = axum::Router::new());
        }
    }

    /// Applies new request and connection limits to the connections accepted from now on.
    fn apply_limits(&self, limits: &Limits) -> bool {
        let mut guard = self.serving.lock().unwrap_or_else(|p| p.into_inner());
        let Some((serving, build)) = guard.as_mut() else {
            return false;
        };
        let conn = ConnLimits {
            header_read_timeout: std::time::Duration::from_secs(limits.header_read_timeout_secs),
            connections_max: limits.connections_max,
        }
        .fit_file_limit();
        serving.send_replace(Serving {
            app: (build.0)(limits),
            limits: conn,
        });
        true
    }

    /// The file the config was read from (`serve --config`), which reloads re-read.
    pub fn set_config_path(&self, path: PathBuf) {
        *self.config_path.lock().unwrap_or_else(|p| p.into_inner()) = Some(path);
    }

    /// Starts the publisher and the witnessing task a config asks for.
    pub async fn start_tasks(&self, config: &Config) {
        let mut tasks = self.tasks.lock().await;
        tasks.stop().await;
        // A section a reload removed has no lag; one it changed starts over (its first round
        // says how far the new destination is). The tasks set these again as they start.
        let m = &self.shared.metrics;
        m.publishing
            .store(false, std::sync::atomic::Ordering::Relaxed);
        m.witnessing
            .store(false, std::sync::atomic::Ordering::Relaxed);
        m.publication_lag_entries.set(0);
        m.witness_lag_entries.set(0);
        m.published_entries.set(0);
        tasks.publisher = config.publish.clone().map(|cfg| {
            tokio::spawn(crate::publish::run(
                cfg,
                Arc::clone(&self.shared),
                config.witnessing.is_some(),
            ))
        });
        tasks.witnesser = config.witnessing.clone().map(|cfg| {
            tokio::spawn(crate::witnessing::run(
                cfg,
                Arc::clone(&self.shared),
                crate::witnessing::state_path(&self.db),
            ))
        });
    }

    /// nixfleet re-reads its trust file at every poll and every enrollment (NIXFLEET-WIRE.md
    /// §9.6): when the trust file changed since the access in force was built, reloads as
    /// a SIGHUP does (`by` = `trust-file`), so a key change is recorded (`AccessChanged`)
    /// before it is used. A reload that fails leaves the access in force, and says why.
    pub async fn follow_trust_file(&self) {
        if !self.access.get().trust_file_changed() {
            return;
        }
        match self.reload("trust-file").await {
            Ok(report) => tracing::info!(?report, "the trust file changed: reloaded"),
            Err(e) => {
                tracing::warn!(error = %e, "the trust file changed, and the reload failed; the access in force stays")
            }
        }
    }

    /// Re-reads the config file; `by` is recorded (`SIGHUP`, `operator:<name>`).
    pub async fn reload(&self, by: &str) -> Result<ReloadReport, ReloadError> {
        let _one = self.one_at_a_time.lock().await;
        let result = self.reload_locked(by).await;
        match &result {
            Ok(_) => self.shared.metrics.reloads.inc(),
            Err(_) => self.shared.metrics.reload_failures.inc(),
        };
        result
    }

    async fn reload_locked(&self, by: &str) -> Result<ReloadReport, ReloadError> {
        let path = self
            .config_path
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or(ReloadError::NoConfigFile)?;
        let loaded = tokio::task::spawn_blocking(move || Config::load(&path))
            .await
            .map_err(|e| ReloadError::Invalid(e.to_string()))?
            .map_err(|e| ReloadError::Invalid(e.to_string()))?;
        let old_config = self
            .in_force
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let new = Access::of(&loaded);
        let old = self.access.get();
        let mut report = ReloadReport::default();
        let change = AccessChanged {
            by: by.to_string(),
            tokens_added: new.grants.difference(&old.grants).cloned().collect(),
            tokens_removed: old.grants.difference(&new.grants).cloned().collect(),
            keys_added: new.keys.difference(&old.keys).cloned().collect(),
            keys_removed: old.keys.difference(&new.keys).cloned().collect(),
        };
        let label = |g: &TokenGrant| format!("{}:{}", g.role, g.name);
        report.tokens_added = change.tokens_added.iter().map(label).collect();
        report.tokens_removed = change.tokens_removed.iter().map(label).collect();
        report.keys_added = change.keys_added.clone();
        report.keys_removed = change.keys_removed.clone();
        let access_changed = !(change.tokens_added.is_empty()
            && change.tokens_removed.is_empty()
            && change.keys_added.is_empty()
            && change.keys_removed.is_empty());
        if access_changed {
            let (reply, answer) = oneshot::channel();
            let work = Work::Record(Box::new(Recording {
                event: Event::AccessChanged(change),
                reply,
            }));
            let stopping = || ReloadError::NotRecorded("the daemon is stopping".into());
            self.tx
                .upgrade()
                .ok_or_else(stopping)?
                .send(work)
                .await
                .map_err(|_| stopping())?;
            let seq = answer
                .await
                .map_err(|_| ReloadError::NotRecorded("the writer stopped".into()))?
                .map_err(ReloadError::NotRecorded)?;
            report.access_changed_seq = Some(seq);
        }
        let old_trust = (&old_config.trust, &old_config.tokens);
        let new_trust = (&loaded.config.trust, &loaded.config.tokens);
        let is_root = |k: &String| k.starts_with("org-root:");
        let root_changed =
            report.keys_added.iter().any(is_root) || report.keys_removed.iter().any(is_root);
        let others_changed = !(report.tokens_added.is_empty()
            && report.tokens_removed.is_empty()
            && report.keys_added.iter().all(is_root)
            && report.keys_removed.iter().all(is_root));
        if json(&old_trust) != json(&new_trust) || others_changed {
            report.applied.push("tokens and trust".into());
        }
        if root_changed {
            report.applied.push("org root keys".into());
        }
        self.access.set(new);
        let restart_tasks = json(&old_config.publish) != json(&loaded.config.publish)
            || json(&old_config.witnessing) != json(&loaded.config.witnessing);
        if restart_tasks {
            self.start_tasks(&loaded.config).await;
            report.applied.push("publish and witnessing".into());
        }
        // The sections bound at start: compared, never applied.
        macro_rules! bound_at_start {
            ($($field:ident),*) => {
                [$((
                    stringify!($field),
                    json(&old_config.$field),
                    json(&loaded.config.$field),
                )),*]
            };
        }
        // Limits: the queue's size and the writer's batch are set when they are made; the
        // rest (request timeout, long polls, body size, concurrency, connections, header
        // timeout) apply to connections accepted from now on.
        let (old_l, new_l) = (&old_config.limits, &loaded.config.limits);
        if old_l.queue != new_l.queue {
            report.needs_restart.push("limits.queue".into());
        }
        if old_l.batch_inputs != new_l.batch_inputs {
            report.needs_restart.push("limits.batch_inputs".into());
        }
        let mut live_limits = old_l.clone();
        live_limits.queue = new_l.queue;
        live_limits.batch_inputs = new_l.batch_inputs;
        if json(&live_limits) != json(new_l) {
            let mut applied = new_l.clone();
            applied.queue = old_l.queue;
            applied.batch_inputs = old_l.batch_inputs;
            if self.apply_limits(&applied) {
                report.applied.push("limits (new connections)".into());
                self.in_force
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .limits = applied;
            }
        }
        // The org root key is part of the access (applied above); the rest of `enrollment`
        // (the CA, the validity) is bound at start.
        let without_root = |c: &Config| {
            c.enrollment.clone().map(|mut e| {
                e.org_root_key = None;
                e
            })
        };
        if json(&without_root(&old_config)) != json(&without_root(&loaded.config)) {
            report.needs_restart.push("enrollment".into());
        }
        let fixed = bound_at_start!(
            signing_key,
            manifest_dir,
            pull,
            revocations,
            bootstrap_nonces,
            strict,
            closure_upstream,
            tls,
            plan_interval_ms,
            retention_hours,
            replay_snapshot_every,
            compact_on_start,
            quick_repair,
            failover
        );
        report.needs_restart.extend(
            fixed
                .into_iter()
                .filter(|(_, a, b)| a != b)
                .map(|(name, _, _)| name.to_string()),
        );
        // What was applied is now in force; what needs a restart stays as it was started, so
        // the next reload reports it again until the restart.
        {
            let mut in_force = self.in_force.lock().unwrap_or_else(|p| p.into_inner());
            in_force.tokens = loaded.config.tokens.clone();
            in_force.trust = loaded.config.trust.clone();
            if let (Some(now), Some(new)) = (&mut in_force.enrollment, &loaded.config.enrollment) {
                now.org_root_key = new.org_root_key.clone();
            }
            in_force.publish = loaded.config.publish.clone();
            in_force.witnessing = loaded.config.witnessing.clone();
        }
        tracing::info!(
            by,
            access_changed_seq = ?report.access_changed_seq,
            tokens_added = ?report.tokens_added,
            tokens_removed = ?report.tokens_removed,
            keys_added = ?report.keys_added,
            keys_removed = ?report.keys_removed,
            applied = ?report.applied,
            needs_restart = ?report.needs_restart,
            "config reloaded"
        );
        Ok(report)
    }
}

fn json<T: serde::Serialize>(v: &T) -> serde_json::Value {
    serde_json::to_value(v).unwrap_or(serde_json::Value::Null)
}
