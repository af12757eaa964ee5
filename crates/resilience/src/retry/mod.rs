//! Retries: classification, backoff with jitter, and a budget shared with hedging.
//!
//! Why a budget and not only a count: see [`budget`]. The count (`max_attempts`) is still there as a
//! hard bound per call, but the budget is what protects a dependency that is down: retries stop when
//! the extra load reaches the budget's ratio, whatever each call's count says.
//!
//! What is retried is the classifier's decision ([`crate::classify::Classify`]): for HTTP, connect errors
//! always (nothing was sent), and per-try timeouts, 5xx except 501 and 429 only for idempotent
//! requests. A request carrying a deadline is not retried when the backoff would outlast it. A
//! `Retry-After` from the callee lengthens the backoff up to `retry_after_max`.
//!
//! The layer returns the last result as it came (an HTTP 503 stays an `Ok(response)`); turning a
//! failed final answer into an error is the caller's business.

pub mod backoff;
pub mod budget;
pub mod future;
pub mod layer;

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tower::Service;

pub use self::backoff::{Backoff, Jitter};
pub use self::budget::{BudgetMode, RetryBudget};
pub use self::layer::RetryLayer;
use crate::classify::{BoxError, Classify};
use crate::events::EventHooks;
use crate::telemetry::LazyCounter;

/// What the retry loop may do.
#[derive(Debug, Clone)]
pub struct RetryConfig {
    /// Tries per call including the first (>= 1).
    pub max_attempts: u32,
    /// Sleep between tries.
    pub backoff: Backoff,
    /// Shared with hedging.
    pub budget: RetryBudget,
    /// Upper bound on a `Retry-After` wait; zero ignores the header.
    pub retry_after_max: Duration,
    /// `dependency` label for metrics.
    pub label: &'static str,
    /// Told of every retry and budget refusal.
    pub events: EventHooks,
}

/// The configuration and counters every clone of one [`Retry`] shares (one `Arc` per call).
#[derive(Debug)]
pub(crate) struct Shared {
    config: RetryConfig,
    retries: LazyCounter,
    budget_rejections: LazyCounter,
    /// The same refusals in `finpay_client_rejections_total{reason="retry_budget"}`.
    rejections: LazyCounter,
}

impl Shared {
    pub(crate) fn new(config: RetryConfig) -> Self {
        let label = config.label;
        Self {
            config,
            retries: LazyCounter::new("finpay_client_retries_total", label),
            budget_rejections: LazyCounter::new("finpay_client_budget_rejections_total", label),
            rejections: LazyCounter::with(
                "finpay_client_rejections_total",
                label,
                "reason",
                "retry_budget",
            ),
        }
    }
}

/// Retries an inner service; see the module docs.
#[derive(Debug, Clone)]
pub struct Retry<S, C> {
    pub(crate) inner: S,
    pub(crate) shared: Arc<Shared>,
    pub(crate) classify: C,
}

impl<S, C, Req, Res> Service<Req> for Retry<S, C>
where
    S: Service<Req, Response = Res> + Clone,
    S::Error: Into<BoxError>,
    C: Classify<Req, Res>,
{
    type Response = Res;
    type Error = BoxError;
    type Future = future::ResponseFuture<S::Future, S, C, Req>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // The first try goes to the inner service made ready here; the later ones wait for
        // readiness on the call's own clone.
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        future::ResponseFuture::start(
            &mut self.inner,
            req,
            self.shared.clone(),
            self.classify.clone(),
        )
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

    fn cfg(max: u32, ratio: f64, min: u32) -> RetryConfig {
        RetryConfig {
            max_attempts: max,
            backoff: Backoff::try_new(
                Duration::from_millis(10),
                Duration::from_millis(100),
                Jitter::Full,
                Some(1),
            )
            .unwrap(),
            budget: RetryBudget::try_new(BudgetMode::Ratio {
                ratio,
                min_per_second: min,
                ttl: Duration::from_secs(10),
            })
            .unwrap(),
            retry_after_max: Duration::from_secs(1),
            label: "test",
            events: EventHooks::default(),
        }
    }

    fn status(s: u16) -> Res {
        let mut r = http::Response::new(Bytes::new());
        *r.status_mut() = http::StatusCode::from_u16(s).unwrap();
        r
    }

    fn get() -> Req {
        http::Request::get("/x").body(Bytes::new()).unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn retries_a_503_until_an_answer_comes() {
        let (svc, mut h) = mock::pair::<Req, Res>();
        let svc = RetryLayer::new(cfg(4, 1.0, 10), HttpClassify).layer(svc);
        let call = tokio::spawn(svc.oneshot(get()));
        h.next_request().await.unwrap().1.send_response(status(503));
        h.next_request().await.unwrap().1.send_response(status(500));
        h.next_request().await.unwrap().1.send_response(status(200));
        assert_eq!(call.await.unwrap().unwrap().status(), 200);
    }

    #[tokio::test(start_paused = true)]
    async fn a_retry_whose_service_fails_to_get_ready_is_judged_like_a_failed_try() {
        let (svc, mut h) = mock::pair::<Req, Res>();
        let svc = RetryLayer::new(cfg(4, 1.0, 10), HttpClassify).layer(svc);
        let call = tokio::spawn(svc.oneshot(get()));
        h.next_request().await.unwrap().1.send_response(status(503));
        // The second try never leaves: its readiness fails (nothing was sent, so it is retried).
        h.send_error(crate::classify::ConnectRefused);
        h.next_request().await.unwrap().1.send_response(status(200));
        assert_eq!(call.await.unwrap().unwrap().status(), 200);
    }

    #[tokio::test(start_paused = true)]
    async fn a_timed_out_try_is_retried_at_once_and_a_failed_one_after_the_backoff() {
        let (svc, mut h) = mock::pair::<Req, Res>();
        let svc = RetryLayer::new(cfg(4, 1.0, 10), HttpClassify).layer(svc);
        let start = tokio::time::Instant::now();
        let call = tokio::spawn(svc.oneshot(get()));
        h.next_request()
            .await
            .unwrap()
            .1
            .send_error(crate::deadline::PerTryTimeout);
        let (_r, second) = h.next_request().await.unwrap();
        assert_eq!(
            start.elapsed(),
            Duration::ZERO,
            "no backoff after a timeout"
        );
        second.send_response(status(503));
        let mut waited = Duration::ZERO;
        for _ in 0..100 {
            if let Ok(Some((_r, third))) =
                tokio::time::timeout(Duration::from_millis(1), h.next_request()).await
            {
                waited = start.elapsed();
                third.send_response(status(200));
                break;
            }
        }
        assert_eq!(call.await.unwrap().unwrap().status(), 200);
        assert!(waited > Duration::ZERO, "a 503 waits out its backoff");
    }

    #[tokio::test(start_paused = true)]
    async fn a_4xx_is_returned_without_retry() {
        let (svc, mut h) = mock::pair::<Req, Res>();
        let svc = RetryLayer::new(cfg(4, 1.0, 10), HttpClassify).layer(svc);
        let call = tokio::spawn(svc.oneshot(get()));
        h.next_request().await.unwrap().1.send_response(status(409));
        assert_eq!(call.await.unwrap().unwrap().status(), 409);
        assert!(h.next_request().await.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn post_without_idempotency_key_is_not_retried_after_a_500() {
        let (svc, mut h) = mock::pair::<Req, Res>();
        let svc = RetryLayer::new(cfg(4, 1.0, 10), HttpClassify).layer(svc);
        let call = tokio::spawn(svc.oneshot(http::Request::post("/x").body(Bytes::new()).unwrap()));
        h.next_request().await.unwrap().1.send_response(status(500));
        assert_eq!(call.await.unwrap().unwrap().status(), 500);
        assert!(h.next_request().await.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn post_without_key_is_retried_when_the_connection_was_refused() {
        let (svc, mut h) = mock::pair::<Req, Res>();
        let svc = RetryLayer::new(cfg(4, 1.0, 10), HttpClassify).layer(svc);
        let call = tokio::spawn(svc.oneshot(http::Request::post("/x").body(Bytes::new()).unwrap()));
        h.next_request()
            .await
            .unwrap()
            .1
            .send_error(crate::classify::ConnectRefused);
        h.next_request().await.unwrap().1.send_response(status(201));
        assert_eq!(call.await.unwrap().unwrap().status(), 201);
    }

    #[tokio::test(start_paused = true)]
    async fn attempts_are_bounded_by_max_attempts() {
        let (svc, mut h) = mock::pair::<Req, Res>();
        let svc = RetryLayer::new(cfg(3, 1.0, 10), HttpClassify).layer(svc);
        let call = tokio::spawn(svc.oneshot(get()));
        for _ in 0..3 {
            h.next_request().await.unwrap().1.send_response(status(503));
        }
        assert_eq!(call.await.unwrap().unwrap().status(), 503);
        assert!(h.next_request().await.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn budget_rejects_retry_when_ratio_spent() {
        let (svc, mut h) = mock::pair::<Req, Res>();
        let svc = RetryLayer::new(cfg(5, 0.0, 0), HttpClassify).layer(svc);
        let call = tokio::spawn(svc.oneshot(get()));
        h.next_request().await.unwrap().1.send_response(status(503));
        assert_eq!(call.await.unwrap().unwrap().status(), 503);
        assert!(h.next_request().await.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_header_lengthens_the_backoff() {
        let (svc, mut h) = mock::pair::<Req, Res>();
        let svc = RetryLayer::new(cfg(2, 1.0, 10), HttpClassify).layer(svc);
        let start = tokio::time::Instant::now();
        let call = tokio::spawn(svc.oneshot(get()));
        let mut r = status(429);
        r.headers_mut().insert(
            http::header::RETRY_AFTER,
            http::HeaderValue::from_static("1"),
        );
        h.next_request().await.unwrap().1.send_response(r);
        h.next_request().await.unwrap().1.send_response(status(200));
        assert!(start.elapsed() >= Duration::from_secs(1));
        assert_eq!(call.await.unwrap().unwrap().status(), 200);
    }

    #[tokio::test(start_paused = true)]
    async fn no_retry_when_backoff_would_outlast_the_deadline() {
        let (svc, mut h) = mock::pair::<Req, Res>();
        let svc = RetryLayer::new(cfg(5, 1.0, 10), HttpClassify).layer(svc);
        let mut req = get();
        req.extensions_mut()
            .insert(crate::Deadline::after(Duration::ZERO));
        let call = tokio::spawn(svc.oneshot(req));
        h.next_request().await.unwrap().1.send_response(status(503));
        assert_eq!(call.await.unwrap().unwrap().status(), 503);
    }
}
