//! One rollout as a self-contained HTML page.

use super::{ForensicsError, Source, entries, line, summary};
use ledger::domain::RolloutId;
use ledger::event::Event;
use ledger::read::Logged;

/// The self-contained HTML page of one rollout (see [`report`]).
const REPORT_TEMPLATE: &str = include_str!("../report.html");

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
    let mut visit = |item: Logged| {
        let (r, h) = item.event.subject();
        if r != Some(rollout) {
            return;
        }
        first.get_or_insert(item.at);
        last = last.max(item.at);
        let entry = json!({
            "seq": item.seq, "t": item.at, "time": planner::decide::rfc3339(item.at),
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
    };
    // On a database with current tables, only the rollout's span of the log is read.
    let span = match source {
        Source::Db(db) => super::timeline::rollout_span(db, rollout)?,
        Source::Bundle(_) => None,
    };
    match (source, span) {
        (_, Some(None)) => return Ok(None),
        (Source::Db(db), Some(Some(span))) => {
            for item in super::timeline::entries_in(db, span)? {
                visit(item?);
            }
        }
        _ => {
            for item in entries(source)? {
                visit(item?);
            }
        }
    }
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
