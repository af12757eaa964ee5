//! The sections of a [`super::ClientPolicy`], one TOML table each (`[client.budget]`,
//! `[client.breaker]`, ...): the type, its defaults and the bounds of its fields.

use serde::{Deserialize, Serialize};

use super::{check, unit, InvalidConfig};

/// Retry budget settings (`[client.budget]`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
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
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
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

impl BudgetPolicy {
    /// Checks `[client.budget]`; the error names the first bad field.
    pub(super) fn validate(&self) -> Result<(), InvalidConfig> {
        check(
            (0.0..=10.0).contains(&self.ratio),
            "budget.ratio",
            "must be within 0..=10",
        )?;
        check(
            (1_000..=60_000).contains(&self.ttl_ms),
            "budget.ttl_ms",
            "must be within 1000..=60000",
        )?;
        check(
            (0.0..=10.0).contains(&self.in_flight_share),
            "budget.in_flight_share",
            "must be within 0..=10",
        )?;
        Ok(())
    }
}

/// Circuit breaker settings (`[client.breaker]`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
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
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
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

impl BreakerPolicy {
    /// Checks `[client.breaker]`; the error names the first bad field.
    pub(super) fn validate(&self) -> Result<(), InvalidConfig> {
        check(
            (1..=100_000).contains(&self.window_size),
            "breaker.window_size",
            "must be within 1..=100000",
        )?;
        check(
            (100..=600_000).contains(&self.window_ms),
            "breaker.window_ms",
            "must be within 100..=600000",
        )?;
        check(
            self.minimum_calls >= 1,
            "breaker.minimum_calls",
            "must be >= 1",
        )?;
        check(
            self.window != WindowKind::Count || self.minimum_calls <= self.window_size,
            "breaker.minimum_calls",
            "must be <= window_size for a count window",
        )?;
        check(
            self.failure_rate_threshold > 0.0 && self.failure_rate_threshold <= 1.0,
            "breaker.failure_rate_threshold",
            "must be within (0, 1]",
        )?;
        check(
            self.slow_call_rate_threshold > 0.0 && self.slow_call_rate_threshold <= 1.0,
            "breaker.slow_call_rate_threshold",
            "must be within (0, 1]",
        )?;
        check(
            self.slow_call_ms >= 1,
            "breaker.slow_call_ms",
            "must be >= 1",
        )?;
        check(
            (1..=3_600_000).contains(&self.open_wait_ms),
            "breaker.open_wait_ms",
            "must be within 1..=3600000",
        )?;
        check(
            (0.0..1.0).contains(&self.open_wait_jitter),
            "breaker.open_wait_jitter",
            "must be within [0, 1)",
        )?;
        check(
            (1..=1000).contains(&self.half_open_probes),
            "breaker.half_open_probes",
            "must be within 1..=1000",
        )?;
        Ok(())
    }
}

/// Bulkhead settings (`[client.bulkhead]`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct BulkheadPolicy {
    /// Calls in flight at most (the starting limit when adaptive).
    pub max_concurrent: usize,
    /// How long a call may wait for a slot; 0 rejects at once.
    pub max_wait_ms: u64,
    /// Adaptive limit between `min_concurrent` and `max_concurrent`: `false` (fixed), `"aimd"`
    /// (or `true`, as before), `"vegas"` or `"gradient2"`.
    pub adaptive: AdaptiveLimit,
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
            adaptive: AdaptiveLimit::Off,
            min_concurrent: 8,
            latency_target_ms: 200,
        }
    }
}

/// The adaptive limit's name in config. `false` and `true` are still read (as `Off` and
/// `Aimd`), and `Off` is written as `false`, so older settings files keep their meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AdaptiveLimit {
    /// A fixed limit of `max_concurrent`.
    #[default]
    Off,
    /// AIMD on `latency_target_ms`.
    Aimd,
    /// Vegas: the queue estimated from latency against the lowest latency seen.
    Vegas,
    /// Gradient2: each call's latency against the long-run average.
    Gradient2,
}

impl AdaptiveLimit {
    const NAMES: [(&'static str, AdaptiveLimit); 4] = [
        ("off", AdaptiveLimit::Off),
        ("aimd", AdaptiveLimit::Aimd),
        ("vegas", AdaptiveLimit::Vegas),
        ("gradient2", AdaptiveLimit::Gradient2),
    ];
}

impl Serialize for AdaptiveLimit {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            AdaptiveLimit::Off => s.serialize_bool(false),
            other => {
                let name = Self::NAMES
                    .iter()
                    .find(|(_, v)| v == other)
                    .map_or("off", |(n, _)| n);
                s.serialize_str(name)
            }
        }
    }
}

impl<'de> Deserialize<'de> for AdaptiveLimit {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Flag(bool),
            Name(String),
        }
        match Raw::deserialize(d)? {
            Raw::Flag(false) => Ok(AdaptiveLimit::Off),
            Raw::Flag(true) => Ok(AdaptiveLimit::Aimd),
            Raw::Name(n) => Self::NAMES
                .iter()
                .find(|(name, _)| *name == n)
                .map(|(_, v)| *v)
                .ok_or_else(|| {
                    serde::de::Error::custom(format!(
                        "unknown adaptive limit `{n}`: expected false, true, \"aimd\", \"vegas\" or \"gradient2\""
                    ))
                }),
        }
    }
}

impl BulkheadPolicy {
    /// Checks `[client.bulkhead]`; the error names the first bad field.
    pub(super) fn validate(&self) -> Result<(), InvalidConfig> {
        check(
            (1..=1_000_000).contains(&self.max_concurrent),
            "bulkhead.max_concurrent",
            "must be within 1..=1000000",
        )?;
        check(
            self.max_wait_ms <= 60_000,
            "bulkhead.max_wait_ms",
            "must be <= 60000",
        )?;
        check(
            self.min_concurrent >= 1 && self.min_concurrent <= self.max_concurrent,
            "bulkhead.min_concurrent",
            "must be within 1..=max_concurrent",
        )?;
        check(
            self.latency_target_ms >= 1,
            "bulkhead.latency_target_ms",
            "must be >= 1",
        )?;
        Ok(())
    }
}

/// Hedging settings (`[client.hedge]`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
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

impl HedgePolicy {
    /// Checks `[client.hedge]`; the error names the first bad field.
    pub(super) fn validate(&self) -> Result<(), InvalidConfig> {
        check(self.max_hedges <= 10, "hedge.max_hedges", "must be <= 10")?;
        check(
            unit(self.percentile) && self.percentile < 1.0,
            "hedge.percentile",
            "must be within [0, 1)",
        )?;
        check(self.delay_ms >= 1, "hedge.delay_ms", "must be >= 1")?;
        check(self.min_delay_ms >= 1, "hedge.min_delay_ms", "must be >= 1")?;
        check(
            self.max_delay_ms >= self.min_delay_ms,
            "hedge.max_delay_ms",
            "must be >= hedge.min_delay_ms",
        )?;
        Ok(())
    }
}

/// Load balancing settings (`[client.balancer]`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct BalancerPolicy {
    /// `"p2c_ewma"`, `"round_robin"` or `"failover"` (first usable endpoint in the configured
    /// order; the rest are standbys).
    pub strategy: BalanceStrategy,
    /// Peak-EWMA decay.
    pub ewma_decay_ms: u64,
    /// Latency assumed for an endpoint with no sample, when no other endpoint has an estimate to
    /// start it from.
    pub default_rtt_ms: u64,
}

/// Balancer strategies in config.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
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

impl BalancerPolicy {
    /// Checks `[client.balancer]`; the error names the first bad field.
    pub(super) fn validate(&self) -> Result<(), InvalidConfig> {
        check(
            self.ewma_decay_ms >= 1,
            "balancer.ewma_decay_ms",
            "must be >= 1",
        )?;
        check(
            self.default_rtt_ms >= 1,
            "balancer.default_rtt_ms",
            "must be >= 1",
        )?;
        Ok(())
    }
}

/// Passive outlier ejection settings (`[client.outlier]`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct OutlierPolicy {
    /// Eject after at least this many failures in a row (0 = off); see `consecutive_derived`.
    pub consecutive_failures: u32,
    /// Lengthen that streak to what the set's normal failure rate and the endpoint's try rate
    /// call for, so that a healthy endpoint is ejected by chance less than
    /// `false_ejections_per_hour`; `false` ejects after exactly `consecutive_failures`.
    pub consecutive_derived: bool,
    /// The expected ejections per hour of a healthy endpoint the derived streak allows.
    pub false_ejections_per_hour: f64,
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
            consecutive_derived: true,
            false_ejections_per_hour: 1e-6,
            failure_rate_threshold: 0.85,
            failure_rate_min_requests: 50,
            interval_ms: 10_000,
            base_ejection_ms: 5_000,
            max_ejection_ms: 300_000,
            max_ejected_percent: 67,
            panic_threshold_percent: 30,
        }
    }
}

impl OutlierPolicy {
    /// Checks `[client.outlier]`; the error names the first bad field.
    pub(super) fn validate(&self) -> Result<(), InvalidConfig> {
        check(
            self.false_ejections_per_hour > 0.0 && self.false_ejections_per_hour <= 1.0,
            "outlier.false_ejections_per_hour",
            "must be within (0, 1]",
        )?;
        check(
            self.failure_rate_threshold > 0.0,
            "outlier.failure_rate_threshold",
            "must be > 0",
        )?;
        check(
            self.interval_ms >= 100,
            "outlier.interval_ms",
            "must be >= 100",
        )?;
        check(
            self.base_ejection_ms >= 1,
            "outlier.base_ejection_ms",
            "must be >= 1",
        )?;
        check(
            self.max_ejection_ms >= self.base_ejection_ms,
            "outlier.max_ejection_ms",
            "must be >= outlier.base_ejection_ms",
        )?;
        check(
            self.max_ejected_percent <= 100,
            "outlier.max_ejected_percent",
            "must be within 0..=100",
        )?;
        check(
            self.panic_threshold_percent <= 100,
            "outlier.panic_threshold_percent",
            "must be within 0..=100",
        )?;
        Ok(())
    }
}

/// Active health check settings (`[client.health_check]`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
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

impl HealthCheckPolicy {
    /// Checks `[client.health_check]`; the error names the first bad field.
    pub(super) fn validate(&self) -> Result<(), InvalidConfig> {
        check(
            self.path.starts_with('/'),
            "health_check.path",
            "must start with '/'",
        )?;
        check(
            self.interval_ms >= 10,
            "health_check.interval_ms",
            "must be >= 10",
        )?;
        check(
            self.timeout_ms >= 1,
            "health_check.timeout_ms",
            "must be >= 1",
        )?;
        check(
            self.unhealthy_threshold >= 1,
            "health_check.unhealthy_threshold",
            "must be >= 1",
        )?;
        check(
            self.healthy_threshold >= 1,
            "health_check.healthy_threshold",
            "must be >= 1",
        )?;
        Ok(())
    }
}
