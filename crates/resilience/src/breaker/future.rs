//! Response future of [`super::CircuitBreaker`].

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;

use super::{BreakerOpen, Permit};
use crate::classify::{BoxError, Classify};
use crate::outcome::Recorded;

pin_project! {
    /// The inner call holding its permit, or the rejection of an open breaker.
    #[project = ResponseFutureProj]
    pub enum ResponseFuture<F, C, Req, T> {
        /// Admitted: the outcome goes to the breaker's window when the call ends.
        Admitted { #[pin] call: Recorded<F, Permit, C, Req, T> },
        /// Open: fails at once.
        Rejected { open: Option<BreakerOpen> },
    }
}

impl<F, C, Req, T, E> Future for ResponseFuture<F, C, Req, T>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
    C: Classify<Req, T>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            ResponseFutureProj::Admitted { call } => call.poll(cx),
            ResponseFutureProj::Rejected { open } => Poll::Ready(Err(match open.take() {
                Some(o) => Box::new(o),
                None => "breaker future polled after completion".into(),
            })),
        }
    }
}
