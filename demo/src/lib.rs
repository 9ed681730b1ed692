//! `fleet-ledger-demo`: the daemon on an embedded ledger, a sample fleet signed with the
//! fixture CI key, and simulated agents that talk to it over real HTTP through whole
//! rollouts, with trouble: a host fails its enforce compliance probe and rolls back, its
//! closure is quarantined and blocks a re-dispatch of the same closure, an operator clears
//! the failed rollout, and a fixed successor supersedes and converges.
//!
//! It is also the daemon tests' harness ([`Setup`] writes a config, keys and tokens and starts
//! the daemon; [`ApiClient`] speaks its HTTP API). It lives outside the product: the CI key it
//! signs with is a fixture, public on purpose.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use ledger::keys::Signer;
use serde_json::{Value, json};

use wire::ts;

mod harness;

use harness::*;
pub use harness::{ApiClient, ORIGIN, Setup, Tokens};

/// The fixture CI release key (public on purpose; see fixtures/demo/README.md).
#[derive(Debug)]
pub struct Summary {
    /// The ledger.
    pub db: PathBuf,
    /// The genesis public key file.
    pub genesis_pub: PathBuf,
    /// Rollout id → state.
    pub rollouts: BTreeMap<String, String>,
    /// Host state → count, over the last rollout of each channel.
    pub hosts: BTreeMap<String, usize>,
    /// Entries in the ledger.
    pub entries: u64,
    /// The latest signed checkpoint.
    pub checkpoint: String,
    /// Wall time.
    pub elapsed: Duration,
    /// The host whose compliance probe failed.
    pub victim: String,
}

fn initial(host: &str) -> String {
    closure("base", host)
}

/// Builds one report's fields when it is sent.
type Step = Box<dyn Fn() -> Value + Send + Sync>;

/// One simulated agent: long-polls for dispatches and walks each through activation, a
/// compliance probe and convergence, or (for `bad` targets) a failed probe and a rollback.
async fn agent(
    c: Client,
    host: String,
    token: String,
    bad_closure: String,
    stop: Arc<AtomicBool>,
) -> Result<()> {
    let mut current = initial(&host);
    while !stop.load(Ordering::Relaxed) {
        let (status, d) = c.get(&token, "/v1/agent/dispatch?wait=1").await?;
        if status == 204 {
            continue;
        }
        if status != 200 {
            bail!("{host}: dispatch answered {status} {d}");
        }
        let rollout = d["rollout_id"].as_str().context("rollout_id")?.to_string();
        let target = d["target_closure"].as_str().context("target")?.to_string();
        let now = || ts::format(chrono::Utc::now().timestamp_micros());
        let bad = target == bad_closure;
        let status = if bad { "fail" } else { "pass" };
        let mut probe = json!({
            "probeName": "evidence-nis2-essential", "mode": "enforce", "status": status,
            "subResults": [
                {"controlId": "nis2.art21.a", "status": status, "framework": "nis2-essential",
                 "article": "21", "effectiveMode": "enforce"},
                {"controlId": "access-control", "status": "fail", "framework": "nis2-essential",
                 "effectiveMode": "observe", "overrideReason": "accepted risk until Q3"},
            ],
        });
        if bad {
            probe["failureReason"] = json!("nis2.art21.a: no backup evidence in 48 h");
        }
        // Each report is stamped when it is sent, as a real agent does. The shapes are
        // nixfleet v0.2's (NIXFLEET-WIRE.md §3.3).
        let steps: Vec<(&str, Step)> = {
            let (cur, tgt) = (current.clone(), target.clone());
            let mut v: Vec<(&str, Step)> = vec![
                (
                    "DispatchAck",
                    Box::new(move || json!({"currentClosureAtDispatch": cur, "receivedAt": now()})),
                ),
                (
                    "ActivationStarted",
                    Box::new(
                        move || json!({"startedAt": now(), "switchMethod": "switch-to-configuration"}),
                    ),
                ),
                ("ActivationCompleted", {
                    let tgt = tgt.clone();
                    Box::new(
                        move || json!({"observedCurrentClosure": tgt, "exitCode": 0, "completedAt": now()}),
                    )
                }),
                (
                    "ProbeResult",
                    Box::new(move || {
                        let mut p = probe.clone();
                        p["observedAt"] = json!(now());
                        p
                    }),
                ),
            ];
            if bad {
                let cur = current.clone();
                v.push(("Failed", Box::new(move || json!({"failedAt": now(), "sustainedDurationSecs": 300,
                    "failingProbes": ["evidence-nis2-essential"], "policyApplied": "rollback-and-halt"}))));
                v.push(("RollbackComplete", Box::new(move || json!({"revertedToClosure": cur, "exitCode": 0, "completedAt": now()}))));
            } else {
                v.push((
                    "Converged",
                    Box::new(move || json!({"convergedAt": now(), "currentClosure": tgt})),
                ));
            }
            v
        };
        let mut superseded = false;
        for (seq, (kind, fields)) in steps.iter().enumerate() {
            let mut event = fields();
            event["kind"] = json!(kind);
            event["seq"] = json!(seq + 1);
            let body = json!({"hostname": host, "rolloutId": rollout, "event": event});
            let (status, v) = c.post(&token, "/v1/agent/events", &body).await?;
            // A newer rollout on the channel superseded this one while the agent worked it:
            // its reports are recorded as refused and move nothing (DECISIONS 111); the agent
            // drops it and takes the next dispatch, as nixfleet's does.
            if status == 200 && v["refused"]["error"] == "rollout-superseded" {
                superseded = true;
                break;
            }
            if status != 200 || v.get("refused").is_some() {
                bail!("{host}: {kind} refused: {status} {v}");
            }
        }
        if !bad && !superseded {
            current = target;
        }
    }
    Ok(())
}

/// Demo options.
#[derive(Debug, Clone)]
pub struct Options {
    /// Hosts in the fleet.
    pub hosts: usize,
    /// Directory for the keys and the config.
    pub dir: PathBuf,
    /// The ledger (default: `ledger.redb` in `dir`).
    pub db: Option<PathBuf>,
    /// Print progress lines.
    pub verbose: bool,
}

/// The first agent failure, if any (the demo stops on it).
type Failure = Arc<std::sync::Mutex<Option<String>>>;

fn check(failure: &Failure) -> Result<()> {
    match failure.lock().map(|f| f.clone()) {
        Ok(Some(e)) => bail!("a simulated agent failed: {e}"),
        _ => Ok(()),
    }
}

async fn wait_for(
    c: &Client,
    token: &str,
    what: &str,
    deadline: Duration,
    failure: &Failure,
    mut done: impl FnMut(&Value) -> bool,
) -> Result<Value> {
    let started = Instant::now();
    loop {
        check(failure)?;
        let (_, v) = c.get(token, "/v1/ledger/rollouts").await?;
        if done(&v) {
            return Ok(v);
        }
        if started.elapsed() > deadline {
            bail!("timed out waiting for {what}; rollouts: {v}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn state_of(v: &Value, id: &str) -> Option<String> {
    v["rollouts"]
        .as_array()?
        .iter()
        .find(|r| r["rolloutId"] == id)
        .and_then(|r| r["state"].as_str().map(str::to_string))
}

/// Runs the demo: the daemon on a fresh ledger, CI's fleet and rollouts, simulated agents
/// over HTTP, until the rollouts end; returns what happened.
pub async fn run(opts: Options) -> Result<Summary> {
    let started = Instant::now();
    let say = |s: String| {
        if opts.verbose {
            println!("{s}");
        }
    };
    let setup = Setup::create(&opts.dir, opts.db.clone(), opts.hosts)?;
    let (daemon, c) = setup.start().await?;
    say(format!("daemon listening on http://{}", daemon.addr));
    let op = setup.tokens.operator.clone();
    let agent_tokens: Vec<(String, String)> = setup.tokens.agents.clone().into_iter().collect();
    let at = |secs: i64| setup.at(secs);
    let (ci, ci_token, fleet_doc, canary, stable_waves) = (
        &setup.ci,
        setup.tokens.ci.clone(),
        &setup.fleet_doc,
        &setup.canary,
        &setup.stable_waves,
    );
    let db = setup.db.clone();
    let genesis_pub = setup.genesis_pub.clone();
    let result = drive(
        &c,
        ci,
        &ci_token,
        &op,
        fleet_doc,
        canary,
        stable_waves,
        &agent_tokens,
        &at,
        &say,
    )
    .await;
    let (rollouts, victim) = match &result {
        Ok((v, victim)) => (v.clone(), victim.clone()),
        Err(_) => (Value::Null, String::new()),
    };
    let checkpoint = c
        .http
        .get(format!("{}/v1/ledger/checkpoint", c.base))
        .bearer_auth(&op)
        .send()
        .await?
        .text()
        .await?;
    daemon.shutdown().await?;
    result?;

    let mut states = BTreeMap::new();
    let mut hosts = BTreeMap::new();
    for r in rollouts["rollouts"].as_array().into_iter().flatten() {
        let id = r["rolloutId"].as_str().unwrap_or_default().to_string();
        states.insert(id, r["state"].as_str().unwrap_or_default().to_string());
    }
    for id in ["canary@a1a1a1a1", "stable@c3c3c3c3"] {
        if let Some(r) = rollouts["rollouts"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|r| r["rolloutId"] == id)
        {
            for s in r["hostStates"]
                .as_object()
                .into_iter()
                .flat_map(|m| m.values())
            {
                *hosts
                    .entry(s.as_str().unwrap_or_default().to_string())
                    .or_insert(0) += 1;
            }
        }
    }
    let entries = ledger::store::ReadOnlyStore::open(&db)?.snapshot()?.size();
    Ok(Summary {
        db,
        genesis_pub,
        rollouts: states,
        hosts,
        entries,
        checkpoint,
        elapsed: started.elapsed(),
        victim,
    })
}

#[allow(clippy::too_many_arguments)]
async fn drive(
    c: &Client,
    ci: &Signer,
    ci_token: &str,
    op: &str,
    fleet_doc: &Value,
    canary: &[String],
    stable_waves: &[Vec<String>],
    agent_tokens: &[(String, String)],
    at: &dyn Fn(i64) -> String,
    say: &dyn Fn(String),
) -> Result<(Value, String)> {
    let (body, fleet_hash) = sign(ci, fleet_doc)?;
    let v = c.ok(ci_token, "/v1/manifests/fleet", &body).await?;
    say(format!("CI: fleet.resolved accepted as entry {}", v["seq"]));

    let bad = closure("stable", "a1");
    let stop = Arc::new(AtomicBool::new(false));
    let failure: Failure = Arc::default();
    let mut agents = Vec::new();
    for (h, t) in agent_tokens {
        let (c, h, t, bad, stop, failure) = (
            c.clone(),
            h.clone(),
            t.clone(),
            bad.clone(),
            Arc::clone(&stop),
            Arc::clone(&failure),
        );
        agents.push(tokio::spawn(async move {
            if let Err(e) = agent(c, h, t, bad, stop).await
                && let Ok(mut f) = failure.lock()
            {
                f.get_or_insert(e.to_string());
            }
        }));
    }

    // Phase 1: canary and stable at a1. One wave-1 stable host fails its compliance probe.
    let canary_waves = vec![canary.to_vec()];
    let (body, _) = sign(
        ci,
        &rollout(
            "canary",
            "a1a1a1a1",
            &fleet_hash,
            &canary_waves,
            &closure("canary", "a1"),
            &at(-50),
        ),
    )?;
    c.ok(ci_token, "/v1/manifests/rollouts/canary@a1a1a1a1", &body)
        .await?;
    // Only one stable host gets the bad closure: the first host of wave 1.
    let mut a1 = rollout(
        "stable",
        "a1a1a1a1",
        &fleet_hash,
        stable_waves,
        &closure("stable", "a1-good"),
        &at(-50),
    );
    let victim = stable_waves
        .get(1)
        .and_then(|w| w.first())
        .cloned()
        .context("a wave 1")?;
    for h in a1["host_set"].as_array_mut().into_iter().flatten() {
        if h["hostname"] == victim.as_str() {
            h["target_closure"] = json!(bad);
        }
    }
    let (body, _) = sign(ci, &a1)?;
    c.ok(ci_token, "/v1/manifests/rollouts/stable@a1a1a1a1", &body)
        .await?;
    say("CI: rollout manifests canary@a1a1a1a1 and stable@a1a1a1a1 accepted".into());
    let limit = Duration::from_secs(120);
    // Failed when the host fails, Reverted once its rollback completes.
    wait_for(c, op, "stable@a1a1a1a1 to revert", limit, &failure, |v| {
        state_of(v, "stable@a1a1a1a1").as_deref() == Some("Reverted")
    })
    .await?;
    say(format!(
        "{victim} failed its enforce compliance probe and rolled back: stable@a1a1a1a1 is Reverted, the closure quarantined"
    ));

    // The operator investigates and clears the failed rollout (recorded with a reason).
    let v = c
        .ok(
            op,
            "/v1/rollouts/stable@a1a1a1a1/clearance",
            &json!({"reason": "root cause: backup timer disabled; fixed in c3"}),
        )
        .await?;
    say(format!(
        "operator alice cleared stable@a1a1a1a1 (entry {})",
        v["seq"]
    ));
    // Phase 2: CI republishes the same bad closure at a new ref: the quarantine blocks it.
    let (body, _) = sign(
        ci,
        &rollout(
            "stable",
            "b2b2b2b2",
            &fleet_hash,
            stable_waves,
            &bad,
            &at(-40),
        ),
    )?;
    c.ok(ci_token, "/v1/manifests/rollouts/stable@b2b2b2b2", &body)
        .await?;
    let started = Instant::now();
    loop {
        let (_, d) = c.get(op, "/v1/deferrals").await?;
        let blocked = d["deferrals"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|r| r["rolloutId"] == "stable@b2b2b2b2" && r["gate"] == "quarantine")
            .count();
        if blocked > 0 {
            say(format!(
                "stable@b2b2b2b2 reuses the quarantined closure: {blocked} hosts blocked by the quarantine gate"
            ));
            break;
        }
        check(&failure)?;
        if started.elapsed() > limit {
            bail!("the quarantine never blocked stable@b2b2b2b2: {d}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Phase 3: CI ships a fixed closure; it supersedes the blocked rollout.
    let (body, _) = sign(
        ci,
        &rollout(
            "stable",
            "c3c3c3c3",
            &fleet_hash,
            stable_waves,
            &closure("stable", "c3"),
            &at(-30),
        ),
    )?;
    c.ok(ci_token, "/v1/manifests/rollouts/stable@c3c3c3c3", &body)
        .await?;
    let v = wait_for(c, op, "stable@c3c3c3c3 to finish", limit, &failure, |v| {
        state_of(v, "stable@c3c3c3c3").as_deref() == Some("Terminal")
            && state_of(v, "canary@a1a1a1a1").as_deref() == Some("Terminal")
    })
    .await?;
    say("stable@c3c3c3c3 superseded the blocked rollout and converged on every host".into());
    let v2 = c
        .ok(op, "/v1/quarantine/lift", &json!({"channel": "stable", "closure": bad, "reason": "superseded by c3; closure retired"}))
        .await?;
    say(format!(
        "operator alice lifted the quarantine (entry {})",
        v2["seq"]
    ));

    stop.store(true, Ordering::Relaxed);
    for a in agents {
        a.await?;
    }
    check(&failure)?;
    Ok((v, victim))
}

/// Prints the summary and what to try next.
pub fn print_summary(s: &Summary, dir: &Path) {
    println!("\nrollouts:");
    for (id, state) in &s.rollouts {
        println!("  {id:<24} {state}");
    }
    println!("hosts of the current rollouts:");
    for (state, n) in &s.hosts {
        println!("  {state:<10} {n}");
    }
    println!(
        "{} entries in {:.1} s\n\nlatest checkpoint:\n{}",
        s.entries,
        s.elapsed.as_secs_f64(),
        s.checkpoint
    );
    let d = dir.display();
    let db = s.db.display();
    let key = s.genesis_pub.display();
    println!("try next:");
    println!("  fleet-ledger verify --db {db} --key {key}");
    println!("  fleet-ledger check --db {db}");
    println!("  fleet-ledger replay --db {db} --check");
    println!("  fleet-ledger replay --db {db} --at-seq {}", s.entries / 2);
    println!(
        "  fleet-ledger why --db {db} --rollout stable@a1a1a1a1 --host {}",
        s.victim
    );
    println!("  fleet-ledger timeline --db {db} --rollout stable@c3c3c3c3");
    println!("  fleet-ledger report --db {db} --rollout stable@a1a1a1a1 --out {d}/stable-a1.html");
    println!("  fleet-ledger export --db {db} --out {d}/ledger.bundle");
    println!("  fleet-ledger prove inclusion --db {db} --seq 1");
    println!("  fleet-ledger serve --db {db} --listen 127.0.0.1:8080 --config {d}/config.json &");
    println!(
        "  curl -s -H \"Authorization: Bearer $(cat {d}/operator.token)\" http://127.0.0.1:8080/v1/ledger/rollouts"
    );
}
