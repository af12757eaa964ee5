//! The offline audit behind `finpay check`: reads the three stores (the files of a data directory,
//! or three PostgreSQL schemas) and reports every violated invariant, naming the record.
//!
//! It checks what must hold whatever crashed, retried or raced:
//!
//! - **wallet**: per currency, the balances sum to the opening balances (money is neither created
//!   nor destroyed); every transfer is exactly one debit entry and one credit entry of its amount on
//!   its two accounts; no entry without a transfer; no balance is negative; every account's balance
//!   equals its opening balance minus its debits plus its credits.
//! - **payments**: every payment is in a known state, terminal or resumable; every `debited` or
//!   `succeeded` payment has exactly one debit transfer (`PaymentId::debit_transfer_id`) matching its
//!   accounts, amount and currency; no `received`, `declined` or `failed` payment has one; no payment
//!   debit exists without its payment; every outbox row is delivered or pending and belongs to a
//!   succeeded payment; every succeeded payment has exactly one outbox row.
//! - **delivery** (reported apart, in [`DeliveryReport`]): every outbox row marked delivered is in the
//!   notification inbox, with the same payment, account and message. A lost notification is not lost
//!   money, so it does not make [`AuditReport::ok`] false; the chaos harness asserts it separately.
//!
//! # Shape
//!
//! - `checks`: the table of named checks, each a query whose rows are violations and the words for
//!   one row. The counts and the per-currency totals (which the report also carries as numbers) are
//!   small functions in this module.
//! - `sql`: what the SQL is written against (`Tables`, `Dialect`); every query runs on SQLite and on
//!   PostgreSQL alike, and a unit test runs the whole table on both.
//! - `Source`: the three reads a runner offers (one integer, keyed integers, rows as text).
//! - `sqlite`: the SQLite runner ([`audit`]). The three files are opened read-only on one
//!   connection (the payments and notification files are `ATTACH`ed), so cross-store checks are
//!   joins. The snapshots are taken in causal order (payments, then wallet, then inbox), so the
//!   audit is exact while the services run, too.
//! - `postgres`: the PostgreSQL runner ([`audit_postgres`]): the three schemas on one connection in
//!   one `REPEATABLE READ READ ONLY` transaction, one snapshot of all three, as exact.
//!
//! Every check lists at most [`LISTED_PER_CHECK_MAX`] records and then counts the rest, so a badly
//! broken store still gives a bounded report.

mod checks;
mod postgres;
mod sql;
mod sqlite;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use finpay_core::PaymentStatus;
use serde::Serialize;

use checks::{Kind, CHECKS};
pub use postgres::PgSchemas;
use sql::{Scope, Tables};

/// The most violations one check lists by name; the rest are counted in one line.
pub const LISTED_PER_CHECK_MAX: usize = 100;

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("{path} does not exist: is this a FinPay data directory?")]
    MissingFile { path: PathBuf },
    #[error("cannot open {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: sqlx::Error,
    },
    /// The message never quotes the url: it may carry a password.
    #[error("cannot connect to PostgreSQL")]
    Connect(#[source] sqlx::Error),
    #[error("schema name {0:?} must be letters, digits and '_'")]
    SchemaName(String),
    #[error("{schema}.{table} does not exist: is this a FinPay schema?")]
    MissingTable { schema: String, table: &'static str },
    #[error("audit query for {check:?} failed")]
    Query {
        check: &'static str,
        #[source]
        source: sqlx::Error,
    },
}

/// What the audit found. `ok` is true when `violations` is empty.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AuditReport {
    pub ok: bool,
    pub violations: Vec<String>,
    pub accounts: u64,
    pub transfers: u64,
    pub entries: u64,
    /// Per currency code: the sum of balances and of opening balances, in minor units.
    pub totals: BTreeMap<String, CurrencyTotals>,
    pub payments: u64,
    /// Per status name, every status present (non-terminal ones are resumable).
    pub payments_by_status: BTreeMap<String, u64>,
    pub payments_resumable: u64,
    pub outbox_pending: u64,
    pub outbox_delivered: u64,
    pub notifications: u64,
    pub delivery: DeliveryReport,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CurrencyTotals {
    pub balance_minor: i64,
    pub opening_minor: i64,
}

/// Whether every notification the outbox calls delivered reached the inbox.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DeliveryReport {
    pub ok: bool,
    pub violations: Vec<String>,
    pub outbox_delivered: u64,
    pub outbox_pending: u64,
    /// Delivered outbox rows found in the inbox (equals `outbox_delivered` when ok).
    pub delivered_in_inbox: u64,
    /// Pending outbox rows whose notification already arrived (the acknowledgement was lost; the
    /// next delivery will be a harmless duplicate).
    pub pending_already_in_inbox: u64,
    pub notifications: u64,
}

/// Audits the stores in `data_dir` (`wallet.db`, `payments.db`, `notifications.db`).
pub async fn audit(data_dir: &Path) -> Result<AuditReport, AuditError> {
    let mut snapshot = sqlite::Snapshot::open(data_dir).await?;
    let scope = snapshot.scope();
    let result = run(snapshot.source(), &scope).await;
    snapshot.close().await;
    Ok(finish(result?))
}

/// Audits the three stores on the PostgreSQL server at `url`, each in its schema of `schemas`,
/// from one snapshot: the same checks and the same report as [`audit`], while the services run.
pub async fn audit_postgres(url: &str, schemas: &PgSchemas) -> Result<AuditReport, AuditError> {
    let mut snapshot = postgres::Snapshot::open(url, schemas).await?;
    let scope = snapshot.scope();
    let result = run(snapshot.source(), &scope).await;
    snapshot.close().await;
    Ok(finish(result?))
}

fn finish(mut report: AuditReport) -> AuditReport {
    report.ok = report.violations.is_empty();
    report.delivery.ok = report.delivery.violations.is_empty();
    report
}

/// What a runner gives the audit: three kinds of read, inside one read transaction. Each error
/// names the `check` that asked.
pub(crate) trait Source {
    /// The single integer `sql` returns (a `COUNT(*)`).
    async fn int(&mut self, check: &'static str, sql: &str) -> Result<i64, AuditError>;

    /// Rows of a text key (column 0, `None` for NULL) and `ints` integers after it.
    async fn keyed_ints(
        &mut self,
        check: &'static str,
        sql: &str,
        ints: usize,
    ) -> Result<Vec<(Option<String>, Vec<i64>)>, AuditError>;

    /// The first `keep` rows of `sql`, every column read as text, and how many rows there were.
    async fn rows(
        &mut self,
        check: &'static str,
        sql: &str,
        keep: usize,
    ) -> Result<Rows, AuditError>;
}

/// A check's result: the rows it lists and the count of all of them.
#[derive(Debug, Default)]
pub(crate) struct Rows {
    pub listed: Vec<Vec<Option<String>>>,
    pub found: usize,
}

/// Every count, total and check, in the report's order.
async fn run(src: &mut impl Source, scope: &Scope) -> Result<AuditReport, AuditError> {
    let mut r = AuditReport::default();
    counts(src, &scope.tables, &mut r).await?;
    totals(src, &scope.tables, &mut r).await?;
    payments_by_status(src, &scope.tables, &mut r).await?;
    delivery_counts(src, &scope.tables, &mut r).await?;
    for check in CHECKS {
        let rows = src
            .rows(check.name, &(check.sql)(scope), LISTED_PER_CHECK_MAX)
            .await?;
        let out = match check.kind {
            Kind::Money => &mut r.violations,
            Kind::Delivery => &mut r.delivery.violations,
        };
        out.extend(rows.listed.iter().map(|row| (check.describe)(row)));
        if rows.found > LISTED_PER_CHECK_MAX {
            out.push(format!(
                "{}: {} more violations not listed",
                check.name,
                rows.found - LISTED_PER_CHECK_MAX
            ));
        }
    }
    Ok(r)
}

async fn count(src: &mut impl Source, check: &'static str, sql: &str) -> Result<u64, AuditError> {
    Ok(u64::try_from(src.int(check, sql).await?).unwrap_or(0))
}

/// The number of rows in each table, and of outbox rows pending and delivered.
async fn counts(src: &mut impl Source, t: &Tables, r: &mut AuditReport) -> Result<(), AuditError> {
    let Tables {
        wallet,
        payments,
        inbox,
    } = t;
    let outbox = format!("SELECT COUNT(*) FROM {payments}.outbox WHERE delivered_at_ms IS");
    for (field, check, sql) in [
        (
            &mut r.accounts,
            "count accounts",
            format!("SELECT COUNT(*) FROM {wallet}.accounts"),
        ),
        (
            &mut r.transfers,
            "count transfers",
            format!("SELECT COUNT(*) FROM {wallet}.transfers"),
        ),
        (
            &mut r.entries,
            "count entries",
            format!("SELECT COUNT(*) FROM {wallet}.entries"),
        ),
        (
            &mut r.payments,
            "count payments",
            format!("SELECT COUNT(*) FROM {payments}.payments"),
        ),
        (
            &mut r.outbox_pending,
            "count outbox",
            format!("{outbox} NULL"),
        ),
        (
            &mut r.outbox_delivered,
            "count outbox",
            format!("{outbox} NOT NULL"),
        ),
        (
            &mut r.notifications,
            "count notifications",
            format!("SELECT COUNT(*) FROM {inbox}.notifications"),
        ),
    ] {
        *field = count(src, check, &sql).await?;
    }
    Ok(())
}

/// The balances and opening balances per currency, and a violation for each currency where they
/// differ: money was created or destroyed. Reported first, before the table of checks.
async fn totals(src: &mut impl Source, t: &Tables, r: &mut AuditReport) -> Result<(), AuditError> {
    let wallet = &t.wallet;
    let sql = format!(
        "SELECT CAST(currency AS TEXT), CAST(SUM(balance) AS BIGINT), \
                CAST(SUM(opening_balance) AS BIGINT) \
         FROM {wallet}.accounts GROUP BY currency ORDER BY currency"
    );
    for (currency, sums) in src.keyed_ints("totals", &sql, 2).await? {
        let currency = currency.unwrap_or_else(|| "NULL".to_owned());
        let totals = CurrencyTotals {
            balance_minor: sums[0],
            opening_minor: sums[1],
        };
        if totals.balance_minor != totals.opening_minor {
            r.violations.push(format!(
                "wallet: {currency} balances sum to {} but opening balances sum to {}: money was {}",
                totals.balance_minor,
                totals.opening_minor,
                if totals.balance_minor > totals.opening_minor {
                    "created"
                } else {
                    "destroyed"
                }
            ));
        }
        r.totals.insert(currency, totals);
    }
    Ok(())
}

/// Payments per status name (whatever is stored), and how many are resumable.
async fn payments_by_status(
    src: &mut impl Source,
    t: &Tables,
    r: &mut AuditReport,
) -> Result<(), AuditError> {
    let payments = &t.payments;
    let sql = format!(
        "SELECT CAST(status AS TEXT), COUNT(*) FROM {payments}.payments \
         GROUP BY status ORDER BY status"
    );
    for (status, n) in src.keyed_ints("payments by status", &sql, 1).await? {
        let status = status.unwrap_or_else(|| "NULL".to_owned());
        let n = u64::try_from(n[0]).unwrap_or(0);
        match status.parse::<PaymentStatus>() {
            Ok(st) if !st.is_terminal() => r.payments_resumable += n,
            _ => {}
        }
        r.payments_by_status.insert(status, n);
    }
    Ok(())
}

/// The delivery report's counts: the outbox's, and how many outbox rows the inbox holds.
async fn delivery_counts(
    src: &mut impl Source,
    t: &Tables,
    r: &mut AuditReport,
) -> Result<(), AuditError> {
    let (payments, inbox) = (&t.payments, &t.inbox);
    let in_inbox = |delivered: &str| {
        format!(
            "SELECT COUNT(*) FROM {payments}.outbox o JOIN {inbox}.notifications x ON x.id = o.id \
             WHERE o.delivered_at_ms IS {delivered}NULL"
        )
    };
    let d = &mut r.delivery;
    d.outbox_delivered = r.outbox_delivered;
    d.outbox_pending = r.outbox_pending;
    d.notifications = r.notifications;
    d.delivered_in_inbox = count(src, "delivered in inbox", &in_inbox("NOT ")).await?;
    d.pending_already_in_inbox = count(src, "pending in inbox", &in_inbox("")).await?;
    Ok(())
}
