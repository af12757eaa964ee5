//! The wallet ledger: accounts and double-entry transfers in integer minor units.

use async_trait::async_trait;
use finpay_core::{AccountId, Amount, Balance, Currency, TransferId};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    pub id: AccountId,
    pub currency: Currency,
    pub balance: Balance,
}

/// A transfer as the caller asks for it. `id` is the idempotency key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferRequest {
    pub id: TransferId,
    pub debit_account_id: AccountId,
    pub credit_account_id: AccountId,
    pub amount: Amount,
    pub currency: Currency,
}

impl TransferRequest {
    /// The ledger rule every backend applies once it holds both accounts: both in the transfer's
    /// currency, no overdraft on the debit side, no overflow on the credit side. Returns the two
    /// balances after the transfer; the backend writes them and the two entries.
    pub fn balances_after(
        &self,
        debit: &Account,
        credit: &Account,
    ) -> Result<(Balance, Balance), WalletError> {
        for account in [debit, credit] {
            if account.currency != self.currency {
                return Err(WalletError::CurrencyMismatch {
                    account: account.id.clone(),
                    account_currency: account.currency,
                    transfer_currency: self.currency,
                });
            }
        }
        let debit_after =
            debit
                .balance
                .debit(self.amount)
                .map_err(|_| WalletError::InsufficientFunds {
                    account: debit.id.clone(),
                    balance: debit.balance,
                    amount: self.amount,
                })?;
        let credit_after = credit
            .balance
            .credit(self.amount)
            .map_err(|_| WalletError::Overflow(credit.id.clone()))?;
        Ok((debit_after, credit_after))
    }
}

/// A committed transfer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transfer {
    pub id: TransferId,
    pub debit_account_id: AccountId,
    pub credit_account_id: AccountId,
    pub amount: Amount,
    pub currency: Currency,
    pub created_at_ms: i64,
}

impl Transfer {
    /// Whether `req` asks for exactly this transfer (same id and same body).
    pub fn matches(&self, req: &TransferRequest) -> bool {
        self.id == req.id
            && self.debit_account_id == req.debit_account_id
            && self.credit_account_id == req.credit_account_id
            && self.amount == req.amount
            && self.currency == req.currency
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransferOutcome {
    /// The transfer was applied now.
    Created(Transfer),
    /// The same transfer (same id, same body) was applied before; nothing changed.
    Replayed(Transfer),
}

impl TransferOutcome {
    pub fn transfer(&self) -> &Transfer {
        match self {
            TransferOutcome::Created(t) | TransferOutcome::Replayed(t) => t,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WalletError {
    #[error("account {0} does not exist")]
    UnknownAccount(AccountId),
    #[error("account {account} holds {account_currency}, the transfer is in {transfer_currency}")]
    CurrencyMismatch {
        account: AccountId,
        account_currency: Currency,
        transfer_currency: Currency,
    },
    #[error("account {account} has {balance} minor units, the transfer needs {amount}")]
    InsufficientFunds {
        account: AccountId,
        balance: Balance,
        amount: Amount,
    },
    #[error("a transfer cannot debit and credit the same account {0}")]
    SameAccount(AccountId),
    #[error("transfer {0} already exists with a different body")]
    IdempotencyConflict(TransferId),
    #[error("account {0} already exists with a different currency or opening balance")]
    AccountConflict(AccountId),
    #[error("credit would overflow account {0}")]
    Overflow(AccountId),
    #[error("storage failed")]
    Storage(#[source] Box<dyn std::error::Error + Send + Sync>),
}

#[async_trait]
pub trait WalletStore: Send + Sync + 'static {
    /// Opens an account with an opening balance (the seed). Idempotent: opening the same account with
    /// the same currency and opening balance again is a no-op; a different one is `AccountConflict`.
    async fn open_account(
        &self,
        id: &AccountId,
        currency: Currency,
        opening: Balance,
    ) -> Result<Account, WalletError>;

    async fn account(&self, id: &AccountId) -> Result<Option<Account>, WalletError>;

    /// Applies a transfer atomically: both entries and both balances, or nothing.
    /// Same id + same body returns `Replayed`; same id + other body is `IdempotencyConflict`.
    async fn transfer(&self, req: &TransferRequest) -> Result<TransferOutcome, WalletError>;

    async fn transfer_by_id(&self, id: &TransferId) -> Result<Option<Transfer>, WalletError>;

    /// Succeeds when the store can be read and written; backs `/health/ready`.
    async fn ping(&self) -> Result<(), WalletError>;
}
