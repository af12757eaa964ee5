//! FinPay's four HTTP services and the HTTP plumbing they share.
//!
//! - [`fraud`]: deterministic fraud rules behind `POST /v1/checks` (and the design note's `GET /check`).
//! - [`wallet`]: the double-entry ledger over HTTP; the transfer id is the idempotency key.
//! - [`notification`]: an inbox that stores each notification once, however often it is delivered.
//! - [`payment`]: the orchestrator. It persists a payment first, checks fraud (failing closed), debits
//!   the wallet with a transfer id derived from the payment id, and marks success together with an
//!   outbox row, in one transaction; a resumer finishes payments a crash left behind and a dispatcher
//!   delivers the outbox.
//! - [`http`]: settings, problem+json, JSON extraction, faults, health, metrics, shutdown.
//!
//! Each service exposes `Application::build(settings)` with `.port()` and `.run_until_stopped()`;
//! [`serve`] is what the `finpay` binary calls. Services talk to each other only over HTTP.
//!
//! Not for: storage (finpay-ledger), retries and breakers (finpay-resilience), process supervision
//! (the `finpay` binary).
//!
//! # Settings
//!
//! Layers, later wins: defaults -> TOML file -> `FINPAY_*` env (`__` splits tables) -> overrides
//! (dotted key = TOML value). Every table refuses unknown keys; validation names the field and
//! [`serve`] answers [`ServeError::Config`] (the binary exits 64).
//!
//! ```toml
//! # every service
//! data_dir = ".finpay"            # wallet.db / payments.db / notifications.db live here
//! admin_token = "finpay-admin"    # bearer for /admin/faults; never printed
//! log_format = "json"             # json | pretty (stderr; RUST_LOG filters, default info)
//! [http]
//! host = "127.0.0.1"
//! port = 0                        # 0 = any free port (see the listening line)
//! body_limit_bytes = 16384        # 256 ..= 64 MiB; bigger bodies get 413
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
//! commit_then_fail_rate = 0.0     # wallet only: commit, then 500 or a dropped connection
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
//! customer_account = "cust-0000"
//! merchant_account = "merchant-0"
//! amount_minor = 100
//! currency = "USD"
//! ```

use std::fmt;
use std::io::Write;
use std::path::PathBuf;
use std::str::FromStr;

use serde::Serialize;

pub mod fraud;
pub mod http;
pub mod notification;
pub mod payment;
pub mod wallet;

use crate::http::config::{self, LogFormat, ServiceSettings};

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

/// One of the four services.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ServiceKind {
    Fraud,
    Wallet,
    Notification,
    Payment,
}

impl ServiceKind {
    pub const ALL: [ServiceKind; 4] = [
        ServiceKind::Fraud,
        ServiceKind::Wallet,
        ServiceKind::Notification,
        ServiceKind::Payment,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ServiceKind::Fraud => "fraud",
            ServiceKind::Wallet => "wallet",
            ServiceKind::Notification => "notification",
            ServiceKind::Payment => "payment",
        }
    }
}

impl fmt::Display for ServiceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ServiceKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ServiceKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                format!("unknown service {s:?}: expected fraud, wallet, notification or payment")
            })
    }
}

/// The one line printed on stdout once a service listens; supervisors and tests read it.
#[derive(Serialize)]
struct ListeningLine<'a> {
    event: &'static str,
    service: &'a str,
    addr: String,
    pid: u32,
}

fn print_listening(kind: ServiceKind, addr: std::net::SocketAddr) -> Result<(), ServeError> {
    let line = ListeningLine {
        event: "listening",
        service: kind.as_str(),
        addr: addr.to_string(),
        pid: std::process::id(),
    };
    let json =
        serde_json::to_string(&line).map_err(|e| ServeError::Io(std::io::Error::other(e)))?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{json}")?;
    out.flush()?;
    Ok(())
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
        ServiceKind::Fraud => {
            let s: fraud::Settings = load(file, &overrides)?;
            let app = fraud::Application::build(s).await?;
            print_listening(kind, app.local_addr())?;
            app.run_until_stopped(crate::http::server::shutdown_signal())
                .await
        }
        ServiceKind::Wallet => {
            let s: wallet::Settings = load(file, &overrides)?;
            let app = wallet::Application::build(s).await?;
            print_listening(kind, app.local_addr())?;
            app.run_until_stopped(crate::http::server::shutdown_signal())
                .await
        }
        ServiceKind::Notification => {
            let s: notification::Settings = load(file, &overrides)?;
            let app = notification::Application::build(s).await?;
            print_listening(kind, app.local_addr())?;
            app.run_until_stopped(crate::http::server::shutdown_signal())
                .await
        }
        ServiceKind::Payment => {
            let s: payment::Settings = load(file, &overrides)?;
            let app = payment::Application::build(s).await?;
            print_listening(kind, app.local_addr())?;
            app.run_until_stopped(crate::http::server::shutdown_signal())
                .await
        }
    }
}

fn load<S: ServiceSettings>(
    file: Option<&std::path::Path>,
    overrides: &[(String, String)],
) -> Result<S, ServeError> {
    let settings: S = config::load(file, overrides)?;
    init_tracing(settings.common().log_format);
    Ok(settings)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_kind_round_trips_through_its_name() {
        for k in ServiceKind::ALL {
            assert_eq!(k.as_str().parse::<ServiceKind>(), Ok(k));
        }
        assert!("billing".parse::<ServiceKind>().is_err());
    }

    #[test]
    fn listening_line_has_the_contract_field_order() {
        let line = ListeningLine {
            event: "listening",
            service: "fraud",
            addr: "127.0.0.1:40123".into(),
            pid: 1234,
        };
        assert_eq!(
            serde_json::to_string(&line).expect("serializes"),
            r#"{"event":"listening","service":"fraud","addr":"127.0.0.1:40123","pid":1234}"#
        );
    }
}
