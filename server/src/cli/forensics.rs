//! Replay, timelines and `why` over a database or a bundle.

use crate::{Invalid, Source};
use anyhow::Context as _;
use anyhow::{Result, bail};
use std::io::Write;

pub(crate) fn forensic_source(s: &Source) -> engine::forensics::Source<'_> {
    match (&s.db, &s.bundle) {
        (Some(db), _) => engine::forensics::Source::Db(db),
        (_, Some(b)) => engine::forensics::Source::Bundle(b),
        (None, None) => unreachable!("clap requires one of --db and --bundle"),
    }
}

pub(crate) fn time_arg(name: &str, v: Option<&str>) -> Result<Option<i64>> {
    v.map(|t| wire::ts::parse(t).map_err(|e| anyhow::anyhow!("--{name}: {e}")))
        .transpose()
}

pub(crate) fn replay(
    s: &Source,
    at_seq: Option<u64>,
    at_time: Option<&str>,
    check: bool,
    include_pruned: bool,
    json: bool,
) -> Result<()> {
    let src = forensic_source(s);
    if check {
        let r = engine::forensics::check(src)?;
        if json {
            println!(
                "{}",
                serde_json::json!({"entries": r.entries, "decisions": r.decisions, "plans": r.plans,
                    "divergence": r.divergence.as_ref().map(|d| serde_json::json!({"seq": d.seq, "recorded": d.recorded, "recomputed": d.recomputed}))})
            );
        }
        return match r.divergence {
            None => {
                if !json {
                    println!(
                        "deterministic: {} entries, {} decisions and {} planner runs recomputed, all identical",
                        r.entries, r.decisions, r.plans
                    );
                }
                Ok(())
            }
            Some(d) => Err(Invalid(format!(
                "divergence at seq {}: recorded {}; recomputed {}",
                d.seq, d.recorded, d.recomputed
            ))
            .into()),
        };
    }
    let at_time = time_arg("at-time", at_time)?;
    if at_seq.is_none() && at_time.is_none() {
        bail!("give --at-seq N, --at-time T or --check");
    }
    let point = engine::forensics::Point {
        seq: at_seq,
        time: at_time,
    };
    let (state, omitted) = if include_pruned {
        (
            engine::forensics::replay_full(src, point.seq, point.time)?,
            0,
        )
    } else {
        let r = engine::forensics::replay(src, point, engine::replay_cache::SNAPSHOT_EVERY)?;
        if let Some(w) = &r.cache_warning {
            eprintln!("warning: replay snapshots not saved ({w}); replays stay full folds");
        }
        (r.state, r.pruned_hosts_omitted)
    };
    if json {
        let mut v = engine::forensics::state_json(&state);
        v["pruned_hosts_omitted"] = omitted.into();
        println!("{v}");
    } else {
        print!("{}", engine::forensics::state_text(&state));
        if omitted > 0 {
            println!(
                "\n({omitted} host records of Pruned rollouts not shown; --include-pruned shows them)"
            );
        }
    }
    Ok(())
}

pub(crate) fn timeline(
    s: &Source,
    host: Option<String>,
    rollout: Option<&str>,
    since: Option<&str>,
    until: Option<&str>,
    log: bool,
    json: bool,
) -> Result<()> {
    // The whole log, unasked, is not a timeline anyone reads: something must narrow it.
    if host.is_none() && rollout.is_none() && !log && since.is_none() && until.is_none() {
        bail!(
            "give --host H, --rollout R, --log (the log's own records), or a --since/--until window"
        );
    }
    let filter = engine::forensics::Filter {
        host,
        rollout: rollout.map(ledger::domain::RolloutId::parse).transpose()?,
        since: time_arg("since", since)?,
        until: time_arg("until", until)?,
        log,
    };
    let mut out = std::io::stdout().lock();
    // Printed as read: a busy host's history does not wait in memory.
    engine::forensics::timeline_each(forensic_source(s), &filter, |l| -> Result<()> {
        if json {
            writeln!(out, "{}", serde_json::to_string(&l)?)?;
        } else {
            writeln!(
                out,
                "{:>8}  {}  {:<27}  {:<22} {:<20} {}",
                l.seq,
                l.cp_time,
                l.agent_time.as_deref().unwrap_or("-"),
                l.kind,
                l.host.as_deref().or(l.rollout.as_deref()).unwrap_or("-"),
                l.summary
            )?;
        }
        Ok(())
    })
}

pub(crate) fn why(s: &Source, host: &str, rollout: &str, json: bool) -> Result<()> {
    let rid = ledger::domain::RolloutId::parse(rollout)?;
    let (lines, rec, r) = engine::forensics::why(forensic_source(s), host, &rid)?;
    if rec.is_none() {
        bail!("host {host} was never part of rollout {rollout}");
    }
    if json {
        println!(
            "{}",
            serde_json::json!({"entries": lines, "host": rec, "rollout": r})
        );
        return Ok(());
    }
    println!("why: {host} in {rollout}\n");
    for l in &lines {
        println!("{:>8}  {}  {}", l.seq, l.cp_time, l.summary);
    }
    if let (Some(h), Some(r)) = (rec, r) {
        println!(
            "\nnow: host {:?} (wave {}, last agent seq {}, changed at seq {}); rollout {:?} at wave {}",
            h.state, h.wave, h.last_event_seq, h.updated_seq, r.state, r.current_wave
        );
    }
    Ok(())
}

/// `report`: one rollout as a self-contained HTML page.
pub(crate) fn report(s: &Source, rollout: &str, out: &std::path::Path) -> Result<()> {
    let rid = ledger::domain::RolloutId::parse(rollout)?;
    let Some(html) = engine::forensics::report(forensic_source(s), &rid)? else {
        bail!("no entry is about rollout {rollout}");
    };
    std::fs::write(out, html).with_context(|| format!("writing {}", out.display()))?;
    println!("wrote {}", out.display());
    Ok(())
}
