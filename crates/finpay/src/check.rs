//! `finpay check`: the money audit (`finpay_ledger::audit`) as a command, on either backend.
//!
//! `--data-dir D` audits the cluster of that data dir: its `cluster.json` says where the money is
//! (SQLite files in `D`, or PostgreSQL schemas); a data dir without one is taken as SQLite files.
//! `--database-url URL --schema-prefix P` audits a deployed system's schemas `P_wallet`,
//! `P_payments` and `P_inbox`. Both read one consistent snapshot and work while the services run.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use finpay_ledger::audit::AuditReport;

use crate::cluster::ClusterState;
use crate::storage::{Backend, Schemas, StorageInfo};

/// `finpay check`: audit the stores of a cluster; non-zero exit when any invariant is violated.
#[derive(Debug, Clone, clap::Args)]
pub struct CheckArgs {
    #[arg(long, default_value = ".finpay")]
    pub data_dir: PathBuf,
    /// A PostgreSQL server to audit instead of the data dir's cluster (with --schema-prefix).
    #[arg(long, requires = "schema_prefix")]
    pub database_url: Option<String>,
    /// The schema prefix of the deployment: its schemas are `<prefix>_wallet`, `_payments`,
    /// `_inbox`.
    #[arg(long, requires = "database_url")]
    pub schema_prefix: Option<String>,
    #[arg(long)]
    pub json: bool,
}

impl CheckArgs {
    /// What to audit.
    fn target(&self) -> anyhow::Result<StorageInfo> {
        if let (Some(url), Some(prefix)) = (&self.database_url, &self.schema_prefix) {
            crate::storage::check_prefix(prefix)?;
            return Ok(StorageInfo {
                backend: Backend::Postgres,
                database_url: Some(url.clone()),
                schema_prefix: Some(prefix.clone()),
                schemas: Some(Schemas::of(prefix)),
            });
        }
        if !self.data_dir.is_dir() {
            return Err(crate::ConfigError(format!(
                "data dir {} does not exist (pass --data-dir of a `finpay up` cluster)",
                self.data_dir.display()
            ))
            .into());
        }
        Ok(crate::cluster::read(&self.data_dir)
            .map(|s| s.storage)
            .unwrap_or_default())
    }

    /// Runs the audit and prints it. Returns whether every invariant holds.
    pub async fn run(&self) -> anyhow::Result<bool> {
        let target = self.target()?;
        let report = audit(&target, &self.data_dir).await?;
        let value = serde_json::to_value(&report).context("encode audit report")?;
        if self.json {
            println!(
                "{}",
                serde_json::to_string(&value).context("encode audit report")?
            );
        } else {
            let what = match target.backend {
                Backend::Sqlite => self.data_dir.display().to_string(),
                Backend::Postgres => target.schema_prefix.clone().unwrap_or_default(),
            };
            print!("{}", human(&value, &what));
        }
        Ok(report.ok)
    }
}

/// The audit of a running or stopped `finpay up` cluster, wherever its money is.
pub async fn audit_cluster(state: &ClusterState) -> anyhow::Result<AuditReport> {
    audit(&state.storage, &state.data_dir).await
}

/// The audit of `target`; `data_dir` holds the SQLite files when the backend is SQLite.
pub async fn audit(target: &StorageInfo, data_dir: &Path) -> anyhow::Result<AuditReport> {
    match (target.backend, &target.database_url, &target.schemas) {
        (Backend::Sqlite, _, _) => finpay_ledger::audit::audit(data_dir)
            .await
            .with_context(|| format!("audit {}", data_dir.display())),
        (Backend::Postgres, Some(url), Some(schemas)) => {
            crate::storage::audit_postgres(url, schemas).await
        }
        (Backend::Postgres, _, _) => {
            anyhow::bail!("the cluster state names PostgreSQL but not its URL and schemas")
        }
    }
}

/// The report for a person: a verdict, every violation, then the counts as they come.
fn human(report: &serde_json::Value, what: &str) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let ok = report.get("ok").and_then(|v| v.as_bool()).unwrap_or(false);
    let violations = report
        .get("violations")
        .and_then(|v| v.as_array())
        .cloned()
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "finpay check {}: {}",
        what,
        if ok {
            "OK, every invariant holds".to_owned()
        } else {
            format!("FAILED, {} violation(s)", violations.len())
        }
    );
    for v in &violations {
        match v.as_str() {
            Some(s) => {
                let _ = writeln!(out, "  violation: {s}");
            }
            None => {
                let _ = writeln!(out, "  violation: {v}");
            }
        }
    }
    if let Some(obj) = report.as_object() {
        for (k, v) in obj {
            if k == "ok" || k == "violations" {
                continue;
            }
            let _ = writeln!(out, "  {k}: {v}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_report_lists_every_violation_and_the_counts() {
        let report = serde_json::json!({
            "ok": false,
            "violations": ["balance of a is negative", "payment p has two debits"],
            "accounts": 3,
        });
        let text = human(&report, "/d");
        assert!(text.contains("FAILED, 2 violation(s)"));
        assert!(text.contains("  violation: balance of a is negative"));
        assert!(text.contains("  violation: payment p has two debits"));
        assert!(text.contains("accounts: 3"));
    }
}
