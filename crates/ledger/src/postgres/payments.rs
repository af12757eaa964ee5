//! [`PgPayments`]: payments and the notification outbox on PostgreSQL.

use std::sync::LazyLock;

use std::time::Duration;

use async_trait::async_trait;
use finpay_core::{NotificationId, PaymentId, PaymentStatus};
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgPool, PgRow};
use sqlx::{Postgres, Row};

use super::steps::Steps;
use super::{open_pool, retrying, PgOpenError, PgOptions, NOW_MS, RETRIES_MAX};
use crate::error::BoxError;
use crate::payments::{
    fenced_miss, ttl_ms, Begin, Lease, LeaseOwner, NewPayment, OutboxMessage, Payment,
    PaymentStore, PaymentStoreError, StepNote,
};
use crate::rows::{self, corrupt};

/// The payments schema's migrations, `migrations/postgres/payments/`.
pub(crate) static MIGRATOR: Migrator = sqlx::migrate!("migrations/postgres/payments");

pub(super) const PAYMENT_COLUMNS: &str =
    "id, idempotency_key, fingerprint, account_id, merchant_account_id, \
     amount, currency, description, status, reason, needs_review, created_at_ms, updated_at_ms";
pub(super) const OUTBOX_COLUMNS: &str =
    "id, payment_id, account_id, message, attempts, next_attempt_at_ms, delivered_at_ms, last_error";

/// The resumer's scan, over the partial index `payments_unfinished`.
static UNFINISHED_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {PAYMENT_COLUMNS} FROM payments WHERE status IN ({}) \
         ORDER BY created_at_ms, id LIMIT $1",
        PaymentStatus::sql_list(PaymentStatus::non_terminal())
    )
});

/// Payments and the outbox in PostgreSQL. Every step is one statement, so one round trip; the
/// three steps a payment's driver takes (`begin`, `advance`, `succeed_from`) are batched across
/// concurrent drivers into one statement per kind ([`super::steps`]).
#[derive(Clone, Debug)]
pub struct PgPayments {
    pub(super) pool: PgPool,
    steps: Steps,
}

impl PgPayments {
    /// Opens the store and starts its step writer (so it must be called inside a tokio runtime);
    /// the writer ends when every handle is dropped.
    pub async fn open(opts: &PgOptions) -> Result<Self, PgOpenError> {
        let pool = open_pool(opts, &MIGRATOR).await?;
        Ok(Self {
            steps: Steps::spawn(pool.clone()),
            pool,
        })
    }
}

pub(super) fn storage(e: impl Into<BoxError>) -> PaymentStoreError {
    PaymentStoreError::Storage(e.into())
}

pub(super) fn payment_from_row(row: &PgRow) -> Result<Payment, PaymentStoreError> {
    rows::payment(row).map_err(storage)
}

fn outbox_from_row(row: &PgRow) -> Result<OutboxMessage, PaymentStoreError> {
    rows::outbox_message(row).map_err(storage)
}

pub(super) fn lease_of(
    row: &PgRow,
    col: &str,
    owner: &LeaseOwner,
    ttl: Duration,
) -> Result<Lease, PaymentStoreError> {
    Ok(Lease {
        owner: owner.clone(),
        token: row.try_get(col).map_err(storage)?,
        ttl,
    })
}

/// `begin` in one statement: insert (leased) unless the key is taken; else take an expired lease
/// over; else read. The three parts see one snapshot, so when a concurrent `begin` of the same new
/// key commits between that snapshot and our insert, no part answers; then the statement runs
/// again, on a snapshot that holds the winner's row.
static BEGIN_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH ins AS ( \
             INSERT INTO payments ({PAYMENT_COLUMNS}, lease_owner, lease_token, lease_expires_at_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'received', NULL, FALSE, $9, $9, $10, 1, {NOW_MS} + $11) \
             ON CONFLICT (idempotency_key) DO NOTHING \
             RETURNING {PAYMENT_COLUMNS}, lease_token), \
         took AS ( \
             UPDATE payments SET lease_owner = $10, lease_token = lease_token + 1, \
                 lease_expires_at_ms = {NOW_MS} + $11 \
             WHERE idempotency_key = $2 AND fingerprint = $3 AND status IN ({nt}) \
               AND lease_expires_at_ms <= {NOW_MS} AND NOT EXISTS (SELECT 1 FROM ins) \
             RETURNING {PAYMENT_COLUMNS}, lease_token) \
         SELECT 'created' AS outcome, * FROM ins \
         UNION ALL SELECT 'took', * FROM took \
         UNION ALL SELECT 'existing', {PAYMENT_COLUMNS}, lease_token FROM payments \
             WHERE idempotency_key = $2 \
               AND NOT EXISTS (SELECT 1 FROM ins) AND NOT EXISTS (SELECT 1 FROM took)",
        nt = PaymentStatus::sql_list(PaymentStatus::non_terminal())
    )
});

/// A fenced update as one statement: `upd` is the update (its RETURNING the payment's columns and
/// `lease_token`); when it matched nothing, the row as it is comes back instead, to say why.
fn fenced(update: &str) -> String {
    format!(
        "WITH upd AS ({update} RETURNING {PAYMENT_COLUMNS}, lease_token) \
         SELECT TRUE AS done, * FROM upd \
         UNION ALL SELECT FALSE, {PAYMENT_COLUMNS}, lease_token FROM payments \
             WHERE id = $1 AND NOT EXISTS (SELECT 1 FROM upd)"
    )
}

static ADVANCE_SQL: LazyLock<String> = LazyLock::new(|| {
    fenced(&format!(
        "UPDATE payments SET status = $3, reason = COALESCE($4, reason), \
             needs_review = (needs_review OR $5), updated_at_ms = $6, \
             lease_owner = CASE WHEN $8 THEN NULL ELSE lease_owner END, \
             lease_expires_at_ms = CASE WHEN $8 THEN 0 ELSE {NOW_MS} + $9 END \
         WHERE id = $1 AND status = $2 AND lease_token = $7"
    ))
});

/// `from -> succeeded` and the outbox row in one statement: a data-modifying CTE is atomic with the
/// rest, and the row is inserted only from the update's result.
static SUCCEED_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH upd AS ( \
             UPDATE payments SET status = 'succeeded', updated_at_ms = $2, \
                 lease_owner = NULL, lease_expires_at_ms = 0 \
             WHERE id = $1 AND status = $3 AND lease_token = $4 \
             RETURNING {PAYMENT_COLUMNS}, lease_token), \
         ins AS ( \
             INSERT INTO outbox ({OUTBOX_COLUMNS}, created_at_ms) \
             SELECT $5, $1, $6, $7, $8, LEAST($9, {NOW_MS}), $10, $11, $2 FROM upd RETURNING id) \
         SELECT TRUE AS done, upd.* FROM upd \
         UNION ALL SELECT FALSE, {PAYMENT_COLUMNS}, lease_token FROM payments \
             WHERE id = $1 AND NOT EXISTS (SELECT 1 FROM upd)"
    )
});

/// The resumer's take: `FOR UPDATE SKIP LOCKED` lets two replicas' takes pass each other without
/// waiting and without taking the same row.
static TAKE_EXPIRED_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH due AS MATERIALIZED ( \
             SELECT id FROM payments WHERE status IN ({}) AND lease_expires_at_ms <= {NOW_MS} \
             ORDER BY created_at_ms, id LIMIT $3 FOR UPDATE SKIP LOCKED) \
         UPDATE payments SET lease_owner = $1, lease_token = lease_token + 1, \
             lease_expires_at_ms = {NOW_MS} + $2 \
         WHERE id IN (SELECT id FROM due) \
         RETURNING {PAYMENT_COLUMNS}, lease_token",
        PaymentStatus::sql_list(PaymentStatus::non_terminal())
    )
});

static CLAIM_OUTBOX_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH due AS MATERIALIZED ( \
             SELECT id FROM outbox WHERE delivered_at_ms IS NULL \
               AND next_attempt_at_ms <= {NOW_MS} AND claim_expires_at_ms <= {NOW_MS} \
             ORDER BY next_attempt_at_ms, id LIMIT $3 FOR UPDATE SKIP LOCKED) \
         UPDATE outbox SET claim_owner = $1, claim_token = claim_token + 1, \
             claim_expires_at_ms = {NOW_MS} + $2 \
         WHERE id IN (SELECT id FROM due) \
         RETURNING {OUTBOX_COLUMNS}, claim_token"
    )
});

/// The outcome of one fenced statement: the payment, or the row as it is now (`None`: no row).
pub(super) enum Fenced {
    Done(Payment),
    Missed(Option<(PaymentStatus, i64)>),
}

pub(super) fn fenced_outcome(
    id: PaymentId,
    row: Option<PgRow>,
) -> Result<Fenced, PaymentStoreError> {
    let Some(row) = row else {
        return Ok(Fenced::Missed(None));
    };
    let done: bool = row.try_get("done").map_err(storage)?;
    let payment = payment_from_row(&row)?;
    if done {
        return Ok(Fenced::Done(payment));
    }
    debug_assert_eq!(payment.id, id);
    let token: i64 = row.try_get("lease_token").map_err(storage)?;
    Ok(Fenced::Missed(Some((payment.status, token))))
}

/// Runs a fenced statement (bound by `query`) until it answers: retried on transient errors, and
/// when the row it missed shows no reason (it changed between the update and the read).
async fn run_fenced<F>(
    pool: &PgPool,
    id: PaymentId,
    expected: PaymentStatus,
    token: i64,
    query: F,
) -> Result<Payment, PaymentStoreError>
where
    F: Fn() -> sqlx::query::Query<'static, Postgres, sqlx::postgres::PgArguments> + Send + Sync,
{
    for _ in 0..=RETRIES_MAX {
        let row = retried(|| query().fetch_optional(pool)).await?;
        match fenced_outcome(id, row)? {
            Fenced::Done(p) => return Ok(p),
            Fenced::Missed(now) => {
                if let Some(e) = fenced_miss(id, expected, token, now) {
                    return Err(e);
                }
            }
        }
    }
    Err(storage(corrupt(
        "payment",
        id,
        "a fenced write kept matching no row while the row matched it",
    )))
}

/// [`retrying`] for one statement whose only answer is its rows.
async fn retried<T, F, Fut>(mut op: F) -> Result<T, PaymentStoreError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, sqlx::Error>>,
{
    retrying(|| {
        let attempt = op();
        async move { attempt.await.map(Ok) }
    })
    .await
}

#[derive(Debug, thiserror::Error)]
#[error("{missing} of {asked} outbox rows marked delivered do not exist")]
struct UnknownOutboxRows {
    missing: u64,
    asked: u64,
}

/// `begin` alone, in its one statement (the batch's fallback and its answer for a key the batch
/// could not settle).
pub(super) async fn begin_one(
    pool: &PgPool,
    new: &NewPayment,
    owner: &LeaseOwner,
    ttl: Duration,
) -> Result<Begin, PaymentStoreError> {
    let now = crate::now_ms();
    for _ in 0..=RETRIES_MAX {
        let row = retried(|| {
            sqlx::query(BEGIN_SQL.as_str())
                .bind(new.id.to_string())
                .bind(new.idempotency_key.as_str())
                .bind(new.fingerprint.as_str())
                .bind(new.account_id.as_str())
                .bind(new.merchant_account_id.as_str())
                .bind(new.amount.as_i64())
                .bind(new.currency.code())
                .bind(new.description.as_deref())
                .bind(now)
                .bind(owner.as_str())
                .bind(ttl_ms(ttl))
                .fetch_optional(pool)
        })
        .await?;
        // No row: a concurrent begin of this key committed after our snapshot; ask again.
        let Some(row) = row else { continue };
        let outcome: String = row.try_get("outcome").map_err(storage)?;
        let payment = payment_from_row(&row)?;
        return Ok(match outcome.as_str() {
            "created" => Begin::Created(payment, lease_of(&row, "lease_token", owner, ttl)?),
            "took" => Begin::Existing {
                payment,
                lease: Some(lease_of(&row, "lease_token", owner, ttl)?),
            },
            _ => Begin::Existing {
                payment,
                lease: None,
            },
        });
    }
    Err(storage(corrupt(
        "payment",
        &new.idempotency_key,
        "begin kept finding neither a free key nor a payment holding it",
    )))
}

/// `advance` alone, in its one fenced statement.
pub(super) async fn advance_one(
    pool: &PgPool,
    id: PaymentId,
    from: PaymentStatus,
    to: PaymentStatus,
    note: &StepNote,
    lease: &Lease,
) -> Result<Payment, PaymentStoreError> {
    let (token, ttl_ms) = (lease.token, lease.ttl_ms());
    run_fenced(pool, id, from, token, || {
        sqlx::query(ADVANCE_SQL.as_str())
            .bind(id.to_string())
            .bind(from.as_str())
            .bind(to.as_str())
            .bind(note.reason.clone())
            .bind(note.needs_review)
            .bind(crate::now_ms())
            .bind(token)
            .bind(to.is_terminal())
            .bind(ttl_ms)
    })
    .await
}

/// `succeed_from` alone, in its one fenced statement.
pub(super) async fn succeed_one(
    pool: &PgPool,
    id: PaymentId,
    from: PaymentStatus,
    m: &OutboxMessage,
    lease: &Lease,
) -> Result<Payment, PaymentStoreError> {
    let token = lease.token;
    run_fenced(pool, id, from, token, || {
        sqlx::query(SUCCEED_SQL.as_str())
            .bind(id.to_string())
            .bind(crate::now_ms())
            .bind(from.as_str())
            .bind(token)
            .bind(m.id.as_str().to_owned())
            .bind(m.account_id.as_str().to_owned())
            .bind(m.message.clone())
            .bind(i64::from(m.attempts))
            .bind(m.next_attempt_at_ms)
            .bind(m.delivered_at_ms)
            .bind(m.last_error.clone())
    })
    .await
}

#[async_trait]
impl PaymentStore for PgPayments {
    async fn begin(
        &self,
        new: NewPayment,
        owner: &LeaseOwner,
        ttl: Duration,
    ) -> Result<Begin, PaymentStoreError> {
        self.steps.begin(new, owner.clone(), ttl).await
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
        lease: &Lease,
    ) -> Result<Payment, PaymentStoreError> {
        crate::payments::check_advance(from, to)?;
        self.steps.advance(id, from, to, note, lease.clone()).await
    }

    async fn succeed_from(
        &self,
        id: PaymentId,
        from: PaymentStatus,
        m: OutboxMessage,
        lease: &Lease,
    ) -> Result<Payment, PaymentStoreError> {
        crate::payments::check_succeed_from(from)?;
        if m.payment_id != id {
            return Err(storage(corrupt(
                "outbox message",
                &m.id,
                format!("names payment {}, not {id}", m.payment_id),
            )));
        }
        self.steps.succeed(id, from, m, lease.clone()).await
    }

    async fn release(&self, id: PaymentId, lease: &Lease) -> Result<(), PaymentStoreError> {
        let (released, held): (i64, Option<i64>) = retried(|| {
            sqlx::query_as(
                "WITH upd AS (UPDATE payments SET lease_owner = NULL, lease_expires_at_ms = 0 \
                              WHERE id = $1 AND lease_token = $2 RETURNING id) \
                 SELECT (SELECT COUNT(*) FROM upd), \
                        (SELECT lease_token FROM payments WHERE id = $1)",
            )
            .bind(id.to_string())
            .bind(lease.token)
            .fetch_one(&self.pool)
        })
        .await?;
        match (released, held) {
            (1.., _) => Ok(()),
            (_, None) => Err(PaymentStoreError::NotFound(id)),
            (_, Some(_)) => Err(PaymentStoreError::LeaseLost {
                what: "payment",
                id: id.to_string(),
                token: lease.token,
            }),
        }
    }

    async fn take_expired(
        &self,
        owner: &LeaseOwner,
        ttl: Duration,
        limit: u32,
    ) -> Result<Vec<(Payment, Lease)>, PaymentStoreError> {
        let rows = retried(|| {
            sqlx::query(TAKE_EXPIRED_SQL.as_str())
                .bind(owner.as_str())
                .bind(ttl_ms(ttl))
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
        })
        .await?;
        let mut taken = rows
            .iter()
            .map(|r| {
                Ok((
                    payment_from_row(r)?,
                    lease_of(r, "lease_token", owner, ttl)?,
                ))
            })
            .collect::<Result<Vec<_>, PaymentStoreError>>()?;
        taken.sort_by_key(|(a, _)| (a.created_at_ms, a.id));
        Ok(taken)
    }

    async fn unfinished(&self, limit: u32) -> Result<Vec<Payment>, PaymentStoreError> {
        let rows = sqlx::query(UNFINISHED_SQL.as_str())
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(storage)?;
        rows.iter().map(payment_from_row).collect()
    }

    async fn claim_outbox(
        &self,
        owner: &LeaseOwner,
        ttl: Duration,
        limit: u32,
    ) -> Result<Vec<(OutboxMessage, Lease)>, PaymentStoreError> {
        let rows = retried(|| {
            sqlx::query(CLAIM_OUTBOX_SQL.as_str())
                .bind(owner.as_str())
                .bind(ttl_ms(ttl))
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
        })
        .await?;
        let mut claimed = rows
            .iter()
            .map(|r| Ok((outbox_from_row(r)?, lease_of(r, "claim_token", owner, ttl)?)))
            .collect::<Result<Vec<_>, PaymentStoreError>>()?;
        claimed.sort_by(|(a, _), (b, _)| {
            (a.next_attempt_at_ms, a.id.as_str()).cmp(&(b.next_attempt_at_ms, b.id.as_str()))
        });
        Ok(claimed)
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

    async fn outbox_delivered_many(
        &self,
        ids: &[NotificationId],
        now_ms: i64,
    ) -> Result<(), PaymentStoreError> {
        let mut ids: Vec<String> = ids.iter().map(|i| i.as_str().to_owned()).collect();
        ids.sort_unstable();
        ids.dedup();
        if ids.is_empty() {
            return Ok(());
        }
        // One statement; it marks nothing unless every id exists, so an unknown id refuses the
        // whole call. Delivered stays delivered: a late duplicate report keeps the first time.
        let updated: Vec<String> = retried(|| {
            sqlx::query_scalar(
                "UPDATE outbox SET delivered_at_ms = COALESCE(delivered_at_ms, $2), \
                     claim_owner = NULL, claim_expires_at_ms = 0 \
                 WHERE id = ANY($1) \
                   AND (SELECT COUNT(*) FROM outbox WHERE id = ANY($1)) = cardinality($1) \
                 RETURNING id",
            )
            .bind(&ids)
            .bind(now_ms)
            .fetch_all(&self.pool)
        })
        .await?;
        let (asked, done) = (ids.len() as u64, updated.len() as u64);
        if done != asked {
            return Err(storage(UnknownOutboxRows {
                missing: asked.saturating_sub(done),
                asked,
            }));
        }
        Ok(())
    }

    async fn outbox_retry_later(
        &self,
        id: &NotificationId,
        claim: &Lease,
        attempts: u32,
        delay: Duration,
        last_error: &str,
    ) -> Result<(), PaymentStoreError> {
        let delay_ms = i64::try_from(delay.as_millis()).unwrap_or(i64::MAX / 4);
        // A row delivered meanwhile (by another dispatcher) is left alone.
        let sql = format!(
                "WITH upd AS (UPDATE outbox SET attempts = $2, next_attempt_at_ms = {NOW_MS} + $3, \
                                  last_error = $4, claim_owner = NULL, claim_expires_at_ms = 0 \
                              WHERE id = $1 AND delivered_at_ms IS NULL AND claim_token = $5 \
                              RETURNING id) \
                 SELECT (SELECT COUNT(*) FROM upd), \
                        EXISTS (SELECT 1 FROM outbox WHERE id = $1), \
                        EXISTS (SELECT 1 FROM outbox WHERE id = $1 AND delivered_at_ms IS NOT NULL)"
            );
        let (updated, exists, delivered): (i64, bool, bool) = retried(|| {
            sqlx::query_as(&sql)
                .bind(id.as_str())
                .bind(i64::from(attempts))
                .bind(delay_ms)
                .bind(last_error)
                .bind(claim.token)
                .fetch_one(&self.pool)
        })
        .await?;
        match (updated, exists, delivered) {
            (1.., _, _) | (_, true, true) => Ok(()),
            (_, false, _) => Err(storage(corrupt("outbox message", id, "does not exist"))),
            (_, true, false) => Err(PaymentStoreError::LeaseLost {
                what: "outbox row",
                id: id.to_string(),
                token: claim.token,
            }),
        }
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
        crate::payments::assert_schema_status_lists(&crate::payments::migrations_sql(&MIGRATOR));
    }

    #[test]
    fn the_resumer_scans_exactly_the_non_terminal_states() {
        assert!(UNFINISHED_SQL
            .contains("WHERE status IN ('received', 'fraud_checked', 'debited') ORDER BY"));
        assert!(TAKE_EXPIRED_SQL
            .contains("WHERE status IN ('received', 'fraud_checked', 'debited') AND"));
        assert!(BEGIN_SQL.contains("AND status IN ('received', 'fraud_checked', 'debited') AND"));
    }
}
