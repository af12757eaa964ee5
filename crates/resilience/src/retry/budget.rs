//! The retry budget that retries and hedges share.
//!
//! Why a budget and not only a retry count: `max_attempts = 3` multiplies load by three exactly when the
//! dependency is least able to take it. A budget bounds the *extra* load as a share of real traffic, so a
//! dependency that is fully down sees at most `1 + ratio` times the traffic it would see with no retries,
//! while a dependency that fails a bounded share of calls gets every retry it needs.
//!
//! Two modes:
//!
//! - [`BudgetMode::Ratio`] (Finagle, Linkerd): every original request deposits `ratio` tokens, every
//!   retry or hedge withdraws one. Deposits expire after `ttl`, so the budget follows the recent rate. A
//!   reserve of `min_per_second * ttl` tokens lets low-traffic clients retry at all.
//! - [`BudgetMode::InFlight`] (Envoy's `retry_budget`): a retry is allowed while retries in flight stay
//!   below `max(min_concurrency, share * requests in flight)`. It needs no clock and reacts at once, but
//!   it bounds concurrency, not rate.
//!
//! Time comes from `tokio::time`, so tests pause it.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

/// Which accounting rule the budget uses.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum BudgetMode {
    /// Finagle/Linkerd: retries <= `ratio` * requests over `ttl`, plus `min_per_second` * ttl.
    Ratio {
        /// Extra load allowed, as a share of original requests (0.5 = at most 1.5x).
        ratio: f64,
        /// Retries always allowed per second, whatever the traffic.
        min_per_second: u32,
        /// How long a deposit counts.
        ttl: Duration,
    },
    /// Envoy: retries in flight <= max(`min_concurrency`, `share` * requests in flight).
    InFlight {
        /// Share of requests in flight that may be retries.
        share: f64,
        /// Retries in flight always allowed.
        min_concurrency: usize,
    },
}

/// The configuration was out of range.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid retry budget: {0}")]
pub struct InvalidBudget(pub &'static str);

const SLOTS: usize = 10;

#[derive(Debug)]
struct Slot {
    start: Instant,
    deposits: u64,
    withdrawals: u64,
}

#[derive(Debug)]
struct RatioState {
    slots: VecDeque<Slot>,
}

#[derive(Debug)]
struct Inner {
    mode: BudgetMode,
    ratio: Mutex<RatioState>,
    requests_in_flight: AtomicUsize,
    retries_in_flight: AtomicUsize,
}

/// A retry budget. Clones share the same account.
#[derive(Debug, Clone)]
pub struct RetryBudget {
    inner: Arc<Inner>,
}

/// Held while an original request is in flight. Only [`BudgetMode::InFlight`] counts requests in
/// flight; in ratio mode the guard is empty and costs nothing.
#[derive(Debug)]
pub struct RequestGuard {
    in_flight: Option<Arc<Inner>>,
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        if let Some(inner) = &self.in_flight {
            inner.requests_in_flight.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// Held while a retry or hedge is in flight.
#[derive(Debug)]
pub struct RetryPermit {
    inner: Arc<Inner>,
}

impl Drop for RetryPermit {
    fn drop(&mut self) {
        self.inner.retries_in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl RetryBudget {
    /// Validates the mode: ratio in `[0, 10]`, ttl in `[1 s, 60 s]`, share in `[0, 10]`.
    pub fn try_new(mode: BudgetMode) -> Result<Self, InvalidBudget> {
        match mode {
            BudgetMode::Ratio { ratio, ttl, .. } => {
                if !(0.0..=10.0).contains(&ratio) {
                    return Err(InvalidBudget("ratio must be within 0..=10"));
                }
                if ttl < Duration::from_secs(1) || ttl > Duration::from_secs(60) {
                    return Err(InvalidBudget("ttl must be within 1 s..=60 s"));
                }
            }
            BudgetMode::InFlight { share, .. } => {
                if !(0.0..=10.0).contains(&share) {
                    return Err(InvalidBudget("share must be within 0..=10"));
                }
            }
        }
        Ok(Self {
            inner: Arc::new(Inner {
                mode,
                ratio: Mutex::new(RatioState {
                    slots: VecDeque::with_capacity(SLOTS + 1),
                }),
                requests_in_flight: AtomicUsize::new(0),
                retries_in_flight: AtomicUsize::new(0),
            }),
        })
    }

    /// The mode this budget was built with.
    pub fn mode(&self) -> BudgetMode {
        self.inner.mode
    }

    /// Records one original request. Keep the guard until the request is finished.
    pub fn deposit(&self) -> RequestGuard {
        match self.inner.mode {
            BudgetMode::Ratio { ttl, .. } => {
                let mut st = self.lock();
                slot(&mut st, ttl).deposits += 1;
                RequestGuard { in_flight: None }
            }
            BudgetMode::InFlight { .. } => {
                self.inner.requests_in_flight.fetch_add(1, Ordering::AcqRel);
                RequestGuard {
                    in_flight: Some(self.inner.clone()),
                }
            }
        }
    }

    /// Takes the budget for one retry or hedge, or `None` when it is spent.
    pub fn try_withdraw(&self) -> Option<RetryPermit> {
        match self.inner.mode {
            BudgetMode::Ratio {
                ratio,
                min_per_second,
                ttl,
            } => {
                let mut st = self.lock();
                let now = Instant::now();
                expire(&mut st, now, ttl);
                let (dep, wd) = st.slots.iter().fold((0u64, 0u64), |(d, w), s| {
                    (d + s.deposits, w + s.withdrawals)
                });
                let reserve = f64::from(min_per_second) * ttl.as_secs_f64();
                #[allow(clippy::cast_precision_loss)]
                let balance = reserve + dep as f64 * ratio - wd as f64;
                if balance < 1.0 {
                    return None;
                }
                slot(&mut st, ttl).withdrawals += 1;
            }
            BudgetMode::InFlight {
                share,
                min_concurrency,
            } => {
                let reqs = self.inner.requests_in_flight.load(Ordering::Acquire);
                #[allow(
                    clippy::cast_precision_loss,
                    clippy::cast_possible_truncation,
                    clippy::cast_sign_loss
                )]
                let limit = ((reqs as f64 * share) as usize).max(min_concurrency);
                let prev = self.inner.retries_in_flight.fetch_add(1, Ordering::AcqRel);
                if prev >= limit {
                    self.inner.retries_in_flight.fetch_sub(1, Ordering::AcqRel);
                    return None;
                }
                return Some(RetryPermit {
                    inner: self.inner.clone(),
                });
            }
        }
        self.inner.retries_in_flight.fetch_add(1, Ordering::AcqRel);
        Some(RetryPermit {
            inner: self.inner.clone(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RatioState> {
        match self.inner.ratio.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }
}

fn expire(st: &mut RatioState, now: Instant, ttl: Duration) {
    while let Some(front) = st.slots.front() {
        if now.duration_since(front.start) >= ttl {
            st.slots.pop_front();
        } else {
            break;
        }
    }
}

fn slot(st: &mut RatioState, ttl: Duration) -> &mut Slot {
    let now = Instant::now();
    expire(st, now, ttl);
    #[allow(clippy::cast_possible_truncation)]
    let width = ttl / SLOTS as u32;
    let need_new = match st.slots.back() {
        Some(last) => now.duration_since(last.start) >= width,
        None => true,
    };
    if need_new {
        st.slots.push_back(Slot {
            start: now,
            deposits: 0,
            withdrawals: 0,
        });
    }
    let len = st.slots.len();
    &mut st.slots[len - 1]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ratio(r: f64, min: u32) -> RetryBudget {
        RetryBudget::try_new(BudgetMode::Ratio {
            ratio: r,
            min_per_second: min,
            ttl: Duration::from_secs(10),
        })
        .unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn budget_rejects_retry_when_ratio_spent() {
        let b = ratio(0.5, 0);
        for _ in 0..10 {
            drop(b.deposit());
        }
        let permits: Vec<_> = std::iter::from_fn(|| b.try_withdraw()).take(100).collect();
        assert_eq!(permits.len(), 5);
    }

    #[tokio::test(start_paused = true)]
    async fn reserve_allows_retries_without_traffic() {
        let b = ratio(0.5, 1);
        let n = std::iter::from_fn(|| b.try_withdraw()).take(100).count();
        assert_eq!(n, 10, "1/s over a 10 s ttl");
    }

    #[tokio::test(start_paused = true)]
    async fn deposits_expire_after_ttl() {
        let b = ratio(1.0, 0);
        for _ in 0..10 {
            drop(b.deposit());
        }
        tokio::time::advance(Duration::from_secs(11)).await;
        assert!(b.try_withdraw().is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn in_flight_budget_limits_concurrent_retries_to_the_share() {
        let b = RetryBudget::try_new(BudgetMode::InFlight {
            share: 0.2,
            min_concurrency: 1,
        })
        .unwrap();
        let _reqs: Vec<_> = (0..20).map(|_| b.deposit()).collect();
        let permits: Vec<_> = std::iter::from_fn(|| b.try_withdraw()).take(100).collect();
        assert_eq!(permits.len(), 4);
        drop(permits);
        assert!(b.try_withdraw().is_some(), "permits return on drop");
    }

    #[test]
    fn out_of_range_ratio_is_rejected() {
        assert!(RetryBudget::try_new(BudgetMode::Ratio {
            ratio: -1.0,
            min_per_second: 0,
            ttl: Duration::from_secs(10)
        })
        .is_err());
    }

    proptest! {
        #[test]
        fn withdrawals_never_exceed_reserve_plus_ratio_of_deposits(
            ratio_pct in 0u32..200, min in 0u32..5, ops in proptest::collection::vec(any::<bool>(), 1..500)
        ) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
            rt.block_on(async {
                let r = f64::from(ratio_pct) / 100.0;
                let b = ratio(r, min);
                let (mut dep, mut wd) = (0u64, 0u64);
                for op in ops {
                    if op { drop(b.deposit()); dep += 1; } else if b.try_withdraw().is_some() { wd += 1; }
                }
                #[allow(clippy::cast_precision_loss)]
                let bound = f64::from(min) * 10.0 + dep as f64 * r;
                #[allow(clippy::cast_precision_loss)]
                let wdf = wd as f64;
                prop_assert!(wdf <= bound + 1e-9, "wd {} > bound {}", wd, bound);
                Ok(())
            })?;
        }
    }
}
