//! The state file `<data-dir>/cluster.json` that `finpay up` keeps current and `finpay status` (and
//! the cross-process tests, and the chaos harness) read.
//!
//! It is written atomically (a temporary file in the same directory, then `rename`), so a reader sees
//! either the previous or the next version, never half of one. `finpay up` rewrites it on every change
//! (a start, an exit, a probe verdict that flips) and on every probe tick, so `updated_at_ms` tells a
//! reader whether the supervisor is still alive.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use finpay_services::ServiceKind;
use serde::{Deserialize, Serialize};

pub const STATE_FILE: &str = "cluster.json";

/// What the supervisor knows about the whole cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterState {
    /// Absolute path of the data directory.
    pub data_dir: PathBuf,
    /// Process id of `finpay up` itself.
    pub supervisor_pid: u32,
    /// `starting`, `running`, `stopping` or `stopped`.
    pub phase: String,
    /// True once payment's `/health/ready` has answered 200 (and it is still ready).
    pub ready: bool,
    /// Where payments go (`http://127.0.0.1:8080`): the public port every payment replica shares.
    pub payment_url: String,
    /// The supervisor's own HTTP port (`finpay scale` asks it), on 127.0.0.1.
    #[serde(default)]
    pub control_url: Option<String>,
    /// The Prometheus of `finpay up --prometheus`, on 127.0.0.1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus_url: Option<String>,
    /// The bearer token of every replica's `/admin/*`, random per cluster. The file is readable by
    /// its owner only; `finpay status` leaves it out.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub admin_token: String,
    /// Where the money is: SQLite files in `data_dir`, or the PostgreSQL schemas named here.
    #[serde(default)]
    pub storage: crate::storage::StorageInfo,
    pub started_at_ms: i64,
    pub updated_at_ms: i64,
    pub replicas: Vec<ReplicaState>,
}

/// One supervised process and its probe results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplicaState {
    /// `fraud-0`, `wallet-1`, `payment-0` ...
    pub name: String,
    pub service: ServiceKind,
    /// Current process id; `None` while the replica is backing off before a restart.
    pub pid: Option<u32>,
    /// Fixed for the life of the cluster, so the replica lists handed to payment stay valid.
    pub port: u16,
    pub url: String,
    /// The replica's admin listener: `/admin/*` (with [`ClusterState::admin_token`]), `/metrics`.
    #[serde(default)]
    pub admin_url: String,
    /// `starting` (startup probe not yet passed), `running`, `backoff`, `stopped`.
    pub phase: String,
    /// Readiness probe verdict: in rotation.
    pub ready: bool,
    /// Liveness probe verdict (false until the startup probe passes).
    pub live: bool,
    /// How many times the supervisor has restarted this replica.
    pub restarts: u32,
    /// How the previous process ended, e.g. `exit status: 1`, `signal: 9 (SIGKILL)`,
    /// `killed: liveness probe failed 3 times`.
    pub last_exit: Option<String>,
    /// When the current process was started (Unix ms).
    pub started_at_ms: Option<i64>,
    /// Consecutive liveness failures right now.
    pub liveness_failures: u32,
}

impl ClusterState {
    pub fn replica(&self, name: &str) -> Option<&ReplicaState> {
        self.replicas.iter().find(|r| r.name == name)
    }

    pub fn by_service(&self, service: ServiceKind) -> impl Iterator<Item = &ReplicaState> {
        self.replicas.iter().filter(move |r| r.service == service)
    }

    /// A table a person reads: one replica per line.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{:<16} {:<13} {:>7} {:>6}  {:<9} {:<5} {:<5} {:>8}  {:<24} {:<24} LAST EXIT",
            "NAME", "SERVICE", "PID", "PORT", "PHASE", "READY", "LIVE", "RESTARTS", "URL", "ADMIN"
        );
        for r in &self.replicas {
            let pid = r.pid.map_or_else(|| "-".to_owned(), |p| p.to_string());
            let _ = writeln!(
                out,
                "{:<16} {:<13} {:>7} {:>6}  {:<9} {:<5} {:<5} {:>8}  {:<24} {:<24} {}",
                r.name,
                r.service.as_str(),
                pid,
                r.port,
                r.phase,
                yes_no(r.ready),
                yes_no(r.live),
                r.restarts,
                r.url,
                r.admin_url,
                r.last_exit.as_deref().unwrap_or("-")
            );
        }
        out
    }
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

pub fn state_path(data_dir: &Path) -> PathBuf {
    data_dir.join(STATE_FILE)
}

/// Writes `state` to `<data_dir>/cluster.json` atomically: temp file, then rename. The file is
/// readable by its owner only (mode 0600): it holds the database URL and the admin token.
pub fn write_atomic(data_dir: &Path, state: &ClusterState) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let json = serde_json::to_vec_pretty(state).context("encode cluster state")?;
    let tmp = data_dir.join(format!(".{STATE_FILE}.{}.tmp", std::process::id()));
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut f| f.write_all(&json))
        .with_context(|| format!("write {}", tmp.display()))?;
    let dest = state_path(data_dir);
    std::fs::rename(&tmp, &dest).with_context(|| format!("rename into {}", dest.display()))?;
    Ok(())
}

pub fn read(data_dir: &Path) -> anyhow::Result<ClusterState> {
    let path = state_path(data_dir);
    let bytes = std::fs::read(&path).with_context(|| {
        format!(
            "read {} (is `finpay up --data-dir {}` running?)",
            path.display(),
            data_dir.display()
        )
    })?;
    serde_json::from_slice(&bytes).with_context(|| format!("parse {}", path.display()))
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ClusterState {
        ClusterState {
            data_dir: PathBuf::from("/tmp/x"),
            supervisor_pid: 42,
            phase: "running".into(),
            ready: true,
            payment_url: "http://127.0.0.1:8080".into(),
            control_url: None,
            prometheus_url: None,
            admin_token: String::new(),
            storage: crate::storage::StorageInfo::default(),
            started_at_ms: 1,
            updated_at_ms: 2,
            replicas: vec![ReplicaState {
                name: "fraud-0".into(),
                service: ServiceKind::Fraud,
                pid: Some(7),
                port: 40001,
                url: "http://127.0.0.1:40001".into(),
                admin_url: "http://127.0.0.1:40002".into(),
                phase: "running".into(),
                ready: true,
                live: true,
                restarts: 2,
                last_exit: Some("signal: 9 (SIGKILL)".into()),
                started_at_ms: Some(3),
                liveness_failures: 0,
            }],
        }
    }

    #[test]
    fn state_round_trips_through_the_file_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = sample();
        write_atomic(dir.path(), &state).expect("write");
        write_atomic(dir.path(), &state).expect("overwrite");
        assert_eq!(read(dir.path()).expect("read"), state);
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from(STATE_FILE)]);
    }

    #[test]
    fn table_has_a_line_per_replica_with_pid_and_last_exit() {
        let t = sample().table();
        assert_eq!(t.lines().count(), 2);
        assert!(t.contains("fraud-0") && t.contains(" 7 ") && t.contains("SIGKILL"));
    }
}
