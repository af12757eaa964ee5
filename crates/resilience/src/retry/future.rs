//! Response future of [`super::Retry`].

use std::future::Future;
use std::pin::Pin;

use crate::classify::BoxError;

/// Boxed: the retry loop awaits backoff sleeps and several inner calls.
pub type ResponseFuture<T> = Pin<Box<dyn Future<Output = Result<T, BoxError>> + Send>>;
