//! The notification service's API: an inbox that stores each notification once.
//!
//! `POST /v1/notifications` answers 201 when stored, 200 for a repeat of the same notification
//! (nothing new is stored) and 409 `idempotency-conflict` when the id was used for another one.

use finpay_core::{AccountId, NotificationId, PaymentId};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `POST /v1/notifications` and `GET /v1/notifications?account_id=&limit=`.
pub const NOTIFICATIONS: &str = "/v1/notifications";

/// Longest message accepted, in characters.
pub const MESSAGE_MAX_CHARS: usize = 1000;
/// Most notifications one list answer holds.
pub const LIST_LIMIT_MAX: u32 = 1000;
/// How many a list answers when the query names no `limit`.
pub const LIST_LIMIT_DEFAULT: u32 = 100;

/// `POST /v1/notifications` body. `id` is the inbox's deduplication key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateNotification {
    pub id: NotificationId,
    pub payment_id: PaymentId,
    pub account_id: AccountId,
    /// 1 to 1000 characters; no control characters but newlines.
    #[schema(
        min_length = 1,
        max_length = 1000,
        pattern = "^[^\\u0000-\\u0009\\u000B-\\u001F\\u007F-\\u009F]*$"
    )]
    pub message: String,
}

/// A stored notification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Notification {
    pub id: NotificationId,
    pub payment_id: PaymentId,
    pub account_id: AccountId,
    pub message: String,
    pub received_at_ms: i64,
}

/// `GET /v1/notifications` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct NotificationList {
    pub notifications: Vec<Notification>,
}
