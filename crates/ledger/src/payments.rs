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

/// Who drives a payment (or delivers an outbox row): a replica's name, e.g. `payment-1:4242:9f3a`.
/// 1 to [`LeaseOwner::MAX_LEN`] visible ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LeaseOwner(String);

/// A lease owner that is empty, too long, or not visible ASCII.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a lease owner is 1 to {max} visible ASCII characters, got {got:?}")]
pub struct InvalidLeaseOwner {
    pub got: String,
    pub max: usize,
}

impl LeaseOwner {
    pub const MAX_LEN: usize = 200;

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for LeaseOwner {
    type Error = InvalidLeaseOwner;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        let ok =
            !s.is_empty() && s.len() <= Self::MAX_LEN && s.bytes().all(|b| b.is_ascii_graphic());
        if ok {
            Ok(Self(s))
        } else {
            Err(InvalidLeaseOwner {
                got: s,
                max: Self::MAX_LEN,
            })
        }
    }
}

impl TryFrom<&str> for LeaseOwner {
    type Error = InvalidLeaseOwner;
    fn try_from(s: &str) -> Result<Self, Self::Error> {
        Self::try_from(s.to_owned())
    }
}

impl std::fmt::Display for LeaseOwner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A lease on one payment (or a claim on one outbox row), as its holder carries it.
///
/// `token` is a fencing token: it grows by one every time anyone takes the row, so a holder that
/// paused past its expiry (and was replaced) writes with an old token, and the store refuses the
/// write ([`PaymentStoreError::LeaseLost`]). Expiry is judged by the database's clock alone;
/// `ttl` is how far each fenced write pushes it out again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub owner: LeaseOwner,
    pub token: i64,
    pub ttl: std::time::Duration,
}

impl Lease {
    /// The ttl in the stores' unit, at least one millisecond.
    pub(crate) fn ttl_ms(&self) -> i64 {
        ttl_ms(self.ttl)
    }
}

/// `ttl` in milliseconds for SQL, at least 1 and at most a day.
pub(crate) fn ttl_ms(ttl: std::time::Duration) -> i64 {
    i64::try_from(ttl.as_millis())
        .unwrap_or(i64::MAX)
        .clamp(1, TTL_MS_MAX)
}

/// The longest lease a store grants: a lease is a bound on a pause, never a reservation.
pub const TTL_MS_MAX: i64 = 86_400_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Begin {
    /// No payment had this idempotency key; this one is now stored in `received`, leased to the
    /// caller.
    Created(Payment, Lease),
    /// A payment with this key exists (in any state). `lease` is the caller's when the payment is
    /// non-terminal, has the caller's fingerprint and its previous lease had run out (taken over
    /// in the same write); `None` when it is terminal, another body, or someone holds it now.
    Existing {
        payment: Payment,
        lease: Option<Lease>,
    },
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
    /// The write carried a lease token that is no longer the payment's (or the outbox row's): its
    /// lease ran out and someone else took it. Nothing was changed; the other holder goes on.
    #[error("the lease on {what} {id} was lost (token {token} is stale)")]
    LeaseLost {
        what: &'static str,
        id: String,
        token: i64,
    },
    #[error(transparent)]
    Transition(#[from] finpay_core::TransitionError),
    #[error("storage failed")]
    Storage(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// The payments store. Every write a driver makes is fenced by its [`Lease`]; the resumer and the
/// outbox dispatcher take their work through the store ([`PaymentStore::take_expired`],
/// [`PaymentStore::claim_outbox`]), so any number of replicas share it without doing a payment's
/// work twice at once.
#[async_trait]
pub trait PaymentStore: Send + Sync + 'static {
    /// Stores a new payment in `received`, leased to `owner` for `ttl`, unless its idempotency key
    /// is taken; then answers the existing payment, and takes its lease over (token + 1) in the same
    /// write when it is non-terminal, has the same fingerprint and its lease ran out.
    async fn begin(
        &self,
        new: NewPayment,
        owner: &LeaseOwner,
        ttl: std::time::Duration,
    ) -> Result<Begin, PaymentStoreError>;

    async fn get(&self, id: PaymentId) -> Result<Option<Payment>, PaymentStoreError>;

    /// Compare-and-set `from -> to` (checked against the state machine), fenced by `lease`:
    /// `LeaseLost` when the payment's token is not `lease.token` any more, `StaleState` when it is no
    /// longer in `from`, `NotFound` when it does not exist; each changes nothing. The write renews
    /// the lease for `lease.ttl`, and clears it when `to` is terminal. Not for `succeeded`, which
    /// only [`PaymentStore::succeed_from`] reaches (with its outbox row); asking for it is a
    /// `Transition` error.
    async fn advance(
        &self,
        id: PaymentId,
        from: PaymentStatus,
        to: PaymentStatus,
        note: StepNote,
        lease: &Lease,
    ) -> Result<Payment, PaymentStoreError>;

    /// `debited -> succeeded` and the outbox row, in one write, fenced by `lease`.
    async fn succeed(
        &self,
        id: PaymentId,
        notification: OutboxMessage,
        lease: &Lease,
    ) -> Result<Payment, PaymentStoreError> {
        self.succeed_from(id, PaymentStatus::Debited, notification, lease)
            .await
    }

    /// Compare-and-set `from -> succeeded` and the outbox row, in one write, fenced by `lease` (as
    /// [`PaymentStore::advance`]), which it clears. `from` is `debited`, or a state from which the
    /// state machine reaches `succeeded` through `debited` ([`PaymentStatus::can_move_via`]):
    /// `fraud_checked`, once the wallet confirmed the debit. Anything else is a `Transition` error.
    /// The row's first attempt is at `notification.next_attempt_at_ms` or the database's now,
    /// whichever is earlier: due at once whatever the caller's clock says.
    async fn succeed_from(
        &self,
        id: PaymentId,
        from: PaymentStatus,
        notification: OutboxMessage,
        lease: &Lease,
    ) -> Result<Payment, PaymentStoreError>;

    /// Ends `lease` now (fenced): the payment stopped short of a terminal state (the wallet could
    /// not be reached), and the next resumer pass, on any replica, takes it.
    async fn release(&self, id: PaymentId, lease: &Lease) -> Result<(), PaymentStoreError>;

    /// Takes up to `limit` non-terminal payments whose lease has run out, oldest first, leasing
    /// each to `owner` for `ttl` (token + 1), in one write. Two callers never get the same payment.
    async fn take_expired(
        &self,
        owner: &LeaseOwner,
        ttl: std::time::Duration,
        limit: u32,
    ) -> Result<Vec<(Payment, Lease)>, PaymentStoreError>;

    /// Payments in a non-terminal state, oldest first, leased or not: for inspection only; the
    /// resumer takes its work through [`PaymentStore::take_expired`].
    async fn unfinished(&self, limit: u32) -> Result<Vec<Payment>, PaymentStoreError>;

    /// Claims up to `limit` undelivered outbox rows that are due (by the database's clock) and
    /// unclaimed or whose claim ran out, oldest first, for `owner` for `ttl`, in one write. Two
    /// callers never get the same row while its claim lasts.
    async fn claim_outbox(
        &self,
        owner: &LeaseOwner,
        ttl: std::time::Duration,
        limit: u32,
    ) -> Result<Vec<(OutboxMessage, Lease)>, PaymentStoreError>;

    /// Undelivered outbox rows due at `now_ms`, oldest first, claimed or not: for inspection
    /// only; the dispatcher takes its work through [`PaymentStore::claim_outbox`].
    async fn outbox_due(
        &self,
        now_ms: i64,
        limit: u32,
    ) -> Result<Vec<OutboxMessage>, PaymentStoreError>;

    /// Marks one outbox row delivered (and ends its claim). Delivered is a fact, so this is not
    /// fenced: whoever delivered it may say so.
    async fn outbox_delivered(
        &self,
        id: &NotificationId,
        now_ms: i64,
    ) -> Result<(), PaymentStoreError> {
        self.outbox_delivered_many(std::slice::from_ref(id), now_ms)
            .await
    }

    /// Marks many outbox rows delivered at once (one write instead of one per row) and ends their
    /// claims. Every id must exist; rows already delivered keep their first time.
    async fn outbox_delivered_many(
        &self,
        ids: &[NotificationId],
        now_ms: i64,
    ) -> Result<(), PaymentStoreError>;

    /// Records a failed delivery (fenced by `claim`; a row delivered meanwhile is left alone):
    /// `attempts`, the error, and the next attempt `delay` after now by the database's clock. Ends
    /// the claim. `LeaseLost` when someone else claimed the row since.
    async fn outbox_retry_later(
        &self,
        id: &NotificationId,
        claim: &Lease,
        attempts: u32,
        delay: std::time::Duration,
        last_error: &str,
    ) -> Result<(), PaymentStoreError>;

    /// Number of undelivered outbox rows, for the `/metrics` gauge.
    async fn outbox_pending(&self) -> Result<u64, PaymentStoreError>;

    async fn ping(&self) -> Result<(), PaymentStoreError>;
}

/// The error of a fenced write that changed nothing, from what the row holds now: `NotFound`,
/// `LeaseLost` (another token: someone else holds it), else `StaleState`. `None` when the row
/// agrees with the write's expectation after all (it changed between the write and this read;
/// the caller asks again).
pub(crate) fn fenced_miss(
    id: PaymentId,
    expected: PaymentStatus,
    token: i64,
    now: Option<(PaymentStatus, i64)>,
) -> Option<PaymentStoreError> {
    match now {
        None => Some(PaymentStoreError::NotFound(id)),
        Some((_, held)) if held != token => Some(PaymentStoreError::LeaseLost {
            what: "payment",
            id: id.to_string(),
            token,
        }),
        Some((actual, _)) if actual != expected => Some(PaymentStoreError::StaleState {
            id,
            expected,
            actual,
        }),
        Some(_) => None,
    }
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

/// Every migration of `migrator`, in order, as one text: what the schema tests read.
#[cfg(test)]
pub(crate) fn migrations_sql(migrator: &sqlx::migrate::Migrator) -> String {
    migrator
        .iter()
        .map(|m| m.sql.as_ref())
        .collect::<Vec<_>>()
        .join("\n")
}
