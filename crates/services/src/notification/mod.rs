//! The notification service: an inbox that stores each notification once.
//!
//! The payment service's outbox delivers at least once; the inbox makes it exactly once by id:
//! `POST /v1/notifications` answers 201 when stored, 200 for a repeat of the same notification (nothing
//! new is stored) and 409 when the id was used for a different one.

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::post;
use axum::Router;
use finpay_api::notification::{
    self as api, CreateNotification, NotificationList, LIST_LIMIT_DEFAULT, LIST_LIMIT_MAX,
    MESSAGE_MAX_CHARS,
};
use finpay_api::problem::slug;
use finpay_core::AccountId;
use finpay_ledger::inbox::{Delivery, InboxError, InboxStore, Notification};
use serde::{Deserialize, Serialize};

use crate::app::{ready_when, Assemble, Parts, Routes};
use crate::http::config::{CommonSettings, ServiceSettings};
use crate::http::{json_response, ApiError, ApiJson};
use crate::{ServeError, ServiceKind};

/// The notification service's application.
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

fn view(n: Notification) -> api::Notification {
    api::Notification {
        id: n.id,
        payment_id: n.payment_id,
        account_id: n.account_id,
        message: n.message,
        received_at_ms: n.received_at_ms,
    }
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
    ApiJson(body): ApiJson<CreateNotification>,
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
            Ok(json_response(StatusCode::CREATED, &view(n)))
        }
        Ok(Delivery::Duplicate(n)) => {
            metrics::counter!("finpay_notifications_total", "outcome" => "duplicate").increment(1);
            Ok(json_response(StatusCode::OK, &view(n)))
        }
        Err(InboxError::Conflict(id)) => Err(ApiError::conflict(
            slug::IDEMPOTENCY_CONFLICT,
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
        None => LIST_LIMIT_DEFAULT,
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
    let list = NotificationList {
        notifications: items.into_iter().map(view).collect(),
    };
    Ok(json_response(StatusCode::OK, &list))
}

impl Assemble for Settings {
    const KIND: ServiceKind = ServiceKind::Notification;

    /// Opens the store `storage.backend` names (`notifications.db` in `data_dir`, or PostgreSQL).
    async fn assemble(&self) -> Result<Parts, ServeError> {
        let store = crate::http::storage::open_inbox(&self.common).await?;
        Ok(parts(store))
    }
}

/// The routes over any [`InboxStore`].
pub fn parts(store: Arc<dyn InboxStore>) -> Parts {
    let ready_store = store.clone();
    let ready = ready_when(move || {
        let s = ready_store.clone();
        async move { s.ping().await }
    });
    let st = Arc::new(AppState { store });
    let routes = Routes::new().route(api::NOTIFICATIONS, post(deliver).get(list).with_state(st));
    Parts {
        routes,
        admin: Router::new(),
        ready,
        background: Vec::new(),
    }
}
