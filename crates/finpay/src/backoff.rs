//! Restart backoff for supervised replicas, shaped like Kubernetes' CrashLoopBackOff but scaled to
//! seconds: the first restart waits 100 ms, each further one doubles, capped at 5 s, and a replica
//! that has stayed up for 10 s is forgiven (the next crash starts again at 100 ms).
//!
//! Why a schedule and not "restart at once": a replica that crashes on start (bad config, port taken)
//! would otherwise spin a CPU core forking. Why a reset: a replica that crashed once an hour ago should
//! not pay for it now. The schedule is pure (no clock inside) so it is tested without sleeping.

use std::time::Duration;

/// The knobs of the schedule. Kubernetes: 10 s doubling to 300 s, reset after 10 min; here 100 ms
/// doubling to 5 s, reset after 10 s (the cap and the reset both scaled by 1/60).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffPolicy {
    pub initial: Duration,
    pub max: Duration,
    pub reset_after: Duration,
}

impl Default for BackoffPolicy {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(5),
            reset_after: Duration::from_secs(10),
        }
    }
}

/// Where a replica is in its schedule.
#[derive(Debug, Clone)]
pub struct RestartBackoff {
    policy: BackoffPolicy,
    /// Consecutive restarts without a healthy run of `reset_after`.
    streak: u32,
}

impl RestartBackoff {
    pub fn new(policy: BackoffPolicy) -> Self {
        assert!(policy.initial > Duration::ZERO, "backoff must wait");
        assert!(policy.max >= policy.initial, "backoff cap below its start");
        Self { policy, streak: 0 }
    }

    /// The delay before the next restart of a replica that ran for `ran_for` before it exited. Also
    /// advances the schedule.
    pub fn next_delay(&mut self, ran_for: Duration) -> Duration {
        if ran_for >= self.policy.reset_after {
            self.streak = 0;
        }
        // 2^streak, computed with saturation so a long crash loop cannot overflow.
        let factor = 1u32.checked_shl(self.streak.min(31)).unwrap_or(u32::MAX);
        let delay = self
            .policy
            .initial
            .checked_mul(factor)
            .unwrap_or(self.policy.max)
            .min(self.policy.max);
        self.streak = self.streak.saturating_add(1);
        delay
    }

    /// Consecutive restarts counted against the current streak.
    pub fn streak(&self) -> u32 {
        self.streak
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn delays_double_from_100ms_and_cap_at_5s() {
        let mut b = RestartBackoff::new(BackoffPolicy::default());
        let got: Vec<Duration> = (0..10).map(|_| b.next_delay(ms(10))).collect();
        let want: Vec<Duration> = [100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000, 5000]
            .into_iter()
            .map(ms)
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn a_healthy_run_of_10s_resets_the_schedule() {
        let mut b = RestartBackoff::new(BackoffPolicy::default());
        for _ in 0..5 {
            b.next_delay(ms(10));
        }
        assert_eq!(b.next_delay(ms(9_999)), ms(3200));
        assert_eq!(b.next_delay(Duration::from_secs(10)), ms(100));
        assert_eq!(b.next_delay(ms(1)), ms(200));
    }

    #[test]
    fn a_very_long_crash_loop_never_overflows() {
        let mut b = RestartBackoff::new(BackoffPolicy::default());
        for _ in 0..10_000 {
            assert!(b.next_delay(Duration::ZERO) <= Duration::from_secs(5));
        }
        assert_eq!(b.streak(), 10_000);
    }
}
