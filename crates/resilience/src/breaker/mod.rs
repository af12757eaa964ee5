//! Circuit breaker: stop calling a dependency that is failing, probe it now and then, resume when it
//! answers.
//!
//! Design choices, and why:
//!
//! - **Rates over a sliding window, with a minimum number of calls.** A count of consecutive failures
//!   trips on noise at high traffic and never at low traffic; a rate over the last N calls (or the last
//!   T seconds) with `minimum_calls` does neither. Slow calls count too (`slow_call_rate_threshold`),
//!   because a dependency that answers in 10 s is as useless as one that errors.
//! - **Defaults sized for a 30% failure rate.** FinPay's fraud service fails 30% of calls in normal
//!   operation. With the defaults (count window 100, minimum 40 calls, threshold 0.6) a breaker fed
//!   independent failures at p = 0.3 opens with probability below 1e-4 over a million calls
//!   (`P[Bin(40, 0.3) >= 24]` ~ 2e-5 at the first decision, `P[Bin(100, 0.3) >= 60]` ~ 1e-9 after),
//!   and a test below feeds it 200k such outcomes. In the client the breaker sits outside the retries,
//!   so it sees the after-retry failure rate, which is near zero unless the dependency is really down.
//! - **Jittered open wait.** Many clients opened by the same outage would otherwise probe in the same
//!   millisecond.
//! - **Exactly N probes in half-open, taken under one lock.** Resilience4j users report every waiting
//!   caller rushing through at the half-open transition; here the transition and the probe count are
//!   one critical section, so callers beyond N get [`BreakerOpen`]. A
//!   failure-rate (or slow-rate) threshold reached by the probes reopens it at once; otherwise it
//!   closes when all N have answered (Resilience4j's rule, so a dependency that normally fails 30%
//!   can close it). A probe that is cancelled gives its slot back.
//! - **Per service and per endpoint.** A [`Breaker`] is a shared handle; wrap the whole stack for a
//!   per-service breaker, or each endpoint for per-endpoint ones. The balancer
//!   ([`crate::balance::BalanceConfig::endpoint_breaker`]) keeps one per endpoint and routes around
//!   the open ones; their metrics carry an extra `endpoint` label.
//! - **Observable.** Gauge `finpay_client_breaker_state` (0 closed, 1 half-open, 2 open), the same
//!   state as one 0/1 series per state, `finpay_client_breaker_states{state}` (Resilience4j's shape),
//!   and counter `finpay_client_breaker_transitions_total{from,to}`, labelled by `dependency`.

pub mod error;
pub mod future;
pub mod layer;
pub mod window;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;
use tower::Service;

pub use self::error::{BreakerOpen, InvalidBreakerConfig};
pub use self::layer::CircuitBreakerLayer;
use self::window::Window;
pub use self::window::{Totals, WindowSpec};
use crate::classify::{BoxError, Classify};
use crate::events::{EventHooks, Rejection};
use crate::outcome::{Outcome, Recorded};

/// The three breaker states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Calls flow; outcomes are recorded.
    Closed,
    /// A few probes are admitted to test recovery.
    HalfOpen,
    /// Calls are rejected until the open wait ends.
    Open,
}

impl State {
    /// Every state, in the order the gauge numbers them.
    pub const ALL: [State; 3] = [State::Closed, State::HalfOpen, State::Open];

    /// Gauge value: 0 closed, 1 half-open, 2 open.
    pub fn gauge(self) -> f64 {
        match self {
            State::Closed => 0.0,
            State::HalfOpen => 1.0,
            State::Open => 2.0,
        }
    }
    fn name(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::HalfOpen => "half_open",
            State::Open => "open",
        }
    }
}

/// Breaker settings. Build with [`BreakerConfig::default`] and adjust; checked by [`Breaker::try_new`].
#[derive(Debug, Clone)]
pub struct BreakerConfig {
    /// Count or time window.
    pub window: WindowSpec,
    /// No decision before this many calls are in the window.
    pub minimum_calls: u32,
    /// Open when failures/calls >= this.
    pub failure_rate_threshold: f64,
    /// Calls slower than this are slow.
    pub slow_call: Duration,
    /// Open when slow/calls >= this.
    pub slow_call_rate_threshold: f64,
    /// Base time spent open.
    pub open_wait: Duration,
    /// Open wait is scaled by a random factor in `[1 - j, 1 + j]`.
    pub open_wait_jitter: f64,
    /// Probes admitted in half-open.
    pub half_open_probes: u32,
    /// `dependency` label for metrics.
    pub label: &'static str,
    /// `endpoint` label for metrics, for a per-endpoint breaker; `None` for a per-service one.
    pub endpoint: Option<String>,
    /// RNG seed for the jitter; `None` = entropy.
    pub seed: Option<u64>,
    /// Told of every transition and every call turned away.
    pub events: EventHooks,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            window: WindowSpec::Count(100),
            minimum_calls: 40,
            failure_rate_threshold: 0.6,
            slow_call: Duration::from_secs(2),
            slow_call_rate_threshold: 0.9,
            open_wait: Duration::from_secs(3),
            open_wait_jitter: 0.2,
            half_open_probes: 3,
            label: "default",
            endpoint: None,
            seed: None,
            events: EventHooks::default(),
        }
    }
}

#[derive(Debug)]
enum Phase {
    Closed,
    Open {
        until: Instant,
    },
    /// `done` probes reported, of which `failed` failed and `slow` were slow.
    HalfOpen {
        admitted: u32,
        done: u32,
        failed: u32,
        slow: u32,
    },
}

#[derive(Debug)]
struct Core {
    phase: Phase,
    generation: u64,
    window: Window,
    rng: SmallRng,
}

#[derive(Debug)]
struct Shared {
    cfg: BreakerConfig,
    core: Mutex<Core>,
    /// Mirrors of `core.phase == Closed` and `core.generation`, written under the lock in
    /// [`transition`], so that a closed breaker admits a call without taking the lock. A call
    /// admitted just as the breaker opens carries the old generation, and its outcome is ignored,
    /// exactly as for a call admitted just before.
    closed: AtomicBool,
    generation: AtomicU64,
}

/// A breaker's shared state. Clones share it.
#[derive(Debug, Clone)]
pub struct Breaker {
    shared: Arc<Shared>,
}

/// Leave to call once; report the outcome with [`Permit::record`]. Dropping it unrecorded (a cancelled
/// call) records nothing and, for a probe, frees the probe slot.
#[derive(Debug)]
pub struct Permit {
    shared: Arc<Shared>,
    generation: u64,
    start: Instant,
    probe: bool,
    done: bool,
}

impl Breaker {
    /// Checks the configuration.
    pub fn try_new(cfg: BreakerConfig) -> Result<Self, InvalidBreakerConfig> {
        match cfg.window {
            WindowSpec::Count(0) => return Err(InvalidBreakerConfig("window size must be > 0")),
            WindowSpec::Count(n) if cfg.minimum_calls > n => {
                return Err(InvalidBreakerConfig("minimum_calls must be <= window size"))
            }
            WindowSpec::Time(d) if d < Duration::from_millis(100) => {
                return Err(InvalidBreakerConfig("time window must be >= 100 ms"))
            }
            _ => {}
        }
        if cfg.minimum_calls == 0 {
            return Err(InvalidBreakerConfig("minimum_calls must be > 0"));
        }
        if !(cfg.failure_rate_threshold > 0.0 && cfg.failure_rate_threshold <= 1.0) {
            return Err(InvalidBreakerConfig(
                "failure_rate_threshold must be within (0, 1]",
            ));
        }
        if !(cfg.slow_call_rate_threshold > 0.0 && cfg.slow_call_rate_threshold <= 1.0) {
            return Err(InvalidBreakerConfig(
                "slow_call_rate_threshold must be within (0, 1]",
            ));
        }
        if !(0.0..1.0).contains(&cfg.open_wait_jitter) {
            return Err(InvalidBreakerConfig(
                "open_wait_jitter must be within [0, 1)",
            ));
        }
        if cfg.half_open_probes == 0 {
            return Err(InvalidBreakerConfig("half_open_probes must be > 0"));
        }
        if cfg.open_wait.is_zero() {
            return Err(InvalidBreakerConfig("open_wait must be > 0"));
        }
        let rng = cfg
            .seed
            .map_or_else(SmallRng::from_entropy, SmallRng::seed_from_u64);
        emit_state(&cfg, State::Closed);
        Ok(Self {
            shared: Arc::new(Shared {
                core: Mutex::new(Core {
                    phase: Phase::Closed,
                    generation: 0,
                    window: Window::new(cfg.window),
                    rng,
                }),
                cfg,
                closed: AtomicBool::new(true),
                generation: AtomicU64::new(0),
            }),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &BreakerConfig {
        &self.shared.cfg
    }

    /// The state now (an open breaker whose wait is over reports half-open).
    pub fn state(&self) -> State {
        let core = lock(&self.shared);
        match core.phase {
            Phase::Closed => State::Closed,
            Phase::HalfOpen { .. } => State::HalfOpen,
            Phase::Open { until } if Instant::now() >= until => State::HalfOpen,
            Phase::Open { .. } => State::Open,
        }
    }

    /// Asks leave to call. In half-open exactly `half_open_probes` callers get a permit.
    pub fn try_acquire(&self) -> Result<Permit, BreakerOpen> {
        let now = Instant::now();
        if self.shared.closed.load(Ordering::Acquire) {
            return Ok(Permit {
                shared: self.shared.clone(),
                generation: self.shared.generation.load(Ordering::Acquire),
                start: now,
                probe: false,
                done: false,
            });
        }
        let mut core = lock(&self.shared);
        if let Phase::Open { until } = core.phase {
            if now < until {
                return Err(BreakerOpen {
                    retry_after: until - now,
                });
            }
            self.transition(
                &mut core,
                Phase::HalfOpen {
                    admitted: 0,
                    done: 0,
                    failed: 0,
                    slow: 0,
                },
            );
        }
        let probe = match &mut core.phase {
            Phase::Closed => false,
            Phase::HalfOpen { admitted, .. } => {
                if *admitted >= self.shared.cfg.half_open_probes {
                    return Err(BreakerOpen {
                        retry_after: self.shared.cfg.open_wait.min(Duration::from_secs(1)),
                    });
                }
                *admitted += 1;
                true
            }
            Phase::Open { .. } => false,
        };
        Ok(Permit {
            shared: self.shared.clone(),
            generation: core.generation,
            start: now,
            probe,
            done: false,
        })
    }

    fn transition(&self, core: &mut Core, to: Phase) {
        transition(&self.shared, core, to);
    }
}

fn lock(shared: &Shared) -> MutexGuard<'_, Core> {
    match shared.core.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

fn state_of(p: &Phase) -> State {
    match p {
        Phase::Closed => State::Closed,
        Phase::HalfOpen { .. } => State::HalfOpen,
        Phase::Open { .. } => State::Open,
    }
}

fn transition(shared: &Shared, core: &mut Core, to: Phase) {
    let from = state_of(&core.phase);
    let to_state = state_of(&to);
    core.phase = to;
    core.generation += 1;
    shared.generation.store(core.generation, Ordering::Release);
    shared
        .closed
        .store(to_state == State::Closed, Ordering::Release);
    if to_state == State::Closed {
        core.window.clear();
    }
    let label = shared.cfg.label;
    emit_state(&shared.cfg, to_state);
    match &shared.cfg.endpoint {
        None => metrics::counter!("finpay_client_breaker_transitions_total",
            "dependency" => label, "from" => from.name(), "to" => to_state.name())
        .increment(1),
        Some(ep) => metrics::counter!("finpay_client_breaker_transitions_total",
            "dependency" => label, "endpoint" => ep.clone(), "from" => from.name(), "to" => to_state.name())
        .increment(1),
    }
    let cfg = &shared.cfg;
    cfg.events.emit(|e| {
        e.on_breaker_transition(label, cfg.endpoint.as_deref(), from, to_state);
    });
    tracing::info!(
        dependency = label,
        from = from.name(),
        to = to_state.name(),
        "circuit breaker transition"
    );
}

/// Sets the numeric state gauge and, as Resilience4j exports it, one 0/1 series per state, so a
/// dashboard can count open breakers with `sum(...{state="open"})` without decoding numbers.
fn emit_state(cfg: &BreakerConfig, state: State) {
    match &cfg.endpoint {
        None => metrics::gauge!("finpay_client_breaker_state", "dependency" => cfg.label).set(state.gauge()),
        Some(ep) => metrics::gauge!("finpay_client_breaker_state", "dependency" => cfg.label, "endpoint" => ep.clone())
            .set(state.gauge()),
    }
    for each in State::ALL {
        let on = if each == state { 1.0 } else { 0.0 };
        match &cfg.endpoint {
            None => metrics::gauge!("finpay_client_breaker_states",
                "dependency" => cfg.label, "state" => each.name())
            .set(on),
            Some(ep) => metrics::gauge!("finpay_client_breaker_states",
                "dependency" => cfg.label, "endpoint" => ep.clone(), "state" => each.name())
            .set(on),
        }
    }
}

fn open(shared: &Shared, core: &mut Core) {
    let cfg = &shared.cfg;
    let j = cfg.open_wait_jitter;
    let factor = if j > 0.0 {
        core.rng.gen_range((1.0 - j)..=(1.0 + j))
    } else {
        1.0
    };
    let until = Instant::now() + cfg.open_wait.mul_f64(factor);
    transition(shared, core, Phase::Open { until });
}

impl Outcome for Permit {
    fn record(self, failed: bool) {
        Permit::record(self, failed);
    }
}

impl Permit {
    /// Records the outcome; slowness is measured from when the permit was taken.
    pub fn record(mut self, failed: bool) {
        self.done = true;
        let now = Instant::now();
        let slow = now.duration_since(self.start) >= self.shared.cfg.slow_call;
        let shared = self.shared.clone();
        let mut core = lock(&shared);
        if core.generation != self.generation {
            return; // the state changed while this call ran; its outcome belongs to the old state
        }
        let cfg = &shared.cfg;
        match core.phase {
            Phase::Closed => {
                core.window.record(failed, slow, now);
                let t = core.window.totals(now);
                if t.calls >= u64::from(cfg.minimum_calls) {
                    #[allow(clippy::cast_precision_loss)]
                    let (fr, sr) = (
                        t.failures as f64 / t.calls as f64,
                        t.slow as f64 / t.calls as f64,
                    );
                    if fr >= cfg.failure_rate_threshold || sr >= cfg.slow_call_rate_threshold {
                        open(&shared, &mut core);
                    }
                }
            }
            Phase::HalfOpen {
                done: ref mut d,
                failed: ref mut f,
                slow: ref mut sl,
                ..
            } => {
                // The N probes are judged by the same rates as the closed window (Resilience4j's
                // rule): a dependency that normally fails 30% must be able to close the breaker with
                // one failed probe out of three. Open as soon as the rate can no longer fall below
                // the threshold; close when all N are in and it did.
                *d += 1;
                *f += u32::from(failed);
                *sl += u32::from(slow);
                let n = f64::from(cfg.half_open_probes);
                let bad = f64::from(*f) / n >= cfg.failure_rate_threshold
                    || f64::from(*sl) / n >= cfg.slow_call_rate_threshold;
                if bad {
                    open(&shared, &mut core);
                } else if *d >= cfg.half_open_probes {
                    transition(&shared, &mut core, Phase::Closed);
                }
            }
            Phase::Open { .. } => {}
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if self.done || !self.probe {
            return;
        }
        let mut core = lock(&self.shared);
        if core.generation == self.generation {
            if let Phase::HalfOpen { admitted, .. } = &mut core.phase {
                *admitted = admitted.saturating_sub(1);
            }
        }
    }
}

/// The breaker as a tower service; see the module docs.
#[derive(Debug, Clone)]
pub struct CircuitBreaker<S, C> {
    inner: S,
    breaker: Breaker,
    classify: C,
}

impl<S, C> CircuitBreaker<S, C> {
    /// The shared breaker.
    pub fn breaker(&self) -> &Breaker {
        &self.breaker
    }
}

impl<S, C, Req, Res> Service<Req> for CircuitBreaker<S, C>
where
    S: Service<Req, Response = Res>,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    C: Classify<Req, Res>,
    Res: Send + 'static,
{
    type Response = Res;
    type Error = BoxError;
    type Future = future::ResponseFuture<S::Future, C, Req, Res>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        match self.breaker.try_acquire() {
            Ok(permit) => future::ResponseFuture::Admitted {
                call: Recorded::new(self.inner.call(req), permit, self.classify.clone()),
            },
            Err(open) => {
                let cfg = self.breaker.config();
                let why = Rejection::BreakerOpen {
                    retry_after: open.retry_after,
                };
                cfg.events.emit(|e| e.on_rejection(cfg.label, why));
                future::ResponseFuture::Rejected { open: Some(open) }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::Rng;

    fn cfg() -> BreakerConfig {
        BreakerConfig {
            window: WindowSpec::Count(10),
            minimum_calls: 5,
            failure_rate_threshold: 0.5,
            open_wait: Duration::from_secs(1),
            open_wait_jitter: 0.0,
            half_open_probes: 2,
            seed: Some(3),
            ..BreakerConfig::default()
        }
    }

    fn fail_n(b: &Breaker, n: usize) {
        for _ in 0..n {
            if let Ok(p) = b.try_acquire() {
                p.record(true);
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn opens_at_the_failure_rate_only_after_minimum_calls() {
        let b = Breaker::try_new(cfg()).unwrap();
        fail_n(&b, 4);
        assert_eq!(b.state(), State::Closed);
        fail_n(&b, 1);
        assert_eq!(b.state(), State::Open);
        let e = b.try_acquire().unwrap_err();
        assert_eq!(e.retry_after, Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn half_open_admits_exactly_n_probes_and_rejects_the_rest() {
        let b = Breaker::try_new(cfg()).unwrap();
        fail_n(&b, 5);
        tokio::time::advance(Duration::from_secs(1)).await;
        let p1 = b.try_acquire().unwrap();
        let p2 = b.try_acquire().unwrap();
        assert!(b.try_acquire().is_err());
        p1.record(false);
        assert_eq!(b.state(), State::HalfOpen);
        p2.record(false);
        assert_eq!(b.state(), State::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_probe_reopens_the_breaker() {
        let b = Breaker::try_new(cfg()).unwrap();
        fail_n(&b, 5);
        tokio::time::advance(Duration::from_secs(1)).await;
        b.try_acquire().unwrap().record(true);
        assert_eq!(b.state(), State::Open);
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_probe_frees_its_slot() {
        let b = Breaker::try_new(cfg()).unwrap();
        fail_n(&b, 5);
        tokio::time::advance(Duration::from_secs(1)).await;
        let p1 = b.try_acquire().unwrap();
        let _p2 = b.try_acquire().unwrap();
        assert!(b.try_acquire().is_err());
        drop(p1);
        assert!(b.try_acquire().is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn slow_calls_open_the_breaker() {
        let b = Breaker::try_new(BreakerConfig {
            slow_call: Duration::from_millis(100),
            slow_call_rate_threshold: 0.5,
            ..cfg()
        })
        .unwrap();
        for _ in 0..5 {
            let p = b.try_acquire().unwrap();
            tokio::time::advance(Duration::from_millis(150)).await;
            p.record(false);
        }
        assert_eq!(b.state(), State::Open);
    }

    #[tokio::test(start_paused = true)]
    async fn open_wait_is_jittered_within_bounds() {
        for seed in 0..20 {
            let b = Breaker::try_new(BreakerConfig {
                open_wait_jitter: 0.2,
                seed: Some(seed),
                ..cfg()
            })
            .unwrap();
            fail_n(&b, 5);
            let e = b.try_acquire().unwrap_err();
            assert!(
                e.retry_after >= Duration::from_millis(800)
                    && e.retry_after <= Duration::from_millis(1200)
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn defaults_do_not_open_at_a_steady_thirty_percent_failure_rate() {
        let b = Breaker::try_new(BreakerConfig {
            seed: Some(1),
            ..BreakerConfig::default()
        })
        .unwrap();
        let mut rng = SmallRng::seed_from_u64(42);
        for _ in 0..200_000 {
            let p = b.try_acquire().expect("breaker must stay closed");
            p.record(rng.gen_bool(0.3));
        }
        assert_eq!(b.state(), State::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn service_rejects_without_calling_inner_when_open() {
        use tower::{Layer, ServiceExt};
        let (svc, mut h) =
            tower_test::mock::pair::<http::Request<bytes::Bytes>, http::Response<bytes::Bytes>>();
        let b = Breaker::try_new(cfg()).unwrap();
        fail_n(&b, 5);
        let svc = CircuitBreakerLayer::new(b, crate::classify::HttpClassify).layer(svc);
        let err = svc
            .oneshot(http::Request::new(bytes::Bytes::new()))
            .await
            .unwrap_err();
        assert!(err.is::<BreakerOpen>());
        assert!(h.next_request().await.is_none());
    }

    #[test]
    fn concurrent_callers_at_the_half_open_transition_get_exactly_n_probes() {
        for round in 0..20 {
            let b = Breaker::try_new(BreakerConfig {
                open_wait: Duration::from_micros(1),
                half_open_probes: 3,
                seed: Some(round),
                ..cfg()
            })
            .unwrap();
            fail_n(&b, 5);
            while b.state() == State::Open {
                std::hint::spin_loop();
            }
            let barrier = std::sync::Arc::new(std::sync::Barrier::new(16));
            let handles: Vec<_> = (0..16)
                .map(|_| {
                    let (b, barrier) = (b.clone(), barrier.clone());
                    std::thread::spawn(move || {
                        barrier.wait();
                        b.try_acquire().ok()
                    })
                })
                .collect();
            let permits: Vec<Permit> = handles
                .into_iter()
                .filter_map(|h| h.join().unwrap())
                .collect();
            assert_eq!(permits.len(), 3, "round {round}");
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Acquire,
        Succeed(usize),
        Fail(usize),
        Cancel(usize),
        Advance(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => Just(Op::Acquire),
            2 => (0usize..8).prop_map(Op::Succeed),
            2 => (0usize..8).prop_map(Op::Fail),
            1 => (0usize..8).prop_map(Op::Cancel),
            1 => (0u64..1500).prop_map(Op::Advance),
        ]
    }

    proptest! {
        #[test]
        fn state_machine_never_admits_more_than_n_probes_nor_calls_while_open(ops in proptest::collection::vec(op(), 1..300)) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
            rt.block_on(async {
                let b = Breaker::try_new(cfg()).unwrap();
                let mut held: Vec<Permit> = Vec::new();
                for op in ops {
                    match op {
                        Op::Acquire => {
                            let before = b.state();
                            match b.try_acquire() {
                                Ok(p) => {
                                    prop_assert_ne!(before, State::Open, "admitted while open");
                                    held.push(p);
                                }
                                Err(e) => prop_assert!(before != State::Closed, "rejected while closed: {:?}", e),
                            }
                        }
                        Op::Succeed(i) if i < held.len() => held.swap_remove(i).record(false),
                        Op::Fail(i) if i < held.len() => held.swap_remove(i).record(true),
                        Op::Cancel(i) if i < held.len() => drop(held.swap_remove(i)),
                        Op::Advance(ms) => tokio::time::advance(Duration::from_millis(ms)).await,
                        _ => {}
                    }
                    let core = lock(&b.shared);
                    if let Phase::HalfOpen { admitted, done, .. } = core.phase {
                        let live = held.iter().filter(|p| p.probe && p.generation == core.generation).count();
                        prop_assert!(admitted <= 2, "admitted {} probes", admitted);
                        prop_assert_eq!(live as u32, admitted - done.min(admitted), "probe slots leak");
                    }
                }
                Ok(())
            })?;
        }
    }
}
