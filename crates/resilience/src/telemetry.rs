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

use metrics::Counter;

/// A `dependency`-labelled counter, resolved at its first use. Layers keep theirs behind the `Arc`
/// they already share, so a clone of a layer costs no extra reference count.
pub(crate) struct LazyCounter {
    name: &'static str,
    label: &'static str,
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
            handle: OnceLock::new(),
        }
    }

    /// Adds `n`.
    pub(crate) fn increment(&self, n: u64) {
        self.handle
            .get_or_init(|| metrics::counter!(self.name, "dependency" => self.label))
            .increment(n);
    }
}

/// Gives every series the layers emit its HELP text (and unit), on the recorder installed now.
/// Call it once, after installing the recorder; the names are those of the crate docs' "Metrics".
pub fn describe_metrics() {
    use metrics::{describe_counter, describe_gauge};
    describe_counter!(
        "finpay_client_requests_total",
        "Calls made through the client (effective requests: what callers asked), by dependency."
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
    describe_counter!(
        "finpay_client_breaker_transitions_total",
        "Circuit breaker state changes, by dependency (and endpoint), from and to."
    );
}
