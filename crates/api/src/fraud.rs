//! The fraud service's API: `POST /v1/checks`, a pure read (safe to retry and hedge).

use finpay_core::{AccountId, Amount, Currency, PaymentId};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `POST /v1/checks`.
pub const CHECKS: &str = "/v1/checks";
/// The demo's fraud endpoint (docs/scenarios.md): `GET /check` answers `SAFE`.
pub const LEGACY_CHECK: &str = "/check";

/// `POST /v1/checks` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckRequest {
    pub payment_id: PaymentId,
    pub account_id: AccountId,
    pub amount_minor: Amount,
    pub currency: Currency,
}

/// SAFE lets the payment go on; DENY declines it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum Verdict {
    Safe,
    Deny,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Safe => "SAFE",
            Verdict::Deny => "DENY",
        }
    }
}

/// `POST /v1/checks` answer (200).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CheckResponse {
    pub verdict: Verdict,
    /// Why a check denied, one rule each; empty for SAFE.
    pub reasons: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_serialize_in_capitals() {
        let json = serde_json::to_string(&CheckResponse {
            verdict: Verdict::Safe,
            reasons: vec![],
        })
        .expect("serializes");
        assert_eq!(json, r#"{"verdict":"SAFE","reasons":[]}"#);
        assert_eq!(Verdict::Deny.as_str(), "DENY");
    }
}
