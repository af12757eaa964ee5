//! The process-wide Prometheus recorder and the HELP text of every series the services emit.
//!
//! Every metric name used in this crate is described once, in [`describe`], with its unit where it
//! has one; the resilience crate's own are described by [`finpay_resilience::describe_metrics`]. A
//! test reads the sources of both crates and fails when a name is emitted but not described (or
//! described but no longer emitted), so a new metric is one line in the code that emits it and
//! one in its crate's describe function.
//!
//! The recorder is installed before a service builds its clients ([`crate::app::Application::build`]
//! calls [`metrics_handle`] first): the clients register their series at zero when they are built
//! (breaker state, requests, attempts, retries, hedges, ejections), and a series registered with
//! no recorder installed is lost. A dashboard then shows 0, not "no data", before the first event.

use std::sync::OnceLock;

use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// The buckets of every `*_seconds` histogram: 1 ms to 10 s, finest where a payment's answer
/// usually falls (tens of ms), with a bound at 1 s, the payment p99 budget the alerts use.
const SECONDS_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The process-wide Prometheus recorder, with every series described and `finpay_build_info` set.
/// Installed once: tests start several apps in one process.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
                .unwrap_or_else(|_| PrometheusBuilder::new());
            let handle = match builder.install_recorder() {
                Ok(handle) => handle,
                Err(e) => {
                    // Someone else installed a global recorder; keep serving with an empty exporter.
                    tracing::warn!(error = %e, "metrics recorder already installed; /metrics will be empty");
                    PrometheusBuilder::new().build_recorder().handle()
                }
            };
            describe();
            process().describe();
            metrics::gauge!("finpay_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
            handle
        })
        .clone()
}

/// The `process_*` series (CPU seconds, resident memory, open fds, start time), read from the
/// operating system at each scrape. `process_start_time_seconds` is how a restart shows.
fn process() -> &'static metrics_process::Collector {
    static COLLECTOR: OnceLock<metrics_process::Collector> = OnceLock::new();
    COLLECTOR.get_or_init(metrics_process::Collector::default)
}

/// The exposition text of every series now, the process ones read fresh.
pub fn render() -> String {
    let handle = metrics_handle();
    process().collect();
    handle.run_upkeep();
    handle.render()
}

/// Gives every series of the services (and of their resilient clients) its HELP text and unit,
/// on the recorder installed now.
pub fn describe() {
    finpay_resilience::describe_metrics();
    describe_gauge!(
        "finpay_build_info",
        "Always 1; the version label names the build of this process."
    );
    describe_counter!(
        "finpay_http_requests_total",
        "HTTP requests answered, by service, method, route (the matched pattern) and status code."
    );
    describe_histogram!(
        "finpay_http_request_duration_seconds",
        Unit::Seconds,
        "Time from a request's arrival to its response, by service, method and route."
    );
    describe_counter!(
        "finpay_faults_injected_total",
        "Faults injected on purpose by the fault settings, by service and kind."
    );
    describe_counter!(
        "finpay_fraud_verdicts_total",
        "Fraud checks answered, by verdict (SAFE or DENY)."
    );
    describe_counter!(
        "finpay_wallet_transfers_total",
        "Wallet transfers answered, by outcome: created, or replayed (a transfer id seen before)."
    );
    describe_counter!(
        "finpay_notifications_total",
        "Notifications received, by outcome: stored, or duplicate (dropped by the inbox)."
    );
    describe_payment();
}

/// The payment service's own series.
fn describe_payment() {
    describe_counter!(
        "finpay_payments_total",
        "Payment requests answered, by outcome: the payment's status (succeeded, declined, \
         failed), pending (the wallet was unreachable; the resumer finishes it), replayed, \
         key_reused (422), in_progress (409) or error (payment's store or task failed: 5xx)."
    );
    describe_histogram!(
        "finpay_payment_duration_seconds",
        Unit::Seconds,
        "Time to answer a payment request, by outcome."
    );
    describe_counter!(
        "finpay_payment_leases_lost_total",
        "Payments this replica stopped driving because another replica took their lease over."
    );
    describe_counter!(
        "finpay_fraud_fallback_total",
        "Payments let past an unavailable fraud service by the fallback policy (needs_review)."
    );
    describe_counter!(
        "finpay_payments_resumed_total",
        "Payments the resumer drove after their lease expired, by outcome: the status reached, \
         pending (wallet still unreachable) or lease_lost."
    );
    describe_gauge!(
        "finpay_outbox_pending",
        "Notifications in the outbox not yet delivered, in the whole store, as this replica's \
         dispatcher last counted them."
    );
    describe_counter!(
        "finpay_outbox_deliveries_total",
        "Outbox delivery attempts, by result: delivered, conflict (the inbox holds another body \
         under the id) or retry (failed; tried again later)."
    );
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::Path;
    use std::sync::{Arc, Mutex};

    use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString};

    /// Records the names it is asked to describe, and nothing else.
    #[derive(Default, Clone)]
    struct Described(Arc<Mutex<BTreeSet<String>>>);

    impl Described {
        fn add(&self, name: KeyName, help: &SharedString) {
            assert!(!help.is_empty(), "{} has empty help", name.as_str());
            let fresh = self
                .0
                .lock()
                .expect("lock")
                .insert(name.as_str().to_owned());
            assert!(fresh, "{} is described twice", name.as_str());
        }
    }

    impl Recorder for Described {
        fn describe_counter(&self, name: KeyName, _: Option<metrics::Unit>, help: SharedString) {
            self.add(name, &help);
        }
        fn describe_gauge(&self, name: KeyName, _: Option<metrics::Unit>, help: SharedString) {
            self.add(name, &help);
        }
        fn describe_histogram(&self, name: KeyName, _: Option<metrics::Unit>, help: SharedString) {
            self.add(name, &help);
        }
        fn register_counter(&self, _: &Key, _: &Metadata<'_>) -> Counter {
            Counter::noop()
        }
        fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
            Gauge::noop()
        }
        fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
            Histogram::noop()
        }
    }

    /// The name of every metric emitted under `dir`: the string literal that opens a
    /// `counter!(`, `gauge!(` or `histogram!(` call or a `LazyCounter::new(`, outside comments.
    fn emitted(dir: &Path, out: &mut BTreeSet<String>) {
        for entry in std::fs::read_dir(dir).expect("read src") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                emitted(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).expect("read source");
                let code: Vec<&str> = text
                    .lines()
                    .filter(|l| !l.trim_start().starts_with("//"))
                    .collect();
                names_in(&code.join("\n"), out);
            }
        }
    }

    fn names_in(code: &str, out: &mut BTreeSet<String>) {
        for call in [
            "counter!(",
            "gauge!(",
            "histogram!(",
            "LazyCounter::new(",
            "LazyCounter::with(",
        ] {
            for (i, _) in code.match_indices(call) {
                if code[..i].ends_with('_') {
                    continue; // describe_counter!( and the like
                }
                let args = code[i + call.len()..].trim_start();
                if let Some(rest) = args.strip_prefix('"') {
                    if let Some((name, _)) = rest.split_once('"') {
                        let ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
                        if !name.is_empty() && name.chars().all(ident) {
                            out.insert(name.to_owned());
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn every_metric_emitted_by_the_services_and_their_clients_is_described_once() {
        let described = Described::default();
        metrics::with_local_recorder(&described, super::describe);
        let described = described.0.lock().expect("lock").clone();

        let mut used = BTreeSet::new();
        let here = Path::new(env!("CARGO_MANIFEST_DIR"));
        emitted(&here.join("src"), &mut used);
        emitted(&here.join("../resilience/src"), &mut used);
        assert!(
            used.contains("finpay_payments_total"),
            "the scan finds names"
        );
        assert!(
            used.contains("finpay_client_breaker_state"),
            "in both crates"
        );

        let undescribed: Vec<_> = used.difference(&described).collect();
        assert!(
            undescribed.is_empty(),
            "emitted without HELP text: {undescribed:?}"
        );
        let unused: Vec<_> = described.difference(&used).collect();
        assert!(unused.is_empty(), "described but never emitted: {unused:?}");
    }
}
