//! The public payment API: `POST /v1/payments` (with an [`IDEMPOTENCY_KEY`](crate::headers::IDEMPOTENCY_KEY))
//! and `GET /v1/payments/{id}`.

use finpay_core::{AccountId, Amount, Currency, PaymentId, PaymentStatus};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `POST /v1/payments`.
pub const PAYMENTS: &str = "/v1/payments";
/// `GET /v1/payments/{id}`, as an axum route.
pub const PAYMENT: &str = "/v1/payments/{id}";
/// The demo of docs/scenarios.md: `GET /pay` makes a small payment and answers one line of text.
pub const DEMO_PAY: &str = "/pay";

/// The longest `description` payment accepts by default, in characters (`payment.description_max_chars`).
pub const DESCRIPTION_MAX_CHARS_DEFAULT: usize = 200;

/// The path of one payment.
pub fn payment_path(id: &str) -> String {
    format!("{PAYMENTS}/{id}")
}

/// `POST /v1/payments` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatePayment {
    /// The customer's account, debited.
    pub account_id: AccountId,
    /// The merchant's account, credited.
    pub merchant_account_id: AccountId,
    pub amount_minor: Amount,
    pub currency: Currency,
    /// Free text shown with the payment: at most `payment.description_max_chars` characters
    /// (200 unless configured), no control characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 200, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$")]
    pub description: Option<String>,
}

/// A payment as the API shows it: the answer of both routes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Payment {
    pub id: PaymentId,
    pub account_id: AccountId,
    pub merchant_account_id: AccountId,
    pub amount_minor: Amount,
    pub currency: Currency,
    pub description: Option<String>,
    pub status: PaymentStatus,
    /// Why the payment was declined or failed: one of the stable codes of [`reason`]. It never
    /// names a fraud rule or a threshold; the details go to payment's log.
    pub reason: Option<String>,
    /// Set when a fallback policy let the payment through without a fresh SAFE verdict.
    pub needs_review: bool,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

/// The stable codes of [`Payment::reason`]. A client may branch on them; they say which step
/// refused the payment, never why a rule fired (that would teach a fraudster the rules).
pub mod reason {
    use crate::problem::slug;

    /// Fraud answered DENY.
    pub const FRAUD_DENIED: &str = "fraud_denied";
    /// Fraud could not answer within the deadline: the payment failed closed.
    pub const FRAUD_UNAVAILABLE: &str = "fraud_unavailable";
    /// Fraud could not answer and the fallback policy let the payment pass; it needs review.
    pub const FRAUD_UNAVAILABLE_PASSED: &str = "fraud_unavailable_passed_for_review";
    pub const INSUFFICIENT_FUNDS: &str = "insufficient_funds";
    pub const UNKNOWN_ACCOUNT: &str = "unknown_account";
    pub const CURRENCY_MISMATCH: &str = "currency_mismatch";
    pub const SAME_ACCOUNT: &str = "same_account";
    pub const BALANCE_OVERFLOW: &str = "balance_overflow";
    /// A wallet refusal this build does not know by name.
    pub const WALLET_DECLINED: &str = "wallet_declined";

    /// The reason code of a wallet decline, from the wallet's problem slug.
    pub fn for_wallet_decline(wallet_slug: &str) -> &'static str {
        match wallet_slug {
            slug::INSUFFICIENT_FUNDS => INSUFFICIENT_FUNDS,
            slug::UNKNOWN_ACCOUNT => UNKNOWN_ACCOUNT,
            slug::CURRENCY_MISMATCH => CURRENCY_MISMATCH,
            slug::SAME_ACCOUNT => SAME_ACCOUNT,
            slug::BALANCE_OVERFLOW => BALANCE_OVERFLOW,
            _ => WALLET_DECLINED,
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn every_wallet_decline_has_a_code_of_its_own() {
            let codes: std::collections::BTreeSet<&str> = slug::WALLET_DECLINES
                .iter()
                .map(|s| for_wallet_decline(s))
                .collect();
            assert_eq!(codes.len(), slug::WALLET_DECLINES.len());
            assert!(!codes.contains(WALLET_DECLINED));
        }
    }
}
