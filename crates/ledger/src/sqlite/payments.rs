//! [`SqlitePayments`]: payments with their idempotency keys, and the notification outbox.

use std::path::Path;
use std::sync::LazyLock;

use async_trait::async_trait;
use finpay_core::{IdempotencyKey, NotificationId, PaymentId, PaymentStatus};
use futures::future::BoxFuture;
use sqlx::migrate::Migrator;
use sqlx::sqlite::{SqliteConnection, SqlitePool, SqliteRow};
use sqlx::Row;

use super::outbox::{claimable, ClaimOutbox, DeliveredMany, RetryLater, DELIVERED_MANY_MAX};
use super::writer::{Command, OpConn, Writer};
use super::{open_db, read_retrying, OpenError, SqliteOptions};
use crate::error::BoxError;
use crate::payments::{
    fenced_miss, ttl_ms, Begin, Lease, LeaseOwner, NewPayment, OutboxMessage, Payment,
    PaymentStore, PaymentStoreError, StepNote,
};
use crate::rows::{self, corrupt};

/// The payments file's migrations, `migrations/sqlite/payments/`: the tables of 2001 (`status` is
/// one of the state machine's names; the partial indexes keep the resumer's and the dispatcher's
/// scans proportional to the unfinished work; an outbox row belongs to exactly one payment, which
/// is the "exactly one notification per success" invariant) and the lease columns of 2002.
pub(crate) static MIGRATOR: Migrator = sqlx::migrate!("migrations/sqlite/payments");

/// The database clock, in milliseconds since the epoch: every lease and claim is judged by it.
pub(crate) const NOW_MS: &str = "CAST(unixepoch('subsec') * 1000 AS INTEGER)";

const PAYMENT_COLUMNS: &str = "id, idempotency_key, fingerprint, account_id, merchant_account_id, \
     amount, currency, description, status, reason, needs_review, created_at_ms, updated_at_ms";

pub(super) const OUTBOX_COLUMNS: &str =
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
        let opened = open_db(path, opts, &MIGRATOR).await?;
        Ok(Self {
            writer: Writer::spawn("payments", opened.writer),
            readers: opened.readers,
        })
    }
}

pub(super) fn storage(e: impl Into<BoxError>) -> PaymentStoreError {
    PaymentStoreError::Storage(e.into())
}

fn payment_from_row(row: &SqliteRow) -> Result<Payment, PaymentStoreError> {
    rows::payment(row).map_err(storage)
}

pub(super) fn outbox_from_row(row: &SqliteRow) -> Result<OutboxMessage, PaymentStoreError> {
    rows::outbox_message(row).map_err(storage)
}

/// The payment of a row that also carries `lease_token`, with the lease `owner` now holds on it.
fn leased_from_row(
    row: &SqliteRow,
    owner: &LeaseOwner,
    ttl: std::time::Duration,
) -> Result<(Payment, Lease), PaymentStoreError> {
    let token: i64 = row.try_get("lease_token").map_err(storage)?;
    let lease = Lease {
        owner: owner.clone(),
        token,
        ttl,
    };
    Ok((payment_from_row(row)?, lease))
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

/// The status and lease token of a payment, to say why a fenced write changed nothing.
async fn status_and_token(
    conn: &mut SqliteConnection,
    id: PaymentId,
) -> Result<Option<(PaymentStatus, i64)>, PaymentStoreError> {
    let row: Option<(String, i64)> =
        sqlx::query_as("SELECT status, lease_token FROM payments WHERE id = ?1")
            .bind(id.to_string())
            .fetch_optional(&mut *conn)
            .await
            .map_err(storage)?;
    row.map(|(s, token)| {
        s.parse()
            .map(|status| (status, token))
            .map_err(|e: String| storage(corrupt("status", id, e)))
    })
    .transpose()
}

/// The answer to a fenced write that matched no row. The writer runs one command at a time, so
/// the row cannot have changed between the write and this read.
async fn miss(
    conn: &mut SqliteConnection,
    id: PaymentId,
    expected: PaymentStatus,
    token: i64,
) -> PaymentStoreError {
    match status_and_token(conn, id).await {
        Ok(now) => fenced_miss(id, expected, token, now).unwrap_or_else(|| {
            storage(corrupt(
                "payment",
                id,
                "a fenced write matched no row, yet the row matches it",
            ))
        }),
        Err(e) => e,
    }
}

struct BeginPayment {
    new: NewPayment,
    owner: LeaseOwner,
    ttl: std::time::Duration,
}

/// The takeover of an expired lease on an existing payment: only a non-terminal one, of the same
/// body (fingerprint), whose lease has run out by the database's clock.
static TAKE_OVER_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE payments SET lease_owner = ?2, lease_token = lease_token + 1, \
             lease_expires_at_ms = {NOW_MS} + ?3 \
         WHERE idempotency_key = ?1 AND fingerprint = ?4 AND status IN ({}) \
           AND lease_expires_at_ms <= {NOW_MS} \
         RETURNING {PAYMENT_COLUMNS}, lease_token",
        PaymentStatus::sql_list(PaymentStatus::non_terminal())
    )
});

impl Command for BeginPayment {
    type Output = Begin;
    type Error = PaymentStoreError;
    fn run<'a>(
        &'a self,
        op: &'a mut OpConn<'_>,
    ) -> BoxFuture<'a, Result<Begin, PaymentStoreError>> {
        Box::pin(async move {
            let new = &self.new;
            let now = crate::now_ms();
            let ttl_ms = ttl_ms(self.ttl);
            // One round trip in the common case: insert, leased, unless the key is taken.
            let sql = format!(
                "{}INSERT INTO payments ({PAYMENT_COLUMNS}, lease_owner, lease_token, lease_expires_at_ms) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'received', NULL, 0, ?9, ?9, ?10, 1, {NOW_MS} + ?11) \
                 ON CONFLICT (idempotency_key) DO NOTHING RETURNING {PAYMENT_COLUMNS}, lease_token",
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
                .bind(self.owner.as_str())
                .bind(ttl_ms)
                .fetch_all(op.conn())
                .await
                .map_err(storage)?;
            if let Some(row) = rows.first() {
                let (payment, lease) = leased_from_row(row, &self.owner, self.ttl)?;
                return Ok(Begin::Created(payment, lease));
            }
            let took = sqlx::query(TAKE_OVER_SQL.as_str())
                .bind(new.idempotency_key.as_str())
                .bind(self.owner.as_str())
                .bind(ttl_ms)
                .bind(new.fingerprint.as_str())
                .fetch_optional(op.conn())
                .await
                .map_err(storage)?;
            if let Some(row) = took {
                let (payment, lease) = leased_from_row(&row, &self.owner, self.ttl)?;
                return Ok(Begin::Existing {
                    payment,
                    lease: Some(lease),
                });
            }
            match payment_by_key(op.conn(), &new.idempotency_key).await? {
                Some(payment) => Ok(Begin::Existing {
                    payment,
                    lease: None,
                }),
                None => Err(storage(corrupt(
                    "payment",
                    &new.idempotency_key,
                    "insert skipped but no payment holds the key",
                ))),
            }
        })
    }
}

struct Advance {
    id: PaymentId,
    from: PaymentStatus,
    to: PaymentStatus,
    note: StepNote,
    lease: Lease,
}

impl Command for Advance {
    type Output = Payment;
    type Error = PaymentStoreError;
    fn run<'a>(
        &'a self,
        op: &'a mut OpConn<'_>,
    ) -> BoxFuture<'a, Result<Payment, PaymentStoreError>> {
        Box::pin(async move {
            let (id, from, to) = (self.id, self.from, self.to);
            from.move_to(to)?;
            // The compare-and-set, fenced by the lease token; it renews the lease, or clears it
            // when the payment comes to rest.
            let sql = format!(
                "{}UPDATE payments SET status = ?3, reason = COALESCE(?4, reason), \
                     needs_review = (needs_review OR ?5), updated_at_ms = ?6, \
                     lease_owner = CASE WHEN ?8 THEN NULL ELSE lease_owner END, \
                     lease_expires_at_ms = CASE WHEN ?8 THEN 0 ELSE {NOW_MS} + ?9 END \
                 WHERE id = ?1 AND status = ?2 AND lease_token = ?7 RETURNING {PAYMENT_COLUMNS}",
                op.write_prefix()
            );
            let rows = sqlx::query(&sql)
                .bind(id.to_string())
                .bind(from.as_str())
                .bind(to.as_str())
                .bind(self.note.reason.as_deref())
                .bind(self.note.needs_review)
                .bind(crate::now_ms())
                .bind(self.lease.token)
                .bind(to.is_terminal())
                .bind(self.lease.ttl_ms())
                .fetch_all(op.conn())
                .await
                .map_err(storage)?;
            match rows.first() {
                Some(row) => payment_from_row(row),
                None => Err(miss(op.conn(), id, from, self.lease.token).await),
            }
        })
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
    lease: Lease,
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
            // still in `from` under this lease, then the same condition moves it to `succeeded`
            // and clears the lease. Both or neither; and if the insert fails the command's
            // savepoint undoes the lot.
            // Plain `?` placeholders in order of appearance (see the wallet's transfer for why).
            let sql = format!(
                "{}INSERT INTO outbox ({OUTBOX_COLUMNS}, created_at_ms) \
                     SELECT ?, ?, ?, ?, ?, MIN(?, {NOW_MS}), ?, ?, ? \
                     WHERE EXISTS (SELECT 1 FROM payments WHERE id = ? AND status = ? AND lease_token = ?); \
                 UPDATE payments SET status = 'succeeded', updated_at_ms = ?, \
                     lease_owner = NULL, lease_expires_at_ms = 0 \
                     WHERE id = ? AND status = ? AND lease_token = ? RETURNING {PAYMENT_COLUMNS}",
                op.write_prefix()
            );
            let id = self.id.to_string();
            let from = self.from.as_str();
            let token = self.lease.token;
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
                .bind(token)
                .bind(now)
                .bind(&id)
                .bind(from)
                .bind(token)
                .fetch_all(op.conn())
                .await
                .map_err(storage)?;
            match rows.first() {
                Some(row) => payment_from_row(row),
                None => Err(miss(op.conn(), self.id, self.from, token).await),
            }
        })
    }
}

/// Ends a lease now, fenced.
struct Release {
    id: PaymentId,
    token: i64,
}

impl Command for Release {
    type Output = ();
    type Error = PaymentStoreError;
    fn run<'a>(&'a self, op: &'a mut OpConn<'_>) -> BoxFuture<'a, Result<(), PaymentStoreError>> {
        Box::pin(async move {
            let sql = format!(
                "{}UPDATE payments SET lease_owner = NULL, lease_expires_at_ms = 0 \
                 WHERE id = ?1 AND lease_token = ?2 RETURNING id",
                op.write_prefix()
            );
            let released = sqlx::query(&sql)
                .bind(self.id.to_string())
                .bind(self.token)
                .fetch_all(op.conn())
                .await
                .map_err(storage)?;
            if !released.is_empty() {
                return Ok(());
            }
            Err(match status_and_token(op.conn(), self.id).await? {
                None => PaymentStoreError::NotFound(self.id),
                Some(_) => PaymentStoreError::LeaseLost {
                    what: "payment",
                    id: self.id.to_string(),
                    token: self.token,
                },
            })
        })
    }
}

/// The resumer's take: every non-terminal payment whose lease ran out, oldest first, over the
/// partial index `payments_unfinished`.
static TAKE_EXPIRED_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE payments SET lease_owner = ?1, lease_token = lease_token + 1, \
             lease_expires_at_ms = {NOW_MS} + ?2 \
         WHERE id IN (SELECT id FROM payments WHERE status IN ({}) \
                      AND lease_expires_at_ms <= {NOW_MS} \
                      ORDER BY created_at_ms, id LIMIT ?3) \
         RETURNING {PAYMENT_COLUMNS}, lease_token",
        PaymentStatus::sql_list(PaymentStatus::non_terminal())
    )
});

struct TakeExpired {
    owner: LeaseOwner,
    ttl: std::time::Duration,
    limit: u32,
}

impl Command for TakeExpired {
    type Output = Vec<(Payment, Lease)>;
    type Error = PaymentStoreError;
    fn run<'a>(
        &'a self,
        op: &'a mut OpConn<'_>,
    ) -> BoxFuture<'a, Result<Self::Output, PaymentStoreError>> {
        Box::pin(async move {
            let sql = format!("{}{}", op.write_prefix(), TAKE_EXPIRED_SQL.as_str());
            let rows = sqlx::query(&sql)
                .bind(self.owner.as_str())
                .bind(ttl_ms(self.ttl))
                .bind(i64::from(self.limit))
                .fetch_all(op.conn())
                .await
                .map_err(storage)?;
            let mut taken = rows
                .iter()
                .map(|r| leased_from_row(r, &self.owner, self.ttl))
                .collect::<Result<Vec<_>, _>>()?;
            // RETURNING comes in no particular order.
            taken.sort_by_key(|(a, _)| (a.created_at_ms, a.id));
            Ok(taken)
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
    async fn begin(
        &self,
        new: NewPayment,
        owner: &LeaseOwner,
        ttl: std::time::Duration,
    ) -> Result<Begin, PaymentStoreError> {
        self.writer
            .execute(BeginPayment {
                new,
                owner: owner.clone(),
                ttl,
            })
            .await
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
        lease: &Lease,
    ) -> Result<Payment, PaymentStoreError> {
        crate::payments::check_advance(from, to)?;
        self.writer
            .execute(Advance {
                id,
                from,
                to,
                note,
                lease: lease.clone(),
            })
            .await
    }

    async fn succeed_from(
        &self,
        id: PaymentId,
        from: PaymentStatus,
        notification: OutboxMessage,
        lease: &Lease,
    ) -> Result<Payment, PaymentStoreError> {
        crate::payments::check_succeed_from(from)?;
        self.writer
            .execute(Succeed {
                id,
                from,
                message: notification,
                lease: lease.clone(),
            })
            .await
    }

    async fn release(&self, id: PaymentId, lease: &Lease) -> Result<(), PaymentStoreError> {
        self.writer
            .execute(Release {
                id,
                token: lease.token,
            })
            .await
    }

    async fn take_expired(
        &self,
        owner: &LeaseOwner,
        ttl: std::time::Duration,
        limit: u32,
    ) -> Result<Vec<(Payment, Lease)>, PaymentStoreError> {
        self.writer
            .execute(TakeExpired {
                owner: owner.clone(),
                ttl,
                limit,
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

    async fn claim_outbox(
        &self,
        owner: &LeaseOwner,
        ttl: std::time::Duration,
        limit: u32,
    ) -> Result<Vec<(OutboxMessage, Lease)>, PaymentStoreError> {
        // A look on the read pool first: an idle dispatcher's pass costs no write transaction.
        let any = format!(
            "SELECT EXISTS (SELECT 1 FROM outbox WHERE {})",
            claimable(NOW_MS)
        );
        let due: bool = read_retrying(|| sqlx::query_scalar(&any).fetch_one(&self.readers))
            .await
            .map_err(storage)?;
        if !due {
            return Ok(Vec::new());
        }
        self.writer
            .execute(ClaimOutbox {
                owner: owner.clone(),
                ttl,
                limit,
            })
            .await
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
        claim: &Lease,
        attempts: u32,
        delay: std::time::Duration,
        last_error: &str,
    ) -> Result<(), PaymentStoreError> {
        self.writer
            .execute(RetryLater {
                id: id.clone(),
                token: claim.token,
                attempts,
                delay_ms: i64::try_from(delay.as_millis()).unwrap_or(i64::MAX / 4),
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
        crate::payments::assert_schema_status_lists(&crate::payments::migrations_sql(&MIGRATOR));
    }

    #[test]
    fn the_resumer_scans_exactly_the_non_terminal_states() {
        assert!(UNFINISHED_SQL
            .contains("WHERE status IN ('received', 'fraud_checked', 'debited') ORDER BY"));
        assert!(TAKE_EXPIRED_SQL
            .contains("WHERE status IN ('received', 'fraud_checked', 'debited') AND"));
        assert!(
            TAKE_OVER_SQL.contains("AND status IN ('received', 'fraud_checked', 'debited') AND")
        );
    }
}
