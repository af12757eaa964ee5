//! Response future of [`super::CircuitBreaker`].

use std::future::Future;
use std::pin::Pin;

use crate::classify::BoxError;

/// Boxed: it awaits the inner call, then records the outcome on the permit.
pub type ResponseFuture<T> = Pin<Box<dyn Future<Output = Result<T, BoxError>> + Send>>;
