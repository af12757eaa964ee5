//! Adaptive concurrency limits that read latency, not only failures: Vegas and Gradient2, as in
//! Netflix's `concurrency-limits` (the library tower-resilience's Vegas follows too).
//!
//! AIMD ([`super::Aimd`]) moves the limit on a fixed latency target: it cannot tell a dependency
//! that got slower for everyone from one that is queueing our own calls. Both algorithms here
//! compare each call's latency with the latency the dependency shows when it is not queueing:
//!
//! - **Vegas** (TCP Vegas): `queue = limit x (1 - rtt_min / rtt)` estimates how many of our calls
//!   wait in the dependency's queue. Below `alpha = 3 log10(limit)` the limit grows by
//!   `log10(limit)`, above `beta = 6 log10(limit)` it shrinks by as much, and at or below
//!   `log10(limit)` (no queue at all) it grows by `beta`. A failure shrinks it. `rtt_min` is
//!   forgotten now and then (every `probe` samples), so that a dependency that got slower for good
//!   is not read as queueing forever.
//! - **Gradient2**: `gradient = clamp(tolerance x long / short, 0.5, 1)`, where `short` is this
//!   call's latency and `long` an exponential average over ~`long_window` calls; the new limit is
//!   `limit x gradient + queue` (queue = sqrt(limit)), smoothed by `smoothing`. It grows only
//!   while at least half the limit is in use (an idle client learns nothing about the limit), and
//!   when `long` runs more than twice `short` (the dependency got faster) `long` decays, so the
//!   limit recovers.
//!
//! Both keep a little state under a lock, taken once per call's end; a client without an
//! adaptive limit never reaches it.

use std::time::Duration;

/// Vegas parameters.
#[derive(Debug, Clone, Copy)]
pub struct Vegas {
    /// Samples between two resets of the no-queue latency (`rtt_min`), times the limit.
    pub probe_multiplier: u32,
}

impl Default for Vegas {
    fn default() -> Self {
        Self {
            probe_multiplier: 30,
        }
    }
}

/// Gradient2 parameters.
#[derive(Debug, Clone, Copy)]
pub struct Gradient2 {
    /// How much slower than the long-run latency a call may be before the limit shrinks.
    pub tolerance: f64,
    /// The long-run latency averages over about this many calls.
    pub long_window: u32,
    /// Share of each new estimate taken into the limit (0..=1).
    pub smoothing: f64,
}

impl Default for Gradient2 {
    fn default() -> Self {
        Self {
            tolerance: 1.5,
            long_window: 600,
            smoothing: 0.2,
        }
    }
}

/// What an adaptive algorithm remembers between calls.
#[derive(Debug, Default)]
pub(super) struct State {
    /// Vegas: the lowest latency since the last probe, seconds; 0 = none yet.
    rtt_min: f64,
    /// Vegas: samples since the last probe.
    samples: u64,
    /// Gradient2: the long-run average latency, seconds; 0 = none yet.
    long: f64,
}

fn log10(limit: f64) -> f64 {
    limit.max(1.0).log10().max(1.0)
}

impl Vegas {
    /// The limit after a call of latency `rtt` (or a failure) at limit `limit`.
    pub(super) fn next(&self, s: &mut State, limit: f64, rtt: Duration, failed: bool) -> f64 {
        let rtt = rtt.as_secs_f64().max(1e-9);
        s.samples += 1;
        let probe = f64::from(self.probe_multiplier.max(1)) * limit;
        #[allow(clippy::cast_precision_loss)]
        if s.rtt_min == 0.0 || (s.samples as f64) >= probe {
            s.rtt_min = rtt;
            s.samples = 0;
        }
        s.rtt_min = s.rtt_min.min(rtt);
        let l = log10(limit);
        if failed {
            return limit - l;
        }
        let queue = limit * (1.0 - s.rtt_min / rtt);
        let (alpha, beta) = (3.0 * l, 6.0 * l);
        if queue <= l {
            limit + beta
        } else if queue < alpha {
            limit + l
        } else if queue > beta {
            limit - l
        } else {
            limit
        }
    }
}

impl Gradient2 {
    /// The limit after a call of latency `rtt` (or a failure) at limit `limit`, with `in_flight`
    /// calls (this one included).
    pub(super) fn next(
        &self,
        s: &mut State,
        limit: f64,
        rtt: Duration,
        failed: bool,
        in_flight: usize,
    ) -> f64 {
        let short = rtt.as_secs_f64().max(1e-9);
        let w = 2.0 / (f64::from(self.long_window.max(1)) + 1.0);
        s.long = if s.long == 0.0 {
            short
        } else {
            s.long * (1.0 - w) + short * w
        };
        if s.long > 2.0 * short {
            s.long *= 0.95;
        }
        #[allow(clippy::cast_precision_loss)]
        let app_limited = (in_flight as f64) < limit / 2.0;
        let gradient = if failed {
            0.5
        } else {
            (self.tolerance * s.long / short).clamp(0.5, 1.0)
        };
        let estimate = limit * gradient + limit.sqrt();
        let next = limit * (1.0 - self.smoothing) + estimate * self.smoothing;
        if app_limited && next > limit {
            return limit;
        }
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn vegas_grows_without_a_queue_and_shrinks_when_latency_shows_one() {
        let v = Vegas::default();
        let mut s = State::default();
        let mut limit = 20.0;
        for _ in 0..50 {
            limit = v.next(&mut s, limit, ms(10), false);
        }
        assert!(limit > 100.0, "no queue: grows fast ({limit})");
        let top = limit;
        for _ in 0..50 {
            limit = v.next(&mut s, limit, ms(30), false);
        }
        assert!(
            limit < top,
            "3x the no-queue latency: shrinks ({top} -> {limit})"
        );
        let before = limit;
        assert!(
            v.next(&mut s, limit, ms(10), true) < before,
            "a failure shrinks it"
        );
    }

    #[test]
    fn vegas_forgets_its_minimum_so_a_slower_dependency_is_not_read_as_a_queue() {
        let v = Vegas {
            probe_multiplier: 1,
        };
        let mut s = State::default();
        let mut limit = 20.0;
        limit = v.next(&mut s, limit, ms(10), false);
        for _ in 0..200 {
            limit = v.next(&mut s, limit, ms(40), false);
        }
        assert!(s.rtt_min >= 0.039, "the old 10 ms minimum was forgotten");
        assert!(limit >= 20.0, "{limit}");
    }

    #[test]
    fn gradient2_holds_on_steady_latency_and_shrinks_when_it_triples() {
        let g = Gradient2::default();
        let mut s = State::default();
        let mut limit = 50.0;
        for _ in 0..100 {
            limit = g.next(&mut s, limit, ms(10), false, 50);
        }
        assert!(
            limit > 50.0,
            "steady and busy: grows by the queue allowance ({limit})"
        );
        let top = limit;
        for _ in 0..30 {
            limit = g.next(&mut s, limit, ms(30), false, 50);
        }
        assert!(
            limit < top * 0.6,
            "3x slower: the gradient floors at 0.5 ({top} -> {limit})"
        );
    }

    #[test]
    fn gradient2_does_not_grow_while_the_client_uses_under_half_of_it() {
        let g = Gradient2::default();
        let mut s = State::default();
        let mut limit = 100.0;
        for _ in 0..100 {
            limit = g.next(&mut s, limit, ms(10), false, 10);
        }
        assert!((limit - 100.0).abs() < 1e-9, "{limit}");
        assert!(
            g.next(&mut s, limit, ms(10), true, 10) < limit,
            "a failure still shrinks it"
        );
    }
}
