//! The determinism check: every recorded decision recomputed from the state before it and the recorded time.

use super::{ForensicsError, Source, stored};
use ledger::domain::Micros;
use ledger::event::Event;
use ledger::read::Logged;
use planner::{Batch, Input, Manifests, Refusal, Staged};
use projections::State;
use std::collections::VecDeque;
use std::convert::Infallible;

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

/// What a decision re-run during the check stages into: the replayed state, folded at once
/// as the writer's ledger does, and the events staged, to compare with the log.
struct Replaying {
    state: State,
    staged: Staged,
}

impl planner::Log for Replaying {
    type Error = Infallible;

    fn state(&self) -> &State {
        &self.state
    }

    fn next_seq(&self) -> u64 {
        self.staged.next_seq()
    }

    fn stage(&mut self, at: Micros, events: Vec<Event>) -> u64 {
        self.staged.stage(&mut self.state, at, events)
    }

    /// A retransmit records nothing, so an input the check re-runs is never one: the log
    /// holding a report with the seq of the one before is a divergence.
    fn recorded(&self, _seq: u64) -> Result<Option<Event>, Infallible> {
        Ok(None)
    }
}

fn show(e: &Event) -> String {
    format!(
        "{} {}",
        e.kind().name(),
        serde_json::to_string(e).unwrap_or_default()
    )
}

/// The check's walk through the log, one recorded batch at a time.
struct Checker {
    log: Replaying,
    manifests: Manifests,
    /// What the decision under way staged and the log has not shown yet.
    expected: VecDeque<Event>,
    /// The batch under way, by the writer's rule ([`Batch`]).
    batch: Batch,
    /// Whether its planner run was met (it is the batch's last decision).
    planned: bool,
    report: CheckReport,
}

impl Checker {
    /// Checks one entry. A divergence, if it is one.
    fn entry(&mut self, item: &Logged) -> Result<Option<Divergence>, ForensicsError> {
        self.report.entries += 1;
        if self.expected.is_empty() {
            let input = planner::input_of(&item.event).map_err(|e| ForensicsError::Entry {
                seq: item.seq,
                reason: e.to_string(),
            })?;
            self.log.staged = Staged::at(item.seq);
            match input {
                None if planner::only_decided(&item.event) => {
                    return Ok(Some(
                        self.diverges(item, "nothing (no decision is under way to stage it)"),
                    ));
                }
                // Recorded as is: nothing decides it from the state.
                None => {
                    self.log.state.apply(item.seq, item.at, &item.event);
                    return Ok(None);
                }
                // The planner's output: its one run ends the batch. It ran even if no
                // recorded input asked for it (a tick or a manifest re-posted records
                // nothing of its own).
                Some(Input::Plan) => {
                    if self.planned {
                        return Ok(Some(self.diverges(
                            item,
                            "nothing (the batch's planner run ended before this entry)",
                        )));
                    }
                    self.planned = true;
                    self.report.plans += 1;
                    planner::decide::plan(&mut self.log, &mut self.manifests, item.at);
                }
                Some(input) => {
                    if self.planned {
                        return Ok(Some(self.diverges(
                            item,
                            "nothing (the batch's planner run is its last decision)",
                        )));
                    }
                    if let Err(r) =
                        self.batch
                            .decide(&mut self.log, &mut self.manifests, input, item.at)
                    {
                        let r = Refusal::from(r);
                        return Ok(Some(
                            self.diverges(item, &format!("a refusal ({}): {r}", r.code())),
                        ));
                    }
                    self.report.decisions += 1;
                }
            }
            self.expected = self.log.staged.take().into_iter().map(|(_, e)| e).collect();
        }
        // Recomputed events were folded as they were staged: a match needs no fold.
        Ok(match self.expected.pop_front() {
            Some(e) if e == item.event => None,
            other => Some(self.diverges(
                item,
                &other.map_or(
                    "nothing (the decision ended before this entry)".into(),
                    |e| show(&e),
                ),
            )),
        })
    }

    /// The end of a recorded batch, after the entry `last`: every decision in it is complete,
    /// and if anything in it moved, the planner ran (and the run's output is what the batch
    /// holds, nothing if it decided nothing). A divergence, if it is one.
    fn end_of_batch(&mut self, last: &Logged) -> Option<Divergence> {
        let batch = std::mem::take(&mut self.batch);
        let planned = std::mem::take(&mut self.planned);
        if let Some(e) = self.expected.front() {
            return Some(Divergence {
                seq: last.seq + 1,
                recorded: "the end of the batch".into(),
                recomputed: show(e),
            });
        }
        if planned || !batch.replans() {
            return None;
        }
        self.report.plans += 1;
        self.log.staged = Staged::at(last.seq + 1);
        batch.finish(&mut self.log, &mut self.manifests, last.at);
        let planned = self.log.staged.take();
        planned.first().map(|(_, e)| Divergence {
            seq: last.seq + 1,
            recorded: "the end of the batch (its planner run decided nothing)".into(),
            recomputed: show(e),
        })
    }

    fn diverges(&self, item: &Logged, recomputed: &str) -> Divergence {
        Divergence {
            seq: item.seq,
            recorded: show(&item.event),
            recomputed: recomputed.to_string(),
        }
    }
}

/// Re-runs every decision over the recorded inputs with the recorded `now` and compares: the
/// same decision function the daemon's writer runs ([`planner::decide`]), batch by recorded
/// batch under the same rule ([`Batch`]: the planner runs last, once, if anything moved).
///
/// The replayed state leaves out a rollout's host records once it is pruned, as the
/// daemon's does (no decision reads them), so memory follows the live fleet.
pub fn check(source: Source<'_>) -> Result<CheckReport, ForensicsError> {
    let mut checker = Checker {
        log: Replaying {
            state: State::untracked().without_index().dropping_retired(),
            staged: Staged::at(0),
        },
        manifests: Manifests::default(),
        expected: VecDeque::new(),
        batch: Batch::default(),
        planned: false,
        report: CheckReport {
            entries: 0,
            decisions: 0,
            plans: 0,
            divergence: None,
        },
    };
    for stored in stored(source, None)? {
        let stored = stored?;
        let item = stored.decode()?;
        let mut divergence = checker.entry(&item)?;
        if divergence.is_none() && stored.ends_batch() {
            divergence = checker.end_of_batch(&item);
        }
        if divergence.is_some() {
            checker.report.divergence = divergence;
            break;
        }
    }
    let mut report = checker.report;
    if report.divergence.is_none()
        && let Some(e) = checker.expected.front()
    {
        report.divergence = Some(Divergence {
            seq: report.entries,
            recorded: "the end of the log".into(),
            recomputed: show(e),
        });
    }
    Ok(report)
}
