//! A `ledger.log` row: the tree nodes an entry completed, its batch's checkpoint, the entry.

use crate::checkpoint::NOTE_BYTES_MAX;
use crate::hash::{HASH_BYTES, Hash};

/// One `ledger.log` value:
///
/// ```text
/// u8    node count t (levels 1..=t completed by this leaf; at most 63)
/// t×32  node hashes, level 1 first
/// u32be checkpoint note length c (0: this entry does not end a batch)
/// c     signed checkpoint note of size seq + 1
/// rest  the stored entry bytes
/// ```
#[derive(Clone, Copy, Debug)]
pub struct Row<'a> {
    nodes: &'a [u8],
    checkpoint: Option<&'a [u8]>,
    entry: &'a [u8],
}

impl<'a> Row<'a> {
    pub(super) fn encode(nodes: &[Hash], checkpoint: Option<&[u8]>, entry: &[u8]) -> Vec<u8> {
        let c = checkpoint.unwrap_or_default();
        let mut v = Vec::with_capacity(1 + nodes.len() * HASH_BYTES + 4 + c.len() + entry.len());
        v.push(nodes.len() as u8);
        for n in nodes {
            v.extend_from_slice(&n.0);
        }
        v.extend_from_slice(&(c.len() as u32).to_be_bytes());
        v.extend_from_slice(c);
        v.extend_from_slice(entry);
        v
    }

    /// Splits a stored row; `None` if it is malformed.
    pub(super) fn parse(v: &'a [u8]) -> Option<Row<'a>> {
        let t = usize::from(*v.first()?);
        if t > 63 {
            return None;
        }
        let nodes = v.get(1..1 + t * HASH_BYTES)?;
        let at = 1 + t * HASH_BYTES;
        let c = u32::from_be_bytes(v.get(at..at + 4)?.try_into().ok()?) as usize;
        if c > NOTE_BYTES_MAX {
            return None;
        }
        let checkpoint = v.get(at + 4..at + 4 + c)?;
        Some(Row {
            nodes,
            checkpoint: (c > 0).then_some(checkpoint),
            entry: v.get(at + 4 + c..)?,
        })
    }

    /// The stored entry bytes.
    pub fn entry(&self) -> &'a [u8] {
        self.entry
    }

    /// The checkpoint note ending at this entry, if its batch ended here.
    pub fn checkpoint(&self) -> Option<&'a [u8]> {
        self.checkpoint
    }

    pub(super) fn node(&self, level: u8) -> Option<Hash> {
        let at = (usize::from(level) - 1) * HASH_BYTES;
        Some(Hash(self.nodes.get(at..at + HASH_BYTES)?.try_into().ok()?))
    }
}
