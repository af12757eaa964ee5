//! [`PgPayments`]: payments and the notification outbox on PostgreSQL.

use std::sync::LazyLock;

use async_trait::async_trait;
use finpay_core::{NotificationId, PaymentId, PaymentStatus};
use sqlx::postgres::{PgPool, PgRow};
use sqlx::{Executor, Postgres};

use super::{open_pool, retrying, PgOpenError, PgOptions};
use crate::error::BoxError;
use crate::payments::{
    Begin, NewPayment, OutboxMessage, Payment, PaymentStore, PaymentStoreError, StepNote,
};
use crate::rows::{self, corrupt};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS payments (
    id                  TEXT PRIMARY KEY,
    idempotency_key     TEXT NOT NULL UNIQUE,
    fingerprint         TEXT NOT NULL,
    account_id          TEXT NOT NULL,
    merchant_account_id TEXT NOT NULL,
    amount              BIGINT NOT NULL CHECK (amount > 0),
    currency            TEXT NOT NULL,
    description         TEXT,
    status              TEXT NOT NULL CHECK (status IN
                          ('received', 'fraud_checked', 'debited', 'succeeded', 'declined', 'failed')),
    reason              TEXT,
    needs_review        BOOLEAN NOT NULL DEFAULT FALSE,
    created_at_ms       BIGINT NOT NULL,
    updated_at_ms       BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS payments_unfinished ON payments (created_at_ms, id)
    WHERE status IN ('received', 'fraud_checked', 'debited');
CREATE TABLE IF NOT EXISTS outbox (
    id                 TEXT PRIMARY KEY,
    payment_id         TEXT NOT NULL UNIQUE REFERENCES payments (id),
    account_id         TEXT NOT NULL,
    message            TEXT NOT NULL,
    attempts           BIGINT NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt_at_ms BIGINT NOT NULL,
    delivered_at_ms    BIGINT,
    last_error         TEXT,
    created_at_ms      BIGINT NOT NULL
);
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
         ORDER BY created_at_ms, id LIMIT $1",
        PaymentStatus::sql_list(PaymentStatus::non_terminal())
    )
});

/// Payments and the outbox in PostgreSQL.
#[derive(Clone, Debug)]
pub struct PgPayments {
    pool: PgPool,
}

impl PgPayments {
    pub async fn open(opts: &PgOptions) -> Result<Self, PgOpenError> {
        Ok(Self {
            pool: open_pool(opts, SCHEMA).await?,
        })
    }
}

fn storage(e: impl Into<BoxError>) -> PaymentStoreError {
    PaymentStoreError::Storage(e.into())
}

fn payment_from_row(row: &PgRow) -> Result<Payment, PaymentStoreError> {
    rows::payment(row).map_err(storage)
}

fn outbox_from_row(row: &PgRow) -> Result<OutboxMessage, PaymentStoreError> {
    rows::outbox_message(row).map_err(storage)
}

async fn status_of<'e, E: Executor<'e, Database = Postgres>>(
    ex: E,
    id: PaymentId,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT status FROM payments WHERE id = $1")
        .bind(id.to_string())
        .fetch_optional(ex)
        .await
}

fn lost(
    id: PaymentId,
    expected: PaymentStatus,
    actual: Option<String>,
) -> Result<Payment, PaymentStoreError> {
    match actual {
        None => Err(PaymentStoreError::NotFound(id)),
        Some(s) => Err(PaymentStoreError::StaleState {
            id,
            expected,
            actual: s
                .parse()
                .map_err(|e: String| storage(corrupt("status", id, e)))?,
        }),
    }
}

#[async_trait]
impl PaymentStore for PgPayments {
    async fn begin(&self, new: NewPayment) -> Result<Begin, PaymentStoreError> {
        let now = crate::now_ms();
        retrying(|| async {
            let inserted = sqlx::query(&format!(
                "INSERT INTO payments ({PAYMENT_COLUMNS}) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'received', NULL, FALSE, $9, $9) \
                 ON CONFLICT (idempotency_key) DO NOTHING RETURNING {PAYMENT_COLUMNS}"
            ))
            .bind(new.id.to_string())
            .bind(new.idempotency_key.as_str())
            .bind(new.fingerprint.as_str())
            .bind(new.account_id.as_str())
            .bind(new.merchant_account_id.as_str())
            .bind(new.amount.as_i64())
            .bind(new.currency.code())
            .bind(new.description.as_deref())
            .bind(now)
            .fetch_optional(&self.pool)
            .await?;
            if let Some(row) = inserted {
                return Ok(payment_from_row(&row).map(Begin::Created));
            }
            let row = sqlx::query(&format!(
                "SELECT {PAYMENT_COLUMNS} FROM payments WHERE idempotency_key = $1"
            ))
            .bind(new.idempotency_key.as_str())
            .fetch_one(&self.pool)
            .await?;
            Ok(payment_from_row(&row).map(Begin::Existing))
        })
        .await
    }

    async fn get(&self, id: PaymentId) -> Result<Option<Payment>, PaymentStoreError> {
        let row = sqlx::query(&format!(
            "SELECT {PAYMENT_COLUMNS} FROM payments WHERE id = $1"
        ))
        .bind(id.to_string())
        .fetch_optional(&self.pool)
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
        retrying(|| async {
            let row = sqlx::query(&format!(
                "UPDATE payments SET status = $3, reason = COALESCE($4, reason), \
                     needs_review = (needs_review OR $5), updated_at_ms = $6 \
                 WHERE id = $1 AND status = $2 RETURNING {PAYMENT_COLUMNS}"
            ))
            .bind(id.to_string())
            .bind(from.as_str())
            .bind(to.as_str())
            .bind(note.reason.as_deref())
            .bind(note.needs_review)
            .bind(crate::now_ms())
            .fetch_optional(&self.pool)
            .await?;
            Ok(match row {
                Some(row) => payment_from_row(&row),
                None => lost(id, from, status_of(&self.pool, id).await?),
            })
        })
        .await
    }

    async fn succeed_from(
        &self,
        id: PaymentId,
        from: PaymentStatus,
        m: OutboxMessage,
    ) -> Result<Payment, PaymentStoreError> {
        crate::payments::check_succeed_from(from)?;
        if m.payment_id != id {
            return Err(storage(corrupt(
                "outbox message",
                &m.id,
                format!("names payment {}, not {id}", m.payment_id),
            )));
        }
        retrying(|| async {
            let mut tx = self.pool.begin().await?;
            let row = sqlx::query(&format!(
                "UPDATE payments SET status = 'succeeded', updated_at_ms = $2 \
                 WHERE id = $1 AND status = $3 RETURNING {PAYMENT_COLUMNS}"
            ))
            .bind(id.to_string())
            .bind(crate::now_ms())
            .bind(from.as_str())
            .fetch_optional(&mut *tx)
            .await?;
            let Some(row) = row else {
                return Ok(lost(id, from, status_of(&mut *tx, id).await?));
            };
            sqlx::query(&format!(
                "INSERT INTO outbox ({OUTBOX_COLUMNS}, created_at_ms) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
            ))
            .bind(m.id.as_str())
            .bind(id.to_string())
            .bind(m.account_id.as_str())
            .bind(&m.message)
            .bind(i64::from(m.attempts))
            .bind(m.next_attempt_at_ms)
            .bind(m.delivered_at_ms)
            .bind(m.last_error.as_deref())
            .bind(crate::now_ms())
            .execute(&mut *tx)
            .await?;
            let payment = payment_from_row(&row);
            tx.commit().await?;
            Ok(payment)
        })
        .await
    }

    async fn unfinished(&self, limit: u32) -> Result<Vec<Payment>, PaymentStoreError> {
        let rows = sqlx::query(UNFINISHED_SQL.as_str())
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(storage)?;
        rows.iter().map(payment_from_row).collect()
    }

    async fn outbox_due(
        &self,
        now_ms: i64,
        limit: u32,
    ) -> Result<Vec<OutboxMessage>, PaymentStoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {OUTBOX_COLUMNS} FROM outbox \
             WHERE delivered_at_ms IS NULL AND next_attempt_at_ms <= $1 \
             ORDER BY next_attempt_at_ms, id LIMIT $2"
        ))
        .bind(now_ms)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(storage)?;
        rows.iter().map(outbox_from_row).collect()
    }

    async fn outbox_delivered(
        &self,
        id: &NotificationId,
        now_ms: i64,
    ) -> Result<(), PaymentStoreError> {
        let done = sqlx::query(
            "UPDATE outbox SET delivered_at_ms = COALESCE(delivered_at_ms, $2) WHERE id = $1",
        )
        .bind(id.as_str())
        .bind(now_ms)
        .execute(&self.pool)
        .await
        .map_err(storage)?;
        if done.rows_affected() == 0 {
            return Err(storage(corrupt("outbox message", id, "does not exist")));
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
        sqlx::query(
            "UPDATE outbox SET attempts = $2, next_attempt_at_ms = $3, last_error = $4 \
             WHERE id = $1 AND delivered_at_ms IS NULL",
        )
        .bind(id.as_str())
        .bind(i64::from(attempts))
        .bind(next_attempt_at_ms)
        .bind(last_error)
        .execute(&self.pool)
        .await
        .map_err(storage)?;
        Ok(())
    }

    async fn outbox_pending(&self) -> Result<u64, PaymentStoreError> {
        let n: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE delivered_at_ms IS NULL")
                .fetch_one(&self.pool)
                .await
                .map_err(storage)?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn ping(&self) -> Result<(), PaymentStoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(|_| ())
            .map_err(storage)
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
