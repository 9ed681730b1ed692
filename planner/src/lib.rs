//! The decisions of fleet-ledger: pure functions of (projection state, input, `now`) whose
//! outputs are events.
//!
//! Architecture invariant: no IO, no clock, no unordered iteration. The state machines and
//! gates arrive with the domain issue; until then the crate only fixes its place in the graph.
