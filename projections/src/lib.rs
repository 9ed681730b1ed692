//! The read models of fleet-ledger: pure folds over the log (`apply(&mut State, &Entry)`).
//!
//! Architecture invariant: this crate does no IO, reads no clock and does not depend on redb
//! or tokio; it depends on `ledger` without its `store` feature. The read models themselves
//! arrive with the projections issue; until then the crate only fixes its place in the graph.
