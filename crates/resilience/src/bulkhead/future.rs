//! Response future of [`super::Bulkhead`].

use std::future::Future;
use std::pin::Pin;

use crate::classify::BoxError;

/// Boxed: it may wait for a slot, then holds it for the inner call.
pub type ResponseFuture<T> = Pin<Box<dyn Future<Output = Result<T, BoxError>> + Send>>;
