//! [`SqlitePayments`]: payments with their idempotency keys, and the notification outbox.

use std::path::Path;
use std::sync::LazyLock;

use async_trait::async_trait;
use finpay_core::{IdempotencyKey, NotificationId, PaymentId, PaymentStatus};
use futures::future::BoxFuture;
use sqlx::sqlite::{SqliteConnection, SqlitePool, SqliteRow};

use super::writer::{Command, OpConn, Writer};
use super::{open_db, read_retrying, OpenError, SqliteOptions};
use crate::error::BoxError;
use crate::payments::{
    Begin, NewPayment, OutboxMessage, Payment, PaymentStore, PaymentStoreError, StepNote,
};
use crate::rows::{self, corrupt};

pub(crate) const SCHEMA_VERSION: i64 = 1;

/// `status` is one of the state machine's names (CHECK); the partial indexes keep the resumer's and
/// the dispatcher's scans proportional to the unfinished work, not to history. An outbox row belongs
/// to exactly one payment (UNIQUE), which is the "exactly one notification per success" invariant.
pub(crate) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS payments (
    id                  TEXT PRIMARY KEY,
    idempotency_key     TEXT NOT NULL UNIQUE,
    fingerprint         TEXT NOT NULL,
    account_id          TEXT NOT NULL,
    merchant_account_id TEXT NOT NULL,
    amount              INTEGER NOT NULL CHECK (amount > 0),
    currency            TEXT NOT NULL,
    description         TEXT,
    status              TEXT NOT NULL CHECK (status IN
                          ('received', 'fraud_checked', 'debited', 'succeeded', 'declined', 'failed')),
    reason              TEXT,
    needs_review        INTEGER NOT NULL DEFAULT 0 CHECK (needs_review IN (0, 1)),
    created_at_ms       INTEGER NOT NULL,
    updated_at_ms       INTEGER NOT NULL
) STRICT;
CREATE INDEX IF NOT EXISTS payments_unfinished ON payments (created_at_ms, id)
    WHERE status IN ('received', 'fraud_checked', 'debited');
CREATE TABLE IF NOT EXISTS outbox (
    id                 TEXT PRIMARY KEY,
    payment_id         TEXT NOT NULL UNIQUE REFERENCES payments (id),
    account_id         TEXT NOT NULL,
    message            TEXT NOT NULL,
    attempts           INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt_at_ms INTEGER NOT NULL,
    delivered_at_ms    INTEGER,
    last_error         TEXT,
    created_at_ms      INTEGER NOT NULL
) STRICT;
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (next_attempt_at_ms, id)
    WHERE delivered_at_ms IS NULL;
";

const PAYMENT_COLUMNS: &str = "id, idempotency_key, fingerprint, account_id, merchant_account_id, \
     amount, currency, description, status, reason, needs_review, created_at_ms, updated_at_ms";

const OUTBOX_COLUMNS: &str =
    "id, payment_id, account_id, message, attempts, next_attempt_at_ms, delivered_at_ms, last_error";

/// The resumer's scan, over the partial index `payments_unfinished`.
static UNFINISHED_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {PAYMENT_COLUMNS} FROM payments WHERE status IN ({}) \
         ORDER BY created_at_ms, id LIMIT ?1",
        PaymentStatus::sql_list(PaymentStatus::non_terminal())
    )
});

/// Payments and the outbox in one SQLite file.
#[derive(Clone)]
pub struct SqlitePayments {
    writer: Writer,
    readers: SqlitePool,
}

impl std::fmt::Debug for SqlitePayments {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlitePayments").finish_non_exhaustive()
    }
}

impl SqlitePayments {
    /// Opens the payments store at `path`, creating the file and its schema when absent.
    /// Must be called inside a tokio runtime: it starts the store's writer task.
    pub async fn open(path: &Path, opts: &SqliteOptions) -> Result<Self, OpenError> {
        let opened = open_db(path, opts, SCHEMA, SCHEMA_VERSION).await?;
        Ok(Self {
            writer: Writer::spawn("payments", opened.writer),
            readers: opened.readers,
        })
    }
}

fn storage(e: impl Into<BoxError>) -> PaymentStoreError {
    PaymentStoreError::Storage(e.into())
}

fn payment_from_row(row: &SqliteRow) -> Result<Payment, PaymentStoreError> {
    rows::payment(row).map_err(storage)
}

fn outbox_from_row(row: &SqliteRow) -> Result<OutboxMessage, PaymentStoreError> {
    rows::outbox_message(row).map_err(storage)
}

async fn payment_by_key(
    conn: &mut SqliteConnection,
    key: &IdempotencyKey,
) -> Result<Option<Payment>, PaymentStoreError> {
    sqlx::query(&format!(
        "SELECT {PAYMENT_COLUMNS} FROM payments WHERE idempotency_key = ?1"
    ))
    .bind(key.as_str())
    .fetch_optional(&mut *conn)
    .await
    .map_err(storage)?
    .as_ref()
    .map(payment_from_row)
    .transpose()
}

async fn status_of(
    conn: &mut SqliteConnection,
    id: PaymentId,
) -> Result<Option<PaymentStatus>, PaymentStoreError> {
    let status: Option<String> = sqlx::query_scalar("SELECT status FROM payments WHERE id = ?1")
        .bind(id.to_string())
        .fetch_optional(&mut *conn)
        .await
        .map_err(storage)?;
    status
        .map(|s| {
            s.parse()
                .map_err(|e: String| storage(corrupt("status", id, e)))
        })
        .transpose()
}

struct BeginPayment(NewPayment);

impl Command for BeginPayment {
    type Output = Begin;
    type Error = PaymentStoreError;
    fn run<'a>(
        &'a self,
        op: &'a mut OpConn<'_>,
    ) -> BoxFuture<'a, Result<Begin, PaymentStoreError>> {
        Box::pin(async move {
            let new = &self.0;
            let now = crate::now_ms();
            // One round trip in the common case: insert unless the key is taken.
            let sql = format!(
                "{}INSERT INTO payments ({PAYMENT_COLUMNS}) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'received', NULL, 0, ?9, ?9) \
                 ON CONFLICT (idempotency_key) DO NOTHING RETURNING {PAYMENT_COLUMNS}",
                op.write_prefix()
            );
            let rows = sqlx::query(&sql)
                .bind(new.id.to_string())
                .bind(new.idempotency_key.as_str())
                .bind(new.fingerprint.as_str())
                .bind(new.account_id.as_str())
                .bind(new.merchant_account_id.as_str())
                .bind(new.amount.as_i64())
                .bind(new.currency.code())
                .bind(new.description.as_deref())
                .bind(now)
                .fetch_all(op.conn())
                .await
                .map_err(storage)?;
            if let Some(row) = rows.first() {
                return Ok(Begin::Created(payment_from_row(row)?));
            }
            match payment_by_key(op.conn(), &new.idempotency_key).await? {
                Some(existing) => Ok(Begin::Existing(existing)),
                None => Err(storage(corrupt(
                    "payment",
                    &new.idempotency_key,
                    "insert skipped but no payment holds the key",
                ))),
            }
        })
    }
}

/// The compare-and-set: moves `id` from `from` to `to` only if it is still in `from`.
async fn compare_and_set(
    op: &mut OpConn<'_>,
    id: PaymentId,
    from: PaymentStatus,
    to: PaymentStatus,
    note: &StepNote,
) -> Result<Payment, PaymentStoreError> {
    from.move_to(to)?;
    let sql = format!(
        "{}UPDATE payments SET status = ?3, reason = COALESCE(?4, reason), \
             needs_review = (needs_review OR ?5), updated_at_ms = ?6 \
         WHERE id = ?1 AND status = ?2 RETURNING {PAYMENT_COLUMNS}",
        op.write_prefix()
    );
    let rows = sqlx::query(&sql)
        .bind(id.to_string())
        .bind(from.as_str())
        .bind(to.as_str())
        .bind(note.reason.as_deref())
        .bind(note.needs_review)
        .bind(crate::now_ms())
        .fetch_all(op.conn())
        .await
        .map_err(storage)?;
    match rows.first() {
        Some(row) => payment_from_row(row),
        None => match status_of(op.conn(), id).await? {
            None => Err(PaymentStoreError::NotFound(id)),
            Some(actual) => Err(PaymentStoreError::StaleState {
                id,
                expected: from,
                actual,
            }),
        },
    }
}

struct Advance {
    id: PaymentId,
    from: PaymentStatus,
    to: PaymentStatus,
    note: StepNote,
}

impl Command for Advance {
    type Output = Payment;
    type Error = PaymentStoreError;
    fn run<'a>(
        &'a self,
        op: &'a mut OpConn<'_>,
    ) -> BoxFuture<'a, Result<Payment, PaymentStoreError>> {
        Box::pin(compare_and_set(op, self.id, self.from, self.to, &self.note))
    }
}

/// The outbox row handed to `succeed` does not belong to the payment.
#[derive(Debug, thiserror::Error)]
#[error("outbox message {notification} names payment {named}, not {payment}")]
struct ForeignOutboxRow {
    notification: NotificationId,
    named: PaymentId,
    payment: PaymentId,
}

struct Succeed {
    id: PaymentId,
    /// `debited`, or `fraud_checked` (through `debited`; checked before the command is queued).
    from: PaymentStatus,
    message: OutboxMessage,
}

impl Command for Succeed {
    type Output = Payment;
    type Error = PaymentStoreError;
    fn run<'a>(
        &'a self,
        op: &'a mut OpConn<'_>,
    ) -> BoxFuture<'a, Result<Payment, PaymentStoreError>> {
        Box::pin(async move {
            let m = &self.message;
            if m.payment_id != self.id {
                return Err(storage(ForeignOutboxRow {
                    notification: m.id.clone(),
                    named: m.payment_id,
                    payment: self.id,
                }));
            }
            // One multi-statement write: the outbox row is inserted only while the payment is
            // still in `from`, then the same condition moves it to `succeeded`. Both or neither;
            // and if the insert fails the command's savepoint undoes the lot.
            // Plain `?` placeholders in order of appearance (see the wallet's transfer for why).
            let sql = format!(
                "{}INSERT INTO outbox ({OUTBOX_COLUMNS}, created_at_ms) \
                     SELECT ?, ?, ?, ?, ?, ?, ?, ?, ? \
                     WHERE EXISTS (SELECT 1 FROM payments WHERE id = ? AND status = ?); \
                 UPDATE payments SET status = 'succeeded', updated_at_ms = ? \
                     WHERE id = ? AND status = ? RETURNING {PAYMENT_COLUMNS}",
                op.write_prefix()
            );
            let id = self.id.to_string();
            let from = self.from.as_str();
            let now = crate::now_ms();
            let rows = sqlx::query(&sql)
                .bind(m.id.as_str())
                .bind(&id)
                .bind(m.account_id.as_str())
                .bind(&m.message)
                .bind(i64::from(m.attempts))
                .bind(m.next_attempt_at_ms)
                .bind(m.delivered_at_ms)
                .bind(m.last_error.as_deref())
                .bind(now)
                .bind(&id)
                .bind(from)
                .bind(now)
                .bind(&id)
                .bind(from)
                .fetch_all(op.conn())
                .await
                .map_err(storage)?;
            match rows.first() {
                Some(row) => payment_from_row(row),
                None => match status_of(op.conn(), self.id).await? {
                    None => Err(PaymentStoreError::NotFound(self.id)),
                    Some(actual) => Err(PaymentStoreError::StaleState {
                        id: self.id,
                        expected: self.from,
                        actual,
                    }),
                },
            }
        })
    }
}

#[derive(Debug, thiserror::Error)]
#[error("outbox message {0} does not exist")]
struct UnknownOutboxRow(NotificationId);

/// `outbox_delivered_many` named rows that do not exist.
#[derive(Debug, thiserror::Error)]
#[error("{missing} of {asked} outbox rows marked delivered do not exist")]
struct UnknownOutboxRows {
    missing: u64,
    asked: u64,
}

/// Most rows one `DeliveredMany` statement names; SQLite allows 32766 bound parameters.
const DELIVERED_MANY_MAX: usize = 500;

/// Many rows marked delivered in one statement: one command instead of one per row.
struct DeliveredMany {
    ids: Vec<NotificationId>,
    now_ms: i64,
}

impl Command for DeliveredMany {
    type Output = ();
    type Error = PaymentStoreError;
    fn run<'a>(&'a self, op: &'a mut OpConn<'_>) -> BoxFuture<'a, Result<(), PaymentStoreError>> {
        Box::pin(async move {
            debug_assert!(!self.ids.is_empty() && self.ids.len() <= DELIVERED_MANY_MAX);
            let marks = vec!["?"; self.ids.len()].join(", ");
            // Delivered stays delivered: a late duplicate report keeps the first time.
            let sql = format!(
                "{}UPDATE outbox SET delivered_at_ms = COALESCE(delivered_at_ms, ?) \
                 WHERE id IN ({marks}) RETURNING id",
                op.write_prefix()
            );
            let mut q = sqlx::query(&sql).bind(self.now_ms);
            for id in &self.ids {
                q = q.bind(id.as_str());
            }
            // Counted from RETURNING, not `rows_affected`: sqlx adds up the change counts of every
            // statement of a multi-statement query, and the savepoint prefix repeats the last one.
            let updated = q.fetch_all(op.conn()).await.map_err(storage)?.len() as u64;
            // Every named row is updated (COALESCE writes even a delivered one), so a shortfall
            // means unknown ids: refused, and the savepoint undoes the rest.
            let asked = self.ids.len() as u64;
            if updated != asked {
                return Err(storage(UnknownOutboxRows {
                    missing: asked.saturating_sub(updated),
                    asked,
                }));
            }
            Ok(())
        })
    }
}

enum OutboxUpdate {
    Delivered {
        id: NotificationId,
        now_ms: i64,
    },
    RetryLater {
        id: NotificationId,
        attempts: u32,
        next_attempt_at_ms: i64,
        last_error: String,
    },
}

impl Command for OutboxUpdate {
    type Output = ();
    type Error = PaymentStoreError;
    fn run<'a>(&'a self, op: &'a mut OpConn<'_>) -> BoxFuture<'a, Result<(), PaymentStoreError>> {
        Box::pin(async move {
            let prefix = op.write_prefix();
            let (id, done) = match self {
                // Delivered stays delivered: a late duplicate report keeps the first time.
                OutboxUpdate::Delivered { id, now_ms } => (
                    id,
                    sqlx::query(&format!(
                        "{prefix}UPDATE outbox SET delivered_at_ms = COALESCE(delivered_at_ms, ?2) \
                         WHERE id = ?1 RETURNING id"
                    ))
                    .bind(id.as_str())
                    .bind(now_ms)
                    .fetch_all(op.conn())
                    .await,
                ),
                // A row delivered meanwhile (by another dispatcher) is left alone.
                OutboxUpdate::RetryLater {
                    id,
                    attempts,
                    next_attempt_at_ms,
                    last_error,
                } => (
                    id,
                    sqlx::query(&format!(
                        "{prefix}UPDATE outbox SET attempts = ?2, next_attempt_at_ms = ?3, \
                         last_error = ?4 WHERE id = ?1 AND delivered_at_ms IS NULL RETURNING id"
                    ))
                    .bind(id.as_str())
                    .bind(i64::from(*attempts))
                    .bind(next_attempt_at_ms)
                    .bind(last_error.as_str())
                    .fetch_all(op.conn())
                    .await,
                ),
            };
            // Counted from RETURNING: `rows_affected` adds up every statement of the savepoint prefix.
            if done.map_err(storage)?.is_empty() {
                let exists: Option<i64> = sqlx::query_scalar("SELECT 1 FROM outbox WHERE id = ?1")
                    .bind(id.as_str())
                    .fetch_optional(op.conn())
                    .await
                    .map_err(storage)?;
                if exists.is_none() {
                    return Err(storage(UnknownOutboxRow(id.clone())));
                }
            }
            Ok(())
        })
    }
}

struct Ping;

impl Command for Ping {
    type Output = ();
    type Error = PaymentStoreError;
    fn run<'a>(&'a self, _op: &'a mut OpConn<'_>) -> BoxFuture<'a, Result<(), PaymentStoreError>> {
        Box::pin(async { Ok(()) })
    }
}

#[async_trait]
impl PaymentStore for SqlitePayments {
    async fn begin(&self, new: NewPayment) -> Result<Begin, PaymentStoreError> {
        self.writer.execute(BeginPayment(new)).await
    }

    async fn get(&self, id: PaymentId) -> Result<Option<Payment>, PaymentStoreError> {
        let sql = format!("SELECT {PAYMENT_COLUMNS} FROM payments WHERE id = ?1");
        let id = id.to_string();
        let row = read_retrying(|| sqlx::query(&sql).bind(&id).fetch_optional(&self.readers))
            .await
            .map_err(storage)?;
        row.as_ref().map(payment_from_row).transpose()
    }

    async fn advance(
        &self,
        id: PaymentId,
        from: PaymentStatus,
        to: PaymentStatus,
        note: StepNote,
    ) -> Result<Payment, PaymentStoreError> {
        crate::payments::check_advance(from, to)?;
        self.writer.execute(Advance { id, from, to, note }).await
    }

    async fn succeed_from(
        &self,
        id: PaymentId,
        from: PaymentStatus,
        notification: OutboxMessage,
    ) -> Result<Payment, PaymentStoreError> {
        crate::payments::check_succeed_from(from)?;
        self.writer
            .execute(Succeed {
                id,
                from,
                message: notification,
            })
            .await
    }

    async fn unfinished(&self, limit: u32) -> Result<Vec<Payment>, PaymentStoreError> {
        let rows = read_retrying(|| {
            sqlx::query(UNFINISHED_SQL.as_str())
                .bind(i64::from(limit))
                .fetch_all(&self.readers)
        })
        .await
        .map_err(storage)?;
        rows.iter().map(payment_from_row).collect()
    }

    async fn outbox_due(
        &self,
        now_ms: i64,
        limit: u32,
    ) -> Result<Vec<OutboxMessage>, PaymentStoreError> {
        let sql = format!(
            "SELECT {OUTBOX_COLUMNS} FROM outbox \
             WHERE delivered_at_ms IS NULL AND next_attempt_at_ms <= ?1 \
             ORDER BY next_attempt_at_ms, id LIMIT ?2"
        );
        let rows = read_retrying(|| {
            sqlx::query(&sql)
                .bind(now_ms)
                .bind(i64::from(limit))
                .fetch_all(&self.readers)
        })
        .await
        .map_err(storage)?;
        rows.iter().map(outbox_from_row).collect()
    }

    async fn outbox_delivered(
        &self,
        id: &NotificationId,
        now_ms: i64,
    ) -> Result<(), PaymentStoreError> {
        self.writer
            .execute(OutboxUpdate::Delivered {
                id: id.clone(),
                now_ms,
            })
            .await
    }

    async fn outbox_delivered_many(
        &self,
        ids: &[NotificationId],
        now_ms: i64,
    ) -> Result<(), PaymentStoreError> {
        let mut ids = ids.to_vec();
        ids.sort_unstable_by(|a, b| a.as_str().cmp(b.as_str()));
        ids.dedup();
        for chunk in ids.chunks(DELIVERED_MANY_MAX) {
            self.writer
                .execute(DeliveredMany {
                    ids: chunk.to_vec(),
                    now_ms,
                })
                .await?;
        }
        Ok(())
    }

    async fn outbox_retry_later(
        &self,
        id: &NotificationId,
        attempts: u32,
        next_attempt_at_ms: i64,
        last_error: &str,
    ) -> Result<(), PaymentStoreError> {
        self.writer
            .execute(OutboxUpdate::RetryLater {
                id: id.clone(),
                attempts,
                next_attempt_at_ms,
                last_error: last_error.to_owned(),
            })
            .await
    }

    async fn outbox_pending(&self) -> Result<u64, PaymentStoreError> {
        let n: i64 = read_retrying(|| {
            sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE delivered_at_ms IS NULL")
                .fetch_one(&self.readers)
        })
        .await
        .map_err(storage)?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn ping(&self) -> Result<(), PaymentStoreError> {
        read_retrying(|| sqlx::query("SELECT 1").execute(&self.readers))
            .await
            .map_err(storage)?;
        self.writer.execute(Ping).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schema_lists_the_statuses_of_the_state_machine() {
        crate::payments::assert_schema_status_lists(SCHEMA);
    }

    #[test]
    fn the_resumer_scans_exactly_the_non_terminal_states() {
        assert!(UNFINISHED_SQL
            .contains("WHERE status IN ('received', 'fraud_checked', 'debited') ORDER BY"));
    }
}
