//! The fraud service: deterministic rules behind `POST /v1/checks`.
//!
//! The rules are pure functions of the request and the settings, so a check is a read: asking twice
//! gives the same verdict, which is why the payment service may retry and hedge it freely.
//! `GET /check` answers `SAFE`, as the fraud service of the design note's first demo does
//! (docs/scenarios.md).

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use finpay_api::fraud::{self, CheckRequest, CheckResponse, Verdict};
use finpay_core::AccountId;
use serde::{Deserialize, Serialize};

use crate::app::{Assemble, Parts, Routes};
use crate::http::config::{config_err, CommonSettings, ServiceSettings};
use crate::http::server::always_ready;
use crate::http::{json_response, ApiError, ApiJson};
use crate::{ServeError, ServiceKind};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// The keys every service has (extracted separately; see `http::config::load`).
    #[serde(skip)]
    pub common: CommonSettings,
    pub rules: Rules,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Rules {
    /// Amounts above this are denied.
    pub max_amount_minor: u64,
    /// Accounts always denied.
    pub blocklist: Vec<String>,
}

impl Default for Rules {
    fn default() -> Self {
        Self {
            max_amount_minor: 1_000_000,
            blocklist: vec!["cust-blocked".into()],
        }
    }
}

impl ServiceSettings for Settings {
    fn common(&self) -> &CommonSettings {
        &self.common
    }

    fn set_common(&mut self, common: CommonSettings) {
        self.common = common;
    }

    fn validate(&self) -> Result<(), ServeError> {
        if self.rules.max_amount_minor == 0 {
            return Err(config_err(
                "rules.max_amount_minor",
                "must be greater than zero",
            ));
        }
        for (i, acct) in self.rules.blocklist.iter().enumerate() {
            AccountId::try_from(acct.as_str())
                .map_err(|e| config_err(&format!("rules.blocklist[{i}]"), e))?;
        }
        Ok(())
    }
}

/// The rules, as a pure function.
pub fn evaluate(rules: &Rules, req: &CheckRequest) -> CheckResponse {
    let mut reasons = Vec::new();
    if req.amount_minor.minor() > rules.max_amount_minor {
        reasons.push(format!(
            "amount_over_limit: {} exceeds {}",
            req.amount_minor, rules.max_amount_minor
        ));
    }
    if rules.blocklist.iter().any(|b| b == req.account_id.as_str()) {
        reasons.push(format!("account_blocked: {}", req.account_id));
    }
    let verdict = if reasons.is_empty() {
        Verdict::Safe
    } else {
        Verdict::Deny
    };
    CheckResponse { verdict, reasons }
}

struct AppState {
    rules: Rules,
}

async fn check(
    State(st): State<Arc<AppState>>,
    ApiJson(req): ApiJson<CheckRequest>,
) -> Result<Response, ApiError> {
    let out = evaluate(&st.rules, &req);
    let verdict = out.verdict.as_str();
    metrics::counter!("finpay_fraud_verdicts_total", "verdict" => verdict).increment(1);
    tracing::debug!(payment_id = %req.payment_id, verdict, "checked");
    Ok(json_response(StatusCode::OK, &out))
}

async fn check_legacy() -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain")],
        "SAFE",
    )
        .into_response()
}

/// The fraud service's application.
pub use crate::app::Application;

impl Assemble for Settings {
    const KIND: ServiceKind = ServiceKind::Fraud;

    async fn assemble(&self) -> Result<Parts, ServeError> {
        let state = Arc::new(AppState {
            rules: self.rules.clone(),
        });
        let routes = Routes::new()
            .route(fraud::CHECKS, post(check).with_state(state))
            .route(fraud::LEGACY_CHECK, get(check_legacy));
        Ok(Parts {
            routes,
            admin: Router::new(),
            ready: always_ready(),
            background: Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use finpay_core::{Amount, Currency, PaymentId};

    fn req(account: &str, amount: u64) -> CheckRequest {
        CheckRequest {
            payment_id: PaymentId::new_v7(),
            account_id: AccountId::try_from(account).expect("valid"),
            amount_minor: Amount::try_new(amount).expect("valid"),
            currency: Currency::Usd,
        }
    }

    #[test]
    fn amounts_over_the_limit_and_blocked_accounts_are_denied() {
        let rules = Rules::default();
        assert_eq!(
            evaluate(&rules, &req("cust-0001", 100)).verdict,
            Verdict::Safe
        );
        assert_eq!(
            evaluate(&rules, &req("cust-0001", 1_000_000)).verdict,
            Verdict::Safe
        );
        let over = evaluate(&rules, &req("cust-0001", 1_000_001));
        assert_eq!(over.verdict, Verdict::Deny);
        assert_eq!(over.reasons.len(), 1);
        let both = evaluate(&rules, &req("cust-blocked", 2_000_000));
        assert_eq!(both.reasons.len(), 2);
    }
}
