//! Errors of the balancer.

/// The endpoint set is empty; nothing was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, thiserror::Error)]
#[error("no endpoint available")]
pub struct NoEndpoint;
