//! A private layer over a ledger file, so read-only commands can run redb's crash recovery and
//! integrity check without writing the file.
//!
//! redb recovers a file that was not closed cleanly (a crash, a SIGKILL) only when it opens it
//! for writing, and checks every page's checksum only then too. An auditor's `verify` must do
//! neither to the file it was given. So it opens the database for writing over [`Overlay`]:
//! reads come from the file unless this layer wrote the bytes, writes land in memory and are
//! dropped with it. The file is never opened for writing by this code.
//!
//! Locks: every lock redb asks for is taken *shared* on the file. That excludes a real writer
//! (the daemon takes its writer byte exclusively, so the open is refused as
//! `DatabaseAlreadyOpen` while one runs, and a daemon cannot start while this layer holds the
//! file), yet two private layers on one file do not exclude each other: neither writes it.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::ops::Bound;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use redb::backends::FileBackend;
use redb::{BackendError, StorageBackend};

/// The granularity of the private copy of written bytes.
const BLOCK: u64 = 4096;

/// The file, and what was written over it.
#[derive(Debug)]
pub(crate) struct Overlay {
    file: FileBackend,
    state: Mutex<State>,
    /// Once set, every access fails (see [`Overlay::seal`]).
    sealed: Arc<AtomicBool>,
}

/// Seals an [`Overlay`] that redb owns.
#[derive(Debug, Clone)]
pub(crate) struct Seal(Arc<AtomicBool>);

impl Seal {
    /// From now on every read, write and length of the layer fails. redb latches the first
    /// failure ("Previous I/O error"), and a database with a latched failure closes without
    /// its closing commit: which is what a private layer wants, as that commit would be
    /// dropped with it anyway, and on a damaged file it is where redb aborts the process.
    pub(crate) fn seal(&self) {
        self.0.store(true, Ordering::Release);
    }
}

#[derive(Debug)]
struct State {
    /// The storage length as redb sees it.
    len: u64,
    /// Bytes of the file at or past this offset read as zeros: the storage was shrunk below
    /// it at some point, and what grows back is new (zeroed) storage.
    file_visible: u64,
    /// Written blocks, by block index.
    blocks: BTreeMap<u64, Box<[u8]>>,
}

impl Overlay {
    /// A layer over `file` (opened for reading only).
    pub(crate) fn new(file: File) -> io::Result<Overlay> {
        let len = file.metadata()?.len();
        let file = FileBackend::new(file).map_err(io::Error::other)?;
        Ok(Overlay {
            file,
            state: Mutex::new(State {
                len,
                file_visible: len,
                blocks: BTreeMap::new(),
            }),
            sealed: Arc::new(AtomicBool::new(false)),
        })
    }

    /// The switch that seals this layer, kept by whoever hands the layer to redb.
    pub(crate) fn seal_handle(&self) -> Seal {
        Seal(Arc::clone(&self.sealed))
    }

    fn check_open(&self) -> io::Result<()> {
        if self.sealed.load(Ordering::Acquire) {
            Err(io::Error::other(
                "the private layer is sealed: the database is closing without writing",
            ))
        } else {
            Ok(())
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl State {
    /// The bytes of the file at `offset` (zeros past what is visible of it).
    fn read_file(&self, file: &FileBackend, offset: u64, out: &mut [u8]) -> io::Result<()> {
        let end = offset + out.len() as u64;
        let from_file = self.file_visible.clamp(offset, end) - offset;
        let (head, tail) = out.split_at_mut(from_file as usize);
        if !head.is_empty() {
            file.read(offset, head)?;
        }
        tail.fill(0);
        Ok(())
    }
}

impl StorageBackend for Overlay {
    fn len(&self) -> io::Result<u64> {
        self.check_open()?;
        Ok(self.state().len)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        self.check_open()?;
        let s = self.state();
        let end = offset
            .checked_add(out.len() as u64)
            .filter(|&e| e <= s.len)
            .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "read past the end"))?;
        s.read_file(&self.file, offset, out)?;
        for (&index, block) in s.blocks.range(offset / BLOCK..end.div_ceil(BLOCK)) {
            let start = (index * BLOCK).max(offset);
            let stop = ((index + 1) * BLOCK).min(end);
            let src = &block[(start - index * BLOCK) as usize..(stop - index * BLOCK) as usize];
            out[(start - offset) as usize..(stop - offset) as usize].copy_from_slice(src);
        }
        Ok(())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.check_open()?;
        let mut s = self.state();
        if len < s.len {
            s.file_visible = s.file_visible.min(len);
            let first_gone = len.div_ceil(BLOCK);
            s.blocks.split_off(&first_gone);
            if !len.is_multiple_of(BLOCK)
                && let Some(b) = s.blocks.get_mut(&(len / BLOCK))
            {
                b[(len % BLOCK) as usize..].fill(0);
            }
        }
        s.len = len;
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        self.check_open()
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.check_open()?;
        let mut s = self.state();
        let end = offset + data.len() as u64;
        if end > s.len {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "write past the end",
            ));
        }
        for index in offset / BLOCK..end.div_ceil(BLOCK) {
            if !s.blocks.contains_key(&index) {
                let mut block = vec![0u8; BLOCK as usize].into_boxed_slice();
                let readable = (s.len - index * BLOCK).min(BLOCK) as usize;
                s.read_file(&self.file, index * BLOCK, &mut block[..readable])?;
                s.blocks.insert(index, block);
            }
            let block = s.blocks.get_mut(&index).expect("inserted above");
            let start = (index * BLOCK).max(offset);
            let stop = ((index + 1) * BLOCK).min(end);
            block[(start - index * BLOCK) as usize..(stop - index * BLOCK) as usize]
                .copy_from_slice(&data[(start - offset) as usize..(stop - offset) as usize]);
        }
        Ok(())
    }

    fn close(&self) -> io::Result<()> {
        self.file.close()
    }

    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.file.try_lock_shared_range(start, end)
    }

    fn try_lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, BackendError> {
        self.file.try_lock_shared_range(start, end)
    }

    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.file.lock_shared_range(start, end)
    }

    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.file.lock_shared_range(start, end)
    }

    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.file.unlock_range(start, end)
    }

    fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.file.query_lock_range(start, end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    fn overlay(bytes: &[u8]) -> (tempfile::NamedTempFile, Overlay) {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(bytes).unwrap();
        let o = Overlay::new(File::open(f.path()).unwrap()).unwrap();
        (f, o)
    }

    fn read(o: &Overlay, offset: u64, n: usize) -> Vec<u8> {
        let mut v = vec![0xAA; n];
        o.read(offset, &mut v).unwrap();
        v
    }

    #[test]
    fn writes_stay_private_and_reads_merge_them_over_the_file() {
        let base: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
        let (f, o) = overlay(&base);
        o.write(4090, &[1; 12]).unwrap();
        let mut want = base.clone();
        want[4090..4102].fill(1);
        assert_eq!(read(&o, 0, 10_000), want);
        assert_eq!(read(&o, 4095, 3), [1, 1, 1]);
        // Grow, write past the file, shrink, grow again: what grows back is zeros.
        o.set_len(20_000).unwrap();
        assert_eq!(read(&o, 9_998, 4), [base[9_998], base[9_999], 0, 0]);
        o.write(15_000, &[7; 3]).unwrap();
        o.set_len(5_000).unwrap();
        o.set_len(20_000).unwrap();
        assert_eq!(read(&o, 4_999, 2), [base[4_999], 0]);
        assert_eq!(read(&o, 15_000, 3), [0, 0, 0]);
        assert!(o.read(19_999, &mut [0; 2]).is_err());
        assert!(o.write(19_999, &[0; 2]).is_err());
        // The file itself never changed.
        assert_eq!(std::fs::read(f.path()).unwrap(), base);
    }
}
