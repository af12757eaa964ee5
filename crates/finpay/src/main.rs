//! `finpay`: run one service, the whole system locally, load, and the money audit.
//!
//! Each subcommand's flags and its run live in its own module of the `finpay` library; this file
//! only parses and dispatches.
//!
//! Exit status: 0 success; 1 failure (including `check` finding violations, and `load` when no
//! request succeeded or the success rate is below `--min-success`); 64 bad flags or config (2 for
//! a flag value clap itself refuses).

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use finpay::{ConfigError, EXIT_CONFIG};

/// mimalloc rather than glibc's malloc: requests allocate on one tokio worker thread and free on
/// another, and glibc's per-arena locks turn that into futex calls and thread switches (see
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

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run one service in the foreground.
    Serve(finpay::serve::ServeArgs),
    /// Start the whole system locally, self-healing, until Ctrl-C.
    Up(finpay::up::UpArgs),
    /// Send real payments and report success rate, errors and latency.
    Load(finpay::load::LoadArgs),
    /// Audit the stores of a data dir; non-zero exit when any invariant is violated.
    Check(finpay::check::CheckArgs),
    /// Run chaos scenarios against a fresh local cluster each, and check steady state, money and
    /// notifications.
    Chaos {
        #[command(subcommand)]
        command: finpay::chaos::ChaosCmd,
    },
    /// Show the replicas of a running `finpay up`.
    Status(finpay::status::StatusArgs),
    /// Change the number of replicas of one service of a running `finpay up`.
    Scale(finpay::scale::ScaleArgs),
    /// Open the demo accounts in a deployed system's `<prefix>_wallet` schema (idempotent).
    Seed(finpay::seed::SeedArgs),
    /// GET a URL once; exit 0 on a 2xx answer (the container image's health check).
    Probe(finpay::probe::ProbeArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `serve` leaves logging to the service, which knows its `log_format`.
    let default_log = match cli.command {
        Cmd::Serve(_) => None,
        Cmd::Up(_) => Some("info"),
        // Restarts are the point of chaos; the harness reports them itself.
        Cmd::Chaos { .. } => Some("error"),
        _ => Some("warn"),
    };
    if let Some(level) = default_log {
        init_tracing(level);
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
        Cmd::Serve(args) => args.run().await,
        Cmd::Up(args) => {
            finpay::up::run(args.config()?).await?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Load(args) => args.run().await,
        Cmd::Check(args) => {
            let ok = args.run().await?;
            Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Cmd::Status(args) => {
            args.run()?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Chaos { command } => command.run().await,
        Cmd::Scale(args) => args.run().await,
        Cmd::Seed(args) => args.run().await,
        Cmd::Probe(args) => args.run().await,
    }
}
