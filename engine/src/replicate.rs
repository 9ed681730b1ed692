//! Shipping batches to standbys (issue 29), both ends.
//!
//! Under failover a writer ships each batch, before it swaps the commit register, to the
//! standbys: the entries as encoded, the head they extend and the (unsigned) checkpoint they
//! end with. A standby verifies that they extend exactly what it holds (re-encoding them on
//! its own chain must give the same bytes and the same checkpoint), writes them as its store's
//! unsigned tail, durably, and only then answers: from that moment it holds the batch, and
//! the writer may name it in the register's `sync_set`. The tail is signed when the next
//! shipment extends it (the writer ships a batch only after the previous one's swap: the
//! register acknowledged it), or set aside when the next shipment extends the head beneath
//! it (the swap never landed). A standby that took over settles its tail against the
//! register instead ([`crate::writer::Writer::with_replication`]).
//!
//! The standby holds the log's key: its checkpoints are the writer's, byte for byte
//! (ed25519 signatures are deterministic, and a checkpoint names only origin, size, root and
//! head). The transport is the daemon's (`fleet_ledger::replication`); this module does no IO
//! but the store's.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ledger::checkpoint::Checkpoint;
use ledger::entry::EntryRef;
use ledger::event::Event;
use ledger::keys::Signer;
use ledger::store::NewEntry;
use thiserror::Error;

use crate::materialize::{Ledger, MaterializeError};

/// A batch of the writer's log as followers and standbys take it: the checkpoint note the
/// writer signed for it, and its entries as stored.
pub type Batch = (String, Vec<Vec<u8>>);

/// One batch on its way to the standbys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shipment {
    /// The shipping writer's epoch.
    pub epoch: u64,
    /// The shipping writer's node name.
    pub node: String,
    /// The head the batch extends: (tree size, root).
    pub base: (u64, [u8; 32]),
    /// The checkpoint the batch ends with, unsigned.
    pub checkpoint: Checkpoint,
    /// The batch's entries, as stored (FORMAT §2), in order.
    pub entries: Vec<Vec<u8>>,
}

/// A standby a shipment goes to, and how long its answer is waited for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// Its node name.
    pub node: String,
    /// How long its answer is waited for; then it counts as not taken.
    pub wait: std::time::Duration,
}

/// Sends shipments to standbys and waits for their answers.
pub trait Shipper: Send + Sync {
    /// Ships `s` to each of `to` at once; one answer per target, in `to`'s order. `Ok` only
    /// once that standby holds the batch durably, within its wait.
    fn ship(&self, to: &[Target], s: &Shipment) -> Vec<Result<(), ShipRefusal>>;
}

/// Why a standby did not take a shipment.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum ShipRefusal {
    /// A writer of a newer epoch has shipped here: the shipper was fenced.
    #[error("stale epoch {shipped}: this standby holds batches of epoch {held}")]
    StaleEpoch {
        /// The highest epoch this standby has taken batches from.
        held: u64,
        /// The shipment's.
        shipped: u64,
    },
    /// The batch extends a head beyond this standby's: it must catch up first.
    #[error("behind: this standby holds {size} entries, the batch extends {base}")]
    Behind {
        /// Entries it holds.
        size: u64,
        /// The size the batch extends.
        base: u64,
    },
    /// The batch extends a head this standby's log does not contain.
    #[error("diverged: this standby holds {size} entries and its head is not the batch's base")]
    Diverged {
        /// Entries it holds.
        size: u64,
    },
    /// The shipment is not a valid continuation (bad entries, another checkpoint).
    #[error("invalid shipment: {0}")]
    Invalid(String),
    /// The standby could not write it (its store failed), or could not be reached.
    #[error("unavailable: {0}")]
    Unavailable(String),
}

/// The standby's end: the log it holds, and the highest epoch it has taken batches from.
pub struct Standby {
    ledger: Ledger,
    /// The tail it holds, as the batch it was shipped as (so that signing it, or comparing
    /// the next shipment with it, does not read and decode it back from the store).
    pending: Option<(Checkpoint, Vec<NewEntry>)>,
    /// Where the highest epoch is kept (it must survive a restart).
    epoch_file: PathBuf,
    epoch: u64,
    /// Where tails no register acknowledged are kept.
    aside: PathBuf,
}

impl std::fmt::Debug for Standby {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Standby(size {}, epoch {})",
            self.ledger.store().size(),
            self.epoch
        )
    }
}

/// Why a standby could not open.
#[derive(Debug, Error)]
pub enum StandbyError {
    /// Opening or writing the ledger.
    #[error(transparent)]
    Ledger(#[from] MaterializeError),
    /// Reading or writing the epoch file.
    #[error("{file}: {reason}")]
    Epoch {
        /// The file.
        file: PathBuf,
        /// What failed.
        reason: String,
    },
}

/// Whether `ledger`'s signed log holds the head `(size, root)`: it is that head, or it
/// extends it (a checkpoint of that size with that root: the register's heads are batch
/// ends). A log extends the register's head when its node wrote alone meanwhile, outside
/// failover (a key rotation, a time without etcd): it holds every entry the register
/// acknowledges, and more.
pub fn signed_log_holds(
    ledger: &Ledger,
    (size, root): (u64, [u8; 32]),
) -> Result<bool, MaterializeError> {
    let store = ledger.store();
    if store.size() < size {
        return Ok(false);
    }
    if store.size() == size {
        return Ok(store.root().0 == root);
    }
    let note = store.snapshot().and_then(|s| s.checkpoint(size))?;
    Ok(note.is_some_and(|n| {
        ledger::checkpoint::parse_note(n.as_bytes()).is_ok_and(|p| p.checkpoint.root.0 == root)
    }))
}

/// The epoch file beside a database: `<db>.epoch`, the decimal epoch and a newline.
pub fn epoch_file(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push(".epoch");
    PathBuf::from(name)
}

fn read_epoch(file: &Path) -> Result<u64, StandbyError> {
    let bad = |reason: String| StandbyError::Epoch {
        file: file.to_path_buf(),
        reason,
    };
    match std::fs::read_to_string(file) {
        Ok(text) => text
            .trim()
            .parse()
            .map_err(|_| bad(format!("not an epoch: {:?}", text.trim()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(bad(e.to_string())),
    }
}

/// Writes the epoch durably: a new file, synced, renamed over the old, the directory synced.
fn write_epoch(file: &Path, epoch: u64) -> std::io::Result<()> {
    use std::io::Write as _;
    let tmp = file.with_extension("epoch.tmp");
    let mut f = std::fs::File::create(&tmp)?;
    writeln!(f, "{epoch}")?;
    f.sync_all()?;
    std::fs::rename(&tmp, file)?;
    if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Decodes stored entries into the batch that re-encodes to them on a chain.
fn decode(entries: &[Vec<u8>]) -> Result<Vec<NewEntry>, String> {
    entries
        .iter()
        .enumerate()
        .map(|(i, bytes)| {
            let entry = EntryRef::parse(bytes).map_err(|e| format!("entry {i}: {e}"))?;
            let event = Event::decode(entry.header.kind, entry.payload)
                .map_err(|e| format!("entry {} ({}): {e}", entry.header.seq, i))?;
            Ok(NewEntry {
                recorded_at_us: entry.header.recorded_at_us,
                event,
            })
        })
        .collect()
}

impl Standby {
    /// Opens the standby's ledger at `db` with the log's key (the key in force: a standby
    /// that could not sign as the writer does refuses to start), and its epoch file.
    pub fn open(db: &Path, signer: Arc<Signer>, aside: &Path) -> Result<Standby, StandbyError> {
        let ledger = Ledger::open_live(db, signer)?;
        let epoch_file = epoch_file(db);
        let epoch = read_epoch(&epoch_file)?;
        Ok(Standby {
            ledger,
            pending: None,
            epoch_file,
            epoch,
            aside: aside.to_path_buf(),
        })
    }

    /// The ledger it holds.
    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// Gives the ledger back (a standby taking over opens its writer on the same file).
    pub fn into_ledger(self) -> Ledger {
        self.ledger
    }

    /// The highest epoch it has taken batches from.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The head it holds signed: (tree size, root).
    pub fn head(&self) -> (u64, [u8; 32]) {
        let store = self.ledger.store();
        (store.size(), store.root().0)
    }

    /// Whether it holds the register's head `want`: signed (as its head, or beneath a log
    /// that extends it, [`signed_log_holds`]) or as its tail. Only then may it take over.
    pub fn holds(&self, want: (u64, [u8; 32])) -> Result<bool, MaterializeError> {
        Ok(signed_log_holds(&self.ledger, want)? || self.tail_head()? == Some(want))
    }

    /// The head of its unsigned tail, if it holds one: what it would hold if the register
    /// acknowledged the last batch shipped to it.
    pub fn tail_head(&self) -> Result<Option<(u64, [u8; 32])>, MaterializeError> {
        Ok(self
            .ledger
            .store()
            .tail_batch()
            .map_err(MaterializeError::from)?
            .map(|(_, cp)| (cp.size, cp.root.0)))
    }

    /// Takes a shipment: refuses an older epoch, settles the tail the shipment says was or
    /// was not acknowledged, checks that the batch extends this standby's head exactly, and
    /// writes it as the tail, durably. `Ok` with the checkpoint it now holds unsigned.
    pub fn receive(&mut self, s: &Shipment) -> Result<Checkpoint, ShipRefusal> {
        let unavailable = |e: &dyn std::fmt::Display| ShipRefusal::Unavailable(e.to_string());
        if s.epoch < self.epoch {
            return Err(ShipRefusal::StaleEpoch {
                held: self.epoch,
                shipped: s.epoch,
            });
        }
        if s.epoch > self.epoch {
            write_epoch(&self.epoch_file, s.epoch).map_err(|e| {
                ShipRefusal::Unavailable(format!("{}: {e}", self.epoch_file.display()))
            })?;
            self.epoch = s.epoch;
        }
        let held = match self.pending.take() {
            Some(p) => Some(p),
            None => self
                .ledger
                .store()
                .tail_batch()
                .map_err(|e| unavailable(&e))?
                .map(|(batch, cp)| (cp, batch)),
        };
        if let Some((cp, batch)) = held {
            if (cp.size, cp.root.0) == s.base {
                // The writer extends the batch it shipped last: the register took it.
                return self.sign_then_hold(batch, s);
            } else if self.head() == s.base && cp == s.checkpoint {
                // The same batch again (the writer retried): held already.
                self.pending = Some((cp.clone(), batch));
                return Ok(cp);
            } else if self.head() == s.base {
                // The writer went on from beneath it: that batch was never acknowledged.
                self.ledger
                    .set_tail_aside(&self.aside)
                    .map_err(|e| unavailable(&e))?;
            } else {
                self.pending = Some((cp, batch));
            }
        }
        let (size, root) = self.head();
        if (size, root) != s.base {
            return Err(if s.base.0 > size {
                ShipRefusal::Behind {
                    size,
                    base: s.base.0,
                }
            } else {
                ShipRefusal::Diverged { size }
            });
        }
        self.write_checked(&s.entries, Some(&s.checkpoint))
    }

    /// Signs `held` (the tail the register acknowledged) and holds `s`'s batch as the new
    /// tail, in one durable transaction: the common case of every shipment, one fsync where
    /// two would double what a standby adds to each batch (DECISIONS 155). A batch that does
    /// not re-encode to what was shipped is not held; `held` is signed all the same.
    fn sign_then_hold(
        &mut self,
        held: Vec<NewEntry>,
        s: &Shipment,
    ) -> Result<Checkpoint, ShipRefusal> {
        let unavailable = |e: MaterializeError| ShipRefusal::Unavailable(e.to_string());
        let next = match decode(&s.entries) {
            Ok(next) => next,
            Err(why) => {
                self.ledger.append(held).map_err(unavailable)?;
                return Err(ShipRefusal::Invalid(why));
            }
        };
        let (_, kept) = self
            .ledger
            .append_then_tail(held, &next, |cp, encoded| {
                encoded == s.entries.as_slice() && *cp == s.checkpoint
            })
            .map_err(unavailable)?;
        match kept {
            Some((cp, _)) => {
                self.pending = Some((cp.clone(), next));
                Ok(cp)
            }
            // Not this log's continuation as shipped: written and set aside for forensics,
            // and refused, as any invalid shipment.
            None => self.write_checked(&s.entries, Some(&s.checkpoint)),
        }
    }

    /// Writes `entries` (stored bytes, continuing this standby's head) as its tail after
    /// checking that they re-encode to themselves on its chain (and, if given, end with
    /// `expect`); a batch that does not is not kept.
    fn write_checked(
        &mut self,
        entries: &[Vec<u8>],
        expect: Option<&Checkpoint>,
    ) -> Result<Checkpoint, ShipRefusal> {
        self.pending = None;
        let batch = decode(entries).map_err(ShipRefusal::Invalid)?;
        let (cp, encoded) = match self.ledger.write_tail(&batch) {
            Ok(w) => w,
            Err(ledger::store::AppendError::Commit(e)) => {
                return Err(ShipRefusal::Unavailable(e.to_string()));
            }
            Err(e) => return Err(ShipRefusal::Invalid(e.to_string())),
        };
        let mismatch = if encoded != entries {
            Some("the entries do not continue this log's chain as shipped".to_string())
        } else if expect.is_some_and(|e| *e != cp) {
            Some("the entries do not end with the shipped checkpoint".to_string())
        } else {
            None
        };
        if let Some(why) = mismatch {
            // Nothing of it was acknowledged anywhere: keep it aside, for forensics.
            if let Err(e) = self.ledger.set_tail_aside(&self.aside) {
                tracing::error!(error = %e, "an invalid shipment's tail could not be set aside");
            }
            return Err(ShipRefusal::Invalid(why));
        }
        self.pending = Some((cp.clone(), batch));
        Ok(cp)
    }

    /// Catches up from the writer's log: `batches` are its batches from this standby's size
    /// on, each with the checkpoint note the writer signed for it (its log batch for batch).
    /// A tail that the first batch repeats was acknowledged and is signed (this standby may
    /// be in the register's sync set for it); any other tail was not, and is set aside. Each
    /// batch is appended with the writer's note, which must be the batch's and signed by the
    /// key in force. Returns the size reached.
    pub fn catch_up(&mut self, batches: &[Batch]) -> Result<u64, ShipRefusal> {
        let unavailable = |e: &dyn std::fmt::Display| ShipRefusal::Unavailable(e.to_string());
        self.pending = None;
        let mut batches = batches;
        let tail = self.ledger.store().tail().map_err(|e| unavailable(&e))?;
        if !tail.is_empty() {
            let repeated = batches.first().is_some_and(|(_, entries)| {
                entries.len() == tail.len() && tail.iter().zip(entries).all(|((_, t), e)| t == e)
            });
            if repeated {
                self.ledger.sign_tail().map_err(|e| unavailable(&e))?;
                batches = &batches[1..];
            } else if !batches.is_empty() {
                // The writer's log goes on otherwise: the tail was never acknowledged.
                self.ledger
                    .set_tail_aside(&self.aside)
                    .map_err(|e| unavailable(&e))?;
            }
        }
        append_batches(&mut self.ledger, batches).map_err(|e| match e {
            FollowError::Ledger(e) => unavailable(&e),
            other => ShipRefusal::Invalid(other.to_string()),
        })
    }
}

/// Appends the writer's batches, each with its signed note, verified (see
/// [`Ledger::append_noted`]); a note the key in force signed that the batch does not give is
/// [`FollowError::Inconsistent`] only where a follower keeps evidence, otherwise
/// [`FollowError::Invalid`].
fn append_batches(ledger: &mut Ledger, batches: &[Batch]) -> Result<u64, FollowError> {
    for (note, entries) in batches {
        let batch = decode(entries).map_err(FollowError::Invalid)?;
        match ledger.append_noted(batch, note) {
            Ok(_) => {}
            Err(MaterializeError::Append(ledger::store::AppendError::BadNote(why))) => {
                return Err(FollowError::Invalid(why));
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(ledger.store().size())
}

/// A verifying follower's end (issue 29): a ledger without the signing key that grows only
/// by the writer's entries with the writer's signed checkpoint, each batch checked against
/// it before anything is written.
pub struct Follower {
    ledger: Ledger,
    /// Where the two notes of an inconsistency are kept.
    evidence: PathBuf,
}

impl std::fmt::Debug for Follower {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Follower(size {})", self.ledger.store().size())
    }
}

/// Why a follower did not take what it was given.
#[derive(Debug, Error)]
pub enum FollowError {
    /// The checkpoint is not signed by the log's key in force: not the log's; nothing was
    /// written (try again, from a node that serves the log).
    #[error("the checkpoint is not the log's: {0}")]
    Unverified(String),
    /// The writer signed a checkpoint that the entries given, after this follower's log, do
    /// not give: the logs disagree. The follower must halt; both notes are kept in `kept`.
    #[error(
        "inconsistent checkpoint at size {size}: the log's signed root is not the root of this follower's log and the entries given; both notes kept in {kept}"
    )]
    Inconsistent {
        /// The size of the writer's checkpoint.
        size: u64,
        /// The directory the notes were written to.
        kept: String,
    },
    /// The entries or the checkpoint do not fit together (a count, a decoding).
    #[error("{0}")]
    Invalid(String),
    /// The follower's store failed.
    #[error(transparent)]
    Ledger(#[from] MaterializeError),
}

impl Follower {
    /// Opens a follower's ledger at `db` (no key: the key in force is read from its log);
    /// `evidence` is where an inconsistency's notes go.
    pub fn open(db: &Path, evidence: &Path) -> Result<Follower, MaterializeError> {
        Ok(Follower {
            ledger: Ledger::open_follower(db)?,
            evidence: evidence.to_path_buf(),
        })
    }

    /// The ledger it holds.
    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// Takes `entries` (the writer's stored entries from this follower's size on) ending
    /// with the checkpoint `note` signed by the log's key in force: verified, then appended
    /// with that note and folded into the projections in one transaction. Returns the new
    /// size.
    pub fn follow(&mut self, entries: &[Vec<u8>], note: &str) -> Result<u64, FollowError> {
        let store = self.ledger.store();
        let (mine, key) = (store.size(), store.public_key().clone());
        let verified = ledger::checkpoint::verify_note(note.as_bytes(), &key)
            .map_err(|e| FollowError::Unverified(e.to_string()))?;
        let size = verified.checkpoint().size;
        if size != mine + entries.len() as u64 {
            return Err(FollowError::Invalid(format!(
                "{} entries after {mine} do not end at the checkpoint's size {size}",
                entries.len()
            )));
        }
        if entries.is_empty() {
            return Ok(mine);
        }
        let batch = decode(entries).map_err(FollowError::Invalid)?;
        match self.ledger.append_noted(batch, note) {
            Ok(_) => Ok(self.ledger.store().size()),
            Err(MaterializeError::Append(ledger::store::AppendError::BadNote(_))) => {
                Err(self.keep_evidence(size, note))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// [`Follower::follow`] for each of the writer's batches in turn, each with its note.
    pub fn follow_batches(&mut self, batches: &[Batch]) -> Result<u64, FollowError> {
        for (note, entries) in batches {
            self.follow(entries, note)?;
        }
        Ok(self.ledger.store().size())
    }

    /// Checks `note`, the writer's latest witnessed checkpoint, under `policy` (issue 29: a
    /// follower with a witness policy follows only what enough trusted witnesses cosigned):
    /// the log's origin, at least `policy.required` distinct trusted witnesses' valid
    /// cosignatures, and, where this follower already holds a checkpoint of that size, the
    /// same tree. The log's own signature is checked when the follower reaches that size
    /// (the batch ending there must carry this checkpoint, [`Follower::follow_witnessed`]),
    /// since it may be signed by a key a rotation ahead of this follower put in force.
    /// Returns the checkpoint it may follow up to.
    pub fn check_witnessed(
        &self,
        note: &str,
        policy: &ledger::witness::WitnessPolicy,
    ) -> Result<Checkpoint, FollowError> {
        let parsed = ledger::checkpoint::parse_note(note.as_bytes())
            .map_err(|e| FollowError::Unverified(format!("the witnessed checkpoint: {e}")))?;
        let store = self.ledger.store();
        if parsed.checkpoint.origin != store.origin() {
            return Err(FollowError::Unverified(format!(
                "the witnessed checkpoint is of log {:?}, not {:?}",
                parsed.checkpoint.origin,
                store.origin()
            )));
        }
        policy
            .check(&parsed)
            .map_err(|e| FollowError::Unverified(format!("the witness policy: {e}")))?;
        let size = parsed.checkpoint.size;
        if size <= store.size() {
            let ours = store
                .snapshot()
                .and_then(|s| s.checkpoint(size))
                .map_err(|e| FollowError::Invalid(format!("reading checkpoint {size}: {e}")))?;
            if let Some(ours) = ours {
                let same = ledger::checkpoint::parse_note(ours.as_bytes())
                    .is_ok_and(|o| o.checkpoint == parsed.checkpoint);
                if !same {
                    return Err(self.keep_evidence_of(size, &ours, note));
                }
            }
        }
        Ok(parsed.checkpoint)
    }

    /// [`Follower::follow_batches`] up to the witnessed checkpoint `witnessed` (its note,
    /// checked by [`Follower::check_witnessed`]): the batches that end at or before its size
    /// are taken; the one ending at its size must end with exactly that checkpoint, or the
    /// log's key signed a tree the witnesses did not cosign: nothing of it is written, both
    /// notes are kept, and the follower must halt. The rest wait for a later witnessed
    /// checkpoint. Returns the new size.
    pub fn follow_witnessed(
        &mut self,
        batches: &[Batch],
        witnessed: &str,
    ) -> Result<u64, FollowError> {
        let cosigned = ledger::checkpoint::parse_note(witnessed.as_bytes())
            .map_err(|e| FollowError::Unverified(format!("the witnessed checkpoint: {e}")))?
            .checkpoint;
        for (note, entries) in batches {
            let ends = ledger::checkpoint::parse_note(note.as_bytes())
                .map_err(|e| FollowError::Unverified(e.to_string()))?
                .checkpoint;
            if ends.size > cosigned.size {
                break;
            }
            if ends.size == cosigned.size {
                let key = self.ledger.store().public_key().clone();
                let signed = ledger::checkpoint::verify_note(note.as_bytes(), &key)
                    .map_err(|e| FollowError::Unverified(e.to_string()))?;
                if *signed.checkpoint() != cosigned {
                    return Err(self.keep_evidence_of(ends.size, note, witnessed));
                }
            }
            self.follow(entries, note)?;
        }
        Ok(self.ledger.store().size())
    }

    /// Writes this follower's latest checkpoint and the writer's that disagrees with it to
    /// `<evidence>/inconsistent-<size>.{ours,theirs}.note`.
    fn keep_evidence(&self, size: u64, theirs: &str) -> FollowError {
        let ours = self
            .ledger
            .store()
            .snapshot()
            .ok()
            .and_then(|s| s.latest_checkpoint().ok().flatten())
            .map(|(_, n)| n)
            .unwrap_or_default();
        self.keep_evidence_of(size, &ours, theirs)
    }

    /// Writes `ours` and `theirs`, two checkpoints of `size` that disagree, to
    /// `<evidence>/inconsistent-<size>.{ours,theirs}.note`.
    fn keep_evidence_of(&self, size: u64, ours: &str, theirs: &str) -> FollowError {
        let kept = self.evidence.display().to_string();
        let write = || -> std::io::Result<()> {
            std::fs::create_dir_all(&self.evidence)?;
            for (which, text) in [("ours", ours), ("theirs", theirs)] {
                let file = self
                    .evidence
                    .join(format!("inconsistent-{size}.{which}.note"));
                std::fs::write(&file, text)?;
                std::fs::File::open(&file)?.sync_all()?;
            }
            Ok(())
        };
        if let Err(e) = write() {
            tracing::error!(error = %e, dir = %kept, "could not keep the inconsistent notes");
        }
        FollowError::Inconsistent { size, kept }
    }
}
