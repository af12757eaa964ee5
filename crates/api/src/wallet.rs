//! The wallet service's API: double-entry transfers keyed by the caller's transfer id, and accounts.
//!
//! `POST /v1/transfers` answers 201 when the transfer is applied now and 200 when the same id with
//! the same body was applied before (nothing changes); the same id with another body is 409
//! `idempotency-conflict`. Business refusals are 422 problems whose slugs are
//! [`slug::WALLET_DECLINES`](crate::problem::slug::WALLET_DECLINES).

use finpay_core::{AccountId, Amount, Balance, Currency, TransferId};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `POST /v1/transfers`.
pub const TRANSFERS: &str = "/v1/transfers";
/// `GET /v1/transfers/{id}`, as an axum route.
pub const TRANSFER: &str = "/v1/transfers/{id}";
/// `GET /v1/accounts/{id}`, as an axum route.
pub const ACCOUNT: &str = "/v1/accounts/{id}";

/// The path of one account.
pub fn account_path(id: &str) -> String {
    format!("/v1/accounts/{id}")
}

/// `POST /v1/transfers` body. `id` is the idempotency key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTransfer {
    pub id: TransferId,
    pub debit_account_id: AccountId,
    pub credit_account_id: AccountId,
    pub amount_minor: Amount,
    pub currency: Currency,
}

/// A committed transfer, as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Transfer {
    pub id: TransferId,
    pub debit_account_id: AccountId,
    pub credit_account_id: AccountId,
    pub amount_minor: Amount,
    pub currency: Currency,
    pub created_at_ms: i64,
}

/// An account and its balance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Account {
    pub id: AccountId,
    pub currency: Currency,
    pub balance: Balance,
}
