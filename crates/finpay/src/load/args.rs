//! `finpay load`'s flags and its output: a progress bar on a terminal, then a report for a person
//! or one JSON object.

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
    #[arg(long)]
    pub json: bool,
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
        if self.json {
            println!(
                "{}",
                serde_json::to_string(&report.summary_json()).context("encode report")?
            );
        } else {
            print!("{}", report.human(&url, concurrency));
        }
        Ok(ExitCode::SUCCESS)
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
