//! A tiny harness: a projection state fed by the machines' own events, as the writer would.
#![allow(dead_code, unreachable_pub)] // shared by test binaries that each use a part

use ledger::domain::{AgentReport, HostState, Micros, OnHealthFailure, RolloutId};
use ledger::event::{DispatchQueued, Event, HostAssignment};
use planner::{HostInput, HostPolicy, Rejection, RolloutInput, RolloutRejection};
use projections::{HostRecord, State};

pub const T0: Micros = 1_767_225_600_000_000;
pub const MIN: Micros = 60_000_000;
pub const TARGET: &str = "/nix/store/target-system";
pub const PRIOR: &str = "/nix/store/prior-system";

#[derive(Clone)]
pub struct Fleet {
    pub state: State,
    pub seq: u64,
    pub log: Vec<Event>,
    /// (seq, CP time) of each entry in `log`, as an entry header would carry them.
    pub headers: Vec<(u64, Micros)>,
}

impl Fleet {
    pub fn new() -> Fleet {
        Fleet {
            state: State::default(),
            seq: 1,
            log: Vec::new(),
            headers: Vec::new(),
        }
    }

    pub fn append(&mut self, events: &[Event], at: Micros) {
        for e in events {
            self.state.apply(self.seq, at, e);
            self.log.push(e.clone());
            self.headers.push((self.seq, at));
            self.seq += 1;
        }
    }

    /// Opens `rollout` with `hosts` (name, wave), superseding whatever is active.
    pub fn open(&mut self, rollout: &RolloutId, hosts: &[(&str, u32)], at: Micros) -> Vec<Event> {
        let supersede: Vec<RolloutId> = self
            .state
            .rollouts
            .values()
            .filter(|r| r.rollout_id.channel == rollout.channel && r.is_active())
            .map(|r| r.rollout_id.clone())
            .collect();
        let assignments: Vec<HostAssignment> = hosts
            .iter()
            .map(|(h, w)| HostAssignment {
                hostname: h.to_string(),
                wave: *w,
                target_closure: TARGET.into(),
            })
            .collect();
        let events =
            planner::decide_open(&self.state, rollout, [7; 32], &assignments, &supersede).unwrap();
        self.append(&events, at);
        events
    }

    pub fn dispatch(&mut self, rollout: &RolloutId, host: &str, at: Micros, soak: Micros) {
        let e = Event::DispatchQueued(DispatchQueued {
            hostname: host.into(),
            rollout_id: rollout.clone(),
            target_closure: TARGET.into(),
            soak_due_at: at + soak,
        });
        self.append(&[e], at);
    }

    pub fn host(&self, rollout: &RolloutId, host: &str) -> &HostRecord {
        self.state
            .hosts
            .get(rollout, host)
            .expect("the host joined the rollout")
    }

    /// Decides a host input end to end (host machine, then rollout machine) and appends.
    pub fn feed(
        &mut self,
        rollout: &RolloutId,
        host: &str,
        input: HostInput,
        now: Micros,
        policy: OnHealthFailure,
    ) -> Result<Vec<Event>, Rejection> {
        let events = planner::decide_report(
            &self.state,
            rollout,
            host,
            &input,
            now,
            &HostPolicy {
                on_health_failure: policy,
            },
        )?;
        self.append(&events, now);
        Ok(events)
    }

    pub fn rollout_input(
        &mut self,
        rollout: &RolloutId,
        input: RolloutInput,
        now: Micros,
    ) -> Result<Vec<Event>, RolloutRejection> {
        let events = planner::decide_rollout(&self.state, rollout, &input, now)?;
        self.append(&events, now);
        Ok(events)
    }
}

impl Fleet {
    /// A fresh fold of the whole log.
    pub fn rebuilt(&self) -> State {
        let mut s = State::default();
        for ((seq, at), e) in self.headers.iter().zip(&self.log) {
            s.apply(*seq, *at, e);
        }
        s
    }
}

pub fn rid(s: &str) -> RolloutId {
    RolloutId::parse(s).unwrap()
}

pub fn agent(seq: u64, report: AgentReport) -> HostInput {
    HostInput::Agent {
        agent_seq: seq,
        report,
    }
}

pub fn ack(at: Micros) -> AgentReport {
    AgentReport::DispatchAck {
        current_closure_at_dispatch: PRIOR.into(),
        received_at: at,
    }
}

pub fn completed(closure: &str, at: Micros) -> AgentReport {
    AgentReport::ActivationCompleted {
        observed_current_closure: closure.into(),
        exit_code: 0,
        completed_at: at,
    }
}

pub fn converged(closure: &str, at: Micros) -> AgentReport {
    AgentReport::Converged {
        converged_at: at,
        current_closure: closure.into(),
    }
}

/// A host driven from Pending to `target` state through the legal path.
pub fn drive_to(f: &mut Fleet, r: &RolloutId, host: &str, target: HostState) {
    use ledger::domain::OnHealthFailure::RollbackAndHalt;
    f.dispatch(r, host, T0, 5 * MIN);
    let steps: Vec<AgentReport> = match target {
        HostState::Pending => vec![],
        HostState::Activating => vec![ack(T0)],
        HostState::Deferred => vec![
            ack(T0),
            AgentReport::ActivationDeferred {
                component: "kernel".into(),
                deferred_at: T0 + 1,
            },
        ],
        HostState::Soaking => vec![ack(T0), completed(TARGET, T0 + 1)],
        HostState::Converged => vec![
            ack(T0),
            completed(TARGET, T0 + 1),
            converged(TARGET, T0 + 6 * MIN),
        ],
        HostState::Failed => vec![
            ack(T0),
            AgentReport::ActivationFailed {
                exit_code: 1,
                stderr_tail: "boom".into(),
                failed_at: T0 + 2,
            },
        ],
        HostState::Reverted => vec![
            ack(T0),
            AgentReport::ActivationFailed {
                exit_code: 1,
                stderr_tail: "boom".into(),
                failed_at: T0 + 2,
            },
            AgentReport::RollbackComplete {
                reverted_to_closure: PRIOR.into(),
                exit_code: 0,
                completed_at: T0 + 3,
            },
        ],
    };
    let base = f.host(r, host).last_event_seq;
    for (i, report) in steps.into_iter().enumerate() {
        f.feed(
            r,
            host,
            agent(base + 1 + i as u64, report),
            T0 + 10 * MIN,
            RollbackAndHalt,
        )
        .unwrap();
    }
    assert_eq!(f.host(r, host).state, target);
}

/// The harness is a log the one decision function can stage into, as the writer's ledger is.
impl planner::Log for Fleet {
    type Error = std::convert::Infallible;

    fn state(&self) -> &State {
        &self.state
    }

    fn next_seq(&self) -> u64 {
        self.seq
    }

    fn stage(&mut self, at: Micros, events: Vec<Event>) -> u64 {
        let first = self.seq;
        self.append(&events, at);
        first
    }

    fn recorded(&self, seq: u64) -> Result<Option<Event>, Self::Error> {
        Ok(seq
            .checked_sub(1)
            .and_then(|i| self.log.get(i as usize))
            .cloned())
    }
}

/// A manifest as the intake would hand it over (the hash is a stand-in: the decision only
/// compares it).
pub fn manifest(doc: &serde_json::Value, hash: u8, signed_at: Micros) -> planner::Input {
    use planner::document::{
        Document, parse_bootstrap_nonces, parse_fleet, parse_revocations, parse_rollout,
    };
    let canonical = doc.to_string().into_bytes();
    let document = if doc.get("revocations").is_some() {
        Document::Revocations(parse_revocations(&canonical).unwrap())
    } else if doc.get("bootstrapNonces").is_some() {
        Document::BootstrapNonces(parse_bootstrap_nonces(&canonical).unwrap())
    } else if doc.get("hosts").is_some() {
        Document::Fleet(parse_fleet(&canonical).unwrap())
    } else {
        Document::Rollout(parse_rollout(&canonical).unwrap())
    };
    planner::Input::Manifest(Box::new(planner::Manifest {
        canonical,
        content_hash: [hash; 32],
        signer: "key".into(),
        signed_at,
        document,
        signature: Some(("ed25519".into(), vec![hash; 64])),
    }))
}
