//! The payment flow: from `received` to a terminal state, one compare-and-set step at a time.
//!
//! ```text
//! received ──fraud SAFE──▶ fraud_checked ──wallet debit──▶ (debited) ──▶ succeeded (+ outbox row)
//!    │ fraud DENY ──▶ declined          │ insufficient funds, unknown account ──▶ declined
//!    └ fraud unavailable ──▶ failed      └ wallet unreachable: stays fraud_checked for the resumer
//! ```
//!
//! Once the wallet confirmed the debit, one write moves the payment `fraud_checked -> debited ->
//! succeeded` and queues its notification ([`PaymentStatus::move_via`]): `debited` on its own would
//! be a durable state nobody needs, since a crash before that write leaves the payment in
//! `fraud_checked`, and repeating the wallet step re-sends the same transfer id, which the wallet
//! replays without a second debit. A payment a store holds in `debited` is driven on from there.
//!
//! Every step is safe to repeat, which is what lets the request path and the resumer share it: a
//! fraud check is a read; the wallet transfer's id is derived from the payment id, so re-sending it
//! after an ambiguous failure or a crash applies it at most once; `advance` is a compare-and-set.
//!
//! # One driver at a time, across replicas
//!
//! A payment being driven holds a lease in its row ([`Lease`]: owner, fencing token, expiry by the
//! database's clock). The request path gets it from `begin` (a new payment, or one whose lease ran
//! out); the resumer gets it from `take_expired`. Every write of a drive is fenced by the lease's
//! token and renews it; a terminal write clears it; a drive that stops short (the wallet could not
//! be reached) releases it, so the next resumer pass on any replica takes the payment. A drive
//! whose write finds its token stale (it paused past its lease and someone else took the payment
//! over) stops at once: [`Driven::LeaseLost`]. Nothing of this lives in process memory, so two
//! payment replicas never drive one payment at once, and a replica that dies leaves its payments to
//! the others once their leases run out (`payment.lease_ms`, longer than the payment deadline, so a
//! live drive never loses its lease between two writes).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{header, Method, Request, StatusCode};
use bytes::Bytes;
use finpay_api::fraud::{self, CheckRequest, CheckResponse, Verdict};
use finpay_api::headers::{IDEMPOTENCY_KEY, REQUEST_ID as REQUEST_ID_HEADER};
use finpay_api::payment::reason;
use finpay_api::problem::{slug, Problem};
use finpay_api::wallet::{self, CreateTransfer};
use finpay_core::{AccountId, Amount, Currency, PaymentId, PaymentStatus};
use finpay_ledger::payments::{
    Lease, LeaseOwner, OutboxMessage, Payment, PaymentStore, PaymentStoreError, StepNote,
};
use finpay_resilience::{CallError, Deadline, Idempotent};
use serde::Serialize;
use tokio::time::Instant;

use super::deps::Dependencies;
use super::settings::{FraudFallback, PaymentSettings};

/// Where a drive stopped.
#[derive(Debug)]
pub enum Driven {
    /// Terminal: succeeded, declined or failed.
    Done(Payment),
    /// The wallet could not be reached; the payment waits in `fraud_checked` for the resumer, its
    /// lease released.
    WalletUnavailable { payment: Payment, why: String },
    /// The lease ran out and another driver took the payment over; this drive stopped without
    /// writing. Holds the payment as this drive last saw it.
    LeaseLost(Payment),
}

/// The storage failed under a drive; the payment stays where it was and the resumer retries.
#[derive(Debug, thiserror::Error)]
#[error("payment storage failed")]
pub struct DriveError(#[source] pub PaymentStoreError);

enum FraudAnswer {
    Safe,
    Deny(Vec<String>),
    Unavailable(String),
}

enum WalletAnswer {
    Debited,
    Refused { slug: String, detail: String },
    Unavailable(String),
}

/// The payment flow and everything it needs.
pub struct Engine {
    pub store: Arc<dyn PaymentStore>,
    pub deps: Dependencies,
    /// This replica's name on the leases it takes: unique per process start.
    pub owner: LeaseOwner,
    pub cfg: PaymentSettings,
    /// Wakes the outbox dispatcher when a payment succeeded, so delivery need not wait for the poll.
    pub outbox_kick: tokio::sync::Notify,
    fallback: FraudFallback,
    recent_safe: Mutex<HashMap<AccountId, Instant>>,
}

/// Formats minor units in the currency's major unit: 100 USD -> "1.00", 100 JPY -> "100".
pub fn format_amount(amount: Amount, currency: Currency) -> String {
    let exp = currency.minor_unit_exponent();
    if exp == 0 {
        return amount.minor().to_string();
    }
    let scale = 10u64.pow(exp);
    format!(
        "{}.{:0width$}",
        amount.minor() / scale,
        amount.minor() % scale,
        width = exp as usize
    )
}

/// A JSON POST to `path` of a dependency, with the driving request's id passed on.
pub(crate) fn json_request<T: Serialize>(
    path: &'static str,
    body: &T,
    idempotency_key: Option<&str>,
) -> Request<Bytes> {
    let bytes = serde_json::to_vec(body)
        .map(Bytes::from)
        .unwrap_or_default();
    let mut req = Request::new(bytes);
    *req.method_mut() = Method::POST;
    *req.uri_mut() = http::Uri::from_static(path);
    req.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    if let Some(key) = idempotency_key.and_then(|k| http::HeaderValue::from_str(k).ok()) {
        req.headers_mut().insert(IDEMPOTENCY_KEY, key);
    }
    // The caller's request id travels on, so one payment can be followed through every service's log.
    if let Ok(Some(id)) = REQUEST_ID.try_with(Clone::clone) {
        req.headers_mut().insert(REQUEST_ID_HEADER, id);
    }
    req
}

tokio::task_local! {
    /// The `x-request-id` of the request driving a payment (none for the resumer).
    pub static REQUEST_ID: Option<http::HeaderValue>;
}

/// The slug and detail of a problem answer, for logs and decline reasons.
fn problem_type(body: &[u8]) -> (String, String) {
    let p = Problem::parse(body).unwrap_or_default();
    (p.slug().to_owned(), p.detail)
}

fn call_error_text(e: &CallError) -> String {
    match e {
        CallError::Exhausted { last, .. } => format!("attempts exhausted ({last})"),
        other => other.to_string(),
    }
}

impl Engine {
    pub fn new(
        store: Arc<dyn PaymentStore>,
        deps: Dependencies,
        cfg: PaymentSettings,
        fallback: FraudFallback,
    ) -> Self {
        Self {
            store,
            deps,
            owner: cfg.lease_owner(),
            cfg,
            outbox_kick: tokio::sync::Notify::new(),
            fallback,
            recent_safe: Mutex::new(HashMap::new()),
        }
    }

    /// Drives `payment` under `lease` until it is terminal, the wallet cannot be reached (the lease
    /// is released then), or the lease is lost.
    pub async fn drive(
        &self,
        payment: Payment,
        lease: Lease,
        deadline: Deadline,
    ) -> Result<Driven, DriveError> {
        let id = payment.id;
        let driven = self.drive_steps(payment, &lease, deadline).await;
        let stopped_short = match &driven {
            Ok(Driven::WalletUnavailable { .. }) | Err(_) => true,
            Ok(Driven::Done(_) | Driven::LeaseLost(_)) => false,
        };
        if stopped_short {
            // Left for the next resumer pass on any replica, without waiting out the lease. A
            // release that fails only means the lease runs out on its own.
            if let Err(e) = self.store.release(id, &lease).await {
                tracing::debug!(payment_id = %id, error = %crate::http::problem::error_chain(&e), "lease not released");
            }
        }
        driven
    }

    async fn drive_steps(
        &self,
        mut payment: Payment,
        lease: &Lease,
        deadline: Deadline,
    ) -> Result<Driven, DriveError> {
        // The graph is acyclic with at most three steps; the bound also covers lost compare-and-sets.
        for _ in 0..8 {
            let step = match payment.status {
                PaymentStatus::Received => self.fraud_step(&payment, lease, deadline).await,
                PaymentStatus::FraudChecked => self.wallet_step(&payment, lease, deadline).await,
                PaymentStatus::Debited => self.succeed_step(&payment, lease).await,
                PaymentStatus::Succeeded | PaymentStatus::Declined | PaymentStatus::Failed => {
                    return Ok(Driven::Done(payment))
                }
            };
            payment = match step {
                Ok(next) => next,
                Err(StepError::Wallet(why)) => {
                    return Ok(Driven::WalletUnavailable { payment, why })
                }
                Err(StepError::LeaseLost) => {
                    tracing::warn!(payment_id = %payment.id, status = %payment.status, token = lease.token, "lease lost mid-drive; another driver finishes the payment");
                    metrics::counter!("finpay_payment_leases_lost_total").increment(1);
                    return Ok(Driven::LeaseLost(payment));
                }
                Err(StepError::Stale) => self.reload(payment.id).await?,
                Err(StepError::Store(e)) => return Err(DriveError(e)),
            };
        }
        Ok(match payment.status.is_terminal() {
            true => Driven::Done(payment),
            false => Driven::WalletUnavailable {
                payment,
                why: "the payment did not settle; it will be resumed".into(),
            },
        })
    }

    async fn reload(&self, id: PaymentId) -> Result<Payment, DriveError> {
        match self.store.get(id).await {
            Ok(Some(p)) => Ok(p),
            Ok(None) => Err(DriveError(PaymentStoreError::NotFound(id))),
            Err(e) => Err(DriveError(e)),
        }
    }

    async fn advance(
        &self,
        p: &Payment,
        lease: &Lease,
        to: PaymentStatus,
        note: StepNote,
    ) -> Result<Payment, StepError> {
        self.store
            .advance(p.id, p.status, to, note, lease)
            .await
            .map_err(StepError::from)
    }

    async fn fraud_step(
        &self,
        p: &Payment,
        lease: &Lease,
        deadline: Deadline,
    ) -> Result<Payment, StepError> {
        match self.check_fraud(p, deadline).await {
            FraudAnswer::Safe => {
                self.remember_safe(&p.account_id);
                self.advance(p, lease, PaymentStatus::FraudChecked, StepNote::default())
                    .await
            }
            FraudAnswer::Deny(rules) => {
                // The rules that fired stay in the log: the caller learns only that fraud denied.
                tracing::info!(payment_id = %p.id, rules = %rules.join("; "), "fraud denied the payment");
                self.advance(
                    p,
                    lease,
                    PaymentStatus::Declined,
                    StepNote {
                        reason: Some(reason::FRAUD_DENIED.to_owned()),
                        needs_review: false,
                    },
                )
                .await
            }
            FraudAnswer::Unavailable(why) => {
                if self.fallback_allows(p) {
                    tracing::warn!(payment_id = %p.id, %why, "fraud unavailable; fallback policy lets the payment pass for review");
                    metrics::counter!("finpay_fraud_fallback_total").increment(1);
                    let note = StepNote {
                        reason: Some(reason::FRAUD_UNAVAILABLE_PASSED.to_owned()),
                        needs_review: true,
                    };
                    return self
                        .advance(p, lease, PaymentStatus::FraudChecked, note)
                        .await;
                }
                tracing::warn!(payment_id = %p.id, %why, "fraud unavailable; failing closed");
                let note = StepNote {
                    reason: Some(reason::FRAUD_UNAVAILABLE.to_owned()),
                    needs_review: false,
                };
                self.advance(p, lease, PaymentStatus::Failed, note).await
            }
        }
    }

    async fn check_fraud(&self, p: &Payment, deadline: Deadline) -> FraudAnswer {
        let body = CheckRequest {
            payment_id: p.id,
            account_id: p.account_id.clone(),
            amount_minor: p.amount_minor,
            currency: p.currency,
        };
        let mut req = json_request(fraud::CHECKS, &body, None);
        // A check is a pure read: safe to retry and hedge.
        req.extensions_mut().insert(Idempotent);
        match self.deps.fraud.call(req, deadline).await {
            Ok(resp) if resp.status() == StatusCode::OK => {
                match serde_json::from_slice::<CheckResponse>(resp.body()) {
                    Ok(CheckResponse {
                        verdict: Verdict::Safe,
                        ..
                    }) => FraudAnswer::Safe,
                    Ok(CheckResponse {
                        verdict: Verdict::Deny,
                        reasons,
                    }) => FraudAnswer::Deny(reasons),
                    Err(e) => FraudAnswer::Unavailable(format!("unreadable fraud answer: {e}")),
                }
            }
            Ok(resp) => {
                let (slug, detail) = problem_type(resp.body());
                FraudAnswer::Unavailable(format!(
                    "fraud answered {} {slug} {detail}",
                    resp.status()
                ))
            }
            Err(e) => FraudAnswer::Unavailable(call_error_text(&e)),
        }
    }

    fn remember_safe(&self, account: &AccountId) {
        if !self.fallback.enabled {
            return;
        }
        let mut m = self.recent_safe.lock().unwrap_or_else(|p| p.into_inner());
        if m.len() >= self.fallback.max_accounts {
            m.clear();
        }
        m.insert(account.clone(), Instant::now());
    }

    fn fallback_allows(&self, p: &Payment) -> bool {
        let f = &self.fallback;
        if !f.enabled || p.amount_minor.minor() > f.max_amount_minor {
            return false;
        }
        let m = self.recent_safe.lock().unwrap_or_else(|p| p.into_inner());
        m.get(&p.account_id)
            .is_some_and(|at| at.elapsed() <= Duration::from_millis(f.safe_verdict_max_age_ms))
    }

    /// `Err(StepError::Wallet)`: the wallet could not be reached; the payment stays in `fraud_checked`.
    async fn wallet_step(
        &self,
        p: &Payment,
        lease: &Lease,
        deadline: Deadline,
    ) -> Result<Payment, StepError> {
        match self.debit(p, deadline).await {
            // The debit is a fact in the wallet now: succeed through `debited` in one write.
            WalletAnswer::Debited => self.succeed_step(p, lease).await,
            WalletAnswer::Refused { slug, detail } => {
                tracing::info!(payment_id = %p.id, %slug, %detail, "the wallet declined the debit");
                let note = StepNote {
                    reason: Some(reason::for_wallet_decline(&slug).to_owned()),
                    needs_review: false,
                };
                self.advance(p, lease, PaymentStatus::Declined, note).await
            }
            WalletAnswer::Unavailable(why) => {
                tracing::warn!(payment_id = %p.id, %why, "wallet unavailable; payment left for the resumer");
                Err(StepError::Wallet(why))
            }
        }
    }

    async fn debit(&self, p: &Payment, deadline: Deadline) -> WalletAnswer {
        let transfer_id = p.id.debit_transfer_id();
        let body = CreateTransfer {
            id: transfer_id.clone(),
            debit_account_id: p.account_id.clone(),
            credit_account_id: p.merchant_account_id.clone(),
            amount_minor: p.amount_minor,
            currency: p.currency,
        };
        // The transfer id is the idempotency key: a retry after a lost answer applies it at most once.
        let req = json_request(wallet::TRANSFERS, &body, Some(transfer_id.as_str()));
        match self.deps.wallet.call(req, deadline).await {
            Ok(resp) if resp.status() == StatusCode::CREATED || resp.status() == StatusCode::OK => {
                WalletAnswer::Debited
            }
            Ok(resp) => {
                let (kind, detail) = problem_type(resp.body());
                if resp.status() == StatusCode::UNPROCESSABLE_ENTITY
                    && slug::WALLET_DECLINES.contains(&kind.as_str())
                {
                    WalletAnswer::Refused { slug: kind, detail }
                } else {
                    // A 409 (the transfer id holds another body) or a 400 is a bug, not a decline: keep
                    // the payment where it is, loudly, rather than guess about money.
                    tracing::error!(payment_id = %p.id, status = %resp.status(), slug = %kind, %detail, "unexpected wallet answer");
                    WalletAnswer::Unavailable(format!("wallet answered {} {kind}", resp.status()))
                }
            }
            Err(e) => WalletAnswer::Unavailable(call_error_text(&e)),
        }
    }

    /// `p` is `debited`, or `fraud_checked` with the wallet's debit confirmed.
    async fn succeed_step(&self, p: &Payment, lease: &Lease) -> Result<Payment, StepError> {
        let msg = OutboxMessage {
            id: p.id.notification_id(),
            payment_id: p.id,
            account_id: p.account_id.clone(),
            message: format!(
                "Payment of {} {} to {} succeeded.",
                format_amount(p.amount_minor, p.currency),
                p.currency,
                p.merchant_account_id
            ),
            attempts: 0,
            next_attempt_at_ms: finpay_ledger::now_ms(),
            delivered_at_ms: None,
            last_error: None,
        };
        let next = self.store.succeed_from(p.id, p.status, msg, lease).await?;
        // Deliver soon, off this payment's path: the dispatcher wakes instead of polling.
        self.outbox_kick.notify_one();
        Ok(next)
    }
}

enum StepError {
    Wallet(String),
    Stale,
    LeaseLost,
    Store(PaymentStoreError),
}

impl From<PaymentStoreError> for StepError {
    fn from(e: PaymentStoreError) -> Self {
        match e {
            PaymentStoreError::StaleState { .. } => StepError::Stale,
            PaymentStoreError::LeaseLost { .. } => StepError::LeaseLost,
            e => StepError::Store(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_format_in_major_units() {
        let a = |m| Amount::try_new(m).expect("valid");
        assert_eq!(format_amount(a(100), Currency::Usd), "1.00");
        assert_eq!(format_amount(a(12345), Currency::Eur), "123.45");
        assert_eq!(format_amount(a(7), Currency::Usd), "0.07");
        assert_eq!(format_amount(a(100), Currency::Jpy), "100");
    }

    #[test]
    fn a_lost_lease_is_its_own_step_error_apart_from_a_stale_state() {
        let id = PaymentId::new_v7();
        let lost = PaymentStoreError::LeaseLost {
            what: "payment",
            id: id.to_string(),
            token: 3,
        };
        assert!(matches!(StepError::from(lost), StepError::LeaseLost));
        let stale = PaymentStoreError::StaleState {
            id,
            expected: PaymentStatus::Received,
            actual: PaymentStatus::FraudChecked,
        };
        assert!(matches!(StepError::from(stale), StepError::Stale));
        let missing = PaymentStoreError::NotFound(id);
        assert!(matches!(StepError::from(missing), StepError::Store(_)));
    }
}
