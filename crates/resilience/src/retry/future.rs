//! Response future of [`super::Retry`], written out rather than a boxed `async` block: the try in
//! flight is held in place, so a call whose first try settles it allocates nothing here. The
//! backoff timer is boxed, because only retries reach it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::time::Sleep;
use tower::Service;

use super::budget::{RequestGuard, RetryPermit};
use super::Shared;
use crate::classify::{BoxError, Class, Classify};
use crate::deadline::{Deadline, PerTryTimeout};
use crate::events::BudgetUse;

pin_project! {
    /// The future [`super::Retry`] returns.
    pub struct ResponseFuture<F, S, C, Req> {
        #[pin]
        state: State<F>,
        call: Call<S, C, Req>,
    }
}

/// What a call keeps between its tries.
struct Call<S, C, Req> {
    /// Sends the tries after the first.
    svc: S,
    shared: Arc<Shared>,
    classify: C,
    /// While a try runs: the copy for the next one (`None` when it is the last allowed or the
    /// request cannot be copied). While waiting to retry: the request to send.
    next: Option<Req>,
    idempotent: bool,
    deadline: Option<Deadline>,
    /// Tries sent so far.
    attempt: u32,
    prev_sleep: Duration,
    /// The budget taken for the retry in flight.
    permit: Option<RetryPermit>,
    /// This call's deposit in the budget, held to its end.
    _deposit: RequestGuard,
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        /// A try in flight.
        Calling { #[pin] fut: F },
        /// Waiting out the backoff before the next try.
        Backoff { sleep: Pin<Box<Sleep>> },
        /// Waiting for the service to be ready for the next try.
        Readying,
    }
}

impl<F, S, C, Req> ResponseFuture<F, S, C, Req> {
    /// Sends the first try of `req` on `inner`, which its `poll_ready` made ready; the later
    /// tries go through a clone of it.
    pub(super) fn start<Res>(inner: &mut S, req: Req, shared: Arc<Shared>, classify: C) -> Self
    where
        S: Service<Req, Response = Res, Future = F> + Clone,
        C: Classify<Req, Res>,
    {
        let deposit = shared.config.budget.deposit();
        let idempotent = classify.is_idempotent(&req);
        let deadline = classify.deadline(&req);
        let next = copy_for_next(&classify, &shared, 1, &req);
        let first = inner.call(req);
        Self {
            state: State::Calling { fut: first },
            call: Call {
                svc: inner.clone(),
                shared,
                classify,
                next,
                idempotent,
                deadline,
                attempt: 1,
                prev_sleep: Duration::ZERO,
                permit: None,
                _deposit: deposit,
            },
        }
    }
}

/// A copy of `req` to send after try number `attempt`, while another try is allowed (`None`
/// otherwise, or when the request cannot be copied).
fn copy_for_next<C, Req, Res>(classify: &C, shared: &Shared, attempt: u32, req: &Req) -> Option<Req>
where
    C: Classify<Req, Res>,
{
    if attempt < shared.config.max_attempts {
        classify.clone_request(req)
    } else {
        None
    }
}

/// What to do after a try.
enum Next<Res> {
    /// Return this result.
    Return(Result<Res, BoxError>),
    /// Sleep this long, then send the next try.
    Retry(Duration),
}

impl<F, E, S, C, Req, Res> Future for ResponseFuture<F, S, C, Req>
where
    F: Future<Output = Result<Res, E>>,
    E: Into<BoxError>,
    S: Service<Req, Response = Res, Future = F, Error = E>,
    C: Classify<Req, Res>,
{
    type Output = Result<Res, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let (mut state, call) = (this.state, this.call);
        loop {
            let res = match state.as_mut().project() {
                StateProj::Calling { fut } => ready!(fut.poll(cx)).map_err(Into::into),
                StateProj::Backoff { sleep } => {
                    ready!(sleep.as_mut().poll(cx));
                    call.shared.retries.increment(1);
                    call.attempt += 1;
                    state.set(State::Readying);
                    continue;
                }
                StateProj::Readying => {
                    let ready = ready!(call.svc.poll_ready(cx));
                    let Some(req) = call.next.take() else {
                        return Poll::Ready(Err("retry: no request to send".into()));
                    };
                    call.next = copy_for_next(&call.classify, &call.shared, call.attempt, &req);
                    match ready {
                        Ok(()) => {
                            let fut = call.svc.call(req);
                            state.set(State::Calling { fut });
                            continue;
                        }
                        // The try fails without being sent; it is judged like any other.
                        Err(e) => Err(e.into()),
                    }
                }
            };
            match call.decide(res) {
                Next::Return(res) => return Poll::Ready(res),
                Next::Retry(sleep) if sleep.is_zero() => {
                    call.shared.retries.increment(1);
                    call.attempt += 1;
                    state.set(State::Readying);
                }
                Next::Retry(sleep) => state.set(State::Backoff {
                    sleep: Box::pin(tokio::time::sleep(sleep)),
                }),
            }
        }
    }
}

impl<S, C, Req> Call<S, C, Req> {
    /// Whether the try that ended with `res` is retried, and after how long.
    fn decide<Res>(&mut self, res: Result<Res, BoxError>) -> Next<Res>
    where
        C: Classify<Req, Res>,
    {
        let cfg = &self.shared.config;
        let retry = match self.classify.classify(&res) {
            Class::Retry => self.idempotent,
            Class::RetrySafe => true,
            Class::Success | Class::Failure => false,
        };
        if !retry || self.next.is_none() {
            return Next::Return(res);
        }
        let Some(permit) = cfg.budget.try_withdraw() else {
            self.shared.budget_rejections.increment(1);
            self.shared.rejections.increment(1);
            cfg.events
                .emit(|e| e.on_budget_rejection(cfg.label, BudgetUse::Retry));
            return Next::Return(res);
        };
        // A try that ran out its per-try timeout has already waited longer than the backoff's
        // first steps, and tries that each wait out a timeout cannot storm the dependency: the
        // next one goes at once. The backoff is still drawn, so the later ones keep growing.
        let backoff = cfg.backoff.delay(self.attempt, self.prev_sleep);
        let timed_out = matches!(&res, Err(e) if e.is::<PerTryTimeout>());
        let mut sleep = if timed_out { Duration::ZERO } else { backoff };
        if let Some(ra) = self.classify.retry_after(&res) {
            if !cfg.retry_after_max.is_zero() {
                sleep = sleep.max(ra.min(cfg.retry_after_max));
            }
        }
        if self.deadline.is_some_and(|d| sleep >= d.remaining()) {
            return Next::Return(res);
        }
        self.prev_sleep = backoff;
        self.permit = Some(permit);
        let next = self.attempt + 1;
        cfg.events.emit(|e| e.on_retry(cfg.label, next, sleep));
        Next::Retry(sleep)
    }
}
