//! What the API and the writer exchange: inputs, answers, refusals, and the queue between them.

use super::*;

/// An input for the writer.
#[derive(Debug)]
pub enum Input {
    /// An agent's report.
    Agent {
        /// Authenticated host.
        host: String,
        /// Rollout.
        rollout: RolloutId,
        /// Agent seq.
        agent_seq: u64,
        /// Report.
        report: AgentReport,
    },
    /// A heartbeat (may synthesize reports).
    Heartbeat {
        /// Authenticated host.
        host: String,
        /// The rollout the agent names, if any.
        rollout: Option<RolloutId>,
        /// What it runs.
        current_closure: Option<String>,
        /// Agent clock.
        at: Micros,
    },
    /// A verified manifest.
    Manifest {
        /// Which.
        target: Target,
        /// Verified artifact.
        verified: Box<Verified>,
    },
    /// Operator clearance of a Failed/Reverted rollout.
    Clear {
        /// Rollout.
        rollout: RolloutId,
        /// Operator identity.
        operator: String,
        /// Why.
        reason: String,
    },
    /// Operator lifts a quarantined closure.
    Lift {
        /// Channel.
        channel: String,
        /// Closure.
        closure: String,
        /// Operator identity.
        operator: String,
        /// Why.
        reason: String,
    },
    /// A long poll takes the host's oldest queued dispatch.
    TakeDispatch {
        /// Authenticated host.
        host: String,
    },
    /// The planner's safety tick.
    Tick,
}

/// A dispatch handed to an agent (DOMAIN §8 `DispatchResponse`, with the RFC's `wave`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Dispatch {
    /// Host.
    pub hostname: String,
    /// Rollout.
    pub rollout_id: String,
    /// What to activate.
    pub target_closure: String,
    /// Soak deadline (CP clock).
    #[serde(with = "crate::wire::ts")]
    pub soak_due_at: Micros,
    /// When it was queued (CP clock).
    #[serde(with = "crate::wire::ts")]
    pub enqueued_at: Micros,
    /// The host's wave.
    pub wave: u32,
    /// Seq of the `DispatchDelivered` entry.
    pub seq: u64,
}

/// A host's record as the heartbeat reply shows it (DOMAIN §8 `HostRolloutSnapshot`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HostSnapshot {
    /// Rollout.
    pub rollout_id: String,
    /// Host.
    pub hostname: String,
    /// Channel.
    pub channel: String,
    /// State.
    pub state: String,
    /// Target.
    pub target_closure: String,
    /// Last agent seq accepted.
    pub last_event_seq: u64,
    /// Soak deadline.
    #[serde(with = "crate::wire::ts::option")]
    pub soak_due_at: Option<Micros>,
}

impl HostSnapshot {
    pub(super) fn of(h: &projections::HostRecord) -> HostSnapshot {
        HostSnapshot {
            rollout_id: h.rollout_id.to_string(),
            hostname: h.hostname.clone(),
            channel: h.rollout_id.channel.clone(),
            state: format!("{:?}", h.state),
            target_closure: h.target_closure.clone(),
            last_event_seq: h.last_event_seq,
            soak_due_at: h.soak_due_at,
        }
    }
}

/// What the writer answers (after the commit).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Recorded: the seq of the input's first entry.
    Recorded {
        /// Seq.
        seq: u64,
        /// Entries appended for it.
        entries: u64,
    },
    /// Already recorded earlier (a retransmit, or a manifest already in force).
    Duplicate {
        /// The original entry.
        seq: u64,
    },
    /// Heartbeat answer.
    Heartbeat {
        /// Entries synthesized (seq of the first).
        synthesized: Option<u64>,
        /// Snapshots (when the heartbeat named no rollout).
        bootstrap: Option<Vec<HostSnapshot>>,
        /// Agent seq to resend from, when the CP's view of the host's closure differs.
        replay_from: Option<u64>,
    },
    /// The long poll's answer.
    Dispatch(Option<Dispatch>),
    /// A tick ran.
    Ticked,
}

/// How the API should answer a refusal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// 404.
    NotFound,
    /// 409.
    Conflict,
    /// 422.
    Unprocessable,
    /// 503: nothing was recorded; retry.
    Unavailable,
}

/// A refused input, or a batch that could not be committed. The ledger is unchanged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// HTTP class.
    pub class: Class,
    /// Stable code.
    pub code: &'static str,
    /// For humans.
    pub reason: String,
}

impl Refusal {
    pub(super) fn new(class: Class, code: &'static str, reason: impl Into<String>) -> Refusal {
        Refusal {
            class,
            code,
            reason: reason.into(),
        }
    }
}

impl From<Rejection> for Refusal {
    fn from(r: Rejection) -> Refusal {
        let class = match r {
            Rejection::IllegalForState { .. } | Rejection::SeqRegression { .. } => Class::Conflict,
            Rejection::UnknownRollout(_) | Rejection::UnknownHost { .. } => Class::Unprocessable,
            Rejection::Invariant(_) | Rejection::RolloutPruned(_) => Class::Unprocessable,
        };
        Refusal::new(class, r.code(), r.to_string())
    }
}

impl From<ManifestError> for Refusal {
    fn from(e: ManifestError) -> Refusal {
        let class = match e {
            ManifestError::Outdated { .. } | ManifestError::FleetMismatch { .. } => Class::Conflict,
            _ => Class::Unprocessable,
        };
        Refusal::new(class, e.code(), e.to_string())
    }
}

/// The answer channel of one input.
pub type Reply = oneshot::Sender<Result<Output, Refusal>>;

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
    /// Metrics.
    pub metrics: Metrics,
}
