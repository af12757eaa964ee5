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

mod cluster;
pub mod control;
pub mod dashboard;
pub mod prometheus;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use finpay_services::ServiceKind;
use tokio::signal::unix::{signal, SignalKind};

pub use self::cluster::{Cluster, ADMIN_TOKEN_ENV, STOP_TIMEOUT};
use self::prometheus::Prometheus;
use crate::plan::{ClusterSpec, FraudFault, Replicas, WalletFault};
use crate::storage::{Backend, Storage};

/// `finpay up`: the whole system locally, self-healing, until Ctrl-C.
#[derive(Debug, Clone, clap::Args)]
pub struct UpArgs {
    #[arg(long, default_value = ".finpay")]
    pub data_dir: PathBuf,
    /// Payment's port on 127.0.0.1; 0 picks a free one.
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Where the money is kept: SQLite files in the data dir, or PostgreSQL (every service
    /// replicated, in schemas of this cluster's own).
    #[arg(long, value_enum, default_value_t = Backend::Sqlite)]
    pub storage: Backend,
    /// The PostgreSQL server of `--storage postgres`.
    #[arg(long, default_value = crate::storage::DEFAULT_DATABASE_URL)]
    pub database_url: String,
    #[arg(long, default_value_t = 3)]
    pub fraud_replicas: u16,
    /// Payment replicas, all behind the public port (default: 1 on SQLite, 2 on PostgreSQL).
    #[arg(long)]
    pub payment_replicas: Option<u16>,
    /// Wallet replicas (default 2: on SQLite one writes and one stands by; on PostgreSQL both
    /// write).
    #[arg(long)]
    pub wallet_replicas: Option<u16>,
    /// Notification replicas (default: 1 on SQLite, 2 on PostgreSQL).
    #[arg(long)]
    pub notification_replicas: Option<u16>,
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
    /// The live dashboard's port (the supervisor's own, on 127.0.0.1); 0 picks a free one.
    #[arg(long, default_value_t = 0)]
    pub dashboard_port: u16,
    /// Also start a Prometheus (Debian's `prometheus`) that scrapes every replica and evaluates
    /// deploy/prometheus/alerts.yml; its URL is printed and kept in cluster.json.
    #[arg(long)]
    pub prometheus: bool,
    /// The Prometheus web port on 127.0.0.1; 0 picks a free one.
    #[arg(long, default_value_t = 0, requires = "prometheus")]
    pub prometheus_port: u16,
    /// The Prometheus binary: a path, or a name looked up on PATH.
    #[arg(long, default_value = "prometheus", requires = "prometheus")]
    pub prometheus_bin: PathBuf,
}

impl UpArgs {
    /// The cluster these flags describe.
    pub fn config(&self) -> Result<UpConfig, crate::ConfigError> {
        let overrides = self
            .set
            .iter()
            .map(|s| s.parse::<ServiceOverride>())
            .collect::<Result<Vec<_>, _>>()?;
        let storage = match self.storage {
            Backend::Sqlite => Storage::Sqlite,
            Backend::Postgres => Storage::Postgres {
                url: self.database_url.clone(),
                prefix: prefix_for(&self.data_dir, &self.database_url),
            },
        };
        let prometheus = if self.prometheus {
            Some(PrometheusConfig {
                bin: prometheus::locate(&self.prometheus_bin)?,
                port: self.prometheus_port,
            })
        } else {
            None
        };
        let defaults = Replicas::default_for(storage.backend());
        let replicas = Replicas {
            fraud: self.fraud_replicas,
            wallet: self.wallet_replicas.unwrap_or(defaults.wallet),
            notification: self.notification_replicas.unwrap_or(defaults.notification),
            payment: self.payment_replicas.unwrap_or(defaults.payment),
        };
        Ok(UpConfig {
            data_dir: self.data_dir.clone(),
            spec: ClusterSpec {
                replicas,
                storage,
                fraud_fault: self.fraud_fault,
                fraud_fault_rate: self.fraud_fault_rate,
                wallet_fault: self.wallet_fault,
                wallet_fault_rate: self.wallet_fault_rate,
                notification_down: self.notification_down,
                seed: self.seed,
                payment_port: self.port,
            },
            overrides,
            prometheus,
            dashboard_port: self.dashboard_port,
        })
    }
}

/// How long the dependencies, then payment, may take to become ready before `up` gives up.
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
pub struct UpConfig {
    pub data_dir: PathBuf,
    pub spec: ClusterSpec,
    /// Extra settings for some or all services (`--set SERVICE:KEY=VALUE`), applied last.
    pub overrides: Vec<ServiceOverride>,
    /// `--prometheus`: the Prometheus to start beside the cluster.
    pub prometheus: Option<PrometheusConfig>,
    /// The supervisor's port: the dashboard and what `finpay scale` asks; 0 picks a free one.
    pub dashboard_port: u16,
}

/// The Prometheus of `finpay up --prometheus`.
#[derive(Debug, Clone)]
pub struct PrometheusConfig {
    /// The binary, found on PATH before anything starts.
    pub bin: PathBuf,
    /// Its web port on 127.0.0.1; 0 picks a free one.
    pub port: u16,
}

/// The schema prefix of a PostgreSQL cluster in `data_dir`: the one its `cluster.json` names when
/// it ran on the same database before (so its money is found again), else a new one.
fn prefix_for(data_dir: &Path, url: &str) -> String {
    crate::cluster::read(data_dir)
        .ok()
        .map(|s| s.storage)
        .filter(|s| s.backend == Backend::Postgres && s.database_url.as_deref() == Some(url))
        .and_then(|s| s.schema_prefix)
        .unwrap_or_else(crate::storage::new_prefix)
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

/// `finpay up`: launch, wait until ready, print, supervise until SIGTERM or Ctrl-C, stop.
pub async fn run(cfg: UpConfig) -> anyhow::Result<()> {
    let mut sigterm = signal(SignalKind::terminate()).context("install SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("install SIGINT handler")?;
    let mut cluster = Cluster::launch(&cfg).await?;
    let data_dir = cluster.data_dir().to_owned();
    println!(
        "finpay up: data dir {} (state {}, logs {})",
        data_dir.display(),
        crate::cluster::state_path(&data_dir).display(),
        data_dir.join("logs").display()
    );
    let started: anyhow::Result<bool> = tokio::select! {
        r = cluster.wait_ready(READY_TIMEOUT) => r.map(|()| true),
        _ = sigterm.recv() => Ok(false),
        _ = sigint.recv() => Ok(false),
    };
    let shared = cluster.shared();
    let cluster = Arc::new(tokio::sync::Mutex::new(cluster));
    let mut monitor = None;
    let mut sampling = None;
    if let Ok(true) = started {
        let (control, sampler) =
            match control::start(cluster.clone(), shared.clone(), cfg.dashboard_port).await {
                Ok(started) => started,
                Err(e) => {
                    cluster.lock().await.stop().await;
                    return Err(e);
                }
            };
        sampling = Some(sampler);
        shared.update(|s| s.control_url = Some(control));
        if let Some(p) = &cfg.prometheus {
            match Prometheus::start(&p.bin, p.port, &data_dir, &shared.snapshot()).await {
                Ok(prom) => {
                    let url = prom.url().to_owned();
                    shared.update(|s| s.prometheus_url = Some(url));
                    let follow = prom.follow(shared.clone());
                    monitor = Some((prom, follow));
                }
                Err(e) => {
                    cluster.lock().await.stop().await;
                    return Err(e);
                }
            }
        }
        let state = shared.snapshot();
        print!("{}", state.table());
        println!(
            "ready: payments at {url} (try `curl {url}/pay`; `finpay status --data-dir {}`; Ctrl-C stops)",
            data_dir.display(),
            url = state.payment_url
        );
        println!(
            "admin: each replica's ADMIN url above serves /metrics and /admin/*, the latter with \
             `Authorization: Bearer $(jq -r .admin_token {})`",
            crate::cluster::state_path(&data_dir).display()
        );
        if let Some(url) = &state.control_url {
            println!(
                "dashboard: {url}/ shows the replicas, breakers and live success rate, with \
                 buttons for the faults"
            );
        }
        if let Some(url) = &state.prometheus_url {
            println!(
                "prometheus: {url} scrapes every replica every 2 s and evaluates the alert rules \
                 (try `curl -s '{url}/api/v1/query?query=sum(rate(finpay_payments_total[30s]))'`)"
            );
        }
        tokio::select! {
            _ = sigterm.recv() => {},
            _ = sigint.recv() => {},
        }
    }
    println!("finpay up: stopping");
    cluster.lock().await.stop().await;
    if let Some(sampler) = sampling {
        sampler.abort();
    }
    if let Some((prom, follow)) = monitor {
        follow.abort();
        prom.stop().await;
    }
    started?;
    println!("finpay up: stopped");
    Ok(())
}

/// Refuses to start a second supervisor on a data dir whose supervisor is alive.
pub(crate) fn refuse_if_running(data_dir: &Path) -> anyhow::Result<()> {
    let Ok(state) = crate::cluster::read(data_dir) else {
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
