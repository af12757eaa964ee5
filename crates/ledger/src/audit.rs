//! The offline audit behind `finpay check`: reads the three stores of a data directory and reports
//! every violated invariant, naming the record.
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
//! The three files are opened read-only on one connection (the payments and notification files are
//! `ATTACH`ed), so cross-store checks are joins. The snapshots are taken in causal order (payments,
//! then wallet, then inbox), so the audit is exact while the services run, too.
//!
//! Every check lists at most [`LISTED_PER_CHECK_MAX`] records and then counts the rest, so a badly
//! broken store still gives a bounded report.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use futures::TryStreamExt;
use serde::Serialize;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection, SqliteRow};
use sqlx::{ConnectOptions, Row};

use crate::files;

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
    let wallet = data_dir.join(files::WALLET_DB);
    let payments = data_dir.join(files::PAYMENTS_DB);
    let notifications = data_dir.join(files::NOTIFICATIONS_DB);
    for path in [&wallet, &payments, &notifications] {
        if !path.is_file() {
            return Err(AuditError::MissingFile { path: path.clone() });
        }
    }
    let mut conn = SqliteConnectOptions::new()
        .filename(&wallet)
        .read_only(true)
        .create_if_missing(false)
        .disable_statement_logging()
        .connect()
        .await
        .map_err(|source| AuditError::Open {
            path: wallet.clone(),
            source,
        })?;
    for (path, schema) in [(&payments, "p"), (&notifications, "n")] {
        // The schema names are constants; the path is bound, never spliced into the SQL.
        sqlx::query(&format!("ATTACH DATABASE ?1 AS {schema}"))
            .bind(path.to_string_lossy().into_owned())
            .execute(&mut conn)
            .await
            .map_err(|source| AuditError::Open {
                path: path.clone(),
                source,
            })?;
    }
    // One read transaction: each file is read at one moment for the whole audit.
    exec(&mut conn, "begin", "BEGIN").await?;
    // Taken before the payments snapshot: a transfer the wallet wrote after this moment may belong to a
    // payment whose newer state the payments snapshot cannot show, so two checks below skip it.
    let payments_snapshot_ms = crate::now_ms();
    // SQLite takes each attached file's snapshot when the transaction first reads it. Reading the
    // payments file first, the wallet second and the inbox last makes the audit exact even while the
    // services run: a payment seen as debited or succeeded committed its transfer before, and an outbox
    // row seen as delivered was stored in the inbox before, so the later snapshots contain them.
    for (what, sql) in [
        ("snapshot payments", "SELECT count(*) FROM p.payments"),
        ("snapshot wallet", "SELECT count(*) FROM main.accounts"),
        ("snapshot inbox", "SELECT count(*) FROM n.notifications"),
    ] {
        exec(&mut conn, what, sql).await?;
    }
    let mut report = AuditReport::default();
    let result = run_checks(&mut conn, &mut report, payments_snapshot_ms).await;
    let _ = sqlx::query("ROLLBACK").execute(&mut conn).await;
    result?;
    report.ok = report.violations.is_empty();
    report.delivery.ok = report.delivery.violations.is_empty();
    Ok(report)
}

async fn exec(
    conn: &mut SqliteConnection,
    check: &'static str,
    sql: &str,
) -> Result<(), AuditError> {
    sqlx::query(sql)
        .execute(&mut *conn)
        .await
        .map(|_| ())
        .map_err(|source| AuditError::Query { check, source })
}

async fn count(
    conn: &mut SqliteConnection,
    check: &'static str,
    sql: &str,
) -> Result<u64, AuditError> {
    let n: i64 = sqlx::query_scalar(sql)
        .fetch_one(&mut *conn)
        .await
        .map_err(|source| AuditError::Query { check, source })?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// Runs `sql`, whose every row is a violation, and describes each with `describe`.
async fn violations(
    conn: &mut SqliteConnection,
    check: &'static str,
    sql: &str,
    out: &mut Vec<String>,
    describe: impl Fn(&SqliteRow) -> Result<String, sqlx::Error>,
) -> Result<(), AuditError> {
    let err = |source| AuditError::Query { check, source };
    let mut rows = sqlx::query(sql).fetch(&mut *conn);
    let mut found = 0usize;
    while let Some(row) = rows.try_next().await.map_err(err)? {
        found += 1;
        if found <= LISTED_PER_CHECK_MAX {
            out.push(describe(&row).map_err(err)?);
        }
    }
    if found > LISTED_PER_CHECK_MAX {
        out.push(format!(
            "{check}: {} more violations not listed",
            found - LISTED_PER_CHECK_MAX
        ));
    }
    Ok(())
}

fn s(row: &SqliteRow, i: usize) -> Result<String, sqlx::Error> {
    // Corrupt rows may hold anything; read every value as text so the report can show it.
    let v: Option<String> = row.try_get(i)?;
    Ok(v.unwrap_or_else(|| "NULL".to_owned()))
}

/// The wallet transfer id of a payment, as SQL over `payments.id` (a hyphenated UUID). Must agree
/// with `PaymentId::debit_transfer_id`; a unit test pins the two together.
pub(crate) const DEBIT_TRANSFER_ID_SQL: &str = "('pay-' || replace(p.id, '-', ''))";

/// The payment id of a `pay-<32 hex>` transfer id, as SQL over `t.id`: the inverse of the above.
const PAYMENT_ID_OF_TRANSFER_SQL: &str =
    "(substr(t.id, 5, 8) || '-' || substr(t.id, 13, 4) || '-' \
     || substr(t.id, 17, 4) || '-' || substr(t.id, 21, 4) || '-' || substr(t.id, 25, 12))";

async fn run_checks(
    conn: &mut SqliteConnection,
    r: &mut AuditReport,
    payments_snapshot_ms: i64,
) -> Result<(), AuditError> {
    let v = &mut r.violations;

    // ---- counts
    r.accounts = count(conn, "count accounts", "SELECT COUNT(*) FROM accounts").await?;
    r.transfers = count(conn, "count transfers", "SELECT COUNT(*) FROM transfers").await?;
    r.entries = count(conn, "count entries", "SELECT COUNT(*) FROM entries").await?;
    r.payments = count(conn, "count payments", "SELECT COUNT(*) FROM p.payments").await?;
    r.outbox_pending = count(
        conn,
        "count outbox",
        "SELECT COUNT(*) FROM p.outbox WHERE delivered_at_ms IS NULL",
    )
    .await?;
    r.outbox_delivered = count(
        conn,
        "count outbox",
        "SELECT COUNT(*) FROM p.outbox WHERE delivered_at_ms IS NOT NULL",
    )
    .await?;
    r.notifications = count(
        conn,
        "count notifications",
        "SELECT COUNT(*) FROM n.notifications",
    )
    .await?;
    {
        let err = |source| AuditError::Query {
            check: "totals",
            source,
        };
        let rows = sqlx::query(
            "SELECT CAST(currency AS TEXT), SUM(balance), SUM(opening_balance) \
             FROM accounts GROUP BY currency ORDER BY currency",
        )
        .fetch_all(&mut *conn)
        .await
        .map_err(err)?;
        for row in rows {
            let currency = s(&row, 0).map_err(err)?;
            let totals = CurrencyTotals {
                balance_minor: row.try_get(1).map_err(err)?,
                opening_minor: row.try_get(2).map_err(err)?,
            };
            if totals.balance_minor != totals.opening_minor {
                v.push(format!(
                    "wallet: {currency} balances sum to {} but opening balances sum to {}: money was {}",
                    totals.balance_minor,
                    totals.opening_minor,
                    if totals.balance_minor > totals.opening_minor { "created" } else { "destroyed" }
                ));
            }
            r.totals.insert(currency, totals);
        }
        let rows = sqlx::query(
            "SELECT CAST(status AS TEXT), COUNT(*) FROM p.payments GROUP BY status ORDER BY status",
        )
        .fetch_all(&mut *conn)
        .await
        .map_err(|source| AuditError::Query {
            check: "payments by status",
            source,
        })?;
        for row in rows {
            let status = s(&row, 0).map_err(err)?;
            let n: i64 = row.try_get(1).map_err(err)?;
            let n = u64::try_from(n).unwrap_or(0);
            match status.parse::<finpay_core::PaymentStatus>() {
                Ok(st) if !st.is_terminal() => r.payments_resumable += n,
                _ => {}
            }
            r.payments_by_status.insert(status, n);
        }
    }

    // ---- wallet
    violations(
        conn,
        "negative balance",
        "SELECT id, CAST(balance AS TEXT) FROM accounts WHERE balance < 0 OR opening_balance < 0",
        v,
        |row| {
            Ok(format!(
                "account {}: negative balance {}",
                s(row, 0)?,
                s(row, 1)?
            ))
        },
    )
    .await?;
    violations(
        conn,
        "unbalanced transfer",
        "SELECT t.id, CAST(t.amount AS TEXT), t.debit_account_id, t.credit_account_id, \
                CAST(COUNT(e.transfer_id) AS TEXT), \
                CAST(COALESCE(SUM(e.direction = 'debit'), 0) AS TEXT), \
                CAST(COALESCE(SUM(e.direction = 'credit'), 0) AS TEXT) \
         FROM transfers t LEFT JOIN entries e ON e.transfer_id = t.id \
         GROUP BY t.id \
         HAVING COUNT(e.transfer_id) <> 2 \
             OR COALESCE(SUM(e.direction = 'debit' AND e.account_id = t.debit_account_id \
                             AND e.amount = t.amount), 0) <> 1 \
             OR COALESCE(SUM(e.direction = 'credit' AND e.account_id = t.credit_account_id \
                             AND e.amount = t.amount), 0) <> 1",
        v,
        |row| {
            Ok(format!(
                "transfer {}: unbalanced: {} entries ({} debit, {} credit); expected one debit of {} from {} and one credit of {} to {}",
                s(row, 0)?, s(row, 4)?, s(row, 5)?, s(row, 6)?, s(row, 1)?, s(row, 2)?, s(row, 1)?, s(row, 3)?
            ))
        },
    )
    .await?;
    violations(
        conn,
        "invalid transfer",
        "SELECT t.id, CAST(t.amount AS TEXT), t.debit_account_id, t.credit_account_id, t.currency, \
                COALESCE(a.currency, 'missing'), COALESCE(b.currency, 'missing') \
         FROM transfers t \
         LEFT JOIN accounts a ON a.id = t.debit_account_id \
         LEFT JOIN accounts b ON b.id = t.credit_account_id \
         WHERE t.amount <= 0 OR t.debit_account_id = t.credit_account_id \
            OR a.id IS NULL OR b.id IS NULL OR a.currency <> t.currency OR b.currency <> t.currency",
        v,
        |row| {
            Ok(format!(
                "transfer {}: invalid: amount {} {} from {} ({}) to {} ({})",
                s(row, 0)?, s(row, 1)?, s(row, 4)?, s(row, 2)?, s(row, 5)?, s(row, 3)?, s(row, 6)?
            ))
        },
    )
    .await?;
    violations(
        conn,
        "orphan entry",
        "SELECT e.transfer_id, e.direction, e.account_id FROM entries e \
         LEFT JOIN transfers t ON t.id = e.transfer_id WHERE t.id IS NULL",
        v,
        |row| {
            Ok(format!(
                "entry {} {} on account {}: its transfer does not exist",
                s(row, 0)?,
                s(row, 1)?,
                s(row, 2)?
            ))
        },
    )
    .await?;
    violations(
        conn,
        "account balance",
        "SELECT a.id, CAST(a.balance AS TEXT), CAST(a.opening_balance AS TEXT), \
                CAST(COALESCE(d.total, 0) AS TEXT), CAST(COALESCE(c.total, 0) AS TEXT), \
                CAST(a.opening_balance - COALESCE(d.total, 0) + COALESCE(c.total, 0) AS TEXT) \
         FROM accounts a \
         LEFT JOIN (SELECT account_id, SUM(amount) AS total FROM entries \
                    WHERE direction = 'debit' GROUP BY account_id) d ON d.account_id = a.id \
         LEFT JOIN (SELECT account_id, SUM(amount) AS total FROM entries \
                    WHERE direction = 'credit' GROUP BY account_id) c ON c.account_id = a.id \
         WHERE a.balance <> a.opening_balance - COALESCE(d.total, 0) + COALESCE(c.total, 0)",
        v,
        |row| {
            Ok(format!(
                "account {}: balance {} but opening {} - debits {} + credits {} = {}",
                s(row, 0)?,
                s(row, 1)?,
                s(row, 2)?,
                s(row, 3)?,
                s(row, 4)?,
                s(row, 5)?
            ))
        },
    )
    .await?;
    violations(
        conn,
        "entry on unknown account",
        "SELECT e.transfer_id, e.direction, e.account_id FROM entries e \
         LEFT JOIN accounts a ON a.id = e.account_id WHERE a.id IS NULL",
        v,
        |row| {
            Ok(format!(
                "entry {} {}: account {} does not exist",
                s(row, 0)?,
                s(row, 1)?,
                s(row, 2)?
            ))
        },
    )
    .await?;

    // ---- payments
    violations(
        conn,
        "payment state",
        "SELECT id, CAST(status AS TEXT) FROM p.payments WHERE status IS NULL OR status NOT IN \
           ('received', 'fraud_checked', 'debited', 'succeeded', 'declined', 'failed')",
        v,
        |row| {
            Ok(format!(
                "payment {}: status {:?} is neither terminal nor resumable",
                s(row, 0)?,
                s(row, 1)?
            ))
        },
    )
    .await?;
    violations(
        conn,
        "missing or wrong debit",
        &format!(
            "SELECT p.id, p.status, p.account_id, p.merchant_account_id, CAST(p.amount AS TEXT), p.currency, \
                    t.id, t.debit_account_id, t.credit_account_id, CAST(t.amount AS TEXT), t.currency \
             FROM p.payments p LEFT JOIN transfers t ON t.id = {DEBIT_TRANSFER_ID_SQL} \
             WHERE p.status IN ('debited', 'succeeded') \
               AND (t.id IS NULL OR t.debit_account_id <> p.account_id \
                    OR t.credit_account_id <> p.merchant_account_id \
                    OR t.amount <> p.amount OR t.currency <> p.currency)"
        ),
        v,
        |row| {
            let (id, status) = (s(row, 0)?, s(row, 1)?);
            if row.try_get::<Option<String>, _>(6)?.is_none() {
                Ok(format!("payment {id}: {status} but has no debit transfer"))
            } else {
                Ok(format!(
                    "payment {id}: {status} for {} {} from {} to {}, but its debit transfer {} moved {} {} from {} to {}",
                    s(row, 4)?, s(row, 5)?, s(row, 2)?, s(row, 3)?,
                    s(row, 6)?, s(row, 9)?, s(row, 10)?, s(row, 7)?, s(row, 8)?
                ))
            }
        },
    )
    .await?;
    violations(
        conn,
        "debit without success",
        &format!(
            "SELECT p.id, p.status, t.id FROM p.payments p \
             JOIN transfers t ON t.id = {DEBIT_TRANSFER_ID_SQL} \
             WHERE (p.status IN ('declined', 'failed') \
                    OR (p.status = 'received' AND t.created_at_ms < {payments_snapshot_ms}))"
        ),
        v,
        |row| {
            Ok(format!(
                "payment {}: {} but was debited by transfer {}",
                s(row, 0)?,
                s(row, 1)?,
                s(row, 2)?
            ))
        },
    )
    .await?;
    violations(
        conn,
        "debit without payment",
        &format!(
            "SELECT t.id, CAST(t.amount AS TEXT), t.debit_account_id FROM transfers t \
             WHERE length(t.id) = 36 AND t.id GLOB 'pay-*' \
               AND NOT (substr(t.id, 5) GLOB '*[^0-9a-f]*') \
               AND t.created_at_ms < {payments_snapshot_ms} AND NOT EXISTS \
               (SELECT 1 FROM p.payments WHERE id = {PAYMENT_ID_OF_TRANSFER_SQL})"
        ),
        v,
        |row| {
            Ok(format!(
                "transfer {}: debits {} from {} for a payment that does not exist",
                s(row, 0)?,
                s(row, 1)?,
                s(row, 2)?
            ))
        },
    )
    .await?;
    violations(
        conn,
        "outbox row state",
        "SELECT id, CAST(attempts AS TEXT), CAST(next_attempt_at_ms AS TEXT) FROM p.outbox \
         WHERE delivered_at_ms IS NULL AND (next_attempt_at_ms IS NULL OR attempts IS NULL OR attempts < 0)",
        v,
        |row| {
            Ok(format!(
                "outbox {}: neither delivered nor pending (attempts {}, next attempt {})",
                s(row, 0)?,
                s(row, 1)?,
                s(row, 2)?
            ))
        },
    )
    .await?;
    violations(
        conn,
        "outbox without success",
        "SELECT o.id, o.payment_id, COALESCE(p.status, 'missing') FROM p.outbox o \
         LEFT JOIN p.payments p ON p.id = o.payment_id \
         WHERE p.id IS NULL OR p.status <> 'succeeded'",
        v,
        |row| {
            Ok(format!(
                "outbox {}: its payment {} is {}, not succeeded",
                s(row, 0)?,
                s(row, 1)?,
                s(row, 2)?
            ))
        },
    )
    .await?;
    violations(
        conn,
        "succeeded without one outbox row",
        "SELECT p.id, CAST(COUNT(o.id) AS TEXT) FROM p.payments p \
         LEFT JOIN p.outbox o ON o.payment_id = p.id \
         WHERE p.status = 'succeeded' GROUP BY p.id HAVING COUNT(o.id) <> 1",
        v,
        |row| {
            Ok(format!(
                "payment {}: succeeded with {} outbox rows, expected exactly 1",
                s(row, 0)?,
                s(row, 1)?
            ))
        },
    )
    .await?;

    // ---- delivery
    let d = &mut r.delivery;
    d.outbox_delivered = r.outbox_delivered;
    d.outbox_pending = r.outbox_pending;
    d.notifications = r.notifications;
    d.delivered_in_inbox = count(
        conn,
        "delivered in inbox",
        "SELECT COUNT(*) FROM p.outbox o JOIN n.notifications x ON x.id = o.id \
         WHERE o.delivered_at_ms IS NOT NULL",
    )
    .await?;
    d.pending_already_in_inbox = count(
        conn,
        "pending in inbox",
        "SELECT COUNT(*) FROM p.outbox o JOIN n.notifications x ON x.id = o.id \
         WHERE o.delivered_at_ms IS NULL",
    )
    .await?;
    violations(
        conn,
        "delivered but not in inbox",
        "SELECT o.id, o.payment_id FROM p.outbox o LEFT JOIN n.notifications x ON x.id = o.id \
         WHERE o.delivered_at_ms IS NOT NULL AND x.id IS NULL",
        &mut d.violations,
        |row| {
            Ok(format!(
                "outbox {} (payment {}): marked delivered but absent from the inbox",
                s(row, 0)?,
                s(row, 1)?
            ))
        },
    )
    .await?;
    violations(
        conn,
        "inbox differs from outbox",
        "SELECT o.id FROM p.outbox o JOIN n.notifications x ON x.id = o.id \
         WHERE x.payment_id <> o.payment_id OR x.account_id <> o.account_id OR x.message <> o.message",
        &mut d.violations,
        |row| {
            Ok(format!(
                "notification {}: the inbox holds a different payment, account or message than the outbox",
                s(row, 0)?
            ))
        },
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn debit_transfer_id_sql_agrees_with_the_domain_type() {
        let mut conn = SqliteConnectOptions::new()
            .filename(":memory:")
            .connect()
            .await
            .expect("in-memory database");
        for _ in 0..20 {
            let id = finpay_core::PaymentId::new_v7();
            let sql = format!("SELECT {DEBIT_TRANSFER_ID_SQL} FROM (SELECT ?1 AS id) AS p");
            let derived: String = sqlx::query_scalar(&sql)
                .bind(id.to_string())
                .fetch_one(&mut conn)
                .await
                .expect("query runs");
            assert_eq!(derived, id.debit_transfer_id().as_str());
            let sql = format!("SELECT {PAYMENT_ID_OF_TRANSFER_SQL} FROM (SELECT ?1 AS id) AS t");
            let back: String = sqlx::query_scalar(&sql)
                .bind(derived)
                .fetch_one(&mut conn)
                .await
                .expect("query runs");
            assert_eq!(back, id.to_string());
        }
    }

    #[tokio::test]
    async fn a_missing_file_is_a_clear_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = audit(dir.path()).await.expect_err("nothing to audit");
        assert!(matches!(err, AuditError::MissingFile { .. }));
        assert!(err.to_string().contains("wallet.db"), "{err}");
    }
}
