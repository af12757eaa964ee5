//! What a dependency's client may do, as the service's TOML says it: [`ClientPolicy`] and its
//! sections, their validation, and their translation into the layers' own configs.
//!
//! Configuration apart from composition (as linkerd2-proxy's `Config` apart from its stacks):
//! this module knows every knob and its bounds but builds no service; [`crate::client`] composes
//! the layers from what it returns.

use std::time::Duration;

use serde::Deserialize;

use crate::balance::{BalanceConfig, OutlierConfig, Strategy};
use crate::breaker::{BreakerConfig, WindowSpec};
use crate::retry::backoff::Jitter;
use crate::retry::budget::BudgetMode;

/// Retry budget settings (`[client.budget]`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct BudgetPolicy {
    /// `"ratio"` (Finagle/Linkerd) or `"in_flight"` (Envoy).
    pub mode: BudgetModeName,
    /// Ratio mode: extra load allowed as a share of requests.
    pub ratio: f64,
    /// Ratio mode: retries always allowed per second.
    pub min_per_second: u32,
    /// Ratio mode: how long a request's deposit counts.
    pub ttl_ms: u64,
    /// In-flight mode: share of requests in flight that may be retries or hedges.
    pub in_flight_share: f64,
    /// In-flight mode: retries in flight always allowed.
    pub min_concurrency: usize,
}

/// Budget mode names in config.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum BudgetModeName {
    /// Finagle/Linkerd ratio over a time window.
    #[default]
    Ratio,
    /// Envoy share of requests in flight.
    InFlight,
}

impl Default for BudgetPolicy {
    fn default() -> Self {
        Self {
            mode: BudgetModeName::Ratio,
            ratio: 0.5,
            min_per_second: 10,
            ttl_ms: 10_000,
            in_flight_share: 0.5,
            min_concurrency: 3,
        }
    }
}

/// Circuit breaker settings (`[client.breaker]`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct BreakerPolicy {
    /// Off means calls are never rejected by the per-service breaker.
    pub enabled: bool,
    /// Also keep one breaker per endpoint (same thresholds); the balancer routes around open ones.
    /// Off by default: outlier ejection already plays that part, with a cap on how many endpoints
    /// may be out at once.
    pub per_endpoint: bool,
    /// `"count"` (last N calls) or `"time"` (calls in the last `window_ms`).
    pub window: WindowKind,
    /// Count window: number of calls remembered.
    pub window_size: u32,
    /// Time window: span remembered.
    pub window_ms: u64,
    /// No decision before this many calls are in the window.
    pub minimum_calls: u32,
    /// Open when failures / calls >= this.
    pub failure_rate_threshold: f64,
    /// A call slower than this counts as slow.
    pub slow_call_ms: u64,
    /// Open when slow calls / calls >= this.
    pub slow_call_rate_threshold: f64,
    /// How long to stay open before probing.
    pub open_wait_ms: u64,
    /// Open wait is multiplied by a random factor in `[1 - j, 1 + j]`.
    pub open_wait_jitter: f64,
    /// Probes admitted in half-open; all must succeed to close.
    pub half_open_probes: u32,
}

/// Breaker window kinds in config.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum WindowKind {
    /// The last N calls.
    #[default]
    Count,
    /// Calls within a time span.
    Time,
}

impl Default for BreakerPolicy {
    fn default() -> Self {
        Self {
            enabled: true,
            per_endpoint: false,
            window: WindowKind::Count,
            window_size: 100,
            window_ms: 10_000,
            minimum_calls: 40,
            failure_rate_threshold: 0.6,
            slow_call_ms: 2_000,
            slow_call_rate_threshold: 0.9,
            open_wait_ms: 3_000,
            open_wait_jitter: 0.2,
            half_open_probes: 3,
        }
    }
}

/// Bulkhead settings (`[client.bulkhead]`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct BulkheadPolicy {
    /// Calls in flight at most (the starting limit when adaptive).
    pub max_concurrent: usize,
    /// How long a call may wait for a slot; 0 rejects at once.
    pub max_wait_ms: u64,
    /// AIMD adaptive limit between `min_concurrent` and `max_concurrent`.
    pub adaptive: bool,
    /// Adaptive floor.
    pub min_concurrent: usize,
    /// Adaptive: calls slower than this (or failing) shrink the limit.
    pub latency_target_ms: u64,
}

impl Default for BulkheadPolicy {
    fn default() -> Self {
        Self {
            max_concurrent: 256,
            max_wait_ms: 0,
            adaptive: false,
            min_concurrent: 8,
            latency_target_ms: 200,
        }
    }
}

/// Hedging settings (`[client.hedge]`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct HedgePolicy {
    /// Hedge idempotent requests at all.
    pub enabled: bool,
    /// Extra copies per try, each to a different replica while there are any.
    pub max_hedges: u32,
    /// Latency percentile (0..1) of recent successful tries after which a hedge fires; 0 = fixed delay.
    pub percentile: f64,
    /// The delay used before `min_samples` latencies are recorded, or when `percentile` is 0.
    pub delay_ms: u64,
    /// The percentile delay is clamped to at least this.
    pub min_delay_ms: u64,
    /// The percentile delay is clamped to at most this.
    pub max_delay_ms: u64,
    /// Samples needed before the percentile is trusted.
    pub min_samples: u64,
}

impl Default for HedgePolicy {
    fn default() -> Self {
        Self {
            enabled: true,
            max_hedges: 4,
            percentile: 0.95,
            delay_ms: 15,
            min_delay_ms: 10,
            max_delay_ms: 20,
            min_samples: 100,
        }
    }
}

/// Load balancing settings (`[client.balancer]`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct BalancerPolicy {
    /// `"p2c_ewma"`, `"round_robin"` or `"failover"` (first usable endpoint in the configured
    /// order; the rest are standbys).
    pub strategy: BalanceStrategy,
    /// Peak-EWMA decay.
    pub ewma_decay_ms: u64,
    /// Latency assumed for an endpoint with no sample.
    pub default_rtt_ms: u64,
}

/// Balancer strategies in config.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum BalanceStrategy {
    /// Power of two choices over peak-EWMA latency times load.
    #[default]
    P2cEwma,
    /// Each endpoint in turn.
    RoundRobin,
    /// The first usable endpoint in the configured order; the others are standbys.
    Failover,
}

impl Default for BalancerPolicy {
    fn default() -> Self {
        Self {
            strategy: BalanceStrategy::P2cEwma,
            ewma_decay_ms: 10_000,
            default_rtt_ms: 20,
        }
    }
}

/// Passive outlier ejection settings (`[client.outlier]`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct OutlierPolicy {
    /// Eject after this many failures in a row (0 = off).
    pub consecutive_failures: u32,
    /// Eject when an endpoint's failure share over `interval_ms` reaches this (1.0 or more = off).
    pub failure_rate_threshold: f64,
    /// Tries an endpoint needs in the interval before its failure share is judged.
    pub failure_rate_min_requests: u32,
    /// Window of the failure-share check.
    pub interval_ms: u64,
    /// First ejection lasts this; the n-th lasts n times as long.
    pub base_ejection_ms: u64,
    /// Ejections never last longer than this.
    pub max_ejection_ms: u64,
    /// At most this share of endpoints (percent) is ejected at once.
    pub max_ejected_percent: u32,
    /// When fewer than this percent of endpoints are usable, route to all of them (panic mode).
    pub panic_threshold_percent: u32,
}

impl Default for OutlierPolicy {
    fn default() -> Self {
        Self {
            consecutive_failures: 10,
            failure_rate_threshold: 0.85,
            failure_rate_min_requests: 50,
            interval_ms: 10_000,
            base_ejection_ms: 5_000,
            max_ejection_ms: 300_000,
            max_ejected_percent: 34,
            panic_threshold_percent: 50,
        }
    }
}

/// Active health check settings (`[client.health_check]`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct HealthCheckPolicy {
    /// Probe endpoints in the background.
    pub enabled: bool,
    /// Path probed with GET; 2xx means healthy.
    pub path: String,
    /// Time between probes of one endpoint.
    pub interval_ms: u64,
    /// A probe slower than this failed.
    pub timeout_ms: u64,
    /// Failed probes in a row before an endpoint is marked unhealthy.
    pub unhealthy_threshold: u32,
    /// Good probes in a row before it is healthy again.
    pub healthy_threshold: u32,
}

impl Default for HealthCheckPolicy {
    fn default() -> Self {
        Self {
            enabled: true,
            path: "/health/ready".to_owned(),
            interval_ms: 1_000,
            timeout_ms: 250,
            unhealthy_threshold: 2,
            healthy_threshold: 1,
        }
    }
}

/// Every knob of one dependency's client. Deserialized from the service's TOML; `validate()` at start.
/// The defaults are sized for a dependency that fails 30% of calls independently; see the crate docs
/// for the arithmetic.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ClientPolicy {
    /// Longest one try may take; the effective value is `min(per_try, deadline remaining)`.
    pub per_try_timeout_ms: u64,
    /// Tries per call (each try may be hedged), including the first.
    pub max_attempts: u32,
    /// First backoff.
    pub backoff_base_ms: u64,
    /// Backoff cap.
    pub backoff_max_ms: u64,
    /// `"full"`, `"equal"`, `"decorrelated"` or `"none"`.
    pub jitter: Jitter,
    /// Wait what a 429/503 `Retry-After` asks, up to this (0 = ignore the header).
    pub retry_after_max_ms: u64,
    /// TCP connect timeout.
    pub connect_timeout_ms: u64,
    /// Idle pooled connections per host.
    pub pool_max_idle_per_host: usize,
    /// Idle pooled connections are closed after this.
    pub pool_idle_timeout_ms: u64,
    /// Largest response body accepted.
    pub max_response_bytes: usize,
    /// Seed for every random choice (jitter, balancer); absent = from entropy.
    pub seed: Option<u64>,
    /// Retry budget shared by retries and hedges.
    pub budget: BudgetPolicy,
    /// Circuit breaker around the whole call.
    pub breaker: BreakerPolicy,
    /// Concurrency limit for the dependency.
    pub bulkhead: BulkheadPolicy,
    /// Hedged requests.
    pub hedge: HedgePolicy,
    /// Endpoint choice.
    pub balancer: BalancerPolicy,
    /// Passive outlier ejection.
    pub outlier: OutlierPolicy,
    /// Active health checks.
    pub health_check: HealthCheckPolicy,
}

impl Default for ClientPolicy {
    fn default() -> Self {
        Self {
            per_try_timeout_ms: 60,
            max_attempts: 4,
            backoff_base_ms: 5,
            backoff_max_ms: 100,
            jitter: Jitter::Full,
            retry_after_max_ms: 1_000,
            connect_timeout_ms: 100,
            pool_max_idle_per_host: 64,
            pool_idle_timeout_ms: 30_000,
            max_response_bytes: 1 << 20,
            seed: None,
            budget: BudgetPolicy::default(),
            breaker: BreakerPolicy::default(),
            bulkhead: BulkheadPolicy::default(),
            hedge: HedgePolicy::default(),
            balancer: BalancerPolicy::default(),
            outlier: OutlierPolicy::default(),
            health_check: HealthCheckPolicy::default(),
        }
    }
}

/// A policy value out of range; `field` is the dotted TOML key.
#[derive(Debug, thiserror::Error)]
#[error("invalid client policy: {field}: {reason}")]
pub struct InvalidConfig {
    /// Dotted key, e.g. `budget.ratio`.
    pub field: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

pub(crate) fn bad(field: &'static str, reason: impl Into<String>) -> InvalidConfig {
    InvalidConfig {
        field,
        reason: reason.into(),
    }
}

fn check(ok: bool, field: &'static str, reason: &str) -> Result<(), InvalidConfig> {
    if ok {
        Ok(())
    } else {
        Err(bad(field, reason))
    }
}

fn unit(x: f64) -> bool {
    (0.0..=1.0).contains(&x)
}

impl ClientPolicy {
    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), InvalidConfig> {
        check(
            (1..=60_000).contains(&self.per_try_timeout_ms),
            "per_try_timeout_ms",
            "must be within 1..=60000",
        )?;
        check(
            (1..=20).contains(&self.max_attempts),
            "max_attempts",
            "must be within 1..=20",
        )?;
        check(
            (1..=60_000).contains(&self.backoff_base_ms),
            "backoff_base_ms",
            "must be within 1..=60000",
        )?;
        check(
            self.backoff_max_ms >= self.backoff_base_ms && self.backoff_max_ms <= 600_000,
            "backoff_max_ms",
            "must be >= backoff_base_ms and <= 600000",
        )?;
        check(
            self.retry_after_max_ms <= 600_000,
            "retry_after_max_ms",
            "must be <= 600000",
        )?;
        check(
            (1..=60_000).contains(&self.connect_timeout_ms),
            "connect_timeout_ms",
            "must be within 1..=60000",
        )?;
        check(
            self.pool_idle_timeout_ms <= 3_600_000,
            "pool_idle_timeout_ms",
            "must be <= 3600000",
        )?;
        check(
            self.max_response_bytes >= 1,
            "max_response_bytes",
            "must be >= 1",
        )?;
        let b = &self.budget;
        check(
            (0.0..=10.0).contains(&b.ratio),
            "budget.ratio",
            "must be within 0..=10",
        )?;
        check(
            (1_000..=60_000).contains(&b.ttl_ms),
            "budget.ttl_ms",
            "must be within 1000..=60000",
        )?;
        check(
            (0.0..=10.0).contains(&b.in_flight_share),
            "budget.in_flight_share",
            "must be within 0..=10",
        )?;
        let br = &self.breaker;
        check(
            (1..=100_000).contains(&br.window_size),
            "breaker.window_size",
            "must be within 1..=100000",
        )?;
        check(
            (100..=600_000).contains(&br.window_ms),
            "breaker.window_ms",
            "must be within 100..=600000",
        )?;
        check(
            br.minimum_calls >= 1,
            "breaker.minimum_calls",
            "must be >= 1",
        )?;
        check(
            br.window != WindowKind::Count || br.minimum_calls <= br.window_size,
            "breaker.minimum_calls",
            "must be <= window_size for a count window",
        )?;
        check(
            br.failure_rate_threshold > 0.0 && br.failure_rate_threshold <= 1.0,
            "breaker.failure_rate_threshold",
            "must be within (0, 1]",
        )?;
        check(
            br.slow_call_rate_threshold > 0.0 && br.slow_call_rate_threshold <= 1.0,
            "breaker.slow_call_rate_threshold",
            "must be within (0, 1]",
        )?;
        check(br.slow_call_ms >= 1, "breaker.slow_call_ms", "must be >= 1")?;
        check(
            (1..=3_600_000).contains(&br.open_wait_ms),
            "breaker.open_wait_ms",
            "must be within 1..=3600000",
        )?;
        check(
            (0.0..1.0).contains(&br.open_wait_jitter),
            "breaker.open_wait_jitter",
            "must be within [0, 1)",
        )?;
        check(
            (1..=1000).contains(&br.half_open_probes),
            "breaker.half_open_probes",
            "must be within 1..=1000",
        )?;
        let bh = &self.bulkhead;
        check(
            (1..=1_000_000).contains(&bh.max_concurrent),
            "bulkhead.max_concurrent",
            "must be within 1..=1000000",
        )?;
        check(
            bh.max_wait_ms <= 60_000,
            "bulkhead.max_wait_ms",
            "must be <= 60000",
        )?;
        check(
            bh.min_concurrent >= 1 && bh.min_concurrent <= bh.max_concurrent,
            "bulkhead.min_concurrent",
            "must be within 1..=max_concurrent",
        )?;
        check(
            bh.latency_target_ms >= 1,
            "bulkhead.latency_target_ms",
            "must be >= 1",
        )?;
        let h = &self.hedge;
        check(h.max_hedges <= 10, "hedge.max_hedges", "must be <= 10")?;
        check(
            unit(h.percentile) && h.percentile < 1.0,
            "hedge.percentile",
            "must be within [0, 1)",
        )?;
        check(h.delay_ms >= 1, "hedge.delay_ms", "must be >= 1")?;
        check(h.min_delay_ms >= 1, "hedge.min_delay_ms", "must be >= 1")?;
        check(
            h.max_delay_ms >= h.min_delay_ms,
            "hedge.max_delay_ms",
            "must be >= hedge.min_delay_ms",
        )?;
        let bl = &self.balancer;
        check(
            bl.ewma_decay_ms >= 1,
            "balancer.ewma_decay_ms",
            "must be >= 1",
        )?;
        check(
            bl.default_rtt_ms >= 1,
            "balancer.default_rtt_ms",
            "must be >= 1",
        )?;
        let o = &self.outlier;
        check(
            o.failure_rate_threshold > 0.0,
            "outlier.failure_rate_threshold",
            "must be > 0",
        )?;
        check(
            o.interval_ms >= 100,
            "outlier.interval_ms",
            "must be >= 100",
        )?;
        check(
            o.base_ejection_ms >= 1,
            "outlier.base_ejection_ms",
            "must be >= 1",
        )?;
        check(
            o.max_ejection_ms >= o.base_ejection_ms,
            "outlier.max_ejection_ms",
            "must be >= outlier.base_ejection_ms",
        )?;
        check(
            o.max_ejected_percent <= 100,
            "outlier.max_ejected_percent",
            "must be within 0..=100",
        )?;
        check(
            o.panic_threshold_percent <= 100,
            "outlier.panic_threshold_percent",
            "must be within 0..=100",
        )?;
        let hc = &self.health_check;
        check(
            hc.path.starts_with('/'),
            "health_check.path",
            "must start with '/'",
        )?;
        check(
            hc.interval_ms >= 10,
            "health_check.interval_ms",
            "must be >= 10",
        )?;
        check(
            hc.timeout_ms >= 1,
            "health_check.timeout_ms",
            "must be >= 1",
        )?;
        check(
            hc.unhealthy_threshold >= 1,
            "health_check.unhealthy_threshold",
            "must be >= 1",
        )?;
        check(
            hc.healthy_threshold >= 1,
            "health_check.healthy_threshold",
            "must be >= 1",
        )?;
        Ok(())
    }

    /// Per-try timeout as a `Duration`.
    pub fn per_try_timeout(&self) -> Duration {
        Duration::from_millis(self.per_try_timeout_ms)
    }

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
    }
}
