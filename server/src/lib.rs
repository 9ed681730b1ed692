//! The fleet-ledger service: the shell around the pure crates. Today it holds the
//! materialised ledger (store + projections in one transaction); the daemon and its HTTP API
//! arrive with the daemon issue.

pub mod materialize;
