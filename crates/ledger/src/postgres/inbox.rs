//! [`PgInbox`]: the notification inbox on PostgreSQL.
//!
//! Deliveries are in group commit, as the payments store's steps are ([`super::steps`]): a writer
//! task takes the deliveries queued meanwhile and inserts them in one `UNNEST` statement
//! (`ON CONFLICT DO NOTHING`, each id at most once per round). Those it did not insert (already
//! there), and all of them when the statement fails, are delivered alone by the single-delivery
//! path, which answers a redelivery or a conflict.

use std::collections::HashSet;

use async_trait::async_trait;
use finpay_core::AccountId;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgPool, PgRow};
use tokio::sync::{mpsc, oneshot};

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
    writer: mpsc::Sender<Job>,
}

/// The most deliveries one round inserts.
const ROUND_MAX: usize = 256;

/// How many deliveries may wait for the writer; past this, callers wait (backpressure).
const QUEUE_CAPACITY: usize = 4096;

#[derive(Debug)]
struct Job {
    n: Notification,
    reply: oneshot::Sender<Result<Delivery, InboxError>>,
}

/// The writer stopped (its task ended); nothing more can be written through this store.
#[derive(Debug, thiserror::Error)]
#[error("the PostgreSQL inbox writer has stopped")]
struct WriterStopped;

impl PgInbox {
    /// Opens the inbox and starts its writer task (so it must be called inside a tokio runtime);
    /// the task ends when every handle is dropped.
    pub async fn open(opts: &PgOptions) -> Result<Self, PgOpenError> {
        let pool = open_pool(opts, &MIGRATOR).await?;
        let (writer, queue) = mpsc::channel(QUEUE_CAPACITY);
        tokio::spawn(run_writer(pool.clone(), queue));
        Ok(Self { pool, writer })
    }
}

async fn run_writer(pool: PgPool, mut queue: mpsc::Receiver<Job>) {
    let mut round: Vec<Job> = Vec::with_capacity(ROUND_MAX);
    while queue.recv_many(&mut round, ROUND_MAX).await > 0 {
        deliver_round(&pool, std::mem::take(&mut round)).await;
    }
    tracing::debug!("PostgreSQL inbox writer stopped: every handle was dropped");
}

/// One round: its first delivery of each id inserted in one statement; the rest, and whatever
/// the statement did not insert, delivered alone.
async fn deliver_round(pool: &PgPool, jobs: Vec<Job>) {
    let mut seen = HashSet::with_capacity(jobs.len());
    let (first, again): (Vec<Job>, Vec<Job>) = jobs
        .into_iter()
        .partition(|j| seen.insert(j.n.id.as_str().to_owned()));
    let inserted: HashSet<String> = match insert_many(pool, &first).await {
        Ok(ids) => ids.into_iter().collect(),
        Err(e) => {
            tracing::debug!(error = %e, size = first.len(), "batched delivery failed; each alone");
            HashSet::new()
        }
    };
    for job in first {
        let answer = if inserted.contains(job.n.id.as_str()) {
            Ok(Delivery::Stored(job.n))
        } else {
            deliver_one(pool, &job.n).await
        };
        let _ = job.reply.send(answer);
    }
    // A repeated id of the round: the first is stored (or was before); this one is a redelivery.
    for job in again {
        let answer = deliver_one(pool, &job.n).await;
        let _ = job.reply.send(answer);
    }
}

async fn insert_many(pool: &PgPool, jobs: &[Job]) -> Result<Vec<String>, sqlx::Error> {
    let col = |f: fn(&Notification) -> String| jobs.iter().map(|j| f(&j.n)).collect::<Vec<_>>();
    sqlx::query_scalar(&format!(
        "INSERT INTO notifications ({COLUMNS}) \
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[]) \
         ON CONFLICT (id) DO NOTHING RETURNING id"
    ))
    .bind(col(|n| n.id.as_str().to_owned()))
    .bind(col(|n| n.payment_id.to_string()))
    .bind(col(|n| n.account_id.as_str().to_owned()))
    .bind(col(|n| n.message.clone()))
    .bind(jobs.iter().map(|j| j.n.received_at_ms).collect::<Vec<_>>())
    .fetch_all(pool)
    .await
}

fn storage(e: impl Into<BoxError>) -> InboxError {
    InboxError::Storage(e.into())
}

fn notification_from_row(row: &PgRow) -> Result<Notification, InboxError> {
    rows::notification(row).map_err(storage)
}

/// One delivery alone: insert, or read the first delivery back and compare.
async fn deliver_one(pool: &PgPool, n: &Notification) -> Result<Delivery, InboxError> {
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
        .fetch_optional(pool)
        .await?;
        if inserted.is_some() {
            return Ok(Ok(Delivery::Stored(n.clone())));
        }
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM notifications WHERE id = $1"
        ))
        .bind(n.id.as_str())
        .fetch_one(pool)
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

#[async_trait]
impl InboxStore for PgInbox {
    async fn deliver(&self, n: Notification) -> Result<Delivery, InboxError> {
        let (reply, answer) = oneshot::channel();
        self.writer
            .send(Job { n, reply })
            .await
            .map_err(|_| storage(WriterStopped))?;
        answer.await.map_err(|_| storage(WriterStopped))?
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use finpay_core::PaymentId;

    use super::*;

    fn note(p: PaymentId, message: &str) -> Notification {
        Notification {
            id: p.notification_id(),
            payment_id: p,
            account_id: AccountId::try_from("cust-1").expect("id"),
            message: message.to_owned(),
            received_at_ms: 1,
        }
    }

    /// The batched insert runs as written (a broken one would only show as every delivery going
    /// alone), and one round answers first deliveries, redeliveries and conflicts as alone.
    #[tokio::test]
    async fn a_round_of_deliveries_stores_each_id_once_and_answers_each_as_alone() {
        let url = std::env::var("FINPAY_TEST_PG_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
        let schema = format!(
            "finpay_inbox_{}",
            &PaymentId::new_v7().debit_transfer_id().as_str()[4..]
        );
        let mut opts = PgOptions::new(url);
        opts.schema = Some(schema.clone());
        opts.max_connections = 2;
        opts.acquire_timeout = Duration::from_secs(2);
        let inbox = match PgInbox::open(&opts).await {
            Ok(i) => i,
            Err(e) => {
                eprintln!("note: skipped: no PostgreSQL: {e}");
                return;
            }
        };
        let (a, b) = (PaymentId::new_v7(), PaymentId::new_v7());
        let ids = insert_many(
            &inbox.pool,
            &[a, b].map(|p| Job {
                n: note(p, "paid"),
                reply: oneshot::channel().0,
            }),
        )
        .await
        .expect("the batched insert runs");
        assert_eq!(ids.len(), 2);
        // On this current-thread runtime all of these are queued before the writer runs.
        let c = PaymentId::new_v7();
        let answers = futures::future::join_all([
            inbox.deliver(note(c, "paid")),
            inbox.deliver(note(c, "paid")),
            inbox.deliver(note(a, "paid")),
            inbox.deliver(note(b, "other")),
        ])
        .await;
        assert!(matches!(answers[0], Ok(Delivery::Stored(_))), "{answers:?}");
        assert!(
            matches!(answers[1], Ok(Delivery::Duplicate(_))),
            "{answers:?}"
        );
        assert!(
            matches!(answers[2], Ok(Delivery::Duplicate(_))),
            "{answers:?}"
        );
        assert!(
            matches!(answers[3], Err(InboxError::Conflict(_))),
            "{answers:?}"
        );
        let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM notifications")
            .fetch_one(&inbox.pool)
            .await
            .expect("counts");
        assert_eq!(stored, 3);
        let _ = sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
            .execute(&inbox.pool)
            .await;
    }
}
