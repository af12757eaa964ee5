//! Passive outlier ejection and per-endpoint statistics (peak-EWMA latency, load, health).
//!
//! Ejection follows Envoy's outlier detection: an endpoint is ejected after `consecutive_failures`
//! failures in a row, or when its failure share over `interval` reaches `failure_rate_threshold` with
//! at least `failure_rate_min_requests` tries. The n-th ejection lasts `n * base_ejection` (capped), so
//! a flapping endpoint stays out longer each time; an interval without trouble lowers n again. At most
//! `max_ejected_percent` of endpoints (but at least one) are ejected at once: ejecting everything would
//! turn a partial outage into a full one.

use std::time::Duration;

use tokio::time::Instant;

/// Outlier ejection settings.
#[derive(Debug, Clone)]
pub struct OutlierConfig {
    /// Failures in a row that eject (0 = off).
    pub consecutive_failures: u32,
    /// Failure share over `interval` that ejects (>= 1.0 = off).
    pub failure_rate_threshold: f64,
    /// Tries needed in the interval before the share is judged.
    pub failure_rate_min_requests: u32,
    /// Window of the share check.
    pub interval: Duration,
    /// First ejection length.
    pub base_ejection: Duration,
    /// Longest ejection.
    pub max_ejection: Duration,
    /// Share of endpoints that may be ejected at once (percent; at least one when > 0).
    pub max_ejected_percent: u32,
}

impl Default for OutlierConfig {
    fn default() -> Self {
        Self {
            consecutive_failures: 10,
            failure_rate_threshold: 0.85,
            failure_rate_min_requests: 50,
            interval: Duration::from_secs(10),
            base_ejection: Duration::from_secs(5),
            max_ejection: Duration::from_secs(300),
            max_ejected_percent: 34,
        }
    }
}

impl OutlierConfig {
    /// How many of `n` endpoints may be ejected at once.
    pub fn max_ejected(&self, n: usize) -> usize {
        if self.max_ejected_percent == 0 || n == 0 {
            return 0;
        }
        (n * self.max_ejected_percent as usize / 100).max(1)
    }
}

/// Per-endpoint state; guarded by the endpoint's mutex.
#[derive(Debug)]
pub struct EndpointStats {
    /// Peak-EWMA latency estimate, nanoseconds.
    pub ewma_ns: f64,
    /// When `ewma_ns` was last updated.
    pub ewma_at: Instant,
    /// Failures in a row.
    pub consecutive_failures: u32,
    /// Tries in the current interval.
    pub interval_calls: u32,
    /// Failures in the current interval.
    pub interval_failures: u32,
    /// Start of the current interval.
    pub interval_start: Instant,
    /// Ejected until then.
    pub ejected_until: Option<Instant>,
    /// Ejection multiplier.
    pub ejections: u32,
    /// Active health check verdict.
    pub healthy: bool,
    /// Health probe streaks.
    pub probe_failures: u32,
    /// Health probe streaks.
    pub probe_successes: u32,
}

impl EndpointStats {
    /// Fresh stats assuming `default_rtt`.
    pub fn new(default_rtt: Duration) -> Self {
        let now = Instant::now();
        Self {
            ewma_ns: default_rtt.as_secs_f64() * 1e9,
            ewma_at: now,
            consecutive_failures: 0,
            interval_calls: 0,
            interval_failures: 0,
            interval_start: now,
            ejected_until: None,
            ejections: 0,
            healthy: true,
            probe_failures: 0,
            probe_successes: 0,
        }
    }

    /// Whether ejected at `now`.
    pub fn is_ejected(&self, now: Instant) -> bool {
        self.ejected_until.is_some_and(|u| now < u)
    }

    /// Peak-EWMA update: a sample above the estimate replaces it at once (so a slowing endpoint is
    /// avoided immediately); below, the estimate decays toward it with time constant `decay`.
    pub fn observe_rtt(&mut self, rtt: Duration, decay: Duration, now: Instant) {
        let sample = rtt.as_secs_f64() * 1e9;
        if sample > self.ewma_ns {
            self.ewma_ns = sample;
        } else {
            let elapsed = now.duration_since(self.ewma_at).as_secs_f64();
            let w = (-elapsed / decay.as_secs_f64().max(1e-9)).exp();
            self.ewma_ns = self.ewma_ns * w + sample * (1.0 - w);
        }
        self.ewma_at = now;
    }

    /// Records one outcome; returns whether this endpoint should now be ejected.
    pub fn record(&mut self, failed: bool, cfg: &OutlierConfig, now: Instant) -> bool {
        if now.duration_since(self.interval_start) >= cfg.interval {
            let quiet = !self.is_ejected(now) && self.interval_failures * 2 <= self.interval_calls;
            if quiet {
                self.ejections = self.ejections.saturating_sub(1);
            }
            self.interval_start = now;
            self.interval_calls = 0;
            self.interval_failures = 0;
        }
        self.interval_calls += 1;
        if failed {
            self.interval_failures += 1;
            self.consecutive_failures += 1;
        } else {
            self.consecutive_failures = 0;
        }
        if self.is_ejected(now) {
            return false;
        }
        let by_streak =
            cfg.consecutive_failures > 0 && self.consecutive_failures >= cfg.consecutive_failures;
        #[allow(clippy::cast_precision_loss)]
        let by_rate = self.interval_calls >= cfg.failure_rate_min_requests
            && f64::from(self.interval_failures) / f64::from(self.interval_calls)
                >= cfg.failure_rate_threshold;
        by_streak || by_rate
    }

    /// Ejects for `n * base` (capped), n growing with each ejection.
    pub fn eject(&mut self, cfg: &OutlierConfig, now: Instant) -> Duration {
        self.ejections = self.ejections.saturating_add(1);
        let d = cfg
            .base_ejection
            .saturating_mul(self.ejections)
            .min(cfg.max_ejection);
        self.ejected_until = Some(now + d);
        self.consecutive_failures = 0;
        self.interval_calls = 0;
        self.interval_failures = 0;
        self.interval_start = now;
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn consecutive_failures_eject_and_each_ejection_lasts_longer() {
        let cfg = OutlierConfig {
            consecutive_failures: 3,
            ..OutlierConfig::default()
        };
        let mut s = EndpointStats::new(Duration::from_millis(10));
        let now = Instant::now();
        assert!(!s.record(true, &cfg, now));
        assert!(!s.record(true, &cfg, now));
        assert!(s.record(true, &cfg, now));
        assert_eq!(s.eject(&cfg, now), Duration::from_secs(5));
        assert!(s.is_ejected(now));
        let later = now + Duration::from_secs(6);
        assert!(!s.is_ejected(later));
        for _ in 0..2 {
            s.record(true, &cfg, later);
        }
        assert!(s.record(true, &cfg, later));
        assert_eq!(s.eject(&cfg, later), Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn failure_share_ejects_only_with_enough_requests() {
        let cfg = OutlierConfig {
            consecutive_failures: 0,
            failure_rate_min_requests: 10,
            ..OutlierConfig::default()
        };
        let mut s = EndpointStats::new(Duration::from_millis(10));
        let now = Instant::now();
        let mut ejected = false;
        for i in 0..10 {
            ejected = s.record(i % 10 != 0, &cfg, now);
        }
        assert!(ejected, "9 of 10 failed");
        let mut s = EndpointStats::new(Duration::from_millis(10));
        for i in 0..100 {
            assert!(!s.record(i % 10 < 3, &cfg, now), "30% must not eject");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn peak_ewma_jumps_up_and_decays_down() {
        let mut s = EndpointStats::new(Duration::from_millis(10));
        let now = Instant::now();
        s.observe_rtt(Duration::from_millis(100), Duration::from_secs(10), now);
        assert!((s.ewma_ns - 100e6).abs() < 1.0);
        s.observe_rtt(
            Duration::from_millis(1),
            Duration::from_secs(10),
            now + Duration::from_secs(10),
        );
        assert!(s.ewma_ns < 50e6);
    }

    #[test]
    fn at_least_one_endpoint_may_be_ejected_when_percent_is_positive() {
        let cfg = OutlierConfig::default();
        assert_eq!(cfg.max_ejected(3), 1);
        assert_eq!(cfg.max_ejected(10), 3);
        assert_eq!(
            OutlierConfig {
                max_ejected_percent: 0,
                ..cfg
            }
            .max_ejected(10),
            0
        );
    }
}
