//! Passive outlier ejection and per-endpoint statistics (peak-EWMA latency, load, health).
//!
//! Two rules eject an endpoint, each judged on its own tries:
//!
//! - **A streak of failures, sized to the rate and to the normal failure probability.** A fixed
//!   streak (Envoy's `consecutive_5xx`) is wrong at high rates: a healthy replica failing
//!   independently with p = 0.3 shows a run of 10 failures once per 1 / ((1 - p) p^10) = 240,000
//!   tries, every ~15 s at 17,000 tries/s. A run of k failures starts on a given try with
//!   probability (1 - p) p^k, so at r tries per second a healthy endpoint shows
//!   r x 3600 x (1 - p) x p^k such runs an hour. The streak that ejects is the smallest
//!   k >= `consecutive_failures` that keeps this below `false_ejections_per_hour`
//!   ([`OutlierConfig::streak_threshold`]): 27 at p = 0.3 and 50,000 tries/s (9.6e-7 such runs
//!   an hour), 22 at 100 tries/s, 47 at p = 0.5. p is the *baseline*: the lowest failure share
//!   any endpoint of the set showed over its last full interval (the best replica is what normal
//!   looks like; an endpoint that is failing does not raise its own bar), or 0.5 before any has
//!   one. r is the endpoint's own rate: the larger of its last interval's and its current one's.
//!   A dead endpoint is ejected after k tries: within 1 s from ~25 tries per second at a
//!   baseline of 0.3 (k = 21), from ~40 before any interval has ended (baseline 0.5, k = 37).
//! - **A failure share** over `interval` reaching `failure_rate_threshold` with at least
//!   `failure_rate_min_requests` tries (Envoy's `failure_percentage`). At p = 0.3, 43 failures in
//!   the first 50 tries of an interval have probability ~3e-16; it catches an endpoint that
//!   fails often but not always.
//!
//! The n-th ejection lasts `n * base_ejection` (capped), so a flapping endpoint stays out longer
//! each time; an interval without trouble lowers n again. At most `max_ejected_percent` of
//! endpoints (but at least one) are ejected at once: ejecting everything would turn a partial
//! outage into a full one.
//!
//! Not Envoy's `success_rate` detector (mean minus `stdev_factor` standard deviations over the
//! hosts): with 3 hosts no host can lie more than 2/sqrt(3) = 1.15 population standard deviations
//! from the mean, so its default factor of 1.9 never ejects anything, and with 2 of 3 hosts dead
//! the healthy one is the outlier.

use std::time::Duration;

use tokio::time::Instant;

/// The failure probability assumed before any endpoint has a full interval of tries.
pub const PRIOR_FAILURE_RATE: f64 = 0.5;
/// The longest streak the derived rule asks for (at a baseline near 1 it would be unbounded).
pub const STREAK_MAX: u32 = 1_000;

/// Outlier ejection settings.
#[derive(Debug, Clone)]
pub struct OutlierConfig {
    /// Failures in a row that eject at least (0 = the streak rule is off).
    pub consecutive_failures: u32,
    /// Lengthen the streak to what the baseline failure rate and the try rate call for (see the
    /// module docs); `false` ejects after exactly `consecutive_failures`.
    pub consecutive_derived: bool,
    /// The derived streak keeps a healthy endpoint's expected ejections per hour below this.
    pub false_ejections_per_hour: f64,
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
            consecutive_derived: true,
            false_ejections_per_hour: 1e-6,
            failure_rate_threshold: 0.85,
            failure_rate_min_requests: 50,
            interval: Duration::from_secs(10),
            base_ejection: Duration::from_secs(5),
            max_ejection: Duration::from_secs(300),
            max_ejected_percent: 67,
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

    /// Failures in a row that eject an endpoint trying `tries_per_second` when the normal
    /// failure probability is `p` (see the module docs): the smallest k >= `consecutive_failures`
    /// with `tries_per_second * 3600 * (1 - p) * p^k <= false_ejections_per_hour`, at most
    /// [`STREAK_MAX`]; exactly `consecutive_failures` when not derived; 0 when the rule is off.
    pub fn streak_threshold(&self, p: f64, tries_per_second: f64) -> u32 {
        let floor = self.consecutive_failures;
        if floor == 0 || !self.consecutive_derived || p.is_nan() || p <= 0.0 {
            return floor;
        }
        if p >= 1.0 {
            return STREAK_MAX.max(floor);
        }
        let runs_per_hour_start = tries_per_second.max(1.0) * 3600.0 * (1.0 - p);
        let k = (self.false_ejections_per_hour / runs_per_hour_start).ln() / p.ln();
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let k = k.ceil().clamp(0.0, f64::from(STREAK_MAX)) as u32;
        k.max(floor)
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
    /// Tries in the last full interval.
    pub last_interval_calls: u32,
    /// Failures in the last full interval.
    pub last_interval_failures: u32,
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
            last_interval_calls: 0,
            last_interval_failures: 0,
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

    /// The failure share of the last full interval, when it had `min_requests` tries.
    pub fn last_failure_share(&self, min_requests: u32) -> Option<f64> {
        (self.last_interval_calls >= min_requests.max(1))
            .then(|| f64::from(self.last_interval_failures) / f64::from(self.last_interval_calls))
    }

    /// Tries per second: the larger of the last full interval's rate and the current one's so far
    /// (over at least a second, so that its first tries do not read as a burst).
    pub fn tries_per_second(&self, cfg: &OutlierConfig, now: Instant) -> f64 {
        let last = f64::from(self.last_interval_calls) / cfg.interval.as_secs_f64().max(1e-3);
        let so_far = now
            .duration_since(self.interval_start)
            .as_secs_f64()
            .max(1.0);
        last.max(f64::from(self.interval_calls) / so_far)
    }

    /// Records one outcome with no view of the other endpoints (the baseline is then
    /// [`PRIOR_FAILURE_RATE`]); returns whether this endpoint should now be ejected.
    pub fn record(&mut self, failed: bool, cfg: &OutlierConfig, now: Instant) -> bool {
        self.record_against(failed, cfg, now, || None)
    }

    /// Records one outcome; returns whether this endpoint should now be ejected. `baseline` gives
    /// the set's normal failure probability (see the module docs); it is asked only when a
    /// streak reaches `consecutive_failures`, so it may be costly.
    pub fn record_against(
        &mut self,
        failed: bool,
        cfg: &OutlierConfig,
        now: Instant,
        baseline: impl FnOnce() -> Option<f64>,
    ) -> bool {
        if now.duration_since(self.interval_start) >= cfg.interval {
            let quiet = !self.is_ejected(now) && self.interval_failures * 2 <= self.interval_calls;
            if quiet {
                self.ejections = self.ejections.saturating_sub(1);
            }
            self.last_interval_calls = self.interval_calls;
            self.last_interval_failures = self.interval_failures;
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
        let by_streak = cfg.consecutive_failures > 0
            && self.consecutive_failures >= cfg.consecutive_failures
            && {
                let p = baseline().unwrap_or(PRIOR_FAILURE_RATE);
                let k = cfg.streak_threshold(p, self.tries_per_second(cfg, now));
                self.consecutive_failures >= k
            };
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
            consecutive_derived: false,
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

    #[test]
    fn the_streak_is_the_shortest_whose_false_ejections_per_hour_stay_below_the_target() {
        let cfg = OutlierConfig::default();
        let per_hour = |p: f64, rate: f64, k: u32| rate * 3600.0 * (1.0 - p) * p.powi(k as i32);
        for (p, rate, want) in [
            (0.3, 50_000.0, 27),
            (0.3, 100.0, 22),
            (0.5, 50_000.0, 47),
            (0.1, 50_000.0, 15),
        ] {
            let k = cfg.streak_threshold(p, rate);
            assert_eq!(k, want, "p {p} at {rate}/s");
            assert!(per_hour(p, rate, k) <= 1e-6);
            assert!(per_hour(p, rate, k - 1) > 1e-6, "the shortest such streak");
        }
        assert_eq!(
            cfg.streak_threshold(0.0, 50_000.0),
            10,
            "never below the floor"
        );
        assert_eq!(cfg.streak_threshold(1.0, 50_000.0), STREAK_MAX);
        let fixed = OutlierConfig {
            consecutive_derived: false,
            ..OutlierConfig::default()
        };
        assert_eq!(fixed.streak_threshold(0.3, 50_000.0), 10);
    }

    /// Feeds 3 endpoints `seconds` of tries at `rate` per second each (time taken from the try
    /// number, not the clock), endpoint `i` failing with probability `p[i]`, judged against the
    /// lowest last-interval share as the balancer does; returns when each was first ejected.
    fn run_three(
        cfg: &OutlierConfig,
        stats: &mut [EndpointStats; 3],
        p: [f64; 3],
        rate: f64,
        from: Instant,
        seconds: f64,
        rng: &mut rand::rngs::SmallRng,
    ) -> [Option<Instant>; 3] {
        use rand::Rng;
        let mut first = [None; 3];
        let step = Duration::from_secs_f64(1.0 / rate);
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let n = (rate * seconds) as u64;
        for t in 0..n {
            let now = from + step * u32::try_from(t).unwrap();
            let base = stats
                .iter()
                .filter_map(|s| s.last_failure_share(cfg.failure_rate_min_requests))
                .min_by(f64::total_cmp);
            for i in 0..3 {
                if stats[i].is_ejected(now) {
                    continue;
                }
                let failed = rng.gen::<f64>() < p[i];
                if stats[i].record_against(failed, cfg, now, || base) {
                    stats[i].eject(cfg, now);
                    first[i].get_or_insert(now);
                }
            }
        }
        first
    }

    #[tokio::test(start_paused = true)]
    async fn thirty_percent_failures_never_eject_at_fifty_thousand_tries_a_second_but_a_dead_replica_goes_within_a_second(
    ) {
        use rand::SeedableRng;
        let mut rng = rand::rngs::SmallRng::seed_from_u64(7);
        let cfg = OutlierConfig::default();
        let start = Instant::now();
        let new = || EndpointStats::new(Duration::from_millis(1));
        // 30 s at 50,000 tries/s per endpoint: 4.5 million healthy tries. With a fixed streak of
        // 10, a run of 10 comes every 1 / (0.7 x 0.3^10) = 240,000 tries: ~19 here.
        let mut stats = [new(), new(), new()];
        let healthy = run_three(&cfg, &mut stats, [0.3; 3], 50_000.0, start, 30.0, &mut rng);
        assert_eq!(healthy, [None; 3], "no healthy endpoint is ejected");
        let mut fixed = [new(), new(), new()];
        let fixed_cfg = OutlierConfig {
            consecutive_derived: false,
            ..OutlierConfig::default()
        };
        let mut rng_fixed = rand::rngs::SmallRng::seed_from_u64(7);
        let fixed_run = run_three(
            &fixed_cfg,
            &mut fixed,
            [0.3; 3],
            50_000.0,
            start,
            30.0,
            &mut rng_fixed,
        );
        assert!(
            fixed_run.iter().all(Option::is_some),
            "the fixed streak of 10 ejects healthy ones"
        );

        // Then two of them die: both go within a second, at a high and at a low rate, and the
        // healthy one stays.
        for rate in [50_000.0, 100.0] {
            let mut s = [new(), new(), new()];
            run_three(&cfg, &mut s, [0.3; 3], rate, start, 12.0, &mut rng);
            let died = start + Duration::from_secs(12);
            let out = run_three(&cfg, &mut s, [1.0, 1.0, 0.3], rate, died, 2.0, &mut rng);
            for (i, at) in out.iter().take(2).enumerate() {
                let at = at.unwrap_or_else(|| panic!("endpoint {i} not ejected at {rate}/s"));
                assert!(
                    at - died <= Duration::from_secs(1),
                    "{:?} at {rate}/s",
                    at - died
                );
            }
            assert_eq!(out[2], None, "the healthy one stays at {rate}/s");
        }
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
        let cfg = OutlierConfig {
            max_ejected_percent: 34,
            ..OutlierConfig::default()
        };
        assert_eq!(cfg.max_ejected(3), 1);
        assert_eq!(cfg.max_ejected(10), 3);
        assert_eq!(OutlierConfig::default().max_ejected(3), 2, "never all 3");
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
