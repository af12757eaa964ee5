//! The metrics every layer reports, read through a small in-memory `metrics` recorder.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use finpay_resilience::classify::BoxError;
use finpay_resilience::{ClientPolicy, Deadline, ResilientClient};
use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};

#[derive(Default, Clone)]
struct Store(Arc<Mutex<BTreeMap<String, f64>>>);

struct Cell(Store, String);

impl metrics::CounterFn for Cell {
    fn increment(&self, v: u64) {
        *self.0 .0.lock().unwrap().entry(self.1.clone()).or_default() += v as f64;
    }
    fn absolute(&self, v: u64) {
        self.0 .0.lock().unwrap().insert(self.1.clone(), v as f64);
    }
}

impl metrics::GaugeFn for Cell {
    fn increment(&self, v: f64) {
        *self.0 .0.lock().unwrap().entry(self.1.clone()).or_default() += v;
    }
    fn decrement(&self, v: f64) {
        *self.0 .0.lock().unwrap().entry(self.1.clone()).or_default() -= v;
    }
    fn set(&self, v: f64) {
        self.0 .0.lock().unwrap().insert(self.1.clone(), v);
    }
}

fn name(key: &Key) -> String {
    let mut labels: Vec<String> = key
        .labels()
        .map(|l| format!("{}={}", l.key(), l.value()))
        .collect();
    labels.sort();
    format!("{}{{{}}}", key.name(), labels.join(","))
}

impl Recorder for Store {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(Arc::new(Cell(self.clone(), name(key))))
    }
    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(Arc::new(Cell(self.clone(), name(key))))
    }
    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

impl Store {
    fn get(&self, k: &str) -> f64 {
        self.0.lock().unwrap().get(k).copied().unwrap_or(0.0)
    }
    /// The value of a series that must exist.
    fn series(&self, k: &str) -> f64 {
        match self.0.lock().unwrap().get(k) {
            Some(v) => *v,
            None => panic!("no series {k}"),
        }
    }
    fn keys_starting(&self, prefix: &str) -> Vec<String> {
        let map = self.0.lock().unwrap();
        map.keys()
            .filter(|k| k.starts_with(prefix))
            .cloned()
            .collect()
    }
}

/// Fails every third request with a 503 while `up`; every request while down. Answers after 2 ms.
#[derive(Clone)]
struct Replica {
    up: Arc<AtomicBool>,
    n: Arc<AtomicU64>,
}

impl tower::Service<http::Request<Bytes>> for Replica {
    type Response = http::Response<Bytes>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, _: http::Request<Bytes>) -> Self::Future {
        let n = self.n.fetch_add(1, Ordering::Relaxed);
        let fail = !self.up.load(Ordering::Relaxed) || n.is_multiple_of(3);
        Box::pin(async move {
            tokio::time::sleep(Duration::from_millis(2)).await;
            let mut r = http::Response::new(Bytes::new());
            if fail {
                *r.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
            }
            Ok(r)
        })
    }
}

#[test]
fn effective_and_actual_requests_retries_hedges_and_breaker_state_are_reported() {
    let store = Store::default();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    metrics::with_local_recorder(&store, || {
        rt.block_on(async {
            let up = Arc::new(AtomicBool::new(true));
            let n = Arc::new(AtomicU64::new(0));
            let eps = (0..3)
                .map(|i| {
                    (
                        format!("http://r{i}").parse().unwrap(),
                        Replica {
                            up: up.clone(),
                            n: n.clone(),
                        },
                    )
                })
                .collect();
            let client = ResilientClient::with_endpoints(
                "fraud",
                eps,
                ClientPolicy {
                    seed: Some(1),
                    ..ClientPolicy::default()
                },
            )
            .unwrap();
            for _ in 0..300 {
                let r = client
                    .call(
                        http::Request::get("/check").body(Bytes::new()).unwrap(),
                        Deadline::after(Duration::from_secs(1)),
                    )
                    .await;
                assert!(r.is_ok());
            }
            let sent_up = n.load(Ordering::Relaxed) as f64;
            assert_eq!(
                store.get("finpay_client_requests_total{dependency=fraud,outcome=ok}"),
                300.0
            );
            assert_eq!(
                store.get("finpay_client_attempts_total{dependency=fraud}"),
                sent_up
            );
            assert!(
                store.get("finpay_client_hedges_total{dependency=fraud}") > 0.0,
                "fast 503s fire hedges"
            );
            assert!(store.get("finpay_client_hedges_won_total{dependency=fraud}") > 0.0);
            assert_eq!(
                store.get("finpay_client_breaker_state{dependency=fraud}"),
                0.0
            );

            up.store(false, Ordering::Relaxed);
            for _ in 0..200 {
                let _ = client
                    .call(
                        http::Request::get("/check").body(Bytes::new()).unwrap(),
                        Deadline::after(Duration::from_secs(1)),
                    )
                    .await;
            }
            assert_eq!(
                store.get("finpay_client_breaker_state{dependency=fraud}"),
                2.0
            );
            assert_eq!(
                store.get("finpay_client_breaker_states{dependency=fraud,state=open}"),
                1.0
            );
            assert_eq!(
                store.get("finpay_client_breaker_states{dependency=fraud,state=closed}"),
                0.0
            );
            assert_eq!(
                store.get(
                    "finpay_client_breaker_transitions_total{dependency=fraud,from=closed,to=open}"
                ),
                1.0
            );
            assert!(store.get("finpay_client_budget_rejections_total{dependency=fraud}") > 0.0);
            assert!(store.get("finpay_client_retries_total{dependency=fraud}") > 0.0);
            assert!(store.get("finpay_client_ejections_total{dependency=fraud}") >= 1.0);
            let attempts = store.get("finpay_client_attempts_total{dependency=fraud}");
            assert_eq!(
                attempts,
                n.load(Ordering::Relaxed) as f64,
                "actual = what the replicas saw"
            );
            let outcomes = [
                "ok",
                "exhausted",
                "breaker_open",
                "deadline",
                "bulkhead_full",
            ];
            let calls: f64 = outcomes
                .iter()
                .map(|o| {
                    store.get(&format!(
                        "finpay_client_requests_total{{dependency=fraud,outcome={o}}}"
                    ))
                })
                .sum();
            assert_eq!(calls, 500.0, "every call counted once, by how it ended");
            assert!(
                store.get("finpay_client_requests_total{dependency=fraud,outcome=breaker_open}")
                    > 0.0,
                "the open breaker turned calls away"
            );
            assert_eq!(
                store.get("finpay_client_rejections_total{dependency=fraud,reason=breaker_open}"),
                store.get("finpay_client_requests_total{dependency=fraud,outcome=breaker_open}")
            );
        });
    });
}

#[test]
fn every_series_a_dashboard_needs_is_registered_at_zero_when_the_client_is_built() {
    let store = Store::default();
    metrics::with_local_recorder(&store, || {
        let eps: Vec<(http::Uri, Replica)> = (0..3)
            .map(|i| {
                (
                    format!("http://r{i}").parse().unwrap(),
                    Replica {
                        up: Arc::new(AtomicBool::new(true)),
                        n: Arc::new(AtomicU64::new(0)),
                    },
                )
            })
            .collect();
        let mut policy = ClientPolicy {
            seed: Some(1),
            ..ClientPolicy::default()
        };
        policy.breaker.per_endpoint = true;
        let _client = ResilientClient::with_endpoints("fraud", eps, policy).unwrap();
    });
    for outcome in [
        "ok",
        "exhausted",
        "deadline",
        "breaker_open",
        "bulkhead_full",
        "no_endpoint",
    ] {
        let key = format!("finpay_client_requests_total{{dependency=fraud,outcome={outcome}}}");
        assert_eq!(store.series(&key), 0.0, "{key}");
    }
    for reason in [
        "deadline",
        "breaker_open",
        "bulkhead_full",
        "retry_budget",
        "hedge_budget",
    ] {
        let key = format!("finpay_client_rejections_total{{dependency=fraud,reason={reason}}}");
        assert_eq!(store.series(&key), 0.0, "{key}");
    }
    for name in [
        "attempts",
        "retries",
        "budget_rejections",
        "hedges",
        "hedges_won",
        "ejections",
    ] {
        let key = format!("finpay_client_{name}_total{{dependency=fraud}}");
        assert_eq!(store.series(&key), 0.0, "{key}");
    }
    assert_eq!(
        store.series("finpay_client_breaker_state{dependency=fraud}"),
        0.0,
        "closed"
    );
    for (state, on) in [("closed", 1.0), ("half_open", 0.0), ("open", 0.0)] {
        assert_eq!(
            store.series(&format!(
                "finpay_client_breaker_states{{dependency=fraud,state={state}}}"
            )),
            on,
            "{state}"
        );
    }
    let per_endpoint =
        store.keys_starting("finpay_client_breaker_state{dependency=fraud,endpoint=");
    assert_eq!(per_endpoint.len(), 3, "one per endpoint: {per_endpoint:?}");
    assert!(per_endpoint.iter().all(|k| store.series(k) == 0.0));
}
