//! Replication's link to etcd (issue 29): the commit register ([`EtcdRegister`], the
//! engine's [`CommitRegister`] over an etcd key, swapped by a transaction that compares the
//! key's bytes) and the writer election ([`campaign`]: etcd's election API with a lease; the
//! leader key's creation revision is the writer's epoch, its fencing token).
//!
//! etcd decides; fleet-ledger asks. Nothing here trusts a lease or a clock for safety: a lease
//! only decides who tries, and the register's swap decides who may sign.
//!
//! It speaks etcd's v3 API through etcd's own JSON gateway (`/v3/kv/txn`, `/v3/lease/*`,
//! `/v3/election/campaign` on every member's client URL), with the HTTP client the daemon
//! already has: the same calls as the gRPC API, without a protobuf compiler to build
//! (DECISIONS 143).

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use engine::register::{CommitRegister, Head, RegisterError, Swap, settle};
use serde_json::{Value, json};
use tokio::runtime::Handle;

/// Where a synchronous call (from a thread outside any runtime: the writer's, its shipping
/// thread) runs its future: on a runtime's handle, or on a current-thread runtime of its own
/// that the calling thread drives itself. With its own, a reply is read the moment it
/// arrives; on the daemon's runtime it waits until a worker busy with agents' requests next
/// polls the IO driver (DECISIONS 157).
#[derive(Clone, Debug)]
pub enum Blocking {
    /// Run on this runtime (its workers drive the IO).
    On(Handle),
    /// Run on a current-thread runtime of its own.
    Own(Arc<OwnRuntime>),
}

impl Blocking {
    /// A current-thread runtime of its own.
    pub fn own() -> std::io::Result<Blocking> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        Ok(Blocking::Own(Arc::new(OwnRuntime(Some(rt)))))
    }

    /// Runs `f` to completion on the calling thread (never from inside a runtime).
    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        match self {
            Blocking::On(h) => h.block_on(f),
            Blocking::Own(rt) => rt.0.as_ref().expect("until dropped").block_on(f),
        }
    }
}

impl From<Handle> for Blocking {
    fn from(h: Handle) -> Blocking {
        Blocking::On(h)
    }
}

/// A current-thread runtime, shut down without waiting when dropped (it may be dropped
/// inside the daemon's runtime, where a blocking shutdown would panic).
#[derive(Debug)]
pub struct OwnRuntime(Option<tokio::runtime::Runtime>);

impl Drop for OwnRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// The register's key under the configured prefix.
pub fn register_key(prefix: &str) -> String {
    format!("{}/register", prefix.trim_end_matches('/'))
}

/// The writer election's name under the configured prefix.
pub fn election_name(prefix: &str) -> String {
    format!("{}/writer", prefix.trim_end_matches('/'))
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// An etcd cluster, by its members' client URLs (`http://host:2379`), asked through its JSON
/// gateway. A call goes to the first member that answers; a member that cannot be reached
/// is skipped.
#[derive(Clone, Debug)]
pub struct Etcd {
    endpoints: Vec<String>,
    http: reqwest::Client,
    /// Each call's deadline (None: a campaign, which waits while another node leads).
    timeout: Option<Duration>,
}

/// How a call to etcd failed.
#[derive(Debug)]
enum CallError {
    /// No member was reached: the request was never sent.
    NotSent(String),
    /// Sent, and no usable answer: it may or may not have been applied.
    Unknown(String),
}

impl From<CallError> for RegisterError {
    fn from(e: CallError) -> RegisterError {
        match e {
            CallError::NotSent(m) | CallError::Unknown(m) => RegisterError::Unavailable(m),
        }
    }
}

impl Etcd {
    /// The cluster at `endpoints`, every call within `timeout`.
    pub fn new(endpoints: &[String], timeout: Option<Duration>) -> Result<Etcd, RegisterError> {
        if endpoints.is_empty() {
            return Err(RegisterError::Unavailable("no etcd endpoint given".into()));
        }
        // Already installed is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            // On a runtime of its own nothing watches an idle connection between calls: one
            // the server may have closed meanwhile is not reused.
            .pool_idle_timeout(Duration::from_secs(2))
            .build()
            .map_err(|e| RegisterError::Unavailable(format!("no HTTP client for etcd: {e}")))?;
        Ok(Etcd {
            endpoints: endpoints
                .iter()
                .map(|e| e.trim_end_matches('/').to_string())
                .collect(),
            http,
            timeout,
        })
    }

    /// The same cluster and deadline through an HTTP client of its own, whose connections
    /// belong to the runtime that uses them (the writer's own, for the register).
    pub fn fresh(&self) -> Result<Etcd, RegisterError> {
        Etcd::new(&self.endpoints, self.timeout)
    }

    /// The same cluster, calls without a deadline (for a campaign).
    pub fn without_deadline(&self) -> Etcd {
        Etcd {
            timeout: None,
            ..self.clone()
        }
    }

    /// POSTs `body` to `path` on the first member that takes it.
    async fn call(&self, path: &str, body: &Value) -> Result<Value, CallError> {
        let mut problems = Vec::new();
        for endpoint in &self.endpoints {
            let mut req = self.http.post(format!("{endpoint}{path}")).json(body);
            if let Some(t) = self.timeout {
                req = req.timeout(t);
            }
            let resp = match req.send().await {
                Ok(r) => r,
                // Not connected: never sent, try the next member.
                Err(e) if e.is_connect() => {
                    problems.push(format!("{endpoint}: {e}"));
                    continue;
                }
                Err(e) => return Err(CallError::Unknown(format!("{endpoint}{path}: {e}"))),
            };
            let status = resp.status();
            let text = resp
                .text()
                .await
                .map_err(|e| CallError::Unknown(format!("{endpoint}{path}: {e}")))?;
            if !status.is_success() {
                // etcd's error (no leader, a timeout inside the cluster, ...): applied or
                // not is unknown for a write.
                return Err(CallError::Unknown(format!(
                    "{endpoint}{path}: HTTP {status}: {}",
                    text.trim()
                )));
            }
            return serde_json::from_str(&text).map_err(|e| {
                CallError::Unknown(format!("{endpoint}{path}: an answer that is not JSON: {e}"))
            });
        }
        Err(CallError::NotSent(format!(
            "no etcd member reached: {}",
            problems.join("; ")
        )))
    }
}

/// An int64 as the gateway writes it (a string), or a number.
fn int(v: &Value) -> Option<i64> {
    v.as_str()
        .and_then(|s| s.parse().ok())
        .or_else(|| v.as_i64())
}

/// The commit register in etcd: one key, swapped by a transaction that compares its bytes.
#[derive(Clone, Debug)]
pub struct EtcdRegister {
    etcd: Etcd,
    key: String,
    /// Where the synchronous calls run (the writer is a thread of its own).
    runtime: Blocking,
}

impl EtcdRegister {
    /// The register at `<prefix>/register`; synchronous calls run on `runtime` (never make
    /// them from one of its threads: use the async ones there).
    pub fn new(etcd: Etcd, prefix: &str, runtime: impl Into<Blocking>) -> EtcdRegister {
        EtcdRegister {
            etcd,
            key: register_key(prefix),
            runtime: runtime.into(),
        }
    }

    /// A linearizable read of the register.
    pub async fn read_async(&self) -> Result<Option<Head>, RegisterError> {
        let resp = self
            .etcd
            .call("/v3/kv/range", &json!({"key": b64(self.key.as_bytes())}))
            .await?;
        let Some(kv) = resp["kvs"].as_array().and_then(|k| k.first()) else {
            return Ok(None);
        };
        let value = base64::engine::general_purpose::STANDARD
            .decode(kv["value"].as_str().unwrap_or_default())
            .map_err(|e| RegisterError::Malformed(format!("the register's value: {e}")))?;
        Head::from_bytes(&value).map(Some)
    }

    /// The raw conditional write: `next` if the key holds exactly `expected`'s bytes (or is
    /// absent, for None). `Ok(false)`: it held something else. An error: no answer.
    pub async fn raw_swap_async(
        &self,
        expected: Option<&Head>,
        next: &Head,
    ) -> Result<bool, RegisterError> {
        let key = b64(self.key.as_bytes());
        let guard = match expected {
            Some(h) => {
                json!({"target": "VALUE", "result": "EQUAL", "key": key, "value": b64(&h.to_bytes())})
            }
            None => json!({"target": "VERSION", "result": "EQUAL", "key": key, "version": "0"}),
        };
        let txn = json!({
            "compare": [guard],
            "success": [{"request_put": {"key": key, "value": b64(&next.to_bytes())}}],
        });
        let resp = self.etcd.call("/v3/kv/txn", &txn).await?;
        Ok(resp["succeeded"].as_bool().unwrap_or(false))
    }
}

impl CommitRegister for EtcdRegister {
    fn read(&self) -> Result<Option<Head>, RegisterError> {
        self.runtime.block_on(self.read_async())
    }

    fn compare_and_swap(
        &self,
        expected: Option<&Head>,
        next: &Head,
    ) -> Result<Swap, RegisterError> {
        settle(self, expected, next, |e, n| {
            self.runtime.block_on(self.raw_swap_async(e, n))
        })
    }
}

/// Won leadership of the writer election.
#[derive(Debug)]
pub struct Leadership {
    /// The writer's epoch: the creation revision of its election key, higher than every
    /// earlier leader's.
    pub epoch: u64,
    /// The lease the leadership lives on.
    pub lease: i64,
    /// Flips to true once the lease is lost (not renewed for a whole TTL, or refused): from
    /// then on another node may lead; this one must stop writing.
    pub lost: tokio::sync::watch::Receiver<bool>,
    keeper: tokio::task::JoinHandle<()>,
}

impl Leadership {
    /// Stops renewing the lease (it lapses after its TTL): what a paused or dying writer
    /// amounts to.
    pub fn abandon(self) {
        self.keeper.abort();
    }

    /// Gives the leadership up at once: the lease is revoked, so the next candidate is
    /// elected without waiting for the TTL (a planned switchover, a node that may not
    /// lead, a clean stop). A revocation that fails leaves the lease to lapse.
    pub async fn resign(self, etcd: &Etcd) {
        self.keeper.abort();
        match etcd
            .call("/v3/lease/revoke", &json!({"ID": self.lease.to_string()}))
            .await
        {
            Ok(_) => {}
            // Lapsed already (why a writer steps down).
            Err(CallError::Unknown(m)) if m.contains("lease not found") => {}
            Err(e) => {
                tracing::warn!(error = ?e, "revoking the election lease; it lapses after its TTL")
            }
        }
    }
}

impl Etcd {
    /// The writer election's leader key (its value is the node, its lease the leadership's),
    /// None while nobody leads.
    async fn leader_key(&self, prefix: &str) -> Result<Option<Value>, RegisterError> {
        let answer = self
            .call(
                "/v3/election/leader",
                &json!({"name": b64(election_name(prefix).as_bytes())}),
            )
            .await;
        match answer {
            Ok(a) => Ok(Some(a["kv"].clone())),
            // etcd answers an error when the election has no leader.
            Err(CallError::Unknown(m)) if m.contains("no leader") => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Ends the current writer's leadership by hand (`fleet-ledger promote`): its election
    /// lease is revoked, so the next candidate in the election is elected at once. Safe
    /// whatever the old writer does next: its swaps of the register fail from the new
    /// epoch on. Returns the node that led, None if nobody did.
    pub async fn unseat(&self, prefix: &str) -> Result<Option<String>, RegisterError> {
        let Some(kv) = self.leader_key(prefix).await? else {
            return Ok(None);
        };
        let node = kv["value"]
            .as_str()
            .and_then(|v| base64::engine::general_purpose::STANDARD.decode(v).ok())
            .map(|b| String::from_utf8_lossy(&b).into_owned());
        let Some(lease) = int(&kv["lease"]) else {
            return Ok(None);
        };
        match self
            .call("/v3/lease/revoke", &json!({"ID": lease.to_string()}))
            .await
        {
            Ok(_) => Ok(node),
            Err(CallError::Unknown(m)) if m.contains("lease not found") => Ok(node),
            Err(e) => Err(e.into()),
        }
    }

    /// The node the writer election names now (its leader key's value), None while nobody
    /// leads.
    pub async fn leader(&self, prefix: &str) -> Result<Option<String>, RegisterError> {
        let Some(kv) = self.leader_key(prefix).await? else {
            return Ok(None);
        };
        let value = kv["value"].as_str().unwrap_or_default();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(value)
            .map_err(|e| RegisterError::Malformed(format!("the election's leader value: {e}")))?;
        Ok((!bytes.is_empty()).then(|| String::from_utf8_lossy(&bytes).into_owned()))
    }
}

/// Campaigns for the writer election as `node` with a lease of `ttl`, waiting (without a
/// deadline) until this node leads; keeps the lease alive, a third of the TTL apart, from
/// the moment it is granted until it is lost.
pub async fn campaign(
    etcd: &Etcd,
    prefix: &str,
    node: &str,
    ttl: Duration,
) -> Result<Leadership, RegisterError> {
    let secs = ttl.as_secs().max(1);
    let grant = etcd
        .call("/v3/lease/grant", &json!({"TTL": secs.to_string()}))
        .await?;
    let lease = int(&grant["ID"])
        .ok_or_else(|| RegisterError::Unavailable(format!("no lease granted: {grant}")))?;
    // The lease must live while the campaign waits behind another leader.
    let (lost_tx, lost) = tokio::sync::watch::channel(false);
    let every = (ttl / 3).max(Duration::from_millis(100));
    let renewer = Etcd {
        timeout: Some(every),
        ..etcd.clone()
    };
    let keeper = tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        let mut last_ok = tokio::time::Instant::now();
        loop {
            tick.tick().await;
            let answer = renewer
                .call("/v3/lease/keepalive", &json!({"ID": lease.to_string()}))
                .await;
            // etcd answers a lease it no longer has (lapsed, or revoked by `promote`) with
            // no TTL: lost for certain, at once. No answer: lost once a whole TTL passed.
            let ttl_left = answer
                .as_ref()
                .ok()
                .map(|r| int(&r["result"]["TTL"]).unwrap_or(0));
            match ttl_left {
                Some(left) if left > 0 => last_ok = tokio::time::Instant::now(),
                Some(_) => {
                    let _ = lost_tx.send(true);
                    return;
                }
                None if last_ok.elapsed() >= ttl => {
                    let _ = lost_tx.send(true);
                    return;
                }
                None => {}
            }
        }
    });
    let won = etcd
        .without_deadline()
        .call(
            "/v3/election/campaign",
            &json!({"name": b64(election_name(prefix).as_bytes()), "lease": lease.to_string(),
                    "value": b64(node.as_bytes())}),
        )
        .await;
    let won = match won {
        Ok(w) => w,
        Err(e) => {
            keeper.abort();
            return Err(e.into());
        }
    };
    let epoch = int(&won["leader"]["rev"])
        .and_then(|r| u64::try_from(r).ok())
        .ok_or_else(|| {
            keeper.abort();
            RegisterError::Unavailable(format!("etcd named no leader key: {won}"))
        })?;
    Ok(Leadership {
        epoch,
        lease,
        lost,
        keeper,
    })
}
