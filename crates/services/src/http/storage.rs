//! Opens a service's store on the backend its settings name (`storage.backend`).
//!
//! The services see only the ledger's traits; which database sits behind them is decided here, once,
//! at start. A PostgreSQL open error never quotes the url (it may carry a password): the message says
//! which backend failed and the cause chain comes from the driver, which does not echo the url.

use std::sync::Arc;

use finpay_ledger::inbox::InboxStore;
use finpay_ledger::payments::PaymentStore;
use finpay_ledger::postgres::{PgInbox, PgOptions, PgPayments, PgWallet};
use finpay_ledger::sqlite::{SqliteInbox, SqlitePayments, SqliteWallet};
use finpay_ledger::wallet::WalletStore;

use crate::http::config::{config_err, CommonSettings, StorageBackend};
use crate::ServeError;

fn storage_err(e: impl std::error::Error + Send + Sync + 'static) -> ServeError {
    ServeError::Storage(Box::new(e))
}

/// The validated PostgreSQL options, or a config error naming `storage.url`.
fn pg(common: &CommonSettings) -> Result<PgOptions, ServeError> {
    common.pg_options().ok_or_else(|| {
        config_err(
            "storage.url",
            "is required when storage.backend = \"postgres\"",
        )
    })
}

/// The wallet's store: `wallet.db` in `data_dir`, or the PostgreSQL database at `storage.url`.
pub async fn open_wallet(common: &CommonSettings) -> Result<Arc<dyn WalletStore>, ServeError> {
    Ok(match common.storage.backend {
        StorageBackend::Sqlite => {
            let path = common.db_path(finpay_ledger::files::WALLET_DB)?;
            Arc::new(
                SqliteWallet::open(&path, &common.sqlite_options())
                    .await
                    .map_err(storage_err)?,
            )
        }
        StorageBackend::Postgres => {
            Arc::new(PgWallet::open(&pg(common)?).await.map_err(storage_err)?)
        }
    })
}

/// The payment service's store: `payments.db` in `data_dir`, or PostgreSQL.
pub async fn open_payments(common: &CommonSettings) -> Result<Arc<dyn PaymentStore>, ServeError> {
    Ok(match common.storage.backend {
        StorageBackend::Sqlite => {
            let path = common.db_path(finpay_ledger::files::PAYMENTS_DB)?;
            Arc::new(
                SqlitePayments::open(&path, &common.sqlite_options())
                    .await
                    .map_err(storage_err)?,
            )
        }
        StorageBackend::Postgres => {
            Arc::new(PgPayments::open(&pg(common)?).await.map_err(storage_err)?)
        }
    })
}

/// The notification inbox: `notifications.db` in `data_dir`, or PostgreSQL.
pub async fn open_inbox(common: &CommonSettings) -> Result<Arc<dyn InboxStore>, ServeError> {
    Ok(match common.storage.backend {
        StorageBackend::Sqlite => {
            let path = common.db_path(finpay_ledger::files::NOTIFICATIONS_DB)?;
            Arc::new(
                SqliteInbox::open(&path, &common.sqlite_options())
                    .await
                    .map_err(storage_err)?,
            )
        }
        StorageBackend::Postgres => {
            Arc::new(PgInbox::open(&pg(common)?).await.map_err(storage_err)?)
        }
    })
}
