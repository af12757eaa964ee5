//! The future shared by the layers that admit a call and want to hear how it went (a bulkhead slot
//! feeds its adaptive limit, a breaker permit its window): it polls the inner call and, when it
//! ends, hands the judged outcome to the guard. Unboxed, so admitting a call costs no allocation.

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;

use crate::classify::{BoxError, Classify};

/// Something held for the length of one call that is told whether the call failed.
pub trait Outcome {
    /// Called once, when the call ends. Dropping the guard unrecorded means the call was cancelled.
    fn record(self, failed: bool);
}

pin_project! {
    /// The inner call, and the guard that hears its outcome.
    pub struct Recorded<F, G, C, Req, T> {
        #[pin]
        inner: F,
        guard: Option<G>,
        classify: C,
        _types: PhantomData<fn(Req) -> T>,
    }
}

impl<F, G, C, Req, T> Recorded<F, G, C, Req, T> {
    /// `inner` reports to `guard`, judged by `classify`.
    pub fn new(inner: F, guard: G, classify: C) -> Self {
        Self {
            inner,
            guard: Some(guard),
            classify,
            _types: PhantomData,
        }
    }
}

impl<F, G, C, Req, T, E> Future for Recorded<F, G, C, Req, T>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
    G: Outcome,
    C: Classify<Req, T>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let res = std::task::ready!(this.inner.poll(cx)).map_err(Into::into);
        if let Some(guard) = this.guard.take() {
            guard.record(this.classify.classify(&res).is_failure());
        }
        Poll::Ready(res)
    }
}
