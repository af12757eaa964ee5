//! [`SqliteInbox`]: the notification inbox, deduplicated by notification id.

use std::path::Path;

use async_trait::async_trait;
use finpay_core::AccountId;
use futures::future::BoxFuture;
use sqlx::migrate::Migrator;
use sqlx::sqlite::{SqlitePool, SqliteRow};

use super::writer::{Command, OpConn, Writer};
use super::{open_db, read_retrying, OpenError, SqliteOptions};
use crate::error::BoxError;
use crate::inbox::{Delivery, InboxError, InboxStore, Notification};
use crate::rows::{self};

/// The inbox migrations, `migrations/sqlite/inbox/`. The primary key on `id` is the
/// deduplication: a notification is stored at most once.
pub(crate) static MIGRATOR: Migrator = sqlx::migrate!("migrations/sqlite/inbox");

const COLUMNS: &str = "id, payment_id, account_id, message, received_at_ms";

/// The notification inbox in one SQLite file.
#[derive(Clone)]
pub struct SqliteInbox {
    writer: Writer,
    readers: SqlitePool,
}

impl std::fmt::Debug for SqliteInbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteInbox").finish_non_exhaustive()
    }
}

impl SqliteInbox {
    /// Opens the inbox at `path`, creating the file and its schema when absent.
    /// Must be called inside a tokio runtime: it starts the store's writer task.
    pub async fn open(path: &Path, opts: &SqliteOptions) -> Result<Self, OpenError> {
        let opened = open_db(path, opts, &MIGRATOR).await?;
        Ok(Self {
            writer: Writer::spawn("inbox", opened.writer),
            readers: opened.readers,
        })
    }
}

fn storage(e: impl Into<BoxError>) -> InboxError {
    InboxError::Storage(e.into())
}

fn notification_from_row(row: &SqliteRow) -> Result<Notification, InboxError> {
    rows::notification(row).map_err(storage)
}

struct Deliver(Notification);

impl Command for Deliver {
    type Output = Delivery;
    type Error = InboxError;
    fn run<'a>(&'a self, op: &'a mut OpConn<'_>) -> BoxFuture<'a, Result<Delivery, InboxError>> {
        Box::pin(async move {
            let n = &self.0;
            // One round trip for a first delivery; a redelivery reads the first one back.
            let sql = format!(
                "{}INSERT INTO notifications ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5) \
                 ON CONFLICT (id) DO NOTHING RETURNING id",
                op.write_prefix()
            );
            let inserted = sqlx::query(&sql)
                .bind(n.id.as_str())
                .bind(n.payment_id.to_string())
                .bind(n.account_id.as_str())
                .bind(&n.message)
                .bind(n.received_at_ms)
                .fetch_all(op.conn())
                .await
                .map_err(storage)?;
            if !inserted.is_empty() {
                return Ok(Delivery::Stored(n.clone()));
            }
            let row = sqlx::query(&format!(
                "SELECT {COLUMNS} FROM notifications WHERE id = ?1"
            ))
            .bind(n.id.as_str())
            .fetch_one(op.conn())
            .await
            .map_err(storage)?;
            let first = notification_from_row(&row)?;
            // The time of arrival is not part of the body: a redelivery arrives later.
            let same = first.payment_id == n.payment_id
                && first.account_id == n.account_id
                && first.message == n.message;
            if same {
                Ok(Delivery::Duplicate(first))
            } else {
                Err(InboxError::Conflict(n.id.clone()))
            }
        })
    }
}

struct Ping;

impl Command for Ping {
    type Output = ();
    type Error = InboxError;
    fn run<'a>(&'a self, _op: &'a mut OpConn<'_>) -> BoxFuture<'a, Result<(), InboxError>> {
        Box::pin(async { Ok(()) })
    }
}

#[async_trait]
impl InboxStore for SqliteInbox {
    async fn deliver(&self, n: Notification) -> Result<Delivery, InboxError> {
        self.writer.execute(Deliver(n)).await
    }

    async fn list(&self, account: &AccountId, limit: u32) -> Result<Vec<Notification>, InboxError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM notifications WHERE account_id = ?1 \
             ORDER BY received_at_ms, id LIMIT ?2"
        );
        let rows = read_retrying(|| {
            sqlx::query(&sql)
                .bind(account.as_str())
                .bind(i64::from(limit))
                .fetch_all(&self.readers)
        })
        .await
        .map_err(storage)?;
        rows.iter().map(notification_from_row).collect()
    }

    async fn ping(&self) -> Result<(), InboxError> {
        read_retrying(|| sqlx::query("SELECT 1").execute(&self.readers))
            .await
            .map_err(storage)?;
        self.writer.execute(Ping).await
    }
}
