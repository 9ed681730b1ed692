//! The batch rule. The writer decides the inputs it has queued one after another, then runs
//! the planner once if any of them can have changed what it decides ("plan once if anything
//! moved"), and commits all of it as one batch under one checkpoint. The writer decides its
//! batches with [`decide_batch`]; `replay --check` steps through each recorded batch with
//! [`Batch`], so a planner run that is missing, extra or out of place is a divergence.

use ledger::domain::Micros;

use super::{Answer, Decided, Input, Log, Undecided, decide};
use crate::manifest::Manifests;

/// A batch being decided, input by input (see the module docs).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Batch {
    replan: bool,
}

impl Batch {
    /// Decides one input of the batch ([`decide`]), noting whether it moved anything the
    /// planner reads.
    pub fn decide<L: Log>(
        &mut self,
        log: &mut L,
        manifests: &mut Manifests,
        input: Input,
        now: Micros,
    ) -> Result<Answer, Undecided<L::Error>> {
        // Asked for by name, the planner runs where the rule runs it: once, at the end.
        if matches!(input, Input::Plan) {
            self.replan = true;
            return Ok(Answer::Done { entries: 0 });
        }
        let Decided { answer, replan } = decide(log, manifests, input, now)?;
        self.replan |= replan;
        Ok(answer)
    }

    /// Whether the batch ends with a planner run.
    pub fn replans(&self) -> bool {
        self.replan
    }

    /// Ends the batch: the planner runs once, after every input, if anything moved. Returns
    /// the entries it staged.
    pub fn finish<L: Log>(self, log: &mut L, manifests: &mut Manifests, now: Micros) -> u64 {
        if self.replan {
            plan(log, manifests, now)
        } else {
            0
        }
    }
}

/// Runs the planner over the fleet; returns the entries it staged. (A planner run refuses
/// nothing and reads nothing back.)
pub fn plan<L: Log>(log: &mut L, manifests: &mut Manifests, now: Micros) -> u64 {
    let before = log.next_seq();
    let _ = decide(log, manifests, Input::Plan, now);
    log.next_seq() - before
}

/// Decides `inputs` as one batch at CP time `now`, as the writer does: each in order, then
/// the planner once if anything moved (or an [`Input::Plan`] asked for it, which is answered
/// with what that one run staged). One answer per input, in order.
pub fn decide_batch<L: Log>(
    log: &mut L,
    manifests: &mut Manifests,
    inputs: impl IntoIterator<Item = Input>,
    now: Micros,
) -> Vec<Result<Answer, Undecided<L::Error>>> {
    let mut batch = Batch::default();
    let mut plans = Vec::new();
    let mut answers: Vec<_> = inputs
        .into_iter()
        .enumerate()
        .map(|(i, input)| {
            if matches!(input, Input::Plan) {
                plans.push(i);
            }
            batch.decide(log, manifests, input, now)
        })
        .collect();
    let planned = batch.finish(log, manifests, now);
    for i in plans {
        answers[i] = Ok(Answer::Done { entries: planned });
    }
    answers
}
