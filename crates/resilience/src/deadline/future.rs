//! Response futures of the deadline layers. They are written out rather than boxed `async` blocks:
//! every call passes both layers, and a box is an allocation, a copy of the inner future into it
//! and a dynamic call per poll.

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep, Timeout};

use super::error::{DeadlineExceeded, PerTryTimeout};
use crate::classify::BoxError;

/// A per-try timer firing this much later than it was set for is taken as a stall of the calling
/// process (CPU starvation, a stop), not slowness of the callee (tokio's timers have millisecond
/// resolution): that time is the caller's, and an answer may be waiting in the socket.
pub(crate) const STALL_GRACE: Duration = Duration::from_millis(5);
/// How many times one try's timeout is extended for stalls of the caller.
pub(crate) const STALL_EXTENSIONS_MAX: u32 = 3;

pin_project! {
    /// The future [`super::DeadlineService`] returns.
    #[project = DeadlineProj]
    pub enum DeadlineFuture<F> {
        /// The deadline was spent before anything was sent.
        Spent,
        /// Nothing to enforce here: no deadline, or the layers below bound every wait by it.
        Pass { #[pin] inner: F },
        /// The inner call, cut at the deadline.
        Bounded { #[pin] inner: Timeout<F> },
    }
}

impl<F, T, E> Future for DeadlineFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            DeadlineProj::Spent => Poll::Ready(Err(Box::new(DeadlineExceeded))),
            DeadlineProj::Pass { inner } => inner.poll(cx).map_err(Into::into),
            DeadlineProj::Bounded { inner } => Poll::Ready(match ready!(inner.poll(cx)) {
                Ok(r) => r.map_err(Into::into),
                Err(_) => Err(Box::new(DeadlineExceeded)),
            }),
        }
    }
}

pin_project! {
    /// The future [`super::PerTryTimeoutService`] returns.
    #[project = PerTryProj]
    pub enum PerTryFuture<F> {
        /// The deadline was spent before anything was sent.
        Spent,
        /// The try, and the timer that cuts it.
        Running {
            #[pin] inner: F,
            #[pin] timer: Sleep,
            until: Instant,
            limit: Duration,
            hard: Option<Instant>,
            spent_by_deadline: bool,
            extensions: u32,
        },
    }
}

impl<F> PerTryFuture<F> {
    /// `inner`, cut at `now + limit`, or at `hard` (the deadline) when the timer fires late.
    pub(super) fn running(
        inner: F,
        now: Instant,
        limit: Duration,
        hard: Option<Instant>,
        spent_by_deadline: bool,
    ) -> Self {
        let until = now + limit;
        Self::Running {
            inner,
            timer: tokio::time::sleep_until(until),
            until,
            limit,
            hard,
            spent_by_deadline,
            extensions: 0,
        }
    }
}

impl<F, T, E> Future for PerTryFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let PerTryProj::Running {
            mut inner,
            mut timer,
            until,
            limit,
            hard,
            spent_by_deadline,
            extensions,
        } = self.project()
        else {
            return Poll::Ready(Err(Box::new(DeadlineExceeded)));
        };
        loop {
            // The answer first: one that is ready wins over a timer that fired in the same instant.
            if let Poll::Ready(r) = inner.as_mut().poll(cx) {
                return Poll::Ready(r.map_err(Into::into));
            }
            ready!(timer.as_mut().poll(cx));
            // Fired. Late by more than the grace means this process was stalled: give the time
            // back (at most `STALL_EXTENSIONS_MAX` times, never past the deadline).
            let now = Instant::now();
            let late = now.saturating_duration_since(*until);
            let stalled = late >= STALL_GRACE && !hard.is_some_and(|h| now >= h);
            if stalled && *extensions < STALL_EXTENSIONS_MAX {
                *extensions += 1;
                let extended = now + late.min(*limit);
                *until = hard.map_or(extended, |h| extended.min(h));
                timer.as_mut().reset(*until);
                continue;
            }
            return Poll::Ready(Err(if *spent_by_deadline {
                Box::new(DeadlineExceeded) as BoxError
            } else {
                Box::new(PerTryTimeout)
            }));
        }
    }
}
