//! Hedged requests: when the first try is slow, send a copy elsewhere and take whichever answers first.
//!
//! Why: retries cannot cut the latency tail, because a retry only starts after a try has failed or
//! timed out. "The Tail at Scale" (Dean & Barroso) reports a hedge after 10 ms taking the 99.9th
//! percentile from 1,800 ms to 74 ms for 2% more requests. Here:
//!
//! - A hedge fires after a delay: a percentile (e.g. p95) of recent successful latencies taken from a
//!   [`histogram::RollingHistogram`], clamped to `[min_delay, max_delay]`, or a fixed delay until enough
//!   samples exist. So hedges cost about `1 - percentile` extra load when the dependency is healthy.
//! - A timer that fires more than 5 ms late means this process was stalled (as in
//!   [`crate::deadline`]): the answers of the tries in flight may be waiting unread, so the late
//!   time is given back (at most 3 times) before a copy is paid for.
//! - A try that fails fast with a retryable failure (a 503 in 2 ms) fires the next hedge at once rather
//!   than waiting out the delay: the copy then works as an immediate retry on another replica.
//! - Up to `max_hedges` copies. Each goes to a different replica: the copies share the request's
//!   [`crate::balance::TriedEndpoints`] extension, which the balancer avoids.
//! - The first good answer (by the classifier) wins; the other tries are dropped, which cancels them.
//! - A try that runs out its per-try timeout when no copy may follow ends the round at once,
//!   with that timeout as its answer, and the copies still in flight are dropped: the retry
//!   layer above starts the next round without waiting for them. Each of them was sent at least
//!   a hedge delay after it and has already run for longer than the percentile it was hedged
//!   after, so a fresh try is the better bet (the crate docs, "Hangs", have the arithmetic).
//! - Every hedge withdraws from the same [`RetryBudget`] as retries, so hedging and retrying together
//!   never exceed the budget's extra load. (The budget's deposits are made by [`crate::retry::Retry`]
//!   once per call; a `Hedge` used without it should call `RetryBudget::deposit` per request, or
//!   the ratio mode lends it only its reserve.)
//! - Only idempotent requests are hedged; others pass straight through.
//!
//! Counters: `finpay_client_hedges_total`, `finpay_client_hedges_won_total`.

pub mod future;
pub mod histogram;
pub mod layer;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;
use tower::{Service, ServiceExt};

pub use self::histogram::RollingHistogram;
pub use self::layer::HedgeLayer;
use crate::classify::{BoxError, Class, Classify};
use crate::deadline::PerTryTimeout;
use crate::events::EventHooks;
use crate::retry::budget::RetryBudget;
use crate::telemetry::LazyCounter;

/// When a hedge fires.
#[derive(Debug, Clone)]
pub enum HedgeDelay {
    /// Always after this long.
    Fixed(Duration),
    /// After a percentile of recent successful latencies, clamped; `fallback` until enough samples.
    Percentile {
        /// Where latencies are recorded and read.
        histogram: RollingHistogram,
        /// Lower clamp.
        min: Duration,
        /// Upper clamp.
        max: Duration,
        /// Used before the histogram has its minimum samples.
        fallback: Duration,
    },
}

impl HedgeDelay {
    /// The delay to use now.
    pub fn current(&self) -> Duration {
        match self {
            HedgeDelay::Fixed(d) => *d,
            HedgeDelay::Percentile {
                histogram,
                min,
                max,
                fallback,
            } => histogram
                .percentile()
                .map_or(*fallback, |p| p.clamp(*min, *max)),
        }
    }

    fn record(&self, d: Duration, now: Instant) {
        if let HedgeDelay::Percentile { histogram, .. } = self {
            histogram.record_at(d, now);
        }
    }
}

/// Hedging settings.
#[derive(Debug, Clone)]
pub struct HedgeConfig {
    /// Copies beyond the original, at most.
    pub max_hedges: u32,
    /// When to fire.
    pub delay: HedgeDelay,
    /// Budget shared with retries; `None` hedges without limit (not recommended).
    pub budget: Option<RetryBudget>,
    /// `dependency` label for metrics.
    pub label: &'static str,
    /// Told of every hedge, win and budget refusal.
    pub events: EventHooks,
}

/// The configuration and counters every clone of one [`Hedge`] shares (one `Arc` per call).
#[derive(Debug)]
pub(crate) struct Shared {
    config: HedgeConfig,
    hedges: LazyCounter,
    hedges_won: LazyCounter,
    budget_rejections: LazyCounter,
    /// The same refusals in `finpay_client_rejections_total{reason="hedge_budget"}`.
    rejections: LazyCounter,
}

impl Shared {
    pub(crate) fn new(config: HedgeConfig) -> Self {
        let label = config.label;
        Self {
            config,
            hedges: LazyCounter::new("finpay_client_hedges_total", label),
            hedges_won: LazyCounter::new("finpay_client_hedges_won_total", label),
            budget_rejections: LazyCounter::new("finpay_client_budget_rejections_total", label),
            rejections: LazyCounter::with(
                "finpay_client_rejections_total",
                label,
                "reason",
                "hedge_budget",
            ),
        }
    }
}

/// Hedges an inner service; see the module docs.
#[derive(Debug, Clone)]
pub struct Hedge<S, C> {
    inner: S,
    shared: Arc<Shared>,
    classify: C,
}

/// What [`Hedge`] asks of the service below it: the copies of a request run as boxed `Send`
/// futures on clones of it. Every service that allows that has it.
pub trait HedgeInner<Req, Res>:
    Service<Req, Response = Res, Error: Into<BoxError> + Send, Future: Send + 'static>
    + Clone
    + Send
    + 'static
{
}

impl<S, Req, Res> HedgeInner<Req, Res> for S
where
    S: Service<Req, Response = Res> + Clone + Send + 'static,
    S::Error: Into<BoxError> + Send,
    S::Future: Send + 'static,
{
}

impl<S, C, Req, Res> Service<Req> for Hedge<S, C>
where
    S: Service<Req, Response = Res> + HedgeInner<Req, Res>,
    C: Classify<Req, Res>,
    Req: Send + 'static,
    Res: Send + 'static,
{
    type Response = Res;
    type Error = BoxError;
    type Future = future::ResponseFuture<S::Future, S, C, Req, Res>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // The first try goes to the inner service made ready here; copies wait for readiness on
        // their own clones.
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let cfg = &self.shared.config;
        let template = if cfg.max_hedges > 0 && self.classify.is_idempotent(&req) {
            self.classify.clone_request(&req)
        } else {
            None
        };
        let Some(template) = template else {
            return future::ResponseFuture::single(self.inner.call(req));
        };
        let delay = cfg.delay.current();
        let first_start = Instant::now();
        let first = self.inner.call(req);
        future::ResponseFuture::race(
            first,
            first_start,
            delay,
            self.shared.clone(),
            self.inner.clone(),
            self.classify.clone(),
            template,
        )
    }
}

type Branch<Res> = Pin<Box<dyn Future<Output = (usize, Instant, Result<Res, BoxError>)> + Send>>;

fn branch<S, Req, Res>(svc: S, i: usize, req: Req) -> Branch<Res>
where
    S: HedgeInner<Req, Res>,
    Req: Send + 'static,
    Res: Send + 'static,
{
    Box::pin(async move {
        let start = Instant::now();
        let res = svc.oneshot(req).await.map_err(Into::into);
        (i, start, res)
    })
}

/// What one finished try means for the race.
enum Verdict<Res> {
    /// Return this.
    Done(Result<Res, BoxError>),
    /// A retryable failure: kept as the last answer; fire the next copy.
    Retry,
    /// A try ran out its per-try timeout: kept as the last answer; fire the next copy, or end
    /// the round when none may follow (see [`future`]).
    TimedOut,
}

fn judge<C, Req, Res>(
    shared: &Shared,
    c: &C,
    i: usize,
    start: Instant,
    res: Result<Res, BoxError>,
    last: &mut Option<Result<Res, BoxError>>,
) -> Verdict<Res>
where
    C: Classify<Req, Res>,
{
    match c.classify(&res) {
        Class::Success => {
            let now = Instant::now();
            shared.config.delay.record(now - start, now);
            if i > 0 {
                shared.hedges_won.increment(1);
                let cfg = &shared.config;
                #[allow(clippy::cast_possible_truncation)]
                let copy = i as u32;
                cfg.events.emit(|e| e.on_hedge_won(cfg.label, copy));
            }
            Verdict::Done(res)
        }
        Class::Failure => Verdict::Done(res),
        Class::Retry | Class::RetrySafe => {
            let timed_out = matches!(&res, Err(e) if e.is::<PerTryTimeout>());
            *last = Some(res);
            if timed_out {
                Verdict::TimedOut
            } else {
                Verdict::Retry
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::HttpClassify;
    use crate::retry::budget::BudgetMode;
    use bytes::Bytes;
    use tower::Layer;
    use tower_test::mock;

    type Req = http::Request<Bytes>;
    type Res = http::Response<Bytes>;

    fn cfg(max: u32, budget: Option<RetryBudget>) -> HedgeConfig {
        HedgeConfig {
            max_hedges: max,
            delay: HedgeDelay::Fixed(Duration::from_millis(10)),
            budget,
            label: "test",
            events: EventHooks::default(),
        }
    }

    fn ok(body: &'static str) -> Res {
        Res::new(Bytes::from_static(body.as_bytes()))
    }

    fn get() -> Req {
        http::Request::get("/x").body(Bytes::new()).unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn a_hedge_fires_after_the_delay_and_the_first_answer_wins() {
        let (svc, mut h) = mock::pair::<Req, Res>();
        let svc = HedgeLayer::new(cfg(2, None), HttpClassify).layer(svc);
        let start = Instant::now();
        let call = tokio::spawn(svc.oneshot(get()));
        let (_r0, slow) = h.next_request().await.unwrap();
        let (_r1, fast) = h.next_request().await.unwrap();
        assert_eq!(start.elapsed(), Duration::from_millis(10));
        fast.send_response(ok("hedge"));
        assert_eq!(call.await.unwrap().unwrap().body(), "hedge");
        drop(slow);
    }

    #[tokio::test(start_paused = true)]
    async fn no_more_than_max_hedges_are_sent() {
        let (svc, mut h) = mock::pair::<Req, Res>();
        let svc = HedgeLayer::new(cfg(2, None), HttpClassify).layer(svc);
        let call = tokio::spawn(svc.oneshot(get()));
        let mut held = Vec::new();
        for _ in 0..3 {
            held.push(h.next_request().await.unwrap());
        }
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(
            tokio::time::timeout(Duration::from_millis(100), h.next_request())
                .await
                .is_err()
        );
        held.pop().unwrap().1.send_response(ok("x"));
        assert!(call.await.unwrap().is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn a_fast_failure_fires_the_next_hedge_at_once() {
        let (svc, mut h) = mock::pair::<Req, Res>();
        let svc = HedgeLayer::new(cfg(2, None), HttpClassify).layer(svc);
        let start = Instant::now();
        let call = tokio::spawn(svc.oneshot(get()));
        let mut bad = Res::new(Bytes::new());
        *bad.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
        h.next_request().await.unwrap().1.send_response(bad);
        h.next_request()
            .await
            .unwrap()
            .1
            .send_response(ok("second"));
        assert_eq!(call.await.unwrap().unwrap().body(), "second");
        assert_eq!(start.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn non_idempotent_requests_are_never_hedged() {
        let (svc, mut h) = mock::pair::<Req, Res>();
        let svc = HedgeLayer::new(cfg(2, None), HttpClassify).layer(svc);
        let call = tokio::spawn(svc.oneshot(http::Request::post("/x").body(Bytes::new()).unwrap()));
        let (_r, send) = h.next_request().await.unwrap();
        tokio::time::advance(Duration::from_secs(1)).await;
        let next = tokio::time::timeout(Duration::from_millis(100), h.next_request()).await;
        assert!(matches!(next, Err(_) | Ok(None)), "no second request");
        send.send_response(ok("x"));
        assert!(call.await.unwrap().is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn hedges_are_paid_from_the_shared_budget() {
        let budget = RetryBudget::try_new(BudgetMode::Ratio {
            ratio: 0.0,
            min_per_second: 0,
            ttl: Duration::from_secs(10),
        })
        .unwrap();
        let (svc, mut h) = mock::pair::<Req, Res>();
        let svc = HedgeLayer::new(cfg(2, Some(budget)), HttpClassify).layer(svc);
        let call = tokio::spawn(svc.oneshot(get()));
        let (_r, send) = h.next_request().await.unwrap();
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(
            tokio::time::timeout(Duration::from_millis(100), h.next_request())
                .await
                .is_err(),
            "budget is empty"
        );
        send.send_response(ok("x"));
        assert!(call.await.unwrap().is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn copies_go_at_multiples_of_the_delay_even_when_the_timer_fires_late() {
        let (svc, mut h) = mock::pair::<Req, Res>();
        let svc = HedgeLayer::new(cfg(3, None), HttpClassify).layer(svc);
        let start = Instant::now();
        let call = tokio::spawn(svc.oneshot(get()));
        let mut held = vec![h.next_request().await.unwrap()];
        // The process stalls past the first deadline: the first copy goes late, at 13 ms ...
        tokio::time::advance(Duration::from_millis(13)).await;
        held.push(h.next_request().await.unwrap());
        assert_eq!(start.elapsed(), Duration::from_millis(13));
        // ... and the second still at 20 ms, not 23.
        held.push(h.next_request().await.unwrap());
        assert_eq!(start.elapsed(), Duration::from_millis(20));
        held.pop().unwrap().1.send_response(ok("x"));
        assert!(call.await.unwrap().is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn a_stall_of_the_caller_does_not_fire_a_copy_at_once() {
        let (svc, mut h) = mock::pair::<Req, Res>();
        let svc = HedgeLayer::new(cfg(2, None), HttpClassify).layer(svc);
        let call = tokio::spawn(svc.oneshot(get()));
        let (_r, first) = h.next_request().await.unwrap();
        // The process does not run for 50 ms: the 10 ms timer fires 40 ms late, and the first
        // try's answer came in meanwhile.
        tokio::time::advance(Duration::from_millis(50)).await;
        tokio::task::yield_now().await;
        first.send_response(ok("first"));
        assert_eq!(call.await.unwrap().unwrap().body(), "first");
        let copy = tokio::time::timeout(Duration::from_millis(100), h.next_request()).await;
        assert!(matches!(copy, Err(_) | Ok(None)), "no copy was paid for");
    }

    #[tokio::test(start_paused = true)]
    async fn a_timed_out_try_ends_the_round_when_no_copy_may_follow() {
        let (svc, mut h) = mock::pair::<Req, Res>();
        let svc = HedgeLayer::new(cfg(1, None), HttpClassify).layer(svc);
        let start = Instant::now();
        let call = tokio::spawn(svc.oneshot(get()));
        let (_r0, first) = h.next_request().await.unwrap();
        let (_r1, _copy_still_hanging) = h.next_request().await.unwrap();
        tokio::time::advance(Duration::from_millis(50)).await;
        first.send_error(crate::deadline::PerTryTimeout);
        let err = call.await.unwrap().unwrap_err();
        assert!(err.is::<crate::deadline::PerTryTimeout>());
        assert_eq!(
            start.elapsed(),
            Duration::from_millis(60),
            "not the copy's own timeout"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_timed_out_try_fires_the_next_copy_while_one_may_follow() {
        let (svc, mut h) = mock::pair::<Req, Res>();
        let c = HedgeConfig {
            delay: HedgeDelay::Fixed(Duration::from_secs(1)),
            ..cfg(1, None)
        };
        let svc = HedgeLayer::new(c, HttpClassify).layer(svc);
        let call = tokio::spawn(svc.oneshot(get()));
        h.next_request()
            .await
            .unwrap()
            .1
            .send_error(crate::deadline::PerTryTimeout);
        h.next_request().await.unwrap().1.send_response(ok("copy"));
        assert_eq!(call.await.unwrap().unwrap().body(), "copy");
    }

    #[tokio::test(start_paused = true)]
    async fn all_tries_failing_returns_the_last_failure() {
        let (svc, mut h) = mock::pair::<Req, Res>();
        let svc = HedgeLayer::new(cfg(1, None), HttpClassify).layer(svc);
        let call = tokio::spawn(svc.oneshot(get()));
        for _ in 0..2 {
            let mut bad = Res::new(Bytes::new());
            *bad.status_mut() = http::StatusCode::BAD_GATEWAY;
            h.next_request().await.unwrap().1.send_response(bad);
        }
        assert_eq!(call.await.unwrap().unwrap().status(), 502);
    }
}
