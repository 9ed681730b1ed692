//! The harness the demo and the daemon tests share: the sample fleet and its signed
//! manifests, [`Setup`] (a config, keys, tokens and certificates in a directory, and the
//! daemon started on them) and [`ApiClient`] (the daemon's HTTP API).

use anyhow::{Context, Result, bail};
use base64::Engine;
use engine::materialize::Ledger;
use fleet_ledger::auth;
use fleet_ledger::auth::Role;
use fleet_ledger::config::{Config, Limits, TokenEntry, Trust, TrustedKey};
use fleet_ledger::daemon::{Daemon, system_clock};
use ledger::keys::Signer;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tokio::net::TcpListener;

pub(crate) const CI_KEY: &str = include_str!("../../fixtures/demo/ci-demo.key");

/// The origin line of demo ledgers.
pub const ORIGIN: &str = "fleet-ledger.demo/cp";

/// What the demo did.
pub(crate) fn closure(channel: &str, build: &str) -> String {
    let h = Sha256::digest(format!("{channel}/{build}").as_bytes());
    format!(
        "/nix/store/{}-nixos-system-{channel}-{build}",
        &auth::hex(&h)[..32]
    )
}

// CI's documents: shared with the engine's writer tests (`fixtures::docs`).
pub(crate) use fixtures::docs::{fleet, rollout};

/// Signs an artifact like CI: ed25519 over its JCS form.
pub(crate) fn sign(ci: &Signer, artifact: &Value) -> Result<(Value, String)> {
    let canonical = serde_json_canonicalizer::to_vec(artifact)?;
    let hash = auth::hex(&Sha256::digest(&canonical));
    let sig = base64::engine::general_purpose::STANDARD.encode(ci.sign(&canonical));
    Ok((json!({"artifact": artifact, "signature": sig}), hash))
}

/// A small JSON client of the API (the demo's agents and operators, tests, benchmarks).
#[derive(Clone, Debug)]
pub struct ApiClient {
    /// The HTTP client.
    pub http: reqwest::Client,
    /// `http://host:port`.
    pub base: String,
}

/// The demo's name for it.
pub(crate) type Client = ApiClient;

impl ApiClient {
    /// A client of the daemon at `base`.
    pub fn new(base: &str) -> Result<ApiClient> {
        // The HTTP client's TLS uses the product's crypto (ring); already installed is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
        Ok(ApiClient {
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(1024)
                .build()?,
            base: base.to_string(),
        })
    }

    /// POST JSON; the status and the JSON answer (Null when not JSON).
    pub async fn post(&self, token: &str, path: &str, body: &Value) -> Result<(u16, Value)> {
        let resp = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(token)
            .json(body)
            .send()
            .await?;
        let status = resp.status().as_u16();
        let v = resp.json().await.unwrap_or(Value::Null);
        Ok((status, v))
    }
    /// GET; the status and the JSON answer (Null for 204 or non-JSON).
    pub async fn get(&self, token: &str, path: &str) -> Result<(u16, Value)> {
        let resp = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(token)
            .send()
            .await?;
        let status = resp.status().as_u16();
        let v = if status == 204 {
            Value::Null
        } else {
            resp.json().await.unwrap_or(Value::Null)
        };
        Ok((status, v))
    }
    /// POST JSON expecting 200.
    pub async fn ok(&self, token: &str, path: &str, body: &Value) -> Result<Value> {
        let (status, v) = self.post(token, path, body).await?;
        if status != 200 {
            bail!("POST {path}: {status} {v}");
        }
        Ok(v)
    }
}

/// The closure every demo host runs before its first rollout.
/// A fresh ledger with a sample fleet's keys, tokens and config, not yet serving.
#[derive(Debug)]
pub struct Setup {
    /// The ledger.
    pub db: PathBuf,
    /// The genesis public key file.
    pub genesis_pub: PathBuf,
    /// The config (tokens hashed) as written to `dir/config.json`.
    pub config: Config,
    /// CP signing key text.
    cp_text: String,
    /// The fixture CI key.
    pub ci: Signer,
    /// Bearer tokens by role.
    pub tokens: Tokens,
    /// The fleet document (unsigned).
    pub fleet_doc: Value,
    /// Canary hosts.
    pub canary: Vec<String>,
    /// Stable waves.
    pub stable_waves: Vec<Vec<String>>,
    /// `signedAt` values relative to setup time.
    epoch: chrono::DateTime<chrono::Utc>,
}

/// Bearer tokens of a [`Setup`].
#[derive(Clone, Debug)]
pub struct Tokens {
    /// host → agent token.
    pub agents: BTreeMap<String, String>,
    /// CI.
    pub ci: String,
    /// Operator `alice`.
    pub operator: String,
    /// Auditor `audrey`.
    pub auditor: String,
}

impl Setup {
    /// Creates the ledger, keys and config for `hosts` hosts in `dir`.
    pub fn create(dir: &Path, db: Option<PathBuf>, hosts: usize) -> Result<Setup> {
        std::fs::create_dir_all(dir)?;
        let db = db.unwrap_or_else(|| dir.join("ledger.redb"));
        if db.exists() {
            bail!(
                "{} already exists: choose another --db or --dir",
                db.display()
            );
        }
        let keys_dir = dir.join("keys");
        std::fs::create_dir_all(&keys_dir)?;
        let cp = Signer::generate("fleet-ledger-demo-cp")?;
        ledger::keys::write_private_key(&keys_dir.join("fleet-ledger-demo-cp.key"), &cp)?;
        let genesis_pub = keys_dir.join("fleet-ledger-demo-cp.pub");
        ledger::keys::write_public_key(&genesis_pub, cp.public())?;
        let cp_text = cp.to_text();
        drop(Ledger::create(
            &db,
            ORIGIN,
            cp,
            chrono::Utc::now().timestamp_micros(),
        )?);
        let ci = Signer::from_text(CI_KEY.trim()).context("the fixture CI key")?;
        let mut entries = Vec::new();
        let mut issue = |role: Role, name: &str| -> Result<String> {
            let t = auth::generate_token()?;
            entries.push(TokenEntry {
                sha256: auth::hex(&auth::digest(&t)),
                role,
                name: name.to_string(),
            });
            Ok(t)
        };
        let epoch = chrono::Utc::now();
        let (fleet_doc, canary, stable_waves) = fleet(hosts, &rfc3339(epoch, -60));
        let mut agents = BTreeMap::new();
        for h in canary.iter().chain(stable_waves.iter().flatten()) {
            agents.insert(h.clone(), issue(Role::Agent, h)?);
        }
        let tokens = Tokens {
            agents,
            ci: issue(Role::Ci, "ci")?,
            operator: issue(Role::Operator, "alice")?,
            auditor: issue(Role::Auditor, "audrey")?,
        };
        let config = Config {
            signing_key: keys_dir.join("fleet-ledger-demo-cp.key"),
            trust: Trust {
                manifest_keys: vec![TrustedKey {
                    algorithm: "ed25519".into(),
                    public: base64::engine::general_purpose::STANDARD.encode(ci.public().bytes()),
                }],
                ci_release_key: None,
                trust_file: None,
                reject_before: None,
                max_age_secs: 3600,
            },
            manifest_dir: None,
            pull: None,
            revocations: None,
            bootstrap_nonces: None,
            strict: false,
            closure_upstream: None,
            tls: None,
            enrollment: None,
            publish: None,
            witnessing: None,
            tokens: entries,
            limits: Limits::default(),
            plan_interval_ms: 100,
            retention_hours: 168,
            replay_snapshot_every: engine::replay_cache::SNAPSHOT_EVERY,
            compact_on_start: false,
            quick_repair: false,
            failover: None,
        };
        std::fs::write(
            dir.join("config.json"),
            serde_json::to_string_pretty(&config)?,
        )?;
        // So the printed `serve` command can be followed by API calls as the operator.
        write_secret(&dir.join("operator.token"), &tokens.operator)?;
        Ok(Setup {
            db,
            genesis_pub,
            config,
            cp_text,
            ci,
            tokens,
            fleet_doc,
            canary,
            stable_waves,
            epoch,
        })
    }

    /// The CP signing key.
    pub fn signer(&self) -> Result<Signer> {
        Ok(Signer::from_text(&self.cp_text)?)
    }

    /// An RFC 3339 time `secs` from setup time.
    pub fn at(&self, secs: i64) -> String {
        rfc3339(self.epoch, secs)
    }

    /// Starts the daemon on 127.0.0.1 (any port).
    pub async fn start(&self) -> Result<(Daemon, ApiClient)> {
        self.start_with(self.config.clone()).await
    }

    /// Starts the daemon on 127.0.0.1 (any port) with `config` instead of the setup's own.
    pub async fn start_with(&self, config: Config) -> Result<(Daemon, ApiClient)> {
        self.start_with_clock(config, system_clock()).await
    }

    /// Starts the daemon on 127.0.0.1 (any port) with `config` and `clock`.
    pub async fn start_with_clock(
        &self,
        config: Config,
        clock: engine::writer::Clock,
    ) -> Result<(Daemon, ApiClient)> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let daemon = Daemon::start(
            self.db.clone(),
            config.settings()?,
            self.signer()?,
            listener,
            clock,
        )
        .await?;
        let c = ApiClient::new(&format!("http://{}", daemon.addr))?;
        Ok((daemon, c))
    }

    /// The fleet manifest, signed, and its content hash.
    pub fn signed_fleet(&self) -> Result<(Value, String)> {
        sign(&self.ci, &self.fleet_doc)
    }

    /// A rollout manifest of `channel` at `channel_ref` where every host targets `target`.
    pub fn rollout_doc(
        &self,
        channel: &str,
        channel_ref: &str,
        target: &str,
        signed_at: &str,
    ) -> Result<Value> {
        let (_, fleet_hash) = self.signed_fleet()?;
        let waves = if channel == "canary" {
            vec![self.canary.clone()]
        } else {
            self.stable_waves.clone()
        };
        Ok(rollout(
            channel,
            channel_ref,
            &fleet_hash,
            &waves,
            target,
            signed_at,
        ))
    }

    /// Signs an artifact with the fixture CI key.
    pub fn sign(&self, artifact: &Value) -> Result<(Value, String)> {
        sign(&self.ci, artifact)
    }

    /// CI posts a signed rollout manifest of `channel` at `channel_ref` (every host targeting
    /// `target`, signed now) to the daemon behind `c`.
    pub async fn post_rollout(
        &self,
        c: &ApiClient,
        channel: &str,
        channel_ref: &str,
        target: &str,
    ) -> Result<Value> {
        let doc = self.rollout_doc(channel, channel_ref, target, &self.at(0))?;
        let (rollout, _) = self.sign(&doc)?;
        c.ok(
            &self.tokens.ci,
            &format!("/v1/manifests/rollouts/{channel}@{channel_ref}"),
            &rollout,
        )
        .await
    }
}

pub(crate) fn rfc3339(epoch: chrono::DateTime<chrono::Utc>, secs: i64) -> String {
    (epoch + chrono::Duration::seconds(secs)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Runs the demo; returns its summary after the daemon shut down.
pub(crate) fn write_secret(path: &Path, text: &str) -> Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    writeln!(f, "{text}")?;
    Ok(())
}
