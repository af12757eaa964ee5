//! Deadlines: one absolute time for the whole call, carried to the callee.
//!
//! Why an absolute deadline and not a timeout per hop: a timeout per hop adds up (3 hops of 1 s each
//! can take 3 s), and the callee cannot know the caller gave up. An absolute deadline travels in the
//! request extensions (for the layers below) and in the `finpay-deadline-ms` header (for the callee,
//! which bounds its own work and its own outbound calls by it). Every try then gets
//! `min(per_try, remaining)`, and a call whose deadline is already spent fails at once without sending
//! anything, because an answer nobody waits for is pure load.
//!
//! [`DeadlineService`] is the outer layer (fail fast, propagate, stop waiting); [`PerTryTimeoutService`]
//! sits under the retry and hedge layers and bounds each try. Both read time from `tokio::time`.
//!
//! **The caller's own stalls are not the callee's.** When the calling process gets no CPU for a
//! while (an overloaded machine, a stop), every per-try timer fires late and at once, often
//! before the connection task has read an answer that arrived in time. Counting that as a timeout
//! would turn one stall of the caller into a retryable failure of every try in flight, each paid
//! from the retry budget. So a per-try timer that fires more than 5 ms late gives the late time back
//! (at most the per-try limit, at most 3 times, never past the deadline) before the try counts as
//! timed out. A hung callee is still cut after the per-try limit of time the caller actually ran.

pub mod error;
pub mod future;
pub mod layer;

use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tower::Service;

pub use self::error::{DeadlineExceeded, PerTryTimeout};
pub use self::layer::{DeadlineLayer, PerTryTimeoutLayer};
use crate::classify::BoxError;

/// An absolute point in time by which a whole call (all tries, all hedges) must finish.
/// Carried in request extensions and in the `finpay-deadline-ms` header (Unix epoch milliseconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline(pub tokio::time::Instant);

/// Header carrying the deadline to the callee, as absolute Unix epoch milliseconds.
pub const DEADLINE_HEADER: &str = "finpay-deadline-ms";

fn wall_now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
}

impl Deadline {
    /// The furthest a deadline reaches: a budget past it (a caller's `u64::MAX` epoch
    /// milliseconds) means "no hurry", not an overflow.
    pub const BUDGET_MAX: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

    /// A deadline `budget` from now, at most [`Self::BUDGET_MAX`].
    pub fn after(budget: Duration) -> Self {
        Self(tokio::time::Instant::now() + budget.min(Self::BUDGET_MAX))
    }

    /// Time left, zero when spent.
    pub fn remaining(&self) -> Duration {
        self.0
            .saturating_duration_since(tokio::time::Instant::now())
    }

    /// Whether no time is left.
    pub fn is_spent(&self) -> bool {
        self.remaining().is_zero()
    }

    /// The earlier of two deadlines.
    pub fn min(self, other: Deadline) -> Deadline {
        if other.0 < self.0 {
            other
        } else {
            self
        }
    }

    /// The deadline as absolute Unix epoch milliseconds, for the wire.
    pub fn to_epoch_ms(&self) -> u64 {
        u64::try_from((wall_now() + self.remaining()).as_millis()).unwrap_or(u64::MAX)
    }

    /// A deadline from absolute Unix epoch milliseconds (as read from the header). A time in the past
    /// gives a spent deadline.
    pub fn from_epoch_ms(ms: u64) -> Self {
        Self::after(Duration::from_millis(ms).saturating_sub(wall_now()))
    }

    /// Reads [`DEADLINE_HEADER`]; `None` when absent or malformed. Services call this on the way in.
    pub fn from_headers(headers: &http::HeaderMap) -> Option<Self> {
        let v = headers.get(DEADLINE_HEADER)?.to_str().ok()?;
        v.trim().parse::<u64>().ok().map(Self::from_epoch_ms)
    }

    /// The header value for [`DEADLINE_HEADER`].
    pub fn header_value(&self) -> http::HeaderValue {
        http::HeaderValue::from(self.to_epoch_ms())
    }
}

/// A request that can carry a [`Deadline`].
pub trait CarryDeadline {
    /// The deadline it carries.
    fn deadline(&self) -> Option<Deadline>;
    /// Attaches a deadline (extension and, for HTTP, the header).
    fn set_deadline(&mut self, d: Deadline);
}

impl<B> CarryDeadline for http::Request<B> {
    fn deadline(&self) -> Option<Deadline> {
        self.extensions().get::<Deadline>().copied()
    }
    fn set_deadline(&mut self, d: Deadline) {
        self.headers_mut().insert(DEADLINE_HEADER, d.header_value());
        // Usually the caller attached this very deadline already; replacing it would allocate.
        if self.extensions().get::<Deadline>() != Some(&d) {
            self.extensions_mut().insert(d);
        }
    }
}

/// See [`DeadlineLayer`].
#[derive(Debug, Clone)]
pub struct DeadlineService<S> {
    inner: S,
    default_budget: Option<Duration>,
    propagate_only: bool,
}

impl<S, Req> Service<Req> for DeadlineService<S>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    Req: CarryDeadline,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = future::DeadlineFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut req: Req) -> Self::Future {
        let deadline = req
            .deadline()
            .or_else(|| self.default_budget.map(Deadline::after));
        if deadline.is_some_and(|d| d.is_spent()) {
            return future::DeadlineFuture::Spent;
        }
        if let Some(d) = deadline {
            req.set_deadline(d);
        }
        let inner = self.inner.call(req);
        match deadline {
            Some(d) if !self.propagate_only => future::DeadlineFuture::Bounded {
                inner: tokio::time::timeout_at(d.0, inner),
            },
            // Nothing to enforce here: no deadline, or the layers below bound every wait by it.
            _ => future::DeadlineFuture::Pass { inner },
        }
    }
}

/// See [`PerTryTimeoutLayer`].
#[derive(Debug, Clone)]
pub struct PerTryTimeoutService<S> {
    inner: S,
    per_try: Duration,
}

impl<S, Req> Service<Req> for PerTryTimeoutService<S>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    Req: CarryDeadline,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = future::PerTryFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        // One clock reading serves the whole decision (clock reads are a visible share of a
        // loopback call's cost).
        let now = tokio::time::Instant::now();
        let hard = req.deadline().map(|d| d.0);
        let remaining = hard.map(|h| h.saturating_duration_since(now));
        if remaining.is_some_and(|r| r.is_zero()) {
            return future::PerTryFuture::Spent;
        }
        let limit = remaining.map_or(self.per_try, |r| r.min(self.per_try));
        let spent_by_deadline = remaining.is_some_and(|r| r <= self.per_try);
        let inner = self.inner.call(req);
        future::PerTryFuture::running(inner, now, limit, hard, spent_by_deadline)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use tower::ServiceExt;
    use tower_test::mock;

    type Req = http::Request<Bytes>;

    #[tokio::test(start_paused = true)]
    async fn spent_deadline_fails_fast_without_sending() {
        let (svc, mut handle) = mock::pair::<Req, &'static str>();
        let svc = DeadlineLayer::new(None).layer(svc);
        let mut req = http::Request::new(Bytes::new());
        req.extensions_mut().insert(Deadline::after(Duration::ZERO));
        let err = svc.oneshot(req).await.unwrap_err();
        assert!(err.is::<DeadlineExceeded>());
        assert!(handle.next_request().await.is_none(), "nothing was sent");
    }

    use tower::Layer;

    #[test]
    fn a_deadline_as_far_as_the_header_reaches_does_not_overflow() {
        let far = Deadline::from_epoch_ms(u64::MAX);
        assert!(far.remaining() > Duration::from_secs(50 * 365 * 24 * 3600));
        assert!(far.remaining() <= Deadline::BUDGET_MAX);
        let mut h = http::HeaderMap::new();
        h.insert(DEADLINE_HEADER, http::HeaderValue::from(u64::MAX));
        assert!(Deadline::from_headers(&h).is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn deadline_travels_in_header_and_extensions() {
        let (svc, mut handle) = mock::pair::<Req, &'static str>();
        let svc = DeadlineLayer::new(Some(Duration::from_secs(2))).layer(svc);
        let call = tokio::spawn(svc.oneshot(http::Request::new(Bytes::new())));
        let (req, send) = handle.next_request().await.unwrap();
        let d = req.extensions().get::<Deadline>().copied().unwrap();
        assert_eq!(d.remaining(), Duration::from_secs(2));
        let ms: u64 = req.headers()[DEADLINE_HEADER]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        let wall = wall_now().as_millis() as u64;
        assert!(ms >= wall + 1_900 && ms <= wall + 2_100, "{ms} vs {wall}");
        send.send_response("ok");
        assert_eq!(call.await.unwrap().unwrap(), "ok");
    }

    #[tokio::test(start_paused = true)]
    async fn per_try_timeout_is_the_smaller_of_per_try_and_remaining() {
        let (svc, mut handle) = mock::pair::<Req, &'static str>();
        let svc = PerTryTimeoutLayer::new(Duration::from_millis(100)).layer(svc);
        let mut req = http::Request::new(Bytes::new());
        req.extensions_mut()
            .insert(Deadline::after(Duration::from_millis(40)));
        let start = tokio::time::Instant::now();
        let call = tokio::spawn(svc.clone().oneshot(req));
        let _pending = handle.next_request().await.unwrap();
        let err = call.await.unwrap().unwrap_err();
        assert!(err.is::<DeadlineExceeded>());
        assert_eq!(start.elapsed(), Duration::from_millis(40));

        let mut req = http::Request::new(Bytes::new());
        req.extensions_mut()
            .insert(Deadline::after(Duration::from_secs(5)));
        let call = tokio::spawn(svc.oneshot(req));
        let _pending = handle.next_request().await.unwrap();
        let err = call.await.unwrap().unwrap_err();
        assert!(err.is::<PerTryTimeout>());
    }

    #[tokio::test(start_paused = true)]
    async fn a_stall_of_the_caller_does_not_count_against_the_try() {
        let (svc, mut handle) = mock::pair::<Req, &'static str>();
        let svc = PerTryTimeoutLayer::new(Duration::from_millis(60)).layer(svc);
        let mut req = http::Request::new(Bytes::new());
        req.extensions_mut()
            .insert(Deadline::after(Duration::from_secs(2)));
        let call = tokio::spawn(svc.oneshot(req));
        let (_req, send) = handle.next_request().await.unwrap();
        // The process does not run for 150 ms: the 60 ms timer fires 90 ms late.
        tokio::time::advance(Duration::from_millis(150)).await;
        tokio::task::yield_now().await;
        send.send_response("answered during the stall");
        assert_eq!(call.await.unwrap().unwrap(), "answered during the stall");
    }

    #[tokio::test(start_paused = true)]
    async fn a_try_still_times_out_after_the_time_given_back() {
        let (svc, mut handle) = mock::pair::<Req, &'static str>();
        let svc = PerTryTimeoutLayer::new(Duration::from_millis(60)).layer(svc);
        let mut req = http::Request::new(Bytes::new());
        req.extensions_mut()
            .insert(Deadline::after(Duration::from_secs(2)));
        let start = tokio::time::Instant::now();
        let call = tokio::spawn(svc.oneshot(req));
        let _pending = handle.next_request().await.unwrap();
        tokio::time::advance(Duration::from_millis(150)).await;
        let err = call.await.unwrap().unwrap_err();
        assert!(err.is::<PerTryTimeout>());
        assert_eq!(start.elapsed(), Duration::from_millis(150 + 60));
    }

    #[test]
    fn header_round_trips_through_epoch_milliseconds() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async {
            let d = Deadline::after(Duration::from_secs(3));
            let mut h = http::HeaderMap::new();
            h.insert(DEADLINE_HEADER, d.header_value());
            let back = Deadline::from_headers(&h).unwrap();
            let diff = if back.0 > d.0 {
                back.0 - d.0
            } else {
                d.0 - back.0
            };
            assert!(diff < Duration::from_millis(5));
        });
    }
}
