//! The commit register (issue 29): the one value a linearizable engine (etcd) holds for the
//! log, `{tree_size, root, epoch, sync_set}`, moved only by compare-and-swap. A writer may
//! sign and acknowledge a batch only after it swapped the register from the head it extends to
//! the batch's head; a writer whose swap fails was fenced (another writer took a newer epoch)
//! and signs nothing more. Safety comes from that swap alone, never from a lease or a clock.
//!
//! This module is the register's contract and its value; the engine opens no socket, so the
//! etcd implementation lives in the daemon (`fleet_ledger::replication`). [`MemRegister`] is
//! the same contract in memory, for the deterministic tests.

use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// The register's value: how far the log is acknowledged, by which writer, with which
/// standbys holding every acknowledged entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    /// Entries acknowledged: the tree size every standby in `sync_set` holds durably.
    pub tree_size: u64,
    /// The Merkle root of those entries (lowercase hex in the stored form).
    #[serde(with = "hex32")]
    pub root: [u8; 32],
    /// The epoch of the writer that swapped it in (the fencing token: the revision of its
    /// election key).
    pub epoch: u64,
    /// The standbys that hold every entry up to `tree_size`, by node name, sorted: only they
    /// may take over.
    pub sync_set: Vec<String>,
}

impl Head {
    /// The bytes the register stores: JSON with the fields in declaration order and
    /// `sync_set` sorted, so equal heads are equal bytes (the swap compares bytes), and an
    /// operator reads it with `etcdctl get`.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut sorted = self.clone();
        sorted.sync_set.sort();
        sorted.sync_set.dedup();
        // A struct of integers, a byte array and strings always serializes.
        serde_json::to_vec(&sorted).expect("a register head serializes")
    }

    /// Reads the stored bytes back.
    pub fn from_bytes(bytes: &[u8]) -> Result<Head, RegisterError> {
        serde_json::from_slice(bytes).map_err(|e| {
            RegisterError::Malformed(format!(
                "the register holds {} bytes that are not a head: {e}",
                bytes.len()
            ))
        })
    }
}

mod hex32 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(v: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        let text: String = v.iter().map(|b| format!("{b:02x}")).collect();
        s.serialize_str(&text)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let text = String::deserialize(d)?;
        let bad = || serde::de::Error::custom("root: expected 64 lowercase hex digits");
        if text.len() != 64 {
            return Err(bad());
        }
        let mut out = [0u8; 32];
        for (i, b) in out.iter_mut().enumerate() {
            let pair = text.get(2 * i..2 * i + 2).ok_or_else(bad)?;
            if pair.bytes().any(|c| c.is_ascii_uppercase()) {
                return Err(bad());
            }
            *b = u8::from_str_radix(pair, 16).map_err(|_| bad())?;
        }
        Ok(out)
    }
}

/// What a compare-and-swap did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Swap {
    /// The register held the expected head and now holds the new one.
    Done,
    /// The register holds something else (None: nothing): another writer moved it. The
    /// caller is fenced: it must not sign or acknowledge the batch.
    Fenced {
        /// What the register holds.
        actual: Option<Head>,
    },
}

/// Why the register could not be asked. Nothing is known of the swap: the caller must not
/// acknowledge, and must learn what the register holds before it writes again.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum RegisterError {
    /// No answer (no quorum, a timeout, the connection lost), and a read could not settle it.
    #[error("the commit register is unavailable: {0}")]
    Unavailable(String),
    /// The register holds bytes that are not a head.
    #[error("{0}")]
    Malformed(String),
}

/// A linearizable register holding one [`Head`].
pub trait CommitRegister: Send + Sync {
    /// What the register holds now (None: never written), as a linearizable read.
    fn read(&self) -> Result<Option<Head>, RegisterError>;

    /// Replaces `expected` (None: the register is empty) by `next`, if and only if the
    /// register holds exactly `expected`. An ambiguous reply (the request may or may not have
    /// been applied) is settled by reading the register: `next` there is [`Swap::Done`],
    /// `expected` still there is tried again, anything else is [`Swap::Fenced`].
    fn compare_and_swap(&self, expected: Option<&Head>, next: &Head)
    -> Result<Swap, RegisterError>;
}

/// The register in memory: what the deterministic tests run the protocol against. It can be
/// made to fail (unavailable) or to answer ambiguously (apply the swap, then report no
/// answer), as a real one does under faults.
#[derive(Debug, Default)]
pub struct MemRegister {
    state: Mutex<MemState>,
}

#[derive(Debug, Default)]
struct MemState {
    value: Option<Vec<u8>>,
    /// Every value it ever held, in order (the checker's "never moves backwards").
    history: Vec<Head>,
    fault: Option<MemFault>,
}

/// A fault [`MemRegister`] shows on its next calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemFault {
    /// Every call fails, as with no quorum.
    Unavailable,
    /// The next swap is applied (if it matches) and then reported as no answer; reads
    /// answer. Cleared after one swap.
    Ambiguous,
    /// The next swap is applied (if it matches), then the register goes dark: that swap and
    /// every later call fail until the fault is cleared (a reply lost in a partition).
    AppliedThenDark,
}

impl MemRegister {
    /// An empty register.
    pub fn new() -> MemRegister {
        MemRegister::default()
    }

    /// Sets (or clears) the fault of the next calls.
    pub fn set_fault(&self, fault: Option<MemFault>) {
        self.lock().fault = fault;
    }

    /// Every head it held, in order.
    pub fn history(&self) -> Vec<Head> {
        self.lock().history.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MemState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The raw swap: applied if the bytes match. Returns whether it applied.
    fn raw_swap(&self, expected: Option<&Head>, next: &Head) -> Result<bool, RegisterError> {
        let mut s = self.lock();
        if s.fault == Some(MemFault::Unavailable) {
            return Err(RegisterError::Unavailable("injected: no quorum".into()));
        }
        let applied = s.value.as_deref() == expected.map(Head::to_bytes).as_deref();
        if applied {
            let bytes = next.to_bytes();
            s.history.push(Head::from_bytes(&bytes)?);
            s.value = Some(bytes);
        }
        if s.fault == Some(MemFault::Ambiguous) {
            s.fault = None;
            return Err(RegisterError::Unavailable(
                "injected: the swap's reply was lost".into(),
            ));
        }
        if s.fault == Some(MemFault::AppliedThenDark) {
            s.fault = Some(MemFault::Unavailable);
            return Err(RegisterError::Unavailable(
                "injected: the swap's reply was lost, and then the register".into(),
            ));
        }
        Ok(applied)
    }
}

impl CommitRegister for MemRegister {
    fn read(&self) -> Result<Option<Head>, RegisterError> {
        let s = self.lock();
        if s.fault == Some(MemFault::Unavailable) {
            return Err(RegisterError::Unavailable("injected: no quorum".into()));
        }
        s.value.as_deref().map(Head::from_bytes).transpose()
    }

    fn compare_and_swap(
        &self,
        expected: Option<&Head>,
        next: &Head,
    ) -> Result<Swap, RegisterError> {
        settle(self, expected, next, |e, n| self.raw_swap(e, n))
    }
}

/// The swap protocol over a raw conditional write (`swap` answers whether it applied, or an
/// error when the reply is unknown): what every [`CommitRegister`] does with an ambiguous
/// reply. Tries at most three times while the register still holds `expected`.
pub fn settle(
    register: &dyn CommitRegister,
    expected: Option<&Head>,
    next: &Head,
    mut swap: impl FnMut(Option<&Head>, &Head) -> Result<bool, RegisterError>,
) -> Result<Swap, RegisterError> {
    let mut last = None;
    for _ in 0..3 {
        match swap(expected, next) {
            Ok(true) => return Ok(Swap::Done),
            Ok(false) => {
                return Ok(Swap::Fenced {
                    actual: register.read()?,
                });
            }
            // No reply: the swap may have been applied. What the register holds says.
            Err(e) => match register.read() {
                Ok(actual) if same(actual.as_ref(), Some(next)) => return Ok(Swap::Done),
                Ok(actual) if same(actual.as_ref(), expected) => last = Some(e),
                Ok(actual) => return Ok(Swap::Fenced { actual }),
                Err(read) => {
                    return Err(RegisterError::Unavailable(format!(
                        "{e}; reading the register to settle it: {read}"
                    )));
                }
            },
        }
    }
    Err(last.unwrap_or_else(|| RegisterError::Unavailable("no answer".into())))
}

/// Whether two register values are the same bytes (a head's `sync_set` order aside).
fn same(a: Option<&Head>, b: Option<&Head>) -> bool {
    a.map(Head::to_bytes) == b.map(Head::to_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(size: u64, epoch: u64) -> Head {
        Head {
            tree_size: size,
            root: [size as u8; 32],
            epoch,
            sync_set: vec!["a".into(), "b".into()],
        }
    }

    #[test]
    fn heads_are_stored_as_canonical_json() {
        let mut h = head(3, 7);
        h.sync_set.reverse();
        let bytes = h.to_bytes();
        assert_eq!(
            String::from_utf8(bytes.clone()).unwrap(),
            format!(
                r#"{{"tree_size":3,"root":"{}","epoch":7,"sync_set":["a","b"]}}"#,
                "03".repeat(32)
            )
        );
        let back = Head::from_bytes(&bytes).unwrap();
        assert_eq!(back.sync_set, vec!["a", "b"]);
        assert!(Head::from_bytes(b"{}").is_err());
        let upper = String::from_utf8(bytes).unwrap().replace("03", "0A");
        assert!(Head::from_bytes(upper.as_bytes()).is_err());
    }

    #[test]
    fn a_swap_from_a_head_the_register_no_longer_holds_is_fenced() {
        let r = MemRegister::new();
        assert_eq!(r.compare_and_swap(None, &head(1, 1)), Ok(Swap::Done));
        assert_eq!(
            r.compare_and_swap(Some(&head(1, 1)), &head(2, 1)),
            Ok(Swap::Done)
        );
        assert_eq!(
            r.compare_and_swap(Some(&head(1, 1)), &head(3, 1)),
            Ok(Swap::Fenced {
                actual: Some(head(2, 1))
            })
        );
        assert_eq!(
            r.compare_and_swap(None, &head(1, 2)),
            Ok(Swap::Fenced {
                actual: Some(head(2, 1))
            })
        );
        assert_eq!(r.history(), vec![head(1, 1), head(2, 1)]);
    }

    #[test]
    fn an_ambiguous_reply_is_settled_by_reading() {
        let r = MemRegister::new();
        r.set_fault(Some(MemFault::Ambiguous));
        // Applied, reply lost: the read finds `next`.
        assert_eq!(r.compare_and_swap(None, &head(1, 1)), Ok(Swap::Done));
        // Not applied (another head was there), reply lost: fenced, never done.
        r.set_fault(Some(MemFault::Ambiguous));
        assert_eq!(
            r.compare_and_swap(Some(&head(9, 1)), &head(10, 1)),
            Ok(Swap::Fenced {
                actual: Some(head(1, 1))
            })
        );
        // No quorum: an error, never done.
        r.set_fault(Some(MemFault::Unavailable));
        assert!(matches!(
            r.compare_and_swap(Some(&head(1, 1)), &head(2, 1)),
            Err(RegisterError::Unavailable(_))
        ));
        r.set_fault(None);
        assert_eq!(r.read(), Ok(Some(head(1, 1))));
    }
}
