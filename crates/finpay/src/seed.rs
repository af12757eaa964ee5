//! The demo accounts `finpay up` opens in the wallet before any wallet replica starts.
//!
//! Seeding is idempotent: the ledger's `open_account` rules make opening an existing account with the
//! same currency and opening balance a no-op, so `finpay up` on an existing data dir changes nothing.

use std::path::Path;

use anyhow::Context as _;
use finpay_core::{AccountId, Balance, Currency};
use finpay_ledger::sqlite::{SqliteOptions, SqliteWallet};

/// Customers `cust-0000` .. `cust-0999`.
pub const CUSTOMERS: u32 = 1000;
pub const CUSTOMER_OPENING_MINOR: u64 = 1_000_000_000;
pub const MERCHANT: &str = "merchant-0";
pub const BLOCKED: &str = "cust-blocked";
pub const BLOCKED_OPENING_MINOR: u64 = 1_000_000;
pub const CURRENCY: Currency = Currency::Usd;

pub fn customer_id(i: u32) -> String {
    format!("cust-{i:04}")
}

/// Every demo account with its opening balance.
pub fn demo_accounts() -> anyhow::Result<Vec<(AccountId, Currency, Balance)>> {
    let mut out = Vec::with_capacity(CUSTOMERS as usize + 2);
    for i in 0..CUSTOMERS {
        out.push((
            AccountId::try_from(customer_id(i)).context("customer id")?,
            CURRENCY,
            Balance::try_new(CUSTOMER_OPENING_MINOR).context("customer opening balance")?,
        ));
    }
    out.push((
        AccountId::try_from(MERCHANT).context("merchant id")?,
        CURRENCY,
        Balance::try_new(0).context("merchant opening balance")?,
    ));
    out.push((
        AccountId::try_from(BLOCKED).context("blocked customer id")?,
        CURRENCY,
        Balance::try_new(BLOCKED_OPENING_MINOR).context("blocked opening balance")?,
    ));
    Ok(out)
}

/// The total of all opening balances, which `finpay check` expects the balances to sum to.
pub fn total_seeded_minor() -> u64 {
    u64::from(CUSTOMERS) * CUSTOMER_OPENING_MINOR + BLOCKED_OPENING_MINOR
}

/// Opens the demo accounts in `wallet_db` in one transaction. Returns how many accounts exist.
pub async fn seed_demo_accounts(wallet_db: &Path) -> anyhow::Result<usize> {
    let wallet = SqliteWallet::open(wallet_db, &SqliteOptions::default())
        .await
        .with_context(|| format!("open wallet {}", wallet_db.display()))?;
    let accounts = wallet
        .open_accounts(demo_accounts()?)
        .await
        .context("open demo accounts")?;
    Ok(accounts.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_accounts_match_the_contract() {
        let accounts = demo_accounts().expect("valid ids");
        assert_eq!(accounts.len(), 1002);
        assert_eq!(accounts[0].0.as_str(), "cust-0000");
        assert_eq!(accounts[999].0.as_str(), "cust-0999");
        let sum: u64 = accounts.iter().map(|a| a.2.minor()).sum();
        assert_eq!(sum, total_seeded_minor());
    }
}
