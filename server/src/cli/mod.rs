//! The CLI's commands, by job: the ledger and its proofs (`ledger`), forensics
//! (`forensics`), and the daemon (`serve`). `main.rs` holds the arguments and dispatches.

pub(crate) mod forensics;
pub(crate) mod ledger;
pub(crate) mod serve;
