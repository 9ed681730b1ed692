//! The per-host entry index (`proj.host_entries`): which entries name each host, a block of
//! [`INDEX_BLOCK`] entries at a time.

use super::model;

/// The entry index is written a block of this many entries at a time (see [`State::flush`]);
/// a timeline scans at most this many entries past it.
pub const INDEX_BLOCK: u64 = 16_384;
const _: () = assert!(INDEX_BLOCK <= 1 << 16, "block offsets are stored as u16");

/// `proj.meta` key of the entry index's watermark.
pub(crate) const INDEX_WATERMARK: &[u8] = b"index_watermark";

/// The [`tables::HOST_ENTRIES`] key of one host's row in one block.
pub fn host_entries_key(block: u64, host: &str) -> Vec<u8> {
    let mut key = block.to_be_bytes().to_vec();
    key.extend_from_slice(&model::encode(&host));
    key
}

/// The seqs a [`tables::HOST_ENTRIES`] row of `block` lists (None: a malformed row).
pub fn host_entries_seqs(block: u64, value: &[u8]) -> Option<Vec<u64>> {
    if !value.len().is_multiple_of(2) {
        return None;
    }
    value
        .chunks_exact(2)
        .map(|c| {
            let off = u64::from(u16::from_be_bytes([c[0], c[1]]));
            (off < INDEX_BLOCK).then(|| block * INDEX_BLOCK + off)
        })
        .collect()
}

pub(crate) fn index_key(block: u64, host: &[u8]) -> Vec<u8> {
    let mut key = block.to_be_bytes().to_vec();
    key.extend_from_slice(host);
    key
}

/// A stored entry-index row: ((block, bincode host), u16 BE offsets).
pub(crate) type IndexRowOut<'a> = ((u64, &'a [u8]), Vec<u8>);

/// Index rows the fold produced and the next flush writes. Not a model: a log's worth of
/// them is never held, and they never change once written.
#[derive(Clone, Debug, Default)]
pub(crate) struct IndexRows {
    /// `(seq, host id)` of each pending entry, in seq order. Host names are interned: a
    /// block names ~16k entries but only a fleet's worth of hosts, so grouping its rows is
    /// indexing by id rather than hashing every entry's name at flush time.
    keys: Vec<(u64, u32)>,
    /// Host name → id (foldhash: this runs for every entry folded, and SipHash was a fifth
    /// of the index's cost).
    ids: foldhash::HashMap<String, u32>,
    /// Id → the host name and its bincode encoding (the stored key's suffix).
    names: Vec<(String, Vec<u8>)>,
    /// The stored index holds every entry below this seq (a multiple of `INDEX_BLOCK`).
    pub(crate) covered: u64,
    /// Not kept (a fold that skips the index).
    pub(crate) off: bool,
}

impl IndexRows {
    pub(crate) fn off() -> IndexRows {
        IndexRows {
            off: true,
            ..IndexRows::default()
        }
    }

    pub(crate) fn intern(&mut self, host: &str) -> u32 {
        if let Some(&id) = self.ids.get(host) {
            return id;
        }
        // Ids stay far below 4 Gi: they are reset at every block written.
        let id = self.names.len() as u32;
        self.names.push((host.to_string(), model::encode(&host)));
        self.ids.insert(host.to_string(), id);
        id
    }

    pub(crate) fn push(&mut self, seq: u64, host: &str) {
        let id = self.intern(host);
        self.keys.push((seq, id));
    }

    /// The pending entries below `below` grouped into stored rows, in key order (the order
    /// of the encoded keys: the block is fixed width): ((block, bincode host), offsets).
    pub(crate) fn rows_below(&self, below: u64) -> Vec<IndexRowOut<'_>> {
        let mut rows = Vec::new();
        let mut offsets: Vec<Vec<u8>> = vec![Vec::new(); self.names.len()];
        let mut touched: Vec<u32> = Vec::new();
        let pending = &self.keys[..self.keys.partition_point(|(seq, _)| *seq < below)];
        for block in pending.chunk_by(|a, b| a.0 / INDEX_BLOCK == b.0 / INDEX_BLOCK) {
            for &(seq, id) in block {
                let list = &mut offsets[id as usize];
                if list.is_empty() {
                    touched.push(id);
                }
                // In range: INDEX_BLOCK fits in a u16 (asserted at compile time). Offsets
                // are pushed in seq order, so each row's list is ascending.
                list.extend_from_slice(&((seq % INDEX_BLOCK) as u16).to_be_bytes());
            }
            let n = block[0].0 / INDEX_BLOCK;
            let first = rows.len();
            rows.extend(touched.drain(..).map(|id| {
                (
                    (n, self.names[id as usize].1.as_slice()),
                    std::mem::take(&mut offsets[id as usize]),
                )
            }));
            rows[first..].sort_unstable_by(|a: &IndexRowOut<'_>, b| a.0.1.cmp(b.0.1));
        }
        rows
    }

    /// Forgets the pending entries below `target` (written), and the names only they used.
    pub(crate) fn written_below(&mut self, target: u64) {
        let keep = self.keys.partition_point(|(seq, _)| *seq < target);
        let rest = self.keys.split_off(keep);
        let names = std::mem::take(&mut self.names);
        self.keys.clear();
        self.ids.clear();
        for (seq, id) in rest {
            self.push(seq, &names[id as usize].0);
        }
    }
}
