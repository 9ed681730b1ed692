//! The decisions of fleet-ledger: pure functions of (projection state, input, `now`) whose
//! outputs are events.
//!
//! Architecture invariant: no IO, no clock, no unordered iteration.
//!
//! * [`host`]: the host state machine (`decide`) and [`decide_report`], which runs a report
//!   through the host and rollout machines as one atomic decision.
//! * [`rollout`]: the rollout state machine (`decide_open`, `decide`).
//! * [`plan`]: the planner and its six gates.

pub mod document;
pub mod host;
pub mod manifest;
pub mod plan;
pub mod rollout;

pub use host::{HostInput, HostPolicy, Rejection, decide as decide_host, decide_report};
pub use manifest::{Budget, Edge, Fleet, Manifests, RolloutManifest, RolloutPolicy};
pub use plan::{Decision, FleetView, plan};
pub use rollout::{RolloutInput, RolloutRejection, decide as decide_rollout, decide_open};
