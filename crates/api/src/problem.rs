//! The RFC 9457 problem document every service answers errors with, and its `type` slugs.
//!
//! A problem's `type` is `urn:finpay:problem:<slug>`. Clients branch on the slug, never on the
//! `detail` text, so the slugs are a contract: [`slug`] lists every one.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The media type of a problem document.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// What every problem `type` starts with.
pub const TYPE_PREFIX: &str = "urn:finpay:problem:";

/// The `type` URI of `slug`.
pub fn type_uri(slug: &str) -> String {
    format!("{TYPE_PREFIX}{slug}")
}

/// The stable `type` slugs, by the status they come with.
pub mod slug {
    // 400
    /// A header, path segment, query parameter or body value is missing or malformed (400 or 422).
    pub const INVALID_REQUEST: &str = "invalid-request";
    /// The body is not JSON at all.
    pub const MALFORMED_JSON: &str = "malformed-json";
    // 401 / 403
    pub const UNAUTHORIZED: &str = "unauthorized";
    pub const FORBIDDEN: &str = "forbidden";
    // 404
    pub const NOT_FOUND: &str = "not-found";
    pub const UNKNOWN_ACCOUNT: &str = "unknown-account";
    pub const UNKNOWN_TRANSFER: &str = "unknown-transfer";
    pub const UNKNOWN_PAYMENT: &str = "unknown-payment";
    // 405 / 413 / 415
    pub const METHOD_NOT_ALLOWED: &str = "method-not-allowed";
    pub const PAYLOAD_TOO_LARGE: &str = "payload-too-large";
    pub const UNSUPPORTED_MEDIA_TYPE: &str = "unsupported-media-type";
    // 409
    /// The id was used before for a different body (wallet transfer, inbox notification).
    pub const IDEMPOTENCY_CONFLICT: &str = "idempotency-conflict";
    /// A request with this Idempotency-Key is still being processed.
    pub const REQUEST_IN_PROGRESS: &str = "request-in-progress";
    pub const ACCOUNT_CONFLICT: &str = "account-conflict";
    // 422: the wallet's business refusals
    pub const INSUFFICIENT_FUNDS: &str = "insufficient-funds";
    pub const CURRENCY_MISMATCH: &str = "currency-mismatch";
    pub const SAME_ACCOUNT: &str = "same-account";
    pub const BALANCE_OVERFLOW: &str = "balance-overflow";
    /// The Idempotency-Key was used before for a different payment.
    pub const IDEMPOTENCY_KEY_REUSED: &str = "idempotency-key-reused";
    // 500
    pub const INTERNAL: &str = "internal";
    /// An injected fault (500 or 503).
    pub const INJECTED_FAULT: &str = "injected-fault";
    // 503
    pub const FRAUD_UNAVAILABLE: &str = "fraud-unavailable";
    pub const DEPENDENCY_UNAVAILABLE: &str = "dependency-unavailable";
    pub const STORAGE_UNAVAILABLE: &str = "storage-unavailable";
    pub const SERVICE_DOWN: &str = "service-down";
    pub const NOT_READY: &str = "not-ready";
    // 504
    pub const DEADLINE_EXCEEDED: &str = "deadline-exceeded";

    /// The wallet refusals that decline a payment (as opposed to "try later").
    pub const WALLET_DECLINES: [&str; 5] = [
        INSUFFICIENT_FUNDS,
        UNKNOWN_ACCOUNT,
        CURRENCY_MISMATCH,
        SAME_ACCOUNT,
        BALANCE_OVERFLOW,
    ];

    /// Every slug of the contract.
    pub const ALL: [&str; 27] = [
        INVALID_REQUEST,
        MALFORMED_JSON,
        UNAUTHORIZED,
        FORBIDDEN,
        NOT_FOUND,
        UNKNOWN_ACCOUNT,
        UNKNOWN_TRANSFER,
        UNKNOWN_PAYMENT,
        METHOD_NOT_ALLOWED,
        PAYLOAD_TOO_LARGE,
        UNSUPPORTED_MEDIA_TYPE,
        IDEMPOTENCY_CONFLICT,
        REQUEST_IN_PROGRESS,
        ACCOUNT_CONFLICT,
        INSUFFICIENT_FUNDS,
        CURRENCY_MISMATCH,
        SAME_ACCOUNT,
        BALANCE_OVERFLOW,
        IDEMPOTENCY_KEY_REUSED,
        INTERNAL,
        INJECTED_FAULT,
        FRAUD_UNAVAILABLE,
        DEPENDENCY_UNAVAILABLE,
        STORAGE_UNAVAILABLE,
        SERVICE_DOWN,
        NOT_READY,
        DEADLINE_EXCEEDED,
    ];
}

/// A problem document as a caller reads it. Extension members (`payment_id`, `payment_status`)
/// are kept when present.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Problem {
    /// `urn:finpay:problem:<slug>`: the stable part, to branch on.
    #[serde(rename = "type")]
    #[schema(pattern = "^urn:finpay:problem:[a-z-]+$")]
    pub type_uri: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// The offending input: a JSON path such as `amount_minor`, a header or a query parameter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// The payment a 409, 422 or 503 is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_id: Option<String>,
    /// The state of that payment, on a 503.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_status: Option<String>,
}

impl Problem {
    /// The slug of `type`, or `""` when it is not a FinPay problem type.
    pub fn slug(&self) -> &str {
        self.type_uri.strip_prefix(TYPE_PREFIX).unwrap_or("")
    }

    /// Reads a problem from a response body; `None` when the body is not one.
    pub fn parse(body: &[u8]) -> Option<Problem> {
        serde_json::from_slice(body).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_are_unique_kebab_case_and_round_trip_through_the_type_uri() {
        let mut seen = std::collections::BTreeSet::new();
        for s in slug::ALL {
            assert!(seen.insert(s), "{s} listed twice");
            assert!(s.chars().all(|c| c.is_ascii_lowercase() || c == '-'), "{s}");
            let p = Problem {
                type_uri: type_uri(s),
                ..Problem::default()
            };
            assert_eq!(p.slug(), s);
        }
        for s in slug::WALLET_DECLINES {
            assert!(seen.contains(s), "{s} is a listed slug");
        }
    }

    #[test]
    fn a_problem_keeps_its_extension_members_and_ignores_unknown_ones() {
        let body = br#"{"type":"urn:finpay:problem:fraud-unavailable","title":"t","status":503,
            "detail":"d","payment_id":"p","payment_status":"failed","other":1}"#;
        let p = Problem::parse(body).expect("a problem");
        assert_eq!(p.slug(), slug::FRAUD_UNAVAILABLE);
        assert_eq!(p.payment_id.as_deref(), Some("p"));
        assert_eq!(p.payment_status.as_deref(), Some("failed"));
        assert!(Problem::parse(b"not json").is_none());
    }
}
