//! Helpers shared by the integration tests: fresh stores in temporary directories.
#![allow(dead_code)]

use std::path::Path;

use finpay_core::{AccountId, Amount, Balance, Currency, TransferId};
use finpay_ledger::payments::LeaseOwner;
use finpay_ledger::sqlite::{SqliteOptions, SqliteWallet, Synchronous};
use finpay_ledger::wallet::{TransferRequest, WalletStore};

/// Tests exercise logic, not the disk: `synchronous=OFF` keeps them fast. Durability under FULL is
/// what the benchmark example measures.
pub fn fast() -> SqliteOptions {
    SqliteOptions {
        synchronous: Synchronous::Off,
        ..SqliteOptions::default()
    }
}

pub fn acct(s: &str) -> AccountId {
    AccountId::try_from(s).expect("valid account id")
}

pub fn amount(minor: u64) -> Amount {
    Amount::try_new(minor).expect("valid amount")
}

pub fn balance(minor: u64) -> Balance {
    Balance::try_new(minor).expect("valid balance")
}

pub fn req(id: &str, from: &str, to: &str, minor: u64) -> TransferRequest {
    TransferRequest {
        id: TransferId::try_from(id).expect("valid transfer id"),
        debit_account_id: acct(from),
        credit_account_id: acct(to),
        amount: amount(minor),
        currency: Currency::Usd,
    }
}

/// A wallet at `dir/wallet.db` with accounts `a0..a{n}` in USD, each opened with `opening`.
pub async fn wallet_with(dir: &Path, n: usize, opening: u64) -> SqliteWallet {
    let w = SqliteWallet::open(&dir.join("wallet.db"), &fast())
        .await
        .expect("wallet opens");
    for i in 0..n {
        w.open_account(&acct(&format!("a{i}")), Currency::Usd, balance(opening))
            .await
            .expect("account opens");
    }
    w
}

pub async fn balance_of(w: &SqliteWallet, id: &str) -> u64 {
    w.account(&acct(id))
        .await
        .expect("read")
        .expect("account exists")
        .balance
        .minor()
}

pub async fn total(w: &SqliteWallet, n: usize) -> u64 {
    let mut sum = 0;
    for i in 0..n {
        sum += balance_of(w, &format!("a{i}")).await;
    }
    sum
}

/// The lease owner of a test's one driver.
pub fn owner() -> LeaseOwner {
    LeaseOwner::try_from("test-driver").expect("valid owner")
}

/// A lease no test outlives: expiry only happens where a test asks for it.
pub const TTL: std::time::Duration = std::time::Duration::from_secs(600);
