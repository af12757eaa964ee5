//! Response future of [`super::Bulkhead`].

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;

use super::{BulkheadFull, Slot};
use crate::classify::{BoxError, Classify};

/// The slow path: waits for a slot, then calls.
type Waiting<T> = Pin<Box<dyn Future<Output = Result<T, BoxError>> + Send>>;

pin_project! {
    /// The inner call holding its slot, a rejection, or (with `max_wait > 0`) a boxed wait.
    pub struct ResponseFuture<F, C, Req, T> {
        #[pin]
        kind: Kind<F, C, Req, T>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F, C, Req, T> {
        Slotted {
            #[pin]
            inner: F,
            slot: Option<Slot>,
            classify: C,
            _types: PhantomData<fn(Req) -> T>,
        },
        Rejected,
        Waiting { fut: Waiting<T> },
    }
}

impl<F, C, Req, T> ResponseFuture<F, C, Req, T> {
    pub(super) fn slotted(inner: F, slot: Slot, classify: C) -> Self {
        Self {
            kind: Kind::Slotted {
                inner,
                slot: Some(slot),
                classify,
                _types: PhantomData,
            },
        }
    }

    pub(super) fn rejected() -> Self {
        Self {
            kind: Kind::Rejected,
        }
    }

    pub(super) fn waiting(fut: Waiting<T>) -> Self {
        Self {
            kind: Kind::Waiting { fut },
        }
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
        match self.project().kind.project() {
            KindProj::Slotted {
                inner,
                slot,
                classify,
                ..
            } => {
                let res = std::task::ready!(inner.poll(cx)).map_err(Into::into);
                if let Some(slot) = slot.take() {
                    slot.record(classify.classify(&res).is_failure());
                }
                Poll::Ready(res)
            }
            KindProj::Rejected => Poll::Ready(Err(Box::new(BulkheadFull))),
            KindProj::Waiting { fut } => fut.as_mut().poll(cx),
        }
    }
}
