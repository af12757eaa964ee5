//! The endpoint set the balancer picks from: each endpoint's service, statistics and breaker,
//! and the lock-free mirror of what a pick reads.
//!
//! The list is replaced whole on every change ([`EndpointSet::insert`], [`EndpointSet::remove`]),
//! so a call takes one reference count of it, never a copy. Each endpoint keeps its statistics
//! under its own lock, which a try takes once, at its end; every change of them also writes the
//! [`Endpoint`]'s mirror (usable-from time, latency estimate, tries in flight in atomics), so the
//! picks, which look at every endpoint on every try, take no lock at all.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::time::Instant;

use super::outlier::EndpointStats;
use super::{lock, BalanceConfig};
use crate::breaker::{Breaker, BreakerConfig, State as BreakerState};
use crate::telemetry::LazyCounter;

/// One endpoint: its key (e.g. a URI), its service, its statistics.
#[derive(Debug)]
pub struct Endpoint<K, S> {
    pub(super) id: u64,
    key: K,
    pub(super) svc: S,
    pub(super) breaker: Option<Breaker>,
    stats: Mutex<EndpointStats>,
    mirror: Mirror,
}

/// What a pick reads, without the endpoint's lock: every pick looks at every endpoint, and every
/// try would otherwise take each lock once more. Written under the lock by every change of
/// `stats` ([`Endpoint::with_stats`]), except `pending`, which is counted here alone.
#[derive(Debug)]
struct Mirror {
    born: Instant,
    /// Nanoseconds after `born` until which the endpoint is not to be picked: 0 when usable,
    /// `u64::MAX` while its health check fails.
    excluded_until: AtomicU64,
    /// `EndpointStats::ewma_ns`, as `f64` bits.
    ewma_ns: AtomicU64,
    /// Tries in flight.
    pending: AtomicUsize,
    /// `EndpointStats::last_failure_share`, as `f64` bits (NaN when it had too few tries).
    last_failure_share: AtomicU64,
    /// The tries an interval needs before its share is judged.
    min_requests: u32,
}

impl Mirror {
    fn new(stats: &EndpointStats, min_requests: u32) -> Self {
        let m = Self {
            born: Instant::now(),
            excluded_until: AtomicU64::new(0),
            ewma_ns: AtomicU64::new(0),
            pending: AtomicUsize::new(0),
            last_failure_share: AtomicU64::new(f64::NAN.to_bits()),
            min_requests,
        };
        m.refresh(stats);
        m
    }

    fn nanos(&self, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.born).as_nanos()).unwrap_or(u64::MAX - 1)
    }

    fn refresh(&self, s: &EndpointStats) {
        let excluded = if !s.healthy {
            u64::MAX
        } else {
            s.ejected_until.map_or(0, |u| self.nanos(u).max(1))
        };
        self.excluded_until.store(excluded, Ordering::Relaxed);
        self.ewma_ns.store(s.ewma_ns.to_bits(), Ordering::Relaxed);
        let share = s.last_failure_share(self.min_requests).unwrap_or(f64::NAN);
        self.last_failure_share
            .store(share.to_bits(), Ordering::Relaxed);
    }

    /// Healthy and not ejected at `now`.
    fn usable(&self, now: Instant) -> bool {
        match self.excluded_until.load(Ordering::Relaxed) {
            0 => true,
            u64::MAX => false,
            until => self.nanos(now) >= until,
        }
    }

    /// The p2c cost: latency estimate times load.
    fn cost(&self) -> f64 {
        #[allow(clippy::cast_precision_loss)]
        let load = (self.pending.load(Ordering::Relaxed) + 1) as f64;
        f64::from_bits(self.ewma_ns.load(Ordering::Relaxed)) * load
    }
}

impl<K, S> Endpoint<K, S> {
    /// The key it was inserted with.
    pub fn key(&self) -> &K {
        &self.key
    }
    /// Its own breaker, if the balancer keeps one per endpoint.
    pub fn breaker(&self) -> Option<&Breaker> {
        self.breaker.as_ref()
    }
    /// A look at its statistics (and the one way to change them).
    pub fn with_stats<T>(&self, f: impl FnOnce(&mut EndpointStats) -> T) -> T {
        let mut s = lock(&self.stats);
        let out = f(&mut s);
        self.mirror.refresh(&s);
        out
    }

    /// Tries in flight.
    pub fn pending(&self) -> usize {
        self.mirror.pending.load(Ordering::Relaxed)
    }

    /// The p2c cost: latency estimate times load.
    pub(super) fn cost(&self) -> f64 {
        self.mirror.cost()
    }

    /// Whether a pick outside panic mode may choose it at `now`: its own breaker (if any) is not
    /// open, and it is healthy and not ejected.
    pub(super) fn pickable(&self, now: Instant) -> bool {
        self.breaker
            .as_ref()
            .is_none_or(|b| b.state() != BreakerState::Open)
            && self.mirror.usable(now)
    }
}

/// The endpoint list as one shared value.
pub(super) type Endpoints<K, S> = Arc<Vec<Arc<Endpoint<K, S>>>>;

#[derive(Debug)]
pub(crate) struct SetInner<K, S> {
    /// Replaced whole on change, so a call takes one reference count, not a copy of the list.
    endpoints: RwLock<Endpoints<K, S>>,
    next_id: AtomicU64,
    pub(super) cfg: BalanceConfig,
    eject_lock: Mutex<()>,
    pub(super) attempts: LazyCounter,
    ejections: LazyCounter,
}

/// The shared, changeable set of endpoints. Clones share it.
#[derive(Debug)]
pub struct EndpointSet<K, S> {
    pub(super) inner: Arc<SetInner<K, S>>,
}

impl<K, S> Clone for EndpointSet<K, S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<K: PartialEq + std::fmt::Display, S> EndpointSet<K, S> {
    /// An empty set using `cfg` for every endpoint.
    pub fn new(cfg: BalanceConfig) -> Self {
        Self {
            inner: Arc::new(SetInner {
                endpoints: RwLock::new(Arc::new(Vec::new())),
                next_id: AtomicU64::new(0),
                attempts: LazyCounter::new("finpay_client_attempts_total", cfg.label),
                ejections: LazyCounter::new("finpay_client_ejections_total", cfg.label),
                cfg,
                eject_lock: Mutex::new(()),
            }),
        }
    }

    /// Adds an endpoint (replacing one with the same key).
    pub fn insert(&self, key: K, svc: S) {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let breaker = self.inner.cfg.endpoint_breaker.as_ref().and_then(|c| {
            let cfg = BreakerConfig {
                events: self.inner.cfg.events.clone(),
                endpoint: Some(key.to_string()),
                seed: c.seed.map(|s| s.wrapping_add(id)),
                ..c.clone()
            };
            Breaker::try_new(cfg).ok()
        });
        // A newcomer starts at the mean latency estimate of the endpoints already here (the
        // default RTT in an empty set). Started at the default, a replica next to warm peers on a
        // fast network would cost more than any of them, lose every p2c comparison, and never get
        // the sample that corrects its estimate: a replica added by a scale-up would stay idle.
        let initial = self.mean_rtt(&key).unwrap_or(self.inner.cfg.default_rtt);
        let stats = EndpointStats::new(initial);
        let ep = Arc::new(Endpoint {
            id,
            key,
            svc,
            breaker,
            mirror: Mirror::new(&stats, self.inner.cfg.outlier.failure_rate_min_requests),
            stats: Mutex::new(stats),
        });
        let mut eps = self.write();
        let mut next: Vec<_> = eps.iter().filter(|e| e.key != ep.key).cloned().collect();
        next.push(ep);
        *eps = Arc::new(next);
    }

    /// The mean latency estimate of the endpoints other than `key`'s; None when there are none.
    fn mean_rtt(&self, key: &K) -> Option<Duration> {
        let eps = self.current();
        let others: Vec<f64> = eps
            .iter()
            .filter(|e| &e.key != key)
            .map(|e| f64::from_bits(e.mirror.ewma_ns.load(Ordering::Relaxed)))
            .filter(|ns| ns.is_finite() && *ns > 0.0)
            .collect();
        if others.is_empty() {
            return None;
        }
        let mean = others.iter().sum::<f64>() / others.len() as f64;
        Some(Duration::from_secs_f64(mean / 1e9))
    }

    /// Removes the endpoint with this key; calls in flight to it finish.
    pub fn remove(&self, key: &K) {
        let mut eps = self.write();
        let next: Vec<_> = eps.iter().filter(|e| &e.key != key).cloned().collect();
        *eps = Arc::new(next);
    }

    /// The endpoints now.
    pub fn snapshot(&self) -> Vec<Arc<Endpoint<K, S>>> {
        self.current().as_ref().clone()
    }

    /// The endpoints now, shared (no copy).
    pub(super) fn current(&self) -> Endpoints<K, S> {
        match self.inner.endpoints.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Number of endpoints.
    pub fn len(&self) -> usize {
        self.snapshot().len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The normal failure probability of the set's endpoints: the lowest failure share any of
    /// them showed over its last full interval with enough tries; `None` before any has one.
    pub fn baseline_failure_rate(&self) -> Option<f64> {
        self.current()
            .iter()
            .map(|e| f64::from_bits(e.mirror.last_failure_share.load(Ordering::Relaxed)))
            .filter(|p| !p.is_nan())
            .min_by(f64::total_cmp)
    }

    /// Endpoints ejected right now.
    pub fn ejected(&self) -> usize {
        let now = Instant::now();
        self.snapshot()
            .iter()
            .filter(|e| lock(&e.stats).is_ejected(now))
            .count()
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Endpoints<K, S>> {
        match self.inner.endpoints.write() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    pub(crate) fn downgrade(&self) -> std::sync::Weak<SetInner<K, S>> {
        Arc::downgrade(&self.inner)
    }

    pub(crate) fn from_inner(inner: Arc<SetInner<K, S>>) -> Self {
        Self { inner }
    }

    /// Ejects `ep` (which asked for it in [`EndpointStats::record`]) unless the cap on ejected
    /// endpoints is reached.
    pub(super) fn eject(&self, ep: &Endpoint<K, S>, now: Instant) {
        let cfg = &self.inner.cfg.outlier;
        let _g = lock(&self.inner.eject_lock);
        let eps = self.current();
        let ejected = eps
            .iter()
            .filter(|e| lock(&e.stats).is_ejected(now))
            .count();
        if ejected >= cfg.max_ejected(eps.len()) {
            return;
        }
        let d = ep.with_stats(|s| s.eject(cfg, now));
        self.inner.ejections.increment(1);
        let label = self.inner.cfg.label;
        self.inner
            .cfg
            .events
            .emit(|e| e.on_ejection(label, &ep.key.to_string(), d));
        tracing::warn!(
            dependency = self.inner.cfg.label,
            endpoint = ep.id,
            ejection_ms = d.as_millis() as u64,
            "endpoint ejected"
        );
    }
}

/// A try in flight on an endpoint, counted in its `pending` until the try ends or is cancelled
/// (its future dropped: a hedge lost, a timeout).
pub(super) struct Pending<K, S> {
    pub(super) ep: Arc<Endpoint<K, S>>,
}

impl<K, S> Pending<K, S> {
    pub(super) fn new(ep: Arc<Endpoint<K, S>>) -> Self {
        ep.mirror.pending.fetch_add(1, Ordering::Relaxed);
        Self { ep }
    }
}

impl<K, S> Drop for Pending<K, S> {
    fn drop(&mut self) {
        self.ep.mirror.pending.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rtt_ms(set: &EndpointSet<&'static str, ()>, key: &str) -> f64 {
        let ep = set.snapshot().into_iter().find(|e| *e.key() == key);
        ep.expect("inserted").with_stats(|s| s.ewma_ns) / 1e6
    }

    #[tokio::test]
    async fn a_new_endpoint_starts_at_the_mean_estimate_of_its_peers_not_the_default() {
        let set = EndpointSet::new(BalanceConfig {
            default_rtt: Duration::from_millis(20),
            ..BalanceConfig::default()
        });
        set.insert("a", ());
        assert_eq!(
            rtt_ms(&set, "a"),
            20.0,
            "an empty set starts at the default"
        );
        for (key, ms) in [("a", 1.0), ("b", 3.0)] {
            if key != "a" {
                set.insert(key, ());
            }
            let ep = set.snapshot().into_iter().find(|e| *e.key() == key);
            ep.expect("inserted").with_stats(|s| s.ewma_ns = ms * 1e6);
        }
        set.insert("c", ());
        assert!(
            (rtt_ms(&set, "c") - 2.0).abs() < 1e-9,
            "the mean of 1 and 3 ms"
        );
    }
}
