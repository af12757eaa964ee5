//! FinPay's four HTTP services and the HTTP plumbing they share.
//!
//! - [`fraud`]: deterministic fraud rules behind `POST /v1/checks` (and the demo's `GET /check`).
//! - [`wallet`]: the double-entry ledger over HTTP; the transfer id is the idempotency key.
//! - [`notification`]: an inbox that stores each notification once, however often it is delivered.
//! - [`payment`]: the orchestrator. It persists a payment first, checks fraud (failing closed), debits
//!   the wallet with a transfer id derived from the payment id, and marks success together with an
//!   outbox row, in one transaction; a resumer finishes payments a crash left behind and a dispatcher
//!   delivers the outbox.
//! - [`http`]: settings, problem+json, JSON extraction, faults, health, metrics, shutdown.
//! - [`app`]: the [`Application`] every service runs as; [`kind`]: [`ServiceKind`].
//!
//! Every service runs as one [`Application`] ([`app`]): a service contributes its business routes, its
//! readiness check and its background loops, and the shared shape does the rest. [`serve`] is what
//! the `finpay` binary calls; [`ServiceKind`] names the four. Services talk to each other only over
//! HTTP, in the shapes of `finpay-api`.
//!
//! Not for: storage (finpay-ledger), retries and breakers (finpay-resilience), process supervision
//! (the `finpay` binary).
//!
//! # Settings
//!
//! Layers, later wins: defaults -> TOML file -> `FINPAY_*` env (`__` splits tables) -> overrides
//! (dotted key = TOML value). The defaults are each settings type's `Default`, written once; the
//! block below shows them, and a test (`tests/defaults.rs`) checks every value in it against them.
//! Every table refuses unknown keys; validation names the field and [`serve`] answers
//! [`ServeError::Config`] (the binary exits 64).
//!
//! ```toml
//! # every service
//! data_dir = ".finpay"            # wallet.db / payments.db / notifications.db live here
//! admin_token = ""                # required, >= 32 characters: bearer for /admin/*; never printed
//! log_format = "json"             # json | pretty (stderr; RUST_LOG filters, default info)
//! [http]
//! host = "127.0.0.1"
//! port = 0                        # 0 = any free port (see the listening line)
//! body_limit_bytes = 16384        # 256 ..= 64 MiB; bigger bodies get 413
//! # shared_port = 8080           # also listen here, shared with the service's other replicas
//! admin_host = "127.0.0.1"        # the admin listener: /admin/*, /metrics, /health/*
//! admin_port = 0                  # 0 = any free port; never the business port
//! [faults]                        # business routes only; PUT /admin/faults replaces at run time
//! seed = 0
//! error_rate = 0.0                # 500 or 503, half each
//! hang_rate = 0.0
//! hang_ms = 3000                  # cut short by the caller's finpay-deadline-ms
//! latency_ms = 0
//! latency_jitter_ms = 0           # uniform 0..=jitter added to latency_ms
//! crash_rate = 0.0                # std::process::exit(137) mid-request
//! crash_after_ms = 0              # ... but only once the process has run this long
//! down = false                    # every business request 503
//! commit_then_fail_rate = 0.0     # a successful write loses its answer: 500 or a dropped connection
//! [storage]                       # wallet, payment and notification
//! backend = "sqlite"              # sqlite | postgres
//! synchronous = "full"            # sqlite: full | normal | off
//! max_connections = 8             # sqlite read pool / postgres pool, 1..=64
//! busy_timeout_ms = 5000          # sqlite lock wait / postgres pool acquire wait
//! # url = "postgres://postgres@127.0.0.1:5432/test"  # required for postgres, refused for sqlite;
//! #                              # a secret: never printed (FINPAY_STORAGE__URL keeps it out of files)
//! # schema = "finpay"            # postgres only: tables in this schema (created if absent)
//!
//! # fraud
//! [rules]
//! max_amount_minor = 1000000      # larger amounts are denied
//! blocklist = ["cust-blocked"]
//!
//! # payment
//! [fraud]
//! urls = []                       # required: ["http://127.0.0.1:9001", ...]
//! client = {}                     # finpay_resilience::ClientPolicy, its defaults (hedging on)
//! [fraud.fallback]                # off: fail closed
//! enabled = false
//! max_amount_minor = 10000
//! safe_verdict_max_age_ms = 300000
//! max_accounts = 100000
//! [wallet]
//! urls = []                       # required
//! [wallet.client]                 # ClientPolicy defaults, except:
//! per_try_timeout_ms = 500
//! max_attempts = 8
//! balancer.strategy = "failover"  # one writer on the SQLite file; the other replica stands by
//! hedge = { enabled = true, max_hedges = 1, percentile = 0.0, delay_ms = 100 }
//! [notification]
//! urls = []
//! [notification.client]           # ClientPolicy defaults, except:
//! per_try_timeout_ms = 500
//! max_attempts = 8
//! hedge.enabled = false
//! [payment]
//! deadline_ms = 2000              # one end-to-end deadline per payment
//! resume_interval_ms = 1000
//! resume_batch = 100
//! resume_concurrency = 8
//! outbox_interval_ms = 200
//! outbox_batch = 100
//! outbox_concurrency = 8
//! outbox_deadline_ms = 2000
//! outbox_backoff_base_ms = 200    # capped exponential backoff, full jitter
//! outbox_backoff_max_ms = 60000
//! description_max_chars = 200
//! retry_after_s = 1
//! # seed = 42                    # outbox jitter seed; absent = from entropy
//! [demo]                          # GET /pay
//! enabled = false                 # served only when true (`finpay up` sets it)
//! customer_account = "cust-0000"
//! merchant_account = "merchant-0"
//! amount_minor = 100
//! currency = "USD"
//! ```

use std::path::PathBuf;

pub mod app;
pub mod fraud;
pub mod http;
pub mod kind;
pub mod notification;
pub mod payment;
pub mod wallet;

pub use app::{Application, Assemble};
pub use kind::{PortRole, ServiceKind};

use crate::http::config::{self, LogFormat};

/// Why a service could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Bad settings; the message names the field. The binary exits with status 64.
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("cannot listen on {addr}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open storage")]
    Storage(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Logs go to stderr (stdout carries the listening line). `RUST_LOG` filters, default `info`.
fn init_tracing(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A subscriber may already be set (by the binary or a test); that one wins.
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Pretty => builder.pretty().try_init(),
    };
}

/// Loads the settings of `kind` (defaults -> `config` TOML -> `FINPAY_*` env -> `overrides`),
/// validates them, binds, prints the listening line and serves until SIGTERM or Ctrl-C.
pub async fn serve(
    kind: ServiceKind,
    config: Option<PathBuf>,
    overrides: Vec<(String, String)>,
) -> Result<(), ServeError> {
    let file = config.as_deref();
    match kind {
        ServiceKind::Fraud => run::<fraud::Settings>(file, &overrides).await,
        ServiceKind::Wallet => run::<wallet::Settings>(file, &overrides).await,
        ServiceKind::Notification => run::<notification::Settings>(file, &overrides).await,
        ServiceKind::Payment => run::<payment::Settings>(file, &overrides).await,
    }
}

/// Loads and validates the settings of `kind` without starting anything (`--check-config`).
pub fn check_config(
    kind: ServiceKind,
    config: Option<PathBuf>,
    overrides: Vec<(String, String)>,
) -> Result<(), ServeError> {
    let file = config.as_deref();
    match kind {
        ServiceKind::Fraud => config::load::<fraud::Settings>(file, &overrides).map(drop),
        ServiceKind::Wallet => config::load::<wallet::Settings>(file, &overrides).map(drop),
        ServiceKind::Notification => {
            config::load::<notification::Settings>(file, &overrides).map(drop)
        }
        ServiceKind::Payment => config::load::<payment::Settings>(file, &overrides).map(drop),
    }
}

async fn run<S: Assemble>(
    file: Option<&std::path::Path>,
    overrides: &[(String, String)],
) -> Result<(), ServeError> {
    let settings: S = config::load(file, overrides)?;
    init_tracing(settings.common().log_format);
    let app = Application::build(settings).await?;
    app::print_listening(S::KIND, &app)?;
    app.run_until_stopped(crate::http::server::shutdown_signal())
        .await
}
