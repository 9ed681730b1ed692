//! Replay snapshots: the projections every [`SNAPSHOT_EVERY`] entries, kept in a cache file
//! beside the database or bundle (`<source>.replay-cache`), so `replay` folds from the
//! nearest one instead of from entry 0.
//!
//! The cache is derived and never trusted: a snapshot is used only when the source's entry
//! just before it still has the hash the snapshot recorded. By the hash chain that entry
//! commits to every earlier one, so a snapshot can only be used on the log it was folded
//! from, and its body only when it still has the blake3 digest recorded beside it. A stale,
//! foreign or damaged cache is discarded and rebuilt; a cache that cannot be written (a
//! read-only directory) only costs speed. The digest catches damage, not forgery: whoever can
//! write the cache can write a matching digest, so evidence work uses a cache made on one's
//! own copy, or `replay --include-pruned` and `replay --check`, which never read it.
//!
//! ```text
//! header  "FLREPLAY" · u32 BE cache version (1) · u32 BE fold version · entry 0's hash (32)
//! record  u64 BE seq S (entries 0..S are folded in) · i64 BE CP time of entry S-1 ·
//!         entry S-1's hash (32) · u64 BE byte offset of entry S-1's record in a bundle
//!         (0 for a database) · u64 BE length · blake3 of the body (32) ·
//!         body: `State::snapshot` bytes
//! ```
//!
//! Records are appended, in any seq order, by replays as they fold past multiples of
//! [`SNAPSHOT_EVERY`] the cache lacks, and by the daemon each time its log crosses one (its
//! live state is exactly a snapshot's). Appenders take an exclusive lock on the file and
//! re-read it first, so a seq is never written twice; a torn last record (a process killed
//! while writing) is ignored and overwritten.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use ledger::domain::Micros;
use projections::State;

/// Entries between snapshots: the most a replay folds after loading one. A fold runs at
/// about 500k entries/s here, so this bounds that part of a replay to ~65 ms.
pub const SNAPSHOT_EVERY: u64 = 32_768;

const MAGIC: &[u8; 8] = b"FLREPLAY";
const CACHE_VERSION: u32 = 1;
const HEADER_BYTES: u64 = 8 + 4 + 4 + 32;
const RECORD_HEAD_BYTES: usize = 8 + 8 + 32 + 8 + 8 + 32;

/// A snapshot in the cache (its body stays on disk until used).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mark {
    /// Entries `0..seq` are folded in.
    pub seq: u64,
    /// CP time of entry `seq - 1`.
    pub at: Micros,
    /// Hash of entry `seq - 1`.
    pub hash: [u8; 32],
    /// Byte offset of entry `seq - 1`'s record in a bundle (0 for a database).
    pub offset: u64,
    body_at: u64,
    len: u64,
    digest: [u8; 32],
}

/// A snapshot captured during a fold, to append.
#[derive(Debug)]
pub struct NewMark {
    /// Position and binding, as in [`Mark`].
    pub seq: u64,
    /// CP time of entry `seq - 1`.
    pub at: Micros,
    /// Hash of entry `seq - 1`.
    pub hash: [u8; 32],
    /// Bundle offset of entry `seq - 1` (0 for a database).
    pub offset: u64,
    /// `State::snapshot` bytes.
    pub body: Vec<u8>,
}

/// The cache file of one source.
#[derive(Debug)]
pub struct Cache {
    path: PathBuf,
    /// Hash of entry 0 of the log the cache belongs to (None: no usable file yet).
    genesis: Option<[u8; 32]>,
    marks: Vec<Mark>,
    /// Where the next record goes (after the last whole record).
    end: u64,
    /// Set by [`Cache::discard`]: the next append rewrites the file.
    discarded: bool,
}

/// The cache path of a source.
pub fn cache_path(source: &Path) -> PathBuf {
    let mut p = source.as_os_str().to_owned();
    p.push(".replay-cache");
    PathBuf::from(p)
}

fn u64_at(b: &[u8], i: usize) -> u64 {
    u64::from_be_bytes(b[i..i + 8].try_into().expect("8 bytes"))
}

impl Cache {
    /// Reads the marks of the cache beside `source`. A missing, unreadable or foreign file
    /// reads as an empty cache (it is rewritten on the next append).
    pub fn open(source: &Path) -> Cache {
        let mut cache = Cache::empty(cache_path(source));
        if let Ok(f) = File::open(&cache.path) {
            // Errors leave the marks read so far; a torn tail is simply not used.
            let _ = cache.read_marks(f);
        }
        cache
    }

    /// No snapshots, nothing read yet.
    fn empty(path: PathBuf) -> Cache {
        Cache {
            path,
            genesis: None,
            marks: Vec::new(),
            end: HEADER_BYTES,
            discarded: false,
        }
    }

    fn read_marks(&mut self, f: File) -> std::io::Result<()> {
        let len = f.metadata()?.len();
        let mut r = BufReader::new(f);
        let mut head = [0u8; HEADER_BYTES as usize];
        r.read_exact(&mut head)?;
        if &head[..8] != MAGIC
            || head[8..12] != CACHE_VERSION.to_be_bytes()
            || head[12..16] != projections::FOLD_VERSION.to_be_bytes()
        {
            return Ok(());
        }
        self.genesis = Some(head[16..48].try_into().expect("32 bytes"));
        let mut at = HEADER_BYTES;
        let mut rec = [0u8; RECORD_HEAD_BYTES];
        while at + RECORD_HEAD_BYTES as u64 <= len {
            r.read_exact(&mut rec)?;
            let body_len = u64_at(&rec, 56);
            let body_at = at + RECORD_HEAD_BYTES as u64;
            let seq = u64_at(&rec, 0);
            if body_at.saturating_add(body_len) > len || seq == 0 {
                break;
            }
            self.marks.push(Mark {
                seq,
                at: u64_at(&rec, 8) as i64,
                hash: rec[16..48].try_into().expect("32 bytes"),
                offset: u64_at(&rec, 48),
                body_at,
                len: body_len,
                digest: rec[64..96].try_into().expect("32 bytes"),
            });
            r.seek_relative(body_len as i64)?;
            at = body_at + body_len;
        }
        self.end = at;
        self.marks.sort_by_key(|m| m.seq);
        self.marks.dedup_by_key(|m| m.seq);
        Ok(())
    }

    /// The marks, in seq order.
    pub fn marks(&self) -> &[Mark] {
        if self.genesis.is_some() {
            &self.marks
        } else {
            &[]
        }
    }

    /// The snapshots at or before the point, nearest first: at most `through + 1` entries
    /// (the state after entry `through`), all recorded at or before `time`. Only snapshots of
    /// the log whose entry 0 hashes to `genesis`.
    pub fn usable(
        &self,
        genesis: &[u8; 32],
        through: Option<u64>,
        time: Option<Micros>,
    ) -> impl Iterator<Item = Mark> + '_ {
        let ours = self.genesis.as_ref() == Some(genesis);
        self.marks
            .iter()
            .rev()
            .filter(move |m| {
                ours && through.is_none_or(|n| m.seq <= n.saturating_add(1))
                    && time.is_none_or(|t| m.at <= t)
            })
            .copied()
    }

    /// Loads a snapshot's state.
    pub fn load(&self, mark: &Mark) -> Result<State, String> {
        let mut f = File::open(&self.path).map_err(|e| e.to_string())?;
        f.seek(SeekFrom::Start(mark.body_at))
            .map_err(|e| e.to_string())?;
        let len = usize::try_from(mark.len).map_err(|e| e.to_string())?;
        let mut body = vec![0u8; len];
        f.read_exact(&mut body).map_err(|e| e.to_string())?;
        if *blake3::hash(&body).as_bytes() != mark.digest {
            return Err(format!("snapshot at {} is damaged", mark.seq));
        }
        let state = State::from_snapshot(&body).map_err(|e| e.to_string())?;
        if state.next_seq != mark.seq {
            return Err(format!(
                "snapshot at {} holds the state after {} entries",
                mark.seq, state.next_seq
            ));
        }
        Ok(state)
    }

    /// Forgets every snapshot: the next append starts the file afresh.
    pub fn discard(&mut self) {
        self.genesis = None;
        self.marks.clear();
        self.discarded = true;
    }

    /// Whether the cache has a snapshot at `seq`.
    pub fn has(&self, seq: u64) -> bool {
        self.marks().binary_search_by_key(&seq, |m| m.seq).is_ok()
    }

    /// Appends the snapshots it does not have yet, of the log whose entry 0 hashes to
    /// `genesis`, starting the file afresh when it belongs to another log or fold version.
    /// Holds an exclusive lock on the file meanwhile and re-reads it under the lock, so
    /// concurrent appenders (a replay beside the daemon) neither interleave nor repeat a seq.
    pub fn append(&mut self, genesis: &[u8; 32], new: &[NewMark]) -> std::io::Result<()> {
        if new.is_empty() {
            return Ok(());
        }
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&self.path)?;
        f.lock()?;
        let mut current = Cache::empty(self.path.clone());
        let _ = current.read_marks(f.try_clone()?);
        let fresh = self.discarded || current.genesis.as_ref() != Some(genesis);
        // Written through a buffer, not gathered first: the bodies are whole live states (a
        // few MB each on a long history) and are already in memory once.
        let mut out = std::io::BufWriter::new(&f);
        if fresh {
            current.marks.clear();
            current.end = HEADER_BYTES;
            out.get_ref().set_len(0)?;
            out.seek(SeekFrom::Start(0))?;
            out.write_all(MAGIC)?;
            out.write_all(&CACHE_VERSION.to_be_bytes())?;
            out.write_all(&projections::FOLD_VERSION.to_be_bytes())?;
            out.write_all(genesis)?;
        } else {
            // Over a torn tail, if any.
            out.get_ref().set_len(current.end)?;
            out.seek(SeekFrom::Start(current.end))?;
        }
        let mut at = current.end;
        for m in new {
            // Linear: the marks just pushed are not sorted yet, and a cache holds tens.
            if current.marks.iter().any(|x| x.seq == m.seq) {
                continue;
            }
            out.write_all(&m.seq.to_be_bytes())?;
            out.write_all(&m.at.to_be_bytes())?;
            out.write_all(&m.hash)?;
            out.write_all(&m.offset.to_be_bytes())?;
            out.write_all(&(m.body.len() as u64).to_be_bytes())?;
            let digest = *blake3::hash(&m.body).as_bytes();
            out.write_all(&digest)?;
            out.write_all(&m.body)?;
            let body_at = at + RECORD_HEAD_BYTES as u64;
            current.marks.push(Mark {
                seq: m.seq,
                at: m.at,
                hash: m.hash,
                offset: m.offset,
                body_at,
                len: m.body.len() as u64,
                digest,
            });
            at = body_at + m.body.len() as u64;
        }
        out.flush()?;
        drop(out);
        f.sync_data()?;
        f.unlock()?;
        current.genesis = Some(*genesis);
        current.end = at;
        current.marks.sort_by_key(|m| m.seq);
        *self = current;
        Ok(())
    }
}
