//! A rolling latency histogram: the current period plus the previous one, so a percentile always
//! rests on a full period of data and still forgets old behaviour.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::time::Instant;

#[derive(Debug)]
struct Inner {
    current: Histogram<u64>,
    previous: Histogram<u64>,
    rotated_at: Instant,
    since_compute: u32,
    cached: Option<Duration>,
}

/// Shared rolling histogram of latencies in microseconds (1 µs to 60 s, 2 significant digits).
#[derive(Debug, Clone)]
pub struct RollingHistogram {
    inner: Arc<Mutex<Inner>>,
    /// The last computed percentile in microseconds (`u64::MAX` = none yet), and the records
    /// since: read on every call without the lock, recomputed under it every 64 records.
    fast: Arc<(AtomicU64, AtomicU32)>,
    period: Duration,
    quantile: f64,
    min_samples: u64,
}

const RECOMPUTE_EVERY: u32 = 64;

impl RollingHistogram {
    /// `quantile` in `(0, 1)`; the percentile is recomputed every 64 records or on rotation.
    pub fn new(period: Duration, quantile: f64, min_samples: u64) -> Result<Self, &'static str> {
        let mk =
            || Histogram::<u64>::new_with_bounds(1, 60_000_000, 2).map_err(|_| "histogram bounds");
        Ok(Self {
            inner: Arc::new(Mutex::new(Inner {
                current: mk()?,
                previous: mk()?,
                rotated_at: Instant::now(),
                since_compute: 0,
                cached: None,
            })),
            fast: Arc::new((AtomicU64::new(u64::MAX), AtomicU32::new(RECOMPUTE_EVERY))),
            period,
            quantile,
            min_samples,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        match self.inner.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    fn rotate(&self, g: &mut Inner) {
        if g.rotated_at.elapsed() >= self.period {
            std::mem::swap(&mut g.current, &mut g.previous);
            g.current.reset();
            g.rotated_at = Instant::now();
            g.since_compute = RECOMPUTE_EVERY;
        }
    }

    /// Records one latency.
    pub fn record(&self, d: Duration) {
        let mut g = self.lock();
        self.rotate(&mut g);
        g.current
            .saturating_record(u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1));
        g.since_compute = g.since_compute.saturating_add(1);
        let rotated = g.since_compute >= RECOMPUTE_EVERY;
        drop(g);
        let since = &self.fast.1;
        if rotated {
            since.store(RECOMPUTE_EVERY, Ordering::Relaxed);
        } else {
            since.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The percentile over the previous and current periods, or `None` with too few samples.
    /// Between recomputations it is one atomic load.
    pub fn percentile(&self) -> Option<Duration> {
        let (cached, since) = &*self.fast;
        if since.load(Ordering::Relaxed) < RECOMPUTE_EVERY {
            let us = cached.load(Ordering::Relaxed);
            return (us != u64::MAX).then(|| Duration::from_micros(us));
        }
        let p = self.compute();
        cached.store(
            p.map_or(u64::MAX, |d| {
                u64::try_from(d.as_micros()).unwrap_or(u64::MAX - 1)
            }),
            Ordering::Relaxed,
        );
        since.store(0, Ordering::Relaxed);
        p
    }

    fn compute(&self) -> Option<Duration> {
        let mut g = self.lock();
        self.rotate(&mut g);
        if g.since_compute >= RECOMPUTE_EVERY || g.cached.is_none() {
            g.since_compute = 0;
            let n = g.current.len() + g.previous.len();
            g.cached = if n < self.min_samples {
                None
            } else {
                let mut merged = g.previous.clone();
                if merged.add(&g.current).is_err() {
                    return g.cached;
                }
                Some(Duration::from_micros(
                    merged.value_at_quantile(self.quantile),
                ))
            };
        }
        g.cached
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn percentile_needs_min_samples_then_follows_the_data() {
        let h = RollingHistogram::new(Duration::from_secs(10), 0.9, 100).unwrap();
        for _ in 0..50 {
            h.record(Duration::from_millis(2));
        }
        assert_eq!(h.percentile(), None);
        for i in 0..100u64 {
            h.record(Duration::from_millis(if i < 90 { 2 } else { 50 }));
        }
        let p = h.percentile().unwrap();
        assert!(
            p >= Duration::from_millis(1) && p <= Duration::from_millis(3),
            "{p:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn old_periods_are_forgotten() {
        let h = RollingHistogram::new(Duration::from_secs(1), 0.5, 10).unwrap();
        for _ in 0..100 {
            h.record(Duration::from_millis(100));
        }
        tokio::time::advance(Duration::from_secs(1)).await;
        for _ in 0..100 {
            h.record(Duration::from_millis(1));
        }
        tokio::time::advance(Duration::from_secs(1)).await;
        for _ in 0..100 {
            h.record(Duration::from_millis(1));
        }
        let p = h.percentile().unwrap();
        assert!(p <= Duration::from_millis(2), "{p:?}");
    }
}
