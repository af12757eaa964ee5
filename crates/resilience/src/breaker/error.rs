//! Errors of the circuit breaker.

use std::time::Duration;

/// The breaker is open (or half-open with every probe slot taken); nothing was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("circuit breaker open, retry after {retry_after:?}")]
pub struct BreakerOpen {
    /// When the breaker will next admit a probe.
    pub retry_after: Duration,
}

/// A breaker setting out of range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid breaker config: {0}")]
pub struct InvalidBreakerConfig(pub &'static str);
