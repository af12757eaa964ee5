//! Response future of [`super::Fallback`].

use std::future::Future;
use std::pin::Pin;

use crate::classify::BoxError;

/// Boxed: it awaits the inner call and maybe replaces its error.
pub type ResponseFuture<T> = Pin<Box<dyn Future<Output = Result<T, BoxError>> + Send>>;
