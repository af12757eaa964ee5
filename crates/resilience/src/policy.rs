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

use serde::{Deserialize, Serialize};

pub use self::convert::{balance_config, breaker_config};
pub use self::sections::{
    AdaptiveLimit, BalanceStrategy, BalancerPolicy, BreakerPolicy, BudgetModeName, BudgetPolicy,
    BulkheadPolicy, HealthCheckPolicy, HedgePolicy, OutlierPolicy, WindowKind,
};
use crate::retry::backoff::Jitter;

/// Every knob of one dependency's client. Deserialized from the service's TOML; `validate()` at start.
/// The defaults are sized for a dependency that fails 30% of calls independently; see the crate docs
/// for the arithmetic.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
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
    /// Seed for every random choice (jitter, balancer); absent = from entropy. Left out when
    /// serialized while absent, since TOML has no null.
    #[serde(skip_serializing_if = "Option::is_none")]
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

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(p: &ClientPolicy) -> ClientPolicy {
        let text = toml::to_string(p).unwrap();
        toml::from_str(&text).unwrap_or_else(|e| panic!("{e}\n{text}"))
    }

    #[test]
    fn the_default_policy_survives_a_toml_round_trip() {
        let p = ClientPolicy::default();
        assert_eq!(round_trip(&p), p);
    }

    #[test]
    fn a_non_default_policy_survives_a_toml_round_trip() {
        let mut p = ClientPolicy::default();
        p.balancer.strategy = BalanceStrategy::Failover;
        p.hedge.percentile = 0.0;
        p.seed = Some(42);
        p.jitter = Jitter::Decorrelated;
        p.budget.mode = BudgetModeName::InFlight;
        p.breaker.window = WindowKind::Time;
        p.health_check.path = "/health/live".to_owned();
        p.bulkhead.adaptive = AdaptiveLimit::Gradient2;
        p.validate().unwrap();
        let back = round_trip(&p);
        assert_eq!(back, p);
        assert_ne!(back, ClientPolicy::default());
    }

    #[test]
    fn serialized_names_are_the_ones_the_settings_files_use() {
        let mut p = ClientPolicy::default();
        p.balancer.strategy = BalanceStrategy::Failover;
        let text = toml::to_string(&p).unwrap();
        for line in [
            "per_try_timeout_ms = 60",
            "jitter = \"full\"",
            "[balancer]",
            "strategy = \"failover\"",
            "[health_check]",
            "mode = \"ratio\"",
            "window = \"count\"",
        ] {
            assert!(text.lines().any(|l| l == line), "no `{line}` in\n{text}");
        }
        assert!(!text.contains("seed"), "an absent seed is left out");
    }

    #[test]
    fn the_adaptive_limit_reads_the_old_flags_and_the_new_names() {
        let read = |v: &str| -> AdaptiveLimit {
            let p: ClientPolicy = toml::from_str(&format!("[bulkhead]\nadaptive = {v}")).unwrap();
            p.bulkhead.adaptive
        };
        assert_eq!(read("false"), AdaptiveLimit::Off);
        assert_eq!(read("true"), AdaptiveLimit::Aimd);
        assert_eq!(read("\"vegas\""), AdaptiveLimit::Vegas);
        assert_eq!(read("\"gradient2\""), AdaptiveLimit::Gradient2);
        assert!(toml::from_str::<ClientPolicy>("[bulkhead]\nadaptive = \"fast\"").is_err());
        let text = toml::to_string(&ClientPolicy::default()).unwrap();
        assert!(text.lines().any(|l| l == "adaptive = false"), "{text}");
    }

    #[test]
    fn the_default_policy_is_valid() {
        ClientPolicy::default().validate().unwrap();
    }

    #[test]
    fn each_section_names_its_bad_field_by_its_dotted_key() {
        type Spoil = fn(&mut ClientPolicy);
        let cases: [(Spoil, &str); 9] = [
            (|p| p.max_attempts = 0, "max_attempts"),
            (|p| p.max_response_bytes = 0, "max_response_bytes"),
            (|p| p.budget.ttl_ms = 0, "budget.ttl_ms"),
            (|p| p.breaker.minimum_calls = 1_000, "breaker.minimum_calls"),
            (|p| p.bulkhead.min_concurrent = 0, "bulkhead.min_concurrent"),
            (|p| p.hedge.percentile = 1.0, "hedge.percentile"),
            (|p| p.balancer.default_rtt_ms = 0, "balancer.default_rtt_ms"),
            (
                |p| p.outlier.max_ejected_percent = 101,
                "outlier.max_ejected_percent",
            ),
            (
                |p| p.health_check.path = "health".to_owned(),
                "health_check.path",
            ),
        ];
        for (spoil, field) in cases {
            let mut p = ClientPolicy::default();
            spoil(&mut p);
            assert_eq!(p.validate().unwrap_err().field, field);
        }
    }

    #[test]
    fn the_first_bad_field_in_section_order_is_reported() {
        let mut p = ClientPolicy::default();
        p.health_check.interval_ms = 0;
        p.hedge.max_hedges = 11;
        p.budget.ratio = -1.0;
        assert_eq!(p.validate().unwrap_err().field, "budget.ratio");
        p.budget.ratio = 0.5;
        assert_eq!(p.validate().unwrap_err().field, "hedge.max_hedges");
        p.hedge.max_hedges = 4;
        assert_eq!(p.validate().unwrap_err().field, "health_check.interval_ms");
    }
}
