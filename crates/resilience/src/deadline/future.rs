//! Response future of the deadline layers.

use std::future::Future;
use std::pin::Pin;

use crate::classify::BoxError;

/// The boxed future both deadline services return.
pub type ResponseFuture<T> = Pin<Box<dyn Future<Output = Result<T, BoxError>> + Send>>;
