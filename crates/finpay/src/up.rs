//! `finpay up`: the whole system on one machine, as supervised child processes of this binary.
//!
//! Order of events: create the data dir; refuse if another `finpay up` runs there; plan the replicas
//! and write their configs; seed the demo accounts (before any wallet starts); start fraud, wallet and
//! notification replicas; once they are ready, start payment with their URLs; print the table and a
//! `ready` line once payment's `/health/ready` answers 200. Then supervise until Ctrl-C or SIGTERM, and
//! stop payment first (so it finishes in-flight payments while its dependencies still answer), then
//! the rest.
//!
//! [`Cluster`] is the same thing as a library: the chaos harness launches its own cluster with it,
//! in-process, and stops it when a scenario ends.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use finpay_services::ServiceKind;

use crate::backoff::BackoffPolicy;
use crate::cluster::{self, ClusterState, ReplicaState};
use crate::plan::{self, ClusterSpec, FraudFault, ReplicaPlan, WalletFault};
use crate::supervisor::{self, ProbePolicy, ReplicaCommand, Shared};

/// `finpay up`: the whole system locally, self-healing, until Ctrl-C.
#[derive(Debug, Clone, clap::Args)]
pub struct UpArgs {
    #[arg(long, default_value = ".finpay")]
    pub data_dir: PathBuf,
    /// Payment's port on 127.0.0.1; 0 picks a free one.
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    #[arg(long, default_value_t = 3)]
    pub fraud_replicas: u16,
    #[arg(long, value_enum, default_value_t = FraudFault::Error)]
    pub fraud_fault: FraudFault,
    #[arg(long, default_value_t = 0.3)]
    pub fraud_fault_rate: f64,
    #[arg(long, value_enum, default_value_t = WalletFault::None)]
    pub wallet_fault: WalletFault,
    #[arg(long, default_value_t = 0.0)]
    pub wallet_fault_rate: f64,
    /// Start notification with every request answered 503.
    #[arg(long)]
    pub notification_down: bool,
    /// Base of every replica's fault seed.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// A settings override for one service or all, applied last:
    /// `--set wallet:storage.synchronous="normal"`, `--set all:log_format="pretty"`.
    #[arg(long = "set", value_name = "SERVICE:KEY=VALUE")]
    pub set: Vec<String>,
}

impl UpArgs {
    /// The cluster these flags describe.
    pub fn config(&self) -> Result<UpConfig, crate::ConfigError> {
        let overrides = self
            .set
            .iter()
            .map(|s| s.parse::<ServiceOverride>())
            .collect::<Result<Vec<_>, _>>()?;
        Ok(UpConfig {
            data_dir: self.data_dir.clone(),
            spec: ClusterSpec {
                fraud_replicas: self.fraud_replicas,
                wallet_replicas: 2,
                fraud_fault: self.fraud_fault,
                fraud_fault_rate: self.fraud_fault_rate,
                wallet_fault: self.wallet_fault,
                wallet_fault_rate: self.wallet_fault_rate,
                notification_down: self.notification_down,
                seed: self.seed,
                payment_port: self.port,
            },
            overrides,
        })
    }
}

/// How long the dependencies, then payment, may take to become ready before `up` gives up.
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long stopping the whole cluster may take.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct UpConfig {
    pub data_dir: PathBuf,
    pub spec: ClusterSpec,
    /// Extra settings for some or all services (`--set SERVICE:KEY=VALUE`), applied last.
    pub overrides: Vec<ServiceOverride>,
}

/// One `--set SERVICE:KEY=VALUE` of `finpay up`: a settings override (TOML value) for one service,
/// or for all of them (`all:`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceOverride {
    /// None: every service.
    pub service: Option<ServiceKind>,
    pub key: String,
    pub value: String,
}

impl std::str::FromStr for ServiceOverride {
    type Err = crate::ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |why: &str| {
            crate::ConfigError(format!(
                "--set {s:?}: {why}; expected SERVICE:KEY=VALUE, e.g. wallet:storage.synchronous=\"normal\" or all:log_format=\"pretty\""
            ))
        };
        let (svc, kv) = s.split_once(':').ok_or_else(|| bad("no SERVICE: prefix"))?;
        let service = match svc {
            "all" => None,
            other => Some(
                other
                    .parse::<ServiceKind>()
                    .map_err(|_| bad("unknown service"))?,
            ),
        };
        let (key, value) = kv.split_once('=').ok_or_else(|| bad("no ="))?;
        if key.trim().is_empty() {
            return Err(bad("empty key"));
        }
        Ok(ServiceOverride {
            service,
            key: key.trim().to_owned(),
            value: value.trim().to_owned(),
        })
    }
}

fn overrides_for(all: &[ServiceOverride], service: ServiceKind) -> Vec<(String, String)> {
    all.iter()
        .filter(|o| o.service.is_none_or(|s| s == service))
        .map(|o| (o.key.clone(), o.value.clone()))
        .collect()
}

/// A running cluster: its supervisor tasks, and the switches that stop them.
pub struct Cluster {
    shared: Arc<Shared>,
    data_dir: PathBuf,
    program: PathBuf,
    seed: u64,
    plans: Vec<ReplicaPlan>,
    overrides: Vec<ServiceOverride>,
    /// Where payment finds its dependencies when not at the replicas themselves (fault proxies).
    payment_routes: Vec<(String, String)>,
    deps: JoinSet<()>,
    deps_stop: watch::Sender<bool>,
    payment: Option<JoinHandle<()>>,
    pay_stop: watch::Sender<bool>,
    writer: Option<JoinHandle<()>>,
    writer_stop: watch::Sender<bool>,
}

impl Cluster {
    /// Prepares the data dir, seeds the wallet and starts every replica but payment. Returns at once;
    /// [`Cluster::wait_ready`] starts payment when its dependencies are ready.
    pub async fn launch(cfg: &UpConfig) -> anyhow::Result<Cluster> {
        cfg.spec.validate()?;
        std::fs::create_dir_all(&cfg.data_dir)
            .with_context(|| format!("create data dir {}", cfg.data_dir.display()))?;
        let data_dir = cfg
            .data_dir
            .canonicalize()
            .with_context(|| format!("resolve data dir {}", cfg.data_dir.display()))?;
        refuse_if_running(&data_dir)?;

        let plans = plan::build(&cfg.spec, &data_dir)?;
        let accounts =
            crate::seed::seed_demo_accounts(&data_dir.join(finpay_ledger::files::WALLET_DB))
                .await?;
        tracing::info!(accounts, "demo accounts seeded");

        let program = std::env::current_exe().context("locate the finpay binary")?;
        let payment_url = plans
            .iter()
            .find(|p| p.service == ServiceKind::Payment)
            .context("plan has no payment replica")?
            .url();
        let now = cluster::now_ms();
        let shared = Shared::new(ClusterState {
            data_dir: data_dir.clone(),
            supervisor_pid: std::process::id(),
            phase: "starting".into(),
            ready: false,
            payment_url,
            started_at_ms: now,
            updated_at_ms: now,
            replicas: plans.iter().map(initial_state).collect(),
        });
        cluster::write_atomic(&data_dir, &shared.snapshot())?;

        let (writer_stop, writer_stop_rx) = watch::channel(false);
        let writer = tokio::spawn(supervisor::write_state_file(
            shared.clone(),
            data_dir.clone(),
            Duration::from_secs(1),
            writer_stop_rx,
        ));
        let (deps_stop, deps_stop_rx) = watch::channel(false);
        let (pay_stop, _) = watch::channel(false);
        let mut deps = JoinSet::new();
        for p in plans.iter().filter(|p| p.service != ServiceKind::Payment) {
            deps.spawn(supervisor::run_replica(
                shared.clone(),
                command(
                    &program,
                    p,
                    cfg.spec.seed,
                    &overrides_for(&cfg.overrides, p.service),
                ),
                ProbePolicy::default(),
                BackoffPolicy::default(),
                deps_stop_rx.clone(),
            ));
        }
        Ok(Cluster {
            shared,
            data_dir,
            program,
            seed: cfg.spec.seed,
            plans,
            overrides: cfg.overrides.clone(),
            payment_routes: Vec::new(),
            deps,
            deps_stop,
            payment: None,
            pay_stop,
            writer: Some(writer),
            writer_stop,
        })
    }

    /// Waits (bounded) for every dependency replica to be ready, starts payment with their URLs,
    /// and waits (bounded) for payment to be ready.
    pub async fn wait_ready(&mut self, bound: Duration) -> anyhow::Result<()> {
        if !wait_until(&self.shared, bound, deps_ready).await? {
            anyhow::bail!(
                "dependencies not ready after {} s:\n{}see the logs in {}",
                bound.as_secs(),
                self.shared.snapshot().table(),
                self.data_dir.join("logs").display()
            );
        }
        let payment = self
            .plans
            .iter()
            .find(|p| p.service == ServiceKind::Payment)
            .context("plan has no payment replica")?;
        if self.payment.is_none() {
            let mut overrides = plan::payment_overrides(&self.plans);
            overrides.extend(self.payment_routes.iter().cloned());
            overrides.extend(overrides_for(&self.overrides, ServiceKind::Payment));
            self.payment = Some(tokio::spawn(supervisor::run_replica(
                self.shared.clone(),
                command(&self.program, payment, self.seed, &overrides),
                ProbePolicy::default(),
                BackoffPolicy::default(),
                self.pay_stop.subscribe(),
            )));
        }
        if !wait_until(&self.shared, bound, |s| s.ready).await? {
            anyhow::bail!(
                "payment not ready after {} s:\n{}see {}",
                bound.as_secs(),
                self.shared.snapshot().table(),
                payment.log_path.display()
            );
        }
        self.shared.update(|s| s.phase = "running".into());
        Ok(())
    }

    /// The planned replicas: names, services and ports.
    pub fn plans(&self) -> &[ReplicaPlan] {
        &self.plans
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
            self.payment.is_none(),
            "payment already started; route its dependencies before wait_ready"
        );
        anyhow::ensure!(
            service != ServiceKind::Payment && !urls.is_empty(),
            "route a dependency of payment to at least one URL"
        );
        let urls: Vec<toml::Value> = urls
            .iter()
            .map(|u| toml::Value::String(u.clone()))
            .collect();
        self.payment_routes.push((
            format!("{}.urls", service.as_str()),
            toml::Value::Array(urls).to_string(),
        ));
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

    /// Stops payment first (SIGTERM, bounded grace, SIGKILL), then every other replica, writes the
    /// final state and returns it.
    pub async fn stop(mut self) -> ClusterState {
        self.shared.update(|s| s.phase = "stopping".into());
        let _ = self.pay_stop.send(true);
        if let Some(t) = self.payment.take() {
            let _ = tokio::time::timeout(STOP_TIMEOUT, t).await;
        }
        let _ = self.deps_stop.send(true);
        let _ = tokio::time::timeout(STOP_TIMEOUT, async {
            while self.deps.join_next().await.is_some() {}
        })
        .await;
        // Anything still running is killed by `kill_on_drop` when its task is dropped here.
        self.deps.abort_all();
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
}

/// `finpay up`: launch, wait until ready, print, supervise until SIGTERM or Ctrl-C, stop.
pub async fn run(cfg: UpConfig) -> anyhow::Result<()> {
    let mut sigterm = signal(SignalKind::terminate()).context("install SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("install SIGINT handler")?;
    let mut cluster = Cluster::launch(&cfg).await?;
    let data_dir = cluster.data_dir().to_owned();
    println!(
        "finpay up: data dir {} (state {}, logs {})",
        data_dir.display(),
        cluster::state_path(&data_dir).display(),
        data_dir.join("logs").display()
    );
    let started: anyhow::Result<bool> = tokio::select! {
        r = cluster.wait_ready(READY_TIMEOUT) => r.map(|()| true),
        _ = sigterm.recv() => Ok(false),
        _ = sigint.recv() => Ok(false),
    };
    if let Ok(true) = started {
        let state = cluster.state();
        print!("{}", state.table());
        println!(
            "ready: payments at {url} (try `curl {url}/pay`; `finpay status --data-dir {}`; Ctrl-C stops)",
            data_dir.display(),
            url = state.payment_url
        );
        tokio::select! {
            _ = sigterm.recv() => {},
            _ = sigint.recv() => {},
        }
    }
    println!("finpay up: stopping");
    cluster.stop().await;
    started?;
    println!("finpay up: stopped");
    Ok(())
}

fn deps_ready(s: &ClusterState) -> bool {
    s.replicas
        .iter()
        .filter(|r| r.service != ServiceKind::Payment)
        .all(|r| r.ready)
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

fn initial_state(p: &ReplicaPlan) -> ReplicaState {
    ReplicaState {
        name: p.name.clone(),
        service: p.service,
        pid: None,
        port: p.port,
        url: p.url(),
        phase: "pending".into(),
        ready: false,
        live: false,
        restarts: 0,
        last_exit: None,
        started_at_ms: None,
        liveness_failures: 0,
    }
}

fn command(
    program: &Path,
    p: &ReplicaPlan,
    seed: u64,
    overrides: &[(String, String)],
) -> ReplicaCommand {
    let mut args: Vec<OsString> = vec![
        "serve".into(),
        p.service.as_str().into(),
        "--config".into(),
        p.config_path.clone().into(),
        "--exit-with-parent".into(),
    ];
    for (k, v) in overrides {
        args.push("--set".into());
        args.push(format!("{k}={v}").into());
    }
    ReplicaCommand {
        name: p.name.clone(),
        program: program.to_owned(),
        args,
        // The fault seed of each start, distinct per replica and per restart, so a restarted
        // replica does not replay the exact fault sequence that brought it down.
        per_generation: {
            let name = p.name.clone();
            Arc::new(move |generation| {
                vec![
                    "--set".into(),
                    format!("faults.seed={}", plan::derive_seed(seed, &name, generation)).into(),
                ]
            })
        },
        port: p.port,
        log_path: p.log_path.clone(),
    }
}

/// Refuses to start a second supervisor on a data dir whose supervisor is alive.
fn refuse_if_running(data_dir: &Path) -> anyhow::Result<()> {
    let Ok(state) = cluster::read(data_dir) else {
        return Ok(());
    };
    if state.phase != "stopped" && crate::status::supervisor_alive(&state) {
        return Err(crate::ConfigError(format!(
            "finpay up (pid {}) is already running on {}; stop it first or use another --data-dir",
            state.supervisor_pid,
            data_dir.display()
        ))
        .into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_overrides_parse_and_apply_to_their_service_or_all() {
        let all: Vec<ServiceOverride> = [
            "wallet:storage.synchronous=\"normal\"",
            "all:log_format=\"pretty\"",
            "payment:fraud.client.max_attempts=6",
        ]
        .into_iter()
        .map(|s| s.parse().expect("valid"))
        .collect();
        assert_eq!(
            overrides_for(&all, ServiceKind::Wallet),
            vec![
                ("storage.synchronous".to_owned(), "\"normal\"".to_owned()),
                ("log_format".to_owned(), "\"pretty\"".to_owned()),
            ]
        );
        assert_eq!(overrides_for(&all, ServiceKind::Fraud).len(), 1);
        assert_eq!(overrides_for(&all, ServiceKind::Payment).len(), 2);
        for bad in ["nokey", "billing:a=1", "wallet:a", "wallet:=1"] {
            assert!(bad.parse::<ServiceOverride>().is_err(), "{bad}");
        }
    }
}
