//! The fleet-ledger service: the shell around the pure crates.
//!
//! * [`materialize`]: the ledger with its projections (store + folds in one transaction).
//! * [`writer`]: the single writer thread: group commit of decided inputs.
//! * [`api`]: the HTTP API (axum) in front of it; [`daemon`] wires them and runs `serve`.
//! * [`intake`]: signed manifest verification (JCS, ed25519 `verify_strict`, freshness).
//! * [`logging`]: the log sink, which can lose lines but never stop the daemon.
//! * [`connections`]: accepting, TLS, header-read timeouts and the connection cap.
//! * [`auth`], [`tls`], [`config`], [`wire`], [`metrics`]: tokens and client certificates,
//!   the config file, JSON shapes, Prometheus metrics.
//! * [`trust`], [`sources`]: CI's keys and where its signed manifests come from.
//! * [`enrollment`]: the fleet CA that issues agents their certificates.
//! * [`forensics`]: `replay`, `timeline`, `why` and the determinism check, on a database or
//!   a bundle.

pub mod api;
pub mod auth;
pub mod config;
pub mod connections;
pub mod daemon;
pub mod enrollment;
pub mod forensics;
pub mod intake;
pub mod logging;
pub mod materialize;
pub mod metrics;
pub mod publish;
pub mod reload;
pub mod snapshots;
pub mod sources;
pub mod tls;
pub mod trust;
pub mod wire;
pub mod witnessing;
pub mod writer;
