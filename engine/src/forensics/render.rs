//! The replayed state as JSON and as text tables.

use projections::State;

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
    let t = planner::decide::rfc3339;
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
