//! The decisions of fleet-ledger: pure functions of (projection state, input, `now`) whose
//! outputs are events.
//!
//! Architecture invariant: no IO, no clock, no unordered iteration. The planner and its gates
//! arrive next (domain issue, part 2).

pub mod host;
pub mod rollout;

pub use host::{HostInput, HostPolicy, Rejection, decide as decide_host, decide_report};
pub use rollout::{RolloutInput, RolloutRejection, decide as decide_rollout, decide_open};
