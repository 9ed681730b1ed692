//! The dispatch long poll: a host takes its oldest queued dispatch.

use super::{Delivered, Log};
use ledger::domain::{Hostname, Micros, RolloutId};
use ledger::event::{DispatchDelivered, Event};

/// The host's oldest queued dispatch (ties: the smaller rollout id), now delivered.
pub(super) fn take_dispatch(log: &mut impl Log, host: Hostname, now: Micros) -> Option<Delivered> {
    let state = log.state();
    let (rollout, row) = state
        .dispatch_queue
        .range(
            (
                host.to_string(),
                RolloutId {
                    channel: String::new(),
                    channel_ref: String::new(),
                },
            )..,
        )
        .take_while(|((h, _), _)| *h == *host)
        .min_by_key(|((_, r), row)| (row.enqueued_at, r.clone()))
        .map(|((_, r), row)| (r.clone(), row.clone()))?;
    let wave = state.hosts.get(&rollout, &host).map_or(0, |h| h.wave);
    let e = Event::DispatchDelivered(DispatchDelivered {
        hostname: host.to_string(),
        rollout_id: rollout.clone(),
    });
    let seq = log.stage(now, vec![e]);
    Some(Delivered {
        host,
        rollout,
        row,
        wave,
        seq,
    })
}
