//! The daemon's publication (docs/FORMAT.md §12, OPERATIONS.md `publish`): where the tiles go
//! (a directory, or an S3 bucket: [`S3Sink`], any S3-compatible store, where a tile is
//! created with a conditional put (`If-None-Match: *`) and the checkpoint replaced only if it
//! is still the one this publication read (`If-Match`)), the config section, and the task
//! that publishes after commits. What is written, and in which order, is the engine's
//! ([`engine::publish`]).

use std::path::PathBuf;

pub use engine::publish::{
    DirSink, PublishError, Published, Rotations, Sink, publish, publish_upto,
};

/// Where `publish` writes: a directory, or `s3://BUCKET/PREFIX`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Destination {
    /// A directory (created if missing).
    Dir(PathBuf),
    /// An S3 bucket and key prefix, `s3://BUCKET/PREFIX` (credentials, region and endpoint
    /// from the `AWS_*` environment, docs/OPERATIONS.md).
    S3 {
        /// The bucket.
        bucket: String,
        /// The key prefix, without leading or trailing `/` (may be empty).
        prefix: String,
    },
}

impl std::str::FromStr for Destination {
    type Err = String;
    fn from_str(s: &str) -> Result<Destination, String> {
        if let Some(rest) = s.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            // S3's bucket naming rules (3-63 of a-z 0-9 . -), checked here so that a typo is
            // named before any request is made.
            let valid = (3..=63).contains(&bucket.len())
                && bucket.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-'
                });
            if !valid {
                return Err(format!(
                    "{s:?}: the bucket must be 3 to 63 characters of a-z, 0-9, '.' and '-'"
                ));
            }
            let prefix = prefix.trim_matches('/');
            if prefix
                .split('/')
                .any(|p| p.is_empty() || p == "." || p == "..")
                && !prefix.is_empty()
            {
                return Err(format!(
                    "{s:?}: the prefix has an empty, '.' or '..' segment"
                ));
            }
            return Ok(Destination::S3 {
                bucket: bucket.to_string(),
                prefix: prefix.to_string(),
            });
        }
        if s.contains("://") {
            return Err(format!(
                "{s:?}: publish to a directory or to s3://BUCKET/PREFIX (no other scheme)"
            ));
        }
        if s.is_empty() {
            return Err("the destination is empty".into());
        }
        Ok(Destination::Dir(PathBuf::from(s)))
    }
}

impl TryFrom<String> for Destination {
    type Error = String;
    fn try_from(s: String) -> Result<Destination, String> {
        s.parse()
    }
}

impl From<Destination> for String {
    fn from(d: Destination) -> String {
        d.to_string()
    }
}

impl std::fmt::Display for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Destination::Dir(p) => write!(f, "{}", p.display()),
            Destination::S3 { bucket, prefix } if prefix.is_empty() => write!(f, "s3://{bucket}"),
            Destination::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
        }
    }
}

impl Destination {
    /// Opens the destination. An S3 sink does its requests on `rt` (a multi-threaded
    /// runtime: it blocks on them from the calling thread, which must not be a runtime
    /// worker).
    ///
    /// `deadline` bounds every request to the destination (an S3 endpoint that accepts the
    /// connection and never answers fails the request after it, retries included).
    pub fn open(
        &self,
        rt: &tokio::runtime::Handle,
        deadline: std::time::Duration,
    ) -> Result<Box<dyn Sink>, PublishError> {
        match self {
            Destination::Dir(dir) => Ok(Box::new(DirSink::new(dir).map_err(|source| {
                PublishError::Io {
                    what: format!("creating {}", dir.display()),
                    source,
                }
            })?)),
            Destination::S3 { bucket, prefix } => {
                Ok(Box::new(S3Sink::new(bucket, prefix, rt.clone(), deadline)?))
            }
        }
    }
}

/// An S3 bucket (AWS, or any S3-compatible store: MinIO, Garage, Ceph RGW, R2…), through
/// `object_store`. Configured from the environment as the AWS tools are: `AWS_ACCESS_KEY_ID`,
/// `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `AWS_ENDPOINT_URL` (another store than AWS),
/// `AWS_ALLOW_HTTP=true` (a plain-http endpoint).
pub struct S3Sink {
    store: object_store::aws::AmazonS3,
    prefix: String,
    rt: tokio::runtime::Handle,
    /// The version of `checkpoint` as last read: the replacement is conditional on it.
    checkpoint_version: std::sync::Mutex<Option<object_store::UpdateVersion>>,
    /// Every request, retries included, ends by then.
    deadline: std::time::Duration,
}

impl std::fmt::Debug for S3Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Sink")
            .field("store", &self.store.to_string())
            .field("prefix", &self.prefix)
            .finish()
    }
}

impl S3Sink {
    /// A sink on `bucket` under `prefix`, configured from the `AWS_*` environment.
    pub fn new(
        bucket: &str,
        prefix: &str,
        rt: tokio::runtime::Handle,
        deadline: std::time::Duration,
    ) -> Result<S3Sink, PublishError> {
        S3Sink::with(
            object_store::aws::AmazonS3Builder::from_env().with_bucket_name(bucket),
            prefix,
            rt,
            deadline,
        )
    }

    /// A sink configured by `builder` (the bucket named in it) under `prefix`.
    pub fn with(
        builder: object_store::aws::AmazonS3Builder,
        prefix: &str,
        rt: tokio::runtime::Handle,
        deadline: std::time::Duration,
    ) -> Result<S3Sink, PublishError> {
        use object_store::ClientConfigKey;
        use object_store::aws::AmazonS3ConfigKey;
        // reqwest is built without a default crypto provider: the daemon's (ring).
        let _ = rustls::crypto::ring::default_provider().install_default();
        // object_store's defaults (no request timeout, retries for up to 3 minutes) left a
        // hanging endpoint silent for minutes (issue 26). Each attempt and the retries
        // together are bounded by the deadline; the outer timeout in `within` is the backstop.
        let secs = format!("{}ms", deadline.as_millis().max(1));
        let store = builder
            .with_config(AmazonS3ConfigKey::Client(ClientConfigKey::Timeout), &secs)
            .with_config(
                AmazonS3ConfigKey::Client(ClientConfigKey::ConnectTimeout),
                &secs,
            )
            .with_retry(object_store::RetryConfig {
                max_retries: 2,
                retry_timeout: deadline,
                ..object_store::RetryConfig::default()
            })
            .build()
            .map_err(|e| PublishError::Refused(format!("configuring S3: {e}")))?;
        Ok(S3Sink {
            store,
            prefix: prefix.to_string(),
            rt,
            checkpoint_version: std::sync::Mutex::new(None),
            deadline,
        })
    }

    /// Runs one request on the runtime, failing it with `TimedOut` at the deadline.
    fn within<T>(
        &self,
        what: &str,
        f: impl std::future::Future<Output = std::io::Result<T>>,
    ) -> std::io::Result<T> {
        self.rt.block_on(async {
            match tokio::time::timeout(self.deadline, f).await {
                Ok(r) => r,
                Err(_) => Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!(
                        "{what}: no answer within {} ms (publication.request_timeout_secs)",
                        self.deadline.as_millis()
                    ),
                )),
            }
        })
    }

    fn key(&self, path: &str) -> object_store::path::Path {
        if self.prefix.is_empty() {
            object_store::path::Path::from(path)
        } else {
            object_store::path::Path::from(format!("{}/{path}", self.prefix))
        }
    }
}

/// An S3 failure as IO; a request that ran out of time is `TimedOut` (counted and logged
/// as such), whichever layer gave up.
fn s3_io(e: object_store::Error) -> std::io::Error {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    let mut timed_out = false;
    while let Some(c) = cause {
        if c.downcast_ref::<reqwest::Error>()
            .is_some_and(reqwest::Error::is_timeout)
            || c.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
        {
            timed_out = true;
        }
        cause = c.source();
    }
    if timed_out {
        std::io::Error::new(std::io::ErrorKind::TimedOut, e)
    } else {
        std::io::Error::other(e)
    }
}

impl Sink for S3Sink {
    fn get(&self, path: &str) -> std::io::Result<Option<Vec<u8>>> {
        use object_store::ObjectStoreExt as _;
        let key = self.key(path);
        self.within(&format!("reading {path}"), async {
            match self.store.get(&key).await {
                Ok(r) => {
                    let version = object_store::UpdateVersion {
                        e_tag: r.meta.e_tag.clone(),
                        version: r.meta.version.clone(),
                    };
                    let bytes = r.bytes().await.map_err(s3_io)?;
                    if path == "checkpoint" {
                        *self
                            .checkpoint_version
                            .lock()
                            .unwrap_or_else(|p| p.into_inner()) = Some(version);
                    }
                    Ok(Some(bytes.to_vec()))
                }
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(s3_io(e)),
            }
        })
    }

    fn put(&self, path: &str, bytes: &[u8], immutable: bool) -> std::io::Result<()> {
        use object_store::{ObjectStore as _, PutMode, PutOptions};
        let key = self.key(path);
        let mode = if immutable {
            PutMode::Create
        } else {
            match self
                .checkpoint_version
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone()
            {
                Some(v) => PutMode::Update(v),
                None => PutMode::Create,
            }
        };
        let opts = PutOptions {
            mode,
            ..PutOptions::default()
        };
        let payload = object_store::PutPayload::from(bytes.to_vec());
        self.within(&format!("writing {path}"), async {
            match self.store.put_opts(&key, payload, opts).await {
                Ok(r) => {
                    if !immutable {
                        *self
                            .checkpoint_version
                            .lock()
                            .unwrap_or_else(|p| p.into_inner()) =
                            Some(object_store::UpdateVersion {
                                e_tag: r.e_tag,
                                version: r.version,
                            });
                    }
                    Ok(())
                }
                // A tile that exists is kept (tiles are immutable: another publisher wrote
                // the same bytes).
                Err(object_store::Error::AlreadyExists { .. }) if immutable => Ok(()),
                Err(
                    e @ (object_store::Error::AlreadyExists { .. }
                    | object_store::Error::Precondition { .. }),
                ) => Err(std::io::Error::other(format!(
                    "{path} changed since it was read (another publisher?): {e}"
                ))),
                Err(e) => Err(s3_io(e)),
            }
        })
    }
}

/// The `publish` section of the config: the daemon publishes tiles as it commits.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishConfig {
    /// Where to publish: a directory (served by any static web server), or
    /// `s3://BUCKET/PREFIX`.
    pub to: Destination,
    /// Publish at most this often, seconds (default 5); each publication covers every
    /// commit since the last.
    #[serde(default = "default_interval")]
    pub interval_secs: u64,
    /// Every request to the destination ends within this many seconds, retries included
    /// (default 30; 1-300). Each timeout is logged and counted
    /// (`fleet_ledger_publication_timeouts_total`).
    #[serde(default = "default_request_timeout")]
    pub request_timeout_secs: u64,
}

fn default_interval() -> u64 {
    5
}

fn default_request_timeout() -> u64 {
    DEFAULT_REQUEST_TIMEOUT.as_secs()
}

/// The deadline of one request to a publication destination, unless configured.
pub const DEFAULT_REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// The daemon's publisher: after commits, at most every `interval_secs`, publishes the latest
/// committed state from a read snapshot. The writer never waits on it; the gap shows in
/// `fleet_ledger_publication_lag_entries`, failures in the log and
/// `fleet_ledger_publication_failures_total` (the next round retries).
///
/// With `witnessed`, what is published is the latest checkpoint witnesses cosigned (with
/// their cosignatures), not the latest made: nothing is published before the first.
pub async fn run(
    cfg: PublishConfig,
    shared: std::sync::Arc<engine::writer::Shared>,
    witnessed: bool,
) {
    let deadline = std::time::Duration::from_secs(cfg.request_timeout_secs.clamp(1, 300));
    let sink: std::sync::Arc<dyn Sink> =
        match cfg.to.open(&tokio::runtime::Handle::current(), deadline) {
            Ok(s) => s.into(),
            Err(e) => {
                tracing::error!(to = %cfg.to, error = %e, "cannot publish");
                return;
            }
        };
    let every = std::time::Duration::from_secs(cfg.interval_secs.max(1));
    let rotations = std::sync::Arc::new(std::sync::Mutex::new(Rotations::default()));
    let mut committed = shared.committed.subscribe();
    let mut failing = false;
    shared
        .metrics
        .publishing
        .store(true, std::sync::atomic::Ordering::Relaxed);
    shared.metrics.update_lags(*shared.committed.borrow());
    loop {
        committed.mark_unchanged();
        let shared2 = std::sync::Arc::clone(&shared);
        let sink2 = std::sync::Arc::clone(&sink);
        let rotations = std::sync::Arc::clone(&rotations);
        let result = tokio::task::spawn_blocking(move || {
            let mut rotations = rotations.lock().unwrap_or_else(|p| p.into_inner());
            let guard = shared2.reader.read().unwrap_or_else(|p| p.into_inner());
            let snap = guard
                .as_ref()
                .ok_or_else(|| PublishError::Refused("the ledger is being reopened".into()))?
                .snapshot()?;
            drop(guard);
            if witnessed {
                let w = shared2
                    .witnessed
                    .read()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone();
                match w {
                    Some(w) => publish_upto(
                        &snap,
                        sink2.as_ref(),
                        Some((w.size, &w.note)),
                        &mut rotations,
                    ),
                    None => Err(PublishError::NotYet),
                }
            } else {
                publish_upto(&snap, sink2.as_ref(), None, &mut rotations)
            }
        })
        .await;
        let m = &shared.metrics;
        match result {
            Ok(Ok(p)) => {
                m.published_entries.set(p.to as i64);
                if failing {
                    tracing::info!(size = p.to, "publication works again");
                    failing = false;
                }
            }
            Ok(Err(PublishError::NotYet)) => {}
            Ok(Err(e)) if e.is_timeout() => {
                // Every one, not once per outage: a hanging destination must be seen.
                m.publication_failures.inc();
                m.publication_timeouts.inc();
                tracing::warn!(to = %cfg.to, error = %e, "publication timed out; retrying");
                failing = true;
            }
            Ok(Err(e)) => {
                m.publication_failures.inc();
                if !failing {
                    tracing::warn!(to = %cfg.to, error = %e, "publication failed; retrying");
                    failing = true;
                }
            }
            Err(e) => {
                m.publication_failures.inc();
                tracing::error!(error = %e, "publication panicked; retrying");
            }
        }
        m.update_lags(*shared.committed.borrow());
        tokio::time::sleep(every).await;
        // Nothing new since: wait for a commit. (A witnessed checkpoint arrives after its
        // commit: then each interval looks, which costs a read of the published checkpoint.)
        if !witnessed
            && !committed.has_changed().unwrap_or(false)
            && committed.changed().await.is_err()
        {
            return;
        }
    }
}
