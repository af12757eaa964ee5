//! Layers for [`super::DeadlineService`] and [`super::PerTryTimeoutService`].

use std::time::Duration;

use tower::Layer;

use super::{DeadlineService, PerTryTimeoutService};

/// Applies a whole-call deadline: fail fast when spent, propagate it, stop waiting when it passes.
#[derive(Debug, Clone, Copy, Default)]
pub struct DeadlineLayer {
    default_budget: Option<Duration>,
    propagate_only: bool,
}

impl DeadlineLayer {
    /// Requests without a deadline get `now + default_budget`; `None` leaves them unbounded.
    pub fn new(default_budget: Option<Duration>) -> Self {
        Self {
            default_budget,
            propagate_only: false,
        }
    }

    /// Fail fast and propagate, but set no timer of its own: for a stack whose inner layers
    /// already bound every wait by the deadline ([`super::PerTryTimeoutLayer`] under a retry whose
    /// backoff stops at the deadline, as in [`crate::client::build_stack`]). A timer costs a
    /// registration in tokio's timer wheel and its removal on every call.
    pub fn propagate_only(mut self) -> Self {
        self.propagate_only = true;
        self
    }
}

impl<S> Layer<S> for DeadlineLayer {
    type Service = DeadlineService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        DeadlineService {
            inner,
            default_budget: self.default_budget,
            propagate_only: self.propagate_only,
        }
    }
}

/// Bounds each try by `min(per_try, deadline remaining)`.
#[derive(Debug, Clone, Copy)]
pub struct PerTryTimeoutLayer {
    per_try: Duration,
}

impl PerTryTimeoutLayer {
    /// A per-try limit.
    pub fn new(per_try: Duration) -> Self {
        Self { per_try }
    }
}

impl<S> Layer<S> for PerTryTimeoutLayer {
    type Service = PerTryTimeoutService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        PerTryTimeoutService {
            inner,
            per_try: self.per_try,
        }
    }
}
