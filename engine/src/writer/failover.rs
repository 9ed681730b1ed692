//! The writer under failover (issue 29): every batch is made durable as the store's unsigned
//! tail, the commit register is swapped from the head it extends to the batch's, and only
//! then is it signed, committed with its projections and answered (`Ledger::commit_through`).
//! A swap that finds another head means another writer took a newer epoch: this writer is
//! fenced, answers 503 and signs nothing more. A swap without an answer is settled before the
//! next batch by reading the register: the tail is signed if the register holds it, set
//! aside if not.
//!
//! Before the swap the batch is shipped to the standbys ([`crate::replicate`]): those that
//! hold it durably form the `sync_set` the swap records, and only they may take over. A
//! standby of the `sync_set` that does not answer is left out of it (degraded mode: logged
//! and counted), unless `strict_sync`, where a batch that fewer than `min_sync` standbys
//! hold is answered 503 and set aside. A standby outside the `sync_set` is shipped to at most
//! once a second until it holds a batch again (one that stopped answering must not cost every
//! batch its deadline).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use ledger::event::{Event, WriterEpochStarted};
use ledger::store::Receipt;

use super::{StartError, Writer};
use crate::materialize::{Ledger, MaterializeError};
use crate::register::{CommitRegister, Head, Swap};
use crate::replicate::{Shipment, Shipper, Target};

/// What a writer of an epoch needs: its register, its name and epoch, its standbys.
#[derive(Clone)]
pub struct Replication {
    /// The commit register.
    pub register: Arc<dyn CommitRegister>,
    /// This node's name.
    pub node: String,
    /// Its epoch (the election's fencing token): above every earlier writer's.
    pub epoch: u64,
    /// The standbys (node names) every batch is shipped to, and how.
    pub standbys: Vec<String>,
    /// Ships batches to them (None: no standbys).
    pub shipper: Option<Arc<dyn Shipper>>,
    /// Refuse writes while fewer than `min_sync` standbys hold them (instead of going on
    /// without the ones that do not answer).
    pub strict_sync: bool,
    /// With `strict_sync`: how many standbys must hold every batch.
    pub min_sync: usize,
    /// How long a standby of the sync set is waited for before the batch goes on without it.
    pub ship_timeout: Duration,
    /// Where tails the register never acknowledged are kept.
    pub aside: PathBuf,
}

impl Replication {
    /// A writer of `epoch` on `register` with no standbys.
    pub fn alone(
        register: Arc<dyn CommitRegister>,
        node: &str,
        epoch: u64,
        aside: PathBuf,
    ) -> Replication {
        Replication {
            register,
            node: node.into(),
            epoch,
            standbys: Vec::new(),
            shipper: None,
            strict_sync: false,
            min_sync: 0,
            ship_timeout: Duration::from_secs(2),
            aside,
        }
    }
}

/// How long a standby outside the `sync_set` is left alone after a failed shipment.
const RESHIP_AFTER: Duration = Duration::from_secs(1);

/// How long a standby outside the `sync_set` is waited for: joining the sync set must not
/// stall the batches of a writer whose standby hangs (a paused VM answers nothing; a
/// standby catching up takes the next chance).
const OUT_OF_SYNC_WAIT: Duration = Duration::from_millis(200);

impl std::fmt::Debug for Replication {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Replication({} epoch {})", self.node, self.epoch)
    }
}

/// Who a batch is shipped to, decided before its tail is written.
struct Plan {
    shipper: Option<Arc<dyn Shipper>>,
    targets: Vec<Target>,
    epoch: u64,
    node: String,
    base: (u64, [u8; 32]),
}

type Answers = Vec<Result<(), crate::replicate::ShipRefusal>>;

/// A batch on its way: the standbys it went to and, once they answered, their answers.
struct Shipping {
    targets: Vec<Target>,
    answers: Option<mpsc::Receiver<Answers>>,
}

/// One shipment for the shipping thread, and where its answers go.
type ShipJob = (
    Arc<dyn Shipper>,
    Vec<Target>,
    Shipment,
    mpsc::Sender<Answers>,
);

/// The thread that ships batches while the writer's own tail syncs: one for the writer's
/// life, not one per batch (starting a thread cost 0.25 ms at the median, 0.4 ms on average,
/// per batch on this machine under load; DECISIONS 157). Started on first use, and again
/// should it have gone.
#[derive(Default)]
struct ShipThread(Option<mpsc::Sender<ShipJob>>);

impl ShipThread {
    fn send(&mut self, job: ShipJob) -> Result<(), String> {
        let job = match &self.0 {
            Some(tx) => match tx.send(job) {
                Ok(()) => return Ok(()),
                // The thread went: start another.
                Err(mpsc::SendError(job)) => job,
            },
            None => job,
        };
        let (tx, rx) = mpsc::channel::<ShipJob>();
        std::thread::Builder::new()
            .name("fleet-ledger-ship".into())
            .spawn(move || {
                for (shipper, targets, shipment, answer) in rx {
                    let _ = answer.send(shipper.ship(&targets, &shipment));
                }
            })
            .map_err(|e| e.to_string())?;
        tx.send(job).map_err(|e| e.to_string())?;
        self.0 = Some(tx);
        Ok(())
    }
}

impl Plan {
    /// Ships the batch on the shipping thread (the writer's tail syncs meanwhile).
    fn start(
        self,
        thread: &mut ShipThread,
        cp: &ledger::checkpoint::Checkpoint,
        entries: &[Vec<u8>],
    ) -> Shipping {
        let Some(shipper) = self.shipper else {
            return Shipping {
                targets: Vec::new(),
                answers: None,
            };
        };
        let shipment = Shipment {
            epoch: self.epoch,
            node: self.node,
            base: self.base,
            checkpoint: cp.clone(),
            entries: entries.to_vec(),
        };
        let (tx, rx) = mpsc::channel();
        match thread.send((shipper, self.targets.clone(), shipment, tx)) {
            Ok(()) => Shipping {
                targets: self.targets,
                answers: Some(rx),
            },
            // No thread: every standby counts as not having taken it.
            Err(e) => {
                tracing::error!(error = %e, "starting the shipping thread");
                Shipping {
                    targets: Vec::new(),
                    answers: None,
                }
            }
        }
    }
}

/// The writer's failover state.
#[derive(Debug)]
pub(super) struct Replicating {
    cfg: Replication,
    /// The head this writer last swapped in (what the register holds, if not fenced).
    head: Head,
    /// Why this writer may no longer write (another writer took over).
    pub(super) fenced: Option<String>,
    /// A swap went unanswered: settle it before the next batch.
    unsure: bool,
    /// Standbys outside the `sync_set`: not shipped to before this instant.
    reship_at: BTreeMap<String, Instant>,
    /// Where shipments are made.
    ship_thread: ShipThread,
}

impl std::fmt::Debug for ShipThread {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "ShipThread(running)"
        } else {
            "ShipThread"
        })
    }
}

impl Replicating {
    /// Who the next batch goes to, and how (taken before the batch's tail is written, so the
    /// shipping can start while it syncs).
    fn plan(&self) -> Plan {
        let now = Instant::now();
        let targets: Vec<Target> = self
            .cfg
            .standbys
            .iter()
            .filter_map(|n| {
                let wait = if self.head.sync_set.contains(n) {
                    self.cfg.ship_timeout
                } else if self.reship_at.get(n).is_none_or(|t| *t <= now) {
                    OUT_OF_SYNC_WAIT.min(self.cfg.ship_timeout)
                } else {
                    return None;
                };
                Some(Target {
                    node: n.clone(),
                    wait,
                })
            })
            .collect();
        Plan {
            shipper: self.cfg.shipper.clone().filter(|_| !targets.is_empty()),
            targets,
            epoch: self.cfg.epoch,
            node: self.cfg.node.clone(),
            base: (self.head.tree_size, self.head.root),
        }
    }

    /// Waits for the standbys' answers to a batch shipped by [`Plan::start`]; returns those
    /// that hold it (the next `sync_set`) and those of the current `sync_set` that dropped
    /// out.
    fn ship(&mut self, shipping: Shipping) -> Result<(Vec<String>, Vec<String>), Unacknowledged> {
        let now = Instant::now();
        let Shipping { targets, answers } = shipping;
        let answers = match answers {
            Some(rx) => rx.recv().unwrap_or_else(|_| {
                targets
                    .iter()
                    .map(|_| {
                        Err(crate::replicate::ShipRefusal::Unavailable(
                            "the shipper panicked".into(),
                        ))
                    })
                    .collect()
            }),
            None => Vec::new(),
        };
        let mut held = Vec::new();
        let mut dropped = Vec::new();
        for (Target { node, .. }, answer) in targets.into_iter().zip(answers) {
            match answer {
                Ok(()) => {
                    self.reship_at.remove(&node);
                    held.push(node);
                }
                Err(refusal) => {
                    if let crate::replicate::ShipRefusal::StaleEpoch { held, .. } = &refusal {
                        // A standby has taken batches of a newer writer: this one is fenced,
                        // whatever the register says yet.
                        let why = format!("standby {node} holds batches of epoch {held}");
                        self.fenced = Some(why.clone());
                        return Err(Unacknowledged::Fenced(why));
                    }
                    if self.head.sync_set.contains(&node) {
                        tracing::warn!(standby = %node, %refusal, "standby left out of the sync set: it did not take the batch");
                        dropped.push(node.clone());
                    } else {
                        tracing::debug!(standby = %node, %refusal, "standby outside the sync set did not take the batch");
                    }
                    self.reship_at.insert(node, now + RESHIP_AFTER);
                }
            }
        }
        if self.cfg.strict_sync && held.len() < self.cfg.min_sync {
            return Err(Unacknowledged::Unsynced(format!(
                "{} of the {} standbys required (strict_sync) hold the batch",
                held.len(),
                self.cfg.min_sync
            )));
        }
        held.sort();
        Ok((held, dropped))
    }
}

/// Why a batch was not acknowledged.
#[derive(Debug)]
pub(super) enum Unacknowledged {
    /// The ledger failed (the store's own error path).
    Ledger(MaterializeError),
    /// Another writer holds the register.
    Fenced(String),
    /// The register did not answer.
    Unsure(String),
    /// Too few standbys hold the batch (`strict_sync`); the register was not asked.
    Unsynced(String),
}

impl From<MaterializeError> for Unacknowledged {
    fn from(e: MaterializeError) -> Unacknowledged {
        Unacknowledged::Ledger(e)
    }
}

fn describe(actual: Option<&Head>) -> String {
    match actual {
        Some(h) => format!(
            "the commit register is at epoch {} (size {})",
            h.epoch, h.tree_size
        ),
        None => "the commit register is empty".into(),
    }
}

/// The head this node holds signed, as the register would hold it for `cfg`'s epoch. No
/// standby is known to hold it yet: the first batch shipped says which do.
fn local_head(ledger: &Ledger, cfg: &Replication) -> Head {
    Head {
        tree_size: ledger.store().size(),
        root: ledger.store().root().0,
        epoch: cfg.epoch,
        sync_set: Vec::new(),
    }
}

impl Writer {
    /// Takes the log over as the writer of `cfg.epoch`: settles the unsigned tail against the
    /// commit register (signed if the register holds it, set aside if not), refuses when the
    /// register acknowledges entries this node lacks or an epoch not below its own, swaps the
    /// register to this epoch (fencing the previous writer), and records the hand-over
    /// (`WriterEpochStarted`) as its first batch, through the register like every other.
    pub fn with_replication(mut self, cfg: Replication) -> Result<Writer, StartError> {
        let refuse = |why: String| StartError::Register(why);
        let ledger = self
            .ledger
            .as_mut()
            .ok_or_else(|| refuse("the ledger is not open".into()))?;
        let held = cfg.register.read().map_err(|e| refuse(e.to_string()))?;
        if let Some(h) = &held
            && h.epoch >= cfg.epoch
        {
            return Err(refuse(format!(
                "{}, not below this writer's epoch {}",
                describe(Some(h)),
                cfg.epoch
            )));
        }
        let here = local_head(ledger, &cfg);
        let tail = ledger
            .store()
            .tail_batch()
            .map_err(MaterializeError::from)?;
        let tail_head = tail.as_ref().map(|(_, cp)| (cp.size, cp.root.0));
        match &held {
            // Nothing acknowledged beyond the log: a tail is not the register's.
            None => {
                ledger.set_tail_aside(&cfg.aside)?;
            }
            Some(h) if (h.tree_size, h.root) == (here.tree_size, here.root) => {
                ledger.set_tail_aside(&cfg.aside)?;
            }
            Some(h) if tail_head == Some((h.tree_size, h.root)) => {
                ledger.sign_tail()?;
            }
            // This node wrote on alone (outside failover) from the register's head: it holds
            // every acknowledged entry; a tail beyond its log was never acknowledged.
            Some(h) if crate::replicate::signed_log_holds(ledger, (h.tree_size, h.root))? => {
                ledger.set_tail_aside(&cfg.aside)?;
            }
            Some(h) => {
                return Err(refuse(format!(
                    "the commit register acknowledges {} entries; this node holds {} (and a tail of {}): it must catch up from a standby first",
                    h.tree_size,
                    here.tree_size,
                    tail.as_ref().map_or(0, |(b, _)| b.len())
                )));
            }
        }
        let start = local_head(ledger, &cfg);
        match cfg.register.compare_and_swap(held.as_ref(), &start) {
            Ok(Swap::Done) => {}
            Ok(Swap::Fenced { actual }) => {
                return Err(refuse(format!(
                    "another writer moved the register meanwhile: {}",
                    describe(actual.as_ref())
                )));
            }
            Err(e) => return Err(refuse(e.to_string())),
        }
        tracing::info!(node = %cfg.node, epoch = cfg.epoch, size = start.tree_size, "writer epoch started");
        let epoch_started = Event::WriterEpochStarted(WriterEpochStarted {
            epoch: cfg.epoch,
            node: cfg.node.clone(),
            previous_size: start.tree_size,
            previous_root: start.root,
        });
        self.replication = Some(Replicating {
            cfg,
            head: start,
            fenced: None,
            unsure: false,
            reship_at: BTreeMap::new(),
            ship_thread: ShipThread::default(),
        });
        let now = self.now();
        let ledger = self.ledger.as_mut().expect("checked above");
        ledger.stage(now, vec![epoch_started]);
        match self.commit_staged() {
            Ok(_) => {
                let ledger = self.ledger.as_ref().expect("checked above");
                super::note_commit(&self.shared, ledger.store());
                Ok(self)
            }
            Err(e) => Err(refuse(format!(
                "recording the hand-over: {}",
                match e {
                    Unacknowledged::Ledger(e) => e.to_string(),
                    Unacknowledged::Fenced(w)
                    | Unacknowledged::Unsure(w)
                    | Unacknowledged::Unsynced(w) => w,
                }
            ))),
        }
    }

    /// Commits what is staged: directly, or through the register under failover.
    pub(super) fn commit_staged(&mut self) -> Result<Option<Receipt>, Unacknowledged> {
        let ledger = self.ledger.as_mut().expect("the caller opened it");
        let Some(rep) = self.replication.as_mut() else {
            return ledger.commit().map_err(Unacknowledged::from);
        };
        let mut dropped = Vec::new();
        let m = &self.shared.metrics;
        let plan = rep.plan();
        let shipped_at = std::time::Instant::now();
        let mut thread = std::mem::take(&mut rep.ship_thread);
        let result = ledger.commit_through_with(
            |cp, entries| plan.start(&mut thread, cp, entries),
            |cp, _, shipping| {
                let (sync_set, left_out) = rep.ship(shipping)?;
                m.ship_seconds.observe(shipped_at.elapsed().as_secs_f64());
                dropped = left_out;
                let next = Head {
                    tree_size: cp.size,
                    root: cp.root.0,
                    epoch: rep.cfg.epoch,
                    sync_set,
                };
                let swapping = std::time::Instant::now();
                let swapped = rep.cfg.register.compare_and_swap(Some(&rep.head), &next);
                m.register_seconds.observe(swapping.elapsed().as_secs_f64());
                match swapped {
                    Ok(Swap::Done) => {
                        rep.head = next;
                        Ok(())
                    }
                    Ok(Swap::Fenced { actual }) => {
                        let why = describe(actual.as_ref());
                        rep.fenced = Some(why.clone());
                        Err(Unacknowledged::Fenced(why))
                    }
                    Err(e) => {
                        rep.unsure = true;
                        Err(Unacknowledged::Unsure(e.to_string()))
                    }
                }
            },
        );
        rep.ship_thread = thread;
        m.standbys_dropped.inc_by(dropped.len() as u64);
        m.sync_set_size.set(rep.head.sync_set.len() as i64);
        match &result {
            Err(Unacknowledged::Fenced(why)) => {
                tracing::error!(node = %rep.cfg.node, epoch = rep.cfg.epoch, %why, "fenced: this writer signs nothing more");
                m.fenced.set(1);
                if let Err(e) = ledger.set_tail_aside(&rep.cfg.aside) {
                    tracing::error!(error = %e, "the fenced batch's tail could not be set aside; it stays in the store");
                }
            }
            Err(Unacknowledged::Unsynced(why)) => {
                tracing::warn!(%why, "batch refused: too few standbys hold it (strict_sync)");
                if let Err(e) = ledger.set_tail_aside(&rep.cfg.aside) {
                    tracing::error!(error = %e, "the refused batch's tail could not be set aside; it stays in the store");
                }
            }
            _ => {}
        }
        result
    }

    /// Before a batch under failover: why it cannot be written (fenced, or an unanswered
    /// swap that cannot be settled yet). Settles an unanswered swap by reading the register.
    pub(super) fn replication_blocked(&mut self) -> Option<String> {
        let rep = self.replication.as_mut()?;
        if let Some(why) = &rep.fenced {
            return Some(format!("fenced: {why}; another writer took over"));
        }
        if !rep.unsure {
            return None;
        }
        let ledger = self.ledger.as_mut()?;
        let held = match rep.cfg.register.read() {
            Ok(h) => h,
            Err(e) => return Some(format!("the commit register does not answer: {e}")),
        };
        let tail = match ledger.store().tail_batch() {
            Ok(t) => t,
            Err(e) => return Some(format!("reading the unsigned tail: {e}")),
        };
        let tail_head = tail.as_ref().map(|(_, cp)| (cp.size, cp.root.0));
        let settled = match &held {
            // The swap never landed: the tail was never acknowledged.
            Some(h) if *h == rep.head => ledger.set_tail_aside(&rep.cfg.aside).map(|_| ()),
            // It landed: the tail is acknowledged; sign it.
            Some(h) if h.epoch == rep.cfg.epoch && tail_head == Some((h.tree_size, h.root)) => {
                let h = h.clone();
                ledger.sign_tail().map(|_| {
                    rep.head = h;
                })
            }
            other => {
                let why = describe(other.as_ref());
                rep.fenced = Some(why.clone());
                let _ = ledger.set_tail_aside(&rep.cfg.aside);
                return Some(format!("fenced: {why}; another writer took over"));
            }
        };
        match settled {
            Ok(()) => {
                rep.unsure = false;
                super::note_commit(&self.shared, ledger.store());
                None
            }
            Err(e) => Some(format!("settling the unsigned tail: {e}")),
        }
    }
}
