//! [`CircuitBreakerLayer`].

use tower::Layer;

use super::{Breaker, CircuitBreaker};

/// Wraps services in a [`CircuitBreaker`] sharing one [`Breaker`]: per service when the layer wraps
/// the whole stack, per endpoint when each endpoint gets its own `Breaker`.
#[derive(Debug, Clone)]
pub struct CircuitBreakerLayer<C> {
    breaker: Breaker,
    classify: C,
}

impl<C> CircuitBreakerLayer<C> {
    /// Judges outcomes with `classify` and keeps state in `breaker`.
    pub fn new(breaker: Breaker, classify: C) -> Self {
        Self { breaker, classify }
    }
}

impl<S, C: Clone> Layer<S> for CircuitBreakerLayer<C> {
    type Service = CircuitBreaker<S, C>;
    fn layer(&self, inner: S) -> Self::Service {
        CircuitBreaker {
            inner,
            breaker: self.breaker.clone(),
            classify: self.classify.clone(),
        }
    }
}
