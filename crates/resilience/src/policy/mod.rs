//! What a dependency's client may do, as the service's TOML says it: [`ClientPolicy`] and its
//! sections, their validation, and their translation into the layers' own configs.
//!
//! Configuration apart from composition (as linkerd2-proxy's `Config` apart from its stacks):
//! this module knows every knob and its bounds but builds no service; [`crate::client`] composes
//! the layers from what it returns. `sections.rs` holds the tables (`[client.budget]`, ...) with
//! their defaults and bounds, `convert.rs` the translation into each layer's config.

mod convert;
mod sections;

use std::time::Duration;

use serde::Deserialize;

pub use self::convert::{balance_config, breaker_config};
pub use self::sections::{
    BalanceStrategy, BalancerPolicy, BreakerPolicy, BudgetModeName, BudgetPolicy, BulkheadPolicy,
    HealthCheckPolicy, HedgePolicy, OutlierPolicy, WindowKind,
};
use crate::retry::backoff::Jitter;

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

/// The error for `field`, saying why.
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
    /// Checks every field, section by section in the order the struct lists them; the error names
    /// the first bad one.
    pub fn validate(&self) -> Result<(), InvalidConfig> {
        self.validate_tries()?;
        self.validate_transport()?;
        self.budget.validate()?;
        self.breaker.validate()?;
        self.bulkhead.validate()?;
        self.hedge.validate()?;
        self.balancer.validate()?;
        self.outlier.validate()?;
        self.health_check.validate()
    }

    /// The per-try timeout, the number of tries and the waits between them.
    fn validate_tries(&self) -> Result<(), InvalidConfig> {
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
        Ok(())
    }

    /// Connections and answers: connect timeout, idle pool, body limit.
    fn validate_transport(&self) -> Result<(), InvalidConfig> {
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
        Ok(())
    }

    /// Per-try timeout as a `Duration`.
    pub fn per_try_timeout(&self) -> Duration {
        Duration::from_millis(self.per_try_timeout_ms)
    }
}
