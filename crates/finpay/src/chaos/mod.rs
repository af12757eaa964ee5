//! `finpay chaos run`: each failure scenario (docs/scenarios.md) under load, with its faults on a
//! schedule reproducible from `--seed`, then the checks a person would ask for: did users notice (success
//! rate and p99 within the scenario's stated bounds), is the money right (`finpay check`), did
//! every succeeded payment get exactly one notification.
//!
//! Each scenario gets its own cluster ([`crate::up::Cluster`], in-process, in a temporary data dir
//! on free ports), so one scenario's damage never leaks into the next. The faults come from three
//! places, because this kernel has no netem: the services' own fault injection (`PUT
//! /admin/faults`), signals (SIGKILL, SIGSTOP), and a userspace TCP proxy ([`proxy`]).
//!
//! Each scenario is one file under [`scenarios`] (its name, fault, stated bounds and schedule),
//! listed once; the harness around it ([`run`], [`inject`], [`measure`], [`checks`], [`scrape`])
//! names none of them.
//!
//! Not for: load testing (`finpay load`), or long soak runs (a longer `--duration` is).

pub mod checks;
pub mod inject;
pub mod measure;
pub mod proxy;
pub mod report;
pub mod result;
pub mod run;
pub mod scenario;
pub mod scenarios;
pub mod schedule;
pub mod scrape;
pub mod topology;

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use serde::Serialize;

pub use result::ScenarioResult;
pub use run::RunConfig;
pub use scenario::{bounds_table, readme_table_rows, Scenario, ScenarioSpec};
pub use schedule::schedule;

use crate::storage::Backend;

/// `finpay chaos`.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum ChaosCmd {
    /// Run one scenario, a comma-separated list, or all of them; exit 1 if any fails.
    Run(RunArgs),
    /// Print the scenarios and their stated bounds.
    Bounds,
    /// Print the fault schedule a run would follow, as JSON (one object per scenario).
    Schedule(ScheduleArgs),
}

/// Which scenarios, on which storage.
#[derive(Debug, Clone, clap::Args)]
pub struct Which {
    /// A scenario name (`finpay chaos bounds` lists them), a comma-separated list, or all (the
    /// ones that run on the chosen storage).
    #[arg(long)]
    pub scenario: String,
    /// Seconds of load per scenario (fraud-outage adds its recovery time).
    #[arg(long, default_value_t = 20.0)]
    pub duration: f64,
    /// Seed of the fault schedule, the fault draws and the load.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// The storage of each scenario's cluster: SQLite files, or PostgreSQL schemas of its own
    /// (dropped after a scenario that passed).
    #[arg(long, value_enum, default_value_t = Backend::Sqlite)]
    pub storage: Backend,
}

/// `finpay chaos run`.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub which: Which,
    /// The PostgreSQL server of `--storage postgres`.
    #[arg(long, default_value = crate::storage::DEFAULT_DATABASE_URL)]
    pub database_url: String,
    /// Payments started per second (open loop).
    #[arg(long, default_value_t = 100.0)]
    pub rate: f64,
    /// Print one JSON object with one entry per scenario.
    #[arg(long)]
    pub json: bool,
    /// Write report.html (inline SVG plots) into this directory.
    #[arg(long)]
    pub report: Option<PathBuf>,
}

/// `finpay chaos schedule`.
#[derive(Debug, Clone, clap::Args)]
pub struct ScheduleArgs {
    #[command(flatten)]
    pub which: Which,
}

impl ChaosCmd {
    /// Runs the subcommand; `run` exits 1 when a scenario failed.
    pub async fn run(self) -> anyhow::Result<std::process::ExitCode> {
        use std::process::ExitCode;
        match self {
            ChaosCmd::Schedule(ScheduleArgs { which }) => {
                let scenarios = parse_scenarios(&which.scenario, which.storage)?;
                let duration = duration_arg(which.duration)?;
                let schedules: Vec<_> = scenarios
                    .into_iter()
                    .map(|s| schedule::for_backend(s, duration, which.seed, which.storage))
                    .collect();
                println!("{}", serde_json::to_string(&schedules)?);
                Ok(ExitCode::SUCCESS)
            }
            ChaosCmd::Bounds => {
                print!("{}", bounds_table());
                Ok(ExitCode::SUCCESS)
            }
            ChaosCmd::Run(args) => {
                let passed = run(args.chaos_args()?).await?;
                Ok(if passed {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                })
            }
        }
    }
}

impl RunArgs {
    fn chaos_args(self) -> Result<ChaosArgs, crate::ConfigError> {
        let scenarios = parse_scenarios(&self.which.scenario, self.which.storage)?;
        let duration = duration_arg(self.which.duration)?;
        let rate = self.rate;
        if !(rate.is_finite() && rate > 0.0 && rate <= 10_000.0) {
            return Err(crate::ConfigError(format!(
                "--rate must be between 0 and 10000 per second, got {rate}"
            )));
        }
        Ok(ChaosArgs {
            scenarios,
            run: RunConfig {
                duration,
                seed: self.which.seed,
                rate_per_s: rate,
                concurrency: 256,
                warmup: Duration::from_secs(2),
                storage: self.which.storage,
                database_url: self.database_url,
            },
            json: self.json,
            report_dir: self.report,
        })
    }
}

fn duration_arg(secs: f64) -> Result<Duration, crate::ConfigError> {
    let min = schedule::DURATION_MIN.as_secs_f64();
    if !(secs.is_finite() && (min..=3_600.0).contains(&secs)) {
        return Err(crate::ConfigError(format!(
            "--duration must be between {min} and 3600 seconds, got {secs}"
        )));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// What `finpay chaos run` was asked.
#[derive(Debug, Clone)]
pub struct ChaosArgs {
    pub scenarios: Vec<Scenario>,
    pub run: RunConfig,
    pub json: bool,
    pub report_dir: Option<PathBuf>,
}

/// `--scenario NAME|all` on `backend`: `all` is every scenario that runs there; a named one that
/// does not is refused.
pub fn parse_scenarios(s: &str, backend: Backend) -> Result<Vec<Scenario>, crate::ConfigError> {
    if s == "all" {
        return Ok(Scenario::all()
            .filter(|x| x.run_shape().runs_on(backend))
            .collect());
    }
    let named = s
        .split(',')
        .map(|x| x.trim().parse::<Scenario>())
        .collect::<Result<Vec<_>, _>>()?;
    match named.iter().find(|x| !x.run_shape().runs_on(backend)) {
        Some(x) => Err(crate::ConfigError(format!(
            "--scenario {x}: does not run on --storage {}",
            backend.as_str()
        ))),
        None => Ok(named),
    }
}

/// The one object `--json` prints.
#[derive(Debug, Serialize)]
pub struct Summary<'a> {
    pub passed: bool,
    pub seed: u64,
    pub duration_s: f64,
    pub rate_per_s: f64,
    pub elapsed_s: f64,
    pub scenarios: &'a [ScenarioResult],
}

/// Runs the scenarios one after the other; Ok(true) when every one passed.
pub async fn run(args: ChaosArgs) -> anyhow::Result<bool> {
    let started = std::time::Instant::now();
    let terminal = !args.json && std::io::stdout().is_terminal();
    if !args.json {
        println!(
            "finpay chaos: {} scenario(s), {} s of load each at {} payments/s, seed {}",
            args.scenarios.len(),
            args.run.duration.as_secs_f64(),
            args.run.rate_per_s,
            args.run.seed
        );
        println!("stated bounds:\n{}", bounds_table());
    }
    let mut results = Vec::with_capacity(args.scenarios.len());
    for scenario in &args.scenarios {
        let bar = terminal.then(|| new_bar(*scenario, &args.run));
        let live = |l: &run::Live| {
            if let Some(bar) = &bar {
                show(bar, l);
            }
        };
        let result = match run::run_scenario(*scenario, &args.run, &live).await {
            Ok(r) => r,
            Err(e) => ScenarioResult::harness_failure(*scenario, &args.run, format!("{e:#}")),
        };
        if let Some(bar) = &bar {
            bar.finish_and_clear();
        }
        if !args.json {
            print!("{}", human(&result));
        }
        results.push(result);
    }
    let passed = results.iter().all(|r| r.passed);
    if let Some(dir) = &args.report_dir {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        let path = dir.join("report.html");
        std::fs::write(&path, report::html(&results, &args.run))
            .with_context(|| format!("write {}", path.display()))?;
        if !args.json {
            println!("report: {}", path.display());
        }
    }
    let summary = Summary {
        passed,
        seed: args.run.seed,
        duration_s: args.run.duration.as_secs_f64(),
        rate_per_s: args.run.rate_per_s,
        elapsed_s: started.elapsed().as_secs_f64(),
        scenarios: &results,
    };
    if args.json {
        println!(
            "{}",
            serde_json::to_string(&summary).context("encode summary")?
        );
    } else {
        let n_ok = results.iter().filter(|r| r.passed).count();
        println!(
            "finpay chaos: {n_ok}/{} passed in {:.0} s",
            results.len(),
            summary.elapsed_s
        );
    }
    Ok(passed)
}

fn new_bar(scenario: Scenario, cfg: &RunConfig) -> indicatif::ProgressBar {
    let len = schedule::for_backend(scenario, cfg.duration, cfg.seed, cfg.storage).load;
    let bar = indicatif::ProgressBar::new(u64::try_from(len.as_millis()).unwrap_or(u64::MAX));
    bar.set_style(
        indicatif::ProgressStyle::with_template("{prefix:>18} {bar:30} {elapsed:>4} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_prefix(scenario.name());
    bar.enable_steady_tick(Duration::from_millis(250));
    bar
}

fn show(bar: &indicatif::ProgressBar, l: &run::Live) {
    bar.set_position(u64::try_from(l.elapsed.as_millis()).unwrap_or(u64::MAX));
    let mut msg = String::from(l.phase);
    if let Some(p) = l.progress {
        let overall = if p.done == 0 {
            1.0
        } else {
            p.succeeded as f64 / p.done as f64
        };
        msg = format!(
            "{msg} | {} payments, success {:.2}%",
            p.done,
            overall * 100.0
        );
        if let Some((rate, p99)) = p.last_second {
            msg = format!("{msg}, last second {:.1}% p99 {p99:.0} ms", rate * 100.0);
        }
    }
    if l.replicas > 0 {
        msg = format!("{msg} | ready {}/{}", l.ready, l.replicas);
    }
    if !l.active_faults.is_empty() {
        msg = format!("{msg} | faults: {}", l.active_faults.join(", "));
    }
    bar.set_message(msg);
}

/// The result of one scenario for a person.
pub fn human(r: &ScenarioResult) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} {:<18} success {:.4} (bound >= {} over {}), p99 {:.1} ms (bound <= {} ms), p50 {:.1} max {:.1}; {} payments, restarts {}, money {}, notifications {}{}",
        if r.passed { "PASS" } else { "FAIL" },
        r.name,
        r.measured.success_rate,
        r.bounds.success_rate_min,
        match r.bounds.scope {
            scenario::Scope::AllRequests => "all".to_owned(),
            scenario::Scope::OutsideWindows { grace_ms } => format!("outside window +{grace_ms} ms"),
        },
        r.measured.p99_ms,
        r.bounds.p99_ms_max,
        r.latency_ms.p50,
        r.latency_ms.max,
        r.requests,
        r.restarts,
        if r.invariants_ok { "ok" } else { "VIOLATED" },
        if r.notifications_ok { "ok" } else { "VIOLATED" },
        r.drain_ms
            .map_or_else(String::new, |d| format!(", drained in {d} ms")),
    );
    if let Some(w) = &r.measured.window {
        let _ = writeln!(
            out,
            "     in the fault window: {} requests, {} succeeded, failures {:?}, p99 {:.1} ms",
            w.requests, w.succeeded, w.failures, w.p99_ms
        );
    }
    for h in &r.heals {
        let _ = writeln!(
            out,
            "     {} {} at {} ms: {}",
            h.signal,
            h.replica,
            h.at_ms,
            h.healed_ms.map_or_else(
                || "not replaced".to_owned(),
                |x| format!("replaced and ready in {x} ms")
            )
        );
    }
    for v in &r.violations {
        let _ = writeln!(out, "     violation: {v}");
    }
    if let Some(d) = &r.data_dir {
        let _ = writeln!(out, "     data dir kept: {}", d.display());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scenarios_parse_from_all_a_name_or_a_list() {
        let all = parse_scenarios("all", Backend::Postgres).expect("all");
        assert_eq!(all.len(), scenarios::ALL.len());
        assert!(all
            .iter()
            .zip(scenarios::ALL)
            .all(|(a, b)| a.name() == b.name));
        // On SQLite, `all` leaves out what needs PostgreSQL, and naming it is refused.
        let sqlite = parse_scenarios("all", Backend::Sqlite).expect("all");
        assert!(sqlite
            .iter()
            .all(|s| s.run_shape().runs_on(Backend::Sqlite)));
        assert!(sqlite.len() < all.len());
        assert!(parse_scenarios("database-connections-killed", Backend::Sqlite).is_err());
        let names: Vec<&str> = parse_scenarios("fraud-errors,payment-kill", Backend::Sqlite)
            .expect("list")
            .into_iter()
            .map(Scenario::name)
            .collect();
        assert_eq!(names, ["fraud-errors", "payment-kill"]);
        assert!(parse_scenarios("fraud", Backend::Sqlite).is_err());
    }
}
