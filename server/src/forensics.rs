//! Forensics over a ledger database or an export bundle: the determinism check (re-run every
//! decision over the recorded inputs with the recorded `now`), timelines, the chain of
//! decisions for one host, and the projections at any point.
//!
//! Everything streams entries in seq order through one fold; nothing here writes.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufReader, Seek, SeekFrom};
use std::path::Path;

use ledger::bundle::{BundleReader, Record};
use ledger::domain::{Micros, OnHealthFailure, RolloutId};
use ledger::entry::EntryRef;
use ledger::event::{Event, RolloutCause};
use ledger::store::ReadOnlyStore;
use planner::{Decision, FleetView, HostInput, HostPolicy, Manifests, RolloutInput};
use projections::State;
use thiserror::Error;

/// Why forensics could not run (the input, not a divergence).
#[derive(Debug, Error)]
pub enum ForensicsError {
    /// Opening or reading a database.
    #[error(transparent)]
    Open(#[from] ledger::store::OpenError),
    /// Reading a bundle.
    #[error("bundle: {0}")]
    Bundle(String),
    /// An entry that does not parse or decode.
    #[error("entry {seq}: {reason}")]
    Entry {
        /// Seq.
        seq: u64,
        /// Why.
        reason: String,
    },
    /// IO.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// Reading the projection tables of a database.
    #[error(transparent)]
    Tables(#[from] ledger::tables::TableError),
}

/// One decoded entry.
#[derive(Debug, Clone)]
pub struct Item {
    /// Seq.
    pub seq: u64,
    /// CP time.
    pub at: Micros,
    /// The event.
    pub event: Event,
}

/// Where entries come from.
#[derive(Debug, Clone, Copy)]
pub enum Source<'a> {
    /// A ledger database (read-only).
    Db(&'a Path),
    /// An export bundle.
    Bundle(&'a Path),
}

fn decode(seq: u64, bytes: &[u8]) -> Result<Item, ForensicsError> {
    let bad = |reason: String| ForensicsError::Entry { seq, reason };
    let e = EntryRef::parse(bytes).map_err(|e| bad(e.to_string()))?;
    let event = e.event().map_err(|e| bad(e.to_string()))?;
    Ok(Item {
        seq: e.header.seq,
        at: e.header.recorded_at_us,
        event,
    })
}

/// Calls `f` with every entry in seq order; `f` returns false to stop.
pub fn for_each(
    source: Source<'_>,
    mut f: impl FnMut(Item) -> Result<bool, ForensicsError>,
) -> Result<(), ForensicsError> {
    for_each_raw(source, None, |seq, _, bytes| f(decode(seq, bytes)?))
}

/// The first place where a recomputed decision differs from the recorded one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Divergence {
    /// Seq of the first entry that differs.
    pub seq: u64,
    /// What the log holds there.
    pub recorded: String,
    /// What the decision functions produce there.
    pub recomputed: String,
}

/// What the determinism check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckReport {
    /// Entries walked.
    pub entries: u64,
    /// Inputs whose decisions were recomputed.
    pub decisions: u64,
    /// Planner runs recomputed.
    pub plans: u64,
    /// The first divergence, if any.
    pub divergence: Option<Divergence>,
}

/// Whether an event is an input recorded as-is (nothing decides it from the state).
fn is_recorded_input(e: &Event) -> bool {
    matches!(
        e,
        Event::Genesis(_)
            | Event::KeyRotated(_)
            | Event::Annotation(_)
            | Event::FleetManifestAccepted(_)
            | Event::RolloutManifestAccepted(_)
            | Event::QuarantineLifted(_)
            | Event::DispatchDelivered(_)
            | Event::InputRejected(_)
            | Event::Unknown { .. }
    )
}

/// Whether an event can only come from the planner.
fn is_planner_output(e: &Event) -> bool {
    match e {
        Event::RolloutOpened(_)
        | Event::HostJoined(_)
        | Event::WaveAdvanced(_)
        | Event::GateDecision(_)
        | Event::DispatchQueued(_) => true,
        Event::RolloutTransitioned(t) => !matches!(t.cause, RolloutCause::RetentionExpired),
        _ => false,
    }
}

fn policy(m: &Manifests, r: &RolloutId) -> HostPolicy {
    HostPolicy {
        on_health_failure: m
            .policy(&r.channel)
            .map_or(OnHealthFailure::Halt, |p| p.on_health_failure),
    }
}

/// Recomputes the events the decision starting at `item` produces, from the state before it.
fn recompute(state: &State, manifests: &Manifests, item: &Item) -> Result<Vec<Event>, String> {
    let now = item.at;
    match &item.event {
        Event::AgentEventRecorded(e) => planner::decide_report(
            state,
            &e.rollout_id,
            &e.hostname,
            &HostInput::Agent {
                agent_seq: e.agent_seq,
                report: e.report.clone(),
            },
            now,
            &policy(manifests, &e.rollout_id),
        )
        .map_err(|r| format!("the host machine refuses this report: {r}")),
        Event::AgentEventSynthesized(e) => planner::decide_report(
            state,
            &e.rollout_id,
            &e.hostname,
            &HostInput::Synthesized {
                report: e.report.clone(),
                heartbeat_at: e.heartbeat_at,
                basis: e.basis.clone(),
            },
            now,
            &policy(manifests, &e.rollout_id),
        )
        .map_err(|r| format!("the host machine refuses this synthesized report: {r}")),
        Event::RolloutCleared(e) => planner::decide_rollout(
            state,
            &e.rollout_id,
            &RolloutInput::OperatorClearance {
                operator: e.operator.clone(),
                reason: e.reason.clone(),
            },
            now,
        )
        .map_err(|r| format!("the rollout machine refuses this clearance: {r}")),
        Event::RolloutTransitioned(t) if matches!(t.cause, RolloutCause::RetentionExpired) => {
            planner::decide_rollout(state, &t.rollout_id, &RolloutInput::RetentionExpired, now)
                .map_err(|r| format!("the rollout machine refuses retention: {r}"))
        }
        e if is_planner_output(e) => {
            let view = FleetView {
                state,
                compliance_available: true,
            };
            Ok(planner::plan(&view, manifests, now)
                .into_iter()
                .flat_map(Decision::into_events)
                .collect())
        }
        other => Err(format!(
            "{} is recorded with no input before it that decides it",
            other.kind().name()
        )),
    }
}

fn show(e: &Event) -> String {
    format!(
        "{} {}",
        e.kind().name(),
        serde_json::to_string(e).unwrap_or_default()
    )
}

/// Re-runs every decision over the recorded inputs with the recorded `now` and compares.
pub fn check(source: Source<'_>) -> Result<CheckReport, ForensicsError> {
    let mut state = State::default().without_index();
    let mut manifests = Manifests::default();
    let mut expected: VecDeque<Event> = VecDeque::new();
    let mut report = CheckReport {
        entries: 0,
        decisions: 0,
        plans: 0,
        divergence: None,
    };
    for_each(source, |item| {
        report.entries += 1;
        if expected.is_empty() && !is_recorded_input(&item.event) {
            match recompute(&state, &manifests, &item) {
                Ok(events) => {
                    if is_planner_output(&item.event) {
                        report.plans += 1;
                    } else {
                        report.decisions += 1;
                    }
                    expected = events.into();
                }
                Err(why) => {
                    report.divergence = Some(Divergence {
                        seq: item.seq,
                        recorded: show(&item.event),
                        recomputed: why,
                    });
                    return Ok(false);
                }
            }
        }
        // Recorded inputs still have preconditions the writer checked.
        let unfounded = match &item.event {
            Event::DispatchDelivered(d) => (!state
                .dispatch_queue
                .contains_key(&(d.hostname.clone(), d.rollout_id.clone())))
            .then_some("no such dispatch was queued"),
            Event::QuarantineLifted(q) => (!state
                .quarantine
                .contains_key(&(q.channel.clone(), q.closure.clone())))
            .then_some("no such closure was quarantined"),
            _ => None,
        };
        if let (Some(why), true) = (unfounded, expected.is_empty()) {
            report.divergence = Some(Divergence {
                seq: item.seq,
                recorded: show(&item.event),
                recomputed: why.into(),
            });
            return Ok(false);
        }
        if !is_recorded_input(&item.event) || !expected.is_empty() {
            match expected.pop_front() {
                Some(e) if e == item.event => {}
                other => {
                    report.divergence = Some(Divergence {
                        seq: item.seq,
                        recorded: show(&item.event),
                        recomputed: other.map_or(
                            "nothing (the decision ended before this entry)".into(),
                            |e| show(&e),
                        ),
                    });
                    return Ok(false);
                }
            }
        }
        if let Err(e) = manifests.apply(&item.event) {
            return Err(ForensicsError::Entry {
                seq: item.seq,
                reason: e.to_string(),
            });
        }
        state.apply(item.seq, item.at, &item.event);
        Ok(true)
    })?;
    if report.divergence.is_none()
        && let Some(e) = expected.front()
    {
        report.divergence = Some(Divergence {
            seq: report.entries,
            recorded: "the end of the log".into(),
            recomputed: show(e),
        });
    }
    Ok(report)
}

/// One line of a timeline.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Line {
    /// Seq.
    pub seq: u64,
    /// CP time (RFC 3339).
    pub cp_time: String,
    /// The agent's own time, for agent reports.
    pub agent_time: Option<String>,
    /// Kind.
    pub kind: &'static str,
    /// Rollout.
    pub rollout: Option<String>,
    /// Host.
    pub host: Option<String>,
    /// One-line summary.
    pub summary: String,
    /// The decoded payload.
    pub payload: serde_json::Value,
}

/// Which entries a timeline shows.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Entries about this host.
    pub host: Option<String>,
    /// Entries about this rollout.
    pub rollout: Option<RolloutId>,
    /// From this CP time.
    pub since: Option<Micros>,
    /// Up to this CP time.
    pub until: Option<Micros>,
}

/// A one-line, human summary of an event.
pub fn summary(e: &Event) -> String {
    use ledger::domain::AgentReport as R;
    let report = |r: &R| match r {
        R::ProbeResult {
            probe_name,
            mode,
            status,
            sub_results,
            ..
        } => {
            let failing: Vec<String> = sub_results
                .iter()
                .filter(|s| s.status == ledger::domain::ProbeStatus::Fail)
                .map(|s| format!("{} ({:?})", s.control_id, s.effective_mode))
                .collect();
            if failing.is_empty() {
                format!("ProbeResult {probe_name} {mode:?} {status:?}")
            } else {
                format!(
                    "ProbeResult {probe_name} {mode:?} {status:?}; failing controls: {}",
                    failing.join(", ")
                )
            }
        }
        R::Failed {
            failing_probes,
            policy_applied,
            ..
        } => format!(
            "Failed: probes {} ({policy_applied:?})",
            failing_probes.join(", ")
        ),
        R::ActivationFailed {
            exit_code,
            stderr_tail,
            ..
        } => format!("ActivationFailed exit {exit_code}: {stderr_tail}"),
        other => other.name().to_string(),
    };
    match e {
        Event::AgentEventRecorded(a) => {
            format!("agent report #{}: {}", a.agent_seq, report(&a.report))
        }
        Event::AgentEventSynthesized(a) => {
            format!("synthesized ({}): {}", a.basis, report(&a.report))
        }
        Event::HostTransitioned(t) => format!(
            "host {:?} -> {:?}{}",
            t.from,
            t.to,
            t.policy_applied
                .map(|p| format!(" (policy {p:?})"))
                .unwrap_or_default()
        ),
        Event::RolloutOpened(o) => format!(
            "rollout opened{}",
            if o.supersedes.is_empty() {
                String::new()
            } else {
                format!(
                    ", superseding {}",
                    o.supersedes
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
        ),
        Event::HostJoined(j) => format!("host joined in wave {}", j.host.wave),
        Event::WaveAdvanced(w) => format!("wave {} -> {}", w.from_wave, w.to_wave),
        Event::RolloutTransitioned(t) => {
            format!("rollout {:?} -> {:?} ({:?})", t.from, t.to, t.cause)
        }
        Event::DispatchQueued(d) => format!("dispatch queued: {}", d.target_closure),
        Event::DispatchDelivered(_) => "dispatch delivered to the agent".into(),
        Event::DispatchAcknowledged(d) => format!("dispatch acked (agent seq {})", d.agent_seq),
        Event::GateDecision(g) => match &g.block {
            Some(b) => format!("blocked by gate {}: {}", b.gate(), b.reason()),
            None => "no longer blocked".into(),
        },
        Event::QuarantineAdded(q) => format!("closure {} quarantined on {}", q.closure, q.channel),
        Event::QuarantineLifted(q) => format!(
            "quarantine of {} on {} lifted by {}: {}",
            q.closure, q.channel, q.operator, q.reason
        ),
        Event::ProbeFailureRecorded(p) => format!(
            "enforce failure: {} {}",
            p.probe_name,
            p.control_id.as_deref().unwrap_or("")
        ),
        Event::RolloutCleared(c) => format!("cleared by {}: {}", c.operator, c.reason),
        Event::FleetManifestAccepted(m) => {
            format!("fleet manifest accepted (signed by {})", m.signer)
        }
        Event::RolloutManifestAccepted(m) => {
            format!("rollout manifest accepted (signed by {})", m.signer)
        }
        other => other.kind().name().to_string(),
    }
}

/// The agent's own time of an agent report.
fn agent_time(e: &Event) -> Option<Micros> {
    match e {
        Event::AgentEventRecorded(a) => Some(a.report.at()),
        Event::AgentEventSynthesized(a) => Some(a.report.at()),
        _ => None,
    }
}

/// A line for an item.
pub fn line(item: &Item) -> Line {
    let (rollout, host) = item.event.subject();
    let mut payload = serde_json::to_value(&item.event).unwrap_or_default();
    // Manifest bytes are long and already summarised by their hash.
    if let Some(obj) = payload.as_object_mut()
        && obj.contains_key("canonical")
    {
        obj.insert("canonical".into(), serde_json::json!("<JCS bytes>"));
    }
    Line {
        seq: item.seq,
        cp_time: crate::wire::ts::format(item.at),
        agent_time: agent_time(&item.event).map(crate::wire::ts::format),
        kind: item.event.kind().name(),
        rollout: rollout.map(ToString::to_string),
        host: host.map(str::to_string),
        summary: summary(&item.event),
        payload,
    }
}

/// The seqs of one host's entries from the database's entry index, when its tables are
/// current (otherwise None: the caller scans).
fn indexed_seqs(db: &Path, host: &str) -> Result<Option<Vec<u64>>, ForensicsError> {
    use ledger::tables::TableReader as _;
    let ro = ReadOnlyStore::open(db)?;
    let snap = ro.snapshot()?;
    let current = State::stored_watermark(&snap)?
        .is_some_and(|m| m.fold_version == projections::FOLD_VERSION && m.next_seq == snap.size());
    if !current {
        return Ok(None);
    }
    // The index is written in bulk: it covers the entries below its watermark, one row per
    // block of `INDEX_BLOCK` entries and host; the entries after it (fewer than
    // `INDEX_BLOCK`) are scanned.
    let covered = State::stored_index_watermark(&snap)?;
    let mut seqs = Vec::new();
    for block in 0..covered / projections::INDEX_BLOCK {
        let key = projections::host_entries_key(block, host);
        let row = snap.get(projections::tables::HOST_ENTRIES, &key)?;
        if let Some(row) = row {
            seqs.extend(projections::host_entries_seqs(block, &row).ok_or_else(|| {
                ledger::tables::TableError {
                    table: projections::tables::HOST_ENTRIES.into(),
                    reason: format!("malformed row for host {host:?} in block {block}"),
                }
            })?);
        }
    }
    snap.for_each_entry(covered.., |seq, bytes| {
        if decode(seq, bytes)?.event.subject().1 == Some(host) {
            seqs.push(seq);
        }
        Ok::<(), ForensicsError>(())
    })?;
    Ok(Some(seqs))
}

fn keep(filter: &Filter, item: &Item) -> bool {
    if filter.since.is_some_and(|s| item.at < s) || filter.until.is_some_and(|u| item.at > u) {
        return false;
    }
    let (rollout, host) = item.event.subject();
    filter.host.as_deref().is_none_or(|h| host == Some(h))
        && filter.rollout.as_ref().is_none_or(|r| rollout == Some(r))
}

/// Every entry matching the filter, in seq order. A host's timeline on a database with
/// current tables reads only that host's entries, through the entry index.
pub fn timeline(source: Source<'_>, filter: &Filter) -> Result<Vec<Line>, ForensicsError> {
    if let (Source::Db(db), Some(host)) = (source, &filter.host)
        && let Some(seqs) = indexed_seqs(db, host)?
    {
        let ro = ReadOnlyStore::open(db)?;
        let snap = ro.snapshot()?;
        let mut out = Vec::new();
        for seq in seqs {
            let bytes = snap.entry(seq)?.ok_or_else(|| ForensicsError::Entry {
                seq,
                reason: "indexed but not in the log".into(),
            })?;
            let item = decode(seq, &bytes)?;
            if keep(filter, &item) {
                out.push(line(&item));
            }
        }
        return Ok(out);
    }
    let mut out = Vec::new();
    for_each(source, |item| {
        if filter.until.is_some_and(|u| item.at > u) {
            return Ok(false);
        }
        if keep(filter, &item) {
            out.push(line(&item));
        }
        Ok(true)
    })?;
    Ok(out)
}

/// The answer of [`why`]: the chain of entries, and the host's and rollout's records at the
/// end of the log.
pub type Why = (
    Vec<Line>,
    Option<projections::HostRecord>,
    Option<projections::RolloutRecord>,
);

/// The chain of decisions for one host in one rollout: every entry about it, plus the
/// rollout-level events that moved the rollout while the host was in it, with the final
/// state.
pub fn why(source: Source<'_>, host: &str, rollout: &RolloutId) -> Result<Why, ForensicsError> {
    let mut state = State::untracked().without_index();
    let mut out = Vec::new();
    for_each(source, |item| {
        let (r, h) = item.event.subject();
        let about_host = r == Some(rollout) && h == Some(host);
        let about_rollout = r == Some(rollout) && h.is_none();
        let about_closure =
            matches!(&item.event, Event::QuarantineLifted(q) if q.channel == rollout.channel);
        if about_host || about_rollout || about_closure {
            out.push(line(&item));
        }
        state.apply(item.seq, item.at, &item.event);
        Ok(true)
    })?;
    let rec = state.hosts.get(rollout, host).cloned();
    let r = state.rollouts.get(rollout).cloned();
    Ok((out, rec, r))
}

/// The projections after entry `seq` (inclusive), or after the last entry at or before
/// `time`: a full fold from entry 0, every row included. [`replay`] is the fast path.
pub fn replay_full(
    source: Source<'_>,
    seq: Option<u64>,
    time: Option<Micros>,
) -> Result<State, ForensicsError> {
    let mut state = State::untracked().without_index();
    for_each(source, |item| {
        if seq.is_some_and(|s| item.seq > s) || time.is_some_and(|t| item.at > t) {
            return Ok(false);
        }
        state.apply(item.seq, item.at, &item.event);
        Ok(true)
    })?;
    state.set_tracking(true);
    Ok(state)
}

/// Calls `f` with every entry's seq, bundle record offset (0 for a database) and stored
/// bytes, from `from` (a seq and its record offset, located by an earlier read) or from entry
/// 0; `f` returns false to stop.
fn for_each_raw(
    source: Source<'_>,
    from: Option<(u64, u64)>,
    mut f: impl FnMut(u64, u64, &[u8]) -> Result<bool, ForensicsError>,
) -> Result<(), ForensicsError> {
    enum Stop {
        Done,
        F(ForensicsError),
    }
    impl From<ledger::store::OpenError> for Stop {
        fn from(e: ledger::store::OpenError) -> Stop {
            Stop::F(e.into())
        }
    }
    match source {
        Source::Db(path) => {
            let ro = ReadOnlyStore::open(path)?;
            let snap = ro.snapshot()?;
            let start = from.map_or(0, |(s, _)| s);
            match snap.for_each_entry(start.., |seq, bytes| match f(seq, 0, bytes) {
                Ok(true) => Ok(()),
                Ok(false) => Err(Stop::Done),
                Err(e) => Err(Stop::F(e)),
            }) {
                Ok(()) | Err(Stop::Done) => Ok(()),
                Err(Stop::F(e)) => Err(e),
            }
        }
        Source::Bundle(path) => {
            let bad = |e: ledger::verify::VerifyError| ForensicsError::Bundle(e.to_string());
            let mut file = File::open(path)?;
            let (mut reader, mut seq) = match from {
                Some((seq, offset)) => {
                    file.seek(SeekFrom::Start(offset))?;
                    (BundleReader::resume(BufReader::new(file), offset), seq)
                }
                None => (BundleReader::new(BufReader::new(file)).map_err(bad)?, 0),
            };
            loop {
                let offset = reader.offset();
                match reader.next_record().map_err(bad)? {
                    Record::Entry(bytes) => {
                        if !f(seq, offset, bytes)? {
                            return Ok(());
                        }
                        seq += 1;
                    }
                    Record::End => return Ok(()),
                    Record::Key(_) | Record::Checkpoint(_) => {}
                }
            }
        }
    }
}

/// The hash of entry `seq` (at bundle record `offset`), if the source has it there.
fn entry_hash_at(
    source: Source<'_>,
    seq: u64,
    offset: u64,
) -> Result<Option<[u8; 32]>, ForensicsError> {
    let mut hash = None;
    for_each_raw(source, Some((seq, offset)), |_, _, bytes| {
        hash = EntryRef::parse(bytes)
            .ok()
            .filter(|e| e.header.seq == seq)
            .map(|e| *e.hash().as_bytes());
        Ok(false)
    })?;
    Ok(hash)
}

/// The hash of entry 0 (None: an empty source).
fn first_entry_hash(source: Source<'_>) -> Result<Option<[u8; 32]>, ForensicsError> {
    let mut hash = None;
    for_each_raw(source, None, |_, _, bytes| {
        hash = crate::snapshots::entry_hash(bytes);
        Ok(false)
    })?;
    Ok(hash)
}

/// What [`replay`] found.
#[derive(Debug)]
pub struct Replayed {
    /// The projections at the point, without the host records of Pruned rollouts.
    pub state: State,
    /// Host records of Pruned rollouts left out (they never change after pruning;
    /// `timeline --rollout` and `why` show them, [`replay_full`] includes them).
    pub pruned_hosts_omitted: usize,
    /// The snapshot the fold started from (entries in it), if one was used.
    pub from_snapshot: Option<u64>,
    /// Entries folded from there.
    pub folded: u64,
    /// Why the snapshot cache could not be written, if it could not (replay still worked).
    pub cache_warning: Option<String>,
}

/// The point of a replay.
#[derive(Clone, Copy, Debug, Default)]
pub struct Point {
    /// Through this entry (inclusive).
    pub seq: Option<u64>,
    /// Through the last entry recorded at or before this CP time.
    pub time: Option<Micros>,
}

impl Point {
    fn includes(&self, seq: u64, at: Micros) -> bool {
        self.seq.is_none_or(|s| seq <= s) && self.time.is_none_or(|t| at <= t)
    }
}

/// The projections at a point, folded from the nearest replay snapshot
/// ([`crate::snapshots`]) at or before it, or from entry 0 when there is none yet. Snapshots
/// of every `every` entries (normally [`crate::snapshots::SNAPSHOT_EVERY`]) passed on the
/// way are added to the cache beside the source.
pub fn replay(source: Source<'_>, point: Point, every: u64) -> Result<Replayed, ForensicsError> {
    use crate::snapshots::{Cache, NewMark, entry_hash};
    let path = match source {
        Source::Db(p) | Source::Bundle(p) => p,
    };
    let every = every.max(1);
    let mut cache = Cache::open(path);
    let genesis = first_entry_hash(source)?;
    // The nearest usable snapshot: one whose entry still hashes as recorded and whose body
    // is intact; a damaged body falls back to an earlier one. An entry that hashes otherwise
    // means another log (one forked from this one): the whole cache is dropped and rebuilt.
    let mut start = None;
    if let Some(genesis) = genesis {
        let marks: Vec<_> = cache.usable(&genesis, point.seq, point.time).collect();
        for mark in marks {
            if entry_hash_at(source, mark.seq - 1, mark.offset)? != Some(mark.hash) {
                cache.discard();
                break;
            }
            if let Ok(state) = cache.load(&mark) {
                start = Some((mark, state));
                break;
            }
        }
    }
    let from = start.as_ref().map(|(m, _)| (m.seq - 1, m.offset));
    let from_snapshot = start.as_ref().map(|(m, _)| m.seq);
    let mut state = match start {
        Some((_, s)) => s,
        None => State::untracked().without_index(),
    };
    let mut new: Vec<NewMark> = Vec::new();
    let mut folded = 0u64;
    for_each_raw(source, from, |seq, offset, bytes| {
        // The resumed read starts at the snapshot's last entry, already folded in.
        if from.is_some_and(|(s, _)| seq == s) {
            return Ok(true);
        }
        let item = decode(seq, bytes)?;
        if !point.includes(item.seq, item.at) {
            return Ok(false);
        }
        state.apply(item.seq, item.at, &item.event);
        folded += 1;
        let next = seq + 1;
        if next.is_multiple_of(every)
            && !cache.has(next)
            && let Some(hash) = entry_hash(bytes)
        {
            new.push(NewMark {
                seq: next,
                at: item.at,
                hash,
                offset,
                body: state.snapshot(),
            });
        }
        Ok(true)
    })?;
    let cache_warning = match genesis {
        Some(g) => cache
            .append(&g, &new)
            .err()
            .map(|e| format!("{}: {e}", crate::snapshots::cache_path(path).display())),
        None => None,
    };
    state.drop_pruned_hosts();
    let pruned_hosts_omitted = usize::try_from(state.forgotten_hosts()).unwrap_or(usize::MAX);
    state.set_tracking(true);
    Ok(Replayed {
        state,
        pruned_hosts_omitted,
        from_snapshot,
        folded,
        cache_warning,
    })
}

/// The projections as JSON: one array of rows per table.
pub fn state_json(s: &State) -> serde_json::Value {
    use serde_json::json;
    json!({
        "next_seq": s.next_seq,
        "rollouts": s.rollouts.values().collect::<Vec<_>>(),
        "hosts": s.hosts.values().collect::<Vec<_>>(),
        "probe_failures": s.probe_failures.iter().map(|((r, h, c), v)| json!({"rollout": r.to_string(), "host": h, "control": c, "row": v})).collect::<Vec<_>>(),
        "quarantine": s.quarantine.iter().map(|((c, cl), v)| json!({"channel": c, "closure": cl, "row": v})).collect::<Vec<_>>(),
        "dispatch_queue": s.dispatch_queue.iter().map(|((h, r), v)| json!({"host": h, "rollout": r.to_string(), "row": v})).collect::<Vec<_>>(),
        "deferrals": s.deferrals.iter().map(|((r, h), v)| json!({"rollout": r.to_string(), "host": h, "gate": v.block.gate(), "reason": v.block.reason(), "row": v})).collect::<Vec<_>>(),
    })
}

/// The projections as readable tables.
pub fn state_text(s: &State) -> String {
    use std::fmt::Write as _;
    let t = crate::wire::ts::format;
    let mut o = String::new();
    let _ = writeln!(o, "state after {} entries\n", s.next_seq);
    let _ = writeln!(
        o,
        "ROLLOUTS\n{:<28} {:<11} {:>4} {:>9} {:>9}  opened",
        "rollout", "state", "wave", "opened@", "changed@"
    );
    for r in s.rollouts.values() {
        let _ = writeln!(
            o,
            "{:<28} {:<11} {:>4} {:>9} {:>9}  {}",
            r.rollout_id.to_string(),
            format!("{:?}", r.state),
            r.current_wave,
            r.opened_seq,
            r.updated_seq,
            t(r.opened_at)
        );
    }
    let _ = writeln!(
        o,
        "\nHOSTS\n{:<28} {:<16} {:>4} {:<10} {:>8} {:>9}",
        "rollout", "host", "wave", "state", "agentseq", "changed@"
    );
    for h in s.hosts.values() {
        let _ = writeln!(
            o,
            "{:<28} {:<16} {:>4} {:<10} {:>8} {:>9}",
            h.rollout_id.to_string(),
            h.hostname,
            h.wave,
            format!("{:?}", h.state),
            h.last_event_seq,
            h.updated_seq
        );
    }
    let _ = writeln!(o, "\nDEFERRALS (current gate block per host)");
    for ((r, h), d) in s.deferrals.iter() {
        let _ = writeln!(
            o,
            "{:<28} {:<16} @{:<8} {}",
            r.to_string(),
            h,
            d.updated_seq,
            d.block.reason()
        );
    }
    let _ = writeln!(o, "\nQUARANTINE");
    for ((c, cl), q) in s.quarantine.iter() {
        let _ = writeln!(
            o,
            "{c:<10} {cl}  by {} on {} @{}",
            q.rollout_id, q.hostname, q.created_seq
        );
    }
    let _ = writeln!(o, "\nDISPATCH QUEUE");
    for ((h, r), d) in s.dispatch_queue.iter() {
        let _ = writeln!(
            o,
            "{h:<16} {:<28} {}  soak due {} @{}",
            r.to_string(),
            d.target_closure,
            t(d.soak_due_at),
            d.updated_seq
        );
    }
    let _ = writeln!(o, "\nPROBE FAILURES (outstanding enforce failures)");
    for ((r, h, c), p) in s.probe_failures.iter() {
        let _ = writeln!(
            o,
            "{:<28} {h:<16} {c:<24} {} @{}",
            r.to_string(),
            p.framework.as_deref().unwrap_or("-"),
            p.created_seq
        );
    }
    o
}

/// The self-contained HTML page of one rollout (see [`report`]).
const REPORT_TEMPLATE: &str = include_str!("report.html");

/// One rollout as a self-contained HTML page: hosts grouped by wave on one axis, time on the
/// other, each host's states as coloured spans; gate blocks, dispatches, probe failures,
/// failures, rollbacks and quarantines marked; clicking a span or mark shows its entry. No
/// network fetches: data, script and style are inline.
pub fn report(source: Source<'_>, rollout: &RolloutId) -> Result<Option<String>, ForensicsError> {
    use serde_json::json;
    let mut hosts: std::collections::BTreeMap<String, serde_json::Value> = Default::default();
    let mut events = Vec::new();
    let mut rollout_events = Vec::new();
    let (mut first, mut last) = (None, 0i64);
    for_each(source, |item| {
        let (r, h) = item.event.subject();
        if r != Some(rollout) {
            return Ok(true);
        }
        first.get_or_insert(item.at);
        last = last.max(item.at);
        let entry = json!({
            "seq": item.seq, "t": item.at, "time": crate::wire::ts::format(item.at),
            "kind": item.event.kind().name(), "summary": summary(&item.event),
            "payload": line(&item).payload,
        });
        match (&item.event, h) {
            (Event::HostJoined(j), Some(h)) => {
                hosts.insert(h.to_string(), json!({"host": h, "wave": j.host.wave}));
                events.push(json!({"host": h, "state": "Pending", "entry": entry}));
            }
            (Event::HostTransitioned(t), Some(h)) => {
                events.push(json!({"host": h, "state": format!("{:?}", t.to), "entry": entry}));
            }
            (_, Some(h)) => {
                let mark = match &item.event {
                    Event::GateDecision(g) if g.block.is_some() => Some("block"),
                    Event::DispatchQueued(_) => Some("dispatch"),
                    Event::ProbeFailureRecorded(_) => Some("failure"),
                    Event::QuarantineAdded(_) => Some("quarantine"),
                    Event::AgentEventRecorded(a) => match a.report {
                        ledger::domain::AgentReport::Failed { .. }
                        | ledger::domain::AgentReport::ActivationFailed { .. } => Some("failure"),
                        ledger::domain::AgentReport::RollbackComplete { .. } => Some("rollback"),
                        _ => Some("report"),
                    },
                    _ => Some("other"),
                };
                events.push(json!({"host": h, "mark": mark, "entry": entry}));
            }
            (_, None) => rollout_events.push(entry),
        }
        Ok(true)
    })?;
    let Some(first) = first else {
        return Ok(None);
    };
    let mut hosts: Vec<serde_json::Value> = hosts.into_values().collect();
    hosts.sort_by_key(|h| (h["wave"].as_u64(), h["host"].as_str().map(str::to_string)));
    let data = json!({
        "rollout": rollout.to_string(),
        "start": first,
        "end": last.max(first + 1),
        "hosts": hosts,
        "events": events,
        "rolloutEvents": rollout_events,
    });
    // Inside <script>, "</" would end the element: escape every "<".
    let data = data.to_string().replace('<', "\\u003c");
    Ok(Some(
        REPORT_TEMPLATE
            .replace("{{TITLE}}", &html_escape(&rollout.to_string()))
            .replace("{{DATA}}", &data),
    ))
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
