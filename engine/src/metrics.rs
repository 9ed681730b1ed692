//! Prometheus metrics (`GET /metrics`, text exposition format).

use prometheus_client::collector::Collector;
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric as _};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Label set of the rejection counter.
pub type Reason = Vec<(String, String)>;

/// The daemon's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Entries appended.
    pub entries: Counter,
    /// Batches committed.
    pub commits: Counter,
    /// Inputs per committed batch.
    pub batch_inputs: Histogram,
    /// Entries per committed batch.
    pub batch_entries: Histogram,
    /// Seconds from the start of a commit to its fsync returning.
    pub commit_seconds: Histogram,
    /// Inputs waiting for the writer.
    pub queue_depth: Gauge,
    /// Refused inputs by reason code.
    pub rejections: Family<Reason, Counter>,
    /// Requests answered 503 because the queue was full.
    pub queue_full: Counter,
    /// Failed commits.
    pub commit_failures: Counter,
    /// HTTP connections open (TLS handshakes included).
    pub connections_open: Gauge,
    /// Unauthenticated connections closed to make room under `limits.connections_max`.
    pub connections_evicted: Counter,
    /// Connections refused because every open one was authenticated and the cap was reached.
    pub connections_refused: Counter,
    /// The size of the log as last published as tiles.
    pub published_entries: Gauge,
    /// Committed entries not yet published, as of the last publication.
    pub publication_lag_entries: Gauge,
    /// Publications that failed (retried at the next round).
    pub publication_failures: Counter,
    /// Publication requests the destination did not answer within the deadline.
    pub publication_timeouts: Counter,
    /// The size of the latest checkpoint cosigned by a witness.
    pub witnessed_entries: Gauge,
    /// Witness requests that failed (refused, unreachable, or a cosignature that did not
    /// verify).
    pub witness_failures: Counter,
    /// Committed entries not yet covered by a witnessed checkpoint, as of the last round.
    pub witness_lag_entries: Gauge,
    /// The log's size (entries committed).
    pub log_entries: Gauge,
    /// Config reloads applied.
    pub reloads: Counter,
    /// Config reloads refused (the config in force stayed).
    pub reload_failures: Counter,
    /// Standbys left out of the sync set because they did not take a batch (failover).
    pub standbys_dropped: Counter,
    /// Standbys holding every acknowledged batch, as of the last commit (failover).
    pub sync_set_size: Gauge,
    /// 1 once this writer was fenced: another writer took a newer epoch (failover).
    pub fenced: Gauge,
    /// A follower: entries the writer has that it does not, as of its last contact.
    pub follower_lag_entries: Gauge,
    /// Seconds from shipping a batch to every standby's answer (failover).
    pub ship_seconds: Histogram,
    /// Seconds a swap of the commit register takes (failover).
    pub register_seconds: Histogram,
    /// CP time of the last committed entry (µs; the latest checkpoint covers it), read at
    /// each scrape as `last_checkpoint_age_seconds`.
    pub last_entry_us: std::sync::Arc<std::sync::atomic::AtomicI64>,
    /// Whether publication (tiles) and witnessing run: only then are their lags defined.
    pub publishing: std::sync::atomic::AtomicBool,
    /// See `publishing`.
    pub witnessing: std::sync::atomic::AtomicBool,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new(None)
    }
}

impl Metrics {
    /// The lags, from the committed size and what was last published and witnessed: at every
    /// commit and after every round, failed or waiting ones included. A publication that has
    /// never succeeded lags by the whole log, not by 0 (issue 26).
    pub fn update_lags(&self, committed: u64) {
        use std::sync::atomic::Ordering;
        let committed = committed as i64;
        if self.publishing.load(Ordering::Relaxed) {
            self.publication_lag_entries.set(
                committed
                    .saturating_sub(self.published_entries.get())
                    .max(0),
            );
        }
        if self.witnessing.load(Ordering::Relaxed) {
            self.witness_lag_entries.set(
                committed
                    .saturating_sub(self.witnessed_entries.get())
                    .max(0),
            );
        }
    }

    /// The metrics of a daemon serving the ledger at `database` (its file size is read at each
    /// scrape); `None` for none.
    pub fn new(database: Option<&std::path::Path>) -> Metrics {
        let mut registry = Registry::with_prefix("fleet_ledger");
        let entries = Counter::default();
        let commits = Counter::default();
        let batch_inputs = Histogram::new(exponential_buckets(1.0, 2.0, 13));
        let batch_entries = Histogram::new(exponential_buckets(1.0, 2.0, 15));
        let commit_seconds = Histogram::new(exponential_buckets(0.000_125, 2.0, 14));
        let queue_depth = Gauge::default();
        let rejections = Family::<Reason, Counter>::default();
        let queue_full = Counter::default();
        let commit_failures = Counter::default();
        let connections_open = Gauge::default();
        let connections_evicted = Counter::default();
        let connections_refused = Counter::default();
        let published_entries = Gauge::default();
        let publication_lag_entries = Gauge::default();
        let publication_failures = Counter::default();
        let witnessed_entries = Gauge::default();
        let witness_failures = Counter::default();
        registry.register(
            "witnessed_entries",
            "The size of the latest checkpoint cosigned by a witness (config `witnessing`)",
            witnessed_entries.clone(),
        );
        registry.register(
            "witness_failures",
            "Witness requests that failed: refused, unreachable, or a bad cosignature",
            witness_failures.clone(),
        );
        registry.register(
            "published_entries",
            "The log's size as last published as tiles (config `publish`)",
            published_entries.clone(),
        );
        registry.register(
            "publication_lag_entries",
            "Committed entries not yet published, as of the last publication",
            publication_lag_entries.clone(),
        );
        registry.register(
            "publication_failures",
            "Publications that failed (retried at the next round)",
            publication_failures.clone(),
        );
        let publication_timeouts = Counter::default();
        registry.register(
            "publication_timeouts",
            "Publication requests the destination did not answer within publication.request_timeout_secs",
            publication_timeouts.clone(),
        );
        registry.register("appended_entries", "Entries appended", entries.clone());
        registry.register("commits", "Batches committed", commits.clone());
        registry.register(
            "batch_inputs",
            "Inputs decided per committed batch",
            batch_inputs.clone(),
        );
        registry.register(
            "batch_entries",
            "Entries per committed batch",
            batch_entries.clone(),
        );
        registry.register(
            "commit_seconds",
            "Durable commit latency (append, projections, checkpoint, fsync)",
            commit_seconds.clone(),
        );
        registry.register(
            "queue_depth",
            "Inputs waiting for the writer",
            queue_depth.clone(),
        );
        registry.register(
            "rejections",
            "Inputs refused, by reason code",
            rejections.clone(),
        );
        registry.register(
            "queue_full",
            "Requests refused with 503 because the writer queue was full",
            queue_full.clone(),
        );
        registry.register(
            "commit_failures",
            "Commits that failed (every caller of the batch got an error)",
            commit_failures.clone(),
        );
        registry.register(
            "connections_open",
            "HTTP connections open (TLS handshakes included)",
            connections_open.clone(),
        );
        registry.register(
            "connections_evicted",
            "Unauthenticated connections closed to make room under limits.connections_max",
            connections_evicted.clone(),
        );
        registry.register(
            "connections_refused",
            "Connections refused: the cap was reached and every open connection was authenticated",
            connections_refused.clone(),
        );
        registry.register_collector(Box::new(LogLinesDropped));
        let witness_lag_entries = Gauge::default();
        registry.register(
            "witness_lag_entries",
            "Committed entries not covered by the latest witnessed checkpoint, as of the last witness round",
            witness_lag_entries.clone(),
        );
        let log_entries = Gauge::default();
        registry.register(
            "log_entries",
            "The log's size: entries committed",
            log_entries.clone(),
        );
        let reloads = Counter::default();
        let reload_failures = Counter::default();
        registry.register(
            "reloads",
            "Config reloads applied (SIGHUP, POST /v1/admin/reload)",
            reloads.clone(),
        );
        registry.register(
            "reload_failures",
            "Config reloads refused: the config in force stayed",
            reload_failures.clone(),
        );
        let standbys_dropped = Counter::default();
        let sync_set_size = Gauge::default();
        let fenced = Gauge::default();
        let follower_lag_entries = Gauge::default();
        let ship_seconds = Histogram::new(exponential_buckets(0.000_125, 2.0, 14));
        let register_seconds = Histogram::new(exponential_buckets(0.000_125, 2.0, 14));
        registry.register(
            "ship_seconds",
            "Seconds from shipping a batch to the standbys to their answers (failover)",
            ship_seconds.clone(),
        );
        registry.register(
            "register_seconds",
            "Seconds a compare-and-swap of the commit register takes (failover)",
            register_seconds.clone(),
        );
        registry.register(
            "follower_lag_entries",
            "On a follower: entries the writer holds that it does not yet, as of its last contact",
            follower_lag_entries.clone(),
        );
        registry.register(
            "standbys_dropped",
            "Standbys left out of the sync set because they did not take a batch (alert: the writer runs with fewer copies)",
            standbys_dropped.clone(),
        );
        registry.register(
            "sync_set_size",
            "Standbys holding every acknowledged batch, as of the last commit",
            sync_set_size.clone(),
        );
        registry.register(
            "fenced",
            "1 once this writer was fenced by a newer epoch: it signs nothing more",
            fenced.clone(),
        );
        let last_entry_us = std::sync::Arc::new(std::sync::atomic::AtomicI64::new(0));
        registry.register_collector(Box::new(LedgerFile {
            database: database.map(std::path::Path::to_path_buf),
            last_entry_us: std::sync::Arc::clone(&last_entry_us),
        }));
        Metrics {
            registry,
            entries,
            commits,
            batch_inputs,
            batch_entries,
            commit_seconds,
            queue_depth,
            rejections,
            queue_full,
            commit_failures,
            connections_open,
            connections_evicted,
            connections_refused,
            published_entries,
            publication_lag_entries,
            publication_failures,
            publication_timeouts,
            witnessed_entries,
            witness_failures,
            witness_lag_entries,
            log_entries,
            reloads,
            reload_failures,
            standbys_dropped,
            sync_set_size,
            fenced,
            follower_lag_entries,
            ship_seconds,
            register_seconds,
            last_entry_us,
            publishing: false.into(),
            witnessing: false.into(),
        }
    }
}

/// Read at each scrape: `database_bytes` (the file's size) and `last_checkpoint_age_seconds`
/// (wall clock minus the CP time of the last committed entry, which the latest checkpoint
/// covers: a CP that stops committing shows it growing).
#[derive(Debug)]
struct LedgerFile {
    database: Option<std::path::PathBuf>,
    last_entry_us: std::sync::Arc<std::sync::atomic::AtomicI64>,
}

impl Collector for LedgerFile {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        use prometheus_client::metrics::gauge::ConstGauge;
        if let Some(bytes) = self
            .database
            .as_ref()
            .and_then(|p| std::fs::metadata(p).ok())
            .map(|m| m.len())
        {
            let g = ConstGauge::new(bytes as i64);
            let metric = encoder.encode_descriptor(
                "database_bytes",
                "Size of the ledger's database file",
                None,
                g.metric_type(),
            )?;
            g.encode(metric)?;
        }
        let last = self
            .last_entry_us
            .load(std::sync::atomic::Ordering::Relaxed);
        if last > 0 {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_micros() as i64);
            let g = ConstGauge::new(now.saturating_sub(last).max(0) as f64 / 1e6);
            let metric = encoder.encode_descriptor(
                "last_checkpoint_age_seconds",
                "Seconds since the CP time of the last committed entry (the latest checkpoint's)",
                None,
                g.metric_type(),
            )?;
            g.encode(metric)?;
        }
        Ok(())
    }
}

/// Where `log_lines_dropped_total` is read at each scrape: the daemon's log sink registers
/// its counter here when it starts (the engine writes no log sink of its own).
static LOG_LINES_DROPPED: std::sync::OnceLock<fn() -> u64> = std::sync::OnceLock::new();

/// Registers the function that tells how many log lines the process lost (the first call
/// wins).
pub fn count_dropped_log_lines_with(f: fn() -> u64) {
    let _ = LOG_LINES_DROPPED.set(f);
}

/// `log_lines_dropped_total`, read from the log sink at each scrape.
#[derive(Debug)]
struct LogLinesDropped;

impl Collector for LogLinesDropped {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let counter = ConstCounter::new(LOG_LINES_DROPPED.get().map_or(0, |f| f()));
        let metric = encoder.encode_descriptor(
            "log_lines_dropped",
            "Log lines lost: stderr failed (full disk, closed pipe) or was too slow",
            None,
            counter.metric_type(),
        )?;
        counter.encode(metric)
    }
}

impl Metrics {
    /// Counts a refusal.
    pub fn reject(&self, code: &str) {
        self.rejections
            .get_or_create(&vec![("reason".to_string(), code.to_string())])
            .inc();
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}

/// One declared host in nixfleet's metrics (NIXFLEET-WIRE.md §10), as the projections have
/// it at a scrape.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostSample {
    /// The host.
    pub host: String,
    /// Its channel in the fleet in force.
    pub channel: String,
    /// It runs its declared closure (the fleet's `closureHash`; for a fleet that declares
    /// none, its newest rollout record is Converged).
    pub converged: bool,
    /// Enforce failures outstanding in its newest rollout (one per control).
    pub compliance_failures: u64,
    /// The highest agent seq accepted in its newest rollout.
    pub verified_events: u64,
}

/// nixfleet's gauges, sampled from the projections and the fleet in force at a scrape.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NixfleetSample {
    /// One per host the fleet in force declares.
    pub hosts: Vec<HostSample>,
    /// Each declared channel and its freshness window in minutes.
    pub channels: Vec<(String, u32)>,
    /// Seconds since the fleet in force was signed (None without a fleet or `signedAt`).
    pub fleet_signed_age_seconds: Option<i64>,
    /// Gate blocks recorded, by gate (the whole log's count).
    pub gate_blocks: Vec<(String, u64)>,
    /// Compliance failures recorded, by control (the whole log's count).
    pub compliance_failures: Vec<(String, u64)>,
}

/// The label of nixfleet's gate-block counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct GateLabel {
    gate: String,
}

/// The label of nixfleet's compliance-failure counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct ControlLabel {
    control_id: String,
}

/// The labels of nixfleet's per-host gauges, in its order.
#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct HostLabels {
    host: String,
    channel: String,
}

/// The label of nixfleet's per-channel gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct ChannelLabel {
    channel: String,
}

/// The labels of nixfleet's build info.
#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct BuildLabels {
    version: String,
    git_commit: String,
}

impl NixfleetSample {
    /// nixfleet's metric families (no prefix besides `nixfleet_`), as OpenMetrics text
    /// without its closing `# EOF`.
    fn render(&self) -> String {
        let mut registry = Registry::default();
        let host_gauge = |name: &str,
                          help: &str,
                          registry: &mut Registry,
                          value: &dyn Fn(&HostSample) -> i64| {
            let family = Family::<HostLabels, Gauge>::default();
            for h in &self.hosts {
                family
                    .get_or_create(&HostLabels {
                        host: h.host.clone(),
                        channel: h.channel.clone(),
                    })
                    .set(value(h));
            }
            registry.register(name, help, family);
        };
        host_gauge(
            "nixfleet_host_converged",
            "1 when the host runs its declared closure",
            &mut registry,
            &|h| i64::from(h.converged),
        );
        host_gauge(
            "nixfleet_host_outstanding_compliance_failures",
            "Enforce-mode compliance failures outstanding in the host's newest rollout",
            &mut registry,
            &|h| i64::try_from(h.compliance_failures).unwrap_or(i64::MAX),
        );
        host_gauge(
            "nixfleet_host_outstanding_runtime_gate_errors",
            "Runtime gate errors outstanding (none: nixfleet v0.2 agents send none)",
            &mut registry,
            &|_| 0,
        );
        host_gauge(
            "nixfleet_host_verified_event_count",
            "The highest agent seq accepted in the host's newest rollout",
            &mut registry,
            &|h| i64::try_from(h.verified_events).unwrap_or(i64::MAX),
        );
        let channels = Family::<ChannelLabel, Gauge>::default();
        for (channel, minutes) in &self.channels {
            channels
                .get_or_create(&ChannelLabel {
                    channel: channel.clone(),
                })
                .set(i64::from(*minutes));
        }
        registry.register(
            "nixfleet_channel_freshness_window_minutes",
            "The channel's freshness window in the fleet in force",
            channels,
        );
        if let Some(age) = self.fleet_signed_age_seconds {
            let g = Gauge::<i64>::default();
            g.set(age.max(0));
            registry.register(
                "nixfleet_fleet_signed_age_seconds",
                "Seconds since the fleet in force was signed",
                g,
            );
        }
        let gates = Family::<GateLabel, Counter>::default();
        for (gate, n) in &self.gate_blocks {
            gates
                .get_or_create(&GateLabel { gate: gate.clone() })
                .inc_by(*n);
        }
        registry.register(
            "nixfleet_gate_block",
            "Gate blocks recorded, by gate",
            gates,
        );
        let controls = Family::<ControlLabel, Counter>::default();
        for (control, n) in &self.compliance_failures {
            controls
                .get_or_create(&ControlLabel {
                    control_id: control.clone(),
                })
                .inc_by(*n);
        }
        registry.register(
            "nixfleet_compliance_failure_events",
            "Compliance failures recorded, by control",
            controls,
        );
        registry.register(
            "nixfleet_runtime_gate_error_events",
            "Runtime gate errors received (none: nixfleet v0.2 agents send none)",
            Counter::<u64>::default(),
        );
        let build = Family::<BuildLabels, Gauge>::default();
        build
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION").into(),
                git_commit: option_env!("GIT_COMMIT").unwrap_or("unknown").into(),
            })
            .set(1);
        registry.register("nixfleet_cp_build_info", "Constant 1: the build", build);
        let mut out = String::new();
        encode(&mut out, &registry).expect("writing to a String cannot fail");
        out.strip_suffix("# EOF\n")
            .map(str::to_string)
            .unwrap_or(out)
    }
}

impl Metrics {
    /// The text exposition with nixfleet's families (sampled at this scrape) before the end.
    pub fn render_with(&self, nixfleet: &NixfleetSample) -> String {
        let own = self.render();
        let own = own.strip_suffix("# EOF\n").unwrap_or(&own);
        format!("{own}{}# EOF\n", nixfleet.render())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// nixfleet's families come under nixfleet's names (counters with `_total`), labels in
    /// its order, before the one `# EOF` of the exposition.
    #[test]
    fn nixfleet_families_render_under_nixfleets_names() {
        let sample = NixfleetSample {
            hosts: vec![HostSample {
                host: "web-01".into(),
                channel: "stable".into(),
                converged: true,
                compliance_failures: 2,
                verified_events: 9,
            }],
            channels: vec![("stable".into(), 180)],
            fleet_signed_age_seconds: Some(-5),
            gate_blocks: vec![("wave-promotion".into(), 3)],
            compliance_failures: vec![("access-control".into(), 4)],
        };
        let text = Metrics::default().render_with(&sample);
        for line in [
            r#"nixfleet_host_converged{host="web-01",channel="stable"} 1"#,
            r#"nixfleet_host_outstanding_compliance_failures{host="web-01",channel="stable"} 2"#,
            r#"nixfleet_host_verified_event_count{host="web-01",channel="stable"} 9"#,
            r#"nixfleet_channel_freshness_window_minutes{channel="stable"} 180"#,
            "nixfleet_fleet_signed_age_seconds 0",
            r#"nixfleet_gate_block_total{gate="wave-promotion"} 3"#,
            r#"nixfleet_compliance_failure_events_total{control_id="access-control"} 4"#,
            "nixfleet_runtime_gate_error_events_total 0",
            "fleet_ledger_commits_total 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line}: {text}");
        }
        assert!(text.ends_with("# EOF\n") && text.matches("# EOF").count() == 1);
    }
}
