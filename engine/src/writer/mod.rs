//! The single writer: the only mutator of the ledger.
//!
//! It runs on its own thread (redb and fsync block) and is fed by a bounded queue. Group
//! commit: it takes what is queued (up to a bound), decides each input in turn against models
//! that already include the earlier ones (decisions are pure functions from `planner`; their
//! events are staged and folded at once), then appends the whole batch in ONE ledger
//! transaction: one fsync and one checkpoint signature. Every caller is answered only after
//! that commit returned; if it fails, every caller of the batch gets an error, nothing of the
//! batch is in the ledger, and the writer reopens the store instead of retrying the fsync
//! (after a failed fsync the kernel may have dropped the dirty pages: retrying could report
//! success for data that never reached the disk).

//!
//! The writer decides nothing itself: each input goes to [`planner::decide`], the one
//! decision function `replay --check` also runs, which stages its events into the ledger
//! (folding them into the models at once). The writer drains the queue, calls it, commits and
//! answers. `protocol` is what the API and the writer exchange (the queue, the answers and
//! errors); `replay_snapshots` the snapshots the writer leaves for `replay`.

mod failover;
mod protocol;
mod replay_snapshots;

pub use failover::Replication;

use planner::Undecided;
pub use planner::{Answer, Input, Refusal};
pub use protocol::{
    Job, KeyRotation, Recording, Reply, Revoked, RotateError, Shared, Witnessed, Work, WriteError,
};

use replay_snapshots::Snapshots;

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use ledger::domain::Micros;
use ledger::keys::Signer;
use planner::Manifests;
use tokio::sync::{mpsc, watch};

use crate::materialize::{Ledger, MaterializeError};
use crate::metrics::Metrics;

/// Supplies CP time in µs: the system clock in the daemon, another in tests. The one clock
/// of the daemon: the writer, the API handlers and the manifest watcher all read it.
pub type Clock = Arc<dyn Fn() -> Micros + Send + Sync>;

/// How the writer opens its store, at start and again after a failed commit: a database
/// file, or (in the deterministic tests) a simulated disk.
pub type Opener = Arc<
    dyn Fn(Arc<Signer>) -> Result<ledger::store::Store, ledger::store::OpenError> + Send + Sync,
>;

/// The writer.
pub struct Writer {
    ledger: Option<Ledger>,
    /// The database file, or what names the simulated disk (logs, metrics, the replay cache).
    path: PathBuf,
    open: Opener,
    /// The checkpoint key, shared with the open store, for reopening after a failed commit.
    signer: Arc<Signer>,
    manifests: Manifests,
    shared: Arc<Shared>,
    clock: Clock,
    last_now: Micros,
    batch_inputs: usize,
    /// The newest manifest entry published to the API (see `publish`).
    published_upto: u64,
    snapshots: Option<Snapshots>,
    /// Commits save redb's allocator state (config `quick_repair`), kept across reopens.
    quick_repair: bool,
    /// How many times a reopen is tried (100 ms apart) before the batch is answered 503.
    reopen_attempts: u32,
    /// The key of a rotation whose commit failed: the disk may have kept it whole, and then
    /// it is the key in force the reopen needs.
    rotating: Option<Arc<Signer>>,
    /// Failover: the commit register this writer's batches go through (issue 29).
    replication: Option<failover::Replicating>,
}
impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Writer({})", self.path.display())
    }
}

/// Why the writer could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Opening the ledger.
    #[error(transparent)]
    Open(#[from] MaterializeError),
    /// The commit register does not let this node write (issue 29).
    #[error("cannot take the log over: {0}")]
    Register(String),
    /// A manifest entry in the log this build cannot read.
    #[error("manifest entry {seq} cannot be read: {reason}")]
    Manifest {
        /// The entry's seq.
        seq: u64,
        /// What is wrong, in words for the message.
        reason: String,
    },
}

impl From<ledger::store::OpenError> for StartError {
    fn from(e: ledger::store::OpenError) -> StartError {
        StartError::Open(e.into())
    }
}

/// Rebuilds the manifests in force from the log: the latest fleet manifest entry and each
/// channel's latest rollout manifest entry, found in `proj.manifests` (so start-up reads a
/// handful of entries, not the log), applied in seq order as the log recorded them.
fn load_manifests(ledger: &Ledger) -> Result<(Manifests, Published), StartError> {
    let rows = &ledger.state().manifests;
    let published: Published = rows
        .iter()
        .map(|(id, row)| {
            (
                id.as_ref().map_or("fleet".into(), ToString::to_string),
                row.seq,
            )
        })
        .collect();
    let mut in_force: std::collections::BTreeMap<&str, u64> = Default::default();
    for (id, row) in rows.iter() {
        let name = id.as_ref().map_or("", |r| r.channel.as_str());
        let seq = in_force.entry(name).or_insert(row.seq);
        *seq = (*seq).max(row.seq);
    }
    let mut seqs: Vec<u64> = in_force.into_values().collect();
    seqs.sort_unstable();
    let snap = ledger.store().snapshot().map_err(MaterializeError::from)?;
    let mut manifests = Manifests::default();
    for seq in seqs {
        let bad = |reason: String| StartError::Manifest { seq, reason };
        let entry = snap
            .logged(seq)
            .map_err(MaterializeError::from)?
            .ok_or_else(|| bad("not in the log".into()))?;
        manifests
            .apply(seq, &entry.event)
            .map_err(|e| bad(e.to_string()))?;
    }
    Ok((manifests, published))
}

/// Manifest name (`fleet` or a rollout id) → seq of its latest entry.
type Published = std::collections::BTreeMap<String, u64>;

/// Records the manifests in force as published, after a commit (they are durable), if one
/// is newer than `upto` (the newest entry published so far, which this raises). Every commit
/// calls this; only one that recorded a manifest changes anything.
fn publish(shared: &Shared, manifests: &Manifests, upto: &mut u64) {
    let newest = manifests
        .rollout_in_force
        .values()
        .chain(&manifests.fleet_in_force)
        .map(|f| f.seq)
        .max();
    match newest {
        Some(n) if n > *upto => *upto = n,
        _ => return,
    }
    let mut p = shared.published.write().unwrap_or_else(|p| p.into_inner());
    if let Some(f) = &manifests.fleet_in_force {
        p.insert("fleet".into(), f.seq);
    }
    for (channel, r) in &manifests.rollouts {
        if let Some(f) = manifests.rollout_in_force.get(channel) {
            p.insert(r.rollout_id.to_string(), f.seq);
        }
    }
}

/// Publishes the revocations in force after a commit, if a revocation list was recorded
/// since they were last published (one comparison otherwise). Before the commit's
/// notification, like the manifests: a request answered after the commit is held to them.
fn publish_revoked(shared: &Shared, state: &projections::State) {
    let allowlist = state
        .sidecars
        .contains_key(&ledger::event::SIDECAR_BOOTSTRAP_NONCES.to_string());
    shared
        .allowlist_ready
        .store(allowlist, std::sync::atomic::Ordering::Release);
    let list = state
        .sidecars
        .get(&ledger::event::SIDECAR_REVOCATIONS.to_string())
        .map(|r| r.seq);
    if shared.revoked().list == list {
        return;
    }
    *shared.revoked.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(Revoked::of(state));
}

impl Writer {
    /// Opens the ledger at `path` (catching up projections) and loads the manifests in force.
    pub fn open(
        path: PathBuf,
        signer: Signer,
        clock: Clock,
        batch_inputs: usize,
    ) -> Result<(Writer, Arc<Shared>), StartError> {
        let file = path.clone();
        let open: Opener = Arc::new(move |signer| ledger::store::Store::open(&file, signer));
        Writer::open_with(open, path, signer, clock, batch_inputs)
    }

    /// [`Writer::open`] over the store `open` gives (`label` names it): the deterministic
    /// writer tests run it on a simulated disk that fails and crashes where they choose.
    pub fn open_with(
        open: Opener,
        label: PathBuf,
        signer: Signer,
        clock: Clock,
        batch_inputs: usize,
    ) -> Result<(Writer, Arc<Shared>), StartError> {
        let path = label;
        let signer = Arc::new(signer);
        let ledger = Ledger::from_live_store(open(Arc::clone(&signer))?)?;
        let (manifests, published) = load_manifests(&ledger)?;
        let published_upto = published.values().copied().max().unwrap_or(0);
        let ledger_last_time = ledger.store().last_time();
        let (committed, _) = watch::channel(ledger.store().size());
        let shared = Arc::new(Shared {
            reader: RwLock::new(Some(ledger.store().reader())),
            committed,
            fleet_ready: manifests.fleet_in_force.is_some().into(),
            published: RwLock::new(published),
            witnessed: RwLock::new(None),
            store_failures: 0.into(),
            metrics: Metrics::new(Some(&path)),
            revoked: RwLock::new(Arc::new(Revoked::of(ledger.state()))),
            allowlist_ready: false.into(),
        });
        publish_revoked(&shared, ledger.state());
        note_commit(&shared, ledger.store());
        let writer = Writer {
            ledger: Some(ledger),
            path,
            open,
            signer,
            manifests,
            shared: Arc::clone(&shared),
            clock,
            // A clock behind the log (stepped back, or a copied ledger) must not make every
            // commit fail: the log's times never decrease, so decisions are stamped no
            // earlier than its last entry.
            last_now: ledger_last_time,
            batch_inputs,
            published_upto,
            snapshots: None,
            quick_repair: false,
            reopen_attempts: 50,
            rotating: None,
            replication: None,
        };
        Ok((writer, shared))
    }

    /// Runs until every sender of `rx` is gone and the queue is drained.
    pub fn run(mut self, mut rx: mpsc::Receiver<Work>) {
        while let Some(first) = rx.blocking_recv() {
            // Take what is queued, up to the batch bound; work other than a decision ends
            // the take (see `handle`).
            let mut taken = vec![first];
            while taken.len() < self.batch_inputs && matches!(taken.last(), Some(Work::Decide(_))) {
                match rx.try_recv() {
                    Ok(work) => taken.push(work),
                    Err(_) => break,
                }
            }
            self.shared.metrics.queue_depth.set(rx.len() as i64);
            self.handle(taken);
        }
        tracing::info!("writer: queue closed and drained");
    }

    /// Handles work taken from the queue, in order: consecutive decisions as one batch (one
    /// commit, at most the batch bound), and any other work (a key rotation, a recording)
    /// alone, after what was queued before it is committed (a rotation: signed by the old
    /// key). Every caller is answered before this returns. `run` feeds it from the queue; the
    /// deterministic writer tests call it directly, with no thread and no runtime.
    pub fn handle(&mut self, taken: impl IntoIterator<Item = Work>) {
        let mut batch = Vec::with_capacity(self.batch_inputs);
        for work in taken {
            match work {
                Work::Decide(job) => {
                    batch.push(job);
                    if batch.len() == self.batch_inputs {
                        self.process(&mut batch);
                    }
                }
                Work::RotateKey(r) => {
                    if !batch.is_empty() {
                        self.process(&mut batch);
                    }
                    self.rotate(r);
                }
                Work::Record(r) => {
                    if !batch.is_empty() {
                        self.process(&mut batch);
                    }
                    self.record(*r);
                }
            }
        }
        if !batch.is_empty() {
            self.process(&mut batch);
        }
    }

    /// Records an event as is, in its own commit.
    fn record(&mut self, r: Recording) {
        let _span = tracing::info_span!("record", kind = r.event.kind().name()).entered();
        if self.ledger.is_none() && !self.reopen() {
            let _ = r.reply.send(Err("the ledger is being reopened".into()));
            return;
        }
        // Under failover a recording passes the commit register like a batch.
        if let Some(why) = self.replication_blocked() {
            let _ = r.reply.send(Err(format!("not recorded: {why}")));
            return;
        }
        let now = self.now();
        let ledger = self.ledger.as_mut().expect("opened above");
        let seq = ledger.stage(now, vec![r.event]);
        let started = Instant::now();
        match self.commit_staged() {
            Ok(_) => {
                self.after_commit(1, started);
                let _ = r.reply.send(Ok(seq));
            }
            Err(failover::Unacknowledged::Ledger(e)) => {
                self.store_failed();
                let _ = r.reply.send(Err(format!("not recorded ({e})")));
                self.after_failed_commit("recording", &e);
            }
            Err(
                failover::Unacknowledged::Fenced(why)
                | failover::Unacknowledged::Unsure(why)
                | failover::Unacknowledged::Unsynced(why),
            ) => {
                let _ = r.reply.send(Err(format!(
                    "not recorded: not acknowledged by the commit register ({why})"
                )));
            }
        }
    }

    /// The bookkeeping of a commit of `entries` entries that began at `started`: metrics, the
    /// committed size (after which long polls and the publisher see it), replay snapshots.
    fn after_commit(&mut self, entries: u64, started: Instant) {
        let m = &self.shared.metrics;
        m.commit_seconds.observe(started.elapsed().as_secs_f64());
        m.commits.inc();
        m.entries.inc_by(entries);
        m.batch_entries.observe(entries as f64);
        if let Some(ledger) = &self.ledger {
            note_commit(&self.shared, ledger.store());
            if let Some(s) = &mut self.snapshots {
                s.after_commit(ledger);
            }
        }
    }

    /// The moment a commit fails, before anyone is answered: readers stop using the failed
    /// database (redb answers every later read on it with "Previous I/O error") and learn
    /// that it is being reopened, so they answer 503 with Retry-After, not 500.
    fn store_failed(&mut self) {
        self.shared
            .store_failures
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        self.close();
    }

    /// After a failed commit: nothing of it is in the log; the store is reopened rather than
    /// the fsync retried (see the module's documentation).
    fn after_failed_commit(&mut self, what: &str, e: &dyn std::fmt::Display) {
        tracing::error!(error = %e, "{what} failed; nothing was recorded; reopening the store");
        self.shared.metrics.commit_failures.inc();
        self.close();
        self.reopen();
    }

    /// Records a key rotation: a `KeyRotated` entry signed off by the current key, in its own
    /// transaction; later checkpoints are signed by the new key, and a reopen uses it.
    fn rotate(&mut self, r: Box<KeyRotation>) {
        let span = tracing::info_span!("rotate_key", operator = %r.operator);
        let _guard = span.enter();
        if self.replication.is_some() {
            // Its commit would not pass the register (issue 29, not built yet).
            let _ = r.reply.send(Err(RotateError::Unavailable(
                "key rotation does not pass the commit register yet (failover)".into(),
            )));
            return;
        }
        if self.ledger.is_none() && !self.reopen() {
            let _ = r.reply.send(Err(RotateError::Unavailable(
                "the ledger is being reopened".into(),
            )));
            return;
        }
        let r = *r;
        let next = Arc::new(r.next);
        let text = next.public().to_text();
        let reason = format!("{} (operator {})", r.reason, r.operator);
        let at = self.now();
        let ledger = self.ledger.as_mut().expect("opened above");
        let started = Instant::now();
        match ledger.rotate_key(Arc::clone(&next), &reason, at) {
            Ok(receipt) => {
                self.signer = next;
                self.after_commit(1, started);
                tracing::warn!(seq = receipt.first_seq, key = %text, "checkpoint key rotated; set signing_key to the new key before the next start");
                let _ = r.reply.send(Ok(receipt.first_seq));
            }
            // Refused before anything was written: the store is as it was.
            Err(MaterializeError::Append(ledger::store::AppendError::KeyInChain(_))) => {
                let _ = r.reply.send(Err(RotateError::KeyInChain(text)));
            }
            Err(e) => {
                self.store_failed();
                let _ = r.reply.send(Err(RotateError::Unavailable(format!(
                    "the rotation's commit failed ({e}): it is absent, or whole if the disk kept it; retry (a rotation that was kept is then refused as already in the key chain)"
                ))));
                // Found by the deterministic writer test: a commit that fails after its
                // pages were written may still be what the disk holds, and then the new key
                // is in force; the reopen tries it after the old one.
                self.rotating = Some(next);
                self.after_failed_commit("the key rotation", &e);
            }
        }
    }

    fn now(&mut self) -> Micros {
        // The log's times never decrease, whatever the wall clock does.
        self.last_now = (self.clock)().max(self.last_now);
        self.last_now
    }

    /// Decides a batch of inputs, commits them together, answers every caller.
    fn process(&mut self, batch: &mut Vec<Job>) {
        let span = tracing::info_span!(
            "commit",
            inputs = batch.len(),
            entries = tracing::field::Empty
        );
        let _guard = span.enter();
        if self.ledger.is_none() && !self.reopen() {
            for job in batch.drain(..) {
                let _ = job.reply.send(Err(WriteError::Unavailable(
                    "the ledger is being reopened".into(),
                )));
            }
            return;
        }
        if let Some(why) = self.replication_blocked() {
            for job in batch.drain(..) {
                let _ = job.reply.send(Err(WriteError::Unavailable(why.clone())));
            }
            return;
        }
        let now = self.now();
        let ledger = self.ledger.as_mut().expect("opened above");
        let inputs: Vec<Input> = batch
            .iter_mut()
            .map(|job| std::mem::replace(&mut job.input, Input::Plan))
            .collect();
        let kinds: Vec<&'static str> = inputs.iter().map(Input::name).collect();
        let decided = planner::decide_batch(ledger, &mut self.manifests, inputs, now);
        let mut answers = Vec::with_capacity(batch.len());
        for (kind, answer) in kinds.into_iter().zip(decided) {
            answers.push(match answer {
                Ok(answer) => {
                    // A report recorded as refused (answered 2xx, DECISIONS 75) is a refusal
                    // all the same: counted by its code like any other.
                    if let Answer::Refused { refusal, .. } = &answer {
                        self.shared.metrics.reject(refusal.code());
                    }
                    Ok(answer)
                }
                Err(Undecided::Refused(r)) => {
                    tracing::debug!(input = kind, code = r.code(), reason = %r, "refused");
                    self.shared.metrics.reject(r.code());
                    Err(WriteError::Refused(r))
                }
                // Not a decision: the ledger could not be read to make it. Nothing was staged
                // for it; the caller retries.
                Err(e @ Undecided::Unreadable { .. }) => {
                    tracing::warn!(input = kind, error = %e, "undecided");
                    Err(WriteError::Unavailable(e.to_string()))
                }
            });
        }
        let entries = ledger.next_seq() - ledger.store().size();
        span.record("entries", entries);
        let started = Instant::now();
        match self.commit_staged() {
            Ok(receipt) => {
                let ledger = self.ledger.as_mut().expect("committed on it");
                let m = &self.shared.metrics;
                if receipt.is_some() {
                    m.commit_seconds.observe(started.elapsed().as_secs_f64());
                    m.commits.inc();
                    m.entries.inc_by(entries);
                    m.batch_entries.observe(entries as f64);
                    // The served manifests and readiness first, then the commit's
                    // notification: whoever wakes on it (a long poll handing out a dispatch)
                    // finds the manifest it names already served.
                    publish(&self.shared, &self.manifests, &mut self.published_upto);
                    publish_revoked(&self.shared, ledger.state());
                    self.shared.fleet_ready.store(
                        self.manifests.fleet_in_force.is_some(),
                        std::sync::atomic::Ordering::Release,
                    );
                    note_commit(&self.shared, ledger.store());
                    tracing::debug!(
                        size = ledger.store().size(),
                        micros = started.elapsed().as_micros() as u64,
                        "committed"
                    );
                }
                m.batch_inputs.observe(batch.len() as f64);
                for (job, answer) in batch.drain(..).zip(answers) {
                    let _ = job.reply.send(answer);
                }
                // After the answers: encoding a snapshot must not delay them.
                if receipt.is_some()
                    && let Some(s) = &mut self.snapshots
                {
                    s.after_commit(ledger);
                }
            }
            Err(failover::Unacknowledged::Ledger(e)) => {
                self.store_failed();
                for job in batch.drain(..) {
                    let _ = job.reply.send(Err(WriteError::Unavailable(format!(
                        "the commit failed ({e}): the batch is absent, or whole if the disk kept it; retry (what was kept is answered as a duplicate)"
                    ))));
                }
                self.after_failed_commit("the batch's commit", &e);
            }
            // Not acknowledged by the commit register: nothing signed, nothing answered 2xx.
            // The decisions' manifests in memory go back to the log's, as after a reopen.
            Err(
                failover::Unacknowledged::Fenced(why)
                | failover::Unacknowledged::Unsure(why)
                | failover::Unacknowledged::Unsynced(why),
            ) => {
                for job in batch.drain(..) {
                    let _ = job.reply.send(Err(WriteError::Unavailable(format!(
                        "not acknowledged by the commit register ({why}); retry"
                    ))));
                }
                if let Some(ledger) = &self.ledger {
                    match load_manifests(ledger) {
                        Ok((manifests, _)) => self.manifests = manifests,
                        Err(e) => tracing::error!(error = %e, "reloading the manifests in force"),
                    }
                }
            }
        }
    }

    fn close(&mut self) {
        *self
            .shared
            .reader
            .write()
            .unwrap_or_else(|p| p.into_inner()) = None;
        self.ledger = None;
    }

    /// Writes a replay snapshot beside the database each time the log crosses a multiple of
    /// `every` entries (0: none; see [`crate::replay_cache`]).
    pub fn with_snapshots(mut self, every: u64) -> Writer {
        self.snapshots = match (every, &self.ledger) {
            (0, _) | (_, None) => None,
            (every, Some(ledger)) => Some(Snapshots::start(&self.path, ledger, every)),
        };
        self
    }

    /// Makes every commit save redb's allocator state, so the open after a crash is quick
    /// (config `quick_repair`; [`Ledger::set_quick_repair`]).
    pub fn with_quick_repair(mut self, on: bool) -> Writer {
        self.quick_repair = on;
        if let Some(ledger) = &mut self.ledger {
            ledger.set_quick_repair(on);
        }
        self
    }

    /// How many times a reopen after a failed commit is tried, 100 ms apart (default 50): the
    /// deterministic tests, whose dead disk never comes back, try once.
    pub fn with_reopen_attempts(mut self, attempts: u32) -> Writer {
        self.reopen_attempts = attempts.max(1);
        self
    }

    /// Reopens the store after a failed commit: open re-checks head, tree and checkpoint and
    /// catches the projections up, and the manifests in force are read again from the log,
    /// so the models again equal the durable log (a manifest accepted in the failed batch is
    /// not in force).
    fn reopen(&mut self) -> bool {
        // Readers may still hold the old database for a moment: retry briefly.
        for attempt in 0..self.reopen_attempts {
            let mut keys = vec![Arc::clone(&self.signer)];
            keys.extend(self.rotating.clone());
            let mut opened_with = None;
            let mut failure = String::new();
            for key in keys {
                match (self.open)(Arc::clone(&key)) {
                    Ok(store) => {
                        opened_with = Some((store, key));
                        break;
                    }
                    Err(e) => failure = e.to_string(),
                }
            }
            let opened = opened_with
                .map(|(store, key)| {
                    self.signer = key;
                    store
                })
                .ok_or(failure)
                .and_then(|store| Ledger::from_live_store(store).map_err(|e| e.to_string()))
                .and_then(|ledger| {
                    let (manifests, published) =
                        load_manifests(&ledger).map_err(|e| e.to_string())?;
                    Ok((ledger, manifests, published))
                });
            match opened {
                Ok((mut ledger, manifests, published)) => {
                    ledger.set_quick_repair(self.quick_repair);
                    self.published_upto = published.values().copied().max().unwrap_or(0);
                    *self
                        .shared
                        .published
                        .write()
                        .unwrap_or_else(|p| p.into_inner()) = published;
                    self.last_now = self.last_now.max(ledger.store().last_time());
                    publish_revoked(&self.shared, ledger.state());
                    self.shared.fleet_ready.store(
                        manifests.fleet_in_force.is_some(),
                        std::sync::atomic::Ordering::Release,
                    );
                    self.manifests = manifests;
                    *self
                        .shared
                        .reader
                        .write()
                        .unwrap_or_else(|p| p.into_inner()) = Some(ledger.store().reader());
                    note_commit(&self.shared, ledger.store());
                    self.ledger = Some(ledger);
                    if let Some(next) = self.rotating.take()
                        && Arc::ptr_eq(&next, &self.signer)
                    {
                        tracing::warn!(key = %next.public().to_text(), "the key rotation whose commit failed was kept by the disk: its key is in force; set signing_key to it before the next start");
                    }
                    tracing::info!(attempt, "store reopened");
                    return true;
                }
                Err(e) => {
                    tracing::warn!(attempt, error = %e, "reopening the store");
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
        false
    }
}

/// What a node that does not decide (a verifying follower) publishes to its API after it
/// took entries: the manifests agents may fetch (from `proj.manifests`), readiness, the
/// revocations in force, then the committed size, as the writer does after a commit.
pub fn publish_followed(shared: &Shared, ledger: &Ledger) {
    let published: Published = ledger
        .state()
        .manifests
        .iter()
        .map(|(id, row)| {
            (
                id.as_ref().map_or("fleet".into(), ToString::to_string),
                row.seq,
            )
        })
        .collect();
    shared.fleet_ready.store(
        published.contains_key("fleet"),
        std::sync::atomic::Ordering::Release,
    );
    *shared.published.write().unwrap_or_else(|p| p.into_inner()) = published;
    publish_revoked(shared, ledger.state());
    note_commit(shared, ledger.store());
}

/// After a commit (or an open): the committed size for long polls and the publisher, and the
/// gauges derived from the tip.
fn note_commit(shared: &Shared, store: &ledger::store::Store) {
    shared.metrics.log_entries.set(store.size() as i64);
    shared.metrics.update_lags(store.size());
    shared
        .metrics
        .last_entry_us
        .store(store.last_time(), std::sync::atomic::Ordering::Relaxed);
    shared.committed.send_replace(store.size());
}
