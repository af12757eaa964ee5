//! The notification service: an inbox that stores each notification once.
//!
//! The payment service's outbox delivers at least once; the inbox makes it exactly once by id:
//! `POST /v1/notifications` answers 201 when stored, 200 for a repeat of the same notification (nothing
//! new is stored) and 409 when the id was used for a different one.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::post;
use axum::Router;
use finpay_core::{AccountId, NotificationId, PaymentId};
use finpay_ledger::inbox::{Delivery, InboxError, InboxStore, Notification};
use serde::{Deserialize, Serialize};

use crate::http::config::{CommonSettings, ServiceSettings};
use crate::http::faults::Faults;
use crate::http::server::{app_router, ReadyCheck, Server};
use crate::http::{json_response, ApiError, ApiJson};
use crate::ServeError;

/// Longest message accepted, in characters.
pub const MESSAGE_MAX_CHARS: usize = 1000;
/// Most notifications one list answer holds.
pub const LIST_LIMIT_MAX: u32 = 1000;

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

/// `POST /v1/notifications` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotificationBody {
    pub id: NotificationId,
    pub payment_id: PaymentId,
    pub account_id: AccountId,
    pub message: String,
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    account_id: Option<String>,
    limit: Option<String>,
}

struct AppState {
    store: Arc<dyn InboxStore>,
}

async fn deliver(
    State(st): State<Arc<AppState>>,
    ApiJson(body): ApiJson<NotificationBody>,
) -> Result<Response, ApiError> {
    let chars = body.message.chars().count();
    if chars == 0 || chars > MESSAGE_MAX_CHARS {
        return Err(ApiError::invalid_request(
            "message",
            format!("message: must be 1 to {MESSAGE_MAX_CHARS} characters, got {chars}"),
        ));
    }
    if body.message.chars().any(|c| c.is_control() && c != '\n') {
        return Err(ApiError::invalid_request(
            "message",
            "message: must not contain control characters",
        ));
    }
    let n = Notification {
        id: body.id,
        payment_id: body.payment_id,
        account_id: body.account_id,
        message: body.message,
        received_at_ms: finpay_ledger::now_ms(),
    };
    match st.store.deliver(n).await {
        Ok(Delivery::Stored(n)) => {
            metrics::counter!("finpay_notifications_total", "outcome" => "stored").increment(1);
            Ok(json_response(StatusCode::CREATED, &n))
        }
        Ok(Delivery::Duplicate(n)) => {
            metrics::counter!("finpay_notifications_total", "outcome" => "duplicate").increment(1);
            Ok(json_response(StatusCode::OK, &n))
        }
        Err(InboxError::Conflict(id)) => Err(ApiError::conflict(
            "idempotency-conflict",
            "Idempotency conflict",
            format!("notification {id} already exists with a different body"),
        )
        .with_field("id")),
        Err(e @ InboxError::Storage(_)) => Err(ApiError::storage(&e)),
    }
}

async fn list(
    State(st): State<Arc<AppState>>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::bad_request("query", e.body_text()))?;
    let Some(account) = q.account_id else {
        return Err(ApiError::bad_request(
            "account_id",
            "account_id: required query parameter",
        ));
    };
    let account = AccountId::try_from(account)
        .map_err(|e| ApiError::bad_request("account_id", format!("account_id: {e}")))?;
    let limit = match q.limit {
        None => 100,
        Some(l) => match l.parse::<u32>() {
            Ok(n) if (1..=LIST_LIMIT_MAX).contains(&n) => n,
            _ => {
                return Err(ApiError::bad_request(
                    "limit",
                    format!("limit: must be an integer from 1 to {LIST_LIMIT_MAX}"),
                ))
            }
        },
    };
    let items = st
        .store
        .list(&account, limit)
        .await
        .map_err(|e| ApiError::storage(&e))?;
    Ok(json_response(
        StatusCode::OK,
        &serde_json::json!({ "notifications": items }),
    ))
}

pub struct Application {
    server: Server,
}

impl Application {
    /// Opens the store `storage.backend` names (`notifications.db` in `data_dir`, or PostgreSQL) and
    /// builds the service.
    pub async fn build(settings: Settings) -> Result<Self, ServeError> {
        settings.common.validate()?;
        let store = crate::http::storage::open_inbox(&settings.common).await?;
        Self::build_with_store(settings, store).await
    }

    /// Builds the service over any [`InboxStore`].
    pub async fn build_with_store(
        settings: Settings,
        store: Arc<dyn InboxStore>,
    ) -> Result<Self, ServeError> {
        settings.common.validate()?;
        settings.validate()?;
        let faults = Faults::new("notification", settings.common.faults.clone());
        let ready_store = store.clone();
        let ready: ReadyCheck = Arc::new(move || {
            let s = ready_store.clone();
            Box::pin(async move { s.ping().await.map_err(|e| e.to_string()) })
        });
        let state = Arc::new(AppState { store });
        let business = Router::new()
            .route("/v1/notifications", post(deliver).get(list))
            .with_state(state);
        let router = app_router("notification", &settings.common, business, faults, ready);
        let server = Server::bind("notification", &settings.common, router).await?;
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
