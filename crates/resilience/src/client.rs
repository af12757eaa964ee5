//! The ready-made HTTP client stack: every layer of this crate composed in front of a pooled hyper
//! client, over a set of replicas. This is what `finpay-services` uses for fraud, wallet and
//! notification. CONTRACT FILE: the signatures below are what services code against; bodies are
//! filled in by the resilience work.

use std::time::Duration;

use bytes::Bytes;
use serde::Deserialize;

/// An absolute point in time by which a whole call (all tries, all hedges) must finish.
/// Carried in request extensions and in the `finpay-deadline-ms` header (Unix epoch milliseconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline(pub tokio::time::Instant);

pub const DEADLINE_HEADER: &str = "finpay-deadline-ms";

/// Every knob of one dependency's client. Deserialized from the service's TOML; `validate()` at start.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClientPolicy {
    pub per_try_timeout_ms: u64,
    pub max_attempts: u32,
    pub backoff_base_ms: u64,
    pub backoff_max_ms: u64,
    // ... budget, breaker, bulkhead, hedge, balancer, outlier, health check sub-tables
}

impl Default for ClientPolicy {
    fn default() -> Self {
        todo!()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("invalid client policy: {field}: {reason}")]
pub struct InvalidConfig {
    pub field: &'static str,
    pub reason: String,
}

impl ClientPolicy {
    pub fn validate(&self) -> Result<(), InvalidConfig> {
        todo!()
    }
}

/// Why a call produced no usable response.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("deadline exceeded")]
    DeadlineExceeded,
    #[error("circuit breaker open")]
    BreakerOpen { retry_after: Duration },
    #[error("bulkhead full")]
    BulkheadFull,
    #[error("no endpoint available")]
    NoEndpoint,
    #[error("attempts exhausted: {last}")]
    Exhausted { last: String },
}

pub struct ResilientClient;

impl ResilientClient {
    pub fn new(
        _name: &'static str,
        _endpoints: Vec<http::Uri>,
        _policy: ClientPolicy,
    ) -> Result<Self, InvalidConfig> {
        todo!()
    }

    pub async fn call(
        &self,
        _req: http::Request<Bytes>,
        _deadline: Deadline,
    ) -> Result<http::Response<Bytes>, CallError> {
        todo!()
    }
}
