//! Store-level throughput, printed as operations per second. Not a test: numbers depend on the disk.
//!
//! ```text
//! cargo run --release -p finpay-ledger --example bench -- [--dir DIR] [--ops N] [--sync full|normal|off]
//! ```
//!
//! For each concurrency level it measures, with the chosen `synchronous` mode (FULL by default):
//! - `transfer`: wallet transfers (each one durable before it is answered);
//! - `payment`: the whole storage path of one payment across the three stores: begin, fraud_checked,
//!   the wallet debit, debited, succeeded + outbox row, the inbox delivery and outbox delivered
//!   (7 durable writes, 5 of them in the payments store);
//! - `payment2`: the path as the payment service writes it: `debited` and `succeeded` in one
//!   write (`succeed_from(fraud_checked)`), so 6 durable writes, 4 in the payments store (the service
//!   also marks deliveries many at a time, which this per-payment loop does not show).
//!
//! Concurrency 1 shows one fsync per operation; higher concurrency shows group commit at work.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use finpay_core::{
    AccountId, Amount, Balance, Currency, Fingerprint, IdempotencyKey, PaymentId, PaymentStatus,
    TransferId,
};
use finpay_ledger::inbox::{InboxStore, Notification};
use finpay_ledger::payments::{
    Begin, LeaseOwner, NewPayment, OutboxMessage, PaymentStore, StepNote,
};
use finpay_ledger::sqlite::{SqliteInbox, SqliteOptions, SqlitePayments, SqliteWallet};
use finpay_ledger::wallet::{TransferRequest, WalletStore};

const CUSTOMERS: usize = 1000;
const LEASE_TTL: std::time::Duration = std::time::Duration::from_secs(30);

struct Args {
    dir: Option<PathBuf>,
    ops: usize,
    sync: finpay_ledger::sqlite::Synchronous,
}

fn args() -> anyhow::Result<Args> {
    let mut out = Args {
        dir: None,
        ops: 20_000,
        sync: Default::default(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let v = it.next().context("every flag takes a value")?;
        match a.as_str() {
            "--dir" => out.dir = Some(PathBuf::from(v)),
            "--ops" => out.ops = v.parse().context("--ops")?,
            "--sync" => out.sync = v.parse().map_err(anyhow::Error::msg)?,
            other => anyhow::bail!("unknown flag {other}"),
        }
    }
    Ok(out)
}

struct Stores {
    wallet: SqliteWallet,
    payments: SqlitePayments,
    inbox: SqliteInbox,
}

fn cust(i: usize) -> anyhow::Result<AccountId> {
    Ok(AccountId::try_from(format!("cust-{i:04}"))?)
}

async fn one_payment(s: &Stores, n: usize, merged: bool) -> anyhow::Result<()> {
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
    let owner = LeaseOwner::try_from("bench")?;
    let Begin::Created(p, lease) = s.payments.begin(new, &owner, LEASE_TTL).await? else {
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
    if !merged {
        s.payments
            .advance(
                p.id,
                PaymentStatus::FraudChecked,
                PaymentStatus::Debited,
                StepNote::default(),
                &lease,
            )
            .await?;
    }
    let m = OutboxMessage {
        id: p.id.notification_id(),
        payment_id: p.id,
        account_id: p.account_id.clone(),
        message: "paid".to_owned(),
        attempts: 0,
        next_attempt_at_ms: 0,
        delivered_at_ms: None,
        last_error: None,
    };
    let from = if merged {
        PaymentStatus::FraudChecked
    } else {
        PaymentStatus::Debited
    };
    s.payments
        .succeed_from(p.id, from, m.clone(), &lease)
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

async fn measure(
    name: &str,
    stores: &Arc<Stores>,
    ops: usize,
    concurrency: usize,
    payment: Option<bool>,
) -> anyhow::Result<()> {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (stores, next) = (Arc::clone(stores), Arc::clone(&next));
        tasks.push(tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if n >= ops {
                    return anyhow::Ok(());
                }
                match payment {
                    Some(merged) => one_payment(&stores, n, merged).await?,
                    None => one_transfer(&stores, n).await?,
                }
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{name:>9}  concurrency {concurrency:>4}  {ops:>7} ops in {secs:>6.2} s  {:>9.0} ops/s",
        ops as f64 / secs
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = args()?;
    let tmp = tempfile::tempdir()?;
    let dir = args.dir.clone().unwrap_or_else(|| tmp.path().to_path_buf());
    let opts = SqliteOptions {
        synchronous: args.sync,
        ..SqliteOptions::default()
    };
    println!(
        "data dir {} (synchronous={:?}, WAL), {} cores",
        dir.display(),
        opts.synchronous,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let stores = Arc::new(Stores {
        wallet: SqliteWallet::open(&dir.join("wallet.db"), &opts).await?,
        payments: SqlitePayments::open(&dir.join("payments.db"), &opts).await?,
        inbox: SqliteInbox::open(&dir.join("notifications.db"), &opts).await?,
    });
    let mut seed = Vec::new();
    for i in 0..CUSTOMERS {
        seed.push((cust(i)?, Currency::Usd, Balance::try_new(1_000_000_000)?));
    }
    seed.push((
        AccountId::try_from("merchant-0")?,
        Currency::Usd,
        Balance::ZERO,
    ));
    stores.wallet.open_accounts(seed).await?;

    for concurrency in [1, 16, 64, 256] {
        let ops = if concurrency == 1 {
            (args.ops / 20).max(100)
        } else {
            args.ops
        };
        measure("transfer", &stores, ops, concurrency, None).await?;
    }
    for concurrency in [1, 16, 64, 256] {
        let ops = if concurrency == 1 {
            (args.ops / 40).max(50)
        } else {
            args.ops / 2
        };
        measure("payment", &stores, ops, concurrency, Some(false)).await?;
        measure("payment2", &stores, ops, concurrency, Some(true)).await?;
    }
    let report = finpay_ledger::audit::audit(&dir).await?;
    println!(
        "audit ok={} violations={} payments={} transfers={}",
        report.ok,
        report.violations.len(),
        report.payments,
        report.transfers
    );
    Ok(())
}
