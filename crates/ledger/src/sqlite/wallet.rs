//! [`SqliteWallet`]: the double-entry ledger on SQLite.

use std::path::Path;

use async_trait::async_trait;
use finpay_core::{AccountId, Balance, Currency, TransferId};
use futures::future::BoxFuture;
use sqlx::migrate::Migrator;
use sqlx::sqlite::{SqlitePool, SqliteRow};
use sqlx::Row;

use super::writer::{Command, OpConn, Writer};
use super::{open_db, read_retrying, OpenError, SqliteOptions};
use crate::error::BoxError;
use crate::rows::{self, corrupt};
use crate::wallet::{
    check_written, decide, Account, BalanceChange, Decision, ReadBack, Transfer, TransferOutcome,
    TransferRequest, WalletError, WalletStore,
};

/// The wallet migrations, `migrations/sqlite/wallet/`. Amounts are unsigned; the entry's
/// `direction` says which side. Balances can never be negative (CHECK), a transfer can never touch
/// one account twice (CHECK), and a transfer has at most one debit and one credit entry (primary
/// key).
pub(crate) static MIGRATOR: Migrator = sqlx::migrate!("migrations/sqlite/wallet");

/// The wallet ledger in one SQLite file. Several instances (processes) may share the file.
#[derive(Clone)]
pub struct SqliteWallet {
    writer: Writer,
    readers: SqlitePool,
}

impl std::fmt::Debug for SqliteWallet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteWallet").finish_non_exhaustive()
    }
}

impl SqliteWallet {
    /// Opens the wallet at `path`, creating the file and its schema when absent.
    /// Must be called inside a tokio runtime: it starts the store's writer task.
    pub async fn open(path: &Path, opts: &SqliteOptions) -> Result<Self, OpenError> {
        let opened = open_db(path, opts, &MIGRATOR).await?;
        Ok(Self {
            writer: Writer::spawn("wallet", opened.writer),
            readers: opened.readers,
        })
    }

    /// Opens many accounts in one transaction (the seed of a fresh system), with the same rules as
    /// [`WalletStore::open_account`]. All or nothing.
    pub async fn open_accounts(
        &self,
        accounts: Vec<(AccountId, Currency, Balance)>,
    ) -> Result<Vec<Account>, WalletError> {
        self.writer.execute(OpenAccounts(accounts)).await
    }
}

fn storage(e: impl Into<BoxError>) -> WalletError {
    WalletError::Storage(e.into())
}

struct StoredAccount {
    account: Account,
    opening: Balance,
}

fn account_from_row(row: &SqliteRow) -> Result<StoredAccount, WalletError> {
    let id: String = row.try_get("id").map_err(storage)?;
    let currency: String = row.try_get("currency").map_err(storage)?;
    let balance: i64 = row.try_get("balance").map_err(storage)?;
    let opening: i64 = row.try_get("opening_balance").map_err(storage)?;
    let parsed_id =
        AccountId::try_from(id.as_str()).map_err(|e| storage(corrupt("account id", &id, e)))?;
    Ok(StoredAccount {
        account: Account {
            currency: currency
                .parse()
                .map_err(|e| storage(corrupt("account currency", &id, e)))?,
            balance: Balance::try_from_i64(balance)
                .map_err(|e| storage(corrupt("account balance", &id, e)))?,
            id: parsed_id,
        },
        opening: Balance::try_from_i64(opening)
            .map_err(|e| storage(corrupt("account opening balance", &id, e)))?,
    })
}

fn transfer_from_row(row: &SqliteRow) -> Result<Transfer, WalletError> {
    rows::transfer(row).map_err(storage)
}

const SELECT_ACCOUNT: &str =
    "SELECT id, currency, balance, opening_balance FROM accounts WHERE id = ?1";
const SELECT_TRANSFER: &str =
    "SELECT id, debit_account_id, credit_account_id, amount, currency, created_at_ms \
     FROM transfers WHERE id = ?1";

/// The whole transfer in two round trips: one read of everything [`decide`] needs, one
/// multi-statement write that also reads the result back for [`check_written`]. Inside the writer's
/// transaction; any error leaves nothing behind (the write query opens the command's savepoint).
async fn apply_transfer(
    op: &mut OpConn<'_>,
    req: &TransferRequest,
) -> Result<TransferOutcome, WalletError> {
    let (existing, debit, credit) = read_for_transfer(op, req).await?;
    let (debit, credit) = match decide(req, existing, debit, credit)? {
        Decision::Replay(t) => return Ok(TransferOutcome::Replayed(t)),
        Decision::Apply { debit, credit } => (debit, credit),
    };
    let transfer = req.transfer_at(crate::now_ms());
    let back = write_transfer(op, &transfer, debit, credit).await?;
    check_written(&transfer, debit, credit, &back).map_err(storage)?;
    Ok(TransferOutcome::Created(transfer))
}

/// The transfer stored under the request's id, or else the two accounts it names, in one query.
async fn read_for_transfer(
    op: &mut OpConn<'_>,
    req: &TransferRequest,
) -> Result<(Option<Transfer>, Option<Account>, Option<Account>), WalletError> {
    let row = sqlx::query(
        "SELECT t.id, t.debit_account_id, t.credit_account_id, t.amount, t.currency, t.created_at_ms, \
                d.currency AS d_currency, d.balance AS d_balance, \
                c.currency AS c_currency, c.balance AS c_balance \
         FROM (SELECT ?1 AS tid, ?2 AS did, ?3 AS cid) AS q \
         LEFT JOIN transfers t ON t.id = q.tid \
         LEFT JOIN accounts d ON d.id = q.did \
         LEFT JOIN accounts c ON c.id = q.cid",
    )
    .bind(req.id.as_str())
    .bind(req.debit_account_id.as_str())
    .bind(req.credit_account_id.as_str())
    .fetch_one(op.conn())
    .await
    .map_err(storage)?;
    if row
        .try_get::<Option<String>, _>("id")
        .map_err(storage)?
        .is_some()
    {
        // A stored transfer decides alone (replay or conflict): the accounts are not decoded.
        return Ok((Some(transfer_from_row(&row)?), None, None));
    }
    let debit = side(&row, "d_", &req.debit_account_id)?;
    let credit = side(&row, "c_", &req.credit_account_id)?;
    Ok((None, debit, credit))
}

/// Writes the transfer, its two entries and both balances, and reads back what
/// [`check_written`] compares.
async fn write_transfer(
    op: &mut OpConn<'_>,
    transfer: &Transfer,
    debit: BalanceChange,
    credit: BalanceChange,
) -> Result<ReadBack, WalletError> {
    // Each balance update is guarded by the value it was computed from; the final SELECT reads
    // back what was written, so the check sees the stored truth, not our intent.
    //
    // Plain `?` placeholders, bound in order of appearance: sqlx 0.8 binds numbered `?NNN`
    // placeholders wrongly across the statements of one query once they skip numbers.
    let sql = format!(
        "{prefix}\
         INSERT INTO transfers (id, debit_account_id, credit_account_id, amount, currency, created_at_ms) \
             VALUES (?, ?, ?, ?, ?, ?); \
         INSERT INTO entries (transfer_id, account_id, direction, amount) \
             VALUES (?, ?, 'debit', ?), (?, ?, 'credit', ?); \
         UPDATE accounts SET balance = ? WHERE id = ? AND balance = ?; \
         UPDATE accounts SET balance = ? WHERE id = ? AND balance = ?; \
         SELECT (SELECT COUNT(*) FROM entries WHERE transfer_id = ?), \
                (SELECT COALESCE(SUM(amount), 0) FROM entries WHERE transfer_id = ? AND direction = 'debit'), \
                (SELECT COALESCE(SUM(amount), 0) FROM entries WHERE transfer_id = ? AND direction = 'credit'), \
                (SELECT balance FROM accounts WHERE id = ?), \
                (SELECT balance FROM accounts WHERE id = ?)",
        prefix = op.write_prefix()
    );
    let (id, d, c) = (
        transfer.id.as_str(),
        transfer.debit_account_id.as_str(),
        transfer.credit_account_id.as_str(),
    );
    let amount = transfer.amount.as_i64();
    // `fetch_all`, not `fetch_one`: sqlx stops a multi-statement query at the row limit.
    let rows = sqlx::query(&sql)
        .bind(id)
        .bind(d)
        .bind(c)
        .bind(amount)
        .bind(transfer.currency.code())
        .bind(transfer.created_at_ms)
        .bind(id)
        .bind(d)
        .bind(amount)
        .bind(id)
        .bind(c)
        .bind(amount)
        .bind(debit.after.as_i64())
        .bind(d)
        .bind(debit.before.as_i64())
        .bind(credit.after.as_i64())
        .bind(c)
        .bind(credit.before.as_i64())
        .bind(id)
        .bind(id)
        .bind(id)
        .bind(d)
        .bind(c)
        .fetch_all(op.conn())
        .await
        .map_err(storage)?;
    let row = rows
        .first()
        .ok_or_else(|| storage(corrupt("transfer", &transfer.id, "no read-back row")))?;
    let int = |i: usize| row.try_get::<i64, _>(i).map_err(storage);
    let balance = |i: usize| row.try_get::<Option<i64>, _>(i).map_err(storage);
    Ok(ReadBack {
        entries: int(0)?,
        debits_minor: int(1)?,
        credits_minor: int(2)?,
        debit_balance: balance(3)?,
        credit_balance: balance(4)?,
    })
}

/// One side of a transfer from the read row: `None` columns mean the account does not exist.
fn side(row: &SqliteRow, prefix: &str, id: &AccountId) -> Result<Option<Account>, WalletError> {
    let currency: Option<String> = row
        .try_get(format!("{prefix}currency").as_str())
        .map_err(storage)?;
    let balance: Option<i64> = row
        .try_get(format!("{prefix}balance").as_str())
        .map_err(storage)?;
    match (currency, balance) {
        (Some(currency), Some(balance)) => Ok(Some(Account {
            id: id.clone(),
            currency: currency
                .parse()
                .map_err(|e| storage(corrupt("account currency", id, e)))?,
            balance: Balance::try_from_i64(balance)
                .map_err(|e| storage(corrupt("account balance", id, e)))?,
        })),
        _ => Ok(None),
    }
}

async fn apply_open_account(
    op: &mut OpConn<'_>,
    id: &AccountId,
    currency: Currency,
    opening: Balance,
) -> Result<Account, WalletError> {
    let existing = sqlx::query(SELECT_ACCOUNT)
        .bind(id.as_str())
        .fetch_optional(op.conn())
        .await
        .map_err(storage)?;
    if let Some(row) = existing {
        let stored = account_from_row(&row)?;
        return if stored.account.currency == currency && stored.opening == opening {
            Ok(stored.account)
        } else {
            Err(WalletError::AccountConflict(id.clone()))
        };
    }
    let sql = format!(
        "{}INSERT INTO accounts (id, currency, balance, opening_balance, created_at_ms) \
         VALUES (?1, ?2, ?3, ?3, ?4)",
        op.write_prefix()
    );
    sqlx::query(&sql)
        .bind(id.as_str())
        .bind(currency.code())
        .bind(opening.as_i64())
        .bind(crate::now_ms())
        .execute(op.conn())
        .await
        .map_err(storage)?;
    Ok(Account {
        id: id.clone(),
        currency,
        balance: opening,
    })
}

struct ApplyTransfer(TransferRequest);

impl Command for ApplyTransfer {
    type Output = TransferOutcome;
    type Error = WalletError;
    fn run<'a>(
        &'a self,
        op: &'a mut OpConn<'_>,
    ) -> BoxFuture<'a, Result<TransferOutcome, WalletError>> {
        Box::pin(apply_transfer(op, &self.0))
    }
}

struct OpenAccounts(Vec<(AccountId, Currency, Balance)>);

impl Command for OpenAccounts {
    type Output = Vec<Account>;
    type Error = WalletError;
    fn run<'a>(
        &'a self,
        op: &'a mut OpConn<'_>,
    ) -> BoxFuture<'a, Result<Vec<Account>, WalletError>> {
        Box::pin(async move {
            let mut out = Vec::with_capacity(self.0.len());
            for (id, currency, opening) in &self.0 {
                out.push(apply_open_account(op, id, *currency, *opening).await?);
            }
            Ok(out)
        })
    }
}

/// Proves the writer is alive and can take the write lock; writes nothing.
pub(crate) struct Ping;

impl Command for Ping {
    type Output = ();
    type Error = WalletError;
    fn run<'a>(&'a self, _op: &'a mut OpConn<'_>) -> BoxFuture<'a, Result<(), WalletError>> {
        Box::pin(async { Ok(()) })
    }
}

#[async_trait]
impl WalletStore for SqliteWallet {
    async fn open_account(
        &self,
        id: &AccountId,
        currency: Currency,
        opening: Balance,
    ) -> Result<Account, WalletError> {
        let mut accounts = self
            .writer
            .execute(OpenAccounts(vec![(id.clone(), currency, opening)]))
            .await?;
        accounts
            .pop()
            .ok_or_else(|| storage(corrupt("account", id, "not returned after opening")))
    }

    async fn account(&self, id: &AccountId) -> Result<Option<Account>, WalletError> {
        let row = read_retrying(|| {
            sqlx::query(SELECT_ACCOUNT)
                .bind(id.as_str())
                .fetch_optional(&self.readers)
        })
        .await
        .map_err(storage)?;
        row.as_ref()
            .map(|r| account_from_row(r).map(|a| a.account))
            .transpose()
    }

    async fn transfer(&self, req: &TransferRequest) -> Result<TransferOutcome, WalletError> {
        self.writer.execute(ApplyTransfer(req.clone())).await
    }

    async fn transfer_by_id(&self, id: &TransferId) -> Result<Option<Transfer>, WalletError> {
        let row = read_retrying(|| {
            sqlx::query(SELECT_TRANSFER)
                .bind(id.as_str())
                .fetch_optional(&self.readers)
        })
        .await
        .map_err(storage)?;
        row.as_ref().map(transfer_from_row).transpose()
    }

    async fn ping(&self) -> Result<(), WalletError> {
        read_retrying(|| sqlx::query("SELECT 1").execute(&self.readers))
            .await
            .map_err(storage)?;
        self.writer.execute(Ping).await
    }
}
