//! What the API and the writer exchange: inputs, answers, refusals, and the queue between them.

use super::*;

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
    pub witnessed: RwLock<Option<crate::witnessing::Witnessed>>,
    /// Metrics.
    pub metrics: Metrics,
}
