//! What a run of one scenario produces: the `--json` entry ([`ScenarioResult`]) and the figures
//! in it, plus the series the report plots.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Serialize;

use super::run::RunConfig;
use super::scenario::{Bounds, Scenario};
use super::schedule::{Schedule, Window};
use crate::load::{self, Outcome};

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
    /// After the client's retries (the same as the first answers' when it does not retry).
    pub success_rate: f64,
    /// Of the first answers, over the same requests.
    pub first_answer_success_rate: f64,
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

/// A replica replaced as a rolling update does, and how long the replacement took (start, ready,
/// drain, stop).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Replaced {
    pub replica: String,
    pub by: String,
    pub at_ms: u64,
    pub took_ms: u64,
}

/// A killed or frozen replica and how long until its replacement was ready.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Heal {
    pub replica: String,
    pub signal: String,
    pub at_ms: u64,
    /// None: not back within [`super::inject::HEAL_WATCH_MAX`].
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
    /// Replicas replaced as a rolling update does.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub replaced: Vec<Replaced>,
    /// Database connections terminated by the scenario.
    #[serde(skip_serializing_if = "is_zero")]
    pub db_connections_killed: u64,
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
            replaced: Vec::new(),
            db_connections_killed: 0,
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

fn is_zero(n: &u64) -> bool {
    *n == 0
}
