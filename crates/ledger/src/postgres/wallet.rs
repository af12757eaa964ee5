//! [`PgWallet`]: the double-entry ledger on PostgreSQL.

use async_trait::async_trait;
use finpay_core::{AccountId, Balance, Currency, TransferId};
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgPool, PgRow};
use sqlx::{Postgres, Row, Transaction};

use super::{open_pool, retrying, PgOpenError, PgOptions};
use crate::error::BoxError;
use crate::rows::{self, corrupt};
use crate::wallet::{
    check_written, decide, Account, BalanceChange, Decision, ReadBack, Transfer, TransferOutcome,
    TransferRequest, WalletError, WalletStore,
};

/// The wallet migrations, `migrations/postgres/wallet/`. Amounts are unsigned; the entry's
/// `direction` says which side. Balances can never be negative (CHECK), a transfer can never touch
/// one account twice (CHECK), and a transfer has at most one debit and one credit entry (primary
/// key).
pub(crate) static MIGRATOR: Migrator = sqlx::migrate!("migrations/postgres/wallet");

/// The wallet ledger in PostgreSQL. Any number of instances may share the database.
#[derive(Clone, Debug)]
pub struct PgWallet {
    pool: PgPool,
}

impl PgWallet {
    pub async fn open(opts: &PgOptions) -> Result<Self, PgOpenError> {
        Ok(Self {
            pool: open_pool(opts, &MIGRATOR).await?,
        })
    }

    /// Opens many accounts in one transaction, with the rules of [`WalletStore::open_account`].
    pub async fn open_accounts(
        &self,
        accounts: Vec<(AccountId, Currency, Balance)>,
    ) -> Result<Vec<Account>, WalletError> {
        retrying(|| async {
            let mut tx = self.pool.begin().await?;
            let mut out = Vec::with_capacity(accounts.len());
            for (id, currency, opening) in &accounts {
                match open_one(&mut tx, id, *currency, *opening).await? {
                    Ok(a) => out.push(a),
                    Err(e) => return Ok(Err(e)),
                }
            }
            tx.commit().await?;
            Ok(Ok(out))
        })
        .await
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

async fn open_one(
    tx: &mut Transaction<'_, Postgres>,
    id: &AccountId,
    currency: Currency,
    opening: Balance,
) -> Result<Result<Account, WalletError>, sqlx::Error> {
    sqlx::query(
        "INSERT INTO accounts (id, currency, balance, opening_balance, created_at_ms) \
         VALUES ($1, $2, $3, $3, $4) ON CONFLICT (id) DO NOTHING",
    )
    .bind(id.as_str())
    .bind(currency.code())
    .bind(opening.as_i64())
    .bind(crate::now_ms())
    .execute(&mut **tx)
    .await?;
    let row = sqlx::query(&format!(
        "SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE id = $1"
    ))
    .bind(id.as_str())
    .fetch_one(&mut **tx)
    .await?;
    Ok(
        account_from_row(&row).and_then(|(account, stored_opening)| {
            if account.currency == currency && stored_opening == opening {
                Ok(account)
            } else {
                Err(WalletError::AccountConflict(id.clone()))
            }
        }),
    )
}

/// One attempt at a transfer, in one transaction: read what [`decide`] needs, write, read back for
/// [`check_written`], commit. Business refusals roll back (by dropping `tx`).
async fn attempt_transfer(
    pool: &PgPool,
    req: &TransferRequest,
) -> Result<Result<TransferOutcome, WalletError>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let read = read_for_transfer(&mut tx, req).await?;
    let decision = read.and_then(|(existing, debit, credit)| decide(req, existing, debit, credit));
    let (debit, credit) = match decision {
        Ok(Decision::Replay(t)) => return Ok(Ok(TransferOutcome::Replayed(t))),
        Ok(Decision::Apply { debit, credit }) => (debit, credit),
        Err(e) => return Ok(Err(e)),
    };
    let t = req.transfer_at(crate::now_ms());
    let back = write_transfer(&mut tx, &t, debit, credit).await?;
    if let Err(e) = check_written(&t, debit, credit, &back) {
        return Ok(Err(storage(e)));
    }
    tx.commit().await?;
    Ok(Ok(TransferOutcome::Created(t)))
}

type TransferInputs = (Option<Transfer>, Option<Account>, Option<Account>);

/// Locks both accounts, then reads the transfer stored under the request's id, or else decodes the
/// two accounts. The inner `Result` is a corrupt row.
async fn read_for_transfer(
    tx: &mut Transaction<'_, Postgres>,
    req: &TransferRequest,
) -> Result<Result<TransferInputs, WalletError>, sqlx::Error> {
    // Lock both accounts in id order first: a concurrent transfer of the same id then waits here
    // and, once it proceeds, sees the winner's committed row below (READ COMMITTED).
    let rows = sqlx::query(&format!(
        "SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE id IN ($1, $2) ORDER BY id FOR UPDATE"
    ))
    .bind(req.debit_account_id.as_str())
    .bind(req.credit_account_id.as_str())
    .fetch_all(&mut **tx)
    .await?;
    let existing = sqlx::query(&format!(
        "SELECT {TRANSFER_COLUMNS} FROM transfers WHERE id = $1"
    ))
    .bind(req.id.as_str())
    .fetch_optional(&mut **tx)
    .await?;
    if let Some(row) = existing {
        // A stored transfer decides alone (replay or conflict): the accounts are not decoded.
        return Ok(transfer_from_row(&row).map(|t| (Some(t), None, None)));
    }
    Ok(sides(&rows, req).map(|(debit, credit)| (None, debit, credit)))
}

/// The debit and the credit account among the locked rows (`None`: no such account).
fn sides(
    rows: &[PgRow],
    req: &TransferRequest,
) -> Result<(Option<Account>, Option<Account>), WalletError> {
    let (mut debit, mut credit) = (None, None);
    for row in rows {
        let (a, _) = account_from_row(row)?;
        if a.id == req.debit_account_id {
            debit = Some(a);
        } else if a.id == req.credit_account_id {
            credit = Some(a);
        }
    }
    Ok((debit, credit))
}

/// Writes the transfer, its two entries and both balances, and reads back what
/// [`check_written`] compares.
async fn write_transfer(
    tx: &mut Transaction<'_, Postgres>,
    t: &Transfer,
    debit: BalanceChange,
    credit: BalanceChange,
) -> Result<ReadBack, sqlx::Error> {
    sqlx::query(&format!(
        "INSERT INTO transfers ({TRANSFER_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6)"
    ))
    .bind(t.id.as_str())
    .bind(t.debit_account_id.as_str())
    .bind(t.credit_account_id.as_str())
    .bind(t.amount.as_i64())
    .bind(t.currency.code())
    .bind(t.created_at_ms)
    .execute(&mut **tx)
    .await?;
    sqlx::query(
        "INSERT INTO entries (transfer_id, account_id, direction, amount) \
         VALUES ($1, $2, 'debit', $4), ($1, $3, 'credit', $4)",
    )
    .bind(t.id.as_str())
    .bind(t.debit_account_id.as_str())
    .bind(t.credit_account_id.as_str())
    .bind(t.amount.as_i64())
    .execute(&mut **tx)
    .await?;
    // The accounts are locked, so the update needs no guard; RETURNING reads back what it wrote.
    let updated: Vec<(String, i64)> = sqlx::query_as(
        "UPDATE accounts SET balance = CASE WHEN id = $1 THEN $2 ELSE $4 END \
         WHERE id IN ($1, $3) RETURNING id, balance",
    )
    .bind(t.debit_account_id.as_str())
    .bind(debit.after.as_i64())
    .bind(t.credit_account_id.as_str())
    .bind(credit.after.as_i64())
    .fetch_all(&mut **tx)
    .await?;
    let (entries, debits_minor, credits_minor): (i64, i64, i64) = sqlx::query_as(
        "SELECT COUNT(*), \
                COALESCE(SUM(amount) FILTER (WHERE direction = 'debit'), 0)::BIGINT, \
                COALESCE(SUM(amount) FILTER (WHERE direction = 'credit'), 0)::BIGINT \
         FROM entries WHERE transfer_id = $1",
    )
    .bind(t.id.as_str())
    .fetch_one(&mut **tx)
    .await?;
    let balance_of = |id: &AccountId| {
        updated
            .iter()
            .find(|(a, _)| a == id.as_str())
            .map(|&(_, b)| b)
    };
    Ok(ReadBack {
        entries,
        debits_minor,
        credits_minor,
        debit_balance: balance_of(&t.debit_account_id),
        credit_balance: balance_of(&t.credit_account_id),
    })
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

    async fn transfer(&self, req: &TransferRequest) -> Result<TransferOutcome, WalletError> {
        retrying(|| attempt_transfer(&self.pool, req)).await
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
