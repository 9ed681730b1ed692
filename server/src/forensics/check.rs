//! The determinism check: every recorded decision recomputed from the state before it and the recorded time.

use super::*;

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
