//! [`PgInbox`]: the notification inbox on PostgreSQL.

use async_trait::async_trait;
use finpay_core::AccountId;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgPool, PgRow};

use super::{open_pool, retrying, PgOpenError, PgOptions};
use crate::error::BoxError;
use crate::inbox::{Delivery, InboxError, InboxStore, Notification};
use crate::rows::{self};

/// The inbox migrations, `migrations/postgres/inbox/`. The primary key on `id` is the
/// deduplication: a notification is stored at most once.
pub(crate) static MIGRATOR: Migrator = sqlx::migrate!("migrations/postgres/inbox");

const COLUMNS: &str = "id, payment_id, account_id, message, received_at_ms";

#[derive(Clone, Debug)]
pub struct PgInbox {
    pool: PgPool,
}

impl PgInbox {
    pub async fn open(opts: &PgOptions) -> Result<Self, PgOpenError> {
        Ok(Self {
            pool: open_pool(opts, &MIGRATOR).await?,
        })
    }
}

fn storage(e: impl Into<BoxError>) -> InboxError {
    InboxError::Storage(e.into())
}

fn notification_from_row(row: &PgRow) -> Result<Notification, InboxError> {
    rows::notification(row).map_err(storage)
}

#[async_trait]
impl InboxStore for PgInbox {
    async fn deliver(&self, n: Notification) -> Result<Delivery, InboxError> {
        retrying(|| async {
            let inserted = sqlx::query(&format!(
                "INSERT INTO notifications ({COLUMNS}) VALUES ($1, $2, $3, $4, $5) \
                     ON CONFLICT (id) DO NOTHING RETURNING id"
            ))
            .bind(n.id.as_str())
            .bind(n.payment_id.to_string())
            .bind(n.account_id.as_str())
            .bind(&n.message)
            .bind(n.received_at_ms)
            .fetch_optional(&self.pool)
            .await?;
            if inserted.is_some() {
                return Ok(Ok(Delivery::Stored(n.clone())));
            }
            let row = sqlx::query(&format!(
                "SELECT {COLUMNS} FROM notifications WHERE id = $1"
            ))
            .bind(n.id.as_str())
            .fetch_one(&self.pool)
            .await?;
            Ok(notification_from_row(&row).and_then(|first| {
                if first.payment_id == n.payment_id
                    && first.account_id == n.account_id
                    && first.message == n.message
                {
                    Ok(Delivery::Duplicate(first))
                } else {
                    Err(InboxError::Conflict(n.id.clone()))
                }
            }))
        })
        .await
    }

    async fn list(&self, account: &AccountId, limit: u32) -> Result<Vec<Notification>, InboxError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM notifications WHERE account_id = $1 \
             ORDER BY received_at_ms, id LIMIT $2"
        ))
        .bind(account.as_str())
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(storage)?;
        rows.iter().map(notification_from_row).collect()
    }

    async fn ping(&self) -> Result<(), InboxError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(|_| ())
            .map_err(storage)
    }
}
