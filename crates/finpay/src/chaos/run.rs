//! One scenario, end to end: a fresh cluster in a temporary data dir, open-loop load through the
//! load engine, the scheduled faults, a per-second sample of the cluster, then restore, drain and
//! the checks (steady state, money, notifications, convergence).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::Context as _;
use futures::StreamExt as _;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde::Serialize;
use tokio::time::Instant;

use super::proxy::FaultProxy;
use super::scenario::{Bounds, Scenario, Scope};
use super::schedule::{self, ms, Action, Schedule, Target, Toxic, Window};
use super::topology;
use crate::load::{self, Class, LoadConfig, LoadReport, Outcome, Progress};
use crate::supervisor::Shared;
use crate::up::{Cluster, UpConfig};
use finpay_services::http::FaultSettings;
use finpay_services::ServiceKind;

/// The admin bearer token of the services (their default `admin_token`).
pub const ADMIN_TOKEN: &str = "finpay-admin";
/// Longest wait for the outbox to drain and every payment to reach a terminal state.
pub const DRAIN_MAX: Duration = Duration::from_secs(120);
/// Longest wait for a killed or frozen replica to be back, before it counts as not healed.
pub const HEAL_WATCH_MAX: Duration = Duration::from_secs(30);
/// Most violations listed per check; the rest are counted.
const LISTED_MAX: usize = 20;

/// How a whole `chaos run` is driven.
#[derive(Debug, Clone)]
pub struct RunConfig {
    pub duration: Duration,
    pub seed: u64,
    /// Payments started per second (open loop).
    pub rate_per_s: f64,
    pub concurrency: usize,
    /// Unmeasured load before the measured run, so connection pools, SQLite caches and the
    /// resilience layers' windows are warm: the hypothesis is about the steady state.
    pub warmup: Duration,
}

/// p50, p99 and max in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct LatencySummary {
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

/// The requests the bounds were measured over, and what they showed.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Measured {
    pub requests: u64,
    pub success_rate: f64,
    pub p99_ms: f64,
    /// Requests overlapping a fault window (widened by the grace), when the scope excludes them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window: Option<WindowMeasured>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct WindowMeasured {
    pub requests: u64,
    pub succeeded: u64,
    pub failures: BTreeMap<String, u64>,
    pub p99_ms: f64,
}

/// A killed or frozen replica and how long until its replacement was ready.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Heal {
    pub replica: String,
    pub signal: String,
    pub at_ms: u64,
    /// None: not back within [`HEAL_WATCH_MAX`].
    pub healed_ms: Option<u64>,
}

/// One sample of the cluster per second.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sample {
    pub at_ms: u64,
    /// Ready replicas per service.
    pub ready: BTreeMap<String, u32>,
    pub restarts: u32,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct ProxyStats {
    pub connections: u64,
    pub toxic_hits: u64,
}

/// Counts from the final audit.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct AuditSummary {
    pub payments: u64,
    pub payments_by_status: BTreeMap<String, u64>,
    pub payments_resumable: u64,
    pub transfers: u64,
    pub outbox_pending: u64,
    pub outbox_delivered: u64,
    pub notifications: u64,
    pub delivered_in_inbox: u64,
}

/// The result of one scenario: the `--json` entry, plus the series the report plots.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioResult {
    pub name: String,
    pub passed: bool,
    /// Over every request of the run.
    pub success_rate: f64,
    pub latency_ms: LatencySummary,
    /// `finpay check`: money conserved, no negative balance, no double debit, no debit without a
    /// SAFE verdict, every succeeded payment with one outbox row.
    pub invariants_ok: bool,
    /// Every succeeded payment has exactly one delivered notification; nothing pending.
    pub notifications_ok: bool,
    /// Supervisor restarts over the run.
    pub restarts: u32,
    pub violations: Vec<String>,
    pub bounds: Bounds,
    pub measured: Measured,
    pub requests: u64,
    pub succeeded: u64,
    pub declined: u64,
    pub failed: u64,
    pub errors: BTreeMap<String, u64>,
    pub fault: &'static str,
    pub fault_windows: Vec<Window>,
    pub heals: Vec<Heal>,
    /// From the end of the load until the outbox was empty and no payment was resumable.
    pub drain_ms: Option<u64>,
    /// Payments the load saw, looked up afterwards (`GET /v1/payments/{id}`).
    pub payments_checked: u64,
    /// Evidence the faults happened: the services' `finpay_faults_injected_total` by kind,
    /// summed over the dependency replicas' current processes (a restarted one starts at 0).
    pub faults_injected: BTreeMap<String, u64>,
    /// Payment's resilience counters (`finpay_client_*_total`, "name{dependency}"), so what
    /// callers asked (requests) and what was sent (attempts, retries, hedges) can be told apart.
    pub client: BTreeMap<String, u64>,
    /// Outbox rows pending just before the faults were lifted (the notification backlog).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outbox_pending_at_restore: Option<u64>,
    /// Connections through the fault proxies and how many times a toxic bit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy: Option<ProxyStats>,
    pub audit: AuditSummary,
    pub seed: u64,
    pub load_s: f64,
    pub rate_per_s: f64,
    /// Kept for a person to read when the scenario failed (logs, stores).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    #[serde(skip)]
    pub schedule: Option<Schedule>,
    #[serde(skip)]
    pub timeline: Vec<load::Second>,
    #[serde(skip)]
    pub samples: Vec<Sample>,
    /// Every request's outcome, written next to the logs when the scenario fails.
    #[serde(skip)]
    pub outcomes: Vec<Outcome>,
}

impl ScenarioResult {
    /// A result for a run that could not even be carried out.
    pub fn harness_failure(scenario: Scenario, cfg: &RunConfig, why: String) -> Self {
        ScenarioResult {
            name: scenario.name().into(),
            passed: false,
            success_rate: 0.0,
            latency_ms: LatencySummary::default(),
            invariants_ok: false,
            notifications_ok: false,
            restarts: 0,
            violations: vec![format!("harness: {why}")],
            bounds: *scenario.bounds(),
            measured: Measured::default(),
            requests: 0,
            succeeded: 0,
            declined: 0,
            failed: 0,
            errors: BTreeMap::new(),
            fault: scenario.fault(),
            fault_windows: Vec::new(),
            heals: Vec::new(),
            drain_ms: None,
            payments_checked: 0,
            faults_injected: BTreeMap::new(),
            client: BTreeMap::new(),
            outbox_pending_at_restore: None,
            proxy: None,
            audit: AuditSummary::default(),
            seed: cfg.seed,
            load_s: 0.0,
            rate_per_s: cfg.rate_per_s,
            data_dir: None,
            schedule: None,
            timeline: Vec::new(),
            samples: Vec::new(),
            outcomes: Vec::new(),
        }
    }
}

/// What the live view shows, updated by the run.
#[derive(Debug, Clone, Default)]
pub struct Live {
    pub elapsed: Duration,
    pub load: Duration,
    pub progress: Option<Progress>,
    pub active_faults: Vec<String>,
    pub ready: u32,
    pub replicas: u32,
    pub phase: &'static str,
}

/// Runs one scenario. `live` is called a few times a second.
pub async fn run_scenario(
    scenario: Scenario,
    cfg: &RunConfig,
    live: &(dyn Fn(&Live) + Sync),
) -> anyhow::Result<ScenarioResult> {
    let schedule = schedule::schedule(scenario, cfg.duration, cfg.seed);
    let tmp = tempfile::Builder::new()
        .prefix(&format!("finpay-chaos-{}-", scenario.name()))
        .tempdir()
        .context("create a temporary data dir")?;
    let up = UpConfig {
        data_dir: tmp.path().join("data"),
        spec: topology::cluster_spec(cfg.seed),
        overrides: Vec::new(),
    };
    live(&Live {
        load: schedule.load,
        phase: "starting cluster",
        ..Live::default()
    });
    let mut cluster = Cluster::launch(&up).await?;
    let outcome = drive(&mut cluster, &schedule, cfg, live).await;
    // Stop the cluster whatever happened; the final audit reads the stopped stores.
    live(&Live {
        load: schedule.load,
        elapsed: schedule.load,
        phase: "stopping cluster",
        ..Live::default()
    });
    let data_dir = cluster.data_dir().to_owned();
    let final_state = cluster.stop().await;
    let mut result = outcome?;
    result.restarts = final_state.replicas.iter().map(|r| r.restarts).sum();
    let report = finpay_ledger::audit::audit(&data_dir)
        .await
        .context("final audit")?;
    check_stores(&report, &mut result);
    result.passed = result.violations.is_empty();
    if !result.passed {
        // Keep the logs, stores and every request's outcome of a failed run for a person.
        let kept = tmp.keep();
        let mut lines = String::new();
        for o in &result.outcomes {
            lines.push_str(&serde_json::to_string(o).unwrap_or_default());
            lines.push('\n');
        }
        let _ = std::fs::write(kept.join("outcomes.jsonl"), lines);
        result.data_dir = Some(kept);
    }
    Ok(result)
}

/// Everything between launch and stop.
async fn drive(
    cluster: &mut Cluster,
    schedule: &Schedule,
    cfg: &RunConfig,
    live: &(dyn Fn(&Live) + Sync),
) -> anyhow::Result<ScenarioResult> {
    let scenario = schedule.scenario;
    let mut proxies: BTreeMap<String, FaultProxy> = BTreeMap::new();
    if schedule.proxies {
        for svc in ServiceKind::DEPENDENCIES {
            let mut urls = Vec::new();
            let plans: Vec<_> = cluster
                .plans()
                .iter()
                .filter(|p| p.service == svc)
                .cloned()
                .collect();
            for p in plans {
                let proxy = FaultProxy::start(p.port).await?;
                urls.push(proxy.url());
                proxies.insert(p.name.clone(), proxy);
            }
            cluster.route_payment_dependency(svc, &urls)?;
        }
    }
    cluster.wait_ready(crate::up::READY_TIMEOUT).await?;
    let state = cluster.state();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .connect_timeout(Duration::from_secs(1))
        .build()
        .context("build admin client")?;

    let load_cfg = LoadConfig {
        url: state.payment_url.clone(),
        requests: None,
        duration: Some(schedule.load),
        concurrency: cfg.concurrency,
        accounts: 1000,
        seed: cfg.seed,
        request_timeout: Duration::from_secs(10),
        record_outcomes: true,
        rate_per_s: Some(cfg.rate_per_s),
        ..LoadConfig::default()
    };
    if !cfg.warmup.is_zero() {
        live(&Live {
            load: schedule.load,
            phase: "warming up",
            ..Live::default()
        });
        load::run(LoadConfig {
            duration: Some(cfg.warmup),
            record_outcomes: false,
            seed: cfg.seed ^ 0x5741_524d,
            ..load_cfg.clone()
        })
        .await
        .context("warm-up load")?;
    }
    let progress: Arc<Mutex<Option<Progress>>> = Arc::new(Mutex::new(None));
    let t0 = Instant::now();
    let load_task = {
        let progress = progress.clone();
        tokio::spawn(load::run_observed(load_cfg, move |p| {
            *progress.lock().unwrap_or_else(PoisonError::into_inner) = Some(*p);
        }))
    };
    let shared = cluster.shared();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let active: Arc<Mutex<Vec<String>>> = Arc::new(Mutex::new(Vec::new()));
    let injector = inject(
        schedule,
        &shared,
        &http,
        &proxies,
        t0,
        &active,
        cluster.data_dir(),
    );
    let sampler = sample(&shared, schedule.load, t0, &done, &progress, &active, live);
    let loaded = async {
        let r = load_task.await;
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        r
    };
    let (loaded, injected, samples) = tokio::join!(loaded, injector, sampler);
    let report: LoadReport = loaded.context("load task")??;

    // Health back, whatever the schedule did last.
    let mut violations = injected.errors;
    if let Err(e) = restore(&shared, &http, &proxies, &injected.frozen).await {
        violations.push(format!("restore: {e:#}"));
    }

    live(&Live {
        load: schedule.load,
        elapsed: schedule.load,
        progress: *progress.lock().unwrap_or_else(PoisonError::into_inner),
        phase: "draining outbox",
        ..Live::default()
    });
    let drain_start = Instant::now();
    let drained = drain(cluster.data_dir()).await;
    let drain_ms = match drained {
        Ok(true) => Some(ms(drain_start.elapsed())),
        Ok(false) => {
            violations.push(format!(
                "outbox or payments not drained within {} s",
                DRAIN_MAX.as_secs()
            ));
            None
        }
        Err(e) => {
            violations.push(format!("drain audit failed: {e:#}"));
            None
        }
    };
    let checked = converged(&http, &state.payment_url, &report.outcomes, &mut violations).await;
    let faults_injected = scrape_faults(&shared, &http).await;
    let client = scrape_client(&state.payment_url, &http).await;

    // The fault windows as they happened: kill and freeze windows end when the replica is back.
    let mut windows = schedule.windows.clone();
    let mut unused: Vec<&Heal> = injected.heals.iter().collect();
    for w in windows.iter_mut() {
        let Some(replica) = w.signalled_replica() else {
            continue;
        };
        // The heal of this window: same replica, signalled nearest the planned moment.
        let nearest = unused
            .iter()
            .enumerate()
            .filter(|(_, h)| h.replica == replica)
            .min_by_key(|(_, h)| h.at_ms.abs_diff(w.start_ms))
            .map(|(i, _)| i);
        if let Some(i) = nearest {
            let h = unused.remove(i);
            w.start_ms = h.at_ms;
            w.end_ms = h.healed_ms.map_or(ms(schedule.load), |x| h.at_ms + x);
        }
    }
    let bounds = *scenario.bounds();
    let measured = measure(&report, &windows, &bounds);
    steady_state(&bounds, &measured, &injected.heals, &mut violations);
    if matches!(bounds.scope, Scope::OutsideWindows { .. }) && measured.requests == 0 {
        violations.push("no request outside the fault window: nothing measured".into());
    }

    Ok(ScenarioResult {
        name: scenario.name().into(),
        passed: false,
        success_rate: report.success_rate,
        latency_ms: LatencySummary {
            p50: report.latency_ms.p50,
            p99: report.latency_ms.p99,
            max: report.latency_ms.max,
        },
        invariants_ok: false,
        notifications_ok: false,
        restarts: 0,
        violations,
        bounds,
        measured,
        requests: report.requests,
        succeeded: report.succeeded - report.declined,
        declined: report.declined,
        failed: report.failed,
        errors: report.errors.clone(),
        fault: scenario.fault(),
        fault_windows: windows,
        heals: injected.heals,
        drain_ms,
        payments_checked: checked,
        faults_injected,
        client,
        outbox_pending_at_restore: injected.pending_at_restore,
        proxy: schedule.proxies.then(|| {
            let (connections, toxic_hits) = proxies
                .values()
                .map(FaultProxy::stats)
                .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
            ProxyStats {
                connections,
                toxic_hits,
            }
        }),
        audit: AuditSummary::default(),
        seed: cfg.seed,
        load_s: schedule.load.as_secs_f64(),
        rate_per_s: cfg.rate_per_s,
        data_dir: None,
        schedule: Some(schedule.clone()),
        timeline: report.timeline,
        samples,
        outcomes: report.outcomes,
    })
}

/// What the injector did.
struct Injected {
    heals: Vec<Heal>,
    errors: Vec<String>,
    /// Processes stopped with SIGSTOP (replica name, pid).
    frozen: Vec<(String, u32)>,
    pending_at_restore: Option<u64>,
}

/// Runs the schedule's steps at their times. Heals of killed or frozen replicas are watched
/// concurrently, each bounded by [`HEAL_WATCH_MAX`].
async fn inject(
    schedule: &Schedule,
    shared: &Arc<Shared>,
    http: &reqwest::Client,
    proxies: &BTreeMap<String, FaultProxy>,
    t0: Instant,
    active: &Mutex<Vec<String>>,
    data_dir: &std::path::Path,
) -> Injected {
    let mut pending_at_restore = None;
    let mut errors = Vec::new();
    let mut frozen = Vec::new();
    let mut watchers = tokio::task::JoinSet::new();
    let mut order = 0usize;
    for step in &schedule.steps {
        tokio::time::sleep_until(t0 + step.at).await;
        let at_ms = ms(t0.elapsed());
        let set_active = |f: &mut Vec<String>| {
            *active.lock().unwrap_or_else(PoisonError::into_inner) = std::mem::take(f);
        };
        match &step.action {
            Action::SetFaults { target, faults } => {
                if let Err(e) = set_faults(shared, http, target, faults).await {
                    errors.push(format!("inject at {at_ms} ms: {e:#}"));
                }
                let label = match target {
                    Target::Service(s) => format!("faults on {s}"),
                    Target::Replica(s) => format!("faults on {s}"),
                };
                set_active(&mut vec![label]);
            }
            Action::Kill { replica } | Action::Freeze { replica } => {
                let freeze = matches!(step.action, Action::Freeze { .. });
                let signal = if freeze {
                    Signal::SIGSTOP
                } else {
                    Signal::SIGKILL
                };
                let pid = shared.snapshot().replica(replica).and_then(|r| r.pid);
                match pid.and_then(|p| i32::try_from(p).ok()) {
                    None => errors.push(format!(
                        "inject at {at_ms} ms: {replica} has no process to signal"
                    )),
                    Some(raw) => {
                        if let Err(e) = kill(Pid::from_raw(raw), signal) {
                            errors.push(format!("inject at {at_ms} ms: {signal} {replica}: {e}"));
                        } else {
                            if freeze {
                                frozen.push((replica.clone(), raw.unsigned_abs()));
                            }
                            set_active(&mut vec![format!("{signal} {replica}")]);
                            let (shared, replica, old) =
                                (shared.clone(), replica.clone(), raw.unsigned_abs());
                            let i = order;
                            order += 1;
                            watchers.spawn(async move {
                                let healed = watch_heal(&shared, &replica, old).await;
                                (
                                    i,
                                    Heal {
                                        replica,
                                        signal: signal.to_string(),
                                        at_ms,
                                        healed_ms: healed.map(ms),
                                    },
                                )
                            });
                        }
                    }
                }
            }
            Action::SetToxic { replica, toxic } => match proxies.get(replica) {
                Some(p) => {
                    p.set(*toxic);
                    let on: Vec<String> = proxies
                        .iter()
                        .filter(|(_, p)| p.toxic() != Toxic::None)
                        .map(|(n, p)| format!("{:?} {n}", p.toxic()))
                        .collect();
                    set_active(&mut on.clone());
                }
                None => errors.push(format!("inject: no proxy in front of {replica}")),
            },
            Action::Restore => {
                if pending_at_restore.is_none() {
                    pending_at_restore = finpay_ledger::audit::audit(data_dir)
                        .await
                        .ok()
                        .map(|r| r.outbox_pending);
                }
                if let Err(e) = restore(shared, http, proxies, &frozen).await {
                    errors.push(format!("restore at {at_ms} ms: {e:#}"));
                }
                set_active(&mut Vec::new());
            }
        }
    }
    let mut heals: Vec<(usize, Heal)> = Vec::new();
    while let Some(joined) = watchers.join_next().await {
        match joined {
            Ok(h) => heals.push(h),
            Err(e) => errors.push(format!("heal watcher failed: {e}")),
        }
    }
    heals.sort_by_key(|(i, _)| *i);
    // The last fault clears itself from the live view when its replica is back.
    active
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .retain(|f| !f.starts_with("SIG"));
    Injected {
        heals: heals.into_iter().map(|(_, h)| h).collect(),
        errors,
        frozen,
        pending_at_restore,
    }
}

/// Payment's `finpay_client_*_total` counters, keyed `name{dependency}`.
async fn scrape_client(payment_url: &str, http: &reqwest::Client) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    let Ok(resp) = http.get(format!("{payment_url}/metrics")).send().await else {
        return out;
    };
    let Ok(text) = resp.text().await else {
        return out;
    };
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("finpay_client_") else {
            continue;
        };
        let Some((name_labels, value)) = rest.rsplit_once(' ') else {
            continue;
        };
        let Some((name, labels)) = name_labels.split_once('{') else {
            continue;
        };
        if !name.ends_with("_total") {
            continue;
        }
        let dep = labels
            .trim_end_matches('}')
            .split(',')
            .find_map(|l| l.trim().strip_prefix("dependency="))
            .map(|d| d.trim_matches('"').to_owned())
            .unwrap_or_default();
        if let Ok(n) = value.trim().parse::<f64>() {
            *out.entry(format!("{name}{{{dep}}}")).or_insert(0) += n as u64;
        }
    }
    out
}

/// Sums `finpay_faults_injected_total` by `kind` over every dependency replica's `/metrics`.
async fn scrape_faults(shared: &Shared, http: &reqwest::Client) -> BTreeMap<String, u64> {
    let mut by_kind = BTreeMap::new();
    for r in shared.snapshot().replicas {
        if r.service == ServiceKind::Payment {
            continue;
        }
        let Ok(resp) = http.get(format!("{}/metrics", r.url)).send().await else {
            continue;
        };
        let Ok(text) = resp.text().await else {
            continue;
        };
        for line in text.lines() {
            let Some(rest) = line.strip_prefix("finpay_faults_injected_total{") else {
                continue;
            };
            let Some((labels, value)) = rest.split_once('}') else {
                continue;
            };
            let kind = labels
                .split(',')
                .find_map(|l| l.trim().strip_prefix("kind="))
                .map(|k| k.trim_matches('"').to_owned());
            let n = value.trim().parse::<f64>().ok();
            if let (Some(kind), Some(n)) = (kind, n) {
                *by_kind.entry(kind).or_insert(0) += n as u64;
            }
        }
    }
    by_kind
}

/// Waits until `replica` runs a process other than `old` and is ready; the time it took.
async fn watch_heal(shared: &Shared, replica: &str, old: u32) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < HEAL_WATCH_MAX {
        let s = shared.snapshot();
        if let Some(r) = s.replica(replica) {
            if r.ready && r.pid.is_some_and(|p| p != old) {
                return Some(start.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

/// Replaces the faults of every targeted replica through `PUT /admin/faults`, with a few tries
/// each (a replica may be restarting).
async fn set_faults(
    shared: &Shared,
    http: &reqwest::Client,
    target: &Target,
    faults: &FaultSettings,
) -> anyhow::Result<()> {
    let state = shared.snapshot();
    let urls: Vec<(String, String)> = state
        .replicas
        .iter()
        .filter(|r| match target {
            Target::Service(s) => r.service == *s,
            Target::Replica(n) => &r.name == n,
        })
        .map(|r| (r.name.clone(), r.url.clone()))
        .collect();
    anyhow::ensure!(!urls.is_empty(), "no replica matches {target:?}");
    for (name, url) in urls {
        // Each replica draws from its own seed: replicas with one seed would fail in lockstep,
        // and a retry that moves to the other replica would meet the same draw again.
        let faults = FaultSettings {
            seed: crate::plan::derive_seed(faults.seed, &name, 0),
            ..faults.clone()
        };
        let mut last = String::new();
        let mut done = false;
        for _ in 0..5 {
            match http
                .put(format!("{url}/admin/faults"))
                .bearer_auth(ADMIN_TOKEN)
                .json(&faults)
                .send()
                .await
            {
                Ok(r) if r.status().is_success() => {
                    done = true;
                    break;
                }
                Ok(r) => last = format!("HTTP {}", r.status()),
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        anyhow::ensure!(done, "PUT {url}/admin/faults ({name}): {last}");
    }
    Ok(())
}

/// Every fault off: admin faults back to none on every dependency, toxics off, and any frozen
/// process that is still the replica's current one continued.
async fn restore(
    shared: &Shared,
    http: &reqwest::Client,
    proxies: &BTreeMap<String, FaultProxy>,
    frozen: &[(String, u32)],
) -> anyhow::Result<()> {
    for p in proxies.values() {
        p.set(Toxic::None);
    }
    let state = shared.snapshot();
    for (name, pid) in frozen {
        if state.replica(name).and_then(|r| r.pid) == Some(*pid) {
            if let Ok(raw) = i32::try_from(*pid) {
                let _ = kill(Pid::from_raw(raw), Signal::SIGCONT);
            }
        }
    }
    let none = FaultSettings::default();
    for svc in ServiceKind::DEPENDENCIES {
        set_faults(shared, http, &Target::Service(svc), &none).await?;
    }
    Ok(())
}

/// Samples the cluster every 100 ms and keeps, per second, the fewest ready replicas of each
/// service seen in it (so a kill healed in 200 ms still shows); feeds the live view four times a
/// second. Ends when the load is done (bounded by the load's length plus a minute).
async fn sample(
    shared: &Shared,
    load_len: Duration,
    t0: Instant,
    done: &std::sync::atomic::AtomicBool,
    progress: &Mutex<Option<Progress>>,
    active: &Mutex<Vec<String>>,
    live: &(dyn Fn(&Live) + Sync),
) -> Vec<Sample> {
    let mut samples = Vec::new();
    let mut tick = tokio::time::interval_at(t0, Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let bound = load_len + Duration::from_secs(60);
    let mut second = 0u64;
    let mut fewest: BTreeMap<String, u32> = BTreeMap::new();
    let mut n = 0u64;
    while !done.load(std::sync::atomic::Ordering::Relaxed) && t0.elapsed() < bound {
        tick.tick().await;
        let s = shared.snapshot();
        let now = t0.elapsed();
        if now.as_secs() > second && !fewest.is_empty() {
            samples.push(Sample {
                at_ms: second * 1000,
                ready: std::mem::take(&mut fewest),
                restarts: s.replicas.iter().map(|r| r.restarts).sum(),
            });
            second = now.as_secs();
        }
        let mut ready: BTreeMap<String, u32> = BTreeMap::new();
        for r in &s.replicas {
            *ready.entry(r.service.to_string()).or_insert(0) += u32::from(r.ready);
        }
        for (svc, k) in ready {
            let e = fewest.entry(svc).or_insert(k);
            *e = (*e).min(k);
        }
        n += 1;
        if n.is_multiple_of(3) {
            live(&Live {
                elapsed: now.min(load_len),
                load: load_len,
                progress: *progress.lock().unwrap_or_else(PoisonError::into_inner),
                active_faults: active
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clone(),
                ready: s.replicas.iter().map(|r| u32::from(r.ready)).sum(),
                replicas: u32::try_from(s.replicas.len()).unwrap_or(u32::MAX),
                phase: "load",
            });
        }
    }
    samples
}

/// Polls the audit until nothing is pending in the outbox and no payment is resumable.
/// Ok(false) when [`DRAIN_MAX`] passed first.
async fn drain(data_dir: &std::path::Path) -> anyhow::Result<bool> {
    let start = Instant::now();
    loop {
        let r = finpay_ledger::audit::audit(data_dir)
            .await
            .context("audit while draining")?;
        if r.outbox_pending == 0 && r.payments_resumable == 0 {
            return Ok(true);
        }
        if start.elapsed() >= DRAIN_MAX {
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Looks up every payment the load saw: each must be terminal, and one the load was told
/// succeeded (or declined) must say so. Returns how many were checked.
async fn converged(
    http: &reqwest::Client,
    payment_url: &str,
    outcomes: &[Outcome],
    violations: &mut Vec<String>,
) -> u64 {
    let seen: Vec<&Outcome> = outcomes.iter().filter(|o| o.payment_id.is_some()).collect();
    let answers: Vec<(String, Option<String>, Result<String, String>)> =
        futures::stream::iter(seen.iter().map(|o| {
            let id = o.payment_id.clone().unwrap_or_default();
            let said = o
                .http_status
                .filter(|c| (200..300).contains(c))
                .and(o.payment_status.clone());
            let url = format!("{}/v1/payments/{id}", payment_url.trim_end_matches('/'));
            async move {
                let mut last = Err("not asked".to_owned());
                for _ in 0..3 {
                    last = match http.get(&url).send().await {
                        Ok(r) if r.status().is_success() => {
                            match r.json::<serde_json::Value>().await {
                                Ok(v) => v
                                    .get("status")
                                    .and_then(|s| s.as_str())
                                    .map(str::to_owned)
                                    .ok_or_else(|| "no status field".to_owned()),
                                Err(e) => Err(e.to_string()),
                            }
                        }
                        Ok(r) => Err(format!("HTTP {}", r.status())),
                        Err(e) => Err(e.to_string()),
                    };
                    if last.is_ok() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                (id, said, last)
            }
        }))
        .buffer_unordered(16)
        .collect()
        .await;
    let mut bad = Vec::new();
    for (id, said, now) in &answers {
        match now {
            Err(e) => bad.push(format!("payment {id}: lookup failed: {e}")),
            Ok(s) if !matches!(s.as_str(), "succeeded" | "declined" | "failed") => {
                bad.push(format!("payment {id} is still {s} after the drain"))
            }
            Ok(s) => {
                if let Some(said) = said {
                    if said != s {
                        bad.push(format!(
                            "payment {id}: the client was told {said}, the store says {s}"
                        ));
                    }
                }
            }
        }
    }
    let n = bad.len();
    violations.extend(bad.into_iter().take(LISTED_MAX));
    if n > LISTED_MAX {
        violations.push(format!("{} more payments not converged", n - LISTED_MAX));
    }
    u64::try_from(answers.len()).unwrap_or(u64::MAX)
}

/// Whether a request `[start, start + latency]` overlaps a window widened by `grace_ms`.
fn overlaps(o: &Outcome, windows: &[Window], grace_ms: u64) -> bool {
    let start = o.started_us / 1000;
    let end = (o.started_us.saturating_add(o.latency_us)) / 1000;
    windows
        .iter()
        .any(|w| start < w.end_ms.saturating_add(grace_ms) && end >= w.start_ms)
}

fn p99_ms(mut latencies_us: Vec<u64>) -> f64 {
    if latencies_us.is_empty() {
        return 0.0;
    }
    latencies_us.sort_unstable();
    let idx = ((latencies_us.len() as f64) * 0.99).ceil() as usize;
    let idx = idx.clamp(1, latencies_us.len()) - 1;
    latencies_us[idx] as f64 / 1000.0
}

fn is_success(o: &Outcome) -> (bool, String) {
    match load::classify(o.http_status, o.payment_status.as_deref()) {
        Class::Succeeded | Class::Declined => (true, String::new()),
        Class::Failed(k) => (false, k),
    }
}

/// The success rate and p99 over the scenario's scope, and the window's own figures.
pub fn measure(report: &LoadReport, windows: &[Window], bounds: &Bounds) -> Measured {
    match bounds.scope {
        Scope::AllRequests => Measured {
            requests: report.requests,
            success_rate: report.success_rate,
            p99_ms: report.latency_ms.p99,
            window: None,
        },
        Scope::OutsideWindows { grace_ms } => {
            let (mut out_n, mut out_ok, mut out_lat) = (0u64, 0u64, Vec::new());
            let mut w = WindowMeasured::default();
            let mut w_lat = Vec::new();
            for o in &report.outcomes {
                let (ok, kind) = is_success(o);
                if overlaps(o, windows, grace_ms) {
                    w.requests += 1;
                    w_lat.push(o.latency_us);
                    if ok {
                        w.succeeded += 1;
                    } else {
                        *w.failures.entry(kind).or_insert(0) += 1;
                    }
                } else {
                    out_n += 1;
                    out_ok += u64::from(ok);
                    out_lat.push(o.latency_us);
                }
            }
            w.p99_ms = p99_ms(w_lat);
            Measured {
                requests: out_n,
                success_rate: if out_n == 0 {
                    0.0
                } else {
                    out_ok as f64 / out_n as f64
                },
                p99_ms: p99_ms(out_lat),
                window: Some(w),
            }
        }
    }
}

/// Compares the measurements with the stated bounds.
pub fn steady_state(bounds: &Bounds, m: &Measured, heals: &[Heal], violations: &mut Vec<String>) {
    let over = match bounds.scope {
        Scope::AllRequests => "every request".to_owned(),
        Scope::OutsideWindows { grace_ms } => {
            format!("requests outside the fault window (+{grace_ms} ms)")
        }
    };
    if m.success_rate < bounds.success_rate_min {
        violations.push(format!(
            "success rate {:.5} over {} {over} is below the bound {}",
            m.success_rate, m.requests, bounds.success_rate_min
        ));
    }
    if m.p99_ms > bounds.p99_ms_max {
        violations.push(format!(
            "p99 {:.1} ms over {over} is above the bound {} ms",
            m.p99_ms, bounds.p99_ms_max
        ));
    }
    if let (Some(wb), Some(wm)) = (bounds.window, &m.window) {
        for (kind, n) in &wm.failures {
            if !wb.allowed_failures.contains(&kind.as_str()) {
                violations.push(format!(
                    "{n} requests in the fault window failed with {kind}; only {} are allowed there",
                    wb.allowed_failures.join("/")
                ));
            }
        }
        if let Some(max) = wb.p99_ms_max {
            if wm.p99_ms > max {
                violations.push(format!(
                    "p99 {:.1} ms in the fault window is above the fail-fast bound {max} ms",
                    wm.p99_ms
                ));
            }
        }
    }
    if let Some(max) = bounds.heal_ms_max {
        for h in heals {
            match h.healed_ms {
                None => violations.push(format!(
                    "{} ({} at {} ms) was not replaced within {} s",
                    h.replica,
                    h.signal,
                    h.at_ms,
                    HEAL_WATCH_MAX.as_secs()
                )),
                Some(t) if t > max => violations.push(format!(
                    "{} ({} at {} ms) took {t} ms to be replaced and ready; the bound is {max} ms",
                    h.replica, h.signal, h.at_ms
                )),
                Some(_) => {}
            }
        }
    }
}

/// The money and notification checks on the final (stopped) stores.
fn check_stores(r: &finpay_ledger::audit::AuditReport, result: &mut ScenarioResult) {
    let succeeded = r.payments_by_status.get("succeeded").copied().unwrap_or(0);
    result.invariants_ok = r.ok;
    for v in r.violations.iter().take(LISTED_MAX) {
        result.violations.push(format!("money: {v}"));
    }
    if r.payments_resumable > 0 {
        result.violations.push(format!(
            "{} payments left in a non-terminal state",
            r.payments_resumable
        ));
    }
    let d = &r.delivery;
    let mut notif = Vec::new();
    for v in d.violations.iter().take(LISTED_MAX) {
        notif.push(format!("notifications: {v}"));
    }
    if d.outbox_pending > 0 {
        notif.push(format!(
            "notifications: {} still pending in the outbox",
            d.outbox_pending
        ));
    }
    // Exactly one delivered notification per succeeded payment: one outbox row each (part of
    // `ok`), every row delivered and in the inbox, and nothing else in the inbox.
    if d.outbox_delivered != succeeded || d.delivered_in_inbox != succeeded {
        notif.push(format!(
            "notifications: {succeeded} succeeded payments but {} delivered outbox rows, {} of them in the inbox",
            d.outbox_delivered, d.delivered_in_inbox
        ));
    }
    if d.notifications != succeeded {
        notif.push(format!(
            "notifications: the inbox holds {} notifications for {succeeded} succeeded payments",
            d.notifications
        ));
    }
    result.notifications_ok = d.ok && notif.is_empty();
    result.violations.extend(notif);
    result.audit = AuditSummary {
        payments: r.payments,
        payments_by_status: r.payments_by_status.clone(),
        payments_resumable: r.payments_resumable,
        transfers: r.transfers,
        outbox_pending: r.outbox_pending,
        outbox_delivered: r.outbox_delivered,
        notifications: r.notifications,
        delivered_in_inbox: d.delivered_in_inbox,
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scenario(name: &str) -> Scenario {
        name.parse().expect("a listed scenario")
    }

    fn outcome(start_ms: u64, latency_ms: u64, status: Option<u16>, st: Option<&str>) -> Outcome {
        Outcome {
            n: 0,
            idempotency_key: "k".into(),
            account_id: "a".into(),
            amount_minor: 1,
            http_status: status,
            payment_id: None,
            payment_status: st.map(str::to_owned),
            started_us: start_ms * 1000,
            latency_us: latency_ms * 1000,
        }
    }

    fn report(outcomes: Vec<Outcome>) -> LoadReport {
        LoadReport {
            requests: outcomes.len() as u64,
            succeeded: 0,
            failed: 0,
            declined: 0,
            success_rate: 0.5,
            throughput_rps: 0.0,
            elapsed_s: 0.0,
            latency_ms: load::Latency::default(),
            errors: BTreeMap::new(),
            succeeded_amount_minor: 0,
            timeline: Vec::new(),
            outcomes,
        }
    }

    #[test]
    fn window_scoped_bounds_split_requests_by_overlap_with_the_widened_window() {
        let b = *scenario("fraud-outage").bounds();
        let w = vec![Window {
            label: "outage".into(),
            start_ms: 1_000,
            end_ms: 2_000,
        }];
        let r = report(vec![
            outcome(0, 10, Some(201), Some("succeeded")),
            // In flight when the window opened.
            outcome(990, 20, Some(503), None),
            outcome(1_500, 5, Some(503), None),
            // Inside the grace after the window.
            outcome(6_900, 5, Some(503), None),
            outcome(7_100, 5, Some(201), Some("declined")),
        ]);
        let m = measure(&r, &w, &b);
        assert_eq!(m.requests, 2);
        assert_eq!(m.success_rate, 1.0);
        let wm = m.window.clone().expect("window measured");
        assert_eq!(wm.requests, 3);
        assert_eq!(wm.failures.get("503"), Some(&3));
        let mut v = Vec::new();
        steady_state(&b, &m, &[], &mut v);
        assert!(v.is_empty(), "{v:?}");

        let r = report(vec![
            outcome(0, 10, Some(500), None),
            outcome(1_500, 5, Some(500), None),
        ]);
        let mut v = Vec::new();
        steady_state(&b, &measure(&r, &w, &b), &[], &mut v);
        assert_eq!(v.len(), 2, "{v:?}");
    }

    #[test]
    fn a_slow_or_missing_heal_is_a_violation() {
        let b = *scenario("replica-freeze").bounds();
        let m = Measured {
            requests: 1,
            success_rate: 1.0,
            p99_ms: 1.0,
            window: None,
        };
        let heal = |healed_ms| Heal {
            replica: "fraud-0".into(),
            signal: "SIGSTOP".into(),
            at_ms: 100,
            healed_ms,
        };
        let mut v = Vec::new();
        steady_state(&b, &m, &[heal(Some(4_000))], &mut v);
        assert!(v.is_empty(), "{v:?}");
        steady_state(&b, &m, &[heal(Some(6_000)), heal(None)], &mut v);
        assert_eq!(v.len(), 2, "{v:?}");
    }

    #[test]
    fn p99_of_a_hundred_is_the_ninety_ninth() {
        let lat: Vec<u64> = (1..=100).map(|x| x * 1000).collect();
        assert_eq!(p99_ms(lat), 99.0);
        assert_eq!(p99_ms(Vec::new()), 0.0);
    }
}
