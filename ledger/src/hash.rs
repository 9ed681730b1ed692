//! The format's hashes, 32 bytes each, with RFC 6962's leaf/node domain separation.
//!
//! - The **entry hash**, which chains entries (`prev_hash`) and which checkpoints name as
//!   their head, is `blake3(0x00 || stored entry bytes)` in every format version.
//! - The **Merkle tree** hashes with the function its log's format version fixes
//!   ([`TreeHash`]): version 1 with blake3 (its leaf hash *is* the entry hash), version 2 with
//!   SHA-256 exactly as RFC 6962 §2.1 (leaf `SHA-256(0x00 || entry bytes)`, node
//!   `SHA-256(0x01 || left || right)`), so standard transparency-log tools can check it.
//!
//! The distinct one-byte prefixes keep a leaf from ever being read as a node (the
//! second-preimage attack on Merkle trees).

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

/// Length of every hash in the format.
pub const HASH_BYTES: usize = 32;

/// Prefix of a leaf (entry) hash.
pub const LEAF_PREFIX: u8 = 0x00;
/// Prefix of an interior node hash.
pub const NODE_PREFIX: u8 = 0x01;

/// A blake3 digest.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Hash(pub [u8; HASH_BYTES]);

impl Hash {
    /// All zeroes: the `prev_hash` of entry 0.
    pub const ZERO: Hash = Hash([0; HASH_BYTES]);

    /// The bytes.
    pub fn as_bytes(&self) -> &[u8; HASH_BYTES] {
        &self.0
    }

    /// Standard base64 with padding, as in checkpoints.
    pub fn to_base64(&self) -> String {
        B64.encode(self.0)
    }

    /// Parses standard base64 of exactly 32 bytes.
    pub fn from_base64(s: &str) -> Option<Hash> {
        let bytes = B64.decode(s).ok()?;
        Some(Hash(bytes.try_into().ok()?))
    }

    /// Lowercase hex, for humans.
    pub fn to_hex(&self) -> String {
        blake3::Hash::from_bytes(self.0).to_hex().to_string()
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash({})", self.to_hex())
    }
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// Leaf hash of a stored entry: `blake3(0x00 || bytes)`. Always over the exact stored bytes.
pub fn leaf_hash(entry_bytes: &[u8]) -> Hash {
    let mut h = blake3::Hasher::new();
    h.update(&[LEAF_PREFIX]);
    h.update(entry_bytes);
    Hash(*h.finalize().as_bytes())
}

/// Interior node hash: `blake3(0x01 || left || right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut buf = [0u8; 1 + 2 * HASH_BYTES];
    buf[0] = NODE_PREFIX;
    buf[1..33].copy_from_slice(&left.0);
    buf[33..].copy_from_slice(&right.0);
    Hash(*blake3::hash(&buf).as_bytes())
}

/// Root of the empty tree: `blake3("")` (RFC 9162: MTH({}) = HASH()).
pub fn empty_root() -> Hash {
    Hash(*blake3::hash(&[]).as_bytes())
}

/// The Merkle tree's hash function, fixed by the log's format version (the version byte of
/// its entries, docs/FORMAT.md §2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TreeHash {
    /// Format version 1: blake3, the leaf hash being the entry hash.
    Blake3,
    /// Format version 2: SHA-256 as RFC 6962 §2.1 (and C2SP tlog-tiles) hash.
    Sha256,
}

impl TreeHash {
    /// The tree hash of an entry format version, if it is one this build reads.
    pub fn of_version(version: u8) -> Option<TreeHash> {
        match version {
            1 => Some(TreeHash::Blake3),
            2 => Some(TreeHash::Sha256),
            _ => None,
        }
    }

    /// The entry format version that uses this tree hash.
    pub fn version(self) -> u8 {
        match self {
            TreeHash::Blake3 => 1,
            TreeHash::Sha256 => 2,
        }
    }

    /// Leaf hash of a stored entry.
    pub fn leaf(self, entry_bytes: &[u8]) -> Hash {
        match self {
            TreeHash::Blake3 => leaf_hash(entry_bytes),
            TreeHash::Sha256 => {
                use sha2::Digest as _;
                let mut h = sha2::Sha256::new();
                h.update([LEAF_PREFIX]);
                h.update(entry_bytes);
                Hash(h.finalize().into())
            }
        }
    }

    /// Interior node hash.
    pub fn node(self, left: &Hash, right: &Hash) -> Hash {
        match self {
            TreeHash::Blake3 => node_hash(left, right),
            TreeHash::Sha256 => {
                use sha2::Digest as _;
                let mut buf = [0u8; 1 + 2 * HASH_BYTES];
                buf[0] = NODE_PREFIX;
                buf[1..33].copy_from_slice(&left.0);
                buf[33..].copy_from_slice(&right.0);
                Hash(sha2::Sha256::digest(buf).into())
            }
        }
    }

    /// Root of the empty tree: the hash of the empty string.
    pub fn empty(self) -> Hash {
        match self {
            TreeHash::Blake3 => empty_root(),
            TreeHash::Sha256 => {
                use sha2::Digest as _;
                Hash(sha2::Sha256::digest([]).into())
            }
        }
    }
}
