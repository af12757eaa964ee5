//! [`HedgeLayer`].

use std::sync::Arc;

use tower::Layer;

use super::{Hedge, HedgeConfig, Shared};

/// Wraps services in [`Hedge`].
#[derive(Debug, Clone)]
pub struct HedgeLayer<C> {
    shared: Arc<Shared>,
    classify: C,
}

impl<C> HedgeLayer<C> {
    /// Hedges by `classify`'s idempotency rule, paying from `config.budget`.
    pub fn new(config: HedgeConfig, classify: C) -> Self {
        Self {
            shared: Arc::new(Shared::new(config)),
            classify,
        }
    }
}

impl<S, C: Clone> Layer<S> for HedgeLayer<C> {
    type Service = Hedge<S, C>;
    fn layer(&self, inner: S) -> Self::Service {
        Hedge {
            inner,
            shared: self.shared.clone(),
            classify: self.classify.clone(),
        }
    }
}
