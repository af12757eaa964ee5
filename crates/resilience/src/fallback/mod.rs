//! Fallback: a typed answer in place of chosen errors.
//!
//! Why typed and opt-in: a fallback is a business decision ("small amounts from accounts with a recent
//! SAFE verdict pass, marked for review"), not a transport one. For money the default is fail-closed:
//! no fallback layer, the error reaches the caller. A fallback names the errors it covers
//! ([`FallbackLayer::on`]), so an unexpected error never turns into a silent default, and the answer it
//! makes is a value of the response type the caller can mark (for example with a header or a field)
//! and record.

pub mod future;
pub mod layer;

use std::sync::Arc;
use std::task::{Context, Poll};

use tower::Service;

pub use self::layer::FallbackLayer;
use crate::classify::BoxError;

/// See the module docs.
pub struct Fallback<S, Res> {
    inner: S,
    f: Arc<dyn Fn(BoxError) -> Result<Res, BoxError> + Send + Sync>,
}

impl<S: Clone, Res> Clone for Fallback<S, Res> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            f: self.f.clone(),
        }
    }
}

impl<S: std::fmt::Debug, Res> std::fmt::Debug for Fallback<S, Res> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fallback")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S, Req, Res> Service<Req> for Fallback<S, Res>
where
    S: Service<Req, Response = Res>,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    Res: Send + 'static,
{
    type Response = Res;
    type Error = BoxError;
    type Future = future::ResponseFuture<Res>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let fut = self.inner.call(req);
        let f = self.f.clone();
        Box::pin(async move {
            match fut.await {
                Ok(r) => Ok(r),
                Err(e) => f(e.into()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::breaker::BreakerOpen;
    use std::time::Duration;
    use tower::{Layer, ServiceExt};
    use tower_test::mock;

    #[tokio::test(start_paused = true)]
    async fn chosen_error_is_replaced_by_the_fallback() {
        let (svc, mut h) = mock::pair::<(), &'static str>();
        let svc = FallbackLayer::on(|_: &BreakerOpen| "fallback").layer(svc);
        let call = tokio::spawn(svc.oneshot(()));
        h.next_request().await.unwrap().1.send_error(BreakerOpen {
            retry_after: Duration::from_secs(1),
        });
        assert_eq!(call.await.unwrap().unwrap(), "fallback");
    }

    #[tokio::test(start_paused = true)]
    async fn other_errors_pass_through() {
        let (svc, mut h) = mock::pair::<(), &'static str>();
        let svc = FallbackLayer::on(|_: &BreakerOpen| "fallback").layer(svc);
        let call = tokio::spawn(svc.oneshot(()));
        h.next_request()
            .await
            .unwrap()
            .1
            .send_error(crate::bulkhead::BulkheadFull);
        assert!(call
            .await
            .unwrap()
            .unwrap_err()
            .is::<crate::bulkhead::BulkheadFull>());
    }
}
