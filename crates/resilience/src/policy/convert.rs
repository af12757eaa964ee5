//! The translation of a [`ClientPolicy`] into the layers' own configs: milliseconds become
//! `Duration`s, names become enums, and the pieces that are shared (the retry budget, the seed)
//! are handed to every layer that uses them.

use std::time::Duration;

use super::{
    bad, AdaptiveLimit, BalanceStrategy, BudgetModeName, ClientPolicy, InvalidConfig, WindowKind,
};
use crate::balance::health::HealthCheckConfig;
use crate::balance::{BalanceConfig, OutlierConfig, Strategy};
use crate::breaker::{BreakerConfig, WindowSpec};
use crate::bulkhead::{Adaptive, Aimd, BulkheadConfig, Gradient2, Vegas};
use crate::events::EventHooks;
use crate::hedge::{HedgeConfig, HedgeDelay, RollingHistogram};
use crate::retry::backoff::Backoff;
use crate::retry::budget::{BudgetMode, RetryBudget};
use crate::retry::RetryConfig;

impl ClientPolicy {
    /// The retry budget's mode and parameters (`[client.budget]`).
    pub(crate) fn budget_mode(&self) -> BudgetMode {
        match self.budget.mode {
            BudgetModeName::Ratio => BudgetMode::Ratio {
                ratio: self.budget.ratio,
                min_per_second: self.budget.min_per_second,
                ttl: Duration::from_millis(self.budget.ttl_ms),
            },
            BudgetModeName::InFlight => BudgetMode::InFlight {
                share: self.budget.in_flight_share,
                min_concurrency: self.budget.min_concurrency,
            },
        }
    }

    /// The budget retries and hedges share, built from [`Self::budget_mode`].
    pub(crate) fn retry_budget(&self) -> Result<RetryBudget, InvalidConfig> {
        RetryBudget::try_new(self.budget_mode()).map_err(|e| bad("budget", e.to_string()))
    }

    /// The backoff between tries: `backoff_base_ms`, `backoff_max_ms`, `jitter`, seeded by `seed`.
    pub(crate) fn backoff(&self) -> Result<Backoff, InvalidConfig> {
        Backoff::try_new(
            Duration::from_millis(self.backoff_base_ms),
            Duration::from_millis(self.backoff_max_ms),
            self.jitter,
            self.seed,
        )
        .map_err(|e| bad("backoff_base_ms", e.to_string()))
    }

    /// The retry layer's settings, paid from `budget`; `name` is the `dependency` label.
    pub(crate) fn retry_config(
        &self,
        name: &'static str,
        budget: RetryBudget,
    ) -> Result<RetryConfig, InvalidConfig> {
        Ok(RetryConfig {
            max_attempts: self.max_attempts,
            backoff: self.backoff()?,
            budget,
            retry_after_max: Duration::from_millis(self.retry_after_max_ms),
            label: name,
            events: EventHooks::default(),
        })
    }

    /// The hedge layer's settings (`[client.hedge]`), paid from `budget`: no hedges when disabled,
    /// a fixed delay when `percentile` is 0, else the clamped percentile of recent latencies.
    pub(crate) fn hedge_config(
        &self,
        name: &'static str,
        budget: RetryBudget,
    ) -> Result<HedgeConfig, InvalidConfig> {
        let h = &self.hedge;
        let delay = if h.percentile > 0.0 {
            let histogram =
                RollingHistogram::new(Duration::from_secs(10), h.percentile, h.min_samples)
                    .map_err(|e| bad("hedge.percentile", e))?;
            HedgeDelay::Percentile {
                histogram,
                min: Duration::from_millis(h.min_delay_ms),
                max: Duration::from_millis(h.max_delay_ms),
                fallback: Duration::from_millis(h.delay_ms),
            }
        } else {
            HedgeDelay::Fixed(Duration::from_millis(h.delay_ms))
        };
        Ok(HedgeConfig {
            max_hedges: if h.enabled { h.max_hedges } else { 0 },
            delay,
            budget: Some(budget),
            label: name,
            events: EventHooks::default(),
        })
    }

    /// The bulkhead's settings (`[client.bulkhead]`).
    pub(crate) fn bulkhead_config(&self) -> BulkheadConfig {
        let bh = &self.bulkhead;
        BulkheadConfig {
            max_concurrent: bh.max_concurrent,
            max_wait: Duration::from_millis(bh.max_wait_ms),
            adaptive: match bh.adaptive {
                AdaptiveLimit::Off => None,
                AdaptiveLimit::Aimd => Some(Adaptive::Aimd(Aimd {
                    min_limit: bh.min_concurrent,
                    latency_target: Duration::from_millis(bh.latency_target_ms),
                    backoff_ratio: 0.9,
                })),
                AdaptiveLimit::Vegas => Some(Adaptive::Vegas {
                    min_limit: bh.min_concurrent,
                    params: Vegas::default(),
                }),
                AdaptiveLimit::Gradient2 => Some(Adaptive::Gradient2 {
                    min_limit: bh.min_concurrent,
                    params: Gradient2::default(),
                }),
            },
        }
    }

    /// The active health checks' settings (`[client.health_check]`; the path is the probe's).
    pub(crate) fn health_check_config(&self) -> HealthCheckConfig {
        let hc = &self.health_check;
        HealthCheckConfig {
            interval: Duration::from_millis(hc.interval_ms),
            timeout: Duration::from_millis(hc.timeout_ms),
            unhealthy_threshold: hc.unhealthy_threshold,
            healthy_threshold: hc.healthy_threshold,
        }
    }
}

/// The breaker settings of a policy (per service; per endpoint adds the `endpoint` label).
pub fn breaker_config(name: &'static str, policy: &ClientPolicy) -> BreakerConfig {
    let br = &policy.breaker;
    BreakerConfig {
        window: match br.window {
            WindowKind::Count => WindowSpec::Count(br.window_size),
            WindowKind::Time => WindowSpec::Time(Duration::from_millis(br.window_ms)),
        },
        minimum_calls: br.minimum_calls,
        failure_rate_threshold: br.failure_rate_threshold,
        slow_call: Duration::from_millis(br.slow_call_ms),
        slow_call_rate_threshold: br.slow_call_rate_threshold,
        open_wait: Duration::from_millis(br.open_wait_ms),
        open_wait_jitter: br.open_wait_jitter,
        half_open_probes: br.half_open_probes,
        label: name,
        endpoint: None,
        seed: policy.seed,
        events: EventHooks::default(),
    }
}

/// The balancer settings of a policy.
pub fn balance_config(name: &'static str, policy: &ClientPolicy) -> BalanceConfig {
    let o = &policy.outlier;
    BalanceConfig {
        strategy: match policy.balancer.strategy {
            BalanceStrategy::P2cEwma => Strategy::P2cPeakEwma,
            BalanceStrategy::RoundRobin => Strategy::RoundRobin,
            BalanceStrategy::Failover => Strategy::Failover,
        },
        decay: Duration::from_millis(policy.balancer.ewma_decay_ms),
        default_rtt: Duration::from_millis(policy.balancer.default_rtt_ms),
        outlier: OutlierConfig {
            consecutive_failures: o.consecutive_failures,
            consecutive_derived: o.consecutive_derived,
            false_ejections_per_hour: o.false_ejections_per_hour,
            failure_rate_threshold: o.failure_rate_threshold,
            failure_rate_min_requests: o.failure_rate_min_requests,
            interval: Duration::from_millis(o.interval_ms),
            base_ejection: Duration::from_millis(o.base_ejection_ms),
            max_ejection: Duration::from_millis(o.max_ejection_ms),
            max_ejected_percent: o.max_ejected_percent,
        },
        panic_threshold_percent: o.panic_threshold_percent,
        endpoint_breaker: policy
            .breaker
            .per_endpoint
            .then(|| breaker_config(name, policy)),
        label: name,
        seed: policy.seed,
        events: EventHooks::default(),
    }
}
