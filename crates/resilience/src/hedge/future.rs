//! Response future of [`super::Hedge`].

use std::future::Future;
use std::pin::Pin;

use crate::classify::BoxError;

/// Boxed: it races the original and its hedges.
pub type ResponseFuture<T> = Pin<Box<dyn Future<Output = Result<T, BoxError>> + Send>>;
