//! The outbox's write commands of [`super::payments::SqlitePayments`]: claiming due rows for a
//! dispatcher, marking many delivered in one statement, and putting one back for a later try. Each
//! runs on the payments file's writer, like the payment steps beside it.

use finpay_core::NotificationId;
use futures::future::BoxFuture;
use sqlx::Row;

use super::payments::{outbox_from_row, storage, NOW_MS, OUTBOX_COLUMNS};
use super::writer::{Command, OpConn};
use crate::payments::{ttl_ms, Lease, LeaseOwner, OutboxMessage, PaymentStoreError};

pub(super) struct ClaimOutbox {
    pub(super) owner: LeaseOwner,
    pub(super) ttl: std::time::Duration,
    pub(super) limit: u32,
}

/// Due (by the database's clock), undelivered, and unclaimed or with a claim that ran out.
pub(super) fn claimable(now: &str) -> String {
    format!(
        "delivered_at_ms IS NULL AND next_attempt_at_ms <= {now} AND claim_expires_at_ms <= {now}"
    )
}

impl Command for ClaimOutbox {
    type Output = Vec<(OutboxMessage, Lease)>;
    type Error = PaymentStoreError;
    fn run<'a>(
        &'a self,
        op: &'a mut OpConn<'_>,
    ) -> BoxFuture<'a, Result<Self::Output, PaymentStoreError>> {
        Box::pin(async move {
            let sql = format!(
                "{}UPDATE outbox SET claim_owner = ?1, claim_token = claim_token + 1, \
                     claim_expires_at_ms = {NOW_MS} + ?2 \
                 WHERE id IN (SELECT id FROM outbox WHERE {} \
                              ORDER BY next_attempt_at_ms, id LIMIT ?3) \
                 RETURNING {OUTBOX_COLUMNS}, claim_token",
                op.write_prefix(),
                claimable(NOW_MS)
            );
            let rows = sqlx::query(&sql)
                .bind(self.owner.as_str())
                .bind(ttl_ms(self.ttl))
                .bind(i64::from(self.limit))
                .fetch_all(op.conn())
                .await
                .map_err(storage)?;
            let mut claimed = Vec::with_capacity(rows.len());
            for row in &rows {
                let token: i64 = row.try_get("claim_token").map_err(storage)?;
                let claim = Lease {
                    owner: self.owner.clone(),
                    token,
                    ttl: self.ttl,
                };
                claimed.push((outbox_from_row(row)?, claim));
            }
            claimed.sort_by(|(a, _), (b, _)| {
                (a.next_attempt_at_ms, a.id.as_str()).cmp(&(b.next_attempt_at_ms, b.id.as_str()))
            });
            Ok(claimed)
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
pub(super) const DELIVERED_MANY_MAX: usize = 500;

/// Many rows marked delivered in one statement: one command instead of one per row.
pub(super) struct DeliveredMany {
    pub(super) ids: Vec<NotificationId>,
    pub(super) now_ms: i64,
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
                "{}UPDATE outbox SET delivered_at_ms = COALESCE(delivered_at_ms, ?), \
                     claim_owner = NULL, claim_expires_at_ms = 0 \
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

pub(super) struct RetryLater {
    pub(super) id: NotificationId,
    pub(super) token: i64,
    pub(super) attempts: u32,
    pub(super) delay_ms: i64,
    pub(super) last_error: String,
}

impl Command for RetryLater {
    type Output = ();
    type Error = PaymentStoreError;
    fn run<'a>(&'a self, op: &'a mut OpConn<'_>) -> BoxFuture<'a, Result<(), PaymentStoreError>> {
        Box::pin(async move {
            // A row delivered meanwhile (by another dispatcher) is left alone.
            let sql = format!(
                "{}UPDATE outbox SET attempts = ?2, next_attempt_at_ms = {NOW_MS} + ?3, \
                     last_error = ?4, claim_owner = NULL, claim_expires_at_ms = 0 \
                 WHERE id = ?1 AND delivered_at_ms IS NULL AND claim_token = ?5 RETURNING id",
                op.write_prefix()
            );
            let done = sqlx::query(&sql)
                .bind(self.id.as_str())
                .bind(i64::from(self.attempts))
                .bind(self.delay_ms)
                .bind(self.last_error.as_str())
                .bind(self.token)
                .fetch_all(op.conn())
                .await
                .map_err(storage)?;
            if !done.is_empty() {
                return Ok(());
            }
            let now: Option<(Option<i64>, i64)> =
                sqlx::query_as("SELECT delivered_at_ms, claim_token FROM outbox WHERE id = ?1")
                    .bind(self.id.as_str())
                    .fetch_optional(op.conn())
                    .await
                    .map_err(storage)?;
            match now {
                None => Err(storage(UnknownOutboxRow(self.id.clone()))),
                Some((Some(_), _)) => Ok(()),
                Some((None, _)) => Err(PaymentStoreError::LeaseLost {
                    what: "outbox row",
                    id: self.id.to_string(),
                    token: self.token,
                }),
            }
        })
    }
}
