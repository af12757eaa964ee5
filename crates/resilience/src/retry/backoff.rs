//! Exponential backoff with jitter and a cap.
//!
//! Why jitter at all: when a dependency blips, every caller sees the failure at the same moment. Without
//! jitter they all come back at the same moment too, and the retry wave is what keeps the dependency
//! down. Three shapes are offered (the names follow the AWS architecture blog "Exponential Backoff And
//! Jitter"):
//!
//! - [`Jitter::Full`]: `sleep = random(0, min(cap, base * 2^n))`. Spreads retries the most; the default.
//! - [`Jitter::Equal`]: `sleep = half + random(0, half)` with `half = min(cap, base * 2^n) / 2`. Keeps
//!   a floor, for dependencies that need a minimum rest.
//! - [`Jitter::Decorrelated`]: `sleep = min(cap, random(base, previous * 3))`. Grows from the previous
//!   sleep rather than the attempt number.
//!
//! A `Retry-After` header from the callee wins over the computed value (bounded by `retry_after_max`),
//! because the callee knows better than we do when it will have room again.
//!
//! The random source is a seedable [`rand::rngs::SmallRng`] so tests are deterministic.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// Which jitter to apply to the exponential sleep.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Jitter {
    /// `random(0, exp)`.
    #[default]
    Full,
    /// `exp/2 + random(0, exp/2)`.
    Equal,
    /// `min(cap, random(base, previous * 3))`.
    Decorrelated,
    /// No jitter; for tests and for callers that add their own.
    None,
}

/// Invalid backoff parameters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidBackoff {
    /// The base must be positive.
    #[error("backoff base must be > 0")]
    ZeroBase,
    /// The cap must be at least the base.
    #[error("backoff cap {max:?} is below base {base:?}")]
    CapBelowBase {
        /// The base given.
        base: Duration,
        /// The cap given.
        max: Duration,
    },
}

/// Validated backoff parameters. Cheap to clone; the RNG is shared.
///
/// Usable on its own, outside the retry layer (an outbox dispatcher, a reconnect loop). With
/// attempts counted from 0, the delay before attempt `n + 1`, drawn uniformly from
/// `0..=min(cap, base * 2^n)`, is
///
/// ```
/// # use std::time::Duration;
/// # use finpay_resilience::retry::backoff::{Backoff, Jitter};
/// # let (base, cap, seed, n) = (Duration::from_millis(5), Duration::from_secs(60), Some(7), 3);
/// let backoff = Backoff::try_new(base, cap, Jitter::Full, seed)?;
/// let delay = backoff.delay(n + 1, Duration::ZERO);
/// assert!(delay <= cap.min(base * 2u32.pow(n)));
/// # Ok::<(), finpay_resilience::retry::backoff::InvalidBackoff>(())
/// ```
///
/// that is, `retry` in [`Backoff::delay`] is the number of attempts made so far (1 after the first
/// one), which is how the retry layer calls it. `previous` only matters for
/// [`Jitter::Decorrelated`]; full jitter ignores it. The exponent stops growing at `2^31`, so for
/// `n > 31` the bound is `min(cap, base * 2^31)`: the same as `min(cap, base * 2^n)` whenever
/// `cap <= base * 2^31` (with a 1 ms base, any cap below 24 days). The same `seed` gives the same
/// sequence of delays; clones share one RNG, so their draws interleave in that sequence.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    jitter: Jitter,
    rng: Arc<Mutex<SmallRng>>,
}

impl Backoff {
    /// Checks `0 < base <= max`. `seed` makes the jitter reproducible.
    pub fn try_new(
        base: Duration,
        max: Duration,
        jitter: Jitter,
        seed: Option<u64>,
    ) -> Result<Self, InvalidBackoff> {
        if base.is_zero() {
            return Err(InvalidBackoff::ZeroBase);
        }
        if max < base {
            return Err(InvalidBackoff::CapBelowBase { base, max });
        }
        let rng = match seed {
            Some(s) => SmallRng::seed_from_u64(s),
            None => SmallRng::from_entropy(),
        };
        Ok(Self {
            base,
            max,
            jitter,
            rng: Arc::new(Mutex::new(rng)),
        })
    }

    /// The cap.
    pub fn max(&self) -> Duration {
        self.max
    }

    /// Sleep before retry number `retry` (1 for the first retry, that is after the first attempt;
    /// 0 is taken as 1), from `min(cap, base * 2^(retry - 1))` and the jitter. `previous` is the
    /// last sleep, used by decorrelated jitter. See [`Backoff`] for the call per attempt number.
    pub fn delay(&self, retry: u32, previous: Duration) -> Duration {
        let exp = self.exponential(retry);
        let mut rng = match self.rng.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        let d = match self.jitter {
            Jitter::None => exp,
            Jitter::Full => random_between(&mut rng, Duration::ZERO, exp),
            Jitter::Equal => {
                let half = exp / 2;
                half + random_between(&mut rng, Duration::ZERO, exp - half)
            }
            Jitter::Decorrelated => {
                let prev = previous.max(self.base);
                let hi = prev.saturating_mul(3).min(self.max).max(self.base);
                random_between(&mut rng, self.base, hi)
            }
        };
        d.min(self.max)
    }

    /// `min(max, base * 2^(retry-1))` without overflow.
    fn exponential(&self, retry: u32) -> Duration {
        let shift = retry.saturating_sub(1).min(31);
        self.base.saturating_mul(1u32 << shift).min(self.max)
    }
}

fn random_between(rng: &mut SmallRng, lo: Duration, hi: Duration) -> Duration {
    if hi <= lo {
        return lo;
    }
    let lo_ns = u64::try_from(lo.as_nanos()).unwrap_or(u64::MAX);
    let hi_ns = u64::try_from(hi.as_nanos()).unwrap_or(u64::MAX);
    Duration::from_nanos(rng.gen_range(lo_ns..=hi_ns))
}

/// Parses a `Retry-After` header given in seconds (the HTTP-date form is ignored: it needs a wall clock
/// and our callees send seconds).
pub fn retry_after(headers: &http::HeaderMap) -> Option<Duration> {
    let v = headers.get(http::header::RETRY_AFTER)?.to_str().ok()?;
    let secs: u64 = v.trim().parse().ok()?;
    Some(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(j: Jitter) -> Backoff {
        Backoff::try_new(
            Duration::from_millis(10),
            Duration::from_millis(100),
            j,
            Some(7),
        )
        .unwrap()
    }

    #[test]
    fn full_jitter_stays_between_zero_and_the_capped_exponential() {
        let b = b(Jitter::Full);
        for retry in 1..20 {
            let cap = Duration::from_millis(10 * (1u64 << (retry - 1).min(20)))
                .min(Duration::from_millis(100));
            let d = b.delay(retry, Duration::ZERO);
            assert!(d <= cap, "retry {retry}: {d:?} > {cap:?}");
        }
    }

    /// The call documented on [`Backoff`] for "the delay before attempt n + 1": bounded by
    /// `min(cap, base * 2^n)` for every n, and spanning that range (the largest of many draws is
    /// above half of it), so it is neither a doubling short nor a doubling over.
    #[test]
    fn full_jitter_before_attempt_n_plus_one_is_within_min_cap_base_times_two_to_the_n() {
        let base = Duration::from_millis(1);
        let cap = Duration::from_secs(3_600);
        let backoff = Backoff::try_new(base, cap, Jitter::Full, Some(11)).unwrap();
        for n in 0..40u32 {
            let bound_ns = (base.as_nanos() << n).min(cap.as_nanos());
            let bound = Duration::from_nanos(u64::try_from(bound_ns).unwrap());
            let mut largest = Duration::ZERO;
            for _ in 0..200 {
                let d = backoff.delay(n + 1, Duration::ZERO);
                assert!(d <= bound, "n {n}: {d:?} > {bound:?}");
                largest = largest.max(d);
            }
            assert!(
                largest > bound / 2,
                "n {n}: largest {largest:?} of {bound:?}"
            );
        }
    }

    #[test]
    fn equal_jitter_keeps_half_the_exponential_as_a_floor() {
        let b = b(Jitter::Equal);
        for _ in 0..100 {
            let d = b.delay(3, Duration::ZERO);
            assert!(d >= Duration::from_millis(20) && d <= Duration::from_millis(40));
        }
    }

    #[test]
    fn decorrelated_jitter_never_exceeds_the_cap_or_goes_below_base() {
        let b = b(Jitter::Decorrelated);
        let mut prev = Duration::ZERO;
        for retry in 1..50 {
            prev = b.delay(retry, prev);
            assert!(prev >= Duration::from_millis(10) && prev <= Duration::from_millis(100));
        }
    }

    #[test]
    fn same_seed_gives_same_delays() {
        let a: Vec<_> = (1..10)
            .map(|r| b(Jitter::Full).delay(r, Duration::ZERO))
            .collect();
        let c: Vec<_> = (1..10)
            .map(|r| b(Jitter::Full).delay(r, Duration::ZERO))
            .collect();
        assert_eq!(a, c);
    }

    #[test]
    fn cap_below_base_is_rejected() {
        let e = Backoff::try_new(
            Duration::from_millis(10),
            Duration::from_millis(5),
            Jitter::Full,
            None,
        );
        assert!(matches!(e, Err(InvalidBackoff::CapBelowBase { .. })));
    }

    #[test]
    fn retry_after_in_seconds_is_parsed() {
        let mut h = http::HeaderMap::new();
        h.insert(
            http::header::RETRY_AFTER,
            http::HeaderValue::from_static("3"),
        );
        assert_eq!(retry_after(&h), Some(Duration::from_secs(3)));
    }
}
