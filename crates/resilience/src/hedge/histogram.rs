//! A rolling latency histogram: the current period plus the previous one, so a percentile always
//! rests on a full period of data and still forgets old behaviour.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::time::Instant;

#[derive(Debug)]
struct Periods {
    current: Histogram<u64>,
    previous: Histogram<u64>,
    rotated_at: Instant,
    /// Scratch space for `previous + current`, reused so a computation allocates nothing.
    merged: Histogram<u64>,
    /// When the cached percentile was last computed.
    computed_at: Instant,
    /// A period rotated since: the cached percentile is computed again at the next chance.
    rotated_since: bool,
}

/// The last computed percentile, read on every call without the lock.
#[derive(Debug)]
struct Cached {
    /// Microseconds; `NONE` while there are too few samples.
    us: AtomicU64,
    /// Records since it was computed; `RECOMPUTE_EVERY` or more asks for a new computation.
    since: AtomicU32,
}

/// Shared rolling histogram of latencies in microseconds (1 µs to 60 s, 2 significant digits).
#[derive(Debug, Clone)]
pub struct RollingHistogram {
    periods: Arc<Mutex<Periods>>,
    cached: Arc<Cached>,
    period: Duration,
    quantile: f64,
    min_samples: u64,
}

const RECOMPUTE_EVERY: u32 = 64;
/// At high rates 64 records pass in about a millisecond; merging two histograms (a few thousand
/// buckets) that often would cost more than the rest of the call. The percentile is recomputed at
/// most this often unless a period rotated or there was no percentile yet.
const RECOMPUTE_INTERVAL: Duration = Duration::from_millis(50);
const NONE: u64 = u64::MAX;

impl RollingHistogram {
    /// `quantile` in `(0, 1)`; the percentile is recomputed every 64 records (at most every 50 ms)
    /// or on rotation.
    pub fn new(period: Duration, quantile: f64, min_samples: u64) -> Result<Self, &'static str> {
        let mk =
            || Histogram::<u64>::new_with_bounds(1, 60_000_000, 2).map_err(|_| "histogram bounds");
        Ok(Self {
            periods: Arc::new(Mutex::new(Periods {
                current: mk()?,
                previous: mk()?,
                rotated_at: Instant::now(),
                merged: mk()?,
                computed_at: Instant::now(),
                rotated_since: false,
            })),
            cached: Arc::new(Cached {
                us: AtomicU64::new(NONE),
                since: AtomicU32::new(RECOMPUTE_EVERY),
            }),
            period,
            quantile,
            min_samples,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Periods> {
        match self.periods.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Starts a new period when the current one is over; returns whether it did.
    fn rotate(&self, g: &mut Periods, now: Instant) -> bool {
        if now.saturating_duration_since(g.rotated_at) < self.period {
            return false;
        }
        std::mem::swap(&mut g.current, &mut g.previous);
        g.current.reset();
        g.rotated_at = now;
        g.rotated_since = true;
        true
    }

    /// Records one latency.
    pub fn record(&self, d: Duration) {
        self.record_at(d, Instant::now());
    }

    /// Records one latency that ended at `now` (a caller that measured it has the time already).
    pub fn record_at(&self, d: Duration, now: Instant) {
        let mut g = self.lock();
        let rotated = self.rotate(&mut g, now);
        g.current
            .saturating_record(u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1));
        drop(g);
        if rotated {
            self.cached.since.store(RECOMPUTE_EVERY, Ordering::Relaxed);
        } else {
            self.cached.since.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The percentile over the previous and current periods, or `None` with too few samples.
    /// Between recomputations it is one atomic load.
    pub fn percentile(&self) -> Option<Duration> {
        let c = &*self.cached;
        if c.since.load(Ordering::Relaxed) >= RECOMPUTE_EVERY {
            let mut g = self.lock();
            let now = Instant::now();
            self.rotate(&mut g, now);
            let none_yet = c.us.load(Ordering::Relaxed) == NONE;
            let due = now.saturating_duration_since(g.computed_at) >= RECOMPUTE_INTERVAL;
            if g.rotated_since || none_yet || due {
                if let Some(us) = self.compute(&mut g) {
                    c.us.store(us, Ordering::Relaxed);
                }
                g.computed_at = now;
                g.rotated_since = false;
            }
            c.since.store(0, Ordering::Relaxed);
        }
        let us = c.us.load(Ordering::Relaxed);
        (us != NONE).then(|| Duration::from_micros(us))
    }

    /// The percentile in microseconds (`NONE` with too few samples), or `None` when the periods
    /// cannot be merged (the last value then stays).
    fn compute(&self, g: &mut Periods) -> Option<u64> {
        if g.current.len() + g.previous.len() < self.min_samples {
            return Some(NONE);
        }
        let Periods {
            current,
            previous,
            merged,
            ..
        } = g;
        merged.reset();
        merged.add(&*previous).ok()?;
        merged.add(&*current).ok()?;
        Some(merged.value_at_quantile(self.quantile).min(NONE - 1))
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

    #[tokio::test(start_paused = true)]
    async fn recomputation_waits_out_the_interval_but_not_a_rotation() {
        let h = RollingHistogram::new(Duration::from_secs(10), 0.5, 10).unwrap();
        for _ in 0..100 {
            h.record(Duration::from_millis(1));
        }
        assert!(h.percentile().unwrap() <= Duration::from_millis(2));
        for _ in 0..1_000 {
            h.record(Duration::from_millis(100));
        }
        assert!(
            h.percentile().unwrap() <= Duration::from_millis(2),
            "kept within the interval"
        );
        tokio::time::advance(RECOMPUTE_INTERVAL).await;
        for _ in 0..RECOMPUTE_EVERY {
            h.record(Duration::from_millis(100));
        }
        assert!(h.percentile().unwrap() >= Duration::from_millis(99));
        tokio::time::advance(Duration::from_secs(10)).await;
        for _ in 0..100 {
            h.record(Duration::from_millis(5));
        }
        let p = h.percentile().unwrap();
        assert!(
            p >= Duration::from_millis(99),
            "the previous period still counts: {p:?}"
        );
    }
}
