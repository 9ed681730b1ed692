//! The stored entry: a fixed 55-byte header followed by the payload.
//!
//! ```text
//! offset size  field
//!      0    1  format version (1 or 2: which hash the log's Merkle tree uses)
//!      1    8  seq, u64 big-endian (0 for the genesis entry, then +1 each)
//!      9    8  recorded_at_us, i64 big-endian: CP time, µs since the Unix epoch
//!     17    2  kind, u16 big-endian
//!     19   32  prev_hash: hash of entry seq-1 (all zero for seq 0)
//!     51    4  payload_len, u32 big-endian
//!     55    n  payload: bincode of the kind's struct
//! ```
//!
//! The entry hash is [`leaf_hash`] over exactly these bytes; the Merkle leaf hash is the
//! log's [`TreeHash`] leaf over the same bytes. Readers hash what is stored and never
//! re-encode: an entry's identity is its bytes. Every entry of a log has the version of its
//! genesis entry.

use thiserror::Error;

use crate::event::{DecodeError, Event, Kind};
use crate::hash::{HASH_BYTES, Hash, TreeHash, leaf_hash};

/// The format version new logs are written in (2: an RFC 6962 SHA-256 tree).
pub const FORMAT_VERSION: u8 = 2;
/// Every format version this build reads.
pub const FORMAT_VERSIONS: [u8; 2] = [1, 2];
/// Size of the fixed header.
pub const HEADER_BYTES: usize = 55;
/// Largest payload an entry may carry: the event encoding's own bound (`event` decodes no
/// more), which the header's length field is checked against.
pub use crate::event::PAYLOAD_BYTES_MAX;

/// The decoded fixed header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Format version.
    pub version: u8,
    /// Position in the log.
    pub seq: u64,
    /// CP time when the entry was appended, µs since the Unix epoch.
    pub recorded_at_us: i64,
    /// Payload kind.
    pub kind: Kind,
    /// Hash of the previous entry.
    pub prev_hash: Hash,
    /// Payload length in bytes.
    pub payload_len: u32,
}

/// Why bytes are not a well-formed entry.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum EntryFormatError {
    /// Fewer bytes than a header.
    #[error("entry is {len} bytes, shorter than the {HEADER_BYTES}-byte header")]
    TooShort {
        /// Bytes present.
        len: usize,
    },
    /// A format version this build does not read.
    #[error("entry format version {0} is not supported (this build reads versions 1 and 2)")]
    UnsupportedVersion(u8),
    /// The header's payload length disagrees with the bytes present.
    #[error("header states a {stated}-byte payload but {actual} bytes follow the header")]
    LengthMismatch {
        /// payload_len field.
        stated: u32,
        /// Bytes actually present.
        actual: usize,
    },
    /// Larger than [`PAYLOAD_BYTES_MAX`].
    #[error("payload of {0} bytes exceeds the {PAYLOAD_BYTES_MAX}-byte limit")]
    PayloadTooLarge(usize),
}

/// Encodes an entry of format `version`. Panics only on a payload over
/// [`PAYLOAD_BYTES_MAX`], which callers check first (the store refuses such events with an
/// error), or on a version this build does not write.
pub fn encode(
    version: u8,
    seq: u64,
    recorded_at_us: i64,
    kind: Kind,
    prev_hash: &Hash,
    payload: &[u8],
) -> Vec<u8> {
    assert!(payload.len() <= PAYLOAD_BYTES_MAX, "payload over the limit");
    assert!(FORMAT_VERSIONS.contains(&version), "unknown format version");
    let mut out = Vec::with_capacity(HEADER_BYTES + payload.len());
    out.push(version);
    out.extend_from_slice(&seq.to_be_bytes());
    out.extend_from_slice(&recorded_at_us.to_be_bytes());
    out.extend_from_slice(&kind.0.to_be_bytes());
    out.extend_from_slice(&prev_hash.0);
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// A parsed view of stored entry bytes. Shape-checked; nothing about its place in a chain.
#[derive(Clone, Copy, Debug)]
pub struct EntryRef<'a> {
    /// The header fields.
    pub header: Header,
    /// The payload bytes.
    pub payload: &'a [u8],
    /// All stored bytes, header included.
    pub bytes: &'a [u8],
}

impl<'a> EntryRef<'a> {
    /// Parses stored bytes, checking the version and lengths.
    pub fn parse(bytes: &'a [u8]) -> Result<EntryRef<'a>, EntryFormatError> {
        if bytes.len() < HEADER_BYTES {
            return Err(EntryFormatError::TooShort { len: bytes.len() });
        }
        let version = bytes[0];
        if !FORMAT_VERSIONS.contains(&version) {
            return Err(EntryFormatError::UnsupportedVersion(version));
        }
        let u64_at = |o: usize| u64::from_be_bytes(bytes[o..o + 8].try_into().expect("8 bytes"));
        let seq = u64_at(1);
        let recorded_at_us = u64_at(9) as i64;
        let kind = Kind(u16::from_be_bytes([bytes[17], bytes[18]]));
        let prev_hash = Hash(bytes[19..19 + HASH_BYTES].try_into().expect("32 bytes"));
        let payload_len = u32::from_be_bytes(bytes[51..55].try_into().expect("4 bytes"));
        let payload = &bytes[HEADER_BYTES..];
        if payload.len() > PAYLOAD_BYTES_MAX {
            return Err(EntryFormatError::PayloadTooLarge(payload.len()));
        }
        if payload.len() != payload_len as usize {
            return Err(EntryFormatError::LengthMismatch {
                stated: payload_len,
                actual: payload.len(),
            });
        }
        Ok(EntryRef {
            header: Header {
                version,
                seq,
                recorded_at_us,
                kind,
                prev_hash,
                payload_len,
            },
            payload,
            bytes,
        })
    }

    /// The entry hash of the stored bytes (what the next entry's `prev_hash` names).
    pub fn hash(&self) -> Hash {
        leaf_hash(self.bytes)
    }

    /// The hash function of its log's Merkle tree.
    pub fn tree(&self) -> TreeHash {
        TreeHash::of_version(self.header.version).expect("parse checked the version")
    }

    /// Its Merkle leaf hash.
    pub fn leaf(&self) -> Hash {
        self.tree().leaf(self.bytes)
    }

    /// Decodes the payload.
    pub fn event(&self) -> Result<Event, DecodeError> {
        Event::decode(self.header.kind, self.payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Golden bytes of an entry header (docs/FORMAT.md shows the same vector).
    #[test]
    fn golden_entry_bytes_and_hash() {
        let bytes = encode(
            1,
            1,
            1_700_000_000_000_000,
            Kind(3),
            &Hash([0xab; 32]),
            b"\x01a\x01b",
        );
        let mut want = vec![1];
        want.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 1]);
        want.extend_from_slice(&[0x00, 0x06, 0x0a, 0x24, 0x18, 0x1e, 0x40, 0x00]);
        want.extend_from_slice(&[0, 3]);
        want.extend_from_slice(&[0xab; 32]);
        want.extend_from_slice(&[0, 0, 0, 4]);
        want.extend_from_slice(b"\x01a\x01b");
        assert_eq!(bytes, want);
        let parsed = EntryRef::parse(&bytes).unwrap();
        assert_eq!(parsed.header.seq, 1);
        assert_eq!(parsed.header.recorded_at_us, 1_700_000_000_000_000);
        assert_eq!(parsed.header.kind, Kind(3));
        assert_eq!(
            parsed.hash().to_hex(),
            "d7fe4110311b017e63d239518970d52b16653d77ece7a5c6fc28a81a2a915e38",
            "entry hash known answer (cross-checked with the Python blake3 package)"
        );
    }

    #[test]
    fn malformed_entries_are_refused() {
        let good = encode(1, 0, 0, Kind(1), &Hash::ZERO, b"xyz");
        assert_eq!(
            EntryRef::parse(&good[..10]).unwrap_err(),
            EntryFormatError::TooShort { len: 10 }
        );
        let mut v3 = good.clone();
        v3[0] = 3;
        assert_eq!(
            EntryRef::parse(&v3).unwrap_err(),
            EntryFormatError::UnsupportedVersion(3)
        );
        let mut short = good.clone();
        short.pop();
        assert!(matches!(
            EntryRef::parse(&short).unwrap_err(),
            EntryFormatError::LengthMismatch {
                stated: 3,
                actual: 2
            }
        ));
    }
}
