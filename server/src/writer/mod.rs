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
//! `protocol` is what the API and the writer exchange (inputs, answers, refusals, the queue);
//! `replay_snapshots` the snapshots the writer leaves for `replay`; this file the writer. It
//! is long because some decisions still live here (heartbeat synthesis, which dispatch to
//! deliver, retention, lifts, whether a manifest replaces the one in force); issue 14 moves
//! them behind one pure decision function in `planner`, which `replay --check` shares.

mod protocol;
mod replay_snapshots;

pub use protocol::{Class, Dispatch, HostSnapshot, Input, Job, Output, Refusal, Reply, Shared};

use replay_snapshots::Snapshots;

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use ledger::domain::{AgentReport, HostState, Micros, OnHealthFailure, RolloutId, RolloutState};
use ledger::event::{
    DispatchDelivered, Event, FleetManifestAccepted, QuarantineLifted, RolloutManifestAccepted,
};
use ledger::keys::Signer;
use ledger::store::Reader;
use planner::{
    Decision, FleetView, HostInput, HostPolicy, Manifests, Rejection, RolloutInput,
    RolloutRejection,
};
use projections::State;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch};

use crate::intake::{Document, ManifestError, Target, Verified};
use crate::materialize::{Ledger, MaterializeError};
use crate::metrics::Metrics;
use crate::snapshots::{Cache, NewMark};

/// The manifests in force and their provenance.
#[derive(Debug, Default)]
struct InForce {
    fleet: Option<(u64, [u8; 32], Micros)>,
    rollouts: std::collections::BTreeMap<String, (u64, [u8; 32], Micros)>,
}

/// Supplies CP time in µs: the system clock in the daemon, another in tests. The one clock
/// of the daemon: the writer, the API handlers and the manifest watcher all read it.
pub type Clock = Arc<dyn Fn() -> Micros + Send + Sync>;

/// The writer.
pub struct Writer {
    ledger: Option<Ledger>,
    path: PathBuf,
    /// The checkpoint key, shared with the open store, for reopening after a failed commit.
    signer: Arc<Signer>,
    manifests: Manifests,
    in_force: InForce,
    shared: Arc<Shared>,
    clock: Clock,
    last_now: Micros,
    batch_inputs: usize,
    /// How long a finished rollout stays live (None: forever).
    retention_us: Option<Micros>,
    snapshots: Option<Snapshots>,
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
    /// A manifest entry in the log this build cannot read.
    #[error("manifest entry {seq} cannot be read: {reason}")]
    Manifest {
        /// Seq.
        seq: u64,
        /// Why.
        reason: String,
    },
}

impl From<ledger::store::OpenError> for StartError {
    fn from(e: ledger::store::OpenError) -> StartError {
        StartError::Open(e.into())
    }
}

/// Rebuilds the manifests in force from the log's manifest entries.
fn load_manifests(ledger: &Ledger) -> Result<(Manifests, InForce), StartError> {
    use ledger::entry::EntryRef;
    use ledger::event::Kind;
    let snap = ledger.store().snapshot().map_err(MaterializeError::from)?;
    let mut manifests = Manifests::default();
    let mut in_force = InForce::default();
    snap.for_each_entry(0.., |seq, bytes| {
        let bad = |reason: String| StartError::Manifest { seq, reason };
        let entry = EntryRef::parse(bytes).map_err(|e| bad(e.to_string()))?;
        // Only manifest kinds are decoded: the scan stays cheap on a large log.
        let kind = entry.header.kind;
        if kind != Kind::FleetManifestAccepted && kind != Kind::RolloutManifestAccepted {
            return Ok(());
        }
        let event = entry.event().map_err(|e| bad(e.to_string()))?;
        manifests.apply(&event).map_err(|e| bad(e.to_string()))?;
        match &event {
            Event::FleetManifestAccepted(e) => {
                in_force.fleet = Some((seq, e.content_hash, e.signed_at));
            }
            Event::RolloutManifestAccepted(e) => {
                in_force.rollouts.insert(
                    e.rollout_id.channel.clone(),
                    (seq, e.content_hash, e.signed_at),
                );
            }
            _ => {}
        }
        Ok::<(), StartError>(())
    })?;
    Ok((manifests, in_force))
}

impl Writer {
    /// Opens the ledger at `path` (catching up projections) and loads the manifests in force.
    pub fn open(
        path: PathBuf,
        signer: Signer,
        clock: Clock,
        batch_inputs: usize,
    ) -> Result<(Writer, Arc<Shared>), StartError> {
        let ledger = Ledger::open_live(&path, signer)?;
        let signer = ledger.store().signer();
        let (manifests, in_force) = load_manifests(&ledger)?;
        let (committed, _) = watch::channel(ledger.store().size());
        let shared = Arc::new(Shared {
            reader: RwLock::new(Some(ledger.store().reader())),
            committed,
            metrics: Metrics::default(),
        });
        let writer = Writer {
            ledger: Some(ledger),
            path,
            signer,
            manifests,
            in_force,
            shared: Arc::clone(&shared),
            clock,
            last_now: i64::MIN,
            batch_inputs,
            retention_us: None,
            snapshots: None,
        };
        Ok((writer, shared))
    }

    /// Runs until every sender of `rx` is gone and the queue is drained.
    pub fn run(mut self, mut rx: mpsc::Receiver<Job>) {
        let mut batch = Vec::with_capacity(self.batch_inputs);
        while let Some(first) = rx.blocking_recv() {
            batch.push(first);
            while batch.len() < self.batch_inputs {
                match rx.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            self.shared.metrics.queue_depth.set(rx.len() as i64);
            self.process(&mut batch);
        }
        tracing::info!("writer: queue closed and drained");
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
                let _ = job
                    .reply
                    .send(Err(unavailable("the ledger is being reopened")));
            }
            return;
        }
        let now = self.now();
        let mut answers = Vec::with_capacity(batch.len());
        let mut replan = false;
        for job in batch.iter_mut() {
            let input = std::mem::replace(&mut job.input, Input::Tick);
            let answer = self.decide(input, now, &mut replan);
            if let Err(r) = &answer {
                self.shared.metrics.reject(r.code);
            }
            answers.push(answer);
        }
        if replan {
            self.plan(now);
        }
        let ledger = self.ledger.as_mut().expect("opened above");
        let entries = ledger.next_seq() - ledger.store().size();
        span.record("entries", entries);
        let started = Instant::now();
        match ledger.commit() {
            Ok(receipt) => {
                let m = &self.shared.metrics;
                if receipt.is_some() {
                    m.commit_seconds.observe(started.elapsed().as_secs_f64());
                    m.commits.inc();
                    m.entries.inc_by(entries);
                    m.batch_entries.observe(entries as f64);
                    self.shared.committed.send_replace(ledger.store().size());
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
            Err(e) => {
                tracing::error!(error = %e, "commit failed; nothing of the batch was recorded; reopening the store");
                self.shared.metrics.commit_failures.inc();
                for job in batch.drain(..) {
                    let _ = job.reply.send(Err(unavailable(format!(
                        "the commit failed and nothing was recorded ({e}); retry"
                    ))));
                }
                self.close();
                self.reopen();
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
    /// `every` entries (0: none; see [`crate::snapshots`]).
    pub fn with_snapshots(mut self, every: u64) -> Writer {
        self.snapshots = match (every, &self.ledger) {
            (0, _) | (_, None) => None,
            (every, Some(ledger)) => Some(Snapshots::start(&self.path, ledger, every)),
        };
        self
    }

    /// Sets how long a finished rollout stays live (None: forever).
    pub fn with_retention(mut self, retention_us: Option<Micros>) -> Writer {
        self.retention_us = retention_us;
        self
    }

    /// Reopens the store after a failed commit: open re-checks head, tree and checkpoint and
    /// catches the projections up, and the manifests in force are read again from the log,
    /// so the models again equal the durable log (a manifest accepted in the failed batch is
    /// not in force).
    fn reopen(&mut self) -> bool {
        // Readers may still hold the old database for a moment: retry briefly.
        for attempt in 0..50 {
            let opened = Ledger::open_live(&self.path, Arc::clone(&self.signer))
                .map_err(|e| e.to_string())
                .and_then(|ledger| {
                    let (manifests, in_force) =
                        load_manifests(&ledger).map_err(|e| e.to_string())?;
                    Ok((ledger, manifests, in_force))
                });
            match opened {
                Ok((ledger, manifests, in_force)) => {
                    self.manifests = manifests;
                    self.in_force = in_force;
                    *self
                        .shared
                        .reader
                        .write()
                        .unwrap_or_else(|p| p.into_inner()) = Some(ledger.store().reader());
                    self.shared.committed.send_replace(ledger.store().size());
                    self.ledger = Some(ledger);
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

    fn state(&self) -> &State {
        self.ledger.as_ref().expect("open while deciding").state()
    }

    fn ledger(&mut self) -> &mut Ledger {
        self.ledger.as_mut().expect("open while deciding")
    }

    fn policy(&self, rollout: &RolloutId) -> HostPolicy {
        HostPolicy {
            on_health_failure: self
                .manifests
                .policy(&rollout.channel)
                .map_or(OnHealthFailure::Halt, |p| p.on_health_failure),
        }
    }

    fn decide(&mut self, input: Input, now: Micros, replan: &mut bool) -> Result<Output, Refusal> {
        match input {
            Input::Agent {
                host,
                rollout,
                agent_seq,
                report,
            } => self.agent(&host, &rollout, agent_seq, report, now, replan),
            Input::Heartbeat {
                host,
                rollout,
                current_closure,
                at,
            } => self.heartbeat(&host, rollout, current_closure, at, now, replan),
            Input::Manifest { target, verified } => {
                let out = self.manifest(&target, *verified, now)?;
                *replan = true;
                Ok(out)
            }
            Input::Clear {
                rollout,
                operator,
                reason,
            } => {
                let events = planner::decide_rollout(
                    self.state(),
                    &rollout,
                    &RolloutInput::OperatorClearance { operator, reason },
                    now,
                )
                .map_err(rollout_refusal)?;
                let entries = events.len() as u64;
                let seq = self.ledger().stage(now, events);
                *replan = true;
                Ok(Output::Recorded { seq, entries })
            }
            Input::Lift {
                channel,
                closure,
                operator,
                reason,
            } => {
                if !self
                    .state()
                    .quarantine
                    .contains_key(&(channel.clone(), closure.clone()))
                {
                    return Err(Refusal::new(
                        Class::NotFound,
                        "not-quarantined",
                        format!("closure {closure} is not quarantined on channel {channel}"),
                    ));
                }
                let e = Event::QuarantineLifted(QuarantineLifted {
                    channel,
                    closure,
                    operator,
                    reason,
                });
                let seq = self.ledger().stage(now, vec![e]);
                *replan = true;
                Ok(Output::Recorded { seq, entries: 1 })
            }
            Input::TakeDispatch { host } => Ok(Output::Dispatch(self.take_dispatch(host, now))),
            Input::Tick => {
                *replan = true;
                self.expire(now);
                Ok(Output::Ticked)
            }
        }
    }

    /// Prunes the finished rollouts whose retention has passed, through the rollout machine
    /// (`RetentionExpired`). The period is the operator's policy, not in the log: the entries
    /// record each decision, and `replay --check` checks the machine allowed it.
    fn expire(&mut self, now: Micros) {
        let Some(keep) = self.retention_us else {
            return;
        };
        let due: Vec<RolloutId> = self
            .state()
            .rollouts
            .values()
            .filter(|r| {
                matches!(
                    r.state,
                    RolloutState::Terminal
                        | RolloutState::Failed
                        | RolloutState::Reverted
                        | RolloutState::Superseded
                ) && r.last_transition_at.saturating_add(keep) <= now
            })
            .map(|r| r.rollout_id.clone())
            .collect();
        for id in due {
            match planner::decide_rollout(self.state(), &id, &RolloutInput::RetentionExpired, now) {
                Ok(events) if !events.is_empty() => {
                    tracing::info!(rollout = %id, "retention expired: pruning");
                    self.ledger().stage(now, events);
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(rollout = %id, reason = %e, "retention refused"),
            }
        }
    }

    fn agent(
        &mut self,
        host: &str,
        rollout: &RolloutId,
        agent_seq: u64,
        report: AgentReport,
        now: Micros,
        replan: &mut bool,
    ) -> Result<Output, Refusal> {
        if let Some(rec) = self.state().hosts.get(rollout, host)
            && agent_seq == rec.last_event_seq
            && rec.last_report_seq > 0
        {
            return self.retransmit(rec.last_report_seq, agent_seq, &report);
        }
        let policy = self.policy(rollout);
        let input = HostInput::Agent { agent_seq, report };
        let events = planner::decide_report(self.state(), rollout, host, &input, now, &policy)?;
        if events
            .iter()
            .any(|e| matches!(e, Event::HostTransitioned(_)))
        {
            *replan = true;
        }
        let entries = events.len() as u64;
        let seq = self.ledger().stage(now, events);
        Ok(Output::Recorded { seq, entries })
    }

    /// A report with the last accepted agent seq: the same report is a retransmit (answered
    /// with the original entry), a different one reuses a seq.
    fn retransmit(
        &mut self,
        seq: u64,
        agent_seq: u64,
        report: &AgentReport,
    ) -> Result<Output, Refusal> {
        let recorded = match self.ledger().staged(seq) {
            Some(e) => Some(e.clone()),
            None => {
                let snap = self
                    .ledger()
                    .store()
                    .snapshot()
                    .map_err(|e| unavailable(e.to_string()))?;
                snap.entry(seq)
                    .map_err(|e| unavailable(e.to_string()))?
                    .and_then(|bytes| {
                        ledger::entry::EntryRef::parse(&bytes)
                            .ok()
                            .and_then(|e| e.event().ok())
                    })
            }
        };
        match recorded {
            Some(Event::AgentEventRecorded(e)) if e.report == *report => {
                Ok(Output::Duplicate { seq })
            }
            _ => Err(Refusal::new(
                Class::Conflict,
                "seq-reused",
                format!(
                    "agent seq {agent_seq} was already recorded (entry {seq}) with a different report; use a new seq"
                ),
            )),
        }
    }

    fn heartbeat(
        &mut self,
        host: &str,
        rollout: Option<RolloutId>,
        current_closure: Option<String>,
        at: Micros,
        now: Micros,
        replan: &mut bool,
    ) -> Result<Output, Refusal> {
        let named = rollout.is_some();
        let rollouts: Vec<RolloutId> = match rollout {
            Some(r) => vec![r],
            None => self.state().active_rollouts_of(host).cloned().collect(),
        };
        let mut first_seq = None;
        let mut replay_from = None;
        for r in &rollouts {
            // Nothing is inferred for a pruned rollout (its host rows are not in memory).
            if self
                .state()
                .rollouts
                .get(r)
                .is_some_and(|x| x.state == ledger::domain::RolloutState::Pruned)
            {
                continue;
            }
            let Some(rec) = self.state().hosts.get(r, host) else {
                if named {
                    return Err(Rejection::UnknownHost {
                        host: host.to_string(),
                        rollout: r.to_string(),
                    }
                    .into());
                }
                continue;
            };
            let Some(current) = current_closure.clone() else {
                continue;
            };
            if current != rec.target_closure {
                // The CP's view of what the host runs differs: ask for the reports since the
                // last one accepted.
                if named && rec.current_closure.as_deref() != Some(current.as_str()) {
                    replay_from = Some(rec.last_event_seq + 1);
                }
                continue;
            }
            for report in synthesis(rec, &current, at) {
                let input = HostInput::Synthesized {
                    report,
                    heartbeat_at: at,
                    basis: format!(
                        "heartbeat at {}: host runs its target closure",
                        crate::wire::ts::format(at)
                    ),
                };
                let policy = self.policy(r);
                match planner::decide_report(self.state(), r, host, &input, now, &policy) {
                    Ok(events) => {
                        let seq = self.ledger().stage(now, events);
                        first_seq.get_or_insert(seq);
                        *replan = true;
                    }
                    // Synthesis is best effort: a refused inference records nothing.
                    Err(e) => {
                        tracing::debug!(host, rollout = %r, error = %e, "heartbeat synthesis refused");
                        break;
                    }
                }
            }
        }
        let bootstrap = (!named).then(|| {
            rollouts
                .iter()
                .filter_map(|r| self.state().hosts.get(r, host))
                .map(HostSnapshot::of)
                .collect()
        });
        Ok(Output::Heartbeat {
            synthesized: first_seq,
            bootstrap,
            replay_from,
        })
    }

    fn manifest(&mut self, target: &Target, v: Verified, now: Micros) -> Result<Output, Refusal> {
        match (&v.document, target) {
            (Document::Fleet(_), Target::Fleet) => {
                if let Some(out) = replaces(self.in_force.fleet.as_ref(), &v)? {
                    return Ok(out);
                }
                let e = Event::FleetManifestAccepted(FleetManifestAccepted {
                    content_hash: v.content_hash,
                    signer: v.signer,
                    signed_at: v.signed_at,
                    canonical: v.canonical,
                });
                self.manifests
                    .apply(&e)
                    .map_err(|e| Refusal::from(ManifestError::Document(e)))?;
                let seq = self.ledger().stage(now, vec![e]);
                self.in_force.fleet = Some((seq, v.content_hash, v.signed_at));
                Ok(Output::Recorded { seq, entries: 1 })
            }
            (Document::Rollout(doc), Target::Rollout(_)) => {
                let Some((_, fleet_hash, _)) = self.in_force.fleet else {
                    return Err(ManifestError::NoFleet.into());
                };
                if doc.fleet_resolved_hash != fleet_hash {
                    return Err(ManifestError::FleetMismatch {
                        found: crate::auth::hex(&doc.fleet_resolved_hash),
                        in_force: crate::auth::hex(&fleet_hash),
                    }
                    .into());
                }
                planner::document::check_rollout(doc, &self.manifests.fleet)
                    .map_err(|e| Refusal::from(ManifestError::Document(e)))?;
                let channel = doc.rollout_id.channel.clone();
                if let Some(out) = replaces(self.in_force.rollouts.get(&channel), &v)? {
                    return Ok(out);
                }
                let e = Event::RolloutManifestAccepted(RolloutManifestAccepted {
                    rollout_id: doc.rollout_id.clone(),
                    content_hash: v.content_hash,
                    fleet_resolved_hash: doc.fleet_resolved_hash,
                    signer: v.signer,
                    signed_at: v.signed_at,
                    canonical: v.canonical,
                });
                self.manifests
                    .apply(&e)
                    .map_err(|e| Refusal::from(ManifestError::Document(e)))?;
                let seq = self.ledger().stage(now, vec![e]);
                self.in_force
                    .rollouts
                    .insert(channel, (seq, v.content_hash, v.signed_at));
                Ok(Output::Recorded { seq, entries: 1 })
            }
            _ => Err(Refusal::new(
                Class::Unprocessable,
                "manifest-kind",
                "the artifact is not of the kind posted",
            )),
        }
    }

    fn take_dispatch(&mut self, host: String, now: Micros) -> Option<Dispatch> {
        let state = self.state();
        let (rollout, row) = state
            .dispatch_queue
            .range(
                (
                    host.clone(),
                    RolloutId {
                        channel: String::new(),
                        channel_ref: String::new(),
                    },
                )..,
            )
            .take_while(|((h, _), _)| *h == host)
            .min_by_key(|((_, r), row)| (row.enqueued_at, r.clone()))
            .map(|((_, r), row)| (r.clone(), row.clone()))?;
        let wave = state.hosts.get(&rollout, &host).map_or(0, |h| h.wave);
        let e = Event::DispatchDelivered(DispatchDelivered {
            hostname: host.clone(),
            rollout_id: rollout.clone(),
        });
        let seq = self.ledger().stage(now, vec![e]);
        Some(Dispatch {
            hostname: host,
            rollout_id: rollout.to_string(),
            target_closure: row.target_closure,
            soak_due_at: row.soak_due_at,
            enqueued_at: row.enqueued_at,
            wave,
            seq,
        })
    }

    fn plan(&mut self, now: Micros) {
        let view = FleetView {
            state: self.state(),
            compliance_available: true,
        };
        let decisions = planner::plan(&view, &self.manifests, now);
        for d in decisions {
            let events = Decision::into_events(d);
            if !events.is_empty() {
                self.ledger().stage(now, events);
            }
        }
    }
}

/// Whether `v` may replace the manifest in force: the same bytes are a duplicate (answered
/// with the original entry), an older or equally old signature is refused (no rollback to an
/// older signed artifact), a newer one goes ahead (`None`).
fn replaces(
    in_force: Option<&(u64, [u8; 32], Micros)>,
    v: &Verified,
) -> Result<Option<Output>, Refusal> {
    let Some(&(seq, hash, signed_at)) = in_force else {
        return Ok(None);
    };
    if hash == v.content_hash {
        return Ok(Some(Output::Duplicate { seq }));
    }
    if v.signed_at <= signed_at {
        let show = crate::wire::ts::format;
        return Err(ManifestError::Outdated {
            signed_at: show(v.signed_at),
            in_force: show(signed_at),
        }
        .into());
    }
    Ok(None)
}

/// The reports a heartbeat implies for a host that runs its target (DOMAIN §8, LIFT #1/#5):
/// Activating or Deferred ⇒ ActivationCompleted; Pending ⇒ DispatchAck and
/// ActivationCompleted. Converged is never synthesized: the soak must be observed by the
/// agent's own probes (the reference stamped it, possibly in the future, §6.6).
fn synthesis(rec: &projections::HostRecord, current: &str, at: Micros) -> Vec<AgentReport> {
    let completed = AgentReport::ActivationCompleted {
        observed_current_closure: current.to_string(),
        exit_code: 0,
        completed_at: at,
    };
    match rec.state {
        HostState::Activating | HostState::Deferred => vec![completed],
        HostState::Pending => vec![
            AgentReport::DispatchAck {
                // Unknown: the host was already at its target when the CP heard from it.
                current_closure_at_dispatch: current.to_string(),
                received_at: at,
            },
            completed,
        ],
        _ => Vec::new(),
    }
}

fn unavailable(reason: impl Into<String>) -> Refusal {
    Refusal::new(Class::Unavailable, "unavailable", reason)
}

fn rollout_refusal(e: RolloutRejection) -> Refusal {
    let (class, code) = match e {
        RolloutRejection::Unknown(_) => (Class::NotFound, "unknown-rollout"),
        RolloutRejection::IllegalForState { .. } => (Class::Conflict, "illegal-transition"),
        RolloutRejection::SupersessionExpected { .. } => (Class::Conflict, "supersession-expected"),
        RolloutRejection::Invariant(_) => (Class::Unprocessable, "invariant"),
    };
    Refusal::new(class, code, e.to_string())
}
