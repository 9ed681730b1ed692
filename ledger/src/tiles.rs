//! The log as C2SP tlog-tiles (docs/FORMAT.md §12): which tiles and entry bundles a tree of a
//! given size has, their paths, and their bytes. Nothing here does IO: the publisher
//! (`fleet-ledger publish`, the daemon's `publish` option) writes what this computes, and the
//! tile verifier reads what it wrote.
//!
//! A tile at level `L`, index `N`, holds up to 256 consecutive hashes of the tree's nodes at
//! height `8·L` (level 0: leaf hashes), so it is exactly the perfect subtrees a
//! [`NodeSource`] supplies. Only version-2 logs (RFC 6962 SHA-256 trees) are published:
//! tlog-tiles fixes SHA-256.

use crate::hash::{Hash, TreeHash};
use crate::merkle::NodeSource;

/// Height of a tile: 8 tree levels, 256 hashes.
pub const TILE_HEIGHT: u32 = 8;
/// Hashes (or entries) in a full tile (or entry bundle).
pub const TILE_WIDTH: u64 = 1 << TILE_HEIGHT;
/// Largest entry an entry bundle carries inline (its length prefix is a `u16`).
pub const BUNDLED_ENTRY_BYTES_MAX: usize = u16::MAX as usize;

/// A tile (level ≥ 0) or an entry bundle (`level` None), full (`width` 256) or partial.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Tile {
    /// Tile level; None for an entry bundle.
    pub level: Option<u8>,
    /// Index within the level.
    pub index: u64,
    /// Hashes (entries) it holds, 1..=256.
    pub width: u64,
}

impl Tile {
    /// Whether it is full (immutable for good; a partial tile is superseded by a wider one).
    pub fn is_full(&self) -> bool {
        self.width == TILE_WIDTH
    }

    /// Its path under the log's prefix: `tile/<L>/<N>[.p/<W>]` or
    /// `tile/entries/<N>[.p/<W>]`.
    pub fn path(&self) -> String {
        let level = match self.level {
            Some(l) => l.to_string(),
            None => "entries".to_string(),
        };
        let mut p = format!("tile/{level}/{}", index_path(self.index));
        if !self.is_full() {
            p.push_str(&format!(".p/{}", self.width));
        }
        p
    }

    /// The first leaf (entry) it covers.
    pub fn first_leaf(&self) -> u64 {
        self.index << (TILE_HEIGHT * (u32::from(self.level.unwrap_or(0)) + 1))
    }
}

/// A tile index as path elements: zero-padded 3-digit groups, all but the last prefixed with
/// `x` (1234067 → `x001/x234/067`).
pub fn index_path(mut n: u64) -> String {
    let mut groups = vec![format!("{:03}", n % 1000)];
    n /= 1000;
    while n > 0 {
        groups.push(format!("x{:03}", n % 1000));
        n /= 1000;
    }
    groups.reverse();
    groups.join("/")
}

/// Where an entry too large for an entry bundle is published whole: `entry/<N>` with the
/// entry's index encoded as tile indexes are.
pub fn large_entry_path(seq: u64) -> String {
    format!("entry/{}", index_path(seq))
}

/// Where the checkpoint a key rotation took effect at is published: `rotation/<N>`, with the
/// seq of the `KeyRotated` entry encoded as tile indexes are. The file holds the log's first
/// checkpoint covering that entry (signed by the key before the rotation, FORMAT §6), as
/// stored: tiles keep only the latest checkpoint, and a verifier needs these to follow the
/// key chain (FORMAT §12).
pub fn rotation_path(seq: u64) -> String {
    format!("rotation/{}", index_path(seq))
}

/// Every tile and entry bundle of the tree of `size`, as a publisher for that size writes
/// them (bundles first, then tiles by level).
pub fn tiles_of(size: u64) -> Vec<Tile> {
    tiles_between(0, size)
}

/// The tiles and bundles of the tree of `size` that the tree of `published` (≤ `size`) did not
/// already have: the full ones completed since, and the partial ones of `size`.
pub fn tiles_between(published: u64, size: u64) -> Vec<Tile> {
    let mut out = Vec::new();
    for level in std::iter::once(None).chain((0u8..).map(Some)) {
        let shift = TILE_HEIGHT * u32::from(level.unwrap_or(0));
        // Nodes at this tile level's base height, in each tree.
        let (old, new) = (published >> shift, size >> shift);
        if new == 0 {
            break;
        }
        let full_from = old / TILE_WIDTH;
        for index in full_from..new / TILE_WIDTH {
            out.push(Tile {
                level,
                index,
                width: TILE_WIDTH,
            });
        }
        let partial = new % TILE_WIDTH;
        if partial > 0 && (partial, new / TILE_WIDTH) != (old % TILE_WIDTH, old / TILE_WIDTH) {
            out.push(Tile {
                level,
                index: new / TILE_WIDTH,
                width: partial,
            });
        }
        if level.is_some() && new < TILE_WIDTH {
            break;
        }
    }
    out
}

/// The bytes of hash tile `tile` (level ≥ 0) of a version-2 log: its hashes, concatenated.
pub fn tile_bytes<S: NodeSource + ?Sized>(src: &S, tile: &Tile) -> Result<Vec<u8>, S::Error> {
    let level = tile.level.expect("a hash tile");
    debug_assert_eq!(src.tree(), TreeHash::Sha256, "tlog-tiles are SHA-256");
    let height = (TILE_HEIGHT * u32::from(level)) as u8;
    let first = tile.index * TILE_WIDTH;
    let mut out = Vec::with_capacity(tile.width as usize * 32);
    for i in 0..tile.width {
        let h: Hash = src.perfect(height, first + i)?;
        out.extend_from_slice(h.as_bytes());
    }
    Ok(out)
}

/// Appends one entry to an entry bundle: a `u16` big-endian length, then its bytes. An entry
/// longer than [`BUNDLED_ENTRY_BYTES_MAX`] is written as length 0 (no fleet-ledger entry is
/// empty: a header alone is 55 bytes) and published whole at [`large_entry_path`]; returns
/// whether it was bundled inline.
pub fn bundle_entry(bundle: &mut Vec<u8>, entry: &[u8]) -> bool {
    match u16::try_from(entry.len()) {
        Ok(len) => {
            bundle.extend_from_slice(&len.to_be_bytes());
            bundle.extend_from_slice(entry);
            true
        }
        Err(_) => {
            bundle.extend_from_slice(&0u16.to_be_bytes());
            false
        }
    }
}

/// The entries of an entry bundle, in order; an empty slice stands for an entry published at
/// [`large_entry_path`]. None when the bytes are not a bundle of `width` entries.
pub fn split_bundle(bytes: &[u8], width: u64) -> Option<Vec<&[u8]>> {
    let mut out = Vec::with_capacity(width as usize);
    let mut rest = bytes;
    while !rest.is_empty() {
        let (len, tail) = rest.split_first_chunk::<2>()?;
        let len = u16::from_be_bytes(*len) as usize;
        if tail.len() < len {
            return None;
        }
        out.push(&tail[..len]);
        rest = &tail[len..];
    }
    (out.len() as u64 == width).then_some(out)
}

/// Reads a published file by its path under the log's prefix: its bytes, None when it does
/// not exist, or why it could not be read.
pub type Fetch<'a> = dyn FnMut(&str) -> Result<Option<Vec<u8>>, String> + 'a;

/// What [`verify`] found.
#[derive(Debug)]
pub struct TilesVerified {
    /// The log, as the verifier saw it (origin, latest checkpoint, keys).
    pub log: crate::verify::VerifiedLog,
    /// The trusted witnesses' cosignatures on the published checkpoint, as the policy
    /// required them.
    pub cosignatures: Vec<crate::witness::Cosignature>,
    /// The checkpoint's signed note.
    pub note: String,
    /// Files read.
    pub files: u64,
}

/// Fully verifies a log published as tiles, streaming, in memory bounded by a bundle and
/// one pending tile per level: every entry from the entry bundles through the log verifier
/// (the chain, the genesis key `pinned`, rotations), every hash tile against the hashes
/// recomputed from the entries, and the latest `checkpoint` (signature, size, head, root).
/// `fetch` reads a file by its path under the log's prefix (None: it does not exist).
pub fn verify(
    fetch: &mut Fetch<'_>,
    pinned: crate::keys::PublicKey,
    witnesses: &crate::witness::WitnessPolicy,
    progress: &mut dyn FnMut(u64),
) -> Result<TilesVerified, crate::verify::VerifyError> {
    verify_into(fetch, pinned, witnesses, progress, &mut |_| Ok(()))
}

/// The published checkpoint's cosignatures as `witnesses` requires them (FORMAT §5a).
fn cosigned(
    note: &[u8],
    size: u64,
    witnesses: &crate::witness::WitnessPolicy,
) -> Result<Vec<crate::witness::Cosignature>, crate::verify::VerifyError> {
    use crate::verify::{Location, VerifyError};
    crate::checkpoint::parse_note(note)
        .and_then(|n| witnesses.check(&n))
        .map_err(|e| VerifyError::new(Location::Checkpoint(size), e))
}

/// Reads a published file for the tile verifier: its bytes, or why not, named at a place.
type Get<'a> =
    dyn FnMut(&str, crate::verify::Location) -> Result<Vec<u8>, crate::verify::VerifyError> + 'a;

/// An entry a bundle gives as length 0: read whole from `entry/<seq>`. It must be one that
/// does not fit a bundle (over 65,535 bytes): an entry that fits is written inline, so each
/// entry has one place (FORMAT §12), and a verifier that reads either gets the same answer.
fn out_of_line(get: &mut Get<'_>, seq: u64) -> Result<Vec<u8>, crate::verify::VerifyError> {
    use crate::verify::{Failure, Location, VerifyError};
    let path = large_entry_path(seq);
    let bytes = get(&path, Location::Seq(seq))?;
    if bytes.len() <= BUNDLED_ENTRY_BYTES_MAX {
        return Err(VerifyError::new(
            Location::Seq(seq),
            Failure::Tiles(format!(
                "{path} is {} bytes: an entry of at most {BUNDLED_ENTRY_BYTES_MAX} bytes is written in its bundle, not out of line",
                bytes.len()
            )),
        ));
    }
    Ok(bytes)
}

/// The checkpoints key rotations took effect at, as a tile verifier meets them: the
/// `rotation/<seq>` file of each `KeyRotated` entry is read when the entry is, and checked
/// (signature by the key in force, size, head, root) when the entries it covers have been
/// read; then the rotation is in force.
#[derive(Default)]
struct RotationCheckpoints {
    /// The checkpoint the rotations read so far take effect at: its size and note.
    awaited: Option<(u64, Vec<u8>)>,
    /// The size of the last one checked.
    checked: Option<u64>,
}

impl RotationCheckpoints {
    /// After entry `seq` (`entry`, verified) of a tree of `size`: reads the rotation file of
    /// a `KeyRotated` entry, and checks the awaited checkpoint once its entries are read.
    fn after_entry(
        &mut self,
        get: &mut Get<'_>,
        verifier: &mut crate::verify::Verifier,
        seq: u64,
        entry: &[u8],
        size: u64,
        sink: &mut dyn FnMut(crate::bundle::Verified<'_>) -> Result<(), String>,
    ) -> Result<(), crate::verify::VerifyError> {
        use crate::verify::{Failure, Location, VerifyError};
        let bad = |why: String| VerifyError::new(Location::Seq(seq), Failure::Tiles(why));
        let rotates = crate::entry::EntryRef::parse(entry)
            .is_ok_and(|e| e.header.kind == crate::event::Kind::KeyRotated);
        if rotates {
            let path = rotation_path(seq);
            let note = get(&path, Location::Seq(seq))?;
            match &self.awaited {
                // Rotations before one checkpoint take effect at that one checkpoint.
                Some((at, first)) => {
                    if note != *first {
                        return Err(bad(format!(
                            "{path} is not the checkpoint of size {at} that the rotation before it takes effect at; rotations before one checkpoint take effect at the same one"
                        )));
                    }
                }
                None => {
                    let stated = crate::checkpoint::parse_note(&note)
                        .map_err(|e| bad(format!("{path}: {e}")))?
                        .checkpoint
                        .size;
                    if stated <= seq || stated > size {
                        return Err(bad(format!(
                            "{path} states size {stated}; the checkpoint a rotation at seq {seq} takes effect at covers it (size > {seq}) and is published (size ≤ {size})"
                        )));
                    }
                    self.awaited = Some((stated, note));
                }
            }
        }
        if let Some((at, note)) = self.awaited.take_if(|(at, _)| *at == seq + 1) {
            verifier.checkpoint(&note)?;
            sink(crate::bundle::Verified::Checkpoint(&note))
                .map_err(|e| VerifyError::new(Location::Checkpoint(at), Failure::Store(e)))?;
            self.checked = Some(at);
        }
        Ok(())
    }

    /// Checks the published `checkpoint` of the tree of `size` once every entry is read:
    /// the key in force signs it, as any checkpoint; if a rotation took effect at this very
    /// size, it is that checkpoint (maybe with witnesses' lines) and the key before signs it.
    fn published(
        &self,
        verifier: &mut crate::verify::Verifier,
        note: &[u8],
        size: u64,
        sink: &mut dyn FnMut(crate::bundle::Verified<'_>) -> Result<(), String>,
    ) -> Result<(), crate::verify::VerifyError> {
        use crate::verify::{Failure, Location, VerifyError};
        if self.checked == Some(size) {
            verifier.same_checkpoint(note)?;
        } else {
            verifier.checkpoint(note)?;
            sink(crate::bundle::Verified::Checkpoint(note))
                .map_err(|e| VerifyError::new(Location::Checkpoint(size), Failure::Store(e)))?;
        }
        Ok(())
    }
}

/// [`verify`], handing each entry and checkpoint (those key rotations took effect at, then
/// the published one) to `sink` once it has verified and before the tiles are compared:
/// what the sink received counts only if this returns `Ok` (`fleet-ledger import --tiles`
/// writes a temporary database it discards otherwise). A sink error stops the run, reported
/// there.
pub fn verify_into(
    fetch: &mut Fetch<'_>,
    pinned: crate::keys::PublicKey,
    witnesses: &crate::witness::WitnessPolicy,
    progress: &mut dyn FnMut(u64),
    sink: &mut dyn FnMut(crate::bundle::Verified<'_>) -> Result<(), String>,
) -> Result<TilesVerified, crate::verify::VerifyError> {
    use crate::merkle::reference_root;
    use crate::verify::{Failure, Location, Verifier, VerifyError};
    let mut files = 0u64;
    let mut get = |path: &str, at: Location| -> Result<Vec<u8>, VerifyError> {
        files += 1;
        fetch(path)
            .map_err(|e| VerifyError::new(at, Failure::Tiles(format!("{path}: {e}"))))?
            .ok_or_else(|| VerifyError::new(at, Failure::Tiles(format!("{path} is missing"))))
    };
    let note = get("checkpoint", Location::Log)?;
    let size = crate::checkpoint::parse_note(&note)
        .map_err(|e| VerifyError::new(Location::Log, e))?
        .checkpoint
        .size;
    let tree = TreeHash::Sha256;
    let mut verifier = Verifier::new(pinned);
    let mut rotations = RotationCheckpoints::default();
    // Hashes recomputed from the entries, waiting to fill a tile of each level ≥ 1; and how
    // many full tiles of each level were compared.
    let mut pending: Vec<Vec<Hash>> = Vec::new();
    let mut full: Vec<u64> = Vec::new();
    let mismatch = |path: &str, at: u64| {
        VerifyError::new(
            Location::Seq(at),
            Failure::Tiles(format!("{path} is not the hashes of the entries")),
        )
    };
    let bundles = size.div_ceil(TILE_WIDTH);
    for b in 0..bundles {
        let width = (size - b * TILE_WIDTH).min(TILE_WIDTH);
        let first = b * TILE_WIDTH;
        let bundle_tile = Tile {
            level: None,
            index: b,
            width,
        };
        let path = bundle_tile.path();
        let bytes = get(&path, Location::Seq(first))?;
        let entries = split_bundle(&bytes, width).ok_or_else(|| {
            VerifyError::new(
                Location::Seq(first),
                Failure::Tiles(format!("{path} is not a bundle of {width} entries")),
            )
        })?;
        let mut leaves = Vec::with_capacity(width as usize);
        for (i, e) in entries.iter().enumerate() {
            let seq = first + i as u64;
            let large;
            let entry: &[u8] = if e.is_empty() {
                large = out_of_line(&mut get, seq)?;
                &large
            } else {
                e
            };
            verifier.entry(entry)?;
            sink(crate::bundle::Verified::Entry(entry))
                .map_err(|e| VerifyError::new(Location::Seq(seq), Failure::Store(e)))?;
            rotations.after_entry(&mut get, &mut verifier, seq, entry, size, sink)?;
            leaves.push(tree.leaf(entry));
        }
        progress(first + width);
        let level0 = Tile {
            level: Some(0),
            index: b,
            width,
        };
        let tile = get(&level0.path(), Location::Seq(first))?;
        if tile != leaves.iter().flat_map(|h| h.0).collect::<Vec<u8>>() {
            return Err(mismatch(&level0.path(), first));
        }
        if width < TILE_WIDTH {
            break;
        }
        // A full tile's root is one hash of the level above; a level that fills a tile is
        // compared and carried up.
        let mut carry = reference_root(tree, &leaves);
        for level in 1u8.. {
            let l = usize::from(level) - 1;
            if pending.len() <= l {
                pending.push(Vec::new());
                full.push(0);
            }
            pending[l].push(carry);
            if pending[l].len() < TILE_WIDTH as usize {
                break;
            }
            let t = Tile {
                level: Some(level),
                index: full[l],
                width: TILE_WIDTH,
            };
            let got = get(&t.path(), Location::Seq(t.first_leaf()))?;
            if got != pending[l].iter().flat_map(|h| h.0).collect::<Vec<u8>>() {
                return Err(mismatch(&t.path(), t.first_leaf()));
            }
            carry = reference_root(tree, &pending[l]);
            pending[l].clear();
            full[l] += 1;
        }
    }
    // The partial tiles of the levels above.
    for (l, hashes) in pending.iter().enumerate() {
        if hashes.is_empty() {
            continue;
        }
        let t = Tile {
            level: Some(l as u8 + 1),
            index: full[l],
            width: hashes.len() as u64,
        };
        let got = get(&t.path(), Location::Seq(t.first_leaf()))?;
        if got != hashes.iter().flat_map(|h| h.0).collect::<Vec<u8>>() {
            return Err(mismatch(&t.path(), t.first_leaf()));
        }
    }
    rotations.published(&mut verifier, &note, size, sink)?;
    let cosignatures = cosigned(&note, size, witnesses)?;
    Ok(TilesVerified {
        log: verifier.finish()?,
        cosignatures,
        note: String::from_utf8_lossy(&note).into_owned(),
        files,
    })
}

/// What an auditor keeps between two tile verifications: the last checkpoint verified and
/// the log's key chain then in force (genesis first), as text. `verify --tiles --since FILE`
/// reads and rewrites it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TilesState {
    /// `fleet-ledger-tiles-state/v1`.
    pub format: String,
    /// The signed note of the last checkpoint verified.
    pub checkpoint: String,
    /// The key chain in force for it, verifier key texts, genesis first.
    pub keys: Vec<String>,
}

/// [`TilesState::format`].
pub const STATE_FORMAT: &str = "fleet-ledger-tiles-state/v1";

impl TilesState {
    /// The state after a verification.
    pub fn of(v: &TilesVerified) -> TilesState {
        TilesState {
            format: STATE_FORMAT.into(),
            checkpoint: v.note.clone(),
            keys: v.log.keys().iter().map(|k| k.to_text()).collect(),
        }
    }
}

/// The tree's nodes as published tiles of a tree of `size` give them (fetched once each).
struct TileNodes<'a, 'f> {
    size: u64,
    fetch: std::cell::RefCell<&'a mut Fetch<'f>>,
    cache: std::cell::RefCell<std::collections::HashMap<String, Vec<u8>>>,
    files: std::cell::Cell<u64>,
}

impl NodeSource for TileNodes<'_, '_> {
    type Error = String;
    fn tree(&self) -> TreeHash {
        TreeHash::Sha256
    }
    fn perfect(&self, level: u8, index: u64) -> Result<Hash, String> {
        let (l, r) = (
            u32::from(level) / TILE_HEIGHT,
            u32::from(level) % TILE_HEIGHT,
        );
        let base = index << r;
        let (t, off) = (base / TILE_WIDTH, (base % TILE_WIDTH) as usize);
        let nodes = self.size >> (TILE_HEIGHT * l);
        let width = if (t + 1) * TILE_WIDTH <= nodes {
            TILE_WIDTH
        } else {
            nodes % TILE_WIDTH
        };
        let tile = Tile {
            level: Some(l as u8),
            index: t,
            width,
        };
        let path = tile.path();
        let mut cache = self.cache.borrow_mut();
        if !cache.contains_key(&path) {
            self.files.set(self.files.get() + 1);
            let bytes =
                (self.fetch.borrow_mut())(&path)?.ok_or_else(|| format!("{path} is missing"))?;
            if bytes.len() as u64 != width * 32 {
                return Err(format!(
                    "{path} is {} bytes, not {}",
                    bytes.len(),
                    width * 32
                ));
            }
            cache.insert(path.clone(), bytes);
        }
        let bytes = &cache[&path];
        let n = 1usize << r;
        if off + n > width as usize {
            return Err(format!("{path} does not hold node ({level}, {index})"));
        }
        let hashes: Vec<Hash> = bytes[off * 32..(off + n) * 32]
            .chunks_exact(32)
            .map(|c| Hash(c.try_into().expect("32 bytes")))
            .collect();
        Ok(crate::merkle::reference_root(TreeHash::Sha256, &hashes))
    }
}

/// Verifies published tiles from the auditor's last trusted checkpoint (`state`) to the
/// latest: the tree the tiles give for the old size must have the old signed root (the old
/// checkpoint is a prefix of the new log), every new entry goes through the log verifier
/// (chain from the old head, rotations), and the new checkpoint's root is the old tree plus
/// the new entries. Costs O(new entries + log n) reads.
pub fn verify_since(
    fetch: &mut Fetch<'_>,
    state: &TilesState,
    witnesses: &crate::witness::WitnessPolicy,
    progress: &mut dyn FnMut(u64),
) -> Result<TilesVerified, crate::verify::VerifyError> {
    use crate::checkpoint::parse_note;
    use crate::verify::{Failure, Location, Verifier, VerifyError};
    let bad = |at: Location, why: String| VerifyError::new(at, Failure::Tiles(why));
    if state.format != STATE_FORMAT {
        return Err(bad(
            Location::Log,
            format!(
                "state file format {:?}, expected {STATE_FORMAT:?}",
                state.format
            ),
        ));
    }
    let keys = state
        .keys
        .iter()
        .map(|k| crate::keys::PublicKey::from_text(k))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(Location::Log, format!("state file key: {e}")))?;
    let old_note =
        parse_note(state.checkpoint.as_bytes()).map_err(|e| VerifyError::new(Location::Log, e))?;
    // The state file is the auditor's, but a changed one must not pass: its checkpoint must
    // still verify with a key of its chain (the last, or the one before the rotations it
    // covers when a rotation took effect at it).
    if keys.is_empty() {
        return Err(bad(Location::Log, "state file has no keys".into()));
    }
    let signer = keys
        .iter()
        .rev()
        .find(|k| old_note.verify(k).is_ok())
        .cloned()
        .ok_or_else(|| {
            let last = keys.last().expect("not empty");
            let e = old_note
                .verify(last)
                .err()
                .unwrap_or(crate::checkpoint::NoteError::NotText);
            VerifyError::new(Location::Checkpoint(old_note.checkpoint.size), e)
        })?;
    let old = old_note.checkpoint;
    let mut files = 1u64;
    let note = fetch("checkpoint")
        .map_err(|e| bad(Location::Log, format!("checkpoint: {e}")))?
        .ok_or_else(|| bad(Location::Log, "checkpoint is missing".into()))?;
    let new = parse_note(&note)
        .map_err(|e| VerifyError::new(Location::Log, e))?
        .checkpoint;
    if new.origin != old.origin {
        return Err(VerifyError::new(
            Location::Log,
            Failure::Origin {
                expected: old.origin,
                found: new.origin,
            },
        ));
    }
    if new.size < old.size {
        return Err(VerifyError::new(
            Location::Checkpoint(new.size),
            Failure::CheckpointNotIncreasing {
                stated: new.size,
                previous: old.size,
            },
        ));
    }
    let note_text = String::from_utf8(note.clone())
        .map_err(|_| bad(Location::Log, "checkpoint is not text".into()))?;
    let nodes = TileNodes {
        size: new.size,
        fetch: std::cell::RefCell::new(fetch),
        cache: Default::default(),
        files: std::cell::Cell::new(0),
    };
    let frontier = crate::merkle::Frontier::from_source(&nodes, old.size)
        .map_err(|e| bad(Location::Checkpoint(old.size), e))?;
    // The new entries, from the bundles of the new tree; the old tree's last entry gives the
    // time the next may not precede.
    let fetch = nodes.fetch.into_inner();
    files += nodes.files.get();
    let mut get = |path: &str, at: Location| -> Result<Vec<u8>, VerifyError> {
        files += 1;
        fetch(path)
            .map_err(|e| bad(at, format!("{path}: {e}")))?
            .ok_or_else(|| bad(at, format!("{path} is missing")))
    };
    let mut verifier: Option<Verifier> = None;
    let mut rotations = RotationCheckpoints::default();
    let first_bundle = (old.size - 1) / TILE_WIDTH;
    for b in first_bundle..new.size.div_ceil(TILE_WIDTH) {
        let width = (new.size - b * TILE_WIDTH).min(TILE_WIDTH);
        let first = b * TILE_WIDTH;
        let tile = Tile {
            level: None,
            index: b,
            width,
        };
        let path = tile.path();
        let bytes = get(&path, Location::Seq(first))?;
        let entries = split_bundle(&bytes, width).ok_or_else(|| {
            bad(
                Location::Seq(first),
                format!("{path} is not a bundle of {width} entries"),
            )
        })?;
        for (i, e) in entries.iter().enumerate() {
            let seq = first + i as u64;
            if seq + 1 < old.size {
                continue;
            }
            let large;
            let entry: &[u8] = if e.is_empty() {
                large = out_of_line(&mut get, seq)?;
                &large
            } else {
                e
            };
            match verifier.as_mut() {
                None => {
                    // Entry old.size − 1: the trusted head names it, and its time bounds the
                    // next.
                    let parsed = crate::entry::EntryRef::parse(entry)
                        .map_err(|e| VerifyError::new(Location::Seq(seq), e))?;
                    if parsed.hash() != old.head {
                        return Err(bad(
                            Location::Seq(seq),
                            "the last entry of the trusted checkpoint is not the one published"
                                .into(),
                        ));
                    }
                    verifier = Some(Verifier::resume(
                        keys.clone(),
                        signer.clone(),
                        old.clone(),
                        frontier.clone(),
                        parsed.header.recorded_at_us,
                    )?);
                }
                Some(v) => {
                    v.entry(entry)?;
                    rotations.after_entry(&mut get, v, seq, entry, new.size, &mut |_| Ok(()))?;
                }
            }
        }
        progress(first + width);
    }
    let mut verifier = verifier.ok_or_else(|| bad(Location::Log, "no entries read".into()))?;
    if new.size == old.size && new.root != old.root {
        return Err(bad(
            Location::Checkpoint(new.size),
            "the log forked: the same size with another root".into(),
        ));
    }
    // At the old size, the published checkpoint is the trusted one (maybe with more
    // cosignatures): the same body, signed by the key that signed it.
    rotations.checked = rotations.checked.or(Some(old.size));
    rotations.published(&mut verifier, &note, new.size, &mut |_| Ok(()))?;
    let cosignatures = cosigned(&note, new.size, witnesses)?;
    Ok(TilesVerified {
        log: verifier.finish()?,
        cosignatures,
        note: note_text,
        files,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_c2sp_tlog_tiles() {
        assert_eq!(index_path(0), "000");
        assert_eq!(index_path(1234067), "x001/x234/067");
        assert_eq!(index_path(1000), "x001/000");
        let t = Tile {
            level: Some(0),
            index: 1234067,
            width: 256,
        };
        assert_eq!(t.path(), "tile/0/x001/x234/067");
        let p = Tile {
            level: None,
            index: 5,
            width: 17,
        };
        assert_eq!(p.path(), "tile/entries/005.p/17");
        assert_eq!(large_entry_path(70_000), "entry/x070/000");
    }

    /// The specification's example: a tree of 70,000 has 273 full level-0 tiles, a partial
    /// one of width 112, one full level-1 tile, a partial one of width 17 and a partial
    /// level-2 tile of width 1; 256 has a full level-0 tile and a level-1 tile of width 1.
    #[test]
    fn the_tiles_of_a_tree_are_the_specifications() {
        let hash_tiles = |size| -> Vec<Tile> {
            tiles_of(size)
                .into_iter()
                .filter(|t| t.level.is_some())
                .collect()
        };
        let t = hash_tiles(70_000);
        let count = |level: u8, full: bool| {
            t.iter()
                .filter(|x| x.level == Some(level) && x.is_full() == full)
                .count()
        };
        assert_eq!(
            (count(0, true), count(1, true), count(1, false)),
            (273, 1, 1)
        );
        assert!(t.contains(&Tile {
            level: Some(0),
            index: 273,
            width: 112
        }));
        assert!(t.contains(&Tile {
            level: Some(1),
            index: 1,
            width: 17
        }));
        assert!(t.contains(&Tile {
            level: Some(2),
            index: 0,
            width: 1
        }));
        assert_eq!(t.len(), 273 + 1 + 1 + 1 + 1);
        assert_eq!(
            hash_tiles(256),
            vec![
                Tile {
                    level: Some(0),
                    index: 0,
                    width: 256
                },
                Tile {
                    level: Some(1),
                    index: 0,
                    width: 1
                }
            ]
        );
        assert!(tiles_of(0).is_empty());
    }

    /// Publishing step by step writes, over all steps, every tile the final tree has, and
    /// nothing twice except partial tiles that grew.
    #[test]
    fn incremental_publication_covers_the_tree() {
        let mut written = std::collections::BTreeSet::new();
        let mut published = 0;
        for size in [1u64, 3, 255, 256, 257, 600, 65_536, 65_537, 70_000] {
            for t in tiles_between(published, size) {
                assert!(written.insert(t), "{t:?} twice");
            }
            for t in tiles_of(size) {
                assert!(written.contains(&t), "{t:?} of size {size} missing");
            }
            published = size;
        }
        // Nothing new when nothing grew.
        assert!(tiles_between(70_000, 70_000).is_empty());
    }

    #[test]
    fn entry_bundles_round_trip_with_large_entries_out_of_line() {
        let big = vec![7u8; 70_000];
        let mut b = Vec::new();
        assert!(bundle_entry(&mut b, b"first"));
        assert!(!bundle_entry(&mut b, &big));
        assert!(bundle_entry(&mut b, b"third"));
        let parts = split_bundle(&b, 3).unwrap();
        assert_eq!(parts, vec![&b"first"[..], &[][..], &b"third"[..]]);
        assert!(split_bundle(&b, 2).is_none());
        assert!(split_bundle(&b[..b.len() - 1], 3).is_none());
    }
}
