//! The notification service's inbox: every delivery is stored once, however often it is sent.

use async_trait::async_trait;
use finpay_core::{AccountId, NotificationId, PaymentId};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notification {
    pub id: NotificationId,
    pub payment_id: PaymentId,
    pub account_id: AccountId,
    pub message: String,
    pub received_at_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    Stored(Notification),
    /// The id was delivered before; nothing new was stored. Holds the first delivery.
    Duplicate(Notification),
}

#[derive(Debug, thiserror::Error)]
pub enum InboxError {
    #[error("notification {0} already exists with a different body")]
    Conflict(NotificationId),
    #[error("storage failed")]
    Storage(#[source] Box<dyn std::error::Error + Send + Sync>),
}

#[async_trait]
pub trait InboxStore: Send + Sync + 'static {
    async fn deliver(&self, n: Notification) -> Result<Delivery, InboxError>;
    async fn list(&self, account: &AccountId, limit: u32) -> Result<Vec<Notification>, InboxError>;
    async fn ping(&self) -> Result<(), InboxError>;
}
