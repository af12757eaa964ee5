//! [`RetryLayer`].

use tower::Layer;

use super::{Retry, RetryConfig};

/// Wraps a service in [`Retry`] with a shared configuration.
#[derive(Debug, Clone)]
pub struct RetryLayer<C> {
    config: RetryConfig,
    classify: C,
}

impl<C> RetryLayer<C> {
    /// Retries by `classify`'s rules, within `config`'s attempts and budget.
    pub fn new(config: RetryConfig, classify: C) -> Self {
        Self { config, classify }
    }
}

impl<S, C: Clone> Layer<S> for RetryLayer<C> {
    type Service = Retry<S, C>;
    fn layer(&self, inner: S) -> Self::Service {
        Retry {
            inner,
            config: self.config.clone(),
            classify: self.classify.clone(),
        }
    }
}
