//! Response future of [`super::Hedge`], written out rather than a boxed `async` block: the first
//! try and the hedge timer are held in place, so a call answered within the delay allocates
//! nothing here, and the set of copies (with its allocations) is made by the first hedge.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::{Fuse, FusedFuture};
use futures::stream::{FuturesUnordered, StreamExt};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};

use super::{branch, judge, Branch, HedgeInner, Shared, Verdict};
use crate::classify::{BoxError, Classify};
use crate::deadline::future::{STALL_EXTENSIONS_MAX, STALL_GRACE};
use crate::events::BudgetUse;
use crate::retry::budget::RetryPermit;

pin_project! {
    /// The future [`super::Hedge`] returns.
    pub struct ResponseFuture<F, S, C, Req, Res> {
        #[pin]
        state: State<F, S, C, Req, Res>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, S, C, Req, Res> {
        /// Not hedged (hedging off, or a request that may not be sent twice): the one try.
        Single { #[pin] inner: F },
        /// The first try racing its copies.
        Race {
            #[pin] first: Fuse<F>,
            #[pin] timer: Sleep,
            race: Race<S, C, Req, Res>,
        },
    }
}

/// Everything a race needs besides the first try and the timer.
struct Race<S, C, Req, Res> {
    shared: Arc<Shared>,
    /// Sends the copies (each through `oneshot`, which waits for readiness).
    svc: S,
    classify: C,
    template: Req,
    first_start: Instant,
    delay: Duration,
    /// Made by the first hedge.
    inflight: Option<FuturesUnordered<Branch<Res>>>,
    /// Tries sent so far, the first included.
    sent: u32,
    /// The budget turned a hedge away, or the request could not be copied: no more copies.
    stopped: bool,
    permits: Vec<RetryPermit>,
    /// The last retryable failure, returned when every try ends that way.
    last: Option<Result<Res, BoxError>>,
    /// Times the timer was re-armed because it fired late (a stall of this process).
    stall_extensions: u32,
}

impl<F, S, C, Req, Res> ResponseFuture<F, S, C, Req, Res> {
    /// The one try, passed through.
    pub(super) fn single(inner: F) -> Self {
        Self {
            state: State::Single { inner },
        }
    }

    /// `first` (sent at `first_start`) raced against copies of `template` sent through `svc`.
    pub(super) fn race(
        first: F,
        first_start: Instant,
        delay: Duration,
        shared: Arc<Shared>,
        svc: S,
        classify: C,
        template: Req,
    ) -> Self
    where
        F: Future,
    {
        Self {
            state: State::Race {
                first: futures::FutureExt::fuse(first),
                timer: tokio::time::sleep_until(first_start + delay),
                race: Race {
                    shared,
                    svc,
                    classify,
                    template,
                    first_start,
                    delay,
                    inflight: None,
                    sent: 1,
                    stopped: false,
                    permits: Vec::new(),
                    last: None,
                    stall_extensions: 0,
                },
            },
        }
    }
}

impl<S, C, Req, Res> Race<S, C, Req, Res>
where
    S: HedgeInner<Req, Res>,
    C: Classify<Req, Res>,
    Req: Send + 'static,
    Res: Send + 'static,
{
    /// Whether another copy may still be sent.
    fn can_hedge(&self) -> bool {
        !self.stopped && self.sent <= self.shared.config.max_hedges
    }

    /// Sends one more copy if the count and the budget allow.
    fn fire(&mut self) {
        if !self.can_hedge() {
            return;
        }
        if let Some(b) = &self.shared.config.budget {
            match b.try_withdraw() {
                Some(p) => self.permits.push(p),
                None => {
                    self.stopped = true;
                    self.shared.budget_rejections.increment(1);
                    self.shared.rejections.increment(1);
                    let cfg = &self.shared.config;
                    cfg.events
                        .emit(|e| e.on_budget_rejection(cfg.label, BudgetUse::Hedge));
                    return;
                }
            }
        }
        let Some(copy) = self.classify.clone_request(&self.template) else {
            self.stopped = true;
            return;
        };
        self.shared.hedges.increment(1);
        let (cfg, n) = (&self.shared.config, self.sent);
        cfg.events.emit(|e| e.on_hedge(cfg.label, n));
        self.inflight
            .get_or_insert_with(FuturesUnordered::new)
            .push(branch(self.svc.clone(), self.sent as usize, copy));
        self.sent += 1;
    }

    /// Whether a copy is still running.
    fn in_flight(&self) -> bool {
        self.inflight.as_ref().is_some_and(|f| !f.is_empty())
    }

    /// The last failure, when every try has ended and no copy can follow.
    fn give_up(&mut self) -> Result<Res, BoxError> {
        self.last
            .take()
            .unwrap_or_else(|| Err("hedge: no try was sent".into()))
    }
}

impl<F, E, S, C, Req, Res> Future for ResponseFuture<F, S, C, Req, Res>
where
    F: Future<Output = Result<Res, E>>,
    E: Into<BoxError>,
    S: HedgeInner<Req, Res>,
    C: Classify<Req, Res>,
    Req: Send + 'static,
    Res: Send + 'static,
{
    type Output = Result<Res, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let (mut first, mut timer, race) = match self.project().state.project() {
            StateProj::Single { inner } => return inner.poll(cx).map_err(Into::into),
            StateProj::Race { first, timer, race } => (first, timer, race),
        };
        // Each turn either ends the call, or sees one try end or the timer fire, and looks again.
        loop {
            if !first.is_terminated() {
                if let Poll::Ready(res) = first.as_mut().poll(cx) {
                    let (shared, c) = (&race.shared, &race.classify);
                    let res = res.map_err(Into::into);
                    match judge(shared, c, 0, race.first_start, res, &mut race.last) {
                        Verdict::Done(res) => return Poll::Ready(res),
                        Verdict::Retry => race.fire(),
                        Verdict::TimedOut if !race.can_hedge() => {
                            return Poll::Ready(race.give_up())
                        }
                        Verdict::TimedOut => race.fire(),
                    }
                    if !race.in_flight() {
                        return Poll::Ready(race.give_up());
                    }
                    continue;
                }
            }
            if let Some(copies) = race.inflight.as_mut() {
                if let Poll::Ready(Some((i, start, res))) = copies.poll_next_unpin(cx) {
                    let (shared, c) = (&race.shared, &race.classify);
                    match judge(shared, c, i, start, res, &mut race.last) {
                        Verdict::Done(res) => return Poll::Ready(res),
                        Verdict::Retry => race.fire(),
                        Verdict::TimedOut if !race.can_hedge() => {
                            return Poll::Ready(race.give_up())
                        }
                        Verdict::TimedOut => race.fire(),
                    }
                    if first.is_terminated() && !race.in_flight() {
                        return Poll::Ready(race.give_up());
                    }
                    continue;
                }
            }
            if race.can_hedge() {
                if timer.as_mut().poll(cx).is_ready() {
                    // Fired late by more than the grace: this process was stalled, and the
                    // answers of the tries in flight may be waiting unread. Give them the late
                    // time back (as the per-try timeout does) before paying for a copy.
                    let now = Instant::now();
                    let late = now.saturating_duration_since(timer.deadline());
                    if late >= STALL_GRACE && race.stall_extensions < STALL_EXTENSIONS_MAX {
                        race.stall_extensions += 1;
                        timer.as_mut().reset(now + late.min(race.delay));
                        continue;
                    }
                    race.fire();
                    // One delay after the last deadline, not after now: the timer wheel fires
                    // up to a tick late, and counting from now would add that to every copy.
                    let next = (timer.deadline() + race.delay).max(Instant::now());
                    timer.as_mut().reset(next);
                    continue;
                }
            } else if first.is_terminated() && !race.in_flight() {
                return Poll::Ready(race.give_up());
            }
            return Poll::Pending;
        }
    }
}
