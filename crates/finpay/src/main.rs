//! `finpay`: run one service, the whole system locally, load, and the money audit.
//!
//! Exit status: 0 success; 1 failure (including `check` finding violations); 64 bad flags or config.

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use finpay::plan::{ClusterSpec, FraudFault, Service, WalletFault};
use finpay::{ConfigError, EXIT_CONFIG};

/// mimalloc rather than glibc's malloc: requests allocate on one tokio worker thread and free on
/// another, and glibc's per-arena locks turn that into futex calls and thread switches (measured in
/// docs/bench-resilience.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "finpay",
    version,
    about = "FinPay: payments that survive their dependencies"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum ServiceArg {
    Fraud,
    Wallet,
    Notification,
    Payment,
}

impl From<ServiceArg> for Service {
    fn from(s: ServiceArg) -> Self {
        match s {
            ServiceArg::Fraud => Service::Fraud,
            ServiceArg::Wallet => Service::Wallet,
            ServiceArg::Notification => Service::Notification,
            ServiceArg::Payment => Service::Payment,
        }
    }
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run one service in the foreground.
    Serve {
        service: ServiceArg,
        /// TOML settings file (then FINPAY_* env vars, then the flags below, win in that order).
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long)]
        port: Option<u16>,
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// A settings override, `key=value` with a TOML value: `--set faults.error_rate=0.3`.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// Shut down when the parent process goes away (used by `finpay up`).
        #[arg(long, hide = true)]
        exit_with_parent: bool,
    },
    /// Start the whole system locally, self-healing, until Ctrl-C.
    Up {
        #[arg(long, default_value = ".finpay")]
        data_dir: PathBuf,
        /// Payment's port on 127.0.0.1; 0 picks a free one.
        #[arg(long, default_value_t = 8080)]
        port: u16,
        #[arg(long, default_value_t = 3)]
        fraud_replicas: u16,
        #[arg(long, value_enum, default_value_t = FraudFault::Error)]
        fraud_fault: FraudFault,
        #[arg(long, default_value_t = 0.3)]
        fraud_fault_rate: f64,
        #[arg(long, value_enum, default_value_t = WalletFault::None)]
        wallet_fault: WalletFault,
        #[arg(long, default_value_t = 0.0)]
        wallet_fault_rate: f64,
        /// Start notification with every request answered 503.
        #[arg(long)]
        notification_down: bool,
        /// Base of every replica's fault seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// A settings override for one service or all, applied last:
        /// `--set wallet:storage.synchronous="normal"`, `--set all:log_format="pretty"`.
        #[arg(long = "set", value_name = "SERVICE:KEY=VALUE")]
        set: Vec<String>,
    },
    /// Send real payments and report success rate, errors and latency.
    Load {
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        url: String,
        /// Number of payments (default 1000 unless --duration is given).
        #[arg(long)]
        requests: Option<u64>,
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
        /// Stop starting payments after this many seconds.
        #[arg(long)]
        duration: Option<f64>,
        /// Customers cust-0000.. that pay.
        #[arg(long, default_value_t = 100)]
        accounts: u32,
        #[arg(long, default_value_t = 100)]
        amount_min: u64,
        #[arg(long, default_value_t = 10_000)]
        amount_max: u64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Per-request timeout in milliseconds.
        #[arg(long, default_value_t = 30_000)]
        timeout_ms: u64,
        /// Open loop: start this many payments per second whatever the answers (latency then
        /// counts from each payment's intended start). Default: closed loop.
        #[arg(long)]
        rate: Option<f64>,
        /// Write every request's key, amount and outcome to this file, one JSON object per line.
        #[arg(long)]
        outcomes: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Audit the stores of a data dir offline; non-zero exit when any invariant is violated.
    Check {
        #[arg(long, default_value = ".finpay")]
        data_dir: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Run chaos scenarios against a fresh local cluster each, and check steady state, money and
    /// notifications.
    Chaos {
        #[command(subcommand)]
        command: ChaosCmd,
    },
    /// Show the replicas of a running `finpay up`.
    Status {
        #[arg(long, default_value = ".finpay")]
        data_dir: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum ChaosCmd {
    /// Run one scenario, a comma-separated list, or all of them; exit 1 if any fails.
    Run {
        /// fraud-errors, fraud-hangs, fraud-crash, fraud-outage, wallet-kill, wallet-ambiguous,
        /// payment-kill, notification-down, network-glitch, replica-freeze, or all.
        #[arg(long)]
        scenario: String,
        /// Seconds of load per scenario (fraud-outage adds its recovery time).
        #[arg(long, default_value_t = 20.0)]
        duration: f64,
        /// Seed of the fault schedule, the fault draws and the load.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Payments started per second (open loop).
        #[arg(long, default_value_t = 100.0)]
        rate: f64,
        /// Print one JSON object with one entry per scenario.
        #[arg(long)]
        json: bool,
        /// Write report.html (inline SVG plots) into this directory.
        #[arg(long)]
        report: Option<PathBuf>,
    },
    /// Print the scenarios and their stated bounds.
    Bounds,
    /// Print the fault schedule a run would follow, as JSON (one object per scenario).
    Schedule {
        #[arg(long)]
        scenario: String,
        #[arg(long, default_value_t = 20.0)]
        duration: f64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let is_serve = matches!(cli.command, Cmd::Serve { .. });
    if !is_serve {
        // `serve` leaves logging to the service, which knows its `log_format`.
        let default = match cli.command {
            Cmd::Up { .. } => "info",
            // Restarts are the point of chaos; the harness reports them itself.
            Cmd::Chaos { .. } => "error",
            _ => "warn",
        };
        init_tracing(default);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("finpay: start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("finpay: {e:#}");
            if e.chain().any(|c| c.is::<ConfigError>()) {
                ExitCode::from(EXIT_CONFIG)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

fn init_tracing(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

async fn dispatch(cmd: Cmd) -> anyhow::Result<ExitCode> {
    match cmd {
        Cmd::Serve {
            service,
            config,
            port,
            data_dir,
            set,
            exit_with_parent,
        } => {
            let args = finpay::serve::ServeArgs {
                service: service.into(),
                config,
                port,
                data_dir,
                set,
                exit_with_parent,
            };
            serve(args).await
        }
        Cmd::Up {
            data_dir,
            port,
            fraud_replicas,
            fraud_fault,
            fraud_fault_rate,
            wallet_fault,
            wallet_fault_rate,
            notification_down,
            seed,
            set,
        } => {
            let overrides = set
                .iter()
                .map(|s| s.parse::<finpay::up::ServiceOverride>())
                .collect::<Result<Vec<_>, _>>()?;
            let spec = ClusterSpec {
                fraud_replicas,
                wallet_replicas: 2,
                fraud_fault,
                fraud_fault_rate,
                wallet_fault,
                wallet_fault_rate,
                notification_down,
                seed,
                payment_port: port,
            };
            finpay::up::run(finpay::up::UpConfig {
                data_dir,
                spec,
                overrides,
            })
            .await?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Load {
            url,
            requests,
            concurrency,
            duration,
            accounts,
            amount_min,
            amount_max,
            seed,
            timeout_ms,
            rate,
            outcomes,
            json,
        } => {
            let duration = match duration {
                None => None,
                Some(s) if s.is_finite() && s > 0.0 && s <= 86_400.0 => {
                    Some(Duration::from_secs_f64(s))
                }
                Some(s) => {
                    return Err(ConfigError(format!(
                        "--duration must be between 0 and 86400 seconds, got {s}"
                    ))
                    .into())
                }
            };
            let cfg = finpay::load::LoadConfig {
                url: url.clone(),
                requests: requests.or(if duration.is_some() { None } else { Some(1000) }),
                duration,
                concurrency,
                accounts,
                amount_min_minor: amount_min,
                amount_max_minor: amount_max,
                seed,
                request_timeout: Duration::from_millis(timeout_ms.max(1)),
                record_outcomes: outcomes.is_some(),
                rate_per_s: rate,
                ..finpay::load::LoadConfig::default()
            };
            load(cfg, outcomes, json).await
        }
        Cmd::Check { data_dir, json } => {
            let ok = finpay::check::run(&data_dir, json).await?;
            Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Cmd::Status { data_dir, json } => {
            finpay::status::run(&data_dir, json)?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Chaos {
            command:
                ChaosCmd::Schedule {
                    scenario,
                    duration,
                    seed,
                },
        } => {
            let scenarios = finpay::chaos::parse_scenarios(&scenario)?;
            let duration = chaos_duration(duration)?;
            let schedules: Vec<_> = scenarios
                .into_iter()
                .map(|s| finpay::chaos::schedule(s, duration, seed))
                .collect();
            println!("{}", serde_json::to_string(&schedules)?);
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Chaos {
            command: ChaosCmd::Bounds,
        } => {
            print!("{}", finpay::chaos::bounds_table());
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Chaos {
            command:
                ChaosCmd::Run {
                    scenario,
                    duration,
                    seed,
                    rate,
                    json,
                    report,
                },
        } => {
            let scenarios = finpay::chaos::parse_scenarios(&scenario)?;
            let duration = chaos_duration(duration)?;
            if !(rate.is_finite() && rate > 0.0 && rate <= 10_000.0) {
                return Err(ConfigError(format!(
                    "--rate must be between 0 and 10000 per second, got {rate}"
                ))
                .into());
            }
            let passed = finpay::chaos::run(finpay::chaos::ChaosArgs {
                scenarios,
                run: finpay::chaos::RunConfig {
                    duration,
                    seed,
                    rate_per_s: rate,
                    concurrency: 256,
                    warmup: Duration::from_secs(2),
                },
                json,
                report_dir: report,
            })
            .await?;
            Ok(if passed {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}

fn chaos_duration(secs: f64) -> Result<Duration, ConfigError> {
    let min = finpay::chaos::scenario::DURATION_MIN.as_secs_f64();
    if !(secs.is_finite() && (min..=3_600.0).contains(&secs)) {
        return Err(ConfigError(format!(
            "--duration must be between {min} and 3600 seconds, got {secs}"
        )));
    }
    Ok(Duration::from_secs_f64(secs))
}

async fn serve(args: finpay::serve::ServeArgs) -> anyhow::Result<ExitCode> {
    let overrides = finpay::serve::overrides(&args)?;
    if args.exit_with_parent {
        finpay::serve::watch_parent();
    }
    match finpay_services::serve(finpay::serve::kind(args.service), args.config, overrides).await {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) => {
            let code = if matches!(e, finpay_services::ServeError::Config(..)) {
                EXIT_CONFIG
            } else {
                1
            };
            eprintln!(
                "finpay serve {}: {:#}",
                args.service.as_str(),
                anyhow::Error::from(e)
            );
            Ok(ExitCode::from(code))
        }
    }
}

async fn load(
    cfg: finpay::load::LoadConfig,
    outcomes: Option<PathBuf>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    use anyhow::Context as _;
    let bar = (!json && std::io::stdout().is_terminal()).then(|| {
        let bar = match cfg.requests {
            Some(n) => indicatif::ProgressBar::new(n),
            None => indicatif::ProgressBar::new_spinner(),
        };
        bar.set_style(
            indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} payments {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    });
    let (url, concurrency) = (cfg.url.clone(), cfg.concurrency);
    let report = finpay::load::run_observed(cfg, |p| {
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
    if let Some(path) = outcomes {
        let mut text = String::new();
        for o in &report.outcomes {
            text.push_str(&serde_json::to_string(o).context("encode outcome")?);
            text.push('\n');
        }
        std::fs::write(&path, text).with_context(|| format!("write {}", path.display()))?;
    }
    if json {
        println!(
            "{}",
            serde_json::to_string(&report.summary_json()).context("encode report")?
        );
    } else {
        print!("{}", report.human(&url, concurrency));
    }
    Ok(ExitCode::SUCCESS)
}
