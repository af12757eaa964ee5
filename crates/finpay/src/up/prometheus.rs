//! `finpay up --prometheus`: a real Prometheus (Debian's `prometheus` package) beside the cluster,
//! scraping every replica's admin listener and evaluating deploy/prometheus/alerts.yml.
//!
//! The files live in `<data-dir>/prometheus/`: `prometheus.yml` (scrape every 2 s, so a `rate()`
//! over 30 s has samples to work with), `alerts.yml` (the rules, embedded in this binary so an
//! installed `finpay` carries them), `targets.json` and the TSDB under `data/`. The targets go
//! through Prometheus' file service discovery: [`Prometheus::follow`] rewrites `targets.json` when
//! the replica set changes (`finpay scale`, a replacement), and Prometheus picks the change up
//! without a restart. Each target carries `service` and `replica` labels beside the `instance` and
//! `job` (`finpay`) that Prometheus adds.
//!
//! Prometheus is not supervised like a replica: if it exits, the cluster keeps running, and its
//! output is in `<data-dir>/logs/prometheus.log`. It is stopped (SIGTERM, then SIGKILL) after the
//! cluster, so the last scrapes see the replicas drain.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::json;
use tokio::process::{Child, Command};

use crate::cluster::ClusterState;
use crate::supervisor::Shared;

/// The alert rules Prometheus evaluates, the same file CI checks with `promtool`.
const ALERT_RULES: &str = include_str!("../../../../deploy/prometheus/alerts.yml");
/// How often Prometheus scrapes and re-reads `targets.json`.
const SCRAPE_INTERVAL: &str = "2s";
/// How long Prometheus may take to answer `/-/ready` after it is started.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long Prometheus may take to exit after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Finds `bin` (a path, or a name looked up on `PATH`), or says how to install it.
pub fn locate(bin: &Path) -> Result<PathBuf, crate::ConfigError> {
    let found = if bin.components().count() > 1 {
        bin.is_file().then(|| bin.to_owned())
    } else {
        std::env::var_os("PATH").and_then(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join(bin))
                .find(|p| p.is_file())
        })
    };
    found.ok_or_else(|| {
        crate::ConfigError(format!(
            "--prometheus: {} not found; install Debian's package \
             (`apt-get install --no-install-recommends prometheus`) or name the binary with \
             --prometheus-bin",
            bin.display()
        ))
    })
}

/// A running Prometheus and where it answers.
pub struct Prometheus {
    child: Child,
    url: String,
    dir: PathBuf,
}

impl Prometheus {
    /// Writes the config, rules and first targets for `state` into `<data_dir>/prometheus/`, starts
    /// `bin` on 127.0.0.1:`port` (0: a free one) and waits until it is ready.
    pub async fn start(
        bin: &Path,
        port: u16,
        data_dir: &Path,
        state: &ClusterState,
    ) -> anyhow::Result<Prometheus> {
        let dir = data_dir.join("prometheus");
        std::fs::create_dir_all(dir.join("data"))
            .with_context(|| format!("create {}", dir.display()))?;
        std::fs::write(dir.join("prometheus.yml"), config())?;
        std::fs::write(dir.join("alerts.yml"), ALERT_RULES)?;
        write_targets(&dir, state)?;
        let port = match port {
            0 => crate::plan::free_port()?,
            p => p,
        };
        let log_path = data_dir.join("logs").join("prometheus.log");
        std::fs::create_dir_all(data_dir.join("logs"))?;
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("create {}", log_path.display()))?;
        let child = Command::new(bin)
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("start {}", bin.display()))?;
        let mut prometheus = Prometheus {
            child,
            url: format!("http://127.0.0.1:{port}"),
            dir,
        };
        prometheus.wait_ready(&log_path).await?;
        Ok(prometheus)
    }

    /// Where Prometheus' web UI and HTTP API answer.
    pub fn url(&self) -> &str {
        &self.url
    }

    async fn wait_ready(&mut self, log: &Path) -> anyhow::Result<()> {
        let client = reqwest::Client::new();
        let ready = format!("{}/-/ready", self.url);
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait()? {
                anyhow::bail!(
                    "prometheus exited with {status} before it was ready; see {}",
                    log.display()
                );
            }
            let answered = client
                .get(&ready)
                .timeout(Duration::from_secs(1))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if answered {
                return Ok(());
            }
            if Instant::now() > deadline {
                anyhow::bail!(
                    "prometheus did not answer {ready} within {READY_TIMEOUT:?}; see {}",
                    log.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Keeps `targets.json` in step with the cluster's replicas until the task is aborted.
    pub fn follow(&self, shared: Arc<Shared>) -> tokio::task::JoinHandle<()> {
        let dir = self.dir.clone();
        tokio::spawn(async move {
            let mut written = targets(&shared.snapshot());
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let state = shared.snapshot();
                let now = targets(&state);
                if now != written {
                    match write_targets(&dir, &state) {
                        Ok(()) => written = now,
                        Err(e) => tracing::warn!(error = format!("{e:#}"), "prometheus targets"),
                    }
                }
            }
        })
    }

    /// SIGTERM, then SIGKILL after [`STOP_TIMEOUT`].
    pub async fn stop(mut self) {
        if let Some(pid) = self.child.id().and_then(|p| i32::try_from(p).ok()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        if tokio::time::timeout(STOP_TIMEOUT, self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

fn config() -> String {
    format!(
        "# Written by `finpay up --prometheus`; rewritten at every start.\n\
         global:\n  scrape_interval: {SCRAPE_INTERVAL}\n  evaluation_interval: {SCRAPE_INTERVAL}\n\
         rule_files:\n  - alerts.yml\n\
         scrape_configs:\n  - job_name: finpay\n    file_sd_configs:\n      - files: [targets.json]\n        refresh_interval: {SCRAPE_INTERVAL}\n"
    )
}

/// The file-SD target groups of `state`: one per replica, at its admin listener.
fn targets(state: &ClusterState) -> serde_json::Value {
    let groups: Vec<_> = state
        .replicas
        .iter()
        .filter_map(|r| {
            let host = r
                .admin_url
                .strip_prefix("http://")?
                .trim_end_matches('/')
                .to_owned();
            Some(json!({
                "targets": [host],
                "labels": {"service": r.service.as_str(), "replica": r.name},
            }))
        })
        .collect();
    serde_json::Value::Array(groups)
}

/// Writes `targets.json` through a temporary file and a rename, so Prometheus never reads half a
/// file.
fn write_targets(dir: &Path, state: &ClusterState) -> anyhow::Result<()> {
    let tmp = dir.join("targets.json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(&targets(state))?)?;
    std::fs::rename(&tmp, dir.join("targets.json"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_binary_names_the_package_and_the_flag() {
        let err = locate(Path::new("finpay-no-such-prometheus")).expect_err("absent");
        assert!(err.0.contains("apt-get install"), "{err}");
        assert!(err.0.contains("--prometheus-bin"), "{err}");
        assert!(locate(Path::new("/no/such/dir/prometheus")).is_err());
    }

    #[test]
    fn the_config_reads_the_rules_and_the_targets_file() {
        let c = config();
        assert!(c.contains("rule_files:\n  - alerts.yml"), "{c}");
        assert!(c.contains("files: [targets.json]"), "{c}");
        assert!(ALERT_RULES.contains("groups:"));
    }
}
