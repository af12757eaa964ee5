//! Payments, their idempotency keys, and the notification outbox.

use async_trait::async_trait;
use finpay_core::{
    AccountId, Amount, Currency, Fingerprint, IdempotencyKey, NotificationId, PaymentId,
    PaymentStatus,
};
use serde::{Deserialize, Serialize};

/// The state `succeeded` is reached from: `debited`, or `fraud_checked` through `debited`.
pub(crate) fn check_succeed_from(from: PaymentStatus) -> Result<(), finpay_core::TransitionError> {
    match from {
        PaymentStatus::Debited => from.move_to(PaymentStatus::Succeeded),
        _ => from.move_via(PaymentStatus::Debited, PaymentStatus::Succeeded),
    }
    .map(|_| ())
}

/// The step `advance` may take: one legal move of the state machine, and never into `succeeded`,
/// which is reached only together with its outbox row (through `succeed_from`).
pub(crate) fn check_advance(
    from: PaymentStatus,
    to: PaymentStatus,
) -> Result<(), finpay_core::TransitionError> {
    if to == PaymentStatus::Succeeded {
        return Err(finpay_core::TransitionError { from, to });
    }
    from.move_to(to).map(|_| ())
}

/// A payment as first received, before anything is called.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewPayment {
    pub id: PaymentId,
    pub idempotency_key: IdempotencyKey,
    pub fingerprint: Fingerprint,
    pub account_id: AccountId,
    pub merchant_account_id: AccountId,
    pub amount: Amount,
    pub currency: Currency,
    pub description: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Payment {
    pub id: PaymentId,
    #[serde(skip)]
    pub idempotency_key: IdempotencyKey,
    #[serde(skip)]
    pub fingerprint: Fingerprint,
    pub account_id: AccountId,
    pub merchant_account_id: AccountId,
    pub amount_minor: Amount,
    pub currency: Currency,
    pub description: Option<String>,
    pub status: PaymentStatus,
    /// Why the payment was declined or failed, for people (e.g. "fraud: amount over limit").
    pub reason: Option<String>,
    /// Set when a fallback policy let the payment through without a fresh SAFE verdict.
    pub needs_review: bool,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

/// What a step records besides the new status.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StepNote {
    pub reason: Option<String>,
    pub needs_review: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Begin {
    /// No payment had this idempotency key; this one is now stored in `received`.
    Created(Payment),
    /// A payment with this key exists (in any state); the caller compares fingerprints.
    Existing(Payment),
}

/// A notification waiting in (or delivered from) the outbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxMessage {
    pub id: NotificationId,
    pub payment_id: PaymentId,
    pub account_id: AccountId,
    pub message: String,
    pub attempts: u32,
    pub next_attempt_at_ms: i64,
    pub delivered_at_ms: Option<i64>,
    pub last_error: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum PaymentStoreError {
    #[error("payment {0} does not exist")]
    NotFound(PaymentId),
    /// The compare-and-set lost: the payment was not in the expected state.
    #[error("payment {id} is {actual}, expected {expected}")]
    StaleState {
        id: PaymentId,
        expected: PaymentStatus,
        actual: PaymentStatus,
    },
    #[error(transparent)]
    Transition(#[from] finpay_core::TransitionError),
    #[error("storage failed")]
    Storage(#[source] Box<dyn std::error::Error + Send + Sync>),
}

#[async_trait]
pub trait PaymentStore: Send + Sync + 'static {
    /// Stores a new payment in `received`, unless its idempotency key is taken.
    async fn begin(&self, new: NewPayment) -> Result<Begin, PaymentStoreError>;

    async fn get(&self, id: PaymentId) -> Result<Option<Payment>, PaymentStoreError>;

    /// Compare-and-set `from -> to` (checked against the state machine): `StaleState` when the
    /// payment is no longer in `from`, `NotFound` when it does not exist. Not for `succeeded`, which
    /// only [`PaymentStore::succeed`] reaches (with its outbox row); asking for it is a `Transition`
    /// error.
    async fn advance(
        &self,
        id: PaymentId,
        from: PaymentStatus,
        to: PaymentStatus,
        note: StepNote,
    ) -> Result<Payment, PaymentStoreError>;

    /// `debited -> succeeded` and the outbox row, in one transaction.
    async fn succeed(
        &self,
        id: PaymentId,
        notification: OutboxMessage,
    ) -> Result<Payment, PaymentStoreError> {
        self.succeed_from(id, PaymentStatus::Debited, notification)
            .await
    }

    /// Compare-and-set `from -> succeeded` and the outbox row, in one transaction. `from` is
    /// `debited`, or a state from which the state machine reaches `succeeded` through `debited`
    /// ([`PaymentStatus::can_move_via`]): `fraud_checked`, once the wallet confirmed the debit.
    /// Anything else is a `Transition` error; `StaleState` when the payment is no longer in `from`.
    async fn succeed_from(
        &self,
        id: PaymentId,
        from: PaymentStatus,
        notification: OutboxMessage,
    ) -> Result<Payment, PaymentStoreError>;

    /// Payments in a non-terminal state, oldest first, for the resumer.
    async fn unfinished(&self, limit: u32) -> Result<Vec<Payment>, PaymentStoreError>;

    /// Undelivered outbox rows due at `now_ms`, oldest first.
    async fn outbox_due(
        &self,
        now_ms: i64,
        limit: u32,
    ) -> Result<Vec<OutboxMessage>, PaymentStoreError>;

    async fn outbox_delivered(
        &self,
        id: &NotificationId,
        now_ms: i64,
    ) -> Result<(), PaymentStoreError>;

    /// Marks many outbox rows delivered at once (one write instead of one per row). Every id must
    /// exist; rows already delivered keep their first time.
    async fn outbox_delivered_many(
        &self,
        ids: &[NotificationId],
        now_ms: i64,
    ) -> Result<(), PaymentStoreError> {
        for id in ids {
            self.outbox_delivered(id, now_ms).await?;
        }
        Ok(())
    }

    async fn outbox_retry_later(
        &self,
        id: &NotificationId,
        attempts: u32,
        next_attempt_at_ms: i64,
        last_error: &str,
    ) -> Result<(), PaymentStoreError>;

    /// Number of undelivered outbox rows, for the `/metrics` gauge.
    async fn outbox_pending(&self) -> Result<u64, PaymentStoreError>;

    async fn ping(&self) -> Result<(), PaymentStoreError>;
}

/// Holds a schema's status lists to [`PaymentStatus`]: the `CHECK` on `status` lists every state and
/// the resumer's partial index every non-terminal one, exactly, and there is no other status list.
/// The DDL stays a plain string (it is the readable record of the table); this test keeps it honest.
#[cfg(test)]
pub(crate) fn assert_schema_status_lists(schema: &str) {
    let lists: Vec<&str> = schema
        .match_indices("status IN")
        .map(|(at, marker)| {
            let rest = schema[at + marker.len()..].trim_start();
            let rest = rest.strip_prefix('(').expect("a parenthesised list");
            &rest[..rest.find(')').expect("a closed list")]
        })
        .collect();
    assert_eq!(
        lists,
        [
            PaymentStatus::sql_list(PaymentStatus::ALL),
            PaymentStatus::sql_list(PaymentStatus::non_terminal()),
        ]
    );
}
