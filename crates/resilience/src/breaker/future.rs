//! Response future of [`super::CircuitBreaker`].

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;

use super::{BreakerOpen, Permit};
use crate::classify::{BoxError, Classify};

pin_project! {
    /// The inner call with its permit (the outcome is recorded when it ends), or the rejection of
    /// an open breaker. Not boxed: the breaker adds no allocation to a call.
    pub struct ResponseFuture<F, C, Req, T> {
        #[pin]
        kind: Kind<F, C, Req, T>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F, C, Req, T> {
        Admitted {
            #[pin]
            inner: F,
            permit: Option<Permit>,
            classify: C,
            _types: PhantomData<fn(Req) -> T>,
        },
        Rejected { open: Option<BreakerOpen> },
    }
}

impl<F, C, Req, T> ResponseFuture<F, C, Req, T> {
    pub(super) fn admitted(inner: F, permit: Permit, classify: C) -> Self {
        Self {
            kind: Kind::Admitted {
                inner,
                permit: Some(permit),
                classify,
                _types: PhantomData,
            },
        }
    }

    pub(super) fn rejected(open: BreakerOpen) -> Self {
        Self {
            kind: Kind::Rejected { open: Some(open) },
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
            KindProj::Admitted {
                inner,
                permit,
                classify,
                ..
            } => {
                let res = std::task::ready!(inner.poll(cx)).map_err(Into::into);
                if let Some(p) = permit.take() {
                    p.record(classify.classify(&res).is_failure());
                }
                Poll::Ready(res)
            }
            KindProj::Rejected { open } => Poll::Ready(Err(match open.take() {
                Some(o) => Box::new(o),
                None => "breaker future polled after completion".into(),
            })),
        }
    }
}
