//! fleet-ledger's engine: everything between the pure domain (`planner`, `projections`) and
//! the daemon's HTTP shell. It opens no socket and knows no HTTP: the daemon and the CLI
//! drive it, and tests drive it directly.
//!
//! * [`materialize`]: the ledger with its projections (the store and the folds, in one
//!   transaction per append), `rebuild` and `check`.
//! * [`writer`]: the single writer: a thread fed by a queue, group commit of decided inputs,
//!   answers after the fsync; its protocol with the callers.
//! * [`forensics`]: the determinism check, `replay`, `timeline`, `why` and the rollout
//!   report, on a database or a bundle.
//! * [`replay_cache`]: the replay snapshots kept beside a database, so `replay` starts near
//!   its point.
//! * [`publish`]: the log as C2SP tlog-tiles, written to a [`publish::Sink`].
//! * [`metrics`]: the daemon's Prometheus registry, which the writer records into.
//! * [`run_check`]: what every failover test holds a run to (no acknowledged loss, no fork
//!   signed, the register never backwards, no follower ahead of it).
//! * [`register`]: the commit register's contract (a linearizable compare-and-swap of the
//!   acknowledged head, the writer's epoch and the standbys in sync), and it in memory.

pub mod forensics;
pub mod materialize;
pub mod metrics;
pub mod publish;
pub mod register;
pub mod replay_cache;
pub mod replicate;
pub mod run_check;
pub mod writer;
