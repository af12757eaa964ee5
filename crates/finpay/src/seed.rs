//! The demo accounts `finpay up` opens in the wallet before any wallet replica starts.
//!
//! Seeding is idempotent: the ledger's `open_account` rules make opening an existing account with the
//! same currency and opening balance a no-op, so `finpay up` on an existing data dir changes nothing.
//!
//! `finpay seed` ([`SeedArgs`]) does the same for a deployed system on PostgreSQL: the Kubernetes
//! seeding Job and the container smoke test run it against `<prefix>_wallet`.

use std::path::Path;
use std::process::ExitCode;

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

/// `finpay seed`: open the demo accounts in a deployed system's `<prefix>_wallet` schema.
#[derive(Debug, Clone, clap::Args)]
pub struct SeedArgs {
    /// The PostgreSQL server; it may carry a password, so it can come from the environment
    /// (as the services read it) rather than the command line.
    #[arg(long, env = "FINPAY_STORAGE__URL", hide_env_values = true)]
    pub database_url: String,
    /// The deployment's schema prefix: the accounts go into `<prefix>_wallet`.
    #[arg(long)]
    pub schema_prefix: String,
}

impl SeedArgs {
    /// Opens the demo accounts (idempotent) through the PostgreSQL path of
    /// [`crate::storage::Storage::seed`] and prints how many exist.
    pub async fn run(self) -> anyhow::Result<ExitCode> {
        crate::storage::check_prefix(&self.schema_prefix)?;
        let storage = crate::storage::Storage::Postgres {
            url: self.database_url,
            prefix: self.schema_prefix,
        };
        let schema = storage
            .schemas()
            .map(|s| s.wallet)
            .context("a PostgreSQL storage names its schemas")?;
        // The data dir only matters for SQLite.
        let accounts = storage.seed(Path::new(".")).await?;
        println!("finpay seed: {accounts} demo accounts open in schema {schema}");
        Ok(ExitCode::SUCCESS)
    }
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

    #[tokio::test]
    async fn seed_refuses_a_bad_prefix_before_it_connects() {
        let args = SeedArgs {
            database_url: "postgres://nobody@127.0.0.1:1/none".into(),
            schema_prefix: "Bad-Prefix".into(),
        };
        let err = args.run().await.expect_err("refused");
        assert!(err.is::<crate::ConfigError>(), "{err:#}");
    }
}
