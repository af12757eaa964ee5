//! What both backends need from a store's error type: a way to carry a storage failure.
//!
//! The SQLite writer answers a command whose batch could not commit, and the PostgreSQL retry loop
//! answers an operation the database kept refusing, with the error type of the store that asked.
//! [`StorageError`] is that one constructor, implemented once per store error here.

use crate::inbox::InboxError;
use crate::payments::PaymentStoreError;
use crate::wallet::WalletError;

/// A boxed cause, as every store error's `Storage` variant holds it.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// An error type that can carry a storage failure; every store error has such a variant.
pub(crate) trait StorageError: Send + 'static {
    fn storage(e: BoxError) -> Self;
}

impl StorageError for WalletError {
    fn storage(e: BoxError) -> Self {
        WalletError::Storage(e)
    }
}

impl StorageError for PaymentStoreError {
    fn storage(e: BoxError) -> Self {
        PaymentStoreError::Storage(e)
    }
}

impl StorageError for InboxError {
    fn storage(e: BoxError) -> Self {
        InboxError::Storage(e)
    }
}
