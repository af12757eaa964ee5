//! The admin API every service has on its admin listener, behind `Authorization: Bearer <admin
//! token>`: the fault switches (`/admin/faults`) and payment's dependency endpoints
//! (`/admin/dependencies/{service}`). `finpay up`, `finpay scale` and the chaos harness call them.
//!
//! [`FaultSettings`] is also the `[faults]` table of every service's settings: the body of a `PUT`
//! is a key set the service parses at start.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `GET`, `PUT` (replace) and `PATCH` (change the named fields) of the fault set.
pub const FAULTS: &str = "/admin/faults";
/// `PUT /admin/dependencies/{service}` (payment only), as an axum route.
pub const DEPENDENCY: &str = "/admin/dependencies/{service}";
/// Most replica URLs one dependency list holds.
pub const ENDPOINTS_MAX: usize = 64;

/// `PUT /admin/dependencies/{service}` body and answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Endpoints {
    /// Base URLs of the replicas, absolute `http://` URLs, e.g. `["http://127.0.0.1:9001"]`.
    #[schema(min_items = 1, max_items = 64)]
    pub urls: Vec<String>,
}

/// Injected faults. Drawn from an RNG seeded with `seed`, so a run can be replayed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct FaultSettings {
    pub seed: u64,
    /// Share of requests answered 500 or 503 (half each).
    #[schema(minimum = 0.0, maximum = 1.0)]
    pub error_rate: f64,
    /// Share of requests that hang for `hang_ms` (cut short by the request's deadline).
    #[schema(minimum = 0.0, maximum = 1.0)]
    pub hang_rate: f64,
    #[schema(maximum = 600_000)]
    pub hang_ms: u64,
    /// Added to every request: `latency_ms` plus a uniform draw in `0..=latency_jitter_ms`.
    #[schema(maximum = 600_000)]
    pub latency_ms: u64,
    #[schema(maximum = 600_000)]
    pub latency_jitter_ms: u64,
    /// Share of requests on which the process exits at once, like a pod crash.
    #[schema(minimum = 0.0, maximum = 1.0)]
    pub crash_rate: f64,
    /// A crash is drawn only once the process has run this long (0 = from the first request).
    /// A process that dies on 30% of its requests from the start never serves; one that runs a
    /// while and then crashes is the pod that Kubernetes restarts.
    #[schema(maximum = 600_000)]
    pub crash_after_ms: u64,
    /// Every business request gets 503.
    pub down: bool,
    /// Share of successful writes (POST, PUT, PATCH, DELETE) whose answer is lost after the write
    /// committed: a 500, or a dropped connection. On the wallet, a transfer that moved money.
    #[schema(minimum = 0.0, maximum = 1.0)]
    pub commit_then_fail_rate: f64,
}

impl Default for FaultSettings {
    fn default() -> Self {
        Self {
            seed: 0,
            error_rate: 0.0,
            hang_rate: 0.0,
            hang_ms: 3000,
            latency_ms: 0,
            latency_jitter_ms: 0,
            crash_rate: 0.0,
            crash_after_ms: 0,
            down: false,
            commit_then_fail_rate: 0.0,
        }
    }
}

/// Bounds on injected delays, so a typo cannot park a request for a day.
pub const MAX_FAULT_DELAY_MS: u64 = 600_000;

impl FaultSettings {
    /// Checks every rate and delay; the error names the field (without the `faults.` prefix).
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        for (name, rate) in [
            ("error_rate", self.error_rate),
            ("hang_rate", self.hang_rate),
            ("crash_rate", self.crash_rate),
            ("commit_then_fail_rate", self.commit_then_fail_rate),
        ] {
            if !(0.0..=1.0).contains(&rate) {
                return Err((name, format!("must be between 0.0 and 1.0, got {rate}")));
            }
        }
        for (name, ms) in [
            ("hang_ms", self.hang_ms),
            ("latency_ms", self.latency_ms),
            ("latency_jitter_ms", self.latency_jitter_ms),
            ("crash_after_ms", self.crash_after_ms),
        ] {
            if ms > MAX_FAULT_DELAY_MS {
                return Err((
                    name,
                    format!("must be at most {MAX_FAULT_DELAY_MS}, got {ms}"),
                ));
            }
        }
        Ok(())
    }
}
