//! Response future of [`super::Bulkhead`].

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;

use super::{BulkheadFull, Slot};
use crate::classify::{BoxError, Classify};
use crate::outcome::Recorded;

pin_project! {
    /// The inner call holding its slot, a rejection, or (with `max_wait > 0`) a boxed wait.
    #[project = ResponseFutureProj]
    pub enum ResponseFuture<F, C, Req, T> {
        /// A slot was free: the call runs holding it.
        Slotted { #[pin] call: Recorded<F, Slot, C, Req, T> },
        /// Full, and no waiting allowed.
        Rejected,
        /// Waits (bounded) for a slot, then calls.
        Waiting { fut: Pin<Box<dyn Future<Output = Result<T, BoxError>> + Send>> },
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
            ResponseFutureProj::Slotted { call } => call.poll(cx),
            ResponseFutureProj::Rejected => Poll::Ready(Err(Box::new(BulkheadFull))),
            ResponseFutureProj::Waiting { fut } => fut.as_mut().poll(cx),
        }
    }
}
