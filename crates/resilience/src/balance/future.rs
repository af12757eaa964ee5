//! Response future of [`super::Balance`].

use std::future::Future;
use std::pin::Pin;

use crate::classify::BoxError;

/// Boxed: it waits for the endpoint, then records latency and outcome.
pub type ResponseFuture<T> = Pin<Box<dyn Future<Output = Result<T, BoxError>> + Send>>;
