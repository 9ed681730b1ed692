//! Timelines of one host or rollout, and the chain of decisions for one host (`why`).

use super::{ForensicsError, Source, entries, entries_from};
use ledger::domain::{Micros, RolloutId};
use ledger::event::{Event, RolloutCause};
use ledger::read::Logged;
use ledger::store::ReadOnlyStore;
use projections::State;
use std::path::Path;

/// One line of a timeline.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Line {
    /// The entry's seq.
    pub seq: u64,
    /// CP time (RFC 3339).
    pub cp_time: String,
    /// The agent's own time, for agent reports.
    pub agent_time: Option<String>,
    /// The entry's kind name (`HostTransitioned`, …).
    pub kind: &'static str,
    /// The rollout, as `channel@channelRef`.
    pub rollout: Option<String>,
    /// The host's name.
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
    /// Only the log's own records ([`log_record`]).
    pub log: bool,
}

/// The log's own records: the entries about no host or rollout (the genesis, key rotations,
/// annotations, access changes, fleet manifests, quarantine lifts, refused inputs) and the
/// rollout manifests CI posted. `timeline --log` lists them by time.
pub fn log_record(e: &Event) -> bool {
    matches!(
        e,
        Event::RolloutManifestAccepted(_) | Event::RolloutManifestSigned(_)
    ) || e.subject() == (None, None)
}

/// A value as the wire names it (`enforce`, `rollback-and-halt`), or its variant name.
fn wire<T: serde::Serialize + std::fmt::Debug>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        _ => format!("{v:?}"),
    }
}

/// Why a rollout moved, as an operator reads it.
pub fn cause_text(cause: &RolloutCause) -> String {
    match cause {
        RolloutCause::HostJoined { hostname } => format!("{hostname} joined"),
        RolloutCause::LastWaveReached => "the last wave was reached".into(),
        RolloutCause::AllHostsConverged => "every host converged".into(),
        RolloutCause::HostFailed { hostname } => format!("{hostname} failed"),
        RolloutCause::HostReverted { hostname } => format!("{hostname} was rolled back"),
        RolloutCause::SupersededBy { successor } => format!("superseded by {successor}"),
        RolloutCause::RetentionExpired => "retention expired".into(),
    }
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
                .map(|s| format!("{} ({})", s.control_id, wire(&s.effective_mode)))
                .collect();
            let (mode, status) = (wire(mode), wire(status));
            if failing.is_empty() {
                format!("ProbeResult {probe_name} {mode} {status}")
            } else {
                format!(
                    "ProbeResult {probe_name} {mode} {status}; failing controls: {}",
                    failing.join(", ")
                )
            }
        }
        R::Failed {
            failing_probes,
            policy_applied,
            ..
        } => format!(
            "Failed: probes {} ({})",
            failing_probes.join(", "),
            wire(policy_applied)
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
        Event::AgentReportRefused(a) => format!(
            "agent report #{} refused ({}: {}): {}",
            a.agent_seq,
            a.code,
            a.reason,
            report(&a.report)
        ),
        Event::HostTransitioned(t) => format!(
            "host {} -> {}{}",
            wire(&t.from),
            wire(&t.to),
            t.policy_applied
                .map(|p| format!(" (policy {})", wire(&p)))
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
            format!(
                "rollout {} -> {}: {}",
                wire(&t.from),
                wire(&t.to),
                cause_text(&t.cause)
            )
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
        Event::FleetManifestSigned(m) => {
            format!(
                "fleet manifest accepted ({} signature by {})",
                m.algorithm, m.signer
            )
        }
        Event::RolloutManifestSigned(m) => {
            format!(
                "rollout manifest accepted ({} signature by {})",
                m.algorithm, m.signer
            )
        }
        Event::AgentEnrolled(a) => format!(
            "enrolled as {} (serial {}, until {}) on bootstrap token {} signed by {}",
            a.certificate.common_name,
            hex(&a.certificate.serial),
            planner::decide::rfc3339(a.certificate.not_after),
            a.token.nonce,
            a.token.signer
        ),
        Event::AgentCertificateRenewed(a) => format!(
            "certificate renewed: {} (serial {}, until {}), replacing serial {}",
            a.certificate.common_name,
            hex(&a.certificate.serial),
            planner::decide::rfc3339(a.certificate.not_after),
            hex(&a.presented_serial)
        ),
        Event::AccessChanged(a) => {
            let grants = |g: &[ledger::event::TokenGrant]| {
                g.iter()
                    .map(|g| format!("{}:{}", g.role, g.name))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            format!(
                "access changed ({}): tokens added [{}], removed [{}]; keys added [{}], removed [{}]",
                a.by,
                grants(&a.tokens_added),
                grants(&a.tokens_removed),
                a.keys_added.join(", "),
                a.keys_removed.join(", ")
            )
        }
        Event::RevocationsAccepted(r) => {
            let mut listed: Vec<String> = r
                .revocations
                .iter()
                .take(10)
                .map(|v| {
                    format!(
                        "{} before {}",
                        v.hostname,
                        planner::decide::rfc3339(v.not_before)
                    )
                })
                .collect();
            if r.revocations.len() > listed.len() {
                listed.push(format!("and {} more", r.revocations.len() - listed.len()));
            }
            format!(
                "revocation list accepted ({} signature by {}, signed {}): {} revoked{}{}",
                r.file.algorithm,
                r.file.signer,
                planner::decide::rfc3339(r.file.signed_at),
                r.revocations.len(),
                if listed.is_empty() { "" } else { ": " },
                listed.join(", ")
            )
        }
        Event::WriterEpochStarted(w) => format!(
            "writer epoch {} started on {}, taking over the log at size {} (root {})",
            w.epoch,
            w.node,
            w.previous_size,
            hex(&w.previous_root)
        ),
        Event::BootstrapNoncesAccepted(n) => format!(
            "bootstrap-nonce allowlist accepted ({} signature by {}, signed {}): {} nonces",
            n.file.algorithm,
            n.file.signer,
            planner::decide::rfc3339(n.file.signed_at),
            n.nonces.len()
        ),
        other => other.kind().name().to_string(),
    }
}

/// What a revocation list says about one host: "revoked: certificates before T, by W,
/// reason R" (a host it lists twice: its last entry, the one in force).
pub(super) fn revocation_of(e: &Event, host: &str) -> Option<String> {
    let Event::RevocationsAccepted(r) = e else {
        return None;
    };
    let v = r.revocations.iter().rev().find(|v| v.hostname == host)?;
    Some(format!(
        "revoked: certificates before {}, by {}, reason: {}",
        planner::decide::rfc3339(v.not_before),
        v.revoked_by.as_deref().unwrap_or("(not stated)"),
        v.reason.as_deref().unwrap_or("(not stated)")
    ))
}

/// A signed artifact's bytes as `<JCS bytes>`, its signature as hex.
fn shorten_signed(v: &mut serde_json::Value) {
    let Some(obj) = v.as_object_mut() else {
        return;
    };
    if obj.contains_key("canonical") {
        obj.insert("canonical".into(), serde_json::json!("<JCS bytes>"));
    }
    if let Some(sig) = obj.get("signature").and_then(|s| s.as_array()) {
        let bytes: Vec<u8> = sig
            .iter()
            .filter_map(|b| b.as_u64().and_then(|b| u8::try_from(b).ok()))
            .collect();
        obj.insert("signature".into(), serde_json::json!(hex(&bytes)));
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The agent's own time of an agent report.
fn agent_time(e: &Event) -> Option<Micros> {
    match e {
        Event::AgentEventRecorded(a) => Some(a.report.at()),
        Event::AgentEventSynthesized(a) => Some(a.report.at()),
        Event::AgentReportRefused(a) => Some(a.report.at()),
        _ => None,
    }
}

/// A line for an item, as a timeline of `host` shows it (a revocation list: what it says
/// about that host).
pub(super) fn line_for(item: &Logged, host: Option<&str>) -> Line {
    let mut l = line(item);
    if let Some(h) = host
        && let Some(text) = revocation_of(&item.event, h)
    {
        l.summary = text;
        l.host = Some(h.to_string());
    }
    l
}

/// A line for an item.
pub fn line(item: &Logged) -> Line {
    let (rollout, host) = item.event.subject();
    let mut payload = serde_json::to_value(&item.event).unwrap_or_default();
    // Signed bytes are long and already summarised by their hash; a signature reads as hex.
    shorten_signed(&mut payload);
    if let Some(file) = payload.get_mut("file") {
        shorten_signed(file);
    }
    // So is an issued certificate (its serial, CN and validity are shown).
    if let Some(cert) = payload
        .get_mut("certificate")
        .and_then(|c| c.as_object_mut())
        && let Some(n) = cert.get("der").and_then(|d| d.as_array()).map(Vec::len)
    {
        cert.insert("der".into(), serde_json::json!(format!("<DER, {n} bytes>")));
    }
    Line {
        seq: item.seq,
        cp_time: planner::decide::rfc3339(item.at),
        agent_time: agent_time(&item.event).map(planner::decide::rfc3339),
        kind: item.event.kind().name(),
        rollout: rollout.map(ToString::to_string),
        host: host.map(str::to_string),
        summary: summary(&item.event),
        payload,
    }
}

/// A snapshot of the database when its projection tables reflect the whole log in this
/// build's fold version (None: they lag or are another version's, and callers scan).
fn current_tables(db: &Path) -> Result<Option<ledger::store::Snapshot>, ForensicsError> {
    let snap = ReadOnlyStore::open(db)?.snapshot()?;
    let current = State::stored_watermark(&snap)?
        .is_some_and(|m| m.fold_version == projections::FOLD_VERSION && m.next_seq == snap.size());
    Ok(current.then_some(snap))
}

/// The seqs of one host's entries from the database's entry index, when its tables are
/// current (otherwise None: the caller scans).
fn indexed_seqs(db: &Path, host: &str) -> Result<Option<Vec<u64>>, ForensicsError> {
    use ledger::tables::TableReader as _;
    let Some(snap) = current_tables(db)? else {
        return Ok(None);
    };
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
    for entry in snap.entries(covered..)? {
        let entry = entry?;
        if entry.event.names_host(host) {
            seqs.push(entry.seq);
        }
    }
    Ok(Some(seqs))
}

fn keep(filter: &Filter, item: &Logged) -> bool {
    if filter.since.is_some_and(|s| item.at < s) || filter.until.is_some_and(|u| item.at > u) {
        return false;
    }
    let (rollout, _) = item.event.subject();
    filter
        .host
        .as_deref()
        .is_none_or(|h| item.event.names_host(h))
        && filter.rollout.as_ref().is_none_or(|r| rollout == Some(r))
        && (!filter.log || log_record(&item.event))
}

/// The first seq recorded at or after `since` on a database: CP time never decreases along
/// the log (FORMAT §1), so a binary search over entry headers finds it in O(log n) reads.
fn first_at_or_after(db: &Path, since: Micros) -> Result<u64, ForensicsError> {
    let ro = ReadOnlyStore::open(db)?;
    let snap = ro.snapshot()?;
    let (mut lo, mut hi) = (0u64, snap.size());
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        let entry = snap.logged(mid)?.ok_or_else(|| ForensicsError::Entry {
            seq: mid,
            reason: "missing from the log".into(),
        })?;
        if entry.at < since {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    Ok(lo)
}

/// Every entry matching the filter, in seq order. A host's timeline on a database with
/// current tables reads only that host's entries, through the entry index.
pub fn timeline(source: Source<'_>, filter: &Filter) -> Result<Vec<Line>, ForensicsError> {
    let mut out = Vec::new();
    timeline_each(source, filter, |l| -> Result<(), ForensicsError> {
        out.push(l);
        Ok(())
    })?;
    Ok(out)
}

/// [`timeline`], handing each line to `f` as it is read instead of gathering them: a busy
/// host's years of history are hundreds of thousands of lines, each with its payload.
pub fn timeline_each<E: From<ForensicsError>>(
    source: Source<'_>,
    filter: &Filter,
    mut f: impl FnMut(Line) -> Result<(), E>,
) -> Result<(), E> {
    if let (Source::Db(db), Some(host)) = (source, &filter.host)
        && let Some(seqs) = indexed_seqs(db, host)?
    {
        let ro = ReadOnlyStore::open(db).map_err(ForensicsError::from)?;
        let snap = ro.snapshot().map_err(ForensicsError::from)?;
        for seq in seqs {
            let item = snap
                .logged(seq)
                .map_err(ForensicsError::from)?
                .ok_or_else(|| ForensicsError::Entry {
                    seq,
                    reason: "indexed but not in the log".into(),
                })?;
            if keep(filter, &item) {
                f(line_for(&item, filter.host.as_deref()))?;
            }
        }
        return Ok(());
    }
    // A window's start is found by time, not by reading what precedes it.
    let from = match (source, filter.since) {
        (Source::Db(db), Some(since)) => Some((first_at_or_after(db, since)?, 0)),
        _ => None,
    };
    for item in entries_from(source, from)? {
        let item = item?;
        if filter.until.is_some_and(|u| item.at > u) {
            break;
        }
        if keep(filter, &item) {
            f(line_for(&item, filter.host.as_deref()))?;
        }
    }
    Ok(())
}

/// The answer of [`why`]: the chain of entries, and the host's and rollout's records at the
/// end of the log.
pub type Why = (
    Vec<Line>,
    Option<projections::HostRecord>,
    Option<projections::RolloutRecord>,
);

/// The chain of decisions for one host in one rollout: every entry about it, plus the
/// rollout-level events that moved the rollout and the quarantine lifts on its channel from
/// its opening through its pruning (or the end of the log), with the final state.
///
/// On a database with current tables only the rollout's own span of the log is read (from
/// its opening to its pruning, or the end), and the final records come from the tables,
/// which equal the fold of the whole log: the cost follows the rollout, not history. A
/// bundle is folded from its start.
pub fn why(source: Source<'_>, host: &str, rollout: &RolloutId) -> Result<Why, ForensicsError> {
    if let Source::Db(db) = source
        && let Some(span) = rollout_span(db, rollout)?
    {
        let Some(span) = span else {
            return Ok((Vec::new(), None, None));
        };
        let mut out = Vec::new();
        for item in entries_in(db, span)? {
            let item = item?;
            if about(&item, host, rollout) {
                out.push(line(&item));
            }
        }
        let ro = ReadOnlyStore::open(db)?;
        let snap = ro.snapshot()?;
        let rec = read_row(&snap, projections::tables::HOSTS, &(rollout, host))?;
        let r = read_row(&snap, projections::tables::ROLLOUTS, rollout)?;
        return Ok((out, rec, r));
    }
    let mut state = State::untracked().without_index();
    let mut out = Vec::new();
    for item in entries(source)? {
        let item = item?;
        // The same span as on a database: from the opening through the pruning.
        let was_pruned = state
            .rollouts
            .get(rollout)
            .is_some_and(|r| r.state == ledger::domain::RolloutState::Pruned);
        state.apply(item.seq, item.at, &item.event);
        if !was_pruned && state.rollouts.contains_key(rollout) && about(&item, host, rollout) {
            out.push(line(&item));
        }
    }
    let rec = state.hosts.get(rollout, host).cloned();
    let r = state.rollouts.get(rollout).cloned();
    Ok((out, rec, r))
}

/// Whether `why` lists an entry: it is about the host in the rollout, about the rollout
/// alone, or lifts a quarantine on its channel.
fn about(item: &Logged, host: &str, rollout: &RolloutId) -> bool {
    let (r, h) = item.event.subject();
    let about_host = r == Some(rollout) && h == Some(host);
    let about_rollout = r == Some(rollout) && h.is_none();
    let about_closure =
        matches!(&item.event, Event::QuarantineLifted(q) if q.channel == rollout.channel);
    about_host || about_rollout || about_closure
}

/// One row of a projection table, decoded.
fn read_row<K: serde::Serialize, V: serde::de::DeserializeOwned>(
    snap: &ledger::store::Snapshot,
    table: &'static str,
    key: &K,
) -> Result<Option<V>, ForensicsError> {
    use ledger::tables::TableReader as _;
    snap.get(table, &projections::model::encode(key))?
        .map(|v| projections::model::decode(table, &v))
        .transpose()
        .map_err(Into::into)
}

/// The seqs a rollout's entries lie within on a database: from its `RolloutOpened` to its
/// pruning (nothing is recorded about a Pruned rollout) or the end of the log. `None` when
/// the tables are not current (the caller scans instead); `Some(None)` when the rollout was
/// never opened.
pub(crate) fn rollout_span(
    db: &Path,
    rollout: &RolloutId,
) -> Result<Option<Option<(u64, u64)>>, ForensicsError> {
    let Some(snap) = current_tables(db)? else {
        return Ok(None);
    };
    let r: Option<projections::RolloutRecord> =
        read_row(&snap, projections::tables::ROLLOUTS, rollout)?;
    Ok(Some(r.map(|r| {
        let last = if r.state == ledger::domain::RolloutState::Pruned {
            r.last_transition_seq
        } else {
            snap.size().saturating_sub(1)
        };
        (r.opened_seq, last)
    })))
}

/// The entries of a database from `span.0` through `span.1`, decoded.
pub(crate) fn entries_in(
    db: &Path,
    span: (u64, u64),
) -> Result<impl Iterator<Item = Result<Logged, ForensicsError>> + use<>, ForensicsError> {
    // The entries hold their own read transaction (and a private database open).
    let entries = ReadOnlyStore::open(db)?
        .snapshot()?
        .entries(span.0..=span.1)?;
    Ok(entries.map(|e| Ok(e?)))
}
