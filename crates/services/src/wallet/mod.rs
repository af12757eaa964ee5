//! The wallet service: the double-entry ledger over HTTP.
//!
//! `POST /v1/transfers` takes the caller's transfer `id` as the idempotency key: the same id with the
//! same body answers 200 with the first result and changes nothing; the same id with another body is
//! 409. Business refusals (insufficient funds, unknown account, currency mismatch, same account) are
//! 422 problems with their own `type`, so the payment service can tell "declined" from "try later".
//!
//! The `commit_then_fail_rate` fault commits the transfer and then loses the answer (500, or the
//! connection is dropped mid-response). It is the ambiguous failure: the caller cannot know whether the
//! money moved, and only an idempotent retry with the same id makes it safe.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use finpay_core::{AccountId, Amount, Currency, TransferId};
use finpay_ledger::wallet::{Transfer, TransferOutcome, TransferRequest, WalletError, WalletStore};
use serde::{Deserialize, Serialize};

use crate::http::config::{CommonSettings, ServiceSettings};
use crate::http::faults::Faults;
use crate::http::server::{app_router, ReadyCheck, Server};
use crate::http::{json_response, ApiError, ApiJson};
use crate::ServeError;

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

/// `POST /v1/transfers` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransferBody {
    pub id: TransferId,
    pub debit_account_id: AccountId,
    pub credit_account_id: AccountId,
    pub amount_minor: Amount,
    pub currency: Currency,
}

/// A transfer as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TransferView {
    pub id: TransferId,
    pub debit_account_id: AccountId,
    pub credit_account_id: AccountId,
    pub amount_minor: Amount,
    pub currency: Currency,
    pub created_at_ms: i64,
}

impl From<&Transfer> for TransferView {
    fn from(t: &Transfer) -> Self {
        Self {
            id: t.id.clone(),
            debit_account_id: t.debit_account_id.clone(),
            credit_account_id: t.credit_account_id.clone(),
            amount_minor: t.amount,
            currency: t.currency,
            created_at_ms: t.created_at_ms,
        }
    }
}

/// Stable problem slugs of wallet refusals; the payment service matches on them.
pub mod problem_types {
    pub const INSUFFICIENT_FUNDS: &str = "insufficient-funds";
    pub const UNKNOWN_ACCOUNT: &str = "unknown-account";
    pub const CURRENCY_MISMATCH: &str = "currency-mismatch";
    pub const SAME_ACCOUNT: &str = "same-account";
    pub const BALANCE_OVERFLOW: &str = "balance-overflow";
    pub const IDEMPOTENCY_CONFLICT: &str = "idempotency-conflict";
}

fn wallet_error(e: WalletError, req: &TransferRequest) -> ApiError {
    use problem_types::*;
    let detail = e.to_string();
    match &e {
        WalletError::UnknownAccount(a) => {
            let field = if *a == req.credit_account_id && *a != req.debit_account_id {
                "credit_account_id"
            } else {
                "debit_account_id"
            };
            ApiError::unprocessable(UNKNOWN_ACCOUNT, "Unknown account", detail).with_field(field)
        }
        WalletError::CurrencyMismatch { .. } => {
            ApiError::unprocessable(CURRENCY_MISMATCH, "Currency mismatch", detail)
                .with_field("currency")
        }
        WalletError::InsufficientFunds { .. } => {
            ApiError::unprocessable(INSUFFICIENT_FUNDS, "Insufficient funds", detail)
                .with_field("amount_minor")
        }
        WalletError::SameAccount(_) => {
            ApiError::unprocessable(SAME_ACCOUNT, "Same account", detail)
                .with_field("credit_account_id")
        }
        WalletError::Overflow(_) => {
            ApiError::unprocessable(BALANCE_OVERFLOW, "Balance overflow", detail)
                .with_field("amount_minor")
        }
        WalletError::IdempotencyConflict(_) => ApiError::conflict(
            IDEMPOTENCY_CONFLICT,
            "Idempotency conflict",
            format!("{detail}; use a new id for a new transfer"),
        )
        .with_field("id"),
        WalletError::AccountConflict(_) => {
            ApiError::conflict("account-conflict", "Account conflict", detail)
        }
        WalletError::Storage(_) => ApiError::storage(&e),
    }
}

struct AppState {
    store: Arc<dyn WalletStore>,
    faults: Arc<Faults>,
}

async fn create_transfer(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<TransferBody>,
) -> Result<Response, ApiError> {
    // The body's id is the idempotency key; a header naming another key is a confused caller.
    if let Some(key) = headers.get("idempotency-key") {
        if key.as_bytes() != body.id.as_str().as_bytes() {
            return Err(ApiError::bad_request(
                "Idempotency-Key",
                "Idempotency-Key: must equal the transfer id when sent",
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
    if let Some(drop_connection) = st.faults.draw_commit_then_fail() {
        tracing::warn!(transfer_id = %transfer.id, drop_connection, "injected commit_then_fail");
        metrics::counter!("finpay_faults_injected_total", "service" => "wallet", "kind" => "commit_then_fail")
            .increment(1);
        return Ok(lost_response(drop_connection));
    }
    Ok(json_response(status, &TransferView::from(transfer)))
}

/// The answer to a committed transfer, lost: a 500, or headers followed by a body that fails, which
/// makes the server abort the connection mid-response.
fn lost_response(drop_connection: bool) -> Response {
    if !drop_connection {
        return ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "injected-fault",
            "Injected fault",
            "injected fault",
        )
        .into_response();
    }
    let failing = futures::stream::once(async {
        Err::<bytes::Bytes, std::io::Error>(std::io::Error::other(
            "injected: connection dropped after commit",
        ))
    });
    let mut resp = Body::from_stream(failing).into_response();
    *resp.status_mut() = StatusCode::CREATED;
    resp
}

async fn get_account(
    State(st): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = AccountId::try_from(id)
        .map_err(|e| ApiError::bad_request("id", format!("account id: {e}")))?;
    match st.store.account(&id).await {
        Ok(Some(acct)) => Ok(json_response(StatusCode::OK, &acct)),
        Ok(None) => Err(ApiError::not_found(
            problem_types::UNKNOWN_ACCOUNT,
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
        Ok(Some(t)) => Ok(json_response(StatusCode::OK, &TransferView::from(&t))),
        Ok(None) => Err(ApiError::not_found(
            "unknown-transfer",
            "Unknown transfer",
            format!("transfer {id} does not exist"),
        )
        .with_field("id")),
        Err(e) => Err(ApiError::storage(&e)),
    }
}

pub struct Application {
    server: Server,
}

impl Application {
    /// Opens the store `storage.backend` names (`wallet.db` in `data_dir`, or PostgreSQL) and builds
    /// the service.
    pub async fn build(settings: Settings) -> Result<Self, ServeError> {
        settings.common.validate()?;
        let store = crate::http::storage::open_wallet(&settings.common).await?;
        Self::build_with_store(settings, store).await
    }

    /// Builds the service over any [`WalletStore`].
    pub async fn build_with_store(
        settings: Settings,
        store: Arc<dyn WalletStore>,
    ) -> Result<Self, ServeError> {
        settings.common.validate()?;
        settings.validate()?;
        let faults = Faults::new("wallet", settings.common.faults.clone());
        let ready_store = store.clone();
        let ready: ReadyCheck = Arc::new(move || {
            let s = ready_store.clone();
            Box::pin(async move { s.ping().await.map_err(|e| e.to_string()) })
        });
        let state = Arc::new(AppState {
            store,
            faults: faults.clone(),
        });
        let business = Router::new()
            .route("/v1/transfers", post(create_transfer))
            .route("/v1/transfers/{id}", get(get_transfer))
            .route("/v1/accounts/{id}", get(get_account))
            .with_state(state);
        let router = app_router("wallet", &settings.common, business, faults, ready);
        let server = Server::bind("wallet", &settings.common, router).await?;
        Ok(Self { server })
    }

    pub fn port(&self) -> u16 {
        self.server.port()
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.server.addr()
    }

    pub async fn run_until_stopped<F>(self, shutdown: F) -> Result<(), ServeError>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.server.run(shutdown).await
    }
}
