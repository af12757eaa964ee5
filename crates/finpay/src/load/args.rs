//! `finpay load`'s flags and its output: a progress bar on a terminal, then a report for a person
//! or one JSON object, and an exit status that says whether the run met its bar (1 when nothing
//! succeeded or the success rate is below `--min-success`).

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;

use super::{run_observed, LoadConfig, LoadReport};
use crate::ConfigError;

/// `finpay load`: real payments, then success rate, errors and latency.
#[derive(Debug, Clone, clap::Args)]
pub struct LoadArgs {
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// Number of payments (default 1000 unless --duration is given).
    #[arg(long)]
    pub requests: Option<u64>,
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Stop starting payments after this many seconds.
    #[arg(long)]
    pub duration: Option<f64>,
    /// Customers cust-0000.. that pay.
    #[arg(long, default_value_t = 100)]
    pub accounts: u32,
    #[arg(long, default_value_t = 100)]
    pub amount_min: u64,
    #[arg(long, default_value_t = 10_000)]
    pub amount_max: u64,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Per-request timeout in milliseconds.
    #[arg(long, default_value_t = 30_000)]
    pub timeout_ms: u64,
    /// Open loop: start this many payments per second whatever the answers (latency then
    /// counts from each payment's intended start). Default: closed loop.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Send a payment again (same Idempotency-Key, backoff or `Retry-After`) up to this many times
    /// after a transport error, 409, 429 or 503 with `Retry-After`, as a careful payment client
    /// does. The report has the success rate of the first answers and after the retries.
    #[arg(long, default_value_t = 0)]
    pub client_retries: u32,
    /// Write every request's key, amount and outcome to this file, one JSON object per line.
    #[arg(long)]
    pub outcomes: Option<PathBuf>,
    /// Exit 1 when the success rate after the client retries (declined payments are answers, so
    /// they count as successes) is below this ratio, between 0 and 1.
    #[arg(long, value_name = "R", value_parser = ratio)]
    pub min_success: Option<f64>,
    /// Write `report.html` (success rate and latency over time, a latency histogram, errors by
    /// kind) and `report.json` into this directory.
    #[arg(long, value_name = "DIR")]
    pub report: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
}

/// `--min-success`: a ratio in 0..=1, refused by clap (naming the flag) otherwise.
fn ratio(s: &str) -> Result<f64, String> {
    let r: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a number; give a ratio between 0 and 1"))?;
    if (0.0..=1.0).contains(&r) {
        Ok(r)
    } else {
        Err(format!("must be between 0 and 1, got {s}"))
    }
}

/// Why the run fails, if it does: nothing succeeded (after the client retries), or the success
/// rate after the retries is below `min_success`. The report is printed either way; this decides
/// the exit status, so a script or CI job can tell a broken system from a working one.
fn shortfall(report: &LoadReport, min_success: Option<f64>) -> Option<String> {
    if report.succeeded_after_retries == 0 {
        let errors: Vec<String> = report
            .errors_after_retries
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect();
        let errors = if errors.is_empty() {
            String::new()
        } else {
            format!(" ({})", errors.join(", "))
        };
        return Some(format!(
            "no request succeeded: 0 of {}{errors}",
            report.requests
        ));
    }
    let min = min_success?;
    (report.success_rate_after_retries < min).then(|| {
        format!(
            "success rate after retries {:.4} ({} of {}) is below --min-success {min}",
            report.success_rate_after_retries, report.succeeded_after_retries, report.requests
        )
    })
}

impl LoadArgs {
    /// The load these flags describe.
    pub fn config(&self) -> Result<LoadConfig, ConfigError> {
        let duration = match self.duration {
            None => None,
            Some(s) if s.is_finite() && s > 0.0 && s <= 86_400.0 => {
                Some(Duration::from_secs_f64(s))
            }
            Some(s) => {
                return Err(ConfigError(format!(
                    "--duration must be between 0 and 86400 seconds, got {s}"
                )))
            }
        };
        Ok(LoadConfig {
            url: self.url.clone(),
            requests: self
                .requests
                .or(if duration.is_some() { None } else { Some(1000) }),
            duration,
            concurrency: self.concurrency,
            accounts: self.accounts,
            amount_min_minor: self.amount_min,
            amount_max_minor: self.amount_max,
            seed: self.seed,
            request_timeout: Duration::from_millis(self.timeout_ms.max(1)),
            record_outcomes: self.outcomes.is_some(),
            rate_per_s: self.rate,
            client_retries: self.client_retries,
            ..LoadConfig::default()
        })
    }

    /// Runs the load with a progress bar on a terminal and prints the report.
    pub async fn run(self) -> anyhow::Result<ExitCode> {
        let cfg = self.config()?;
        let bar = (!self.json && std::io::stdout().is_terminal()).then(|| progress_bar(&cfg));
        let (url, concurrency) = (cfg.url.clone(), cfg.concurrency);
        let report = run_observed(cfg, |p| {
            if let Some(bar) = &bar {
                bar.set_position(p.done);
                let rps = p.done as f64 / p.elapsed.as_secs_f64().max(1e-3);
                match p.last_second {
                    Some((rate, p99)) => bar.set_message(format!(
                        "{rps:.0}/s, last second: success {:.2}% p99 {p99:.1} ms",
                        rate * 100.0
                    )),
                    None => bar.set_message(format!("{rps:.0}/s")),
                }
            }
        })
        .await?;
        if let Some(bar) = &bar {
            bar.finish_and_clear();
        }
        if let Some(path) = &self.outcomes {
            write_outcomes(&report, path)?;
        }
        if let Some(dir) = &self.report {
            super::html::write(&report, &url, concurrency, dir)?;
            eprintln!(
                "finpay load: report in {}",
                dir.join("report.html").display()
            );
        }
        if self.json {
            println!(
                "{}",
                serde_json::to_string(&report.summary_json()).context("encode report")?
            );
        } else {
            print!("{}", report.human(&url, concurrency));
        }
        Ok(match shortfall(&report, self.min_success) {
            None => ExitCode::SUCCESS,
            Some(why) => {
                eprintln!("finpay load: {why}");
                ExitCode::FAILURE
            }
        })
    }
}

fn progress_bar(cfg: &LoadConfig) -> indicatif::ProgressBar {
    let bar = match cfg.requests {
        Some(n) => indicatif::ProgressBar::new(n),
        None => indicatif::ProgressBar::new_spinner(),
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} payments {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar
}

fn write_outcomes(report: &LoadReport, path: &std::path::Path) -> anyhow::Result<()> {
    let mut text = String::new();
    for o in &report.outcomes {
        text.push_str(&serde_json::to_string(o).context("encode outcome")?);
        text.push('\n');
    }
    std::fs::write(path, text).with_context(|| format!("write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn report(requests: u64, succeeded: u64, errors: &[(&str, u64)]) -> LoadReport {
        LoadReport {
            requests,
            succeeded,
            failed: requests - succeeded,
            declined: 0,
            success_rate: succeeded as f64 / requests.max(1) as f64,
            succeeded_after_retries: succeeded,
            success_rate_after_retries: succeeded as f64 / requests.max(1) as f64,
            retries: 0,
            errors_after_retries: errors.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect(),
            throughput_rps: 0.0,
            elapsed_s: 0.0,
            latency_ms: Default::default(),
            latency_histogram: Vec::new(),
            errors: BTreeMap::new(),
            succeeded_amount_minor: 0,
            timeline: Vec::new(),
            outcomes: Vec::new(),
        }
    }

    #[test]
    fn a_run_where_nothing_succeeded_fails_and_names_the_errors() {
        let why = shortfall(&report(5, 0, &[("transport", 5)]), None).expect("fails");
        assert_eq!(why, "no request succeeded: 0 of 5 (transport: 5)");
        assert!(
            shortfall(&report(0, 0, &[]), None).is_some(),
            "no request at all"
        );
    }

    #[test]
    fn a_run_below_min_success_fails_and_one_at_it_passes() {
        let half = report(10, 5, &[("500", 5)]);
        assert_eq!(shortfall(&half, None), None);
        assert_eq!(shortfall(&half, Some(0.5)), None);
        let why = shortfall(&half, Some(0.6)).expect("fails");
        assert!(
            why.contains("0.5000 (5 of 10)") && why.contains("--min-success 0.6"),
            "{why}"
        );
        assert_eq!(shortfall(&report(3, 3, &[]), Some(1.0)), None);
    }

    #[test]
    fn min_success_accepts_ratios_and_refuses_anything_else() {
        assert_eq!(ratio("0.999"), Ok(0.999));
        assert_eq!(ratio("0"), Ok(0.0));
        assert_eq!(ratio("1"), Ok(1.0));
        for bad in ["1.5", "-0.1", "NaN", "inf", "ninety", ""] {
            assert!(ratio(bad).is_err(), "{bad:?} accepted");
        }
    }
}
