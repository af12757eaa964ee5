//! [`BulkheadLayer`].

use tower::Layer;

use super::{Bulkhead, Limiter};

/// Puts services behind one shared [`Limiter`].
#[derive(Debug, Clone)]
pub struct BulkheadLayer<C> {
    limiter: Limiter,
    classify: C,
}

impl<C> BulkheadLayer<C> {
    /// `classify` feeds the adaptive limit (failures shrink it); unused when the limit is fixed.
    pub fn new(limiter: Limiter, classify: C) -> Self {
        Self { limiter, classify }
    }
}

impl<S, C: Clone> Layer<S> for BulkheadLayer<C> {
    type Service = Bulkhead<S, C>;
    fn layer(&self, inner: S) -> Self::Service {
        Bulkhead {
            inner,
            limiter: self.limiter.clone(),
            classify: self.classify.clone(),
        }
    }
}
