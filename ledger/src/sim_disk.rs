//! A simulated disk for crash and fault tests: a redb storage backend that remembers what
//! was synced, can die at any operation (leaving what was synced plus none, all, or a torn
//! prefix of the writes since) and can fail one write or sync with a chosen error. The
//! ledger's and the daemon's fault tests run the real store on it through
//! [`crate::store::Store::create_with_backend`], so no test outside this crate touches redb.

use std::io;
use std::sync::{Arc, Mutex};

use redb::StorageBackend;

/// A transient fault: the `at`-th operation of `kind` fails once with `error`.
#[derive(Clone, Copy, Debug)]
pub struct Fault {
    /// Which operations are counted.
    pub kind: Op,
    /// The 1-based operation of that kind that fails.
    pub at: u64,
    /// The error it fails with (EIO is `Other`, ENOSPC `StorageFull`).
    pub error: io::ErrorKind,
}

/// A kind of disk operation a fault can hit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// A write to the page cache.
    Write,
    /// A sync that makes the writes since the last one durable.
    Sync,
}

/// The disk's contents and counters, which tests read and arm.
#[derive(Debug, Default)]
pub struct DiskState {
    /// What reads see: the page cache.
    pub live: Vec<u8>,
    /// What a completed sync made durable.
    pub durable: Vec<u8>,
    /// Writes since the last completed sync, in order.
    pub pending: Vec<(usize, Vec<u8>)>,
    /// Writes, syncs and resizes so far.
    pub ops: u64,
    /// Writes so far.
    pub writes: u64,
    /// Syncs so far.
    pub syncs: u64,
    /// The machine dies at this operation: it and every later one fail.
    pub crash_at: Option<u64>,
    /// The next transient fault, if armed.
    pub fault: Option<Fault>,
    /// Faults injected so far.
    pub injected: u64,
}

/// A disk that remembers what was synced.
#[derive(Clone, Debug, Default)]
pub struct Disk(Arc<Mutex<DiskState>>);

/// What survives a crash of the writes not yet synced.
#[derive(Clone, Copy, Debug)]
pub enum Survives {
    /// None of them: the image is what the last sync made durable.
    None,
    /// All of them, as if the machine flushed before dying.
    All,
    /// The first half of them, the next one torn after its first 512 bytes.
    Torn,
}

impl Disk {
    /// Its contents and counters (to arm a fault or a crash, or to count operations).
    pub fn state(&self) -> std::sync::MutexGuard<'_, DiskState> {
        self.0.lock().unwrap()
    }

    fn dead() -> io::Error {
        io::Error::other("the simulated machine has crashed")
    }

    /// Counts an operation; `Err` if the machine is dead or this operation's fault fires.
    fn step(&self, kind: Option<Op>) -> io::Result<()> {
        let mut s = self.state();
        s.ops += 1;
        if s.crash_at.is_some_and(|c| s.ops >= c) {
            return Err(Disk::dead());
        }
        let n = match kind {
            Some(Op::Write) => {
                s.writes += 1;
                s.writes
            }
            Some(Op::Sync) => {
                s.syncs += 1;
                s.syncs
            }
            None => return Ok(()),
        };
        if let Some(f) = s.fault
            && f.kind == kind.expect("counted above")
            && f.at == n
        {
            s.injected += 1;
            return Err(io::Error::from(f.error));
        }
        Ok(())
    }

    /// The file a crash leaves.
    pub fn image(&self, survives: Survives) -> Vec<u8> {
        let s = self.state();
        let mut image = s.durable.clone();
        let apply = |image: &mut Vec<u8>, offset: usize, data: &[u8]| {
            if image.len() < offset + data.len() {
                image.resize(offset + data.len(), 0);
            }
            image[offset..offset + data.len()].copy_from_slice(data);
        };
        let keep = match survives {
            Survives::None => 0,
            Survives::All => s.pending.len(),
            Survives::Torn => s.pending.len() / 2,
        };
        for (offset, data) in &s.pending[..keep] {
            apply(&mut image, *offset, data);
        }
        if let (Survives::Torn, Some((offset, data))) = (survives, s.pending.get(keep)) {
            apply(&mut image, *offset, &data[..data.len().min(512)]);
        }
        image
    }

    /// A healthy disk holding `bytes`, all durable.
    pub fn holding(bytes: Vec<u8>) -> Disk {
        Disk(Arc::new(Mutex::new(DiskState {
            live: bytes.clone(),
            durable: bytes,
            ..DiskState::default()
        })))
    }
}

impl StorageBackend for Disk {
    fn len(&self) -> io::Result<u64> {
        Ok(self.state().live.len() as u64)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        let s = self.state();
        let offset = offset as usize;
        if offset + out.len() > s.live.len() {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        out.copy_from_slice(&s.live[offset..offset + out.len()]);
        Ok(())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.step(None)?;
        self.state().live.resize(len as usize, 0);
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        self.step(Some(Op::Sync))?;
        let mut s = self.state();
        s.durable = s.live.clone();
        s.pending.clear();
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.step(Some(Op::Write))?;
        let mut s = self.state();
        let offset = offset as usize;
        if s.live.len() < offset + data.len() {
            s.live.resize(offset + data.len(), 0);
        }
        s.live[offset..offset + data.len()].copy_from_slice(data);
        s.pending.push((offset, data.to_vec()));
        Ok(())
    }
}
