//! The JSON documents CI signs (DOMAIN §1: `fleet.resolved` and rollout manifests), parsed
//! into the planner's typed [`Manifests`].
//!
//! Pure: the daemon verifies signatures and freshness, then records the canonical (JCS) bytes
//! in `FleetManifestAccepted` / `RolloutManifestAccepted` entries; [`Manifests::apply`] turns
//! those entries back into what the planner reads, so the live daemon and a replay build the
//! same manifests from the same bytes. Fields this build does not know are ignored here but
//! still covered by the signature and the content hash, which are computed over the bytes.

use std::collections::{BTreeMap, BTreeSet};

use ledger::domain::{OnHealthFailure, RolloutId, check_channel, check_closure, check_host};
use ledger::event::{Event, HostAssignment};
use serde::Deserialize;
use thiserror::Error;

use crate::manifest::{Budget, Edge, Fleet, InForce, Manifests, RolloutManifest, RolloutPolicy};

/// The only schema version this build reads.
pub const SCHEMA_VERSION: u32 = 1;

/// Why a manifest document is refused.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum DocumentError {
    /// Not JSON of the expected shape.
    #[error("manifest does not parse: {0}")]
    Parse(String),
    /// `schemaVersion` other than 1.
    #[error("schema version {0} is not supported (this build reads version 1)")]
    SchemaVersion(u32),
    /// `meta.signedAt` missing or not RFC 3339.
    #[error("meta.signedAt is missing or not an RFC 3339 time: {0}")]
    SignedAt(String),
    /// Internally inconsistent (a wave host of another channel, an unknown policy, …).
    #[error("manifest is inconsistent: {0}")]
    Inconsistent(String),
    /// A field holds a value the rest of the system refuses (a host name an agent could never
    /// authenticate as, a channel that gates on itself, …).
    #[error("{field}: {reason}")]
    Field {
        /// Where, as a JSON path (`hosts.web-01`, `host_set[3].target_closure`).
        field: String,
        /// What is wrong, in words for the message.
        reason: String,
    },
}

impl DocumentError {
    /// A stable code for APIs and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            DocumentError::SchemaVersion(_) => "manifest-schema-version",
            DocumentError::Field { .. } => "manifest-invalid-field",
            _ => "manifest-invalid",
        }
    }
}

/// A parsed manifest document of either kind.
#[derive(Clone, Debug)]
pub enum Document {
    /// `fleet.resolved`.
    Fleet(FleetDocument),
    /// A rollout manifest.
    Rollout(RolloutDocument),
    /// CI's revocation list (`revocations.json`).
    Revocations(RevocationsDocument),
    /// CI's bootstrap-nonce allowlist (`bootstrap-nonces.json`).
    BootstrapNonces(NoncesDocument),
}

impl Document {
    /// Parses the canonical bytes of a recorded manifest entry.
    pub fn of_entry(event: &Event) -> Option<Result<Document, DocumentError>> {
        if let Some((_, file)) = event.signed_file() {
            return Some(match event {
                Event::RevocationsAccepted(_) => {
                    parse_revocations(&file.canonical).map(Document::Revocations)
                }
                _ => parse_bootstrap_nonces(&file.canonical).map(Document::BootstrapNonces),
            });
        }
        let m = event.manifest()?;
        Some(match m.rollout_id {
            None => parse_fleet(m.canonical).map(Document::Fleet),
            Some(_) => parse_rollout(m.canonical).map(Document::Rollout),
        })
    }

    /// `meta.signedAt`, as written.
    pub fn signed_at(&self) -> &str {
        match self {
            Document::Fleet(f) => &f.signed_at,
            Document::Rollout(r) => &r.signed_at,
            Document::Revocations(r) => &r.signed_at,
            Document::BootstrapNonces(n) => &n.signed_at,
        }
    }
}

fn field(field: impl Into<String>, reason: impl std::fmt::Display) -> DocumentError {
    DocumentError::Field {
        field: field.into(),
        reason: reason.to_string(),
    }
}

/// A key as it appears in a field path: short, and quoted if it holds anything but
/// `[A-Za-z0-9._-]`.
fn key(k: &str) -> String {
    let plain = !k.is_empty()
        && k.len() <= 64
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if plain {
        k.to_string()
    } else {
        let short: String = k.chars().take(64).collect();
        format!("{short:?}")
    }
}

/// A free-text name (policy, budget selector): 1-256 characters, no control characters.
fn check_label(s: &str) -> Result<(), &'static str> {
    if s.is_empty() || s.len() > 256 || s.chars().any(char::is_control) {
        Err("expected 1-256 characters without control characters")
    } else {
        Ok(())
    }
}

/// Refuses an edge list whose edges name unknown nodes, a node gating on itself, or a cycle:
/// any of them would hold the nodes involved back forever.
fn check_edges(
    name: &str,
    edges: &[EdgeDoc],
    known: impl Fn(&str) -> bool,
) -> Result<(), DocumentError> {
    let mut next: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (i, e) in edges.iter().enumerate() {
        for (end, v) in [("gated", &e.gated), ("gates", &e.gates)] {
            if !known(v) {
                return Err(field(
                    format!("{name}[{i}].{end}"),
                    format!("{} is not declared in this manifest", key(v)),
                ));
            }
        }
        if e.gated == e.gates {
            return Err(field(
                format!("{name}[{i}]"),
                format!("{} gates on itself and could never proceed", key(&e.gated)),
            ));
        }
        next.entry(e.gated.as_str())
            .or_default()
            .push(e.gates.as_str());
    }
    // Depth-first search for a cycle (white/grey/black), iteratively: edge lists are data.
    let mut state: BTreeMap<&str, u8> = BTreeMap::new();
    for &start in next.keys() {
        if state.contains_key(start) {
            continue;
        }
        let mut stack: Vec<(&str, usize)> = vec![(start, 0)];
        state.insert(start, 1);
        while let Some((node, i)) = stack.pop() {
            let succ = next.get(node).map(Vec::as_slice).unwrap_or_default();
            if let Some(&n) = succ.get(i) {
                stack.push((node, i + 1));
                match state.get(n) {
                    Some(1) => {
                        return Err(field(
                            name,
                            format!(
                                "the edges form a cycle through {}: none of it could ever proceed",
                                key(n)
                            ),
                        ));
                    }
                    Some(_) => {}
                    None => {
                        state.insert(n, 1);
                        stack.push((n, 0));
                    }
                }
            } else {
                state.insert(node, 2);
            }
        }
    }
    Ok(())
}

#[derive(Debug, Deserialize)]
struct Meta {
    #[serde(rename = "schemaVersion")]
    schema_version: Option<u32>,
    #[serde(rename = "signedAt")]
    signed_at: Option<String>,
}

impl Meta {
    /// The text of `meta.signedAt`; the daemon parses it (this crate stays clock-free, so it
    /// has no date library).
    fn signed_at(&self) -> Result<String, DocumentError> {
        self.signed_at
            .clone()
            .ok_or_else(|| DocumentError::SignedAt("absent".into()))
    }
}

// The documents as nixfleet's CI writes them (camelCase, NIXFLEET-WIRE.md §4.1–4.2). The
// snake_case names fleet-ledger's first documents used are accepted as aliases, so manifest
// entries recorded before stay readable. Fields the planner does not read (a host's `system`
// and `tags`, a channel's intervals, a policy's `strategy` and `healthGate`, `displayName`)
// are covered by the signature and the content hash but not parsed.

#[derive(Debug, Deserialize)]
struct HostDoc {
    channel: String,
    /// The host's SSH ed25519 key (OpenSSH one-line form), which enrollment binds to.
    #[serde(default)]
    pubkey: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ChannelDoc {
    #[serde(alias = "rolloutPolicy")]
    rollout_policy: String,
}

#[derive(Debug, Deserialize)]
struct PolicyWaveDoc {
    #[serde(alias = "soakMinutes")]
    soak_minutes: u32,
}

#[derive(Debug, Deserialize)]
struct PolicyDoc {
    #[serde(default)]
    waves: Vec<PolicyWaveDoc>,
    #[serde(alias = "onHealthFailure")]
    on_health_failure: OnHealthFailure,
}

#[derive(Debug, Deserialize)]
struct WaveDoc {
    hosts: Vec<String>,
    /// nixfleet resolves each wave's soak into the wave itself.
    #[serde(default, alias = "soakMinutes")]
    soak_minutes: Option<u32>,
}

#[derive(Debug, Deserialize)]
struct EdgeDoc {
    #[serde(alias = "after")]
    gated: String,
    #[serde(alias = "before")]
    gates: String,
}

#[derive(Debug, Deserialize)]
struct FleetDoc {
    #[serde(rename = "schemaVersion")]
    schema_version: u32,
    hosts: BTreeMap<String, HostDoc>,
    channels: BTreeMap<String, ChannelDoc>,
    #[serde(default, alias = "rolloutPolicies")]
    rollout_policies: BTreeMap<String, PolicyDoc>,
    #[serde(default)]
    waves: BTreeMap<String, Vec<WaveDoc>>,
    #[serde(default, alias = "channelEdges")]
    channel_edges: Vec<EdgeDoc>,
    #[serde(default)]
    edges: Vec<EdgeDoc>,
    meta: Meta,
}

#[derive(Debug, Deserialize)]
struct HostWaveDoc {
    hostname: String,
    #[serde(alias = "waveIndex")]
    wave_index: u32,
    #[serde(alias = "targetClosure")]
    target_closure: String,
}

#[derive(Debug, Deserialize)]
struct BudgetDoc {
    /// nixfleet writes a selector object (`{tags, tagsAny, hosts, channel, all}`); the first
    /// fleet-ledger documents a name.
    selector: serde_json::Value,
    hosts: Vec<String>,
    #[serde(alias = "maxInFlight")]
    max_in_flight: Option<u32>,
    #[serde(alias = "maxInFlightPct")]
    max_in_flight_pct: Option<u32>,
}

#[derive(Debug, Deserialize)]
struct RolloutDoc {
    #[serde(alias = "schemaVersion")]
    schema_version: u32,
    channel: String,
    #[serde(alias = "channelRef")]
    channel_ref: String,
    #[serde(alias = "fleetResolvedHash")]
    fleet_resolved_hash: String,
    #[serde(alias = "hostSet")]
    host_set: Vec<HostWaveDoc>,
    #[serde(default, alias = "disruptionBudgets")]
    disruption_budgets: Vec<BudgetDoc>,
    meta: Meta,
}

/// A budget's selector as an identity across rollouts: a name as written, an object as its
/// JSON with keys sorted.
fn selector_text(v: &serde_json::Value) -> Result<String, &'static str> {
    match v {
        serde_json::Value::String(s) => {
            check_label(s)?;
            Ok(s.clone())
        }
        serde_json::Value::Object(_) => {
            let text = v.to_string();
            if text.len() > 4096 {
                return Err("a selector object of at most 4096 bytes");
            }
            Ok(text)
        }
        _ => Err("expected a selector object or a name"),
    }
}

/// What agents will read must follow nixfleet's published schema (NIXFLEET-WIRE.md §4): every
/// selector (a fleet's `disruptionBudgets[].selector` and `rolloutPolicies.*.waves[].selector`,
/// a rollout manifest's `disruptionBudgets[].selector`) is an object whose known keys have
/// nixfleet's types (`tags`, `tagsAny`, `hosts`: string arrays; `channel`: a string or null;
/// `all`: a boolean). An agent fetching a manifest with a string selector from
/// `GET /v1/fleet.resolved` could not parse it.
///
/// Applied to manifests as they arrive (the daemon's intake), never to recorded entries:
/// fleet-ledger's first documents wrote a selector as a name, and the log must stay readable
/// and replayable as it was recorded.
pub fn check_agent_schema(doc: &serde_json::Value, fleet: bool) -> Result<(), DocumentError> {
    // The key as the document spells it (nixfleet's camelCase, or the snake_case alias).
    let find = |camel: &'static str, snake: &'static str| {
        doc.get(camel)
            .map(|v| (camel, v))
            .or_else(|| doc.get(snake).map(|v| (snake, v)))
    };
    if let Some((at, budgets)) = find("disruptionBudgets", "disruption_budgets") {
        let list = budgets
            .as_array()
            .ok_or_else(|| field(at, "expected an array of budgets"))?;
        for (i, b) in list.iter().enumerate() {
            check_selector(b.get("selector"), &format!("{at}[{i}].selector"))?;
        }
    }
    if fleet
        && let Some((at, policies)) = find("rolloutPolicies", "rollout_policies")
        && let Some(policies) = policies.as_object()
    {
        for (name, policy) in policies {
            let waves = policy.get("waves").and_then(|w| w.as_array());
            for (j, w) in waves.into_iter().flatten().enumerate() {
                if let Some(selector) = w.get("selector") {
                    let path = format!("{at}.{}.waves[{j}].selector", key(name));
                    check_selector(Some(selector), &path)?;
                }
            }
        }
    }
    Ok(())
}

fn check_selector(v: Option<&serde_json::Value>, at: &str) -> Result<(), DocumentError> {
    use serde_json::Value;
    let Some(v) = v else {
        return Err(field(at, "missing: nixfleet's selector object is required"));
    };
    let Value::Object(map) = v else {
        return Err(field(
            at,
            format!(
                "a selector is an object ({{tags, tagsAny, hosts, channel, all}}), not {}",
                match v {
                    Value::String(_) => "a string",
                    Value::Array(_) => "an array",
                    Value::Number(_) => "a number",
                    Value::Bool(_) => "a boolean",
                    Value::Null => "null",
                    Value::Object(_) => "an object",
                }
            ),
        ));
    };
    for (k, val) in map {
        let ok = match k.as_str() {
            "tags" | "tagsAny" | "hosts" => val
                .as_array()
                .is_some_and(|a| a.iter().all(Value::is_string)),
            "channel" => val.is_string() || val.is_null(),
            "all" => val.is_boolean(),
            _ => true,
        };
        if !ok {
            let want = match k.as_str() {
                "channel" => "a string or null",
                "all" => "a boolean",
                _ => "an array of strings",
            };
            return Err(field(format!("{at}.{k}"), format!("expected {want}")));
        }
    }
    Ok(())
}

fn parse<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, DocumentError> {
    serde_json::from_slice(bytes).map_err(|e| DocumentError::Parse(e.to_string()))
}

fn schema(top: u32, meta: &Meta) -> Result<(), DocumentError> {
    if top != SCHEMA_VERSION {
        return Err(DocumentError::SchemaVersion(top));
    }
    match meta.schema_version {
        Some(v) if v != SCHEMA_VERSION => Err(DocumentError::SchemaVersion(v)),
        _ => Ok(()),
    }
}

fn inconsistent(msg: String) -> DocumentError {
    DocumentError::Inconsistent(msg)
}

/// A parsed, self-consistent `fleet.resolved`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FleetDocument {
    /// What the planner reads.
    pub fleet: Fleet,
    /// `meta.signedAt`, as written (RFC 3339).
    pub signed_at: String,
}

/// Parses and checks a `fleet.resolved` document.
pub fn parse_fleet(bytes: &[u8]) -> Result<FleetDocument, DocumentError> {
    let doc: FleetDoc = parse(bytes)?;
    schema(doc.schema_version, &doc.meta)?;
    let signed_at = doc.meta.signed_at()?;
    let mut fleet = Fleet::default();
    for (name, p) in doc.rollout_policies {
        check_label(&name).map_err(|e| field(format!("rollout_policies.{}", key(&name)), e))?;
        fleet.rollout_policies.insert(
            name,
            RolloutPolicy {
                wave_soak_minutes: p.waves.iter().map(|w| w.soak_minutes).collect(),
                on_health_failure: p.on_health_failure,
            },
        );
    }
    for (name, c) in doc.channels {
        check_channel(&name).map_err(|e| field(format!("channels.{}", key(&name)), e))?;
        if !fleet.rollout_policies.contains_key(&c.rollout_policy) {
            return Err(inconsistent(format!(
                "channel {name} names rollout policy {:?}, which is not declared",
                c.rollout_policy
            )));
        }
        fleet.channels.insert(name, c.rollout_policy);
    }
    for (host, h) in doc.hosts {
        check_host(&host).map_err(|e| field(format!("hosts.{}", key(&host)), e))?;
        if !fleet.channels.contains_key(&h.channel) {
            return Err(inconsistent(format!(
                "host {host} is on channel {:?}, which is not declared",
                h.channel
            )));
        }
        if let Some(key) = h.pubkey {
            fleet.host_keys.insert(host.clone(), key);
        }
        fleet.hosts.insert(host, h.channel);
    }
    for (channel, waves) in doc.waves {
        let mut seen = BTreeSet::new();
        for (i, w) in waves.iter().enumerate() {
            for h in &w.hosts {
                if fleet.hosts.get(h) != Some(&channel) {
                    return Err(inconsistent(format!(
                        "wave {i} of channel {channel} lists {h}, which is not a host of that channel"
                    )));
                }
                if !seen.insert(h.clone()) {
                    return Err(inconsistent(format!(
                        "host {h} appears twice in the waves of channel {channel}"
                    )));
                }
            }
        }
        if waves.iter().all(|w| w.soak_minutes.is_some()) {
            fleet.wave_soak_minutes.insert(
                channel.clone(),
                waves.iter().filter_map(|w| w.soak_minutes).collect(),
            );
        }
        fleet
            .waves
            .insert(channel, waves.into_iter().map(|w| w.hosts).collect());
    }
    check_edges("channel_edges", &doc.channel_edges, |c| {
        fleet.channels.contains_key(c)
    })?;
    check_edges("edges", &doc.edges, |h| fleet.hosts.contains_key(h))?;
    let edges = |v: Vec<EdgeDoc>| -> Vec<Edge> {
        v.into_iter()
            .map(|e| Edge {
                gated: e.gated,
                gates: e.gates,
            })
            .collect()
    };
    fleet.channel_edges = edges(doc.channel_edges);
    fleet.host_edges = edges(doc.edges);
    Ok(FleetDocument { fleet, signed_at })
}

/// A parsed rollout manifest (checked against a fleet by [`check_rollout`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RolloutDocument {
    /// `channel@channel_ref`.
    pub rollout_id: RolloutId,
    /// `fleet_resolved_hash`: SHA-256 of the fleet document it was built against.
    pub fleet_resolved_hash: [u8; 32],
    /// `meta.signedAt`, as written (RFC 3339).
    pub signed_at: String,
    /// Hosts, waves and targets.
    pub host_set: Vec<HostAssignment>,
    /// Disruption budgets.
    pub budgets: Vec<Budget>,
}

/// Parses a 64-digit lowercase hex SHA-256.
pub fn parse_hash(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64
        || !text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// Parses a rollout manifest.
pub fn parse_rollout(bytes: &[u8]) -> Result<RolloutDocument, DocumentError> {
    let doc: RolloutDoc = parse(bytes)?;
    schema(doc.schema_version, &doc.meta)?;
    let signed_at = doc.meta.signed_at()?;
    let rollout_id = RolloutId::new(&doc.channel, &doc.channel_ref)
        .map_err(|e| inconsistent(format!("channel and channel_ref: {e}")))?;
    let fleet_resolved_hash = parse_hash(&doc.fleet_resolved_hash)
        .ok_or_else(|| inconsistent("fleet_resolved_hash is not 64 lowercase hex digits".into()))?;
    let mut seen = BTreeSet::new();
    let mut host_set = Vec::with_capacity(doc.host_set.len());
    for (i, h) in doc.host_set.into_iter().enumerate() {
        check_host(&h.hostname).map_err(|e| field(format!("host_set[{i}].hostname"), e))?;
        check_closure(&h.target_closure)
            .map_err(|e| field(format!("host_set[{i}].target_closure"), e))?;
        if !seen.insert(h.hostname.clone()) {
            return Err(inconsistent(format!(
                "host {} appears twice in host_set",
                h.hostname
            )));
        }
        host_set.push(HostAssignment {
            hostname: h.hostname,
            wave: h.wave_index,
            target_closure: h.target_closure,
        });
    }
    let mut budgets = Vec::with_capacity(doc.disruption_budgets.len());
    for (i, b) in doc.disruption_budgets.into_iter().enumerate() {
        let at = |f: &str| format!("disruption_budgets[{i}].{f}");
        let selector = selector_text(&b.selector).map_err(|e| field(at("selector"), e))?;
        for (j, h) in b.hosts.iter().enumerate() {
            check_host(h).map_err(|e| field(at(&format!("hosts[{j}]")), e))?;
        }
        if b.max_in_flight == Some(0) {
            return Err(field(
                at("max_in_flight"),
                "0 would hold every host back forever; at least 1",
            ));
        }
        if let Some(p) = b.max_in_flight_pct
            && !(1..=100).contains(&p)
        {
            return Err(field(at("max_in_flight_pct"), format!("{p} is not 1-100")));
        }
        budgets.push(Budget {
            selector,
            hosts: b.hosts,
            max_in_flight: b.max_in_flight,
            max_in_flight_pct: b.max_in_flight_pct,
        });
    }
    Ok(RolloutDocument {
        rollout_id,
        fleet_resolved_hash,
        signed_at,
        host_set,
        budgets,
    })
}

/// Checks a rollout manifest against the fleet in force: every host is a host of the
/// rollout's channel, in the wave the fleet puts it in.
pub fn check_rollout(doc: &RolloutDocument, fleet: &Fleet) -> Result<(), DocumentError> {
    let channel = &doc.rollout_id.channel;
    if !fleet.channels.contains_key(channel) {
        return Err(inconsistent(format!(
            "channel {channel} is not declared in the fleet in force"
        )));
    }
    let waves = fleet.waves.get(channel);
    for h in &doc.host_set {
        if fleet.hosts.get(&h.hostname) != Some(channel) {
            return Err(inconsistent(format!(
                "host {} is not a host of channel {channel} in the fleet in force",
                h.hostname
            )));
        }
        if let Some(waves) = waves {
            let fleet_wave = waves.iter().position(|w| w.contains(&h.hostname));
            // nixfleet gives a host in no wave the index 0.
            if fleet_wave.unwrap_or(0) != h.wave as usize {
                return Err(inconsistent(format!(
                    "host {} has wave_index {} but the fleet puts it in wave {fleet_wave:?}",
                    h.hostname, h.wave
                )));
            }
        }
    }
    Ok(())
}

impl Manifests {
    /// Folds a manifest entry: the fleet replaces the fleet, a rollout manifest replaces its
    /// channel's. Other events are ignored. The bytes were checked before they were appended,
    /// so an error here means the log holds a manifest this build cannot read.
    pub fn apply(&mut self, seq: u64, event: &Event) -> Result<(), DocumentError> {
        let Some(m) = event.manifest() else {
            return Ok(());
        };
        let in_force = InForce {
            seq,
            content_hash: m.content_hash,
            signed_at: m.signed_at,
        };
        if m.rollout_id.is_none() {
            self.fleet = parse_fleet(m.canonical)?.fleet;
            self.fleet_in_force = Some(in_force);
        } else {
            let doc = parse_rollout(m.canonical)?;
            let channel = doc.rollout_id.channel.clone();
            self.rollout_in_force.insert(channel.clone(), in_force);
            self.rollouts.insert(
                channel,
                RolloutManifest {
                    rollout_id: doc.rollout_id,
                    manifest_hash: m.content_hash,
                    host_set: doc.host_set,
                    budgets: doc.budgets,
                },
            );
        }
        Ok(())
    }
}

/// CI's `revocations.json` (NIXFLEET-WIRE.md §9.1), parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RevocationsDocument {
    /// `meta.signedAt`, as written (RFC 3339).
    pub signed_at: String,
    /// The revocations, in the file's order.
    pub revocations: Vec<ledger::event::Revocation>,
}

/// CI's `bootstrap-nonces.json` (NIXFLEET-WIRE.md §9.2), parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NoncesDocument {
    /// `meta.signedAt`, as written (RFC 3339).
    pub signed_at: String,
    /// The nonces, in the file's order.
    pub nonces: Vec<ledger::event::AllowedNonce>,
}

#[derive(Debug, Deserialize)]
struct RevocationsDoc {
    #[serde(rename = "schemaVersion")]
    schema_version: u32,
    revocations: Vec<RevocationDoc>,
    meta: Meta,
}

#[derive(Debug, Deserialize)]
struct RevocationDoc {
    hostname: String,
    #[serde(rename = "notBefore")]
    not_before: String,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default, rename = "revokedBy")]
    revoked_by: Option<String>,
}

#[derive(Debug, Deserialize)]
struct NoncesDoc {
    #[serde(rename = "schemaVersion")]
    schema_version: u32,
    #[serde(rename = "bootstrapNonces")]
    bootstrap_nonces: Vec<NonceDoc>,
    meta: Meta,
}

#[derive(Debug, Deserialize)]
struct NonceDoc {
    nonce: String,
    hostname: String,
    #[serde(rename = "expiresAt")]
    expires_at: String,
    #[serde(default, rename = "mintedAt")]
    minted_at: Option<String>,
    #[serde(default, rename = "mintedBy")]
    minted_by: Option<String>,
}

fn time(at: String, text: &str) -> Result<ledger::domain::Micros, DocumentError> {
    crate::rfc3339::parse_rfc3339(text).map_err(|e| field(at, e))
}

/// Parses CI's `revocations.json`. Host names are kept as written: a name no agent could
/// authenticate as revokes nothing, and refusing the whole list for it would keep every other
/// revocation out of force.
pub fn parse_revocations(bytes: &[u8]) -> Result<RevocationsDocument, DocumentError> {
    let doc: RevocationsDoc = parse(bytes)?;
    schema(doc.schema_version, &doc.meta)?;
    let signed_at = doc.meta.signed_at()?;
    let mut revocations = Vec::with_capacity(doc.revocations.len());
    for (i, r) in doc.revocations.into_iter().enumerate() {
        if r.hostname.is_empty() {
            return Err(field(format!("revocations[{i}].hostname"), "empty"));
        }
        revocations.push(ledger::event::Revocation {
            not_before: time(format!("revocations[{i}].notBefore"), &r.not_before)?,
            hostname: r.hostname,
            reason: r.reason,
            revoked_by: r.revoked_by,
        });
    }
    Ok(RevocationsDocument {
        signed_at,
        revocations,
    })
}

/// Parses CI's `bootstrap-nonces.json`.
pub fn parse_bootstrap_nonces(bytes: &[u8]) -> Result<NoncesDocument, DocumentError> {
    let doc: NoncesDoc = parse(bytes)?;
    schema(doc.schema_version, &doc.meta)?;
    let signed_at = doc.meta.signed_at()?;
    let mut nonces = Vec::with_capacity(doc.bootstrap_nonces.len());
    for (i, n) in doc.bootstrap_nonces.into_iter().enumerate() {
        let at = |f: &str| format!("bootstrapNonces[{i}].{f}");
        if n.nonce.is_empty() {
            return Err(field(at("nonce"), "empty"));
        }
        nonces.push(ledger::event::AllowedNonce {
            expires_at: time(at("expiresAt"), &n.expires_at)?,
            minted_at: n
                .minted_at
                .as_deref()
                .map(|t| time(at("mintedAt"), t))
                .transpose()?,
            nonce: n.nonce,
            hostname: n.hostname,
            minted_by: n.minted_by,
        });
    }
    Ok(NoncesDocument { signed_at, nonces })
}
