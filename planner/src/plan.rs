//! `plan(&FleetView, &Manifests, now) -> Vec<Decision>`: open rollouts, advance waves, and run
//! the six dispatch gates (DOMAIN §4.4) in fixed order, first block wins.
//!
//! Fixed relative to the reference (docs/DECISIONS.md): the quarantine gate reads the
//! quarantine read model; the soak deadline is computed at dispatch; the compliance gate fails
//! closed when its input is unavailable; a gate decision is emitted only when a host's block
//! changes; everything iterates ordered maps, so the same inputs give the same bytes.

use std::collections::{BTreeMap, BTreeSet};

use ledger::domain::{HostState, Micros, RolloutId, RolloutState};
use ledger::event::{DispatchQueued, Event, GateBlock, GateDecision};
use projections::{HostRecord, State};

use crate::manifest::{Manifests, RolloutManifest};
use crate::rollout::{self, RolloutInput};

const MICROS_PER_MINUTE: Micros = 60_000_000;

/// A dispatch the agent took but never acknowledged is queued again after this long (the
/// RFC's confirm deadline). Re-queueing on every tick instead would log a `DispatchQueued`
/// per tick for as long as the agent takes to ack (DOMAIN §6.16) and move the soak deadline
/// under the agent's feet.
pub const REDISPATCH_AFTER_US: Micros = 5 * MICROS_PER_MINUTE;

/// What the planner reads besides the manifests: the read models, all ordered. Rollouts, host
/// records, quarantine, deferrals (the current block per host), the dispatch queue and probe
/// failures are all read straight from the projection state.
#[derive(Clone, Copy, Debug)]
pub struct FleetView<'a> {
    /// The read models.
    pub state: &'a State,
    /// Whether the probe-failure read model can be trusted for the compliance gate. When it
    /// cannot (say, it is being rebuilt), the gate blocks: it fails closed.
    pub compliance_available: bool,
}

impl FleetView<'_> {
    fn failing_controls(&self, rollout: &RolloutId, host: &str) -> u64 {
        let start = (rollout.clone(), host.to_string(), String::new());
        self.state
            .probe_failures
            .range(start..)
            .take_while(|((r, h, _), _)| r == rollout && h == host)
            .count() as u64
    }
}

/// One planner decision; its events are appended together.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// A channel's manifest names a rollout that is not open yet.
    OpenRollout {
        /// The rollout.
        rollout_id: RolloutId,
        /// `RolloutOpened`, supersessions, joins, activation.
        events: Vec<Event>,
    },
    /// The cursor's wave is done.
    AdvanceWave {
        /// The rollout.
        rollout_id: RolloutId,
        /// `WaveAdvanced` (and `Converging` on reaching the last wave).
        events: Vec<Event>,
    },
    /// A host passed every gate.
    QueueDispatch {
        /// The dispatch.
        dispatch: DispatchQueued,
        /// A cleared `GateDecision` when the host was blocked before.
        cleared: Option<GateDecision>,
    },
    /// A host's block changed.
    Block(GateDecision),
}

impl Decision {
    /// The events to append.
    pub fn into_events(self) -> Vec<Event> {
        match self {
            Decision::OpenRollout { events, .. } | Decision::AdvanceWave { events, .. } => events,
            Decision::QueueDispatch { dispatch, cleared } => cleared
                .map(Event::GateDecision)
                .into_iter()
                .chain([Event::DispatchQueued(dispatch)])
                .collect(),
            Decision::Block(g) => vec![Event::GateDecision(g)],
        }
    }
}

/// Plans one tick.
pub fn plan(view: &FleetView<'_>, manifests: &Manifests, now: Micros) -> Vec<Decision> {
    let state = view.state;
    let mut decisions = Vec::new();

    // 1. Open what the manifests name and the log does not have (keyed by rollout id).
    for m in manifests.rollouts.values() {
        if state.rollouts.contains_key(&m.rollout_id) {
            continue;
        }
        let supersede: Vec<RolloutId> = state
            .rollouts
            .values()
            .filter(|r| r.rollout_id.channel == m.rollout_id.channel && r.is_active())
            .map(|r| r.rollout_id.clone())
            .collect();
        if let Ok(events) = rollout::decide_open(
            state,
            &m.rollout_id,
            m.manifest_hash,
            &m.host_set,
            &supersede,
        ) {
            decisions.push(Decision::OpenRollout {
                rollout_id: m.rollout_id.clone(),
                events,
            });
        }
    }

    // 2. Advance finished waves; dispatch below still sees the old cursor (next tick moves on).
    for m in manifests.rollouts.values() {
        let Some(r) = state.rollouts.get(&m.rollout_id) else {
            continue;
        };
        if r.state != RolloutState::Active {
            continue;
        }
        let waves = manifests
            .fleet
            .waves
            .get(&m.rollout_id.channel)
            .map_or(1, |w| w.len().max(1) as u32);
        if let Ok(events) = rollout::decide(
            state,
            &m.rollout_id,
            &RolloutInput::AdvanceWave { waves },
            now,
        ) && !events.is_empty()
        {
            decisions.push(Decision::AdvanceWave {
                rollout_id: m.rollout_id.clone(),
                events,
            });
        }
    }

    // 3. Gate every undispatched Pending host of every dispatching rollout. Hosts in flight are
    //    counted once per tick, not once per candidate.
    let index = Index::new(view, manifests);
    let mut tick_dispatches: BTreeMap<String, u32> = BTreeMap::new();
    for m in manifests.rollouts.values() {
        let Some(r) = state.rollouts.get(&m.rollout_id) else {
            continue;
        };
        if !matches!(r.state, RolloutState::Active | RolloutState::Converging) {
            continue;
        }
        let mut hosts: Vec<&HostRecord> = state
            .hosts_of(&m.rollout_id)
            .filter(|h| {
                h.state == HostState::Pending
                    && h.dispatch_acked_at.is_none()
                    && h.dispatched_at
                        .is_none_or(|t| now.saturating_sub(t) >= REDISPATCH_AFTER_US)
                    && !view
                        .state
                        .dispatch_queue
                        .contains_key(&(h.hostname.clone(), h.rollout_id.clone()))
            })
            .collect();
        hosts.sort_by(|a, b| (a.wave, &a.hostname).cmp(&(b.wave, &b.hostname)));
        for host in hosts {
            let previous = view
                .state
                .deferrals
                .get(&host.rollout_id, &host.hostname)
                .map(|d| &d.block);
            match gates(
                view,
                manifests,
                m,
                r.current_wave,
                host,
                &index,
                &tick_dispatches,
            ) {
                Some(block) => {
                    if !previous.is_some_and(|p| p.same_reason(&block)) {
                        decisions.push(Decision::Block(GateDecision {
                            hostname: host.hostname.clone(),
                            rollout_id: host.rollout_id.clone(),
                            block: Some(block),
                        }));
                    }
                }
                None => {
                    for b in m
                        .budgets
                        .iter()
                        .filter(|b| index.in_budget(b, &host.hostname))
                    {
                        *tick_dispatches.entry(b.selector.clone()).or_default() += 1;
                    }
                    let soak = manifests.soak_minutes(&host.rollout_id.channel, host.wave);
                    decisions.push(Decision::QueueDispatch {
                        dispatch: DispatchQueued {
                            hostname: host.hostname.clone(),
                            rollout_id: host.rollout_id.clone(),
                            target_closure: host.target_closure.clone(),
                            soak_due_at: now + Micros::from(soak) * MICROS_PER_MINUTE,
                        },
                        cleared: previous.map(|_| GateDecision {
                            hostname: host.hostname.clone(),
                            rollout_id: host.rollout_id.clone(),
                            block: None,
                        }),
                    });
                }
            }
        }
    }
    decisions
}

/// Whether a host record occupies a disruption-budget slot: Activating or Soaking, or
/// dispatched and not yet acked. Only hosts of rollouts that still count are asked
/// ([`holds_slots`]).
fn occupies_slot(h: &HostRecord) -> bool {
    h.state.is_in_flight()
        || (h.state == HostState::Pending
            && h.dispatched_at.is_some()
            && h.dispatch_acked_at.is_none())
}

/// Whether a rollout's hosts can hold disruption-budget slots (DECISIONS 24). Terminal
/// rollouts have every host Converged, Pruned ones are history, and a Superseded rollout's
/// work is abandoned: its successor takes the hosts over, and an agent that drops the old
/// dispatch never reports on it again, so counting its Activating or Soaking hosts would
/// block the successor's channel until hosts finish work nobody wants (issue 13).
fn holds_slots(r: &projections::RolloutRecord) -> bool {
    !matches!(
        r.state,
        RolloutState::Terminal | RolloutState::Pruned | RolloutState::Superseded
    )
}

/// Lookups built once per tick, so gating n hosts costs O(n log n), not O(n²).
struct Index<'a> {
    /// Channel → hosts in any of its waves.
    staged: BTreeMap<&'a str, BTreeSet<&'a str>>,
    /// Budget selector → its hosts.
    budget_hosts: BTreeMap<&'a str, BTreeSet<&'a str>>,
    /// Budget selector → hosts occupying a slot now.
    in_flight: BTreeMap<&'a str, u32>,
}

impl<'a> Index<'a> {
    fn new(view: &FleetView<'_>, manifests: &'a Manifests) -> Index<'a> {
        let staged = manifests
            .fleet
            .waves
            .iter()
            .map(|(c, waves)| {
                (
                    c.as_str(),
                    waves.iter().flatten().map(String::as_str).collect(),
                )
            })
            .collect();
        // Skipping rollouts that hold no slots also keeps a tick's cost bounded by the live
        // rollouts.
        let mut per_host: BTreeMap<&str, u32> = BTreeMap::new();
        for r in view.state.rollouts.values().filter(|r| holds_slots(r)) {
            for h in view.state.hosts_of(&r.rollout_id) {
                if occupies_slot(h) {
                    *per_host.entry(h.hostname.as_str()).or_default() += 1;
                }
            }
        }
        let mut budget_hosts = BTreeMap::new();
        let mut in_flight = BTreeMap::new();
        for b in manifests.rollouts.values().flat_map(|m| &m.budgets) {
            let hosts: BTreeSet<&str> = b.hosts.iter().map(String::as_str).collect();
            let n = hosts
                .iter()
                .map(|h| per_host.get(h).copied().unwrap_or(0))
                .sum();
            in_flight.insert(b.selector.as_str(), n);
            budget_hosts.insert(b.selector.as_str(), hosts);
        }
        Index {
            staged,
            budget_hosts,
            in_flight,
        }
    }

    fn in_budget(&self, b: &crate::manifest::Budget, host: &str) -> bool {
        self.budget_hosts
            .get(b.selector.as_str())
            .is_some_and(|s| s.contains(host))
    }
}

/// The six gates in order; the first block wins.
fn gates(
    view: &FleetView<'_>,
    manifests: &Manifests,
    m: &RolloutManifest,
    current_wave: u32,
    host: &HostRecord,
    index: &Index<'_>,
    tick_dispatches: &BTreeMap<String, u32>,
) -> Option<GateBlock> {
    let channel = &host.rollout_id.channel;
    let fleet = &manifests.fleet;

    // 1. Quarantine: never re-dispatch a closure that was just rolled back.
    if view
        .state
        .quarantine
        .contains_key(&(channel.clone(), host.target_closure.clone()))
    {
        return Some(GateBlock::Quarantined {
            channel: channel.clone(),
            closure: host.target_closure.clone(),
        });
    }

    // 2. Channel edges: the predecessor's current rollout must be finished (keyed by id).
    for edge in fleet.channel_edges.iter().filter(|e| &e.gated == channel) {
        let Some(pred) = manifests.rollouts.get(&edge.gates) else {
            continue;
        };
        match view.state.rollouts.get(&pred.rollout_id) {
            Some(r) if r.is_finished_for_ordering() => {}
            other => {
                return Some(GateBlock::ChannelEdges {
                    predecessor_channel: edge.gates.clone(),
                    predecessor_rollout: other.map(|r| r.rollout_id.clone()),
                    predecessor_state: other.map(|r| r.state),
                });
            }
        }
    }

    // 3. Wave promotion: default deny for unstaged hosts, then the cursor.
    if fleet.waves.get(channel).is_some_and(|w| !w.is_empty()) {
        if !index
            .staged
            .get(channel.as_str())
            .is_some_and(|s| s.contains(host.hostname.as_str()))
        {
            return Some(GateBlock::HostUnstaged {
                channel: channel.clone(),
            });
        }
        if host.wave > current_wave {
            return Some(GateBlock::WavePromotion {
                host_wave: host.wave,
                current_wave,
            });
        }
    }

    // 4. Host edges, same channel only: the gating host must be Converged or Deferred.
    for edge in fleet.host_edges.iter().filter(|e| e.gated == host.hostname) {
        if fleet.hosts.get(&edge.gates) != Some(channel) {
            continue;
        }
        let gating = view
            .state
            .hosts
            .get(&host.rollout_id, &edge.gates)
            .map(|h| h.state);
        if !matches!(gating, Some(HostState::Converged | HostState::Deferred)) {
            return Some(GateBlock::HostEdge {
                gating_host: edge.gates.clone(),
                gating_state: gating,
            });
        }
    }

    // 5. Disruption budgets: hosts in flight anywhere (dispatched-but-unacked included) plus
    //    this tick's dispatches.
    for b in m
        .budgets
        .iter()
        .filter(|b| index.in_budget(b, &host.hostname))
    {
        let Some(cap) = b.cap() else { continue };
        // A host never consumes its own slot (D-008 A), even when being re-dispatched.
        let own = u32::from(occupies_slot(host));
        let in_flight = index
            .in_flight
            .get(b.selector.as_str())
            .copied()
            .unwrap_or(0)
            .saturating_sub(own)
            + tick_dispatches.get(&b.selector).copied().unwrap_or(0);
        if in_flight >= cap {
            return Some(GateBlock::DisruptionBudget {
                selector: b.selector.clone(),
                in_flight,
                max_in_flight: cap,
            });
        }
    }

    // 6. Compliance wave: earlier waves must have no outstanding enforce failures; an
    //    unavailable count blocks rather than passes.
    if host.wave >= 1 {
        let failing = view.compliance_available.then(|| {
            view.state
                .hosts_of(&host.rollout_id)
                .filter(|h| h.wave < host.wave)
                .map(|h| view.failing_controls(&h.rollout_id, &h.hostname))
                .sum::<u64>()
        });
        if failing != Some(0) {
            return Some(GateBlock::ComplianceWave {
                failing_controls: failing,
                host_wave: host.wave,
            });
        }
    }
    None
}
