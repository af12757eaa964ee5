//! Group commit: one writer task per store, many operations per transaction, one fsync per batch.
//!
//! Callers hand a [`Command`] to [`Writer::execute`]. The writer task takes everything queued (up to
//! [`MAX_BATCH`]) and runs it as one transaction:
//!
//! ```text
//! BEGIN IMMEDIATE
//!   <command 1 reads>  SAVEPOINT op_a; <command 1 writes>
//!   <command 2 reads>  RELEASE op_a; SAVEPOINT op_b; <command 2 writes>   -- fails: ROLLBACK TO op_b; RELEASE op_b
//!   <command 3 reads>  SAVEPOINT op_a; <command 3 writes>
//! COMMIT                                                                 -- then answer every caller
//! ```
//!
//! A failed command is undone alone, by its savepoint; the others in the batch keep their effects.
//! Nobody is answered before COMMIT returns, so an answer is a durable fact. When COMMIT (or the
//! bookkeeping around a savepoint) fails, the whole batch is rolled back and every command in it gets
//! the storage error: none of them happened.
//!
//! Why a task and not a mutex around a connection: the batch forms by itself from whatever arrived
//! while the previous fsync ran, so under load batches grow and under no load a lone command commits
//! at once, with no timer to tune.
//!
//! Why the savepoint statements ride in the command's own write query ([`OpConn::write_prefix`]):
//! sqlx runs each SQLite connection on its own thread, so every round trip costs two thread
//! switches, which dominate the cost of a small write. A command therefore reads in one
//! query and writes in one multi-statement query that starts with the savepoint; a command refused
//! before it writes costs no savepoint at all. The two alternating savepoint names make a broken
//! chain loud: if `RELEASE op_a; SAVEPOINT op_b` stopped half way, `ROLLBACK TO op_b` finds no such
//! savepoint and the whole batch fails, instead of silently undoing the previous command.

use std::sync::Arc;

use futures::future::BoxFuture;
use sqlx::sqlite::SqliteConnection;
use tokio::sync::{mpsc, oneshot};

use crate::error::StorageError;

/// The most commands one transaction holds. Bounds the work lost to one failed COMMIT and the time a
/// reader of the queue waits behind one batch.
pub(crate) const MAX_BATCH: usize = 512;

/// How many commands may wait for the writer; past this, callers wait (backpressure).
pub(crate) const QUEUE_CAPACITY: usize = 4096;

/// One write operation. It runs inside a transaction that the writer owns; it must not begin,
/// commit or roll back itself, and its first write query must start with
/// [`OpConn::write_prefix`], so that a failure undoes exactly its own writes.
pub(crate) trait Command: Send + 'static {
    type Output: Send + 'static;
    type Error: StorageError;

    fn run<'a>(
        &'a self,
        op: &'a mut OpConn<'_>,
    ) -> BoxFuture<'a, Result<Self::Output, Self::Error>>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Savepoint {
    A,
    B,
}

/// The connection as one command sees it inside the batch's transaction.
pub(crate) struct OpConn<'c> {
    conn: &'c mut SqliteConnection,
    /// The savepoint a previous command of this batch left open (released lazily, here).
    open: Option<Savepoint>,
    /// The savepoint this command opened, once it started writing.
    mine: Option<Savepoint>,
}

impl OpConn<'_> {
    /// For reads, and for writes after the first write query.
    pub(crate) fn conn(&mut self) -> &mut SqliteConnection {
        self.conn
    }

    /// The statements that must open this command's first write query: they release the previous
    /// command's savepoint and open this one's. Empty after the first call.
    pub(crate) fn write_prefix(&mut self) -> &'static str {
        if self.mine.is_some() {
            return "";
        }
        let (prefix, mine) = match self.open {
            None => ("SAVEPOINT op_a; ", Savepoint::A),
            Some(Savepoint::A) => ("RELEASE op_a; SAVEPOINT op_b; ", Savepoint::B),
            Some(Savepoint::B) => ("RELEASE op_b; SAVEPOINT op_a; ", Savepoint::A),
        };
        self.mine = Some(mine);
        prefix
    }
}

/// The writer stopped (its task ended); nothing more can be written through this store.
#[derive(Debug, thiserror::Error)]
#[error("the {0} writer has stopped")]
pub struct WriterStopped(&'static str);

/// The batch this operation was part of could not be committed; the operation did not happen.
#[derive(Debug, thiserror::Error)]
#[error("the transaction holding this operation was rolled back: {step} failed")]
pub struct BatchFailed {
    step: &'static str,
    #[source]
    source: Arc<sqlx::Error>,
}

/// A handle to a store's writer task. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Writer {
    name: &'static str,
    tx: mpsc::Sender<Box<dyn Job>>,
}

impl Writer {
    /// Starts the writer task on the current tokio runtime; it ends when every handle is dropped.
    pub(crate) fn spawn(name: &'static str, conn: SqliteConnection) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        tokio::spawn(run(name, conn, rx));
        Self { name, tx }
    }

    /// Queues `cmd` and waits until its batch committed (or failed).
    pub(crate) async fn execute<C: Command>(&self, cmd: C) -> Result<C::Output, C::Error> {
        let (reply, answer) = oneshot::channel();
        let stopped = || C::Error::storage(Box::new(WriterStopped(self.name)));
        self.tx
            .send(Box::new(Queued { cmd, reply }))
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

/// A command with its reply channel, type-erased so one queue holds every kind of command.
trait Job: Send {
    fn run<'a>(self: Box<Self>, op: &'a mut OpConn<'_>) -> BoxFuture<'a, Box<dyn Ran>>;
    /// Answers a job that never ran because its batch could not start.
    fn fail(self: Box<Self>, e: BatchFailed);
}

/// A command that ran inside the open transaction, waiting for the COMMIT to be answered.
trait Ran: Send {
    fn keep(&self) -> bool;
    fn finish(self: Box<Self>, commit: Result<(), BatchFailed>);
}

struct Queued<C: Command> {
    cmd: C,
    reply: oneshot::Sender<Result<C::Output, C::Error>>,
}

impl<C: Command> Job for Queued<C> {
    fn run<'a>(self: Box<Self>, op: &'a mut OpConn<'_>) -> BoxFuture<'a, Box<dyn Ran>> {
        Box::pin(async move {
            let Queued { cmd, reply } = *self;
            let result = cmd.run(op).await;
            Box::new(Done::<C> { result, reply }) as Box<dyn Ran>
        })
    }

    fn fail(self: Box<Self>, e: BatchFailed) {
        // The caller may have gone away (its future was dropped); nothing to tell then.
        let _ = self.reply.send(Err(C::Error::storage(Box::new(e))));
    }
}

struct Done<C: Command> {
    result: Result<C::Output, C::Error>,
    reply: oneshot::Sender<Result<C::Output, C::Error>>,
}

impl<C: Command> Ran for Done<C> {
    fn keep(&self) -> bool {
        self.result.is_ok()
    }

    fn finish(self: Box<Self>, commit: Result<(), BatchFailed>) {
        let answer = match commit {
            Ok(()) => self.result,
            Err(e) => Err(C::Error::storage(Box::new(e))),
        };
        let _ = self.reply.send(answer);
    }
}

async fn run(name: &'static str, mut conn: SqliteConnection, mut rx: mpsc::Receiver<Box<dyn Job>>) {
    let mut batch: Vec<Box<dyn Job>> = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        run_batch(name, &mut conn, &mut batch).await;
        debug_assert!(batch.is_empty());
    }
    tracing::debug!(store = name, "writer stopped: every handle was dropped");
}

async fn exec(conn: &mut SqliteConnection, sql: &'static str) -> Result<(), sqlx::Error> {
    sqlx::query(sql).execute(&mut *conn).await.map(|_| ())
}

async fn run_batch(name: &'static str, conn: &mut SqliteConnection, batch: &mut Vec<Box<dyn Job>>) {
    let size = batch.len();
    if let Err(e) = super::begin_immediate(conn).await {
        tracing::warn!(store = name, error = %e, size, "could not begin a write transaction");
        let e = Arc::new(e);
        for job in batch.drain(..) {
            job.fail(batch_failed("BEGIN IMMEDIATE", &e));
        }
        return;
    }
    let mut ran: Vec<Box<dyn Ran>> = Vec::with_capacity(size);
    let mut jobs = batch.drain(..);
    let mut broken: Option<(&'static str, sqlx::Error)> = None;
    let mut open: Option<Savepoint> = None;
    for job in jobs.by_ref() {
        let mut op = OpConn {
            conn: &mut *conn,
            open,
            mine: None,
        };
        let done = job.run(&mut op).await;
        let mine = op.mine;
        let undo = match (done.keep(), mine) {
            (true, Some(_)) => {
                open = mine;
                None
            }
            // Refused before writing: nothing to undo, the previous savepoint stays open.
            (_, None) => None,
            (false, Some(Savepoint::A)) => Some(("ROLLBACK TO op_a", "RELEASE op_a")),
            (false, Some(Savepoint::B)) => Some(("ROLLBACK TO op_b", "RELEASE op_b")),
        };
        ran.push(done);
        if let Some(undo) = undo {
            open = None;
            // A failure after writing is rare (a constraint, a full disk), so two round trips.
            let (rollback, release) = undo;
            if let Err(e) = exec(conn, rollback).await {
                broken = Some(("ROLLBACK TO", e));
                break;
            }
            if let Err(e) = exec(conn, release).await {
                broken = Some(("RELEASE", e));
                break;
            }
        }
    }
    let commit = match broken {
        Some(b) => Err(b),
        None => exec(conn, "COMMIT").await.map_err(|e| ("COMMIT", e)),
    };
    match commit {
        Ok(()) => {
            for done in ran {
                done.finish(Ok(()));
            }
        }
        Err((step, e)) => {
            tracing::warn!(store = name, step, error = %e, size, "write batch rolled back");
            // The transaction may already be gone (SQLite rolls back by itself on some errors).
            let _ = exec(conn, "ROLLBACK").await;
            let e = Arc::new(e);
            for done in ran {
                done.finish(Err(batch_failed(step, &e)));
            }
            for job in jobs {
                job.fail(batch_failed(step, &e));
            }
        }
    }
}

fn batch_failed(step: &'static str, e: &Arc<sqlx::Error>) -> BatchFailed {
    BatchFailed {
        step,
        source: Arc::clone(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::BoxError;
    use sqlx::{ConnectOptions, Connection};

    #[derive(Debug, thiserror::Error)]
    enum TestError {
        #[error("refused after writing")]
        Refused,
        #[error("storage")]
        Storage(#[source] BoxError),
    }

    impl StorageError for TestError {
        fn storage(e: BoxError) -> Self {
            TestError::Storage(e)
        }
    }

    /// Inserts `x`, then fails if asked to (after its write), or breaks the transaction.
    struct Put {
        x: i64,
        refuse: bool,
        sabotage: bool,
    }

    impl Command for Put {
        type Output = ();
        type Error = TestError;
        fn run<'a>(&'a self, op: &'a mut OpConn<'_>) -> BoxFuture<'a, Result<(), TestError>> {
            Box::pin(async move {
                let sql = format!("{}INSERT INTO t (x) VALUES (?)", op.write_prefix());
                sqlx::query(&sql)
                    .bind(self.x)
                    .execute(op.conn())
                    .await
                    .map_err(|e| TestError::Storage(e.into()))?;
                if self.sabotage {
                    // A command that ends the writer's transaction behind its back.
                    exec(op.conn(), "ROLLBACK")
                        .await
                        .map_err(|e| TestError::Storage(e.into()))?;
                }
                if self.refuse {
                    return Err(TestError::Refused);
                }
                Ok(())
            })
        }
    }

    async fn setup() -> (tempfile::TempDir, Writer, SqliteConnection) {
        let dir = tempfile::tempdir().expect("tempdir");
        let opts = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(dir.path().join("t.db"))
            .create_if_missing(true)
            .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal);
        let mut conn = opts.connect().await.expect("connects");
        exec(&mut conn, "CREATE TABLE t (x INTEGER PRIMARY KEY)")
            .await
            .expect("table");
        let reader = opts.connect().await.expect("connects");
        (dir, Writer::spawn("test", conn), reader)
    }

    async fn stored(conn: &mut SqliteConnection) -> Vec<i64> {
        sqlx::query_scalar("SELECT x FROM t ORDER BY x")
            .fetch_all(conn)
            .await
            .expect("reads")
    }

    /// On a current-thread runtime every command below is queued before the writer runs, so they
    /// all share one transaction.
    #[tokio::test]
    async fn a_command_failing_after_its_write_is_undone_alone_within_its_batch() {
        let (_dir, writer, mut reader) = setup().await;
        // ok, refused, refused, ok, duplicate key (fails in SQL), ok, refused
        let plan = [
            (1, false),
            (2, true),
            (3, true),
            (4, false),
            (4, false),
            (5, false),
            (6, true),
        ];
        let results = futures::future::join_all(plan.iter().map(|&(x, refuse)| {
            writer.execute(Put {
                x,
                refuse,
                sabotage: false,
            })
        }))
        .await;
        let ok: Vec<bool> = results.iter().map(Result::is_ok).collect();
        assert_eq!(ok, [true, false, false, true, false, true, false]);
        assert!(matches!(results[1], Err(TestError::Refused)));
        assert!(matches!(results[4], Err(TestError::Storage(_))));
        assert_eq!(stored(&mut reader).await, vec![1, 4, 5]);
        reader.close().await.expect("closes");
    }

    #[tokio::test]
    async fn when_the_transaction_breaks_every_command_of_the_batch_fails_and_nothing_commits() {
        let (_dir, writer, mut reader) = setup().await;
        let put = |x, sabotage| Put {
            x,
            refuse: sabotage,
            sabotage,
        };
        let results = futures::future::join_all([
            writer.execute(put(1, false)),
            writer.execute(put(2, true)),
            writer.execute(put(3, false)),
        ])
        .await;
        assert!(results.iter().all(Result::is_err), "{results:?}");
        assert!(stored(&mut reader).await.is_empty());
        // The writer recovers for the next batch.
        writer.execute(put(7, false)).await.expect("next batch");
        assert_eq!(stored(&mut reader).await, vec![7]);
    }
}
