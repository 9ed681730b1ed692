//! The decisions of fleet-ledger: pure functions of (projection state, input, `now`) whose
//! outputs are events.
//!
//! Architecture invariant: no IO, no clock, no unordered iteration.
//!
//! * [`decide()`]: the one decision function. Every input the CP accepts (reports,
//!   heartbeats, manifests, operator clearance and lifts, dispatch delivery, ticks,
//!   retention, planner runs) goes through it; the daemon's writer and `replay --check` both
//!   call it, so the check covers everything the daemon decides. It stages events into a
//!   [`Log`] the caller provides, which folds them at once.
//! * [`host`]: the host state machine (`decide`) and [`decide_report`], which runs a report
//!   through the host and rollout machines as one atomic decision.
//! * [`rollout`]: the rollout state machine (`decide_open`, `decide`).
//! * [`mod@plan`]: the planner and its six gates.
//! * [`document`], [`manifest`]: CI's signed documents and the manifests in force.

pub mod decide;
pub mod document;
pub mod host;
pub mod manifest;
pub mod plan;
pub mod rfc3339;
pub mod rollout;

pub use decide::{
    Answer, Batch, Decided, Delivered, IdentityRefusal, Input, Log, Manifest, ManifestRefusal,
    NonceRefusal, NotItsInput, Refusal, Staged, Undecided, decide, decide_batch, host_policy,
    input_of, only_decided, retention_due, ssh_ed25519_key, synthesis,
};
pub use host::{HostInput, HostPolicy, Rejection, decide as decide_host, decide_report};
pub use manifest::{Budget, Edge, Fleet, InForce, Manifests, RolloutManifest, RolloutPolicy};
pub use plan::{Decision, FleetView, plan};
pub use rollout::{RolloutInput, RolloutRejection, decide as decide_rollout, decide_open};
