//! Export bundles: one portable file that an auditor verifies with nothing but the file and
//! the log's genesis public key.
//!
//! ```text
//! magic    8 bytes  "FLBUNDLE"
//! version  2 bytes  u16 BE = 1
//! records  tag (1 byte) | length (u32 BE) | body
//!   0x01 KEY         verifier key text of a key in force, genesis key first, then each
//!                    rotation's key in log order; all KEY records precede any entry
//!   0x02 ENTRY       stored entry bytes, in seq order from 0
//!   0x03 CHECKPOINT  signed note, placed right after the last entry it covers
//!   0xFF END         entries u64 BE | checkpoints u64 BE | keys u32 BE |
//!                    blake3 of every byte of the file before this record's tag (32 bytes)
//! end of file right after END
//! ```
//!
//! Entries are covered by the chain and the signed roots, checkpoints by their signatures, KEY
//! records by the log's own key chain, and every byte (framing included) by the END digest:
//! flipping any byte anywhere makes verification fail. Reading and verifying stream in
//! constant memory.

use std::io::{self, Read, Write};

use crate::checkpoint::NOTE_BYTES_MAX;
use crate::entry::{HEADER_BYTES, PAYLOAD_BYTES_MAX};
use crate::keys::PublicKey;
use crate::read::{ReadError, Stored};
use crate::verify::{Failure, Location, VerifiedLog, Verifier, VerifyError};

/// First bytes of every bundle.
pub const MAGIC: &[u8; 8] = b"FLBUNDLE";
/// Bundle layout version.
pub const BUNDLE_VERSION: u16 = 1;
/// Record tags.
pub const TAG_KEY: u8 = 0x01;
/// An entry record.
pub const TAG_ENTRY: u8 = 0x02;
/// A checkpoint record.
pub const TAG_CHECKPOINT: u8 = 0x03;
/// The trailer.
pub const TAG_END: u8 = 0xFF;
/// Length of the END body.
pub const END_BODY_BYTES: usize = 8 + 8 + 4 + 32;
const KEY_BYTES_MAX: usize = 1024;

/// Writes a bundle. Callers feed keys, then entries and checkpoints in log order.
#[derive(Debug)]
pub struct BundleWriter<W: Write> {
    out: W,
    digest: blake3::Hasher,
    entries: u64,
    checkpoints: u64,
    keys: u32,
}

impl<W: Write> BundleWriter<W> {
    /// Starts a bundle (writes the magic and version).
    pub fn new(mut out: W) -> io::Result<BundleWriter<W>> {
        let mut digest = blake3::Hasher::new();
        let mut head = MAGIC.to_vec();
        head.extend_from_slice(&BUNDLE_VERSION.to_be_bytes());
        out.write_all(&head)?;
        digest.update(&head);
        Ok(BundleWriter {
            out,
            digest,
            entries: 0,
            checkpoints: 0,
            keys: 0,
        })
    }

    fn record(&mut self, tag: u8, body: &[u8]) -> io::Result<()> {
        let len = u32::try_from(body.len()).map_err(|_| io::Error::other("record over 4 GiB"))?;
        let mut head = [0u8; 5];
        head[0] = tag;
        head[1..].copy_from_slice(&len.to_be_bytes());
        self.out.write_all(&head)?;
        self.out.write_all(body)?;
        self.digest.update(&head);
        self.digest.update(body);
        Ok(())
    }

    /// A key in force.
    pub fn key(&mut self, key: &PublicKey) -> io::Result<()> {
        self.keys += 1;
        self.record(TAG_KEY, key.to_text().as_bytes())
    }

    /// An entry's stored bytes.
    pub fn entry(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.entries += 1;
        self.record(TAG_ENTRY, bytes)
    }

    /// A signed checkpoint note.
    pub fn checkpoint(&mut self, note: &[u8]) -> io::Result<()> {
        self.checkpoints += 1;
        self.record(TAG_CHECKPOINT, note)
    }

    /// Writes the END record and returns the writer.
    pub fn finish(mut self) -> io::Result<W> {
        let digest = *self.digest.finalize().as_bytes();
        let mut body = Vec::with_capacity(END_BODY_BYTES);
        body.extend_from_slice(&self.entries.to_be_bytes());
        body.extend_from_slice(&self.checkpoints.to_be_bytes());
        body.extend_from_slice(&self.keys.to_be_bytes());
        body.extend_from_slice(&digest);
        let mut head = [0u8; 5];
        head[0] = TAG_END;
        head[1..].copy_from_slice(&(END_BODY_BYTES as u32).to_be_bytes());
        self.out.write_all(&head)?;
        self.out.write_all(&body)?;
        self.out.flush()?;
        Ok(self.out)
    }
}

/// One record read from a bundle.
#[derive(Debug, PartialEq, Eq)]
pub enum Record<'a> {
    /// KEY body.
    Key(&'a [u8]),
    /// ENTRY body.
    Entry(&'a [u8]),
    /// CHECKPOINT body.
    Checkpoint(&'a [u8]),
    /// END, verified: counts and digest matched and the file ended.
    End,
}

/// Reads bundle records, checking framing, limits, the END digest and counts.
#[derive(Debug)]
pub struct BundleReader<R: Read> {
    input: R,
    digest: blake3::Hasher,
    offset: u64,
    buf: Vec<u8>,
    entries: u64,
    checkpoints: u64,
    keys: u32,
    done: bool,
    /// Resumed mid-file ([`BundleReader::resume`]): the END digest and counts cover bytes this
    /// reader never saw, so it does not check them.
    resumed: bool,
}

fn bundle_err(offset: u64, msg: impl Into<String>) -> VerifyError {
    VerifyError::new(Location::BundleOffset(offset), Failure::Bundle(msg.into()))
}

impl<R: Read> BundleReader<R> {
    /// Opens a bundle, checking magic and version.
    pub fn new(mut input: R) -> Result<BundleReader<R>, VerifyError> {
        let mut head = [0u8; 10];
        input
            .read_exact(&mut head)
            .map_err(|e| bundle_err(0, format!("not a fleet-ledger bundle: {e}")))?;
        if &head[..8] != MAGIC {
            return Err(bundle_err(0, "not a fleet-ledger bundle (bad magic)"));
        }
        let version = u16::from_be_bytes([head[8], head[9]]);
        if version != BUNDLE_VERSION {
            return Err(bundle_err(
                8,
                format!(
                    "bundle version {version} is not supported (this build reads {BUNDLE_VERSION})"
                ),
            ));
        }
        let mut digest = blake3::Hasher::new();
        digest.update(&head);
        Ok(BundleReader {
            input,
            digest,
            offset: 10,
            buf: Vec::new(),
            entries: 0,
            checkpoints: 0,
            keys: 0,
            done: false,
            resumed: false,
        })
    }

    /// Reads on from `offset`, the start of a record that an earlier full read located
    /// ([`BundleReader::offset`]); `input` is already positioned there. For random access
    /// (replay from a snapshot). A resumed reader checks framing and limits but not the END
    /// digest and counts, which cover bytes it skipped: `verify` checks a whole bundle.
    pub fn resume(input: R, offset: u64) -> BundleReader<R> {
        BundleReader {
            input,
            digest: blake3::Hasher::new(),
            offset,
            buf: Vec::new(),
            entries: 0,
            checkpoints: 0,
            keys: 0,
            done: false,
            resumed: true,
        }
    }

    /// Byte offset of the next record.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Reads the next record. After [`Record::End`] the bundle is fully checked.
    pub fn next_record(&mut self) -> Result<Record<'_>, VerifyError> {
        if self.done {
            return Ok(Record::End);
        }
        let at = self.offset;
        let mut head = [0u8; 5];
        self.input
            .read_exact(&mut head)
            .map_err(|e| bundle_err(at, format!("bundle truncated: no END record ({e})")))?;
        let tag = head[0];
        let len = u32::from_be_bytes(head[1..].try_into().expect("4 bytes")) as usize;
        let max = match tag {
            TAG_KEY => KEY_BYTES_MAX,
            TAG_ENTRY => HEADER_BYTES + PAYLOAD_BYTES_MAX,
            TAG_CHECKPOINT => NOTE_BYTES_MAX,
            TAG_END => END_BODY_BYTES,
            other => return Err(bundle_err(at, format!("unknown record tag {other:#04x}"))),
        };
        if len > max || (tag == TAG_END && len != END_BODY_BYTES) {
            return Err(bundle_err(
                at,
                format!("record of tag {tag:#04x} has length {len}, over its limit {max}"),
            ));
        }
        self.buf.resize(len, 0);
        self.input
            .read_exact(&mut self.buf)
            .map_err(|e| bundle_err(at, format!("bundle truncated inside a record ({e})")))?;
        self.offset += 5 + len as u64;
        if tag == TAG_END && self.resumed {
            self.done = true;
            return Ok(Record::End);
        }
        if tag == TAG_END {
            let b = &self.buf;
            let entries = u64::from_be_bytes(b[0..8].try_into().expect("8"));
            let checkpoints = u64::from_be_bytes(b[8..16].try_into().expect("8"));
            let keys = u32::from_be_bytes(b[16..20].try_into().expect("4"));
            let digest: [u8; 32] = b[20..52].try_into().expect("32");
            if digest != *self.digest.finalize().as_bytes() {
                return Err(bundle_err(
                    at,
                    "END digest does not match the bundle's bytes",
                ));
            }
            if (entries, checkpoints, keys) != (self.entries, self.checkpoints, self.keys) {
                return Err(bundle_err(
                    at,
                    format!(
                        "END counts ({entries} entries, {checkpoints} checkpoints, {keys} keys) differ from the records read ({}, {}, {})",
                        self.entries, self.checkpoints, self.keys
                    ),
                ));
            }
            let mut extra = [0u8; 1];
            match self.input.read(&mut extra) {
                Ok(0) => {}
                Ok(_) => return Err(bundle_err(self.offset, "bytes after the END record")),
                Err(e) => return Err(bundle_err(self.offset, e.to_string())),
            }
            self.done = true;
            return Ok(Record::End);
        }
        self.digest.update(&head);
        self.digest.update(&self.buf);
        Ok(match tag {
            TAG_KEY => {
                self.keys += 1;
                Record::Key(&self.buf)
            }
            TAG_ENTRY => {
                self.entries += 1;
                Record::Entry(&self.buf)
            }
            _ => {
                self.checkpoints += 1;
                Record::Checkpoint(&self.buf)
            }
        })
    }
}

impl<R: Read> BundleReader<R> {
    /// Its entry records from here on, as stored (keys and checkpoints are skipped; END is
    /// checked as [`BundleReader::next_record`] checks it). `first` is the seq of the next
    /// entry: 0 from the start, or the seq an earlier read located at a resumed offset.
    pub fn entries(self, first: u64) -> BundleEntries<R> {
        BundleEntries {
            reader: self,
            next: first,
            held: None,
            held_error: None,
            done: false,
        }
    }
}

/// The entries of a bundle ([`BundleReader::entries`]); the first error ends it. Each entry
/// is handed on once the record after it is read, so that it can tell whether it ends a
/// batch ([`Stored::ends_batch`]).
#[derive(Debug)]
pub struct BundleEntries<R: Read> {
    reader: BundleReader<R>,
    next: u64,
    held: Option<Stored>,
    held_error: Option<ReadError>,
    done: bool,
}

impl<R: Read> Iterator for BundleEntries<R> {
    type Item = Result<Stored, ReadError>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.done {
            let offset = self.reader.offset();
            match self.reader.next_record() {
                Ok(Record::Entry(bytes)) => {
                    let stored = Stored::owned(self.next, offset, bytes.to_vec());
                    self.next += 1;
                    if let Some(held) = self.held.replace(stored) {
                        return Some(Ok(held));
                    }
                }
                Ok(Record::Checkpoint(_)) => {
                    if let Some(held) = &mut self.held {
                        held.set_ends_batch();
                    }
                }
                Ok(Record::Key(_)) => {}
                Ok(Record::End) => self.done = true,
                Err(e) => {
                    self.done = true;
                    // The entry read before the error first, then the error.
                    if let Some(held) = self.held.take() {
                        self.held_error = Some(e.into());
                        return Some(Ok(held));
                    }
                    return Some(Err(e.into()));
                }
            }
        }
        self.held
            .take()
            .map(Ok)
            .or_else(|| self.held_error.take().map(Err))
    }
}

/// Verifies a whole bundle against the pinned genesis key. `progress` is called with the
/// number of entries verified, every 64k entries.
pub fn verify_bundle<R: Read>(
    input: R,
    pinned: &PublicKey,
    progress: impl FnMut(u64),
) -> Result<VerifiedLog, VerifyError> {
    let keep_nothing = |_: Verified<'_>| -> Result<(), VerifyError> { Ok(()) };
    verify_bundle_into(input, pinned, progress, keep_nothing)
}

/// A record of a bundle, handed on after it verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verified<'a> {
    /// An entry that verified (chain, time, decoding), in order.
    Entry(&'a [u8]),
    /// A checkpoint that verified against the entries before it.
    Checkpoint(&'a [u8]),
}

/// [`verify_bundle`], handing each entry and checkpoint to `sink` as soon as it has verified
/// (`fleet-ledger import` writes them). The whole bundle has verified only when this
/// returns `Ok`: what the sink received must be discarded otherwise.
pub fn verify_bundle_into<R: Read, E: From<VerifyError>>(
    input: R,
    pinned: &PublicKey,
    mut progress: impl FnMut(u64),
    mut sink: impl FnMut(Verified<'_>) -> Result<(), E>,
) -> Result<VerifiedLog, E> {
    let mut reader = BundleReader::new(input)?;
    let mut verifier = Verifier::new(pinned.clone());
    // Each KEY record with its offset, and where the first record after them starts: a
    // listing that differs from the log's chain is named at the first record that differs
    // (or, for a key missing at the end, where the records after the keys start).
    let mut listed: Vec<(PublicKey, u64)> = Vec::new();
    let mut after_keys = None;
    loop {
        let at = reader.offset();
        match reader.next_record()? {
            Record::Key(text) => {
                if verifier.entries() > 0 {
                    return Err(bundle_err(at, "KEY record after the first entry").into());
                }
                // Exactly the key text: no newline, no white space (FORMAT §8).
                let key = std::str::from_utf8(text)
                    .ok()
                    .filter(|t| !t.chars().any(char::is_whitespace))
                    .and_then(|t| PublicKey::from_text(t).ok())
                    .ok_or_else(|| {
                        bundle_err(at, "KEY record is not exactly a verifier key text")
                    })?;
                if listed.is_empty() && key != *pinned {
                    return Err(bundle_err(
                        at,
                        format!(
                            "the bundle's first key {} is not the pinned key {}",
                            key.to_text(),
                            pinned.to_text()
                        ),
                    )
                    .into());
                }
                listed.push((key, at));
            }
            Record::Entry(bytes) => {
                after_keys.get_or_insert(at);
                verifier.entry(bytes)?;
                sink(Verified::Entry(bytes))?;
                let n = verifier.entries();
                if n.is_multiple_of(65536) {
                    progress(n);
                }
            }
            Record::Checkpoint(note) => {
                after_keys.get_or_insert(at);
                verifier.checkpoint(note)?;
                sink(Verified::Checkpoint(note))?;
            }
            Record::End => {
                after_keys.get_or_insert(at);
                break;
            }
        }
    }
    if listed.is_empty() {
        return Err(bundle_err(10, "bundle lists no keys").into());
    }
    let chain: Vec<PublicKey> = verifier.key_chain().cloned().collect();
    progress(verifier.entries());
    let verified = verifier.finish()?;
    // KEY records are covered by the log itself: they must be exactly its key chain.
    let differs =
        (0..chain.len().max(listed.len())).find(|&i| chain.get(i) != listed.get(i).map(|(k, _)| k));
    if let Some(i) = differs {
        let at = listed
            .get(i)
            .map_or(after_keys.unwrap_or(10), |&(_, offset)| offset);
        let why = match (chain.get(i), listed.get(i)) {
            (Some(k), Some(_)) => format!(
                "KEY record {} is not key {} of the log's key chain, {}",
                i + 1,
                i + 1,
                k.to_text()
            ),
            (Some(k), None) => format!(
                "the bundle lists {} keys; the log's key chain has {}, the next being {}",
                listed.len(),
                chain.len(),
                k.to_text()
            ),
            _ => format!(
                "KEY record {} is beyond the log's key chain of {} keys",
                i + 1,
                chain.len()
            ),
        };
        return Err(bundle_err(at, why).into());
    }
    Ok(verified)
}
