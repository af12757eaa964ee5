//! [`HedgeLayer`].

use tower::Layer;

use super::{Hedge, HedgeConfig};

/// Wraps services in [`Hedge`].
#[derive(Debug, Clone)]
pub struct HedgeLayer<C> {
    config: HedgeConfig,
    classify: C,
}

impl<C> HedgeLayer<C> {
    /// Hedges by `classify`'s idempotency rule, paying from `config.budget`.
    pub fn new(config: HedgeConfig, classify: C) -> Self {
        Self { config, classify }
    }
}

impl<S, C: Clone> Layer<S> for HedgeLayer<C> {
    type Service = Hedge<S, C>;
    fn layer(&self, inner: S) -> Self::Service {
        Hedge {
            inner,
            config: self.config.clone(),
            classify: self.classify.clone(),
        }
    }
}
