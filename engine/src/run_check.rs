//! What every failover test holds a run to (issue 29): the checker the deterministic
//! simulation, the real-process fault test and the `failover` bench share. Given the final
//! log and what was observed during the run, it lists every violation of:
//!
//! 1. **No acknowledged loss**: every agent report (and, in the simulation, every
//!    annotation) acknowledged 2xx is in the final log exactly once, and each host's reports
//!    to a rollout are in agent-seq order.
//! 2. **No fork ever signed**: every checkpoint any node signed (the signature oracle sees
//!    them all, a paused writer's included) has the final log's root at its size; so no two
//!    signed checkpoints of one size differ, and every pair is consistent.
//! 3. **The register never moves backwards**: sizes and epochs never decrease, and every
//!    head it held has the final log's root at its size.
//! 4. **No follower served beyond the acknowledged log**: every size a follower served is at
//!    most the register's head when the run ended, and was signed.

use std::collections::{BTreeMap, BTreeSet};

use ledger::event::Event;
use ledger::hash::Hash;
use ledger::merkle::Frontier;
use ledger::read::ReadError;
use ledger::store::Snapshot;

use crate::register::Head;

/// A checkpoint a node signed, as the oracle saw its body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedHead {
    /// The node that signed.
    pub node: String,
    /// Its tree size.
    pub size: u64,
    /// Its root.
    pub root: [u8; 32],
}

impl SignedHead {
    /// Reads a signed message as a checkpoint body (origin, size, base64 root, head line);
    /// None for a message that is not one.
    pub fn parse(node: &str, message: &[u8]) -> Option<SignedHead> {
        let text = std::str::from_utf8(message).ok()?;
        let mut lines = text.lines();
        let _origin = lines.next()?;
        let size = lines.next()?.parse().ok()?;
        let root = Hash::from_base64(lines.next()?)?;
        Some(SignedHead {
            node: node.to_string(),
            size,
            root: root.0,
        })
    }
}

/// An agent report acknowledged 2xx.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Acked {
    /// The host.
    pub host: String,
    /// The rollout, as `channel@ref`.
    pub rollout: String,
    /// The agent's seq.
    pub agent_seq: u64,
}

/// What was observed during a run.
#[derive(Clone, Debug, Default)]
pub struct Evidence {
    /// Every checkpoint signed, by any node, in the order signed.
    pub signed: Vec<SignedHead>,
    /// Every value the commit register held, in order.
    pub register: Vec<Head>,
    /// Every (node, size) a follower served a read at.
    pub served: Vec<(String, u64)>,
    /// Every agent report acknowledged 2xx.
    pub acked: Vec<Acked>,
    /// Every annotation (by its text) whose recording was acknowledged: the simulation's
    /// writes, held to rule 1 like reports.
    pub annotations: Vec<String>,
}

/// Checks a run: the final log (a snapshot of the last writer's store) against the evidence.
/// Returns the violations, each a sentence; empty when the run held.
pub fn check_run(log: &Snapshot, evidence: &Evidence) -> Result<Vec<String>, ReadError> {
    let mut violations = Vec::new();
    // Roots of the final log at every size something claims.
    let wanted: BTreeSet<u64> = evidence
        .signed
        .iter()
        .map(|s| s.size)
        .chain(evidence.register.iter().map(|h| h.tree_size))
        .collect();
    let mut roots: BTreeMap<u64, [u8; 32]> = BTreeMap::new();
    let mut frontier = Frontier::new(log.tree_hash());
    if wanted.contains(&0) {
        roots.insert(0, frontier.root().0);
    }
    // Each (host, rollout)'s reports in log order, and how often each was recorded.
    let mut recorded: BTreeMap<(String, String, u64), u32> = BTreeMap::new();
    let mut last_seq: BTreeMap<(String, String), u64> = BTreeMap::new();
    let mut notes: BTreeMap<String, u32> = BTreeMap::new();
    for stored in log.rows(..)? {
        let stored = stored?;
        frontier.push(log.tree_hash().leaf(stored.bytes()), |_, _, _| {});
        if wanted.contains(&frontier.size()) {
            roots.insert(frontier.size(), frontier.root().0);
        }
        let logged = stored.decode()?;
        if let Event::Annotation(a) = &logged.event {
            *notes.entry(a.text.clone()).or_default() += 1;
        }
        let report = match &logged.event {
            Event::AgentEventRecorded(e) => Some((&e.hostname, &e.rollout_id, e.agent_seq)),
            Event::AgentReportRefused(e) => Some((&e.hostname, &e.rollout_id, e.agent_seq)),
            _ => None,
        };
        if let Some((host, rollout, seq)) = report {
            let key = (host.clone(), rollout.to_string());
            if let Some(prev) = last_seq.insert(key.clone(), seq)
                && prev >= seq
            {
                violations.push(format!(
                    "entry {}: {host}'s report #{seq} to {rollout} comes after #{prev}",
                    logged.seq
                ));
            }
            *recorded.entry((key.0, key.1, seq)).or_default() += 1;
        }
    }
    let size = frontier.size();
    for a in &evidence.acked {
        match recorded.get(&(a.host.clone(), a.rollout.clone(), a.agent_seq)) {
            Some(1) => {}
            None => violations.push(format!(
                "acknowledged report #{} of {} to {} is not in the log",
                a.agent_seq, a.host, a.rollout
            )),
            Some(n) => violations.push(format!(
                "acknowledged report #{} of {} to {} is in the log {n} times",
                a.agent_seq, a.host, a.rollout
            )),
        }
    }
    for text in &evidence.annotations {
        match notes.get(text) {
            Some(1) => {}
            None => violations.push(format!(
                "acknowledged annotation {text:?} is not in the log"
            )),
            Some(n) => violations.push(format!(
                "acknowledged annotation {text:?} is in the log {n} times"
            )),
        }
    }
    for s in &evidence.signed {
        match roots.get(&s.size) {
            Some(root) if *root == s.root => {}
            Some(_) => violations.push(format!(
                "{} signed a checkpoint of size {} whose root is not the log's: a fork",
                s.node, s.size
            )),
            None => violations.push(format!(
                "{} signed a checkpoint of size {}, beyond the final log's {size}: signed entries were lost",
                s.node, s.size
            )),
        }
    }
    for w in evidence.register.windows(2) {
        let (a, b) = (&w[0], &w[1]);
        if b.tree_size < a.tree_size || b.epoch < a.epoch {
            violations.push(format!(
                "the register moved backwards: size {} epoch {} then size {} epoch {}",
                a.tree_size, a.epoch, b.tree_size, b.epoch
            ));
        }
    }
    for h in &evidence.register {
        if roots.get(&h.tree_size) != Some(&h.root) {
            violations.push(format!(
                "the register acknowledged size {} (epoch {}) with a root the final log does not have",
                h.tree_size, h.epoch
            ));
        }
    }
    let head = evidence.register.last().map_or(0, |h| h.tree_size);
    let signed: BTreeSet<u64> = evidence.signed.iter().map(|s| s.size).collect();
    for (node, served) in &evidence.served {
        if *served > head {
            violations.push(format!(
                "follower {node} served size {served}, above the register's head {head}"
            ));
        }
        if !signed.contains(served) {
            violations.push(format!(
                "follower {node} served size {served}, which no node signed"
            ));
        }
    }
    Ok(violations)
}
