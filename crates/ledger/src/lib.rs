//! FinPay's storage: what each service persists, behind traits, with SQLite as the default backend.
//!
//! - [`wallet::WalletStore`]: accounts and the double-entry ledger. A transfer is two entries (a debit
//!   and a credit of the same unsigned amount) written in one transaction, keyed by the caller's
//!   transfer id, which is also the idempotency key.
//! - [`payments::PaymentStore`]: payments, keyed by the client's idempotency key, moved through the
//!   state machine of `finpay_core::PaymentStatus` by compare-and-set, and the notification outbox that
//!   is written in the same transaction as the step that marks a payment `succeeded`. A payment being
//!   driven holds a lease in its row ([`payments::Lease`]: owner, fencing token, expiry by the
//!   database's clock) and every write of its driver is fenced by it; outbox rows are claimed the
//!   same way. So any number of payment replicas share one store without doing a payment's work
//!   twice at once.
//! - [`inbox::InboxStore`]: the notification service's inbox, which deduplicates deliveries by id.
//! - [`audit`]: the offline audit behind `finpay check`, which reads all three stores and reports every
//!   violated money invariant.
//!
//! Each store is a trait so that PostgreSQL is a second implementation, not a rewrite; the services
//! hold an `Arc<dyn ...Store>` and never see SQL.
//!
//! Schemas are versioned migrations (`migrations/<backend>/<store>/`, embedded with
//! `sqlx::migrate!`), applied at open under a lock; a database a newer build migrated is refused.
//!
//! - [`sqlite`]: the default backend. One file per store, WAL, `synchronous=FULL`, and group commit
//!   (one writer task per store batches concurrent writes into one transaction and one fsync, each
//!   write in its own savepoint). Two processes may share a file (the two wallet replicas).
//! - [`postgres`]: the same three stores on PostgreSQL (`PgWallet`, `PgPayments`, `PgInbox`).
//!
//! Not for: HTTP, retries or anything that talks to another service.

pub mod audit;
mod error;
pub mod inbox;
pub mod payments;
pub mod postgres;
pub mod rows;
pub mod sqlite;
pub mod wallet;

/// File names of the three SQLite databases inside a data directory.
pub mod files {
    pub const WALLET_DB: &str = "wallet.db";
    pub const PAYMENTS_DB: &str = "payments.db";
    pub const NOTIFICATIONS_DB: &str = "notifications.db";
}

/// Milliseconds since the Unix epoch, the one clock the stores record.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The newest version a store's migrations know. Each store numbers its versions in its own
/// thousand (wallet 1001.., payments 2001.., inbox 3001..), on both backends.
pub(crate) fn newest_migration(migrator: &sqlx::migrate::Migrator) -> i64 {
    migrator.iter().map(|m| m.version).max().unwrap_or(0)
}
