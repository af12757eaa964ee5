//! The event hooks fire for every kind of decision, through the whole client, in paused time.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use finpay_resilience::breaker::State;
use finpay_resilience::classify::BoxError;
use finpay_resilience::events::{BudgetUse, Rejection};
use finpay_resilience::{ClientPolicy, Deadline, EventHooks, Events, Idempotent, ResilientClient};

/// Counts each kind of event.
#[derive(Default)]
struct Seen(Mutex<BTreeMap<&'static str, u64>>);

impl Seen {
    fn add(&self, kind: &'static str) {
        *self.0.lock().unwrap().entry(kind).or_default() += 1;
    }
    fn count(&self, kind: &str) -> u64 {
        self.0.lock().unwrap().get(kind).copied().unwrap_or(0)
    }
}

impl Events for Seen {
    fn on_retry(&self, dependency: &'static str, attempt: u32, _backoff: Duration) {
        assert_eq!(dependency, "fraud");
        assert!(attempt >= 2);
        self.add("retry");
    }
    fn on_hedge(&self, _: &'static str, copy: u32) {
        assert!(copy >= 1);
        self.add("hedge");
    }
    fn on_hedge_won(&self, _: &'static str, copy: u32) {
        assert!(copy >= 1);
        self.add("hedge won");
    }
    fn on_budget_rejection(&self, _: &'static str, what: BudgetUse) {
        self.add(match what {
            BudgetUse::Retry => "budget refused a retry",
            BudgetUse::Hedge => "budget refused a hedge",
        });
    }
    fn on_breaker_transition(&self, _: &'static str, _: Option<&str>, from: State, to: State) {
        if from == State::Closed && to == State::Open {
            self.add("breaker opened");
        }
    }
    fn on_ejection(&self, _: &'static str, endpoint: &str, ejection: Duration) {
        assert!(endpoint.starts_with("http://replica-"), "{endpoint}");
        assert!(ejection >= Duration::from_secs(5));
        self.add("ejection");
    }
    fn on_rejection(&self, _: &'static str, why: Rejection) {
        self.add(match why {
            Rejection::BulkheadFull => "bulkhead full",
            Rejection::BreakerOpen { .. } => "breaker open",
        });
    }
}

/// A replica answering `status` after `delay`.
#[derive(Clone)]
struct Replica(u16, Duration);

impl tower::Service<http::Request<Bytes>> for Replica {
    type Response = http::Response<Bytes>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, _: http::Request<Bytes>) -> Self::Future {
        let (status, delay) = (self.0, self.1);
        Box::pin(async move {
            tokio::time::sleep(delay).await;
            let mut r = http::Response::new(Bytes::new());
            *r.status_mut() = http::StatusCode::from_u16(status)?;
            Ok(r)
        })
    }
}

fn client(replicas: &[Replica], policy: ClientPolicy, seen: &Arc<Seen>) -> ResilientClient {
    let endpoints = replicas
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let uri: http::Uri = format!("http://replica-{i}:80").parse().unwrap();
            (uri, r.clone())
        })
        .collect();
    let hooks = EventHooks::new(seen.clone());
    ResilientClient::with_endpoints_and_events("fraud", endpoints, policy, hooks).unwrap()
}

fn check() -> http::Request<Bytes> {
    let mut req = http::Request::post("/v1/checks")
        .body(Bytes::from_static(b"{}"))
        .unwrap();
    req.extensions_mut().insert(Idempotent);
    req
}

fn seeded() -> ClientPolicy {
    ClientPolicy {
        seed: Some(11),
        ..ClientPolicy::default()
    }
}

#[tokio::test(start_paused = true)]
async fn a_dependency_that_fails_every_call_shows_retries_hedges_budget_breaker_and_ejections() {
    let seen = Arc::new(Seen::default());
    let down = Replica(503, Duration::from_millis(1));
    let c = client(&[down.clone(), down.clone(), down], seeded(), &seen);
    for _ in 0..200 {
        let _ = c
            .call(check(), Deadline::after(Duration::from_secs(2)))
            .await;
    }
    for kind in [
        "retry",
        "hedge",
        "budget refused a hedge",
        "breaker opened",
        "breaker open",
        "ejection",
    ] {
        assert!(
            seen.count(kind) > 0,
            "no `{kind}` in {:?}",
            seen.0.lock().unwrap()
        );
    }
    assert_eq!(seen.count("ejection"), 2, "2 of 3 at most");
}

/// A replica whose even-numbered tries hang for a second and whose odd ones answer at once.
#[derive(Clone, Default)]
struct EverySecondHangs(Arc<std::sync::atomic::AtomicU64>);

impl tower::Service<http::Request<Bytes>> for EverySecondHangs {
    type Response = http::Response<Bytes>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, req: http::Request<Bytes>) -> Self::Future {
        let n = self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let delay = Duration::from_millis(if n.is_multiple_of(2) { 1_000 } else { 1 });
        Replica(200, delay).call(req)
    }
}

#[tokio::test(start_paused = true)]
async fn a_try_that_hangs_shows_a_hedge_that_wins() {
    let seen = Arc::new(Seen::default());
    let uri: http::Uri = "http://replica-0:80".parse().unwrap();
    let endpoints = vec![(uri, EverySecondHangs::default())];
    let hooks = EventHooks::new(seen.clone());
    let c =
        ResilientClient::with_endpoints_and_events("fraud", endpoints, seeded(), hooks).unwrap();
    for _ in 0..10 {
        c.call(check(), Deadline::after(Duration::from_secs(2)))
            .await
            .unwrap();
    }
    assert_eq!(seen.count("hedge won"), 10, "{:?}", seen.0.lock().unwrap());
    assert_eq!(seen.count("hedge"), 10);
    assert_eq!(seen.count("retry"), 0, "nothing failed");
}

#[tokio::test(start_paused = true)]
async fn a_full_bulkhead_shows_its_rejections() {
    let seen = Arc::new(Seen::default());
    let mut policy = seeded();
    policy.bulkhead.max_concurrent = 1;
    policy.bulkhead.min_concurrent = 1;
    let slow = Replica(200, Duration::from_millis(50));
    let c = client(&[slow], policy, &seen);
    let first = tokio::spawn({
        let c = c.clone();
        async move {
            c.call(check(), Deadline::after(Duration::from_secs(2)))
                .await
        }
    });
    tokio::task::yield_now().await;
    let second = c
        .call(check(), Deadline::after(Duration::from_secs(2)))
        .await;
    assert!(second.is_err());
    assert!(first.await.unwrap().is_ok());
    assert_eq!(seen.count("bulkhead full"), 1);
}
