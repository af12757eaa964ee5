//! The peer contender: tower-resilience 0.13 (pinned in `Cargo.toml`) configured as close to
//! `ClientPolicy::default()` as its API allows, over the same replicas and the same hyper-util
//! pooled client as the bare contender. tower's own p2c balancer (peak EWMA) picks the replica;
//! tower-resilience has no balancer of its own.
//!
//! Two orderings, both outermost first:
//!
//! * `B`, ours: bulkhead -> circuit breaker -> retry (AIMD budget) -> hedge -> time limiter (per try)
//!   -> buffer -> p2c over peak-EWMA -> outlier detection -> endpoint.
//! * `B2`, the retry inside the hedge: bulkhead -> circuit breaker -> hedge -> retry -> time limiter
//!   -> buffer -> p2c -> outlier detection -> endpoint. Its hedge waits its delay even after a fast
//!   failure, so the retry below it is what turns a 500 into a quick second try.
//!
//! How each setting maps (the defaults it copies are `ClientPolicy::default()`'s):
//!
//! | ours | tower-resilience |
//! |---|---|
//! | bulkhead 256, `max_wait_ms = 0` | `BulkheadLayer` `max_concurrent_calls(256)`, `reject_when_full()` |
//! | breaker: count window 100, minimum 40 calls, failure rate 0.6, slow 2 s at 0.9, open 3 s, 3 probes | `CircuitBreakerLayer`: the same numbers (no jitter on the open wait: it has none) |
//! | 4 rounds, backoff 5 ms base, 100 ms cap, full jitter | `RetryLayer` `max_attempts(4)`, `ExponentialRandomBackoff(2.5 ms, 1.0)` capped at 50 ms: randomisation 1.0 draws from [0, 2 x 2.5 ms x 2^n], our full jitter; the cap applies before the randomisation, so the longest wait is 100 ms as ours |
//! | ratio budget 0.5, reserve 10/s x 10 s, shared with hedges | AIMD budget: a success deposits 1 token, a retry withdraws 2 (ratio 0.5), floor 100 tokens; hedges are not paid from it (its hedge has no budget) |
//! | up to 4 hedges after clamp(p95, 10, 20) ms; a fast failure fires the next at once | `HedgeLayer` `max_hedged_attempts(5)`, fixed 10 ms delay (it has no percentile delay, and a failed attempt does not fire the next one early); idempotent requests only (every bench request is) |
//! | per-try timeout 60 ms | `TimeLimiterLayer` 60 ms, cancelling the try |
//! | p2c over peak-EWMA, 10 s decay, 20 ms default RTT; each try of a call to a replica not yet tried | tower `p2c::Balance` over `PeakEwma` (same decay and RTT) behind a `Buffer` (the balancer is not `Clone`); no notion of tried replicas |
//! | outlier ejection | `OutlierDetectionLayer` per replica (backpressure mode) on one shared `OutlierDetector`: the streak our rule derives at p = 0.3 and 50,000 tries/s (see `OUTLIER_STREAK`), at most 67% ejected (our `max_ejected_percent`), 5 s base ejection, 300 s cap; it has no failure-share rule |
//! | 2 s deadline, propagated to the callee | the bench's own 2 s timeout around each call, as for the bare client; nothing is propagated (it has no deadline) |
//! | active health checks | not configured: the bench's replicas are always healthy, so probes change no figure |
//!
//! A 5xx is turned into an error at the endpoint, because its hedge and its outlier detector judge
//! only `Err`s; every layer's error is mapped into one cloneable [`PeerError`] (its hedge needs
//! `Clone` errors).

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use tower::balance::p2c::Balance;
use tower::buffer::Buffer;
use tower::discover::ServiceList;
use tower::load::{CompleteOnResponse, PeakEwma};
use tower::util::BoxCloneService;
use tower::{Layer, Service, ServiceBuilder, ServiceExt};
use tower_resilience::bulkhead::BulkheadLayer;
use tower_resilience::circuitbreaker::{CircuitBreakerLayer, SlidingWindowType};
use tower_resilience::hedge::HedgeLayer;
use tower_resilience::outlier::{OutlierDetectionLayer, OutlierDetector};
use tower_resilience::retry::{ExponentialRandomBackoff, RetryBudgetBuilder, RetryLayer};
use tower_resilience::timelimiter::TimeLimiterLayer;

use finpay_resilience::classify::BoxError;
use finpay_resilience::ClientPolicy;

use super::{BareClient, CHECK_BODY, SAFE_BODY};

/// The consecutive-failure threshold given to tower-resilience's outlier detector: the streak our
/// rule derives for p = 0.3 at 17,000-50,000 tries/s (`OutlierConfig::streak_threshold`), so that
/// neither contender ejects a healthy replica by chance in a run.
const OUTLIER_STREAK: usize = 27;

/// The request the peer carries: the body (a reference count), built into an HTTP request per try.
#[derive(Clone)]
pub struct PeerReq {
    body: Bytes,
}

impl PeerReq {
    /// A fraud check.
    pub fn check() -> Self {
        Self {
            body: Bytes::from_static(CHECK_BODY),
        }
    }
}

/// Every failure, cloneable (its hedge needs that).
#[derive(Clone, Debug)]
pub enum PeerError {
    /// The replica answered 5xx.
    Status(u16),
    /// A per-try timeout.
    Timeout,
    /// Bulkhead full, circuit open, replica ejected: not retried.
    Rejected(&'static str),
    /// Transport or anything else.
    Other(Arc<str>),
}

impl std::fmt::Display for PeerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PeerError::Status(s) => write!(f, "status {s}"),
            PeerError::Timeout => f.write_str("per-try timeout"),
            PeerError::Rejected(why) => f.write_str(why),
            PeerError::Other(e) => f.write_str(e),
        }
    }
}

impl std::error::Error for PeerError {}

impl PeerError {
    fn other(e: impl std::fmt::Display) -> Self {
        PeerError::Other(e.to_string().into())
    }

    /// What our classifier retries: 5xx, timeouts, transport errors.
    fn retryable(&self) -> bool {
        !matches!(self, PeerError::Rejected(_))
    }
}

type Res = http::Response<Bytes>;
type PeerFuture = Pin<Box<dyn Future<Output = Result<Res, PeerError>> + Send>>;

/// One replica through the shared pooled client, or (`client: None`) an answer at once for the
/// in-process scenario.
#[derive(Clone)]
pub struct PeerEndpoint {
    uri: http::Uri,
    client: Option<BareClient>,
}

impl Service<PeerReq> for PeerEndpoint {
    type Response = Res;
    type Error = PeerError;
    type Future = PeerFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), PeerError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: PeerReq) -> PeerFuture {
        let Some(client) = &self.client else {
            return Box::pin(std::future::ready(Ok(Res::new(Bytes::from_static(
                SAFE_BODY,
            )))));
        };
        let http_req = http::Request::post(self.uri.clone())
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(req.body));
        let sent = http_req.map(|r| client.request(r));
        Box::pin(async move {
            let resp = sent
                .map_err(PeerError::other)?
                .await
                .map_err(PeerError::other)?;
            let (parts, body) = resp.into_parts();
            let bytes = body.collect().await.map_err(PeerError::other)?.to_bytes();
            if parts.status.is_server_error() {
                return Err(PeerError::Status(parts.status.as_u16()));
            }
            Ok(http::Response::from_parts(parts, bytes))
        })
    }
}

/// The two orderings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// Retry outside the hedge (ours).
    RetryOutside,
    /// Retry inside the hedge.
    RetryInside,
}

/// The type-erased peer stack.
pub type PeerStack = BoxCloneService<PeerReq, Res, PeerError>;

/// A shareable handle: the stack is `Clone` but not `Sync` (its `Buffer` is not), so each call
/// takes a clone under a lock held for the clone alone.
pub struct PeerDriver(Mutex<PeerStack>);

impl PeerDriver {
    /// One call; `Ok` when answered 200.
    pub async fn call(&self) -> Result<(), &'static str> {
        let svc = match self.0.lock() {
            Ok(g) => g.clone(),
            Err(_) => return Err("poisoned"),
        };
        match svc.oneshot(PeerReq::check()).await {
            Ok(r) if r.status() == http::StatusCode::OK => Ok(()),
            Ok(_) => Err("other status"),
            Err(PeerError::Status(_)) => Err("5xx"),
            Err(PeerError::Timeout) => Err("timeout"),
            Err(PeerError::Rejected(why)) => Err(why),
            Err(PeerError::Other(_)) => Err("transport error"),
        }
    }
}

/// The balanced endpoints: p2c over peak-EWMA over outlier-detected replicas, behind a buffer.
fn balanced(
    policy: &ClientPolicy,
    endpoints: Vec<PeerEndpoint>,
) -> Result<impl Service<PeerReq, Response = Res, Error = PeerError, Future: Send> + Clone, BoxError>
{
    let o = &policy.outlier;
    let detector = OutlierDetector::new()
        .max_ejection_percent(o.max_ejected_percent as usize)
        .base_ejection_duration(Duration::from_millis(o.base_ejection_ms))
        .max_ejection_duration(Duration::from_millis(o.max_ejection_ms));
    let default_rtt = Duration::from_millis(policy.balancer.default_rtt_ms);
    #[allow(clippy::cast_precision_loss)]
    let decay_ns = Duration::from_millis(policy.balancer.ewma_decay_ms).as_nanos() as f64;
    let mut services = Vec::new();
    for (i, ep) in endpoints.into_iter().enumerate() {
        let name = format!("replica-{i}");
        detector.register(name.clone(), OUTLIER_STREAK);
        let layer = OutlierDetectionLayer::builder()
            .detector(detector.clone())
            .instance_name(name)
            .build()?;
        let svc = layer.layer(ep).map_err(|e| match e {
            tower_resilience::outlier::OutlierDetectionServiceError::Inner(e) => e,
            tower_resilience::outlier::OutlierDetectionServiceError::OutlierDetection(_) => {
                PeerError::Rejected("ejected")
            }
        });
        services.push(PeakEwma::new(
            svc,
            default_rtt,
            decay_ns,
            CompleteOnResponse::default(),
        ));
    }
    let balance = Balance::new(ServiceList::new::<PeerReq>(services));
    let buffer = Buffer::new(balance, 1024);
    Ok(
        buffer.map_err(|e: BoxError| match e.downcast::<PeerError>() {
            Ok(e) => *e,
            Err(e) => PeerError::other(e),
        }),
    )
}

/// The peer stack in `order` over `endpoints`, set from `policy`.
pub fn stack(
    policy: &ClientPolicy,
    endpoints: Vec<PeerEndpoint>,
    order: Order,
) -> Result<PeerStack, BoxError> {
    let per_try = TimeLimiterLayer::builder()
        .timeout_duration(policy.per_try_timeout())
        .cancel_running_future(true)
        .build();
    let per_try = ServiceBuilder::new()
        .map_err(|e| match e {
            tower_resilience::timelimiter::TimeLimiterError::Timeout => PeerError::Timeout,
            tower_resilience::timelimiter::TimeLimiterError::Inner(e) => e,
        })
        .layer(per_try)
        .service(balanced(policy, endpoints)?);
    let budget = RetryBudgetBuilder::new()
        .aimd()
        .min_budget(100)
        .max_budget(100_000)
        .deposit_amount(1)
        .withdraw_amount(2)
        .build()?;
    // Randomisation 1.0 around half our base draws from [0, base x 2^n], our full jitter.
    let half = |ms: u64| Duration::from_micros(ms * 500);
    let backoff = ExponentialRandomBackoff::new(half(policy.backoff_base_ms), 1.0)?
        .max_interval(half(policy.backoff_max_ms));
    let retry = RetryLayer::<PeerReq, Res, PeerError>::builder()
        .max_attempts(policy.max_attempts as usize)
        .backoff(backoff)
        .retry_on(PeerError::retryable)
        .budget(budget)
        .build();
    let hedge = HedgeLayer::builder()
        .delay(Duration::from_millis(policy.hedge.min_delay_ms))
        .max_hedged_attempts(policy.hedge.max_hedges as usize + 1)
        .build();
    let unhedge = |e: tower_resilience::hedge::HedgeError<PeerError>| e.into_inner();
    let br = &policy.breaker;
    let breaker = CircuitBreakerLayer::builder()
        .sliding_window_type(SlidingWindowType::CountBased)
        .sliding_window_size(br.window_size as usize)
        .minimum_number_of_calls(br.minimum_calls as usize)
        .failure_rate_threshold(br.failure_rate_threshold)
        .slow_call_duration_threshold(Duration::from_millis(br.slow_call_ms))
        .slow_call_rate_threshold(br.slow_call_rate_threshold)
        .wait_duration_in_open(Duration::from_millis(br.open_wait_ms))
        .permitted_calls_in_half_open(br.half_open_probes as usize)
        .build()?;
    let bulkhead = BulkheadLayer::builder()
        .max_concurrent_calls(policy.bulkhead.max_concurrent)
        .reject_when_full()
        .build()?;
    let guards = ServiceBuilder::new()
        .map_err(|e| match e {
            tower_resilience::bulkhead::BulkheadServiceError::Inner(e) => e,
            tower_resilience::bulkhead::BulkheadServiceError::Bulkhead(_) => {
                PeerError::Rejected("bulkhead full")
            }
        })
        .layer(bulkhead)
        .map_err(|e| match e {
            tower_resilience::circuitbreaker::CircuitBreakerError::Inner(e) => e,
            _ => PeerError::Rejected("breaker open"),
        })
        .layer(breaker);
    let svc = match order {
        Order::RetryOutside => BoxCloneService::new(
            guards
                .layer(retry)
                .map_err(unhedge)
                .layer(hedge)
                .service(per_try),
        ),
        Order::RetryInside => BoxCloneService::new(
            guards
                .map_err(unhedge)
                .layer(hedge)
                .layer(retry)
                .service(per_try),
        ),
    };
    Ok(svc)
}

/// The peer over the replicas at `uris` (full check URIs), through `client`'s pool.
pub fn over_http(
    policy: &ClientPolicy,
    uris: &[http::Uri],
    client: &BareClient,
    order: Order,
) -> Result<PeerDriver, BoxError> {
    let endpoints = uris
        .iter()
        .map(|u| PeerEndpoint {
            uri: u.clone(),
            client: Some(client.clone()),
        })
        .collect();
    Ok(PeerDriver(Mutex::new(stack(policy, endpoints, order)?)))
}

/// The peer over one endpoint that answers 200 at once (no sockets), for the in-process scenario.
pub fn in_process(policy: &ClientPolicy, order: Order) -> Result<PeerDriver, BoxError> {
    let ep = PeerEndpoint {
        uri: http::Uri::from_static("http://inproc:80/v1/checks"),
        client: None,
    };
    Ok(PeerDriver(Mutex::new(stack(policy, vec![ep], order)?)))
}
