//! The daemon's configuration file (JSON): the checkpoint signing key, the manifest trust
//! roots, API tokens (stored as SHA-256 digests, never in clear) and limits. Unknown fields
//! are refused so a typo cannot silently disable a setting.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::auth::{Principal, Role, TokenTable};

/// Why a configuration is refused.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// Unreadable file.
    #[error("cannot read config {path}: {source}")]
    Read {
        /// The file, as named.
        path: PathBuf,
        /// The system's error.
        source: std::io::Error,
    },
    /// Not JSON of the expected shape.
    #[error("config {path}: {reason}")]
    Parse {
        /// The file, as named.
        path: PathBuf,
        /// Where and why.
        reason: String,
    },
    /// A value out of range or inconsistent.
    #[error("config: {0}")]
    Invalid(String),
}

/// A trusted CI key (`{algorithm, public}`; `ed25519` or `ecdsa-p256`).
pub use crate::trust::KeyText as TrustedKey;

/// How manifests are trusted.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Trust {
    /// Keys tried in declaration order (`ed25519` or `ecdsa-p256`).
    #[serde(default)]
    pub manifest_keys: Vec<TrustedKey>,
    /// nixfleet's key slot, as in its trust file's `ciReleaseKey`: `current`, `previous`,
    /// `successor` (until `retireAt`), `rejectBefore`. Tried after `manifest_keys`.
    #[serde(default)]
    pub ci_release_key: Option<crate::trust::KeySlot>,
    /// A nixfleet trust file (`/etc/nixfleet/cp/trust.json`) whose `ciReleaseKey` is read
    /// the same way (relative to the config file).
    #[serde(default)]
    pub trust_file: Option<PathBuf>,
    /// Compromise switch: manifests signed strictly before this RFC 3339 time are refused.
    #[serde(default)]
    pub reject_before: Option<String>,
    /// A manifest older than this (by `meta.signedAt`) is stale.
    #[serde(default = "default_max_age")]
    pub max_age_secs: u64,
}

fn default_max_age() -> u64 {
    7 * 24 * 3600
}

/// One API token, by the SHA-256 of its secret.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenEntry {
    /// Lowercase hex SHA-256 of the bearer token.
    pub sha256: String,
    /// `agent`, `operator`, `auditor` or `ci`.
    pub role: Role,
    /// The identity: the host name for an agent, a person or system otherwise.
    pub name: String,
}

/// Resource limits.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Inputs waiting for the writer; beyond it callers get 503 + Retry-After.
    pub queue: usize,
    /// Inputs the writer decides and commits together at most.
    pub batch_inputs: usize,
    /// Request body bytes.
    pub body_bytes: usize,
    /// Cap on `GET /v1/agent/dispatch?wait=N`.
    pub long_poll_secs: u64,
    /// Requests in progress at once; beyond it callers get 503.
    pub concurrent_requests: usize,
    /// Time a request may take (long polls get their cap plus this).
    pub request_timeout_secs: u64,
    /// Time a connection has for its TLS handshake, and then for each request head from the
    /// connection's start or its previous response: also the keep-alive idle timeout.
    pub header_read_timeout_secs: u64,
    /// Open connections at most (lowered to fit the open-file limit); at the cap the oldest
    /// connection that has not authenticated is closed for a newcomer
    /// (`crate::connections`).
    pub connections_max: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            queue: 8192,
            batch_inputs: 2048,
            body_bytes: 256 * 1024,
            long_poll_secs: 60,
            concurrent_requests: 1024,
            request_timeout_secs: 30,
            header_read_timeout_secs: 10,
            connections_max: 4096,
        }
    }
}

/// The configuration file.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The checkpoint signing key (relative to the config file's directory). Required, except
    /// on a failover follower, which never holds it (and refuses to start with one).
    #[serde(default)]
    pub signing_key: PathBuf,
    /// Manifest trust.
    pub trust: Trust,
    /// A directory watched for `fleet.resolved.json` and `rollouts/*.json`, each with a
    /// `.sig` beside it.
    #[serde(default)]
    pub manifest_dir: Option<PathBuf>,
    /// CI's published URLs, pulled on nixfleet's schedule ([`PullConfig`]).
    #[serde(default)]
    pub pull: Option<PullConfig>,
    /// CI's signed revocation list, pulled (nixfleet's `--revocations-*`). A
    /// `revocations.json` in `manifest_dir` is read either way.
    #[serde(default)]
    pub revocations: Option<SignedFileSource>,
    /// CI's signed bootstrap-nonce allowlist, pulled (nixfleet's `--bootstrap-nonces-*`). A
    /// `bootstrap-nonces.json` in `manifest_dir` is read either way.
    #[serde(default)]
    pub bootstrap_nonces: Option<SignedFileSource>,
    /// nixfleet's `--strict`: refuse to start unless every security setting is made (mTLS
    /// with `tls.client_ca`, a revocation list and a nonce allowlist source, a CA key held
    /// by a sign wrapper unless `enrollment.allow_file_ca_key`), wait for CI's lists before
    /// serving agents, and require `X-Nixfleet-Protocol` on `/v1/*` and `/metrics`.
    #[serde(default)]
    pub strict: bool,
    /// nixfleet's `--closure-upstream`: the binary cache `GET /v1/agent/closure/{hash}`
    /// fetches `<hash>.narinfo` from (unset: that route answers 501).
    #[serde(default)]
    pub closure_upstream: Option<String>,
    /// API tokens.
    pub tokens: Vec<TokenEntry>,
    /// Request sizes, counts and rates.
    #[serde(default)]
    pub limits: Limits,
    /// HTTPS, and agent identity by client certificate. Without it the API is plain HTTP
    /// (for a loopback or a TLS-terminating proxy) and agents use bearer tokens.
    #[serde(default)]
    pub tls: Option<crate::tls::TlsConfig>,
    /// Agent enrollment and renewal (`POST /v1/enroll`, `/v1/agent/renew`): the fleet CA
    /// and the org root key. Needs `tls` with `client_ca` and `agent_cn_suffix`.
    #[serde(default)]
    pub enrollment: Option<crate::enrollment::EnrollmentConfig>,
    /// Publish the log as C2SP tlog-tiles into a directory as it commits.
    #[serde(default)]
    pub publish: Option<crate::publish::PublishConfig>,
    /// Submit checkpoints to C2SP tlog-witness witnesses and keep their cosignatures.
    #[serde(default)]
    pub witnessing: Option<crate::witnessing::WitnessingConfig>,
    /// Planner safety tick (the reference used 15 s).
    #[serde(default = "default_plan_interval")]
    pub plan_interval_ms: u64,
    /// Hours a finished rollout (Terminal, Failed, Reverted, Superseded) stays live after its
    /// last transition; then the writer records `RetentionExpired` and it becomes Pruned: it
    /// leaves the daemon's memory, its rows and entries stay. 0 keeps every rollout live.
    #[serde(default = "default_retention_hours")]
    pub retention_hours: u64,
    /// Entries between the replay snapshots the writer leaves beside the database
    /// (`<db>.replay-cache`), so `replay --at-*` on it starts near any point. 0: none.
    #[serde(default = "default_replay_snapshot_every")]
    pub replay_snapshot_every: u64,
    /// Compact the database file at start, before serving (redb's `compact`: about 2 s per
    /// million entries; gives back the pages freed by past commits, about a fifth of the file
    /// on a long history). Default false: start-up stays fast.
    #[serde(default)]
    pub compact_on_start: bool,
    /// Every commit also saves the storage's allocator state (redb's quick-repair), so that
    /// starting after a crash (SIGKILL, power loss) reads it instead of walking the whole
    /// file: a flat ~0.05 s instead of ~1 s per GB of database. Costs on every commit, more
    /// as the file grows: a few percent of ingest at 3 GB, two thirds or more at 23 GB
    /// (`docs/OPERATIONS.md`, `quick_repair`). Default false. A clean stop needs no repair
    /// either way.
    #[serde(default)]
    pub quick_repair: bool,
    /// Failover (issue 29): this node is one of several writer-capable nodes sharing one log
    /// through a commit register in etcd; the elected one writes, the others stand by.
    /// Unset: a single node, as before.
    #[serde(default)]
    pub failover: Option<FailoverConfig>,
}

/// What a failover node is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeRole {
    /// Writer-capable: stands by, and writes once elected.
    #[default]
    Standby,
    /// A verifying read follower: holds no key, never writes, serves reads of the log it
    /// verified.
    Follower,
}

/// The principal the failover peer token authenticates as (an auditor of this name).
pub const PEER_NAME: &str = "failover peer";

/// Failover settings (`docs/OPERATIONS.md`, "Failover").
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailoverConfig {
    /// This node's name: unique among the nodes, the name the others list it under in
    /// `peers` (letters, digits, `-`; at most 63).
    pub node: String,
    /// `standby` (writer-capable, the default) or `follower`.
    #[serde(default)]
    pub role: NodeRole,
    /// etcd's client URLs (`http://host:2379`), every member (a follower needs none).
    #[serde(default)]
    pub etcd: Vec<String>,
    /// The key prefix in etcd: the register is `<prefix>/register`, the election
    /// `<prefix>/writer`. One prefix per log.
    #[serde(default = "default_failover_prefix")]
    pub prefix: String,
    /// The election lease: a writer that cannot renew it for this long loses the election,
    /// and another node takes over (its swap of the register fences this one).
    #[serde(default = "default_lease_ttl")]
    pub lease_ttl_secs: u64,
    /// The other writer-capable nodes: name → base URL of their API (`http://host:port`).
    #[serde(default)]
    pub peers: std::collections::BTreeMap<String, String>,
    /// A file holding the secret the nodes present to each other (every node the same;
    /// at least 32 characters): shipping batches, and reading the writer's log to catch up
    /// (it also authenticates as an auditor).
    pub token_file: PathBuf,
    /// The node that may take an empty register: the first writer of a log put under
    /// failover (the node whose log acknowledged writes before). Any other node waits
    /// until the register names a head it holds.
    #[serde(default)]
    pub initial_writer: Option<String>,
    /// Refuse writes (503) while fewer than `min_sync` standbys hold every batch, instead of
    /// going on without the ones that stop answering (degraded mode).
    #[serde(default)]
    pub strict_sync: bool,
    /// With `strict_sync`: standbys that must hold every batch.
    #[serde(default = "default_min_sync")]
    pub min_sync: usize,
    /// How long the writer waits for a standby to take a batch before it goes on without it.
    #[serde(default = "default_ship_timeout")]
    pub ship_timeout_ms: u64,
    /// A follower's witness policy: the witnesses it trusts (verifier keys as witnesses
    /// publish them, `<name>+<hex id>+<base64>`). With any, the follower follows only up to
    /// the writer's latest checkpoint that `witnesses_required` of them cosigned, so every
    /// answer it gives reflects a tree witnesses saw (no split view), and halts if the log's
    /// key signed another tree of a witnessed size. Followers only.
    #[serde(default)]
    pub witnesses: Vec<String>,
    /// How many distinct trusted witnesses must have cosigned (default: all of them).
    #[serde(default)]
    pub witnesses_required: Option<usize>,
}

fn default_failover_prefix() -> String {
    "/fleet-ledger".into()
}
fn default_lease_ttl() -> u64 {
    5
}
fn default_min_sync() -> usize {
    1
}
fn default_ship_timeout() -> u64 {
    2_000
}

impl FailoverConfig {
    /// A follower's witness policy (no witnesses: none required).
    pub fn witness_policy(&self) -> Result<ledger::witness::WitnessPolicy, String> {
        let witnesses = self
            .witnesses
            .iter()
            .map(|k| {
                ledger::witness::WitnessKey::from_text(k)
                    .map_err(|e| format!("failover.witnesses: {k:?}: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let required = self.witnesses_required.unwrap_or(witnesses.len());
        Ok(ledger::witness::WitnessPolicy {
            witnesses,
            required,
        })
    }

    /// Checks the settings; returns the peer token (the file's content, trimmed).
    fn check(&self) -> Result<String, String> {
        let name_ok = |n: &str| {
            !n.is_empty()
                && n.len() <= 63
                && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        };
        if !name_ok(&self.node) {
            return Err(format!(
                "failover.node {:?}: use 1-63 letters, digits and '-'",
                self.node
            ));
        }
        for (name, url) in &self.peers {
            if !name_ok(name) || *name == self.node {
                return Err(format!(
                    "failover.peers: {name:?} is not another node's name"
                ));
            }
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(format!(
                    "failover.peers.{name}: {url:?} is not an http(s) URL"
                ));
            }
        }
        let needs_etcd = self.role == NodeRole::Standby;
        if (needs_etcd && self.etcd.is_empty())
            || self
                .etcd
                .iter()
                .any(|u| !(u.starts_with("http://") || u.starts_with("https://")))
        {
            return Err(
                "failover.etcd: list every etcd member's client URL (http://host:2379)".into(),
            );
        }
        if !self.prefix.starts_with('/') || self.prefix.len() < 2 {
            return Err(format!(
                "failover.prefix {:?}: a key prefix such as /fleet-ledger",
                self.prefix
            ));
        }
        if self.role == NodeRole::Follower && self.peers.is_empty() {
            return Err(
                "failover.peers: a follower reads from the writer-capable nodes; list them".into(),
            );
        }
        if !self.witnesses.is_empty() && self.role != NodeRole::Follower {
            return Err(
                "failover.witnesses: a witness policy is a follower's (the writer's witnesses are `witnessing`)"
                    .into(),
            );
        }
        let policy = self.witness_policy()?;
        if self
            .witnesses_required
            .is_some_and(|n| n == 0 || n > policy.witnesses.len())
        {
            return Err(format!(
                "failover.witnesses_required: between 1 and the {} witnesses listed",
                policy.witnesses.len()
            ));
        }
        if !(1..=60).contains(&self.lease_ttl_secs) {
            return Err("failover.lease_ttl_secs: 1 to 60".into());
        }
        if self.ship_timeout_ms == 0 {
            return Err("failover.ship_timeout_ms must be positive".into());
        }
        if self.strict_sync && (self.min_sync == 0 || self.min_sync > self.peers.len()) {
            return Err(format!(
                "failover.min_sync {} with strict_sync: between 1 and the {} peers",
                self.min_sync,
                self.peers.len()
            ));
        }
        if let Some(w) = &self.initial_writer
            && *w != self.node
            && !self.peers.contains_key(w)
        {
            return Err(format!(
                "failover.initial_writer {w:?} is neither this node nor a peer"
            ));
        }
        let token = std::fs::read_to_string(&self.token_file)
            .map_err(|e| format!("failover.token_file {}: {e}", self.token_file.display()))?;
        let token = token.trim().to_string();
        if token.len() < 32 {
            return Err(format!(
                "failover.token_file {}: the secret must be at least 32 characters (fleet-ledger token prints one)",
                self.token_file.display()
            ));
        }
        Ok(token)
    }
}

fn default_replay_snapshot_every() -> u64 {
    engine::replay_cache::SNAPSHOT_EVERY
}

fn default_retention_hours() -> u64 {
    // A week: long enough to look at a finished rollout, short enough that memory does not
    // grow with the fleet's history.
    168
}

fn default_plan_interval() -> u64 {
    15_000
}

/// What the daemon runs with, checked.
#[derive(Debug)]
pub struct Settings {
    /// The raw config, paths resolved.
    pub config: Config,
    /// Trusted manifest keys, in order, and the cut-off.
    pub manifest_keys: crate::trust::TrustedKeys,
    /// The org root keys that sign bootstrap tokens (empty without `enrollment`).
    pub org_root: crate::trust::TrustedKeys,
    /// SHA-256 of the trust file's bytes these keys came from (with `trust.trust_file`).
    pub trust_file_digest: Option<[u8; 32]>,
    /// The bearer tokens and the role each stands for.
    pub tokens: TokenTable,
    /// The TLS server config, when `tls` is set.
    pub tls: Option<std::sync::Arc<rustls::ServerConfig>>,
    /// Which client certificates are operators' (none without `tls`).
    pub operators: crate::tls::OperatorRule,
    /// The fleet CA, when `enrollment` is set.
    pub enrollment: Option<std::sync::Arc<crate::enrollment::Authority>>,
    /// The secret failover nodes present to each other (with `failover`).
    pub peer_token: Option<String>,
}

impl Settings {
    /// The retention period in µs (None: keep every rollout live).
    pub fn retention_us(&self) -> Option<i64> {
        let hours = i64::try_from(self.config.retention_hours).ok()?;
        (hours > 0).then(|| hours.saturating_mul(3_600_000_000))
    }
}

impl Config {
    /// Reads and checks a config file; relative paths are taken from its directory.
    pub fn load(path: &Path) -> Result<Settings, ConfigError> {
        let text = std::fs::read(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut config: Config = serde_json::from_slice(&text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        if !config.signing_key.as_os_str().is_empty() {
            config.signing_key = base.join(&config.signing_key);
        }
        config.manifest_dir = config.manifest_dir.map(|d| base.join(d));
        config.trust.trust_file = config.trust.trust_file.map(|f| base.join(f));
        if let Some(p) = &mut config.pull {
            p.bearer_token_file = p.bearer_token_file.as_ref().map(|f| base.join(f));
        }
        for s in [&mut config.revocations, &mut config.bootstrap_nonces]
            .into_iter()
            .flatten()
        {
            s.bearer_token_file = s.bearer_token_file.as_ref().map(|f| base.join(f));
        }
        if let Some(t) = &mut config.tls {
            t.cert = base.join(&t.cert);
            t.key = base.join(&t.key);
            t.client_ca = t.client_ca.as_ref().map(|c| base.join(c));
            t.operator_ca = t.operator_ca.as_ref().map(|c| base.join(c));
        }
        if let Some(p) = &mut config.publish
            && let crate::publish::Destination::Dir(dir) = &mut p.to
        {
            *dir = base.join(&*dir);
        }
        if let Some(f) = &mut config.failover {
            f.token_file = base.join(&f.token_file);
        }
        if let Some(e) = &mut config.enrollment {
            e.ca_cert = base.join(&e.ca_cert);
            e.ca_key = e.ca_key.as_ref().map(|k| base.join(k));
            e.tpm_ca_pubkey_raw = e.tpm_ca_pubkey_raw.as_ref().map(|k| base.join(k));
            e.tpm_ca_sign_wrapper = e.tpm_ca_sign_wrapper.as_ref().map(|k| base.join(k));
        }
        config.settings()
    }

    /// nixfleet's `--strict` start check (NIXFLEET-WIRE.md §9.3), in fleet-ledger's setting
    /// names: every security setting made, or a refusal listing what is missing, in nixfleet's
    /// order.
    fn strict_check(&self) -> Result<(), String> {
        if !self.strict {
            return Ok(());
        }
        let mut missing = Vec::new();
        if self
            .tls
            .as_ref()
            .and_then(|t| t.client_ca.as_ref())
            .is_none()
        {
            missing.push("tls.client_ca (mTLS verification disabled - TLS-only mode)");
        }
        if self.revocations.is_none() && self.manifest_dir.is_none() {
            missing.push("revocations, or manifest_dir with CI's revocations.json (no revocation list - a revoked certificate would be served)");
        }
        if self.bootstrap_nonces.is_none() && self.manifest_dir.is_none() {
            missing.push("bootstrap_nonces, or manifest_dir with CI's bootstrap-nonces.json (no nonce allowlist - CI cannot withdraw an unused bootstrap token, nixfleet#96)");
        }
        if let Some(e) = &self.enrollment
            && e.tpm_ca_sign_wrapper.is_none()
            && !e.allow_file_ca_key
        {
            missing.push("enrollment.tpm_ca_pubkey_raw + enrollment.tpm_ca_sign_wrapper (the file-backed enrollment.ca_key keeps signing material on disk; set enrollment.allow_file_ca_key to opt out, RFC-0010 §1.5.1)");
        }
        if missing.is_empty() {
            return Ok(());
        }
        let mut text =
            "strict refuses to start: the following security settings are unset:".to_string();
        for m in missing {
            text.push_str("\n  - ");
            text.push_str(m);
        }
        text.push_str("\nEither set the missing settings or drop strict for development.");
        Err(text)
    }

    /// Checks a config already in memory (the demo builds one).
    pub fn settings(self) -> Result<Settings, ConfigError> {
        self.strict_check().map_err(ConfigError::Invalid)?;
        if let Some(u) = &self.closure_upstream
            && !(u.starts_with("http://") || u.starts_with("https://"))
        {
            return Err(ConfigError::Invalid(format!(
                "closure_upstream: {u:?} is not an http(s) URL"
            )));
        }
        for (name, source) in [
            ("revocations", &self.revocations),
            ("bootstrap_nonces", &self.bootstrap_nonces),
        ] {
            if let Some(s) = source {
                s.check(name).map_err(ConfigError::Invalid)?;
            }
        }
        if let Some(p) = &self.pull {
            p.check().map_err(ConfigError::Invalid)?;
        }
        if let Some(w) = &self.witnessing {
            w.check().map_err(ConfigError::Invalid)?;
        }
        let mut manifest_keys = crate::trust::TrustedKeys::default();
        let mut org_root_key = None;
        let mut trust_file_digest = None;
        for (i, k) in self.trust.manifest_keys.iter().enumerate() {
            manifest_keys
                .add(&format!("trust.manifest_keys[{i}]"), k)
                .map_err(ConfigError::Invalid)?;
        }
        if let Some(slot) = &self.trust.ci_release_key {
            manifest_keys
                .add_slot("trust.ci_release_key", slot)
                .map_err(ConfigError::Invalid)?;
        }
        if let Some(path) = &self.trust.trust_file {
            let file = crate::trust::TrustFile::load(path).map_err(ConfigError::Invalid)?;
            manifest_keys
                .add_slot(
                    &format!("{}: ciReleaseKey", path.display()),
                    &file.ci_release_key,
                )
                .map_err(ConfigError::Invalid)?;
            org_root_key = file.org_root_key;
            trust_file_digest = Some(file.digest);
        }
        if manifest_keys.is_empty() {
            return Err(ConfigError::Invalid(
                "trust holds no ed25519 or ecdsa-p256 key: no manifest could ever be accepted"
                    .into(),
            ));
        }
        if let Some(t) = &self.trust.reject_before {
            manifest_keys.reject_after(
                chrono::DateTime::parse_from_rfc3339(t)
                    .map_err(|e| ConfigError::Invalid(format!("trust.reject_before: {e}")))?
                    .timestamp_micros(),
            );
        }
        let mut tokens = TokenTable::default();
        for (i, t) in self.tokens.iter().enumerate() {
            let digest = planner::document::parse_hash(&t.sha256).ok_or_else(|| {
                ConfigError::Invalid(format!("tokens[{i}].sha256 is not 64 lowercase hex digits"))
            })?;
            if t.name == PEER_NAME {
                // The failover peer token's principal: what may step a writer down.
                return Err(ConfigError::Invalid(format!(
                    "tokens[{i}]: the name {PEER_NAME:?} is reserved for failover.token_file"
                )));
            }
            if t.role == Role::Agent && ledger::domain::check_host(&t.name).is_err() {
                return Err(ConfigError::Invalid(format!(
                    "tokens[{i}]: agent name {:?} is not a valid host name",
                    t.name
                )));
            }
            tokens
                .insert(
                    digest,
                    Principal {
                        role: t.role,
                        name: t.name.clone(),
                    },
                )
                .map_err(|_| ConfigError::Invalid(format!("tokens[{i}] repeats a token")))?;
        }
        let follower = self
            .failover
            .as_ref()
            .is_some_and(|f| f.role == NodeRole::Follower);
        match (follower, self.signing_key.as_os_str().is_empty()) {
            (false, true) => {
                return Err(ConfigError::Invalid("signing_key is required".into()));
            }
            (true, false) => {
                return Err(ConfigError::Invalid(
                    "a failover follower never holds the log's signing key: remove signing_key"
                        .into(),
                ));
            }
            _ => {}
        }
        let peer_token = match &self.failover {
            Some(f) => {
                let token = f.check().map_err(ConfigError::Invalid)?;
                // The nodes read each other's log as auditors.
                tokens
                    .insert(
                        crate::auth::digest(&token),
                        Principal {
                            role: Role::Auditor,
                            name: PEER_NAME.into(),
                        },
                    )
                    .map_err(|_| {
                        ConfigError::Invalid(
                            "failover.token_file holds a token also listed in tokens".into(),
                        )
                    })?;
                Some(token)
            }
            None => None,
        };
        let l = &self.limits;
        if l.queue == 0 || l.batch_inputs == 0 || l.concurrent_requests == 0 || l.body_bytes < 1024
        {
            return Err(ConfigError::Invalid(
                "limits: queue, batch_inputs and concurrent_requests must be positive and body_bytes at least 1024".into(),
            ));
        }
        if l.long_poll_secs == 0
            || l.request_timeout_secs == 0
            || l.header_read_timeout_secs == 0
            || l.connections_max == 0
            || self.plan_interval_ms == 0
        {
            return Err(ConfigError::Invalid(
                "limits.long_poll_secs, limits.request_timeout_secs, limits.header_read_timeout_secs, limits.connections_max and plan_interval_ms must be positive".into(),
            ));
        }
        let tls = self
            .tls
            .as_ref()
            .map(crate::tls::server_config)
            .transpose()
            .map_err(|e| ConfigError::Invalid(format!("tls: {e}")))?;
        let operators = self
            .tls
            .as_ref()
            .map(crate::tls::OperatorRule::of)
            .transpose()
            .map_err(|e| ConfigError::Invalid(format!("tls.operator_ca: {e}")))?
            .unwrap_or_default();
        let mut org_root = crate::trust::TrustedKeys::default();
        let enrollment = self
            .enrollment
            .as_ref()
            .map(|e| {
                let tls = self.tls.as_ref().filter(|t| t.client_ca.is_some()).ok_or_else(|| {
                    ConfigError::Invalid(
                        "enrollment needs tls with client_ca (the fleet CA, so the certificates it issues identify agents)".into(),
                    )
                })?;
                let invalid = |e: crate::enrollment::SetupError| {
                    ConfigError::Invalid(format!("enrollment: {e}"))
                };
                org_root = crate::enrollment::org_root_keys(e, org_root_key.as_ref())
                    .map_err(invalid)?;
                crate::enrollment::Authority::load(
                    e,
                    org_root_key.as_ref(),
                    tls.agent_cn_suffix.as_deref().unwrap_or(""),
                )
                .map(std::sync::Arc::new)
                .map_err(invalid)
            })
            .transpose()?;
        Ok(Settings {
            config: self,
            manifest_keys,
            org_root,
            trust_file_digest,
            tokens,
            tls,
            operators,
            enrollment,
            peer_token,
        })
    }
}

/// Where CI publishes its signed files (nixfleet's `--channel-refs-artifact-url`,
/// `--channel-refs-signature-url` and `--rollouts-source-{artifact,signature}-url-template`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PullConfig {
    /// `fleet.resolved`'s URL.
    pub fleet_url: String,
    /// Its signature's URL (default: `fleet_url` + `.sig`).
    #[serde(default)]
    pub fleet_signature_url: Option<String>,
    /// A rollout manifest's URL, `{rolloutId}` standing for `<channel>@<ciCommit>`.
    pub rollout_url_template: String,
    /// Its signature's URL template (default: the manifest's + `.sig`).
    #[serde(default)]
    pub rollout_signature_url_template: Option<String>,
    /// A file holding a bearer token to send (nixfleet's optional `Authorization`).
    #[serde(default)]
    pub bearer_token_file: Option<PathBuf>,
    /// Seconds between pulls (nixfleet: 30).
    #[serde(default = "default_pull_interval")]
    pub interval_secs: u64,
}

fn default_pull_interval() -> u64 {
    30
}

impl PullConfig {
    /// Checks the URLs and the interval.
    pub fn check(&self) -> Result<(), String> {
        for (field, url) in [
            ("fleet_url", Some(&self.fleet_url)),
            ("fleet_signature_url", self.fleet_signature_url.as_ref()),
            ("rollout_url_template", Some(&self.rollout_url_template)),
            (
                "rollout_signature_url_template",
                self.rollout_signature_url_template.as_ref(),
            ),
        ] {
            if let Some(url) = url
                && !(url.starts_with("http://") || url.starts_with("https://"))
            {
                return Err(format!("pull.{field}: {url:?} is not an http(s) URL"));
            }
        }
        if !self.rollout_url_template.contains("{rolloutId}") {
            return Err("pull.rollout_url_template must contain {rolloutId}".into());
        }
        if self.interval_secs == 0 {
            return Err("pull.interval_secs must be at least 1".into());
        }
        Ok(())
    }
}

/// Where one of CI's signed files besides the manifests is published (nixfleet's
/// `--revocations-{artifact,signature}-url` and `--bootstrap-nonces-*`), polled every
/// `interval_secs`, the first at start.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedFileSource {
    /// The file's URL.
    pub url: String,
    /// Its signature's URL (default: `url` + `.sig`, where CI writes it).
    #[serde(default)]
    pub signature_url: Option<String>,
    /// A file holding a bearer token to send (default: `pull.bearer_token_file`, as
    /// nixfleet defaults to the channel-refs token).
    #[serde(default)]
    pub bearer_token_file: Option<PathBuf>,
    /// Seconds between polls (nixfleet: 60).
    #[serde(default = "default_signed_file_interval")]
    pub interval_secs: u64,
}

fn default_signed_file_interval() -> u64 {
    60
}

impl SignedFileSource {
    /// The signature's URL.
    pub fn signature_url(&self) -> String {
        self.signature_url
            .clone()
            .unwrap_or_else(|| format!("{}.sig", self.url))
    }

    fn check(&self, name: &str) -> Result<(), String> {
        for (field, url) in [
            ("url", Some(&self.url)),
            ("signature_url", self.signature_url.as_ref()),
        ] {
            if let Some(url) = url
                && !(url.starts_with("http://") || url.starts_with("https://"))
            {
                return Err(format!("{name}.{field}: {url:?} is not an http(s) URL"));
            }
        }
        if self.interval_secs == 0 {
            return Err(format!("{name}.interval_secs must be at least 1"));
        }
        Ok(())
    }
}
