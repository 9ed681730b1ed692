//! The in-process daemon harness of the HTTP tests: a fleet's setup, the daemon started on
//! it, a client, and waits on the writer's commits.
#![allow(dead_code, unreachable_pub)] // shared by test binaries that each use a part

use std::time::Duration;

use fleet_ledger::daemon::Daemon;
use fleet_ledger_demo::{ApiClient, Setup};
use serde_json::{Value, json};

pub struct Fleet {
    pub _dir: tempfile::TempDir,
    pub setup: Setup,
    pub daemon: Daemon,
    pub c: ApiClient,
    /// `fleet_ledger_rejections_total` by reason as `refused` last saw it.
    counted: std::sync::Mutex<std::collections::BTreeMap<String, u64>>,
}

impl Fleet {
    pub async fn start(hosts: usize) -> Fleet {
        Fleet::start_with(hosts, |_| {}).await
    }

    /// A fleet whose planner runs only when an input calls for it (no safety tick), so a
    /// test can require that a refusal appends nothing without racing a tick.
    pub async fn start_quiet(hosts: usize) -> Fleet {
        Fleet::start_with(hosts, |c| c.plan_interval_ms = 3_600_000).await
    }

    pub async fn start_with(
        hosts: usize,
        edit: impl FnOnce(&mut fleet_ledger::config::Config),
    ) -> Fleet {
        let dir = tempfile::tempdir().unwrap();
        let setup = Setup::create(dir.path(), None, hosts).unwrap();
        let mut config = setup.config.clone();
        edit(&mut config);
        let (daemon, c) = setup.start_with(config).await.unwrap();
        Fleet {
            _dir: dir,
            setup,
            daemon,
            c,
            counted: Default::default(),
        }
    }

    pub fn op(&self) -> &str {
        &self.setup.tokens.operator
    }

    pub fn agent(&self, host: &str) -> &str {
        &self.setup.tokens.agents[host]
    }

    /// Committed entries (a fresh MVCC snapshot).
    pub fn size(&self) -> u64 {
        let r = self.daemon.shared.reader.read().unwrap();
        r.as_ref().unwrap().snapshot().unwrap().size()
    }

    pub async fn post_fleet(&self) -> Value {
        let (body, _) = self.setup.signed_fleet().unwrap();
        self.c
            .ok(&self.setup.tokens.ci, "/v1/manifests/fleet", &body)
            .await
            .unwrap()
    }

    pub async fn post_rollout(&self, channel: &str, r: &str, target: &str) -> (u16, Value) {
        self.post_rollout_at(channel, r, target, -30).await
    }

    pub async fn post_rollout_at(
        &self,
        channel: &str,
        r: &str,
        target: &str,
        secs: i64,
    ) -> (u16, Value) {
        let doc = self
            .setup
            .rollout_doc(channel, r, target, &self.setup.at(secs))
            .unwrap();
        let (body, _) = self.setup.sign(&doc).unwrap();
        self.c
            .post(
                &self.setup.tokens.ci,
                &format!("/v1/manifests/rollouts/{channel}@{r}"),
                &body,
            )
            .await
            .unwrap()
    }

    pub async fn wait(&self, what: &str, mut done: impl FnMut(&Fleet) -> bool) {
        until_committed(&self.daemon, what, async || done(self)).await;
    }

    pub async fn hosts(&self, rollout: &str) -> Value {
        let (s, v) = self
            .c
            .get(self.op(), &format!("/v1/ledger/rollouts/{rollout}/hosts"))
            .await
            .unwrap();
        assert_eq!(s, 200, "{v}");
        v
    }

    pub async fn event(&self, host: &str, rollout: &str, seq: u64, event: Value) -> (u16, Value) {
        let mut event = event;
        event["seq"] = json!(seq);
        let body = json!({"hostname": host, "rolloutId": rollout, "event": event});
        self.c
            .post(self.agent(host), "/v1/agent/events", &body)
            .await
            .unwrap()
    }

    /// Asserts an agent report recorded as refused: 200, the refusal's code and reason in the
    /// answer, and exactly one entry (the `AgentReportRefused`) appended.
    pub async fn recorded_refusal(&self, code: &str, got: (u16, Value), before: u64) {
        assert_eq!(got.0, 200, "{}", got.1);
        assert_eq!(got.1["refused"]["error"], code, "{}", got.1);
        assert!(
            got.1["refused"]["reason"]
                .as_str()
                .is_some_and(|r| !r.is_empty()),
            "{}",
            got.1
        );
        assert_eq!(got.1["seq"], before, "{}", got.1);
        assert_eq!(self.size(), before + 1, "one AgentReportRefused entry");
        // Counted where OPERATIONS.md says refusals are (issue 26, defect 13).
        let metrics = self.daemon.shared.metrics.render();
        assert!(
            metrics.contains(&format!(
                "fleet_ledger_rejections_total{{reason=\"{code}\"}}"
            )),
            "{code} not counted: {metrics}"
        );
    }

    /// Asserts a refusal: its status and code, and that nothing was appended.
    pub async fn refused(&self, status: u16, code: &str, got: (u16, Value), before: u64) {
        assert_eq!(got.0, status, "{}", got.1);
        assert_eq!(got.1["error"], code, "{}", got.1);
        assert!(
            got.1["reason"].as_str().is_some_and(|r| !r.is_empty()),
            "{}",
            got.1
        );
        assert_eq!(self.size(), before, "a refusal appended entries");
        // Counted once in `fleet_ledger_rejections_total`, as OPERATIONS.md says (issue 26,
        // defect 13): not missed, not counted by both the writer and the API.
        let now = self.rejections(code);
        let mut counted = self.counted.lock().unwrap();
        let was = counted.insert(code.to_string(), now).unwrap_or(0);
        assert_eq!(
            now,
            was + 1,
            "{code}: counted {} time(s)",
            now - was.min(now)
        );
    }

    /// `fleet_ledger_rejections_total{reason=code}`.
    pub fn rejections(&self, code: &str) -> u64 {
        let key = format!("fleet_ledger_rejections_total{{reason=\"{code}\"}} ");
        self.daemon
            .shared
            .metrics
            .render()
            .lines()
            .find_map(|l| l.strip_prefix(&key))
            .map_or(0, |v| v.trim().parse::<f64>().unwrap() as u64)
    }
}

pub const T: &str = "2026-11-26T12:00:00Z";

/// Re-checks `done` after every commit until it holds: what these tests wait for (a plan, a
/// tick's pruning, a manifest from the watched directory) can only happen in a commit, so
/// they wait on the writer's commits rather than on a timer. Ten seconds without it fail.
pub async fn until_committed(daemon: &Daemon, what: &str, mut done: impl AsyncFnMut() -> bool) {
    let mut committed = daemon.shared.committed.subscribe();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        // Marked before the check: a commit after it wakes the wait below.
        committed.mark_unchanged();
        if done().await {
            return;
        }
        if tokio::time::timeout_at(deadline, committed.changed())
            .await
            .is_err()
        {
            panic!("timed out waiting for {what}");
        }
    }
}

/// The Prometheus text, checking the answer is a 200.
pub async fn metrics(c: &ApiClient, token: &str) -> String {
    let resp = c
        .http
        .get(format!("{}/metrics", c.base))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp.text().await.unwrap()
}
