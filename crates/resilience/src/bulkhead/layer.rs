//! [`BulkheadLayer`].

use tower::Layer;

use super::{Bulkhead, Limiter};
use crate::events::EventHooks;

/// Puts services behind one shared [`Limiter`].
#[derive(Debug, Clone)]
pub struct BulkheadLayer<C> {
    limiter: Limiter,
    classify: C,
    hooks: Option<(&'static str, EventHooks)>,
}

impl<C> BulkheadLayer<C> {
    /// `classify` feeds the adaptive limit (failures shrink it); unused when the limit is fixed.
    pub fn new(limiter: Limiter, classify: C) -> Self {
        Self {
            limiter,
            classify,
            hooks: None,
        }
    }

    /// Tells `events` of every call turned away, as dependency `label`.
    pub fn with_events(mut self, label: &'static str, events: EventHooks) -> Self {
        self.hooks = events.is_installed().then_some((label, events));
        self
    }
}

impl<S, C: Clone> Layer<S> for BulkheadLayer<C> {
    type Service = Bulkhead<S, C>;
    fn layer(&self, inner: S) -> Self::Service {
        Bulkhead {
            inner,
            limiter: self.limiter.clone(),
            classify: self.classify.clone(),
            hooks: self.hooks.clone(),
        }
    }
}
