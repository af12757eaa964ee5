//! Load balancing over a dynamic set of replicas: p2c over peak-EWMA, outlier ejection, active health
//! checks, panic mode.
//!
//! - **p2c over peak-EWMA** (Finagle, Linkerd, tower's `p2c`): pick two endpoints at random, send to the
//!   one with the lower `latency estimate * (requests in flight + 1)`. Two random choices avoid the herd
//!   behaviour of "always the least loaded" while still steering away from slow replicas; the peak
//!   EWMA jumps up on a slow answer and decays back slowly, so a replica that just hung is avoided at
//!   once. A failed try counts as a slow one, or a replica that fails fast would look fastest.
//! - **Different replica per try.** Tries of one call (retries and hedges) share a [`TriedEndpoints`]
//!   in the request; the balancer picks among endpoints not yet tried while there are any.
//! - **Passive outlier ejection**: see [`outlier`].
//! - **Active health checks** against e.g. `/health/ready`: see [`health`]. Unhealthy endpoints are
//!   skipped like ejected ones.
//! - **Panic mode** (Envoy): when fewer than `panic_threshold_percent` of endpoints are usable, route
//!   to all of them. A health check that is wrong about everybody must not take the service down.
//! - **Per-endpoint breakers** (optional, [`BalanceConfig::endpoint_breaker`]): open endpoints are
//!   skipped like ejected ones; a try that finds its endpoint's breaker full fails with
//!   [`crate::breaker::BreakerOpen`], which the HTTP classifier treats as safe to retry elsewhere.
//! - **Dynamic set**: [`EndpointSet::insert`] / [`EndpointSet::remove`] at any time.
//!
//! Counters: `finpay_client_attempts_total` (every try actually sent), `finpay_client_ejections_total`.

pub mod error;
pub mod future;
pub mod health;
pub mod outlier;
mod set;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;
use tower::{Service, ServiceExt};

pub use self::error::NoEndpoint;
pub use self::outlier::{EndpointStats, OutlierConfig};
use self::set::Pending;
pub use self::set::{Endpoint, EndpointSet};
use crate::breaker::{Breaker, BreakerConfig};
use crate::classify::{BoxError, Class, Classify};
use crate::events::EventHooks;

/// Endpoints already tried by this call; shared by all copies of one request (retries and hedges).
///
/// A bit set of endpoint ids modulo 64 in one atomic word: no lock and one allocation per call.
/// In a set that has seen more than 64 endpoints two ids can share a bit; the only effect is that an
/// untried endpoint may be passed over for a fresh one, never that a call is refused.
#[derive(Debug, Clone, Default)]
pub struct TriedEndpoints(Arc<AtomicU64>);

impl TriedEndpoints {
    fn bit(id: u64) -> u64 {
        1 << (id % 64)
    }
    fn contains(&self, id: u64) -> bool {
        self.0.load(Ordering::Relaxed) & Self::bit(id) != 0
    }
    pub(crate) fn push(&self, id: u64) {
        self.0.fetch_or(Self::bit(id), Ordering::Relaxed);
    }
    /// How many distinct endpoints (bits) this call has tried.
    pub fn len(&self) -> usize {
        self.0.load(Ordering::Relaxed).count_ones() as usize
    }
    /// Whether nothing was sent yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A request that can carry [`TriedEndpoints`].
pub trait TrackTried {
    /// The shared set, if the caller attached one.
    fn tried(&self) -> Option<TriedEndpoints>;
}

impl<B> TrackTried for http::Request<B> {
    fn tried(&self) -> Option<TriedEndpoints> {
        self.extensions().get::<TriedEndpoints>().cloned()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

/// How to choose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// Power of two choices over peak-EWMA latency times load.
    P2cPeakEwma,
    /// Each usable endpoint in turn.
    RoundRobin,
    /// The first usable endpoint in the order the endpoints were added; the others are hot
    /// standbys that take the traffic while it is unhealthy, ejected or already tried by this
    /// call. For a dependency that must have one active writer (a store on one SQLite file):
    /// two active replicas would fight for its write lock.
    Failover,
}

/// Balancer settings.
#[derive(Debug, Clone)]
pub struct BalanceConfig {
    /// How to choose.
    pub strategy: Strategy,
    /// Peak-EWMA time constant.
    pub decay: Duration,
    /// Latency assumed before the first answer by an endpoint of an empty set; an endpoint added
    /// beside others starts at their mean estimate instead (see [`EndpointSet::insert`]).
    pub default_rtt: Duration,
    /// Passive ejection.
    pub outlier: OutlierConfig,
    /// Below this percent of usable endpoints, use all.
    pub panic_threshold_percent: u32,
    /// A breaker per endpoint (its `endpoint` label is set from the key); `None` for none. Open
    /// endpoints are skipped like ejected ones.
    pub endpoint_breaker: Option<BreakerConfig>,
    /// `dependency` label for metrics.
    pub label: &'static str,
    /// RNG seed; `None` = entropy.
    pub seed: Option<u64>,
    /// Told of every ejection.
    pub events: EventHooks,
}

impl Default for BalanceConfig {
    fn default() -> Self {
        Self {
            strategy: Strategy::P2cPeakEwma,
            decay: Duration::from_secs(10),
            default_rtt: Duration::from_millis(20),
            outlier: OutlierConfig::default(),
            panic_threshold_percent: 30,
            endpoint_breaker: None,
            label: "default",
            seed: None,
            events: EventHooks::default(),
        }
    }
}

/// The balancer service over an [`EndpointSet`].
#[derive(Debug)]
pub struct Balance<K, S, C> {
    set: EndpointSet<K, S>,
    classify: C,
    rng: Arc<Mutex<SmallRng>>,
    rr: Arc<AtomicUsize>,
}

impl<K, S, C: Clone> Clone for Balance<K, S, C> {
    fn clone(&self) -> Self {
        Self {
            set: self.set.clone(),
            classify: self.classify.clone(),
            rng: self.rng.clone(),
            rr: self.rr.clone(),
        }
    }
}

impl<K: PartialEq + std::fmt::Display, S, C> Balance<K, S, C> {
    /// Balances over `set`, judging outcomes with `classify`.
    pub fn new(set: EndpointSet<K, S>, classify: C) -> Self {
        let rng = set
            .inner
            .cfg
            .seed
            .map_or_else(SmallRng::from_entropy, SmallRng::seed_from_u64);
        Self {
            set,
            classify,
            rng: Arc::new(Mutex::new(rng)),
            rr: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// The endpoint set (to add or remove endpoints, or inspect them).
    pub fn endpoints(&self) -> &EndpointSet<K, S> {
        &self.set
    }

    /// The endpoint to use, and whether the balancer is in panic mode. Sets of up to 64 endpoints
    /// are filtered in bit masks rather than lists, so a pick allocates nothing; the choice (and
    /// the random numbers drawn) is the same as with lists.
    fn pick(
        &self,
        eps: &[Arc<Endpoint<K, S>>],
        tried: Option<&TriedEndpoints>,
        now: Instant,
    ) -> (usize, bool) {
        if eps.len() > 64 {
            return self.pick_large(eps, tried, now);
        }
        let cfg = &self.set.inner.cfg;
        let mut usable: u64 = 0;
        for (i, e) in eps.iter().enumerate() {
            if e.pickable(now) {
                usable |= 1 << i;
            }
        }
        let n_usable = usable.count_ones() as usize;
        let all: u64 = if eps.len() == 64 {
            u64::MAX
        } else {
            (1u64 << eps.len()) - 1
        };
        let panic =
            n_usable == 0 || n_usable * 100 < cfg.panic_threshold_percent as usize * eps.len();
        let pool = if panic { all } else { usable };
        let fresh = match tried {
            Some(t) => {
                let mut f = 0u64;
                for (i, e) in eps.iter().enumerate() {
                    if pool & (1 << i) != 0 && !t.contains(e.id) {
                        f |= 1 << i;
                    }
                }
                f
            }
            None => 0,
        };
        let pool = if fresh == 0 { pool } else { fresh };
        let len = pool.count_ones() as usize;
        if len == 1 {
            return (pool.trailing_zeros() as usize, panic);
        }
        let chosen = match cfg.strategy {
            Strategy::Failover => pool.trailing_zeros() as usize,
            Strategy::RoundRobin => nth_bit(pool, self.rr.fetch_add(1, Ordering::Relaxed) % len),
            Strategy::P2cPeakEwma => {
                let (a, b) = {
                    let mut rng = lock(&self.rng);
                    let a = rng.gen_range(0..len);
                    let mut b = rng.gen_range(0..len - 1);
                    if b >= a {
                        b += 1;
                    }
                    (nth_bit(pool, a), nth_bit(pool, b))
                };
                let ca = eps[a].cost();
                let cb = eps[b].cost();
                if ca <= cb {
                    a
                } else {
                    b
                }
            }
        };
        (chosen, panic)
    }

    /// [`Self::pick`] for sets of more than 64 endpoints (lists instead of bit masks).
    fn pick_large(
        &self,
        eps: &[Arc<Endpoint<K, S>>],
        tried: Option<&TriedEndpoints>,
        now: Instant,
    ) -> (usize, bool) {
        let cfg = &self.set.inner.cfg;
        let usable: Vec<usize> = (0..eps.len()).filter(|&i| eps[i].pickable(now)).collect();
        let panic = usable.is_empty()
            || usable.len() * 100 < cfg.panic_threshold_percent as usize * eps.len();
        let pool: Vec<usize> = if panic {
            (0..eps.len()).collect()
        } else {
            usable
        };
        let fresh: Vec<usize> = match tried {
            Some(t) => pool
                .iter()
                .copied()
                .filter(|&i| !t.contains(eps[i].id))
                .collect(),
            None => Vec::new(),
        };
        let pool = if fresh.is_empty() { pool } else { fresh };
        if pool.len() == 1 {
            return (pool[0], panic);
        }
        let chosen = match cfg.strategy {
            Strategy::Failover => pool[0],
            Strategy::RoundRobin => pool[self.rr.fetch_add(1, Ordering::Relaxed) % pool.len()],
            Strategy::P2cPeakEwma => {
                let (a, b) = {
                    let mut rng = lock(&self.rng);
                    let a = rng.gen_range(0..pool.len());
                    let mut b = rng.gen_range(0..pool.len() - 1);
                    if b >= a {
                        b += 1;
                    }
                    (pool[a], pool[b])
                };
                let ca = eps[a].cost();
                let cb = eps[b].cost();
                if ca <= cb {
                    a
                } else {
                    b
                }
            }
        };
        (chosen, panic)
    }
}

/// The index of the `n`-th set bit of `mask` (from the lowest).
fn nth_bit(mut mask: u64, n: usize) -> usize {
    for _ in 0..n {
        mask &= mask - 1;
    }
    mask.trailing_zeros() as usize
}

impl<K, S, C, Req, Res> Service<Req> for Balance<K, S, C>
where
    K: PartialEq + std::fmt::Display + Send + Sync + 'static,
    S: Service<Req, Response = Res> + Clone + Send + Sync + 'static,
    S::Error: Into<BoxError> + Send,
    S::Future: Send + 'static,
    C: Classify<Req, Res>,
    Req: TrackTried + Send + 'static,
    Res: Send + 'static,
{
    type Response = Res;
    type Error = BoxError;
    type Future = future::ResponseFuture<Res>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let eps = self.set.current();
        if eps.is_empty() {
            return Box::pin(async { Err(Box::new(NoEndpoint) as BoxError) });
        }
        let tried = req.tried();
        // One reading serves the pick and starts the try's latency measurement.
        let start = Instant::now();
        let (idx, panic) = self.pick(&eps, tried.as_ref(), start);
        let ep = eps[idx].clone();
        drop(eps);
        if let Some(t) = &tried {
            t.push(ep.id);
        }
        // In panic mode every endpoint is used, open breakers included (as Envoy ignores health).
        let breaker = if panic { None } else { ep.breaker.as_ref() };
        let permit = match breaker.map(Breaker::try_acquire) {
            None => None,
            Some(Ok(p)) => Some(p),
            Some(Err(open)) => return Box::pin(async move { Err(Box::new(open) as BoxError) }),
        };
        let svc = ep.svc.clone();
        let pending = Pending::new(ep);
        let cfg = &self.set.inner.cfg;
        self.set.inner.attempts.increment(1);
        let decay = cfg.decay;
        let set = self.set.clone();
        let c = self.classify.clone();
        Box::pin(async move {
            let res = svc.oneshot(req).await.map_err(Into::into);
            let now = Instant::now();
            let class = c.classify(&res);
            let rtt = now.duration_since(start);
            // One lock for everything the try's end changes: load, latency, outlier counts.
            let wants_ejection = pending.ep.with_stats(|s| {
                if class == Class::Success {
                    s.observe_rtt(rtt, decay, now);
                } else {
                    // A failure is treated as slow, so a replica that fails fast does not attract traffic.
                    let penalty =
                        Duration::from_secs_f64((s.ewma_ns * 2.0 / 1e9).min(10.0)).max(rtt);
                    s.observe_rtt(penalty, decay, now);
                }
                let outlier = &set.inner.cfg.outlier;
                let baseline = || set.baseline_failure_rate();
                match class {
                    Class::Success => s.record_against(false, outlier, now, baseline),
                    Class::Retry | Class::RetrySafe => {
                        s.record_against(true, outlier, now, baseline)
                    }
                    Class::Failure => false,
                }
            });
            if let Some(p) = permit {
                p.record(class.is_failure());
            }
            if wants_ejection {
                set.eject(&pending.ep, now);
            }
            res
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::breaker::State as BreakerState;
    use crate::classify::HttpClassify;
    use bytes::Bytes;

    type Req = http::Request<Bytes>;
    type Res = http::Response<Bytes>;

    /// An endpoint that answers with a fixed status after a fixed delay.
    #[derive(Clone)]
    struct Fixed(u16, Duration, Arc<AtomicUsize>);

    impl Service<Req> for Fixed {
        type Response = Res;
        type Error = BoxError;
        type Future =
            std::pin::Pin<Box<dyn std::future::Future<Output = Result<Res, BoxError>> + Send>>;
        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
            Poll::Ready(Ok(()))
        }
        fn call(&mut self, _: Req) -> Self::Future {
            let (s, d, n) = (self.0, self.1, self.2.clone());
            Box::pin(async move {
                n.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(d).await;
                let mut r = Res::new(Bytes::new());
                *r.status_mut() = http::StatusCode::from_u16(s).unwrap_or(http::StatusCode::OK);
                Ok(r)
            })
        }
    }

    fn set(
        cfg: BalanceConfig,
        eps: &[(u16, u64)],
    ) -> (Balance<usize, Fixed, HttpClassify>, Vec<Arc<AtomicUsize>>) {
        let s = EndpointSet::new(cfg);
        let mut counters = Vec::new();
        for (i, (st, ms)) in eps.iter().enumerate() {
            let n = Arc::new(AtomicUsize::new(0));
            counters.push(n.clone());
            s.insert(i, Fixed(*st, Duration::from_millis(*ms), n));
        }
        (Balance::new(s, HttpClassify), counters)
    }

    fn cfg() -> BalanceConfig {
        BalanceConfig {
            seed: Some(9),
            ..BalanceConfig::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn p2c_prefers_the_faster_replica() {
        let (b, n) = set(cfg(), &[(200, 1), (200, 50), (200, 50)]);
        for _ in 0..300 {
            b.clone().oneshot(Req::new(Bytes::new())).await.unwrap();
        }
        let fast = n[0].load(Ordering::Relaxed);
        assert!(fast > 200, "fast replica got {fast} of 300");
    }

    #[tokio::test(start_paused = true)]
    async fn tries_of_one_call_go_to_different_replicas() {
        let (b, n) = set(cfg(), &[(200, 1), (200, 1), (200, 1)]);
        let mut req = Req::new(Bytes::new());
        let tried = TriedEndpoints::default();
        req.extensions_mut().insert(tried.clone());
        for _ in 0..3 {
            let mut r = Req::new(Bytes::new());
            r.extensions_mut().insert(tried.clone());
            b.clone().oneshot(r).await.unwrap();
        }
        assert!(n.iter().all(|c| c.load(Ordering::Relaxed) == 1));
    }

    #[tokio::test(start_paused = true)]
    async fn failover_sends_everything_to_the_first_usable_replica() {
        let c = BalanceConfig {
            strategy: Strategy::Failover,
            ..cfg()
        };
        let (b, n) = set(c, &[(200, 1), (200, 1), (200, 1)]);
        for _ in 0..20 {
            b.clone().oneshot(Req::new(Bytes::new())).await.unwrap();
        }
        let counts = |n: &[Arc<AtomicUsize>]| -> Vec<usize> {
            n.iter().map(|c| c.load(Ordering::Relaxed)).collect()
        };
        assert_eq!(counts(&n), [20, 0, 0], "the standbys get nothing");

        // A call's second try goes to a standby, not back to the replica that just failed it.
        let tried = TriedEndpoints::default();
        for _ in 0..2 {
            let mut r = Req::new(Bytes::new());
            r.extensions_mut().insert(tried.clone());
            b.clone().oneshot(r).await.unwrap();
        }
        assert_eq!(counts(&n), [21, 1, 0]);

        // The primary goes unhealthy: the next replica in order takes over, and gives the traffic
        // back once the primary is healthy again.
        let primary = b.endpoints().snapshot()[0].clone();
        primary.with_stats(|s| s.healthy = false);
        for _ in 0..10 {
            b.clone().oneshot(Req::new(Bytes::new())).await.unwrap();
        }
        assert_eq!(counts(&n), [21, 11, 0]);
        primary.with_stats(|s| s.healthy = true);
        b.clone().oneshot(Req::new(Bytes::new())).await.unwrap();
        assert_eq!(counts(&n), [22, 11, 0]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_replica_is_ejected_and_ejections_are_capped() {
        let c = BalanceConfig {
            strategy: Strategy::RoundRobin,
            outlier: OutlierConfig {
                consecutive_failures: 3,
                consecutive_derived: false,
                max_ejected_percent: 34,
                ..OutlierConfig::default()
            },
            ..cfg()
        };
        let (b, n) = set(c, &[(503, 1), (503, 1), (200, 1)]);
        for _ in 0..30 {
            b.clone().oneshot(Req::new(Bytes::new())).await.unwrap();
        }
        assert_eq!(b.endpoints().ejected(), 1, "max 34% of 3 = 1");
        let before: Vec<_> = n.iter().map(|c| c.load(Ordering::Relaxed)).collect();
        for _ in 0..30 {
            b.clone().oneshot(Req::new(Bytes::new())).await.unwrap();
        }
        let after: Vec<_> = n.iter().map(|c| c.load(Ordering::Relaxed)).collect();
        let untouched = before.iter().zip(&after).filter(|(a, b)| a == b).count();
        assert_eq!(untouched, 1, "the ejected replica gets nothing");
    }

    #[tokio::test(start_paused = true)]
    async fn panic_mode_routes_to_all_when_too_few_are_healthy() {
        let (b, n) = set(
            BalanceConfig {
                strategy: Strategy::RoundRobin,
                ..cfg()
            },
            &[(200, 1), (200, 1), (200, 1), (200, 1)],
        );
        for ep in b.endpoints().snapshot().iter().take(3) {
            ep.with_stats(|s| s.healthy = false);
        }
        for _ in 0..40 {
            b.clone().oneshot(Req::new(Bytes::new())).await.unwrap();
        }
        assert!(
            n.iter().all(|c| c.load(Ordering::Relaxed) > 0),
            "1 of 4 healthy is below 30%: all get traffic"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_open_endpoint_breaker_routes_around_that_endpoint() {
        let c = BalanceConfig {
            strategy: Strategy::RoundRobin,
            outlier: OutlierConfig {
                consecutive_failures: 0,
                ..OutlierConfig::default()
            },
            endpoint_breaker: Some(BreakerConfig {
                window: crate::breaker::WindowSpec::Count(10),
                minimum_calls: 5,
                seed: Some(1),
                ..BreakerConfig::default()
            }),
            ..cfg()
        };
        let (b, n) = set(c, &[(503, 1), (200, 1), (200, 1)]);
        for _ in 0..60 {
            let _ = b.clone().oneshot(Req::new(Bytes::new())).await;
        }
        let eps = b.endpoints().snapshot();
        assert_eq!(eps[0].breaker().unwrap().state(), BreakerState::Open);
        assert_eq!(
            n[0].load(Ordering::Relaxed),
            5,
            "no more tries after it opened"
        );
        assert_eq!(eps[1].breaker().unwrap().state(), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn empty_set_fails_with_no_endpoint() {
        let b: Balance<usize, Fixed, HttpClassify> =
            Balance::new(EndpointSet::new(cfg()), HttpClassify);
        let e = b.oneshot(Req::new(Bytes::new())).await.unwrap_err();
        assert!(e.is::<NoEndpoint>());
    }

    #[tokio::test(start_paused = true)]
    async fn endpoints_can_be_added_and_removed_while_running() {
        let (b, n) = set(cfg(), &[(200, 1)]);
        b.endpoints()
            .insert(7, Fixed(200, Duration::from_millis(1), n[0].clone()));
        assert_eq!(b.endpoints().len(), 2);
        b.endpoints().remove(&0);
        assert_eq!(b.endpoints().len(), 1);
        b.clone().oneshot(Req::new(Bytes::new())).await.unwrap();
    }
}
