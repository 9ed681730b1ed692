//! Table names in the store.

/// Rollouts by id.
pub const ROLLOUTS: &str = "proj.rollouts";
/// Host records by (rollout, host).
pub const HOSTS: &str = "proj.hosts";
/// Failing controls by (rollout, host, control or probe).
pub const PROBE_FAILURES: &str = "proj.probe_failures";
/// Quarantined closures by (channel, closure).
pub const QUARANTINE: &str = "proj.quarantine";
/// Queued dispatches by (host, rollout).
pub const DISPATCH_QUEUE: &str = "proj.dispatch_queue";
/// Current blocks: one row per rollout with blocked hosts; key = the rollout id, value =
/// its (host, block) rows in host order.
pub const DEFERRALS: &str = "proj.deferrals";
/// Index: channel → its active rollout.
pub const ACTIVE_BY_CHANNEL: &str = "proj.active_by_channel";
/// Index: the entries that name each host, for timelines. One row per (block of
/// [`INDEX_BLOCK`](crate::INDEX_BLOCK) entries, host): key = block number as 8 big-endian
/// bytes then the bincode host name; value = the entries' offsets in the block, u16
/// big-endian each, ascending. Block-major keys make every write an append at the end of
/// the table; a host's timeline is one point read per block.
pub const HOST_ENTRIES: &str = "proj.host_entries";
/// Enrollment tokens used, by nonce: a nonce is accepted once, ever.
pub const ENROLLMENTS: &str = "proj.enrollments";
/// The latest manifest entry of the fleet (key: bincode `None`) and of each rollout (key:
/// bincode `Some(rollout id)`).
pub const MANIFESTS: &str = "proj.manifests";
/// Events counted by what they count (`gate-block`, the gate; `compliance-failure`, the
/// control): the totals nixfleet's metrics counters expose, true after any restart.
pub const COUNTERS: &str = "proj.counters";
/// CI's revocations in force, by host: the list of the latest `RevocationsAccepted`.
pub const REVOCATIONS: &str = "proj.revocations";
/// CI's bootstrap-nonce allowlist in force, by nonce: the latest `BootstrapNoncesAccepted`.
pub const NONCE_ALLOWLIST: &str = "proj.nonce_allowlist";
/// The latest entry of each of CI's signed files that is not a manifest, by name
/// (`revocations`, `bootstrap-nonces`): which one is in force, and whether a new one is newer.
pub const SIDECARS: &str = "proj.sidecars";
/// Watermark: fold version and the seq the tables reflect.
pub const META: &str = "proj.meta";
/// Every projection table, in a fixed order.
pub const ALL: [&str; 14] = [
    ROLLOUTS,
    HOSTS,
    PROBE_FAILURES,
    QUARANTINE,
    DISPATCH_QUEUE,
    DEFERRALS,
    ACTIVE_BY_CHANNEL,
    ENROLLMENTS,
    MANIFESTS,
    COUNTERS,
    REVOCATIONS,
    NONCE_ALLOWLIST,
    SIDECARS,
    HOST_ENTRIES,
];
/// Tables earlier fold versions wrote and this one does not: a rebuild deletes them.
/// `proj.by_host` (fold versions 1–4) held a per-host index of the rollouts each host
/// joined; the writer now looks through the active rollouts instead (see
/// [`State::active_rollouts_of`](crate::State::active_rollouts_of)).
pub const RETIRED: [&str; 1] = ["proj.by_host"];
