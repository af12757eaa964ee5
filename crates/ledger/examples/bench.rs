//! Store-level throughput and latency, on SQLite and on PostgreSQL in one run. Not a test: numbers
//! depend on the disk and on whatever else the machine runs.
//!
//! ```text
//! cargo run --release -p finpay-ledger --example bench -- \
//!     [--backend both|sqlite|postgres] [--pg-url URL] [--concurrency 64] [--ops 20000] \
//!     [--runs 3] [--replicas 1] [--pg-pool 8] [--sync full|normal|off] [--dir DIR]
//! ```
//!
//! Two workloads, each at the chosen concurrency:
//! - `transfer`: wallet transfers from 1,000 customers to one merchant (each durable before it is
//!   answered), the hot-row case every payment is;
//! - `payment`: the storage path of one payment as the payment service writes it, across the
//!   three stores: begin (leased), fraud_checked, the wallet debit, succeed_from(fraud_checked)
//!   with the outbox row, the inbox delivery, outbox delivered: 6 durable steps.
//!
//! `--replicas N` opens each store N times on the same database (as N replicas would) and spreads
//! the work over them. Each run uses fresh stores (a fresh directory, a fresh PostgreSQL schema
//! dropped afterwards); the backends alternate run by run, so both see the same noise, and the
//! summary gives the median of the runs and the PostgreSQL/SQLite ratio. PostgreSQL is reached at
//! `--pg-url` (default `$FINPAY_TEST_PG_URL`, else `postgres://postgres@127.0.0.1:5432/test`).

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use finpay_core::{
    AccountId, Amount, Balance, Currency, Fingerprint, IdempotencyKey, PaymentId, PaymentStatus,
    TransferId,
};
use finpay_ledger::inbox::{InboxStore, Notification};
use finpay_ledger::payments::{
    Begin, LeaseOwner, NewPayment, OutboxMessage, PaymentStore, StepNote,
};
use finpay_ledger::postgres::{PgInbox, PgOptions, PgPayments, PgWallet};
use finpay_ledger::sqlite::{SqliteInbox, SqliteOptions, SqlitePayments, SqliteWallet};
use finpay_ledger::wallet::{TransferRequest, WalletStore};
use hdrhistogram::Histogram;

const CUSTOMERS: usize = 1000;
const LEASE_TTL: Duration = Duration::from_secs(30);
/// Durable steps of one payment in the `payment` workload.
const PAYMENT_STEPS: u64 = 6;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

struct Args {
    backends: Vec<Backend>,
    pg_url: String,
    concurrency: usize,
    ops: usize,
    runs: usize,
    replicas: usize,
    pg_pool: u32,
    sync: finpay_ledger::sqlite::Synchronous,
    dir: Option<PathBuf>,
}

fn args() -> anyhow::Result<Args> {
    let mut out = Args {
        backends: vec![Backend::Sqlite, Backend::Postgres],
        pg_url: std::env::var("FINPAY_TEST_PG_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned()),
        concurrency: 64,
        ops: 20_000,
        runs: 3,
        replicas: 1,
        pg_pool: 8,
        sync: Default::default(),
        dir: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let v = it.next().context("every flag takes a value")?;
        match a.as_str() {
            "--backend" => {
                out.backends = match v.as_str() {
                    "both" => vec![Backend::Sqlite, Backend::Postgres],
                    "sqlite" => vec![Backend::Sqlite],
                    "postgres" => vec![Backend::Postgres],
                    other => anyhow::bail!("--backend {other}: both, sqlite or postgres"),
                }
            }
            "--pg-url" => out.pg_url = v,
            "--concurrency" => out.concurrency = v.parse().context("--concurrency")?,
            "--ops" => out.ops = v.parse().context("--ops")?,
            "--runs" => out.runs = v.parse().context("--runs")?,
            "--replicas" => out.replicas = v.parse().context("--replicas")?,
            "--pg-pool" => out.pg_pool = v.parse().context("--pg-pool")?,
            "--sync" => out.sync = v.parse().map_err(anyhow::Error::msg)?,
            "--dir" => out.dir = Some(PathBuf::from(v)),
            other => anyhow::bail!("unknown flag {other}"),
        }
    }
    anyhow::ensure!(
        out.concurrency >= 1 && out.concurrency <= 4096,
        "--concurrency 1..=4096"
    );
    anyhow::ensure!(out.runs >= 1 && out.runs <= 20, "--runs 1..=20");
    anyhow::ensure!(out.replicas >= 1 && out.replicas <= 8, "--replicas 1..=8");
    Ok(out)
}

/// One replica's three stores.
struct Stores {
    wallet: Arc<dyn WalletStore>,
    payments: Arc<dyn PaymentStore>,
    inbox: Arc<dyn InboxStore>,
    owner: LeaseOwner,
}

/// Fresh stores for one run, opened `replicas` times; `cleanup` drops a PostgreSQL schema.
struct Opened {
    replicas: Vec<Stores>,
    _dir: Option<tempfile::TempDir>,
    pg_schema: Option<(String, String)>,
}

impl Opened {
    async fn cleanup(self) {
        if let Some((url, schema)) = &self.pg_schema {
            drop(self.replicas);
            if let Ok(pool) = sqlx::postgres::PgPoolOptions::new()
                .max_connections(1)
                .connect(url)
                .await
            {
                let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                    .execute(&pool)
                    .await;
            }
        }
    }
}

fn cust(i: usize) -> anyhow::Result<AccountId> {
    Ok(AccountId::try_from(format!("cust-{i:04}"))?)
}

fn seed() -> anyhow::Result<Vec<(AccountId, Currency, Balance)>> {
    let mut seed = Vec::with_capacity(CUSTOMERS + 1);
    for i in 0..CUSTOMERS {
        seed.push((cust(i)?, Currency::Usd, Balance::try_new(1_000_000_000)?));
    }
    seed.push((
        AccountId::try_from("merchant-0")?,
        Currency::Usd,
        Balance::ZERO,
    ));
    Ok(seed)
}

async fn open(backend: Backend, args: &Args, run: usize) -> anyhow::Result<Opened> {
    let mut replicas = Vec::with_capacity(args.replicas);
    match backend {
        Backend::Sqlite => {
            let tmp = tempfile::tempdir()?;
            let dir = match &args.dir {
                Some(d) => d.join(format!("run-{run}")),
                None => tmp.path().to_path_buf(),
            };
            let opts = SqliteOptions {
                synchronous: args.sync,
                ..SqliteOptions::default()
            };
            for r in 0..args.replicas {
                let wallet = SqliteWallet::open(&dir.join("wallet.db"), &opts).await?;
                if r == 0 {
                    wallet.open_accounts(seed()?).await?;
                }
                replicas.push(Stores {
                    wallet: Arc::new(wallet),
                    payments: Arc::new(
                        SqlitePayments::open(&dir.join("payments.db"), &opts).await?,
                    ),
                    inbox: Arc::new(SqliteInbox::open(&dir.join("notifications.db"), &opts).await?),
                    owner: LeaseOwner::try_from(format!("bench-{r}"))?,
                });
            }
            Ok(Opened {
                replicas,
                _dir: Some(tmp),
                pg_schema: None,
            })
        }
        Backend::Postgres => {
            let schema = format!("finpay_bench_{}_{run}", std::process::id());
            let mut opts = PgOptions::new(args.pg_url.clone());
            opts.schema = Some(schema.clone());
            // Modest pools: a cluster runs six stateful processes on one server.
            opts.max_connections = args.pg_pool;
            for r in 0..args.replicas {
                let wallet = PgWallet::open(&opts).await?;
                if r == 0 {
                    wallet.open_accounts(seed()?).await?;
                }
                replicas.push(Stores {
                    wallet: Arc::new(wallet),
                    payments: Arc::new(PgPayments::open(&opts).await?),
                    inbox: Arc::new(PgInbox::open(&opts).await?),
                    owner: LeaseOwner::try_from(format!("bench-{r}"))?,
                });
            }
            Ok(Opened {
                replicas,
                _dir: None,
                pg_schema: Some((args.pg_url.clone(), schema)),
            })
        }
    }
}

async fn one_payment(s: &Stores, n: usize) -> anyhow::Result<()> {
    let key = format!("bench-{n}-{}", PaymentId::new_v7());
    let new = NewPayment {
        id: PaymentId::new_v7(),
        idempotency_key: IdempotencyKey::try_from(key.as_str())?,
        fingerprint: Fingerprint::of(&[&key]),
        account_id: cust(n % CUSTOMERS)?,
        merchant_account_id: AccountId::try_from("merchant-0")?,
        amount: Amount::try_new(100)?,
        currency: Currency::Usd,
        description: None,
    };
    let Begin::Created(p, lease) = s.payments.begin(new, &s.owner, LEASE_TTL).await? else {
        anyhow::bail!("key reused")
    };
    s.payments
        .advance(
            p.id,
            PaymentStatus::Received,
            PaymentStatus::FraudChecked,
            StepNote::default(),
            &lease,
        )
        .await?;
    s.wallet
        .transfer(&TransferRequest {
            id: p.id.debit_transfer_id(),
            debit_account_id: p.account_id.clone(),
            credit_account_id: p.merchant_account_id.clone(),
            amount: p.amount_minor,
            currency: p.currency,
        })
        .await?;
    let m = OutboxMessage {
        id: p.id.notification_id(),
        payment_id: p.id,
        account_id: p.account_id.clone(),
        message: "paid".to_owned(),
        attempts: 0,
        next_attempt_at_ms: finpay_ledger::now_ms(),
        delivered_at_ms: None,
        last_error: None,
    };
    s.payments
        .succeed_from(p.id, PaymentStatus::FraudChecked, m.clone(), &lease)
        .await?;
    s.inbox
        .deliver(Notification {
            id: m.id.clone(),
            payment_id: p.id,
            account_id: m.account_id,
            message: m.message,
            received_at_ms: finpay_ledger::now_ms(),
        })
        .await?;
    s.payments
        .outbox_delivered(&m.id, finpay_ledger::now_ms())
        .await?;
    Ok(())
}

async fn one_transfer(s: &Stores, n: usize) -> anyhow::Result<()> {
    s.wallet
        .transfer(&TransferRequest {
            id: TransferId::try_from(format!("bench-t-{n}-{}", PaymentId::new_v7()))?,
            debit_account_id: cust(n % CUSTOMERS)?,
            credit_account_id: AccountId::try_from("merchant-0")?,
            amount: Amount::try_new(1)?,
            currency: Currency::Usd,
        })
        .await?;
    Ok(())
}

#[derive(Debug, Clone, Copy)]
enum Workload {
    Transfer,
    Payment,
}

/// One measurement: operations per second and latency percentiles in milliseconds.
#[derive(Debug, Clone, Copy)]
struct Figures {
    per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
}

async fn measure(
    opened: &Opened,
    workload: Workload,
    ops: usize,
    concurrency: usize,
) -> anyhow::Result<Figures> {
    let next = Arc::new(AtomicUsize::new(0));
    let hist = Arc::new(Mutex::new(Histogram::<u64>::new_with_bounds(
        1, 60_000_000, 3,
    )?));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..concurrency {
        let stores = &opened.replicas[t % opened.replicas.len()];
        let (wallet, payments, inbox) = (
            Arc::clone(&stores.wallet),
            Arc::clone(&stores.payments),
            Arc::clone(&stores.inbox),
        );
        let s = Stores {
            wallet,
            payments,
            inbox,
            owner: stores.owner.clone(),
        };
        let (next, hist) = (Arc::clone(&next), Arc::clone(&hist));
        tasks.push(tokio::spawn(async move {
            let mut local = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= ops {
                    break;
                }
                let at = Instant::now();
                match workload {
                    Workload::Payment => one_payment(&s, n).await?,
                    Workload::Transfer => one_transfer(&s, n).await?,
                }
                local.record(at.elapsed().as_micros().max(1) as u64)?;
            }
            hist.lock()
                .map_err(|_| anyhow::anyhow!("histogram poisoned"))?
                .add(&local)?;
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let secs = started.elapsed().as_secs_f64();
    let h = hist
        .lock()
        .map_err(|_| anyhow::anyhow!("histogram poisoned"))?;
    Ok(Figures {
        per_s: ops as f64 / secs,
        p50_ms: h.value_at_quantile(0.50) as f64 / 1000.0,
        p99_ms: h.value_at_quantile(0.99) as f64 / 1000.0,
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

#[derive(Default)]
struct Results {
    /// Per backend and workload, one `Figures` per run.
    runs: Vec<(Backend, &'static str, Figures)>,
}

impl Results {
    fn median_of(&self, backend: Backend, workload: &str, f: fn(&Figures) -> f64) -> f64 {
        median(
            self.runs
                .iter()
                .filter(|(b, w, _)| *b == backend && *w == workload)
                .map(|(_, _, x)| f(x))
                .collect(),
        )
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = args()?;
    println!(
        "backends {:?}, concurrency {}, {} ops per workload, {} runs, {} replica(s), sqlite \
         synchronous={:?}, {} cores",
        args.backends.iter().map(|b| b.name()).collect::<Vec<_>>(),
        args.concurrency,
        args.ops,
        args.runs,
        args.replicas,
        args.sync,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let mut results = Results::default();
    for run in 0..args.runs {
        for &backend in &args.backends {
            let opened = open(backend, &args, run).await?;
            for (name, workload, ops) in [
                ("transfer", Workload::Transfer, args.ops),
                ("payment", Workload::Payment, (args.ops / 2).max(1)),
            ] {
                let f = measure(&opened, workload, ops, args.concurrency).await?;
                println!(
                    "run {run} {:>8} {name:>8}: {:>8.0} /s  p50 {:>7.2} ms  p99 {:>7.2} ms",
                    backend.name(),
                    f.per_s,
                    f.p50_ms,
                    f.p99_ms
                );
                results.runs.push((backend, name, f));
            }
            opened.cleanup().await;
        }
    }
    println!(
        "\nmedians of {} runs at concurrency {}:",
        args.runs, args.concurrency
    );
    for workload in ["transfer", "payment"] {
        for &backend in &args.backends {
            let per_s = results.median_of(backend, workload, |f| f.per_s);
            let steps = if workload == "payment" {
                format!("  ({:.0} payment steps/s)", per_s * PAYMENT_STEPS as f64)
            } else {
                String::new()
            };
            println!(
                "  {:>8} {workload:>8}: {per_s:>8.0} /s  p50 {:>7.2} ms  p99 {:>7.2} ms{steps}",
                backend.name(),
                results.median_of(backend, workload, |f| f.p50_ms),
                results.median_of(backend, workload, |f| f.p99_ms),
            );
        }
        if args.backends.len() == 2 {
            // The ratio per run (same noise), then its median.
            let ratios: Vec<f64> = (0..args.runs)
                .filter_map(|run| {
                    let of = |b| {
                        results
                            .runs
                            .iter()
                            .filter(|(rb, w, _)| *rb == b && *w == workload)
                            .nth(run)
                            .map(|(_, _, f)| f.per_s)
                    };
                    Some(of(Backend::Postgres)? / of(Backend::Sqlite)?)
                })
                .collect();
            println!(
                "  postgres/sqlite {workload}: {:.2} (median of per-run ratios)",
                median(ratios)
            );
        }
    }
    Ok(())
}
