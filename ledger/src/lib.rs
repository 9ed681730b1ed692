//! fleet-ledger's core: the event vocabulary, the entry format, the hash chain, the Merkle
//! tree, keys and signed checkpoints, verification, proofs and export bundles; and, with the
//! `store` feature (default), the redb store.
//!
//! * [`domain`], [`event`]: the vocabulary (host and rollout states, agent reports; every
//!   entry kind and its payload).
//! * [`entry`], [`hash`], [`merkle`]: the entry bytes, the chain and the tree of both format
//!   versions.
//! * [`keys`], [`checkpoint`], [`witness`]: signed-note keys, checkpoints, cosignatures.
//! * [`verify`], [`proof`], [`bundle`], [`tiles`]: the streaming verifier, proof files, export
//!   bundles, published tlog-tiles.
//! * [`tables`]: the byte-table interface projections are written against.
//! * With `store`: [`store`] (redb, the importer, `trial_commit`); with `sim-disk`, `sim_disk`
//!   (the simulated disk the fault tests and the deterministic writer test run on).
//!
//! The verification path (`--no-default-features`) has no redb and does no IO beyond the
//! reader it is given, so an auditor can build a small verifier. The byte-level contract is
//! `docs/FORMAT.md`.

pub mod bundle;
pub mod checkpoint;
pub mod domain;
mod domain_events;
pub mod entry;
pub mod event;
pub mod hash;
pub mod keys;
pub mod merkle;
#[cfg(feature = "store")]
mod overlay;
pub mod proof;
pub mod read;
#[cfg(feature = "sim-disk")]
pub mod sim_disk;
#[cfg(feature = "store")]
pub mod store;
pub mod tables;
pub mod tiles;
pub mod verify;
pub mod witness;

pub use checkpoint::Checkpoint;
pub use event::{Event, Kind};
pub use hash::Hash;
pub use keys::{PublicKey, Signer};
pub use verify::{VerifiedLog, VerifyError};
