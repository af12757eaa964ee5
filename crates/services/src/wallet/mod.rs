//! The wallet service: the double-entry ledger over HTTP, in the shapes of [`finpay_api::wallet`].
//!
//! `POST /v1/transfers` takes the caller's transfer `id` as the idempotency key: the same id with the
//! same body answers 200 with the first result and changes nothing; the same id with another body is
//! 409. Business refusals (insufficient funds, unknown account, currency mismatch, same account) are
//! 422 problems with their own `type`, so the payment service can tell "declined" from "try later".
//!
//! The `commit_then_fail_rate` fault (see [`crate::http::faults`]) lets a transfer commit and then
//! loses its answer: the ambiguous failure, where the caller cannot know whether the money moved and
//! only an idempotent retry with the same id makes it safe.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use finpay_api::headers::IDEMPOTENCY_KEY;
use finpay_api::problem::slug;
use finpay_api::wallet::{self as api, CreateTransfer};
use finpay_core::{AccountId, TransferId};
use finpay_ledger::wallet::{
    Account, Transfer, TransferOutcome, TransferRequest, WalletError, WalletStore,
};
use serde::{Deserialize, Serialize};

use crate::app::{ready_when, Assemble, Parts, Routes};
use crate::http::config::{CommonSettings, ServiceSettings};
use crate::http::{json_response, ApiError, ApiJson};
use crate::{ServeError, ServiceKind};

/// The wallet service's application.
pub use crate::app::Application;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// The keys every service has (extracted separately; see `http::config::load`).
    #[serde(skip)]
    pub common: CommonSettings,
}

impl ServiceSettings for Settings {
    fn common(&self) -> &CommonSettings {
        &self.common
    }

    fn set_common(&mut self, common: CommonSettings) {
        self.common = common;
    }
}

fn transfer_view(t: &Transfer) -> api::Transfer {
    api::Transfer {
        id: t.id.clone(),
        debit_account_id: t.debit_account_id.clone(),
        credit_account_id: t.credit_account_id.clone(),
        amount_minor: t.amount,
        currency: t.currency,
        created_at_ms: t.created_at_ms,
    }
}

fn account_view(a: Account) -> api::Account {
    api::Account {
        id: a.id,
        currency: a.currency,
        balance: a.balance,
    }
}

fn wallet_error(e: WalletError, req: &TransferRequest) -> ApiError {
    let detail = e.to_string();
    match &e {
        WalletError::UnknownAccount(a) => {
            let field = if *a == req.credit_account_id && *a != req.debit_account_id {
                "credit_account_id"
            } else {
                "debit_account_id"
            };
            ApiError::unprocessable(slug::UNKNOWN_ACCOUNT, "Unknown account", detail)
                .with_field(field)
        }
        WalletError::CurrencyMismatch { .. } => {
            ApiError::unprocessable(slug::CURRENCY_MISMATCH, "Currency mismatch", detail)
                .with_field("currency")
        }
        WalletError::InsufficientFunds { .. } => {
            ApiError::unprocessable(slug::INSUFFICIENT_FUNDS, "Insufficient funds", detail)
                .with_field("amount_minor")
        }
        WalletError::SameAccount(_) => {
            ApiError::unprocessable(slug::SAME_ACCOUNT, "Same account", detail)
                .with_field("credit_account_id")
        }
        WalletError::Overflow(_) => {
            ApiError::unprocessable(slug::BALANCE_OVERFLOW, "Balance overflow", detail)
                .with_field("amount_minor")
        }
        WalletError::IdempotencyConflict(_) => ApiError::conflict(
            slug::IDEMPOTENCY_CONFLICT,
            "Idempotency conflict",
            format!("{detail}; use a new id for a new transfer"),
        )
        .with_field("id"),
        WalletError::AccountConflict(_) => {
            ApiError::conflict(slug::ACCOUNT_CONFLICT, "Account conflict", detail)
        }
        WalletError::Storage(_) => ApiError::storage(&e),
    }
}

struct AppState {
    store: Arc<dyn WalletStore>,
}

async fn create_transfer(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<CreateTransfer>,
) -> Result<Response, ApiError> {
    // The body's id is the idempotency key; a header naming another key is a confused caller.
    if let Some(key) = headers.get(IDEMPOTENCY_KEY) {
        if key.as_bytes() != body.id.as_str().as_bytes() {
            return Err(ApiError::bad_request(
                IDEMPOTENCY_KEY,
                format!("{IDEMPOTENCY_KEY}: must equal the transfer id when sent"),
            ));
        }
    }
    let req = TransferRequest {
        id: body.id,
        debit_account_id: body.debit_account_id,
        credit_account_id: body.credit_account_id,
        amount: body.amount_minor,
        currency: body.currency,
    };
    if req.debit_account_id == req.credit_account_id {
        return Err(wallet_error(
            WalletError::SameAccount(req.debit_account_id.clone()),
            &req,
        ));
    }
    let outcome = st
        .store
        .transfer(&req)
        .await
        .map_err(|e| wallet_error(e, &req))?;
    let (status, transfer) = match &outcome {
        TransferOutcome::Created(t) => (StatusCode::CREATED, t),
        TransferOutcome::Replayed(t) => (StatusCode::OK, t),
    };
    metrics::counter!(
        "finpay_wallet_transfers_total",
        "outcome" => if status == StatusCode::CREATED { "created" } else { "replayed" }
    )
    .increment(1);
    Ok(json_response(status, &transfer_view(transfer)))
}

async fn get_account(
    State(st): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = AccountId::try_from(id)
        .map_err(|e| ApiError::bad_request("id", format!("account id: {e}")))?;
    match st.store.account(&id).await {
        Ok(Some(acct)) => Ok(json_response(StatusCode::OK, &account_view(acct))),
        Ok(None) => Err(ApiError::not_found(
            slug::UNKNOWN_ACCOUNT,
            "Unknown account",
            format!("account {id} does not exist"),
        )
        .with_field("id")),
        Err(e) => Err(ApiError::storage(&e)),
    }
}

async fn get_transfer(
    State(st): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = TransferId::try_from(id)
        .map_err(|e| ApiError::bad_request("id", format!("transfer id: {e}")))?;
    match st.store.transfer_by_id(&id).await {
        Ok(Some(t)) => Ok(json_response(StatusCode::OK, &transfer_view(&t))),
        Ok(None) => Err(ApiError::not_found(
            slug::UNKNOWN_TRANSFER,
            "Unknown transfer",
            format!("transfer {id} does not exist"),
        )
        .with_field("id")),
        Err(e) => Err(ApiError::storage(&e)),
    }
}

/// The routes over any [`WalletStore`].
pub fn parts(store: Arc<dyn WalletStore>) -> Parts {
    let ready_store = store.clone();
    let ready = ready_when(move || {
        let s = ready_store.clone();
        async move { s.ping().await }
    });
    let st = Arc::new(AppState { store });
    let routes = Routes::new()
        .route(api::TRANSFERS, post(create_transfer).with_state(st.clone()))
        .route(api::TRANSFER, get(get_transfer).with_state(st.clone()))
        .route(api::ACCOUNT, get(get_account).with_state(st));
    Parts {
        routes,
        admin: Router::new(),
        ready,
        background: Vec::new(),
    }
}

impl Assemble for Settings {
    const KIND: ServiceKind = ServiceKind::Wallet;

    /// Opens the store `storage.backend` names (`wallet.db` in `data_dir`, or PostgreSQL).
    async fn assemble(&self) -> Result<Parts, ServeError> {
        let store = crate::http::storage::open_wallet(&self.common).await?;
        Ok(parts(store))
    }
}
