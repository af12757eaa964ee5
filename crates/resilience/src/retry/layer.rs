//! [`RetryLayer`].

use std::sync::Arc;

use tower::Layer;

use super::{Retry, RetryConfig, Shared};

/// Wraps a service in [`Retry`] with a shared configuration.
#[derive(Debug, Clone)]
pub struct RetryLayer<C> {
    shared: Arc<Shared>,
    classify: C,
}

impl<C> RetryLayer<C> {
    /// Retries by `classify`'s rules, within `config`'s attempts and budget.
    pub fn new(config: RetryConfig, classify: C) -> Self {
        Self {
            shared: Arc::new(Shared::new(config)),
            classify,
        }
    }
}

impl<S, C: Clone> Layer<S> for RetryLayer<C> {
    type Service = Retry<S, C>;
    fn layer(&self, inner: S) -> Self::Service {
        Retry {
            inner,
            shared: self.shared.clone(),
            classify: self.classify.clone(),
        }
    }
}
