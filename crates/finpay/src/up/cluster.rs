//! [`Cluster`]: the replicas of a `finpay up`, each supervised by its own task, and the changes a
//! platform makes to them while they serve: scale a service up or down, replace one replica.
//!
//! Payment finds its dependencies through [`Routes`]: the URLs of their replicas, in index order.
//! A payment replica gets the current routes on its command line at every start, and running ones
//! get every change at once (`PUT /admin/dependencies/{service}`), so a scaled service is used
//! without a restart. A replica leaves the routes before it is stopped (readiness first, then
//! SIGTERM), so the calls in flight on it finish and no new one arrives.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use anyhow::Context as _;
use finpay_services::ServiceKind;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{overrides_for, ServiceOverride, UpConfig};
use crate::backoff::BackoffPolicy;
use crate::cluster::{self, ClusterState, ReplicaState};
use crate::plan::{self, ClusterSpec, ReplicaPlan};
use crate::supervisor::{self, ProbePolicy, ReplicaCommand, Shared};

/// How long a replica stays out of the routes before it is stopped: longer than any try's timeout,
/// so the tries in flight on it end before its SIGTERM.
pub const DRAIN: Duration = Duration::from_millis(1_000);
/// How long a new replica may take to become ready.
pub const REPLICA_READY_MAX: Duration = Duration::from_secs(60);
/// How long stopping the whole cluster may take.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// The URLs payment uses for each dependency. A dependency routed through fault proxies keeps the
/// proxies' URLs (it is pinned), and scaling it is refused.
#[derive(Debug, Default)]
pub struct Routes {
    urls: BTreeMap<ServiceKind, Vec<String>>,
    pinned: BTreeMap<ServiceKind, Vec<String>>,
}

impl Routes {
    pub fn get(&self, kind: ServiceKind) -> Vec<String> {
        self.pinned
            .get(&kind)
            .or_else(|| self.urls.get(&kind))
            .cloned()
            .unwrap_or_default()
    }
}

/// One supervised replica.
struct Running {
    plan: ReplicaPlan,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// A running cluster: its supervisor tasks, and the switches that change them.
pub struct Cluster {
    shared: Arc<Shared>,
    data_dir: PathBuf,
    program: PathBuf,
    spec: ClusterSpec,
    overrides: Vec<ServiceOverride>,
    public_port: u16,
    routes: Arc<RwLock<Routes>>,
    replicas: BTreeMap<String, Running>,
    /// Payment replicas planned but not started: [`Cluster::wait_ready`] starts them.
    pending: Vec<ReplicaPlan>,
    http: reqwest::Client,
    /// Every replica's admin token, random per cluster (in `cluster.json`, mode 0600).
    admin_token: String,
    writer: Option<JoinHandle<()>>,
    writer_stop: watch::Sender<bool>,
}

impl Cluster {
    /// Prepares the data dir, seeds the demo accounts and starts every replica but payment.
    /// Returns at once; [`Cluster::wait_ready`] starts payment when its dependencies are ready.
    pub async fn launch(cfg: &UpConfig) -> anyhow::Result<Cluster> {
        cfg.spec.validate()?;
        std::fs::create_dir_all(&cfg.data_dir)
            .with_context(|| format!("create data dir {}", cfg.data_dir.display()))?;
        let data_dir = cfg
            .data_dir
            .canonicalize()
            .with_context(|| format!("resolve data dir {}", cfg.data_dir.display()))?;
        super::refuse_if_running(&data_dir)?;
        let plan = plan::build(&cfg.spec, &data_dir)?;
        let accounts = cfg.spec.storage.seed(&data_dir).await?;
        tracing::info!(accounts, "demo accounts seeded");
        let admin_token = new_admin_token();
        let shared = Shared::new(initial_state(&data_dir, cfg, &plan, &admin_token));
        cluster::write_atomic(&data_dir, &shared.snapshot())?;
        let (writer_stop, writer_stop_rx) = watch::channel(false);
        let writer = tokio::spawn(supervisor::write_state_file(
            shared.clone(),
            data_dir.clone(),
            Duration::from_secs(1),
            writer_stop_rx,
        ));
        let mut routes = Routes::default();
        for kind in ServiceKind::DEPENDENCIES {
            routes
                .urls
                .insert(kind, plan::urls_of(&plan.replicas, kind));
        }
        let (payments, others): (Vec<_>, Vec<_>) = plan
            .replicas
            .into_iter()
            .partition(|p| p.service == ServiceKind::Payment);
        let mut cluster = Cluster {
            shared,
            data_dir,
            program: std::env::current_exe().context("locate the finpay binary")?,
            spec: cfg.spec.clone(),
            overrides: cfg.overrides.clone(),
            public_port: plan.public_port,
            routes: Arc::new(RwLock::new(routes)),
            replicas: BTreeMap::new(),
            pending: payments,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(2))
                .build()
                .context("build the supervisor's HTTP client")?,
            admin_token,
            writer: Some(writer),
            writer_stop,
        };
        for p in others {
            cluster.start(p);
        }
        Ok(cluster)
    }

    /// Waits (bounded) for every dependency replica to be ready, starts payment's replicas with
    /// their URLs, and waits (bounded) for all of them to be ready.
    pub async fn wait_ready(&mut self, bound: Duration) -> anyhow::Result<()> {
        if !wait_until(&self.shared, bound, deps_ready).await? {
            anyhow::bail!(
                "dependencies not ready after {} s:\n{}see the logs in {}",
                bound.as_secs(),
                self.shared.snapshot().table(),
                self.data_dir.join("logs").display()
            );
        }
        for p in std::mem::take(&mut self.pending) {
            self.start(p);
        }
        if !wait_until(&self.shared, bound, all_ready).await? {
            anyhow::bail!(
                "payment not ready after {} s:\n{}see the logs in {}",
                bound.as_secs(),
                self.shared.snapshot().table(),
                self.data_dir.join("logs").display()
            );
        }
        self.shared.update(|s| s.phase = "running".into());
        Ok(())
    }

    /// The replicas now: names, services and ports.
    pub fn plans(&self) -> Vec<ReplicaPlan> {
        self.replicas
            .values()
            .map(|r| r.plan.clone())
            .chain(self.pending.iter().cloned())
            .collect()
    }

    /// Makes payment reach `service` at `urls` instead of at its replicas, e.g. through fault
    /// proxies that forward to them (the chaos harness's network faults). Call before
    /// [`Cluster::wait_ready`] starts payment; the supervisor's probes still go to the replicas
    /// directly, so a proxy's faults never get a replica restarted.
    pub fn route_payment_dependency(
        &mut self,
        service: ServiceKind,
        urls: &[String],
    ) -> anyhow::Result<()> {
        anyhow::ensure!(
            !self.pending.is_empty(),
            "payment already started; route its dependencies before wait_ready"
        );
        anyhow::ensure!(
            service != ServiceKind::Payment && !urls.is_empty(),
            "route a dependency of payment to at least one URL"
        );
        self.routes
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .pinned
            .insert(service, urls.to_vec());
        Ok(())
    }

    /// The current state (what cluster.json holds).
    pub fn state(&self) -> ClusterState {
        self.shared.snapshot()
    }

    /// The live state the supervisor tasks update, for watchers that outlive a borrow.
    pub fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Starts or stops replicas of `service` until it has `n`, each new one ready before this
    /// returns, each removed one drained first. Payment's clients get the new set at once.
    pub async fn scale(&mut self, service: ServiceKind, n: u16) -> anyhow::Result<()> {
        if n == 0 || n > plan::Replicas::MAX {
            return Err(crate::ConfigError(format!(
                "{service} replicas must be between 1 and {}, got {n}",
                plan::Replicas::MAX
            ))
            .into());
        }
        self.ensure_routable(service)?;
        while self.count(service) < usize::from(n) {
            let p = self.plan_next(service)?;
            let name = p.name.clone();
            self.start(p);
            self.wait_replica_ready(&name).await?;
        }
        self.publish(service).await;
        while self.count(service) > usize::from(n) {
            let Some(last) = self.newest(service) else {
                break;
            };
            self.retire(&last).await;
        }
        Ok(())
    }

    /// Replaces one replica the way a rolling update does: a new replica of the same service
    /// starts and becomes ready, then the old one is drained and stopped.
    pub async fn replace(&mut self, name: &str) -> anyhow::Result<String> {
        let service = self
            .replicas
            .get(name)
            .map(|r| r.plan.service)
            .with_context(|| format!("no replica named {name}"))?;
        self.ensure_routable(service)?;
        let fresh = self.plan_next(service)?;
        let fresh_name = fresh.name.clone();
        self.start(fresh);
        self.wait_replica_ready(&fresh_name).await?;
        self.publish(service).await;
        self.retire(name).await;
        Ok(fresh_name)
    }

    /// Stops payment first (SIGTERM, bounded grace, SIGKILL), so it finishes in-flight payments
    /// while its dependencies still answer, then every other replica; writes the final state and
    /// returns it.
    pub async fn stop(&mut self) -> ClusterState {
        self.shared.update(|s| s.phase = "stopping".into());
        let (payments, others): (Vec<_>, Vec<_>) = std::mem::take(&mut self.replicas)
            .into_values()
            .partition(|r| r.plan.service == ServiceKind::Payment);
        for group in [payments, others] {
            for r in &group {
                let _ = r.stop.send(true);
            }
            let tasks = group.into_iter().map(|r| r.task);
            let _ = tokio::time::timeout(STOP_TIMEOUT, futures::future::join_all(tasks)).await;
        }
        self.shared.update(|s| {
            s.phase = "stopped".into();
            s.ready = false;
        });
        let _ = self.writer_stop.send(true);
        if let Some(w) = self.writer.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), w).await;
        }
        self.shared.snapshot()
    }

    /// Starts supervising `p` and records it in the state.
    fn start(&mut self, p: ReplicaPlan) {
        let cmd = self.command(&p);
        let (stop, stop_rx) = watch::channel(false);
        let state = replica_state(&p);
        self.shared.update(|s| {
            s.replicas.retain(|r| r.name != state.name);
            s.replicas.push(state);
        });
        let task = tokio::spawn(supervisor::run_replica(
            self.shared.clone(),
            cmd,
            ProbePolicy::default(),
            BackoffPolicy::default(),
            stop_rx,
        ));
        self.replicas.insert(
            p.name.clone(),
            Running {
                plan: p,
                stop,
                task,
            },
        );
    }

    /// Takes `name` out of the routes, waits for the calls in flight on it, stops it and forgets it.
    async fn retire(&mut self, name: &str) {
        let Some(r) = self.replicas.remove(name) else {
            return;
        };
        let service = r.plan.service;
        if service != ServiceKind::Payment {
            self.publish(service).await;
            tokio::time::sleep(DRAIN).await;
        }
        let _ = r.stop.send(true);
        let _ = tokio::time::timeout(STOP_TIMEOUT, r.task).await;
        self.shared
            .update(|s| s.replicas.retain(|x| x.name != name));
    }

    /// Sets `service`'s routes to its current replicas and tells every running payment replica.
    async fn publish(&self, service: ServiceKind) {
        if service == ServiceKind::Payment {
            return;
        }
        let plans: Vec<ReplicaPlan> = self.replicas.values().map(|r| r.plan.clone()).collect();
        let urls = plan::urls_of(&plans, service);
        self.routes
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .urls
            .insert(service, urls.clone());
        let body = finpay_services::payment::admin::Endpoints { urls };
        for p in plans.iter().filter(|p| p.service == ServiceKind::Payment) {
            let url = format!("{}/admin/dependencies/{service}", p.admin_url());
            let mut told = false;
            for _ in 0..5 {
                let sent = self
                    .http
                    .put(&url)
                    .bearer_auth(&self.admin_token)
                    .json(&body)
                    .send();
                if matches!(sent.await, Ok(r) if r.status().is_success()) {
                    told = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            if !told {
                // A replica that could not be told is (re)starting: it reads the routes at start.
                tracing::warn!(replica = %p.name, %service, "could not update the dependency endpoints");
            }
        }
    }

    fn ensure_routable(&self, service: ServiceKind) -> anyhow::Result<()> {
        let pinned = self
            .routes
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .pinned
            .contains_key(&service);
        anyhow::ensure!(
            !pinned,
            "{service} is reached through fault proxies; it cannot be scaled"
        );
        Ok(())
    }

    fn count(&self, service: ServiceKind) -> usize {
        self.replicas
            .values()
            .filter(|r| r.plan.service == service)
            .count()
    }

    /// The replica of `service` with the highest index: the one a scale-down removes.
    fn newest(&self, service: ServiceKind) -> Option<String> {
        self.replicas
            .values()
            .filter(|r| r.plan.service == service)
            .max_by_key(|r| r.plan.index)
            .map(|r| r.plan.name.clone())
    }

    /// A new replica of `service` on the lowest free index and a free port.
    fn plan_next(&self, service: ServiceKind) -> anyhow::Result<ReplicaPlan> {
        let taken: Vec<u16> = self
            .replicas
            .values()
            .filter(|r| r.plan.service == service)
            .map(|r| r.plan.index)
            .collect();
        let index = (0..u16::MAX)
            .find(|i| !taken.contains(i))
            .context("no free replica index")?;
        plan::plan_replica(
            &self.spec,
            &self.data_dir,
            self.public_port,
            service,
            index,
            plan::ReplicaPorts::free()?,
        )
    }

    async fn wait_replica_ready(&self, name: &str) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + REPLICA_READY_MAX;
        while tokio::time::Instant::now() < deadline {
            let s = self.shared.snapshot();
            match s.replica(name) {
                Some(r) if r.ready => return Ok(()),
                Some(r) if r.phase == "failed" => {
                    anyhow::bail!("{name} refused its configuration ({:?})", r.last_exit)
                }
                _ => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
        anyhow::bail!("{name} not ready after {} s", REPLICA_READY_MAX.as_secs())
    }

    /// How the supervisor starts replica `p`.
    fn command(&self, p: &ReplicaPlan) -> ReplicaCommand {
        let args: Vec<OsString> = vec![
            "serve".into(),
            p.service.as_str().into(),
            "--config".into(),
            p.config_path.clone().into(),
            "--exit-with-parent".into(),
        ];
        let (seed, name, service) = (self.spec.seed, p.name.clone(), p.service);
        let routes = self.routes.clone();
        let storage = self.spec.storage.clone();
        let user = overrides_for(&self.overrides, service);
        ReplicaCommand {
            name: p.name.clone(),
            program: self.program.clone(),
            args,
            // The fault seed of each start, distinct per replica and per restart, so a restarted
            // replica does not replay the exact fault sequence that brought it down; payment's
            // dependency URLs as they are at that start; the user's overrides last, so they win.
            per_generation: Arc::new(move |generation| {
                let mut set = vec![(
                    "faults.seed".to_owned(),
                    plan::derive_seed(seed, &name, generation).to_string(),
                )];
                if service == ServiceKind::Payment {
                    let routes = routes.read().unwrap_or_else(PoisonError::into_inner);
                    set.extend(plan::payment_overrides(&storage, |k| routes.get(k)));
                }
                set.extend(user.iter().cloned());
                set.into_iter()
                    .flat_map(|(k, v)| ["--set".into(), OsString::from(format!("{k}={v}"))])
                    .collect()
            }),
            // The token reaches the replica in its environment, never in a file or on its
            // command line, where `ps` shows it.
            env: std::iter::once((ADMIN_TOKEN_ENV.to_owned(), self.admin_token.clone()))
                .chain(self.spec.storage.env(service))
                .collect(),
            port: p.port,
            log_path: p.log_path.clone(),
        }
    }
}

/// The environment variable a service reads its `admin_token` from.
pub const ADMIN_TOKEN_ENV: &str = "FINPAY_ADMIN_TOKEN";

/// 32 random bytes as 64 hex characters: above the services' 32-character minimum.
fn new_admin_token() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

fn initial_state(
    data_dir: &Path,
    cfg: &UpConfig,
    plan: &plan::Plan,
    admin_token: &str,
) -> ClusterState {
    let now = cluster::now_ms();
    ClusterState {
        data_dir: data_dir.to_owned(),
        supervisor_pid: std::process::id(),
        phase: "starting".into(),
        ready: false,
        payment_url: format!("http://127.0.0.1:{}", plan.public_port),
        control_url: None,
        prometheus_url: None,
        admin_token: admin_token.to_owned(),
        storage: cfg.spec.storage.info(),
        started_at_ms: now,
        updated_at_ms: now,
        replicas: Vec::new(),
    }
}

fn replica_state(p: &ReplicaPlan) -> ReplicaState {
    ReplicaState {
        name: p.name.clone(),
        service: p.service,
        pid: None,
        port: p.port,
        url: p.url(),
        admin_url: p.admin_url(),
        phase: "pending".into(),
        ready: false,
        live: false,
        restarts: 0,
        last_exit: None,
        started_at_ms: None,
        liveness_failures: 0,
    }
}

fn deps_ready(s: &ClusterState) -> bool {
    s.replicas
        .iter()
        .filter(|r| r.service != ServiceKind::Payment)
        .all(|r| r.ready)
}

fn all_ready(s: &ClusterState) -> bool {
    s.replicas.iter().all(|r| r.ready)
}

/// Polls the shared state until `pred` holds (Ok(true)) or `bound` passes (Ok(false)). A replica
/// that refused its config (phase `failed`) ends the wait at once with an error quoting its log.
async fn wait_until(
    shared: &Shared,
    bound: Duration,
    pred: fn(&ClusterState) -> bool,
) -> anyhow::Result<bool> {
    let deadline = tokio::time::Instant::now() + bound;
    while tokio::time::Instant::now() < deadline {
        let state = shared.snapshot();
        if pred(&state) {
            return Ok(true);
        }
        if let Some(r) = state.replicas.iter().find(|r| r.phase == "failed") {
            let log = state.data_dir.join("logs").join(format!("{}.log", r.name));
            return Err(crate::ConfigError(format!(
                "{} refused its configuration ({}):\n{}",
                r.name,
                r.last_exit.as_deref().unwrap_or("exit status: 64"),
                log_tail(&log, 5)
            ))
            .into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(false)
}

/// The last `n` lines of a log file, for error messages.
fn log_tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
