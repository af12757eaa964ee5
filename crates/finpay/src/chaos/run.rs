//! One scenario, end to end: a fresh cluster in a temporary data dir, open-loop load through the
//! load engine, the scheduled faults ([`super::inject`]), a per-second sample of the cluster
//! ([`super::scrape`]), then restore, drain and the checks: steady state ([`super::measure`]),
//! money, notifications and convergence ([`super::checks`]).
//!
//! Nothing here knows one scenario from another: what differs between them is data of the
//! [`Schedule`] (its steps, windows, load length, whether payment goes through fault proxies) and
//! of the scenario's stated [`super::scenario::Bounds`].

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::Context as _;
use tokio::time::Instant;

use super::checks::{check_stores, converged, drain, DRAIN_MAX};
use super::inject::{Injected, Injector};
use super::measure::{measure, steady_state, windows_as_happened};
use super::proxy::FaultProxy;
use super::result::{AuditSummary, LatencySummary, ProxyStats, Sample, ScenarioResult};
use super::scenario::Scenario;
use super::schedule::{self, ms, Schedule};
use super::{scrape, topology};
use crate::load::{self, LoadConfig, LoadReport, Progress};
use crate::storage::{Backend, Storage};
use crate::up::{Cluster, UpConfig};
use finpay_services::ServiceKind;

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
    /// The storage of each scenario's cluster.
    pub storage: Backend,
    /// The server of [`Backend::Postgres`].
    pub database_url: String,
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
    let topology = topology::replicas_for(cfg.storage, scenario.run_shape());
    let schedule = schedule::schedule(scenario, cfg.duration, cfg.seed, topology);
    let tmp = tempfile::Builder::new()
        .prefix(&format!("finpay-chaos-{}-", scenario.name()))
        .tempdir()
        .context("create a temporary data dir")?;
    let up = UpConfig {
        data_dir: tmp.path().join("data"),
        spec: topology::cluster_spec(cfg.seed, storage(cfg), topology),
        overrides: Vec::new(),
        prometheus: None,
        dashboard_port: 0,
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
    let final_state = cluster.stop().await;
    let mut result = outcome?;
    result.restarts = final_state.replicas.iter().map(|r| r.restarts).sum();
    let report = crate::check::audit_cluster(&final_state)
        .await
        .context("final audit")?;
    check_stores(&report, &mut result);
    result.passed = result.violations.is_empty();
    if result.passed {
        // A passed scenario's PostgreSQL schemas are dropped; a failed one's are kept with its
        // data dir, for a person.
        if let Err(e) = crate::storage::drop_schemas(&final_state.storage).await {
            tracing::warn!(
                error = format!("{e:#}"),
                "cannot drop the scenario's schemas"
            );
        }
    }
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

/// A scenario's storage: SQLite in its data dir, or PostgreSQL schemas of its own.
fn storage(cfg: &RunConfig) -> Storage {
    match cfg.storage {
        Backend::Sqlite => Storage::Sqlite,
        Backend::Postgres => Storage::Postgres {
            url: cfg.database_url.clone(),
            prefix: crate::storage::new_prefix(),
        },
    }
}

/// Everything between launch and stop.
async fn drive(
    cluster: &mut Cluster,
    schedule: &Schedule,
    cfg: &RunConfig,
    live: &(dyn Fn(&Live) + Sync),
) -> anyhow::Result<ScenarioResult> {
    let proxies = start_proxies(cluster, schedule).await?;
    cluster.wait_ready(crate::up::READY_TIMEOUT).await?;
    let state = cluster.state();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .connect_timeout(Duration::from_secs(1))
        .build()
        .context("build admin client")?;
    let shared = cluster.shared();
    let injector = Injector {
        shared: &shared,
        http: &http,
        proxies: &proxies,
    };
    let load_cfg = load_config(&state.payment_url, schedule, cfg);
    warm_up(&load_cfg, schedule, cfg, live).await?;
    let mut run = load_under_faults(load_cfg, schedule, &injector, cluster, live).await?;
    let after = settle(&injector, &cluster.state(), schedule.load, &mut run, live).await;
    Ok(assemble(schedule, cfg, &proxies, run, after))
}

/// When the schedule asks for them, a fault proxy in front of every dependency replica, and
/// payment routed through them. Call before payment starts.
async fn start_proxies(
    cluster: &mut Cluster,
    schedule: &Schedule,
) -> anyhow::Result<BTreeMap<String, FaultProxy>> {
    let mut proxies: BTreeMap<String, FaultProxy> = BTreeMap::new();
    if !schedule.proxies {
        return Ok(proxies);
    }
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
    Ok(proxies)
}

/// The measured load: open loop at the configured rate for the schedule's load length, every
/// outcome recorded.
fn load_config(payment_url: &str, schedule: &Schedule, cfg: &RunConfig) -> LoadConfig {
    LoadConfig {
        url: payment_url.to_owned(),
        requests: None,
        duration: Some(schedule.load),
        concurrency: cfg.concurrency,
        accounts: 1000,
        seed: cfg.seed,
        request_timeout: Duration::from_secs(10),
        record_outcomes: true,
        rate_per_s: Some(cfg.rate_per_s),
        client_retries: schedule.scenario.run_shape().client_retries,
        ..LoadConfig::default()
    }
}

/// The unmeasured warm-up load, with a seed of its own.
async fn warm_up(
    load_cfg: &LoadConfig,
    schedule: &Schedule,
    cfg: &RunConfig,
    live: &(dyn Fn(&Live) + Sync),
) -> anyhow::Result<()> {
    if cfg.warmup.is_zero() {
        return Ok(());
    }
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
    Ok(())
}

/// What the measured load saw, what the injector did and the cluster's samples meanwhile.
struct UnderFaults {
    report: LoadReport,
    injected: Injected,
    samples: Vec<Sample>,
    /// The load's last progress report, for the live view after it.
    progress: Option<Progress>,
}

/// The measured load, the schedule's steps and the sampler, all at once from one `t0`.
async fn load_under_faults(
    load_cfg: LoadConfig,
    schedule: &Schedule,
    injector: &Injector<'_>,
    cluster: &mut Cluster,
    live: &(dyn Fn(&Live) + Sync),
) -> anyhow::Result<UnderFaults> {
    let progress: Arc<Mutex<Option<Progress>>> = Arc::new(Mutex::new(None));
    let t0 = Instant::now();
    let load_task = {
        let progress = progress.clone();
        tokio::spawn(load::run_observed(load_cfg, move |p| {
            *progress.lock().unwrap_or_else(PoisonError::into_inner) = Some(*p);
        }))
    };
    let done = AtomicBool::new(false);
    let active: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let injecting = injector.run(schedule, t0, &active, cluster);
    let sampler = scrape::sample(
        injector.shared,
        schedule.load,
        t0,
        &done,
        &progress,
        &active,
        live,
    );
    let loaded = async {
        let r = load_task.await;
        done.store(true, Ordering::Relaxed);
        r
    };
    let (loaded, injected, samples) = tokio::join!(loaded, injecting, sampler);
    let report: LoadReport = loaded.context("load task")??;
    let progress = *progress.lock().unwrap_or_else(PoisonError::into_inner);
    Ok(UnderFaults {
        report,
        injected,
        samples,
        progress,
    })
}

/// What happened after the load.
struct Settled {
    violations: Vec<String>,
    drain_ms: Option<u64>,
    payments_checked: u64,
    faults_injected: BTreeMap<String, u64>,
    client: BTreeMap<String, u64>,
}

/// Health back whatever the schedule did last, the outbox drained, every payment the load saw
/// looked up, and the services' counters read. The injector's errors come first in the
/// violations.
async fn settle(
    injector: &Injector<'_>,
    state: &crate::cluster::ClusterState,
    load: Duration,
    run: &mut UnderFaults,
    live: &(dyn Fn(&Live) + Sync),
) -> Settled {
    let mut violations = std::mem::take(&mut run.injected.errors);
    if let Err(e) = injector.restore(&run.injected.frozen).await {
        violations.push(format!("restore: {e:#}"));
    }
    live(&Live {
        load,
        elapsed: load,
        progress: run.progress,
        phase: "draining outbox",
        ..Live::default()
    });
    let drain_start = Instant::now();
    let payment_url = state.payment_url.as_str();
    let drain_ms = match drain(state).await {
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
    let http = injector.http;
    let payments_checked =
        converged(http, payment_url, &run.report.outcomes, &mut violations).await;
    Settled {
        violations,
        drain_ms,
        payments_checked,
        faults_injected: scrape::scrape_faults(injector.shared, http).await,
        client: scrape::scrape_client(injector.shared, http).await,
    }
}

/// The scenario's result from the run and what came after it: the windows as they happened, the
/// steady-state check against the scenario's bounds, and the figures. The store checks come
/// later, on the stopped cluster ([`run_scenario`]).
fn assemble(
    schedule: &Schedule,
    cfg: &RunConfig,
    proxies: &BTreeMap<String, FaultProxy>,
    run: UnderFaults,
    after: Settled,
) -> ScenarioResult {
    let scenario = schedule.scenario;
    let UnderFaults {
        report,
        injected,
        samples,
        ..
    } = run;
    let mut violations = after.violations;
    let windows = windows_as_happened(&schedule.windows, &injected.heals, schedule.load);
    let bounds = *scenario.bounds();
    let measured = measure(&report, &windows, &bounds);
    steady_state(&bounds, &measured, &injected.heals, &mut violations);
    ScenarioResult {
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
        replaced: injected.replaced,
        db_connections_killed: injected.db_connections_killed,
        drain_ms: after.drain_ms,
        payments_checked: after.payments_checked,
        faults_injected: after.faults_injected,
        client: after.client,
        outbox_pending_at_restore: injected.pending_at_restore,
        proxy: schedule.proxies.then(|| proxy_stats(proxies)),
        audit: AuditSummary::default(),
        seed: cfg.seed,
        load_s: schedule.load.as_secs_f64(),
        rate_per_s: cfg.rate_per_s,
        data_dir: None,
        schedule: Some(schedule.clone()),
        timeline: report.timeline,
        samples,
        outcomes: report.outcomes,
    }
}

/// Connections and toxic hits summed over every fault proxy.
fn proxy_stats(proxies: &BTreeMap<String, FaultProxy>) -> ProxyStats {
    let (connections, toxic_hits) = proxies
        .values()
        .map(FaultProxy::stats)
        .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
    ProxyStats {
        connections,
        toxic_hits,
    }
}
