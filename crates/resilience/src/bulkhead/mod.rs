//! Bulkhead: a concurrency limit per dependency that rejects rather than queues.
//!
//! Why reject: a queue in front of a slow dependency turns its slowness into ours, and every queued
//! caller holds memory and a deadline that will pass anyway. tower's `ConcurrencyLimit` waits forever
//! (backpressure through `poll_ready`); here a caller either gets a slot at once, or waits at most
//! `max_wait` (and never past its deadline), or gets [`BulkheadFull`] so the caller can answer 503
//! with `Retry-After` while it still has time.
//!
//! Optional adaptive limit ([`Adaptive`]), within `[min_limit, max_concurrent]`:
//!
//! - AIMD (as TCP congestion control and Netflix's concurrency-limits): each call that succeeds
//!   within `latency_target` grows the limit by `1/limit` (one slot per "round trip" of the whole
//!   window); a failure or a slow call cuts it by `backoff_ratio`. It starts at `max_concurrent`.
//! - Vegas and Gradient2 ([`adaptive`]) read each call's latency against the latency the
//!   dependency shows when it is not queueing, so they need no latency target. They start at 20
//!   (within the bounds) and grow, as Netflix's do.
//!
//! The counters are atomics, not a lock: every call of the dependency passes here, from every
//! worker thread. With `max_wait = 0` (the default) the slot is taken in `call` itself and the
//! inner call starts at once, with no extra task state.

pub mod adaptive;
pub mod error;
pub mod future;
pub mod layer;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;
use tower::Service;

pub use self::adaptive::{Gradient2, Vegas};
pub use self::error::BulkheadFull;
use self::future::ResponseFuture;
pub use self::layer::BulkheadLayer;
use crate::classify::{BoxError, Classify};
use crate::events::{EventHooks, Rejection};
use crate::outcome::{Outcome, Recorded};

/// Bulkhead settings.
#[derive(Debug, Clone)]
pub struct BulkheadConfig {
    /// Fixed limit, or the adaptive ceiling.
    pub max_concurrent: usize,
    /// Zero rejects at once.
    pub max_wait: Duration,
    /// Adaptive limit settings; `None` keeps the limit fixed.
    pub adaptive: Option<Adaptive>,
}

/// Which adaptive limit, and its floor.
#[derive(Debug, Clone, Copy)]
pub enum Adaptive {
    /// Additive increase, multiplicative decrease on a latency target.
    Aimd(Aimd),
    /// TCP Vegas' queue estimate from latency.
    Vegas {
        /// The limit never goes below this.
        min_limit: usize,
        /// Its parameters.
        params: Vegas,
    },
    /// Netflix's Gradient2: short against long-run latency.
    Gradient2 {
        /// The limit never goes below this.
        min_limit: usize,
        /// Its parameters.
        params: Gradient2,
    },
}

impl From<Aimd> for Adaptive {
    fn from(a: Aimd) -> Self {
        Adaptive::Aimd(a)
    }
}

impl Adaptive {
    fn min_limit(&self) -> usize {
        match self {
            Adaptive::Aimd(a) => a.min_limit,
            Adaptive::Vegas { min_limit, .. } | Adaptive::Gradient2 { min_limit, .. } => *min_limit,
        }
    }
}

/// Where Vegas and Gradient2 start (Netflix's initial limit), within the bounds.
const LATENCY_LIMIT_START: usize = 20;

/// AIMD parameters.
#[derive(Debug, Clone, Copy)]
pub struct Aimd {
    /// The limit never goes below this.
    pub min_limit: usize,
    /// Calls slower than this shrink the limit.
    pub latency_target: Duration,
    /// Multiplicative decrease factor (0.9 = cut 10%).
    pub backoff_ratio: f64,
}

#[derive(Debug)]
struct Shared {
    cfg: BulkheadConfig,
    in_flight: AtomicUsize,
    /// The limit as `f64` bits (AIMD moves it in fractions of a slot).
    limit: AtomicU64,
    freed: Notify,
    /// Vegas' and Gradient2's memory.
    state: std::sync::Mutex<adaptive::State>,
}

impl Shared {
    fn limit(&self) -> f64 {
        f64::from_bits(self.limit.load(Ordering::Relaxed))
    }

    /// Whether callers may wait for a slot (and so must be told when one is freed).
    fn waits(&self) -> bool {
        !self.cfg.max_wait.is_zero()
    }
}

/// The shared limit. Clones share it.
#[derive(Debug, Clone)]
pub struct Limiter {
    shared: Arc<Shared>,
}

/// A taken slot; freed on drop.
#[derive(Debug)]
pub struct Slot {
    shared: Arc<Shared>,
    /// When the slot was taken; `None` for a fixed limit.
    start: Option<Instant>,
}

impl Limiter {
    /// `max_concurrent >= 1`, and for AIMD `1 <= min_limit <= max_concurrent`, `0 < backoff_ratio < 1`.
    pub fn try_new(cfg: BulkheadConfig) -> Result<Self, &'static str> {
        if cfg.max_concurrent == 0 {
            return Err("max_concurrent must be >= 1");
        }
        if let Some(a) = cfg.adaptive {
            if a.min_limit() == 0 || a.min_limit() > cfg.max_concurrent {
                return Err("min_limit must be within 1..=max_concurrent");
            }
            if let Adaptive::Aimd(a) = a {
                if !(a.backoff_ratio > 0.0 && a.backoff_ratio < 1.0) {
                    return Err("backoff_ratio must be within (0, 1)");
                }
            }
            if let Adaptive::Gradient2 { params, .. } = a {
                if !(params.tolerance >= 1.0 && (0.0..=1.0).contains(&params.smoothing)) {
                    return Err("gradient2: tolerance must be >= 1 and smoothing within 0..=1");
                }
            }
        }
        let start = match cfg.adaptive {
            None | Some(Adaptive::Aimd(_)) => cfg.max_concurrent,
            Some(a) => LATENCY_LIMIT_START.clamp(a.min_limit(), cfg.max_concurrent),
        };
        #[allow(clippy::cast_precision_loss)]
        let limit = start as f64;
        Ok(Self {
            shared: Arc::new(Shared {
                cfg,
                in_flight: AtomicUsize::new(0),
                limit: AtomicU64::new(limit.to_bits()),
                freed: Notify::new(),
                state: std::sync::Mutex::new(adaptive::State::default()),
            }),
        })
    }

    /// The current limit (rounded down).
    pub fn limit(&self) -> usize {
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let l = self.shared.limit() as usize;
        l
    }

    /// Calls in flight.
    pub fn in_flight(&self) -> usize {
        self.shared.in_flight.load(Ordering::Relaxed)
    }

    /// A slot now, if one is free.
    pub fn try_acquire(&self) -> Option<Slot> {
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let limit = self.shared.limit().floor() as usize;
        self.shared
            .in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| {
                (n < limit).then_some(n + 1)
            })
            .ok()?;
        // Only the adaptive limit needs the slot's latency: a fixed one reads no clock.
        let start = self.shared.cfg.adaptive.map(|_| Instant::now());
        Some(Slot {
            shared: self.shared.clone(),
            start,
        })
    }

    /// A slot within `max_wait` (and before `deadline`, when given), or [`BulkheadFull`].
    pub async fn acquire(&self, deadline: Option<Instant>) -> Result<Slot, BulkheadFull> {
        if let Some(s) = self.try_acquire() {
            return Ok(s);
        }
        if !self.shared.waits() {
            return Err(BulkheadFull);
        }
        let mut until = Instant::now() + self.shared.cfg.max_wait;
        if let Some(d) = deadline {
            until = until.min(d);
        }
        loop {
            let notified = self.shared.freed.notified();
            if let Some(s) = self.try_acquire() {
                return Ok(s);
            }
            if tokio::time::timeout_at(until, notified).await.is_err() {
                return self.try_acquire().ok_or(BulkheadFull);
            }
        }
    }
}

impl Outcome for Slot {
    fn record(self, failed: bool) {
        Slot::record(self, failed);
    }
}

impl Slot {
    /// Feeds the adaptive limit; a no-op for a fixed one.
    pub fn record(self, failed: bool) {
        let (Some(adaptive), Some(start)) = (self.shared.cfg.adaptive, self.start) else {
            return;
        };
        let a = match adaptive {
            Adaptive::Aimd(a) => a,
            latency => return self.record_latency(latency, start.elapsed(), failed),
        };
        let slow = start.elapsed() > a.latency_target;
        #[allow(clippy::cast_precision_loss)]
        let (min, max) = (a.min_limit as f64, self.shared.cfg.max_concurrent as f64);
        let _ = self
            .shared
            .limit
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |bits| {
                let l = f64::from_bits(bits);
                let next = if failed || slow {
                    (l * a.backoff_ratio).max(min)
                } else {
                    (l + 1.0 / l).min(max)
                };
                Some(next.to_bits())
            });
    }
}

impl Slot {
    /// Vegas or Gradient2: the next limit from this call's latency, under the state's lock.
    fn record_latency(&self, adaptive: Adaptive, rtt: Duration, failed: bool) {
        let shared = &self.shared;
        let mut state = match shared.state.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let limit = shared.limit();
        let in_flight = shared.in_flight.load(Ordering::Relaxed);
        let next = match adaptive {
            Adaptive::Vegas { params, .. } => params.next(&mut state, limit, rtt, failed),
            Adaptive::Gradient2 { params, .. } => {
                params.next(&mut state, limit, rtt, failed, in_flight)
            }
            Adaptive::Aimd(_) => limit,
        };
        #[allow(clippy::cast_precision_loss)]
        let (min, max) = (
            adaptive.min_limit() as f64,
            shared.cfg.max_concurrent as f64,
        );
        shared
            .limit
            .store(next.clamp(min, max).to_bits(), Ordering::Relaxed);
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.shared.in_flight.fetch_sub(1, Ordering::AcqRel);
        if self.shared.waits() {
            self.shared.freed.notify_one();
        }
    }
}

/// The bulkhead as a tower service.
#[derive(Debug, Clone)]
pub struct Bulkhead<S, C> {
    inner: S,
    limiter: Limiter,
    classify: C,
    hooks: Option<(&'static str, EventHooks)>,
}

impl<S, C> Bulkhead<S, C> {
    fn rejected(&self) {
        if let Some((label, hooks)) = &self.hooks {
            hooks.emit(|e| e.on_rejection(label, Rejection::BulkheadFull));
        }
    }
}

impl<S, C, Req, Res> Service<Req> for Bulkhead<S, C>
where
    S: Service<Req, Response = Res> + Clone + Send + 'static,
    S::Error: Into<BoxError> + Send,
    S::Future: Send + 'static,
    C: Classify<Req, Res>,
    Req: Send + 'static,
    Res: Send + 'static,
{
    type Response = Res;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, C, Req, Res>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        if !self.limiter.shared.waits() {
            // The common case: a slot now or a rejection now; the inner call starts here.
            return match self.limiter.try_acquire() {
                Some(slot) => ResponseFuture::Slotted {
                    call: Recorded::new(self.inner.call(req), slot, self.classify.clone()),
                },
                None => {
                    self.rejected();
                    ResponseFuture::Rejected
                }
            };
        }
        let limiter = self.limiter.clone();
        let c = self.classify.clone();
        let deadline = c.deadline(&req).map(|d| d.0);
        // `self.inner` was made ready for this call; the clone waits for a slot, then for its own
        // readiness.
        let mut svc = self.inner.clone();
        let hooks = self.hooks.clone();
        ResponseFuture::Waiting {
            fut: Box::pin(async move {
                let slot = limiter.acquire(deadline).await.map_err(|e| {
                    if let Some((label, hooks)) = &hooks {
                        hooks.emit(|ev| ev.on_rejection(label, Rejection::BulkheadFull));
                    }
                    Box::new(e) as BoxError
                })?;
                let res = match tower::ServiceExt::ready(&mut svc).await {
                    Ok(s) => s.call(req).await.map_err(Into::into),
                    Err(e) => Err(e.into()),
                };
                slot.record(c.classify(&res).is_failure());
                res
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::HttpClassify;
    use bytes::Bytes;
    use tower::{Layer, ServiceExt};
    use tower_test::mock;

    type Req = http::Request<Bytes>;
    type Res = http::Response<Bytes>;

    fn fixed(n: usize, wait_ms: u64) -> Limiter {
        Limiter::try_new(BulkheadConfig {
            max_concurrent: n,
            max_wait: Duration::from_millis(wait_ms),
            adaptive: None,
        })
        .unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn rejects_when_full_instead_of_queueing() {
        let (svc, mut h) = mock::pair::<Req, Res>();
        let svc = BulkheadLayer::new(fixed(1, 0), HttpClassify).layer(svc);
        let first = tokio::spawn(svc.clone().oneshot(Req::new(Bytes::new())));
        let (_r, send) = h.next_request().await.unwrap();
        let err = svc
            .clone()
            .oneshot(Req::new(Bytes::new()))
            .await
            .unwrap_err();
        assert!(err.is::<BulkheadFull>());
        send.send_response(Res::new(Bytes::new()));
        first.await.unwrap().unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn bounded_wait_gets_a_slot_freed_in_time() {
        let l = fixed(1, 50);
        let s1 = l.try_acquire().unwrap();
        let l2 = l.clone();
        let waiter = tokio::spawn(async move { l2.acquire(None).await.map(|_| ()) });
        tokio::time::advance(Duration::from_millis(20)).await;
        drop(s1);
        assert!(waiter.await.unwrap().is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn bounded_wait_gives_up_after_max_wait() {
        let l = fixed(1, 50);
        let _s1 = l.try_acquire().unwrap();
        let start = Instant::now();
        assert_eq!(l.acquire(None).await.unwrap_err(), BulkheadFull);
        assert_eq!(start.elapsed(), Duration::from_millis(50));
        let start = Instant::now();
        let deadline = start + Duration::from_millis(20);
        assert_eq!(l.acquire(Some(deadline)).await.unwrap_err(), BulkheadFull);
        assert_eq!(
            start.elapsed(),
            Duration::from_millis(20),
            "never past the deadline"
        );
    }

    fn latency_limited(adaptive: Adaptive) -> Limiter {
        Limiter::try_new(BulkheadConfig {
            max_concurrent: 200,
            max_wait: Duration::ZERO,
            adaptive: Some(adaptive),
        })
        .unwrap()
    }

    /// Holds `n` slots for `rtt`, then reports them all.
    async fn calls(l: &Limiter, n: usize, rtt: Duration) {
        let slots: Vec<Slot> = (0..n).map(|_| l.try_acquire().unwrap()).collect();
        tokio::time::advance(rtt).await;
        for s in slots {
            s.record(false);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_vegas_limit_grows_while_latency_stays_flat_and_falls_when_it_climbs() {
        let l = latency_limited(Adaptive::Vegas {
            min_limit: 5,
            params: Vegas::default(),
        });
        assert_eq!(l.limit(), 20, "starts at 20");
        for _ in 0..20 {
            calls(&l, 5, Duration::from_millis(10)).await;
        }
        let grown = l.limit();
        assert!(grown > 100, "no queue: {grown}");
        for _ in 0..20 {
            calls(&l, 5, Duration::from_millis(40)).await;
        }
        assert!(l.limit() < grown, "a queue: {grown} -> {}", l.limit());
    }

    #[tokio::test(start_paused = true)]
    async fn a_gradient2_limit_falls_to_its_floor_when_latency_climbs_and_recovers_once_that_is_the_norm(
    ) {
        let l = latency_limited(Adaptive::Gradient2 {
            min_limit: 10,
            params: Gradient2::default(),
        });
        for _ in 0..20 {
            calls(&l, 20, Duration::from_millis(10)).await;
        }
        let grown = l.limit();
        assert!(grown > 20, "busy and steady: grows ({grown})");
        for _ in 0..5 {
            calls(&l, 10, Duration::from_millis(100)).await;
        }
        assert_eq!(l.limit(), 10, "10x slower: down to the floor");
        for _ in 0..200 {
            calls(&l, 10, Duration::from_millis(100)).await;
        }
        assert!(
            l.limit() > 10,
            "once the long-run average has caught up, it grows again"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn aimd_limit_shrinks_on_failure_and_grows_back_on_success() {
        let l = Limiter::try_new(BulkheadConfig {
            max_concurrent: 100,
            max_wait: Duration::ZERO,
            adaptive: Some(Adaptive::Aimd(Aimd {
                min_limit: 10,
                latency_target: Duration::from_millis(100),
                backoff_ratio: 0.5,
            })),
        })
        .unwrap();
        l.try_acquire().unwrap().record(true);
        assert_eq!(l.limit(), 50);
        for _ in 0..10 {
            l.try_acquire().unwrap().record(true);
        }
        assert_eq!(l.limit(), 10, "never below the floor");
        for _ in 0..200 {
            l.try_acquire().unwrap().record(false);
        }
        assert!(l.limit() > 10);
    }
}
