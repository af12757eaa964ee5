//! The client's metrics: their HELP text, written once ([`describe_metrics`]), and counter handles
//! resolved once, not looked up per call.
//!
//! `metrics::counter!(name, "dependency" => label)` builds a key (a label vector on the heap) and
//! asks the recorder for a handle each time it runs; with a Prometheus recorder that is a hash and
//! a registry lookup per increment. The layers run it several times per call, so they keep a
//! [`LazyCounter`] instead: resolved at its first increment and reused after. Resolution waits for
//! the first increment (not construction) so that a client built before any recorder is installed
//! still counts once one is; a recorder installed before the client is built also gets every
//! counter registered at zero when the client is built, so a dashboard shows 0, not "no data",
//! before the first retry, hedge or ejection.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{Counter, Histogram};

/// A `dependency`-labelled counter, resolved at its first use. Layers keep theirs behind the `Arc`
/// they already share, so a clone of a layer costs no extra reference count.
pub(crate) struct LazyCounter {
    name: &'static str,
    label: &'static str,
    /// One more label, as `(key, value)`: `reason` or `outcome`.
    extra: Option<(&'static str, &'static str)>,
    handle: OnceLock<Counter>,
}

impl std::fmt::Debug for LazyCounter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LazyCounter")
            .field("name", &self.name)
            .field("label", &self.label)
            .finish_non_exhaustive()
    }
}

impl LazyCounter {
    /// `name{dependency=label}`, registered at zero on the recorder installed now (if any).
    pub(crate) fn new(name: &'static str, label: &'static str) -> Self {
        metrics::counter!(name, "dependency" => label).increment(0);
        Self {
            name,
            label,
            extra: None,
            handle: OnceLock::new(),
        }
    }

    /// `name{dependency=label, key=value}`, registered at zero on the recorder installed now.
    pub(crate) fn with(
        name: &'static str,
        label: &'static str,
        key: &'static str,
        value: &'static str,
    ) -> Self {
        metrics::counter!(name, "dependency" => label, key => value).increment(0);
        Self {
            name,
            label,
            extra: Some((key, value)),
            handle: OnceLock::new(),
        }
    }

    /// Adds `n`.
    pub(crate) fn increment(&self, n: u64) {
        self.handle
            .get_or_init(|| match self.extra {
                None => metrics::counter!(self.name, "dependency" => self.label),
                Some((k, v)) => metrics::counter!(self.name, "dependency" => self.label, k => v),
            })
            .increment(n);
    }
}

/// How a call through the client ended, the `outcome` label of its counters and histogram. The
/// discriminant indexes [`CallMetrics`]' arrays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CallOutcome {
    /// An answer below 500 (a 4xx is the dependency's answer, not a failure of the call).
    Ok,
    /// Every allowed try failed, or the last answer was a 5xx.
    Exhausted,
    Deadline,
    BreakerOpen,
    BulkheadFull,
    NoEndpoint,
}

impl CallOutcome {
    const ALL: [CallOutcome; 6] = [
        Self::Ok,
        Self::Exhausted,
        Self::Deadline,
        Self::BreakerOpen,
        Self::BulkheadFull,
        Self::NoEndpoint,
    ];

    fn label(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Exhausted => "exhausted",
            Self::Deadline => "deadline",
            Self::BreakerOpen => "breaker_open",
            Self::BulkheadFull => "bulkhead_full",
            Self::NoEndpoint => "no_endpoint",
        }
    }

    /// Where in [`REJECTIONS`] a call turned away without an answer is counted.
    fn rejection(self) -> Option<usize> {
        match self {
            Self::Deadline => Some(0),
            Self::BreakerOpen => Some(1),
            Self::BulkheadFull => Some(2),
            _ => None,
        }
    }
}

/// The `reason`s of `finpay_client_rejections_total` that a whole call ends with.
const REJECTIONS: [&str; 3] = ["deadline", "breaker_open", "bulkhead_full"];

/// The per-call series of one client: calls and their latency by outcome, and the calls turned
/// away by the breaker, the bulkhead or the deadline. Every series is registered at zero when the
/// client is built; the handles resolve at first use, as [`LazyCounter`]'s do.
pub(crate) struct CallMetrics {
    label: &'static str,
    calls: [LazyCounter; 6],
    rejections: [LazyCounter; 3],
    durations: [OnceLock<Histogram>; 6],
}

impl CallMetrics {
    pub(crate) fn new(label: &'static str) -> Self {
        let calls = CallOutcome::ALL.map(|o| {
            LazyCounter::with("finpay_client_requests_total", label, "outcome", o.label())
        });
        let rejections = REJECTIONS
            .map(|r| LazyCounter::with("finpay_client_rejections_total", label, "reason", r));
        for o in CallOutcome::ALL {
            // Registered so a histogram_quantile over it has series before the first call.
            let _ = metrics::histogram!(
                "finpay_client_request_duration_seconds",
                "dependency" => label,
                "outcome" => o.label()
            );
        }
        Self {
            label,
            calls,
            rejections,
            durations: Default::default(),
        }
    }

    /// Counts one call that took `took` and ended as `outcome`.
    pub(crate) fn record(&self, outcome: CallOutcome, took: Duration) {
        let i = outcome as usize;
        self.calls[i].increment(1);
        if let Some(r) = outcome.rejection() {
            self.rejections[r].increment(1);
        }
        self.durations[i]
            .get_or_init(|| {
                metrics::histogram!(
                    "finpay_client_request_duration_seconds",
                    "dependency" => self.label,
                    "outcome" => outcome.label()
                )
            })
            .record(took.as_secs_f64());
    }
}

/// Gives every series the layers emit its HELP text (and unit), on the recorder installed now.
/// Call it once, after installing the recorder; the names are those of the crate docs' "Metrics".
pub fn describe_metrics() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(
        "finpay_client_requests_total",
        "Calls made through the client (effective requests: what callers asked), by dependency \
         and outcome (ok, exhausted, deadline, breaker_open, bulkhead_full, no_endpoint)."
    );
    describe_histogram!(
        "finpay_client_request_duration_seconds",
        Unit::Seconds,
        "Time of a call through the client, every try, backoff and hedge included, by \
         dependency and outcome."
    );
    describe_counter!(
        "finpay_client_rejections_total",
        "Calls or tries turned away, by dependency and reason: breaker_open, bulkhead_full, \
         deadline (the call), retry_budget, hedge_budget (a try the budget refused)."
    );
    describe_counter!(
        "finpay_client_attempts_total",
        "Tries sent to an endpoint (actual requests: retries and hedges included), by dependency."
    );
    describe_counter!(
        "finpay_client_retries_total",
        "Tries sent again after a failed try, by dependency."
    );
    describe_counter!(
        "finpay_client_budget_rejections_total",
        "Retries and hedges the retry budget refused to pay for, by dependency."
    );
    describe_counter!(
        "finpay_client_hedges_total",
        "Hedged copies of a slow try sent to another endpoint, by dependency."
    );
    describe_counter!(
        "finpay_client_hedges_won_total",
        "Hedged copies that answered before the try they copied, by dependency."
    );
    describe_counter!(
        "finpay_client_ejections_total",
        "Endpoints ejected by outlier detection, by dependency."
    );
    describe_gauge!(
        "finpay_client_breaker_state",
        "Circuit breaker state: 0 closed, 1 half-open, 2 open; by dependency, and by endpoint \
         for per-endpoint breakers."
    );
    describe_gauge!(
        "finpay_client_breaker_states",
        "Circuit breaker state as one series per state (closed, half_open, open): 1 for the \
         current state, 0 for the others; by dependency, and by endpoint for per-endpoint breakers."
    );
    describe_counter!(
        "finpay_client_breaker_transitions_total",
        "Circuit breaker state changes, by dependency (and endpoint), from and to."
    );
}
