//! [`PgWallet`]: the double-entry ledger on PostgreSQL, with transfers in group commit.
//!
//! # Why a batch, and what it costs
//!
//! Every payment credits the same merchant account, so every transfer must lock that one row.
//! Locked one transfer at a time (BEGIN, lock, read, three writes, read back, COMMIT: eight round
//! trips), the row is held for those round trips plus the commit's WAL flush, and every other
//! transfer waits behind it: the merchant row is the ceiling of the whole system.
//!
//! So, as the SQLite writer does, a writer task per store takes whatever transfers are queued (up
//! to [`MAX_BATCH`]) and runs them as one transaction in a fixed number of round trips, whatever
//! the batch size:
//!
//! 1. `BEGIN`;
//! 2. lock every account of the batch at once, `SELECT ... WHERE id = ANY($1) ORDER BY id FOR
//!    UPDATE`: one lock order for every batch of every replica, so two wallet replicas' batches
//!    wait for each other but never deadlock;
//! 3. read the batch's transfer ids that already exist, `= ANY` (after the locks, so a transfer a
//!    concurrent batch committed on these accounts is seen);
//! 4. decide each transfer in order in Rust with [`decide`], carrying the balances and the
//!    transfer ids of the batch so far (a repeated id in one batch is a replay of the first);
//! 5. write every transfer, its two entries and each touched account's final balance in one
//!    statement of `UNNEST` arrays (data-modifying CTEs), whose `RETURNING` rows are what
//!    [`check_batch_written`] compares before anything commits;
//! 6. `COMMIT`, and only then answer each caller.
//!
//! A serialization failure, a deadlock or a unique race (a transfer id another replica inserted in
//! the meantime) rolls the batch back and runs it again, at most [`RETRIES_MAX`] times.
//!
//! The arithmetic, with a local round trip `r` of about 0.1 ms and a commit `c` (WAL flush) of
//! about 1 ms: the merchant row is locked from step 2 to the end of step 6, about `2r + c` plus the
//! write, some 1.5 ms however many transfers the batch holds. Under load a batch holds whatever
//! arrived while the previous one held the lock: at 2,000 payments/s that is 3 to 4 transfers per
//! batch with one replica, and the ceiling of one lock holder is `MAX_BATCH / 1.5 ms`, far above
//! what the rest of the payment path can feed. With two replicas the batches alternate on the
//! lock, so each waits at most one other batch.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use finpay_core::{AccountId, Balance, Currency, TransferId};
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgPool, PgRow};
use sqlx::{Postgres, Row, Transaction};
use tokio::sync::{mpsc, oneshot};

use super::{is_transient, open_pool, pause, PgOpenError, PgOptions, RETRIES_MAX};
use crate::error::BoxError;
use crate::rows::{self, corrupt};
use crate::wallet::{
    check_batch_written, decide, Account, Applied, Decision, EntrySums, Transfer, TransferOutcome,
    TransferRequest, WalletError, WalletStore,
};

/// The most transfers one transaction holds: bounds the work one failed COMMIT costs and the
/// arrays of one statement.
pub const MAX_BATCH: usize = 256;

/// Writer tasks taking batches from the one queue. One per store: a batch holds everything queued
/// while the previous one held the merchant's lock, so under load batches grow rather than
/// split. Two wallet replicas are two writers, whose batches take turns on the lock; the second
/// has begun and waits at its lock statement when the first commits, so the row is not idle for
/// a round trip between them.
const WRITERS: usize = 1;

/// How many transfers may wait for the writers; past this, callers wait (backpressure).
const QUEUE_CAPACITY: usize = 4096;

/// The wallet migrations, `migrations/postgres/wallet/`. Amounts are unsigned; the entry's
/// `direction` says which side. Balances can never be negative (CHECK), a transfer can never touch
/// one account twice (CHECK), and a transfer has at most one debit and one credit entry (primary
/// key).
pub(crate) static MIGRATOR: Migrator = sqlx::migrate!("migrations/postgres/wallet");

/// The wallet ledger in PostgreSQL. Any number of instances may share the database.
#[derive(Clone, Debug)]
pub struct PgWallet {
    pool: PgPool,
    writer: mpsc::Sender<Job>,
}

/// One queued transfer and where its answer goes.
#[derive(Debug)]
struct Job {
    req: TransferRequest,
    reply: oneshot::Sender<Result<TransferOutcome, WalletError>>,
}

impl PgWallet {
    /// Opens the wallet and starts its writer task (so it must be called inside a tokio runtime);
    /// the task ends when every handle is dropped.
    pub async fn open(opts: &PgOptions) -> Result<Self, PgOpenError> {
        let pool = open_pool(opts, &MIGRATOR).await?;
        let (writer, queue) = mpsc::channel(QUEUE_CAPACITY);
        let queue = Arc::new(tokio::sync::Mutex::new(queue));
        for _ in 0..WRITERS {
            tokio::spawn(run_writer(pool.clone(), Arc::clone(&queue)));
        }
        Ok(Self { pool, writer })
    }

    /// Opens many accounts in one transaction and one statement (an `UNNEST` of the seed), with
    /// the rules of [`WalletStore::open_account`]. All or nothing.
    pub async fn open_accounts(
        &self,
        accounts: Vec<(AccountId, Currency, Balance)>,
    ) -> Result<Vec<Account>, WalletError> {
        for _ in 0..=RETRIES_MAX {
            if let Some(opened) =
                super::retrying(|| open_accounts_once(&self.pool, &accounts)).await?
            {
                return Ok(opened);
            }
        }
        Err(storage(corrupt(
            "accounts",
            accounts.len(),
            "kept being inserted concurrently",
        )))
    }
}

/// The writer stopped (its task ended); nothing more can be written through this store.
#[derive(Debug, thiserror::Error)]
#[error("the PostgreSQL wallet writer has stopped")]
struct WriterStopped;

/// The batch holding this transfer could not be committed; the transfer did not happen.
#[derive(Debug, thiserror::Error)]
#[error("the transaction holding this transfer was rolled back")]
struct BatchFailed(#[source] Arc<sqlx::Error>);

async fn run_writer(pool: PgPool, queue: Arc<tokio::sync::Mutex<mpsc::Receiver<Job>>>) {
    let mut batch: Vec<Job> = Vec::with_capacity(MAX_BATCH);
    // The queue is held only while a batch is taken, not while it runs.
    while queue.lock().await.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let reqs: Vec<&TransferRequest> = batch.iter().map(|j| &j.req).collect();
        let answers = run_batch(&pool, &reqs).await;
        debug_assert_eq!(answers.len(), batch.len());
        for (job, answer) in batch.drain(..).zip(answers) {
            // The caller may have gone away (its future was dropped); nothing to tell then.
            let _ = job.reply.send(answer);
        }
    }
    tracing::debug!("PostgreSQL wallet writer stopped: every handle was dropped");
}

/// One batch, retried whole on a transient failure; an answer per request, in order.
async fn run_batch(
    pool: &PgPool,
    reqs: &[&TransferRequest],
) -> Vec<Result<TransferOutcome, WalletError>> {
    let mut attempt = 0;
    loop {
        match attempt_batch(pool, reqs).await {
            Ok(answers) => return answers,
            Err(e) if is_transient(&e) && attempt < RETRIES_MAX => {
                attempt += 1;
                tracing::debug!(attempt, size = reqs.len(), error = %e, "wallet batch retried");
                pause(attempt).await;
            }
            Err(e) => {
                tracing::warn!(size = reqs.len(), error = %e, "wallet batch rolled back");
                let e = Arc::new(e);
                return reqs
                    .iter()
                    .map(|_| Err(storage(BatchFailed(Arc::clone(&e)))))
                    .collect();
            }
        }
    }
}

fn storage(e: impl Into<BoxError>) -> WalletError {
    WalletError::Storage(e.into())
}

fn account_from_row(row: &PgRow) -> Result<(Account, Balance), WalletError> {
    let id: String = row.try_get("id").map_err(storage)?;
    let currency: String = row.try_get("currency").map_err(storage)?;
    let balance: i64 = row.try_get("balance").map_err(storage)?;
    let opening: i64 = row.try_get("opening_balance").map_err(storage)?;
    let bad = |what, e: &dyn std::fmt::Display| storage(corrupt(what, &id, e));
    Ok((
        Account {
            id: AccountId::try_from(id.as_str()).map_err(|e| bad("account id", &e))?,
            currency: currency.parse().map_err(|e| bad("currency", &e))?,
            balance: Balance::try_from_i64(balance).map_err(|e| bad("balance", &e))?,
        },
        Balance::try_from_i64(opening).map_err(|e| bad("opening balance", &e))?,
    ))
}

fn transfer_from_row(row: &PgRow) -> Result<Transfer, WalletError> {
    rows::transfer(row).map_err(storage)
}

const ACCOUNT_COLUMNS: &str = "id, currency, balance, opening_balance";
const TRANSFER_COLUMNS: &str =
    "id, debit_account_id, credit_account_id, amount, currency, created_at_ms";

/// One attempt at opening the seed: BEGIN, one statement, COMMIT (or ROLLBACK on a conflict).
/// `None`: an account was inserted concurrently, after this attempt's snapshot; try again.
async fn open_accounts_once(
    pool: &PgPool,
    accounts: &[(AccountId, Currency, Balance)],
) -> Result<Result<Option<Vec<Account>>, WalletError>, sqlx::Error> {
    let ids: Vec<&str> = accounts.iter().map(|(id, _, _)| id.as_str()).collect();
    let currencies: Vec<&str> = accounts.iter().map(|(_, c, _)| c.code()).collect();
    let openings: Vec<i64> = accounts.iter().map(|(_, _, b)| b.as_i64()).collect();
    let mut tx = pool.begin().await?;
    // Inserted rows come from RETURNING, existing ones from the snapshot; an account another
    // transaction inserted after the snapshot is in neither, and the attempt is repeated.
    let rows = sqlx::query(&format!(
        "WITH input AS (SELECT * FROM UNNEST($1::text[], $2::text[], $3::bigint[]) \
                        AS i(id, currency, opening)), \
              ins AS (INSERT INTO accounts (id, currency, balance, opening_balance, created_at_ms) \
                      SELECT id, currency, opening, opening, $4 FROM input \
                      ON CONFLICT (id) DO NOTHING RETURNING {ACCOUNT_COLUMNS}) \
         SELECT {ACCOUNT_COLUMNS} FROM ins \
         UNION ALL SELECT {ACCOUNT_COLUMNS} FROM accounts \
             WHERE id IN (SELECT id FROM input) AND id NOT IN (SELECT id FROM ins)"
    ))
    .bind(&ids)
    .bind(&currencies)
    .bind(&openings)
    .bind(crate::now_ms())
    .fetch_all(&mut *tx)
    .await?;
    let mut stored = HashMap::with_capacity(rows.len());
    for row in &rows {
        match account_from_row(row) {
            Ok((account, opening)) => {
                stored.insert(account.id.clone(), (account, opening));
            }
            Err(e) => return Ok(Err(e)),
        }
    }
    let mut out = Vec::with_capacity(accounts.len());
    for (id, currency, opening) in accounts {
        let Some((account, stored_opening)) = stored.get(id) else {
            // Inserted by another transaction after this one's snapshot: ask again.
            return Ok(Ok(None));
        };
        if account.currency != *currency || stored_opening != opening {
            // Dropping `tx` rolls the whole seed back.
            return Ok(Err(WalletError::AccountConflict(id.clone())));
        }
        out.push(account.clone());
    }
    tx.commit().await?;
    Ok(Ok(Some(out)))
}

/// What a batch read under its locks: the accounts (or why one does not decode) and the transfers
/// already stored under the batch's ids.
struct Locked {
    accounts: HashMap<AccountId, Result<Account, String>>,
    transfers: HashMap<TransferId, Result<Transfer, String>>,
}

/// Steps 1 to 3 of the module docs: BEGIN, lock the accounts in id order, read the transfers.
async fn lock_and_read(
    tx: &mut Transaction<'_, Postgres>,
    reqs: &[&TransferRequest],
) -> Result<Locked, sqlx::Error> {
    let mut ids: Vec<&str> = reqs
        .iter()
        .flat_map(|r| [r.debit_account_id.as_str(), r.credit_account_id.as_str()])
        .collect();
    ids.sort_unstable();
    ids.dedup();
    let rows = sqlx::query(&format!(
        "SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE id = ANY($1) ORDER BY id FOR UPDATE"
    ))
    .bind(&ids)
    .fetch_all(&mut **tx)
    .await?;
    let mut accounts = HashMap::with_capacity(rows.len());
    for row in &rows {
        let id: String = row.try_get("id")?;
        let decoded = account_from_row(row)
            .map(|(a, _)| a)
            .map_err(|e| error_text(&e));
        if let Ok(id) = AccountId::try_from(id.as_str()) {
            accounts.insert(id, decoded);
        }
    }
    let mut tids: Vec<&str> = reqs.iter().map(|r| r.id.as_str()).collect();
    tids.sort_unstable();
    tids.dedup();
    let rows = sqlx::query(&format!(
        "SELECT {TRANSFER_COLUMNS} FROM transfers WHERE id = ANY($1)"
    ))
    .bind(&tids)
    .fetch_all(&mut **tx)
    .await?;
    let mut transfers = HashMap::with_capacity(rows.len());
    for row in &rows {
        let id: String = row.try_get("id")?;
        let decoded = transfer_from_row(row).map_err(|e| error_text(&e));
        if let Ok(id) = TransferId::try_from(id.as_str()) {
            transfers.insert(id, decoded);
        }
    }
    Ok(Locked {
        accounts,
        transfers,
    })
}

/// A corrupt row's error as text, so that every transfer it concerns can be told.
fn error_text(e: &WalletError) -> String {
    match e {
        WalletError::Storage(inner) => inner.to_string(),
        other => other.to_string(),
    }
}

/// Step 4: each transfer decided in order against the batch's running state. Returns each
/// request's answer-to-be and the transfers to write.
fn decide_batch(
    reqs: &[&TransferRequest],
    mut locked: Locked,
    now_ms: i64,
) -> (Vec<Result<TransferOutcome, WalletError>>, Vec<Applied>) {
    let mut answers = Vec::with_capacity(reqs.len());
    let mut applied = Vec::new();
    for req in reqs {
        let existing = match locked.transfers.get(&req.id) {
            Some(Ok(t)) => Some(t.clone()),
            Some(Err(e)) => {
                answers.push(Err(storage(corrupt("transfer", &req.id, e))));
                continue;
            }
            None => None,
        };
        let side = |id: &AccountId| match locked.accounts.get(id) {
            Some(Ok(a)) => Ok(Some(a.clone())),
            Some(Err(e)) => Err(storage(corrupt("account", id, e))),
            None => Ok(None),
        };
        let decided = side(&req.debit_account_id).and_then(|debit| {
            let credit = side(&req.credit_account_id)?;
            decide(req, existing, debit, credit)
        });
        match decided {
            Ok(Decision::Replay(t)) => answers.push(Ok(TransferOutcome::Replayed(t))),
            Ok(Decision::Apply { debit, credit }) => {
                let t = req.transfer_at(now_ms);
                for (id, change) in [(&t.debit_account_id, debit), (&t.credit_account_id, credit)] {
                    if let Some(Ok(a)) = locked.accounts.get_mut(id) {
                        a.balance = change.after;
                    }
                }
                // A later request with this id in the same batch is a replay (or a conflict).
                locked.transfers.insert(t.id.clone(), Ok(t.clone()));
                answers.push(Ok(TransferOutcome::Created(t.clone())));
                applied.push(Applied {
                    transfer: t,
                    debit,
                    credit,
                });
            }
            Err(e) => answers.push(Err(e)),
        }
    }
    (answers, applied)
}

/// One attempt at a batch, in one transaction of five round trips (module docs).
async fn attempt_batch(
    pool: &PgPool,
    reqs: &[&TransferRequest],
) -> Result<Vec<Result<TransferOutcome, WalletError>>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let locked = lock_and_read(&mut tx, reqs).await?;
    let (answers, applied) = decide_batch(reqs, locked, crate::now_ms());
    if applied.is_empty() {
        // Replays and refusals only: nothing to write, and the locks go with the rollback.
        tx.rollback().await?;
        return Ok(answers);
    }
    let (entries, stored) = write_batch(&mut tx, &applied).await?;
    if let Err(e) = check_batch_written(&applied, &entries, &stored) {
        // A bug, never committed: dropping `tx` rolls back, and no transfer of the batch happened.
        tracing::error!(error = %e, size = applied.len(), "wallet batch failed its pairing check");
        let e = Arc::new(e);
        return Ok(reqs.iter().map(|_| Err(storage(Arc::clone(&e)))).collect());
    }
    tx.commit().await?;
    Ok(answers)
}

type WrittenBack = (HashMap<TransferId, EntrySums>, HashMap<AccountId, i64>);

/// Step 5: every transfer, its entries and each account's final balance in one statement; its
/// `RETURNING` rows are the entries and balances as stored.
async fn write_batch(
    tx: &mut Transaction<'_, Postgres>,
    applied: &[Applied],
) -> Result<WrittenBack, sqlx::Error> {
    let n = applied.len();
    let (mut t_id, mut t_debit, mut t_credit, mut t_amount, mut t_currency, mut t_at) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut e_tid, mut e_account, mut e_dir, mut e_amount) = (
        Vec::with_capacity(2 * n),
        Vec::with_capacity(2 * n),
        Vec::with_capacity(2 * n),
        Vec::with_capacity(2 * n),
    );
    let mut last: HashMap<&str, i64> = HashMap::new();
    for a in applied {
        let t = &a.transfer;
        t_id.push(t.id.as_str());
        t_debit.push(t.debit_account_id.as_str());
        t_credit.push(t.credit_account_id.as_str());
        t_amount.push(t.amount.as_i64());
        t_currency.push(t.currency.code());
        t_at.push(t.created_at_ms);
        for (account, dir, change) in [
            (&t.debit_account_id, "debit", a.debit),
            (&t.credit_account_id, "credit", a.credit),
        ] {
            e_tid.push(t.id.as_str());
            e_account.push(account.as_str());
            e_dir.push(dir);
            e_amount.push(t.amount.as_i64());
            last.insert(account.as_str(), change.after.as_i64());
        }
    }
    let (b_id, b_balance): (Vec<&str>, Vec<i64>) = last.into_iter().unzip();
    let rows = sqlx::query(&format!(
        "WITH t AS (INSERT INTO transfers ({TRANSFER_COLUMNS}) \
                    SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::bigint[], \
                                         $5::text[], $6::bigint[]) \
                    RETURNING id), \
              e AS (INSERT INTO entries (transfer_id, account_id, direction, amount) \
                    SELECT * FROM UNNEST($7::text[], $8::text[], $9::text[], $10::bigint[]) \
                    RETURNING transfer_id, direction, amount), \
              b AS (UPDATE accounts a SET balance = v.balance \
                    FROM UNNEST($11::text[], $12::bigint[]) AS v(id, balance) \
                    WHERE a.id = v.id RETURNING a.id, a.balance) \
         SELECT 'entry' AS kind, transfer_id AS id, direction, amount FROM e \
         UNION ALL SELECT 'balance', id, NULL, balance FROM b"
    ))
    .bind(&t_id)
    .bind(&t_debit)
    .bind(&t_credit)
    .bind(&t_amount)
    .bind(&t_currency)
    .bind(&t_at)
    .bind(&e_tid)
    .bind(&e_account)
    .bind(&e_dir)
    .bind(&e_amount)
    .bind(&b_id)
    .bind(&b_balance)
    .fetch_all(&mut **tx)
    .await?;
    let mut entries: HashMap<TransferId, EntrySums> = HashMap::with_capacity(n);
    let mut stored: HashMap<AccountId, i64> = HashMap::new();
    for row in &rows {
        let kind: String = row.try_get("kind")?;
        let id: String = row.try_get("id")?;
        let amount: i64 = row.try_get("amount")?;
        if kind == "balance" {
            if let Ok(id) = AccountId::try_from(id.as_str()) {
                stored.insert(id, amount);
            }
            continue;
        }
        let Ok(id) = TransferId::try_from(id.as_str()) else {
            continue;
        };
        let direction: Option<String> = row.try_get("direction")?;
        let sums = entries.entry(id).or_default();
        sums.entries += 1;
        match direction.as_deref() {
            Some("debit") => sums.debits_minor += amount,
            Some("credit") => sums.credits_minor += amount,
            _ => {}
        }
    }
    Ok((entries, stored))
}

#[async_trait]
impl WalletStore for PgWallet {
    async fn open_account(
        &self,
        id: &AccountId,
        currency: Currency,
        opening: Balance,
    ) -> Result<Account, WalletError> {
        let mut accounts = self
            .open_accounts(vec![(id.clone(), currency, opening)])
            .await?;
        accounts
            .pop()
            .ok_or_else(|| storage(corrupt("account", id, "not returned after opening")))
    }

    async fn account(&self, id: &AccountId) -> Result<Option<Account>, WalletError> {
        let row = sqlx::query(&format!(
            "SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE id = $1"
        ))
        .bind(id.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(storage)?;
        row.as_ref()
            .map(|r| account_from_row(r).map(|(a, _)| a))
            .transpose()
    }

    /// Queued for the writer task, which commits it with whatever else is queued (module docs).
    async fn transfer(&self, req: &TransferRequest) -> Result<TransferOutcome, WalletError> {
        let (reply, answer) = oneshot::channel();
        let job = Job {
            req: req.clone(),
            reply,
        };
        self.writer
            .send(job)
            .await
            .map_err(|_| storage(WriterStopped))?;
        answer.await.map_err(|_| storage(WriterStopped))?
    }

    async fn transfer_by_id(&self, id: &TransferId) -> Result<Option<Transfer>, WalletError> {
        let row = sqlx::query(&format!(
            "SELECT {TRANSFER_COLUMNS} FROM transfers WHERE id = $1"
        ))
        .bind(id.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(storage)?;
        row.as_ref().map(transfer_from_row).transpose()
    }

    async fn ping(&self) -> Result<(), WalletError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(|_| ())
            .map_err(storage)
    }
}
