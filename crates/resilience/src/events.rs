//! Event hooks: every layer's decisions, for a caller that wants to see them without going
//! through our metric names (its own metrics, logs, tests, an adaptive controller of its own).
//!
//! Implement [`Events`] (every method has an empty default, so implement only the ones you want)
//! and install it with [`crate::ResilientClient::new_with_events`] (or
//! [`crate::ResilientClient::with_endpoints_and_events`], or on a layer's config as
//! [`EventHooks::new`]). The hooks run inline, on the thread that made the decision, so they must
//! be quick and must not block; anything slower belongs on a channel.
//!
//! Cost when unused: none on a call's happy path. A hook is called only where a layer already does
//! something rare (a retry, a hedge, a budget refusal, a breaker transition, an ejection, a
//! rejection), and when none is installed that place costs one test of an `Option`.
//!
//! Why a trait and not tower-resilience's per-layer listener lists: one object sees every layer of
//! a client, so it can relate them (a hedge that fired just before an ejection), and a layer keeps
//! one pointer, not a vector of boxed closures per kind of event.

use std::sync::Arc;
use std::time::Duration;

use crate::breaker::State;

/// What a layer turned away before it sent anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// The bulkhead had no free slot.
    BulkheadFull,
    /// The circuit breaker is open (or half-open with its probes taken); it admits the next
    /// call after `retry_after`.
    BreakerOpen {
        /// When the breaker admits a call again.
        retry_after: Duration,
    },
}

/// What a retry budget refused to pay for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BudgetUse {
    /// A retry.
    Retry,
    /// A hedge.
    Hedge,
}

/// Receives the layers' decisions. `dependency` is the client's name (the metrics label). Every
/// method does nothing unless implemented.
#[allow(unused_variables)]
pub trait Events: Send + Sync + 'static {
    /// A try failed and the retry layer will send try number `attempt` (2 for the first retry)
    /// after `backoff`.
    fn on_retry(&self, dependency: &'static str, attempt: u32, backoff: Duration) {}
    /// The hedge layer sent copy number `copy` (1 for the first hedge) of a try.
    fn on_hedge(&self, dependency: &'static str, copy: u32) {}
    /// Copy number `copy` answered first.
    fn on_hedge_won(&self, dependency: &'static str, copy: u32) {}
    /// The retry budget refused a retry or a hedge.
    fn on_budget_rejection(&self, dependency: &'static str, what: BudgetUse) {}
    /// A breaker changed state; `endpoint` is set for a per-endpoint breaker.
    fn on_breaker_transition(
        &self,
        dependency: &'static str,
        endpoint: Option<&str>,
        from: State,
        to: State,
    ) {
    }
    /// The balancer ejected `endpoint` (its key, displayed) for `ejection`.
    fn on_ejection(&self, dependency: &'static str, endpoint: &str, ejection: Duration) {}
    /// A call was turned away before anything was sent.
    fn on_rejection(&self, dependency: &'static str, why: Rejection) {}
}

/// The hooks a layer calls: none by default. Cloning is a reference count.
#[derive(Clone, Default)]
pub struct EventHooks(Option<Arc<dyn Events>>);

impl std::fmt::Debug for EventHooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "EventHooks(installed)"
        } else {
            "EventHooks(none)"
        })
    }
}

impl EventHooks {
    /// Calls `events` at every decision.
    pub fn new(events: Arc<dyn Events>) -> Self {
        Self(Some(events))
    }

    /// No hooks.
    pub fn none() -> Self {
        Self(None)
    }

    /// Whether hooks are installed.
    pub fn is_installed(&self) -> bool {
        self.0.is_some()
    }

    /// Runs `f` on the installed hooks, if any.
    #[inline]
    pub(crate) fn emit(&self, f: impl FnOnce(&dyn Events)) {
        if let Some(e) = &self.0 {
            f(e.as_ref());
        }
    }
}
