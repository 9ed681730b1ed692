//! What the API and the writer exchange: inputs, answers, refusals, and the queue between them.

use super::{Answer, Input, Refusal};
use crate::metrics::Metrics;
use ledger::store::Reader;
use std::sync::Arc;
use std::sync::RwLock;
use tokio::sync::{oneshot, watch};

/// Why the writer answered an input with an error.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
    /// The decision refused the input. Nothing was staged for it.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// Nothing of the input's batch was recorded (the commit failed, or the store is being
    /// reopened): retry.
    #[error("{0}")]
    Unavailable(String),
}

impl WriteError {
    /// A stable code (listed in OPERATIONS.md).
    pub fn code(&self) -> &'static str {
        match self {
            WriteError::Refused(r) => r.code(),
            WriteError::Unavailable(_) => "unavailable",
        }
    }
}

/// The answer channel of one input.
pub type Reply = oneshot::Sender<Result<Answer, WriteError>>;

/// One queued input and where its answer goes.
#[derive(Debug)]
pub struct Job {
    /// The input.
    pub input: Input,
    /// The answer.
    pub reply: Reply,
}

/// What the writer thread is sent: inputs to decide, and key rotations, which are not
/// decisions of the planner but an operation on the log itself (committed alone, between
/// batches).
#[derive(Debug)]
pub enum Work {
    /// An input for the planner.
    Decide(Job),
    /// Rotate the checkpoint key (boxed: rare, and a signer is large).
    RotateKey(Box<KeyRotation>),
    /// Record an event as is, committed alone (a change of access on a config reload: not a
    /// planner decision, so `replay --check` takes it as recorded).
    Record(Box<Recording>),
}

/// An event to record as is.
#[derive(Debug)]
pub struct Recording {
    /// The event.
    pub event: ledger::event::Event,
    /// Its seq once committed, or why not.
    pub reply: oneshot::Sender<Result<u64, String>>,
}

impl From<Job> for Work {
    fn from(job: Job) -> Work {
        Work::Decide(job)
    }
}

/// An operator's key rotation.
pub struct KeyRotation {
    /// The new signing key.
    pub next: ledger::keys::Signer,
    /// Why (recorded, with the operator's name).
    pub reason: String,
    /// Who asked.
    pub operator: String,
    /// The answer: the `KeyRotated` entry's seq.
    pub reply: oneshot::Sender<Result<u64, RotateError>>,
}

impl std::fmt::Debug for KeyRotation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRotation")
            .field("next", &self.next.public().to_text())
            .field("reason", &self.reason)
            .field("operator", &self.operator)
            .finish()
    }
}

/// Why a key rotation was not recorded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RotateError {
    /// The key is already in the log's key chain (in force now, or earlier).
    #[error("{0} is already in the log's key chain: a rotation must introduce a new key")]
    KeyInChain(String),
    /// Nothing was recorded: retry.
    #[error("{0}")]
    Unavailable(String),
}

/// What the API threads share with the writer.
#[derive(Debug)]
pub struct Shared {
    /// Snapshots of the committed ledger; `None` while the writer reopens the store.
    pub reader: RwLock<Option<Reader>>,
    /// Committed log size, bumped after every commit (long polls wait on it).
    pub committed: watch::Sender<u64>,
    /// Whether a verified fleet is in force (agent routes answer 503 until then).
    pub fleet_ready: std::sync::atomic::AtomicBool,
    /// Where each manifest agents may fetch was recorded: `fleet` (the fleet in force) and
    /// every rollout id, to the seq of its latest entry. Updated after each commit.
    pub published: RwLock<std::collections::BTreeMap<String, u64>>,
    /// The latest checkpoint cosigned by witnesses, with their cosignatures (config
    /// `witnessing`); `None` before the first.
    pub witnessed: RwLock<Option<Witnessed>>,
    /// How many times a commit failed: bumped the moment it fails, before the reader is
    /// dropped, so a read that began on the failed database can tell (503, not 500).
    pub store_failures: std::sync::atomic::AtomicU64,
    /// The registry the writer records into.
    pub metrics: Metrics,
    /// CI's revocations in force, as last committed: what a request with a client
    /// certificate is held to. Replaced (never edited) after a commit that changed them.
    pub revoked: RwLock<Arc<Revoked>>,
    /// Whether CI's bootstrap-nonce allowlist is in force (recorded at least once).
    pub allowlist_ready: std::sync::atomic::AtomicBool,
}

impl Shared {
    /// What a node that does not write shares with its API (a standby): no reader, nothing
    /// published, its metrics.
    pub fn detached(metrics: Metrics) -> Shared {
        Shared {
            reader: RwLock::new(None),
            committed: watch::channel(0).0,
            fleet_ready: false.into(),
            published: RwLock::default(),
            witnessed: RwLock::new(None),
            store_failures: 0.into(),
            metrics,
            revoked: RwLock::default(),
            allowlist_ready: false.into(),
        }
    }

    /// The revocations in force.
    pub fn revoked(&self) -> Arc<Revoked> {
        Arc::clone(&self.revoked.read().unwrap_or_else(|p| p.into_inner()))
    }
}

/// CI's revocations in force (`proj.revocations`), as the API checks certificates against
/// them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Revoked {
    /// Seq of the `RevocationsAccepted` in force; None before any was recorded.
    pub list: Option<u64>,
    /// Host → its certificates with an earlier `notBefore` are refused (µs).
    pub not_before: std::collections::BTreeMap<String, ledger::domain::Micros>,
}

impl Revoked {
    /// The revocations of a folded state.
    pub fn of(state: &projections::State) -> Revoked {
        Revoked {
            list: state
                .sidecars
                .get(&ledger::event::SIDECAR_REVOCATIONS.to_string())
                .map(|r| r.seq),
            not_before: state
                .revocations
                .iter()
                .map(|(h, r)| (h.clone(), r.not_before))
                .collect(),
        }
    }

    /// When `host`'s certificates are refused from, if a certificate issued at
    /// `cert_not_before` is refused: nixfleet's rule, strictly earlier (equal passes).
    pub fn refuses(
        &self,
        host: &str,
        cert_not_before: ledger::domain::Micros,
    ) -> Option<ledger::domain::Micros> {
        self.not_before
            .get(host)
            .copied()
            .filter(|cutoff| cert_not_before < *cutoff)
    }
}

/// The latest witnessed checkpoint (the daemon's witnessing rounds set it; publication and
/// the checkpoint routes read it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Witnessed {
    /// Its tree size.
    pub size: u64,
    /// The signed note: the log's signature lines, then the witnesses' cosignature lines.
    pub note: String,
}
