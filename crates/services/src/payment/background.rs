//! The payment service's two background loops.
//!
//! - The **resumer** finishes what a crash (or an unreachable wallet) left behind: on start and every
//!   `resume_interval_ms` it takes the non-terminal payments whose lease ran out (on any replica:
//!   `take_expired`, one write that leases them to this replica) and drives each. Repeating a step
//!   is safe (see [`super::engine`]), so resuming needs no record of how far the dead process got
//!   beyond the persisted state.
//! - The **outbox dispatcher** claims due notifications (`claim_outbox`: no two replicas send one
//!   message at once) and delivers them to the notification service with capped exponential backoff
//!   and full jitter, persisting attempts and the next attempt time (by the database's clock), so
//!   delivery survives restarts. It runs beside payments and never blocks or fails one.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use finpay_api::notification::{self, CreateNotification};
use finpay_core::NotificationId;
use finpay_ledger::payments::{Lease, OutboxMessage};
use finpay_resilience::retry::backoff::{Backoff, InvalidBackoff, Jitter};
use finpay_resilience::{CallError, Deadline};
use futures::StreamExt;
use tokio::sync::watch;

use super::engine::{json_request, Driven, Engine};
use super::settings::PaymentSettings;

/// Sleeps `period` or until shutdown; `false` when shutting down.
async fn tick(shutdown: &mut watch::Receiver<bool>, period: Duration) -> bool {
    if *shutdown.borrow() {
        return false;
    }
    tokio::select! {
        _ = tokio::time::sleep(period) => !*shutdown.borrow(),
        _ = shutdown.changed() => false,
    }
}

pub async fn resumer(engine: Arc<Engine>, mut shutdown: watch::Receiver<bool>) {
    let period = Duration::from_millis(engine.cfg.resume_interval_ms);
    loop {
        let pass = resume_once(&engine).await;
        if !pass.again_at_once() && !tick(&mut shutdown, period).await {
            break;
        }
        if *shutdown.borrow() {
            break;
        }
    }
}

/// What one pass of the resumer did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pass {
    /// The store handed over a whole batch: more payments may be waiting.
    pub full: bool,
    /// Payments of the batch whose lease this replica lost mid-drive (another driver has them).
    pub lost: usize,
    /// Payments left as they were because the wallet was unavailable.
    pub deferred: usize,
}

impl Pass {
    /// A full batch that all moved forward means more may be waiting: go again at once (bounded
    /// by the batch size). Anything else waits `resume_interval_ms`: a batch the wallet turned
    /// away would come back at once and be turned away again (while the wallet's breaker is open,
    /// in microseconds), a loop that would spin on the store and the log for the whole outage.
    pub fn again_at_once(&self) -> bool {
        self.full && self.lost == 0 && self.deferred == 0
    }
}

/// One pass over at most one batch of payments whose lease ran out, taken by this replica.
pub async fn resume_once(engine: &Arc<Engine>) -> Pass {
    let batch = engine.cfg.resume_batch;
    let taken = match engine
        .store
        .take_expired(&engine.owner, engine.cfg.lease_ttl(), batch)
        .await
    {
        Ok(list) => list,
        Err(e) => {
            tracing::warn!(error = %crate::http::problem::error_chain(&e), "resumer cannot take payments");
            return Pass::default();
        }
    };
    let full = taken.len() as u32 >= batch;
    let (deferred, lost) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let (deferred_ref, lost_ref) = (&deferred, &lost);
    futures::stream::iter(taken)
        .for_each_concurrent(engine.cfg.resume_concurrency, |(p, lease)| async move {
            let id = p.id;
            let from = p.status;
            let deadline = Deadline::after(engine.cfg.deadline());
            match engine.drive(p, lease, deadline).await {
                Ok(Driven::Done(done)) => {
                    metrics::counter!("finpay_payments_resumed_total", "outcome" => done.status.as_str()).increment(1);
                    tracing::info!(payment_id = %id, %from, to = %done.status, "resumed payment");
                }
                Ok(Driven::WalletUnavailable { why, .. }) => {
                    deferred_ref.fetch_add(1, Ordering::Relaxed);
                    metrics::counter!("finpay_payments_resumed_total", "outcome" => "pending").increment(1);
                    tracing::info!(payment_id = %id, %why, "resume deferred: wallet unavailable");
                }
                Ok(Driven::LeaseLost(_)) => {
                    lost_ref.fetch_add(1, Ordering::Relaxed);
                    metrics::counter!("finpay_payments_resumed_total", "outcome" => "lease_lost").increment(1);
                }
                Err(e) => {
                    tracing::warn!(payment_id = %id, error = %crate::http::problem::error_chain(&e), "resume failed");
                }
            }
        })
        .await;
    Pass {
        full,
        lost: lost.into_inner(),
        deferred: deferred.into_inner(),
    }
}

/// The outbox's delay before attempt `attempts + 1`: uniform in `0..=min(cap, base * 2^attempts)`,
/// from the same backoff the client's retries use.
pub fn outbox_backoff(cfg: &PaymentSettings) -> Result<Backoff, InvalidBackoff> {
    Backoff::try_new(
        Duration::from_millis(cfg.outbox_backoff_base_ms),
        Duration::from_millis(cfg.outbox_backoff_max_ms),
        Jitter::Full,
        cfg.seed,
    )
}

/// Like [`tick`], but also ends early when a payment succeeded (`kick`): a new outbox row is due
/// now. A kick that came during the previous pass is kept by the `Notify`, so none is lost; passes
/// still run one at a time, each taking every row due by then, so a burst of successes is
/// delivered in batches rather than one pass per payment.
async fn tick_or_kick(
    shutdown: &mut watch::Receiver<bool>,
    period: Duration,
    kick: &tokio::sync::Notify,
) -> bool {
    if *shutdown.borrow() {
        return false;
    }
    tokio::select! {
        _ = tokio::time::sleep(period) => !*shutdown.borrow(),
        _ = kick.notified() => !*shutdown.borrow(),
        _ = shutdown.changed() => false,
    }
}

pub async fn outbox_dispatcher(engine: Arc<Engine>, mut shutdown: watch::Receiver<bool>) {
    let period = Duration::from_millis(engine.cfg.outbox_interval_ms);
    // The settings were validated (base >= 1, cap >= base), so this cannot fail.
    let backoff = match outbox_backoff(&engine.cfg) {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(error = %e, "outbox: invalid backoff; the dispatcher does not run");
            return;
        }
    };
    // Kicked passes can run back to back under load; the gauge's COUNT need not run with each.
    let mut gauge_at: Option<tokio::time::Instant> = None;
    loop {
        let full = dispatch_once(&engine, &backoff).await;
        if gauge_at.is_none_or(|at| at.elapsed() >= period) {
            gauge_at = Some(tokio::time::Instant::now());
            if let Ok(pending) = engine.store.outbox_pending().await {
                metrics::gauge!("finpay_outbox_pending").set(pending as f64);
            }
        }
        if !full && !tick_or_kick(&mut shutdown, period, &engine.outbox_kick).await {
            break;
        }
        if *shutdown.borrow() {
            break;
        }
    }
}

/// One pass over the rows this replica claimed; `true` when the batch was full and every delivery
/// went through (more may be due).
pub async fn dispatch_once(engine: &Arc<Engine>, backoff: &Backoff) -> bool {
    let batch = engine.cfg.outbox_batch;
    let due = match engine
        .store
        .claim_outbox(&engine.owner, engine.cfg.outbox_claim_ttl(), batch)
        .await
    {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!(error = %crate::http::problem::error_chain(&e), "outbox: cannot claim due rows");
            return false;
        }
    };
    let full = due.len() as u32 >= batch;
    let failures = std::sync::atomic::AtomicUsize::new(0);
    // Delivered rows are marked together at the end of the pass: one write instead of one per row.
    // A crash before that write only means those rows are delivered again, and the inbox drops the
    // duplicates.
    let delivered = std::sync::Mutex::new(Vec::with_capacity(due.len()));
    futures::stream::iter(due)
        .for_each_concurrent(engine.cfg.outbox_concurrency, |(m, claim)| {
            let (failures, delivered) = (&failures, &delivered);
            async move {
                match deliver(engine, backoff, m, &claim).await {
                    Some(done) => delivered
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(done),
                    None => {
                        failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            }
        })
        .await;
    let delivered = delivered.into_inner().unwrap_or_else(|p| p.into_inner());
    if !delivered.is_empty() && !mark_delivered(engine, &delivered).await {
        failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    full && failures.load(std::sync::atomic::Ordering::Relaxed) == 0
}

/// A message the notification service took, and how (`delivered` or `conflict`).
struct Delivered {
    id: NotificationId,
    result: &'static str,
}

/// Delivers one message; `Some` when the notification service has it now (to be marked delivered).
async fn deliver(
    engine: &Engine,
    backoff: &Backoff,
    m: OutboxMessage,
    claim: &Lease,
) -> Option<Delivered> {
    let body = CreateNotification {
        id: m.id.clone(),
        payment_id: m.payment_id,
        account_id: m.account_id.clone(),
        message: m.message.clone(),
    };
    // The notification id is the inbox's dedup key, so a repeated delivery stores nothing new.
    let req = json_request(notification::NOTIFICATIONS, &body, Some(m.id.as_str()));
    let deadline = Deadline::after(Duration::from_millis(engine.cfg.outbox_deadline_ms));
    let (error, floor) = match engine.deps.notification.call(req, deadline).await {
        Ok(resp) if resp.status() == StatusCode::CREATED || resp.status() == StatusCode::OK => {
            return Some(Delivered {
                id: m.id,
                result: "delivered",
            });
        }
        Ok(resp) if resp.status() == StatusCode::CONFLICT => {
            // The inbox holds this id with another body: it was delivered, in some form. Retrying
            // can never change that, so stop and say so.
            tracing::error!(notification_id = %m.id, "outbox: inbox holds this id with a different body");
            return Some(Delivered {
                id: m.id,
                result: "conflict",
            });
        }
        Ok(resp) => (format!("notification answered {}", resp.status()), None),
        Err(e @ CallError::BreakerOpen { .. }) => (e.to_string(), e.retry_after()),
        Err(e) => (e.to_string(), e.retry_after()),
    };
    let attempts = m.attempts.saturating_add(1);
    // Retry number `attempts` of this message: the sleep before it grows with the failures so far.
    let delay = backoff.delay(attempts, Duration::ZERO);
    let delay = floor.map_or(delay, |f| delay.max(f));
    metrics::counter!("finpay_outbox_deliveries_total", "result" => "retry").increment(1);
    tracing::debug!(notification_id = %m.id, attempts, ?delay, %error, "outbox: delivery failed, retrying later");
    // The store reckons the next attempt from its own clock: `delay` after now.
    if let Err(e) = engine
        .store
        .outbox_retry_later(&m.id, claim, attempts, delay, &error)
        .await
    {
        tracing::warn!(notification_id = %m.id, error = %crate::http::problem::error_chain(&e), "outbox: cannot record the attempt");
    }
    None
}

/// Marks a pass's deliveries in one write; `false` when that failed (they are delivered again later).
async fn mark_delivered(engine: &Engine, done: &[Delivered]) -> bool {
    let ids: Vec<NotificationId> = done.iter().map(|d| d.id.clone()).collect();
    match engine
        .store
        .outbox_delivered_many(&ids, finpay_ledger::now_ms())
        .await
    {
        Ok(()) => {
            for result in ["delivered", "conflict"] {
                let n = done.iter().filter(|d| d.result == result).count() as u64;
                if n > 0 {
                    metrics::counter!("finpay_outbox_deliveries_total", "result" => result)
                        .increment(n);
                }
            }
            true
        }
        Err(e) => {
            tracing::warn!(rows = ids.len(), error = %crate::http::problem::error_chain(&e), "outbox: cannot mark delivered");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outbox_backoff_stays_under_the_capped_exponential_of_its_settings() {
        let cfg = PaymentSettings {
            outbox_backoff_base_ms: 100,
            outbox_backoff_max_ms: 5_000,
            seed: Some(1),
            ..PaymentSettings::default()
        };
        let backoff = outbox_backoff(&cfg).expect("valid settings");
        let (base, cap) = (Duration::from_millis(100), Duration::from_millis(5_000));
        for attempts in 0..40u32 {
            let ceiling = (base * 2u32.saturating_pow(attempts.min(20))).min(cap);
            for _ in 0..50 {
                let d = backoff.delay(attempts + 1, Duration::ZERO);
                assert!(d <= ceiling, "attempt {attempts}: {d:?} > {ceiling:?}");
            }
        }
    }

    #[test]
    fn only_a_full_batch_that_all_moved_goes_again_at_once() {
        let moved = Pass {
            full: true,
            lost: 0,
            deferred: 0,
        };
        assert!(moved.again_at_once());
        for waits in [
            Pass {
                full: false,
                ..moved
            },
            // A lease lost mid-drive: another driver is on that payment; wait rather than race it.
            Pass { lost: 1, ..moved },
            // The wallet turned one away: the next pass would meet the same outage.
            Pass {
                deferred: 1,
                ..moved
            },
        ] {
            assert!(!waits.again_at_once(), "{waits:?}");
        }
    }
}
