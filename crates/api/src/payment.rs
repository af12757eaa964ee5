//! The public payment API: `POST /v1/payments` (with an [`IDEMPOTENCY_KEY`](crate::headers::IDEMPOTENCY_KEY))
//! and `GET /v1/payments/{id}`.

use finpay_core::{AccountId, Amount, Currency, PaymentId, PaymentStatus};
use serde::{Deserialize, Serialize};

/// `POST /v1/payments`.
pub const PAYMENTS: &str = "/v1/payments";
/// `GET /v1/payments/{id}`, as an axum route.
pub const PAYMENT: &str = "/v1/payments/{id}";
/// The demo of docs/scenarios.md: `GET /pay` makes a small payment and answers one line of text.
pub const DEMO_PAY: &str = "/pay";

/// The path of one payment.
pub fn payment_path(id: &str) -> String {
    format!("{PAYMENTS}/{id}")
}

/// `POST /v1/payments` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreatePayment {
    /// The customer's account, debited.
    pub account_id: AccountId,
    /// The merchant's account, credited.
    pub merchant_account_id: AccountId,
    pub amount_minor: Amount,
    pub currency: Currency,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// A payment as the API shows it: the answer of both routes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payment {
    pub id: PaymentId,
    pub account_id: AccountId,
    pub merchant_account_id: AccountId,
    pub amount_minor: Amount,
    pub currency: Currency,
    pub description: Option<String>,
    pub status: PaymentStatus,
    /// Why the payment was declined or failed, for people.
    pub reason: Option<String>,
    /// Set when a fallback policy let the payment through without a fresh SAFE verdict.
    pub needs_review: bool,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}
