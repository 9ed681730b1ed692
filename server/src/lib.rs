//! The fleet-ledger daemon and CLI: the HTTP shell around the engine (`fleet-ledger-engine`:
//! the ledger with its projections, the single writer, forensics, tile publication).
//!
//! * [`api`]: the HTTP API (axum) in front of the writer; [`daemon`] wires them and runs
//!   `serve`.
//! * [`intake`]: signed manifest verification (JCS, ed25519 `verify_strict`, freshness).
//! * [`logging`]: the log sink, which can lose lines but never stop the daemon.
//! * [`connections`]: accepting, TLS, header-read timeouts and the connection cap.
//! * [`auth`], [`tls`], [`config`]: tokens and client certificates, the config file. The
//!   JSON shapes are the `fleet-ledger-wire` crate's.
//! * [`trust`], [`sources`]: CI's keys and where its signed manifests come from.
//! * [`enrollment`]: the fleet CA that issues agents their certificates.
//! * [`access`]: who may write (tokens, CI keys, org root keys), swapped by [`reload`]:
//!   re-reading the config while serving.
//! * [`publish`], [`witnessing`]: publication to a directory or S3, and witness rounds.

pub mod access;
pub mod api;
pub mod auth;
pub mod config;
pub mod connections;
pub mod daemon;
pub mod enrollment;
pub mod intake;
pub mod logging;
pub mod node;
pub mod publish;
pub mod reload;
pub mod replication;
pub mod sources;
pub mod tls;
pub mod trust;
pub mod witnessing;
