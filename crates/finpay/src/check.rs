//! `finpay check`: the offline money audit (`finpay_ledger::audit`) as a command.

use std::path::Path;

use anyhow::Context as _;

/// `finpay check`: audit the stores of a data dir; non-zero exit when any invariant is violated.
#[derive(Debug, Clone, clap::Args)]
pub struct CheckArgs {
    #[arg(long, default_value = ".finpay")]
    pub data_dir: std::path::PathBuf,
    #[arg(long)]
    pub json: bool,
}

/// Runs the audit over `data_dir` and prints it. Returns whether every invariant holds.
pub async fn run(data_dir: &Path, json: bool) -> anyhow::Result<bool> {
    if !data_dir.is_dir() {
        return Err(crate::ConfigError(format!(
            "data dir {} does not exist (pass --data-dir of a `finpay up` cluster)",
            data_dir.display()
        ))
        .into());
    }
    let report = finpay_ledger::audit::audit(data_dir)
        .await
        .with_context(|| format!("audit {}", data_dir.display()))?;
    let value = serde_json::to_value(&report).context("encode audit report")?;
    if json {
        println!(
            "{}",
            serde_json::to_string(&value).context("encode audit report")?
        );
    } else {
        print!("{}", human(&value, data_dir));
    }
    Ok(report.ok)
}

/// The report for a person: a verdict, every violation, then the counts as they come.
fn human(report: &serde_json::Value, data_dir: &Path) -> String {
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
        data_dir.display(),
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
        let text = human(&report, Path::new("/d"));
        assert!(text.contains("FAILED, 2 violation(s)"));
        assert!(text.contains("  violation: balance of a is negative"));
        assert!(text.contains("  violation: payment p has two debits"));
        assert!(text.contains("accounts: 3"));
    }
}
