//! [`FallbackLayer`].

use std::marker::PhantomData;
use std::sync::Arc;

use tower::Layer;

use super::Fallback;
use crate::classify::BoxError;

/// Replaces chosen errors with a fallback answer.
pub struct FallbackLayer<Res> {
    pub(crate) f: Arc<dyn Fn(BoxError) -> Result<Res, BoxError> + Send + Sync>,
    _res: PhantomData<fn() -> Res>,
}

impl<Res> Clone for FallbackLayer<Res> {
    fn clone(&self) -> Self {
        Self {
            f: self.f.clone(),
            _res: PhantomData,
        }
    }
}

impl<Res> std::fmt::Debug for FallbackLayer<Res> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FallbackLayer").finish_non_exhaustive()
    }
}

impl<Res: 'static> FallbackLayer<Res> {
    /// `f` sees every error and returns either a fallback answer or the error (to pass it on).
    pub fn new(f: impl Fn(BoxError) -> Result<Res, BoxError> + Send + Sync + 'static) -> Self {
        Self {
            f: Arc::new(f),
            _res: PhantomData,
        }
    }

    /// Falls back only for errors of type `E` (e.g. [`crate::breaker::BreakerOpen`]); `f` gets the
    /// typed error. Every other error passes through unchanged.
    pub fn on<E>(f: impl Fn(&E) -> Res + Send + Sync + 'static) -> Self
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        Self::new(move |err: BoxError| match err.downcast_ref::<E>() {
            Some(e) => Ok(f(e)),
            None => Err(err),
        })
    }
}

impl<S, Res> Layer<S> for FallbackLayer<Res> {
    type Service = Fallback<S, Res>;
    fn layer(&self, inner: S) -> Self::Service {
        Fallback {
            inner,
            f: self.f.clone(),
        }
    }
}
