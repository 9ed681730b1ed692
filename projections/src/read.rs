//! Typed point and prefix reads of the stored projection tables, for readers that must not
//! hold the whole [`State`](crate::State) (the daemon's API threads read a redb snapshot:
//! MVCC, committed batches only, never blocking the writer).
//!
//! Keys are the bincode encodings of the model keys; bincode writes a tuple as its elements
//! one after another, so "every row of rollout R" is a byte-prefix scan on `encode(R)`.

use ledger::domain::RolloutId;
use ledger::tables::{TableError, TableReader};
use serde::de::DeserializeOwned;

use crate::model::{decode, encode};
use crate::tables::{
    COUNTERS, DEFERRALS, DISPATCH_QUEUE, HOSTS, PROBE_FAILURES, QUARANTINE, ROLLOUTS,
};
use crate::{DeferralRow, DispatchRow, HostRecord, ProbeFailureRow, QuarantineRow, RolloutRecord};

/// Rows with their keys, in key order.
pub type Rows<K, V> = Vec<(K, V)>;

fn get<V: DeserializeOwned>(
    r: &dyn TableReader,
    table: &'static str,
    key: &[u8],
) -> Result<Option<V>, TableError> {
    r.get(table, key)?
        .map(|bytes| decode(table, &bytes))
        .transpose()
}

fn prefixed<K: DeserializeOwned, V: DeserializeOwned>(
    r: &dyn TableReader,
    table: &'static str,
    prefix: &[u8],
) -> Result<Vec<(K, V)>, TableError> {
    let mut out = Vec::new();
    r.scan_prefix(table, prefix, &mut |k, v| {
        out.push((decode(table, k)?, decode(table, v)?));
        Ok(())
    })?;
    Ok(out)
}

/// One rollout.
pub fn rollout(r: &dyn TableReader, id: &RolloutId) -> Result<Option<RolloutRecord>, TableError> {
    get(r, ROLLOUTS, &encode(id))
}

/// Every rollout, by id.
pub fn rollouts(r: &dyn TableReader) -> Result<Vec<RolloutRecord>, TableError> {
    Ok(prefixed::<RolloutId, RolloutRecord>(r, ROLLOUTS, &[])?
        .into_iter()
        .map(|(_, v)| v)
        .collect())
}

/// One host's record in one rollout.
pub fn host(
    r: &dyn TableReader,
    rollout: &RolloutId,
    hostname: &str,
) -> Result<Option<HostRecord>, TableError> {
    get(r, HOSTS, &encode(&(rollout, hostname)))
}

/// The host records of a rollout, by host name.
pub fn hosts_of(r: &dyn TableReader, rollout: &RolloutId) -> Result<Vec<HostRecord>, TableError> {
    Ok(
        prefixed::<(RolloutId, String), HostRecord>(r, HOSTS, &encode(rollout))?
            .into_iter()
            .map(|(_, v)| v)
            .collect(),
    )
}

/// The dispatches queued for a host, by rollout id.
pub fn dispatches_for(
    r: &dyn TableReader,
    hostname: &str,
) -> Result<Vec<(RolloutId, DispatchRow)>, TableError> {
    Ok(
        prefixed::<(String, RolloutId), DispatchRow>(r, DISPATCH_QUEUE, &encode(&hostname))?
            .into_iter()
            .map(|((_, rid), v)| (rid, v))
            .collect(),
    )
}

/// Every current gate block, by (rollout, host). (Stored a rollout per row.)
pub fn deferrals(
    r: &dyn TableReader,
) -> Result<Rows<(RolloutId, String), DeferralRow>, TableError> {
    let mut out = Vec::new();
    for (rollout, rows) in prefixed::<RolloutId, Vec<(String, DeferralRow)>>(r, DEFERRALS, &[])? {
        out.extend(rows.into_iter().map(|(h, row)| ((rollout.clone(), h), row)));
    }
    // Stored rows are in encoded-key order; callers get the typed order.
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// Every quarantined closure, by (channel, closure).
pub fn quarantine(
    r: &dyn TableReader,
) -> Result<Rows<(String, String), QuarantineRow>, TableError> {
    prefixed(r, QUARANTINE, &[])
}

/// Outstanding enforce failures of a rollout, by (host, control).
pub fn probe_failures_of(
    r: &dyn TableReader,
    rollout: &RolloutId,
) -> Result<Rows<(RolloutId, String, String), ProbeFailureRow>, TableError> {
    prefixed(r, PROBE_FAILURES, &encode(rollout))
}

/// The event counts, by (what, label): `gate-block` by gate, `compliance-failure` by control.
pub fn counters(r: &dyn TableReader) -> Result<Rows<(String, String), u64>, TableError> {
    prefixed(r, COUNTERS, &[])
}
