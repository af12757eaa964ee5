//! Stacking the layers of `finpay-resilience` in front of any HTTP client.
//!
//! Starts three local replicas that fail 30% of requests with a 503, then sends 2,000 GETs through:
//!
//! ```text
//! fallback (only for BreakerOpen) -> deadline -> bulkhead -> breaker -> retry -> hedge
//!     -> per-try timeout -> p2c balancer -> your client (here: hyper-util's pooled client)
//! ```
//!
//! and prints the success rate and the actual/effective load. Run with
//! `cargo run -p finpay-resilience --example stack`.
//!
//! The only thing the layers need from "your client" is a `tower::Service<http::Request<Bytes>>` per
//! endpoint; here it is a `service_fn` around hyper-util's client. `ResilientClient` in this crate is
//! the same stack, built from a `ClientPolicy`.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use finpay_resilience::balance::{Balance, BalanceConfig, EndpointSet, TriedEndpoints};
use finpay_resilience::breaker::{Breaker, BreakerConfig, BreakerOpen, CircuitBreakerLayer};
use finpay_resilience::bulkhead::{BulkheadConfig, BulkheadLayer, Limiter};
use finpay_resilience::classify::{BoxError, HttpClassify};
use finpay_resilience::deadline::{DeadlineLayer, PerTryTimeoutLayer};
use finpay_resilience::fallback::FallbackLayer;
use finpay_resilience::hedge::{HedgeConfig, HedgeDelay, HedgeLayer};
use finpay_resilience::retry::{Backoff, BudgetMode, Jitter, RetryBudget, RetryConfig, RetryLayer};
use finpay_resilience::EventHooks;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tower::{ServiceBuilder, ServiceExt};

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    // 1. Three replicas that fail 30% of the time (deterministically: every request number n with
    //    n % 10 < 3).
    let sent = Arc::new(AtomicU64::new(0));
    let mut uris = Vec::new();
    for _ in 0..3 {
        uris.push(flaky_replica(sent.clone()).await?);
    }

    // 2. "Your" HTTP client, one tower Service per endpoint.
    let http: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let endpoints = EndpointSet::new(BalanceConfig {
        label: "demo",
        seed: Some(1),
        ..BalanceConfig::default()
    });
    for base in uris {
        let client = http.clone();
        let b = base.clone();
        endpoints.insert(
            base,
            tower::service_fn(move |req| send(client.clone(), b.clone(), req)),
        );
    }

    // 3. The layers. Retries and hedges share one budget.
    let (retry, hedge, breaker, limiter) = settings()?;
    let svc = ServiceBuilder::new()
        .layer(FallbackLayer::on(|open: &BreakerOpen| {
            let mut r = http::Response::new(Bytes::from_static(b"dependency unavailable"));
            *r.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
            r.headers_mut().insert(
                http::header::RETRY_AFTER,
                http::HeaderValue::from(open.retry_after.as_secs().max(1)),
            );
            r
        }))
        .layer(DeadlineLayer::new(Some(Duration::from_secs(1))))
        .layer(BulkheadLayer::new(limiter, HttpClassify))
        .layer(CircuitBreakerLayer::new(breaker, HttpClassify))
        .layer(RetryLayer::new(retry, HttpClassify))
        .layer(HedgeLayer::new(hedge, HttpClassify))
        .layer(PerTryTimeoutLayer::new(Duration::from_millis(100)))
        .service(Balance::new(endpoints, HttpClassify));

    // 4. Use it like any tower Service.
    let calls = 2_000u64;
    let mut ok = 0u64;
    for _ in 0..calls {
        let mut req = http::Request::get("/check").body(Bytes::new())?;
        req.extensions_mut().insert(TriedEndpoints::default()); // lets tries pick different replicas
        if let Ok(r) = svc.clone().oneshot(req).await {
            ok += u64::from(r.status().is_success());
        }
    }
    let actual = sent.load(Ordering::Relaxed);
    #[allow(clippy::cast_precision_loss)]
    let (success, load) = (ok as f64 / calls as f64, actual as f64 / calls as f64);
    println!(
        "calls {calls}, succeeded {ok} ({:.2}%), sent {actual}, actual/effective {load:.2}",
        success * 100.0
    );
    Ok(())
}

/// "Your" client's call: `req` sent to the endpoint at `base`, the answer read whole.
async fn send(
    client: Client<HttpConnector, Full<Bytes>>,
    base: http::Uri,
    req: http::Request<Bytes>,
) -> Result<http::Response<Bytes>, BoxError> {
    let (mut parts, body) = req.into_parts();
    let pq = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    parts.uri = format!("{base}{}", pq.trim_start_matches('/')).parse()?;
    let resp = client
        .request(http::Request::from_parts(parts, Full::new(body)))
        .await?;
    let (p, body) = resp.into_parts();
    let bytes = body.collect().await?.to_bytes();
    Ok(http::Response::from_parts(p, bytes))
}

/// The settings of the layers: retries and hedges paid from one budget, a breaker, a bulkhead
/// that rejects rather than queues.
fn settings() -> Result<(RetryConfig, HedgeConfig, Breaker, Limiter), BoxError> {
    let budget = RetryBudget::try_new(BudgetMode::Ratio {
        ratio: 0.5,
        min_per_second: 10,
        ttl: Duration::from_secs(10),
    })?;
    let retry = RetryConfig {
        max_attempts: 4,
        backoff: Backoff::try_new(
            Duration::from_millis(5),
            Duration::from_millis(100),
            Jitter::Full,
            Some(1),
        )?,
        budget: budget.clone(),
        retry_after_max: Duration::from_secs(1),
        label: "demo",
        events: EventHooks::default(),
    };
    let hedge = HedgeConfig {
        max_hedges: 2,
        delay: HedgeDelay::Fixed(Duration::from_millis(15)),
        budget: Some(budget),
        label: "demo",
        events: EventHooks::default(),
    };
    let breaker = Breaker::try_new(BreakerConfig {
        label: "demo",
        ..BreakerConfig::default()
    })?;
    let limiter = Limiter::try_new(BulkheadConfig {
        max_concurrent: 64,
        max_wait: Duration::ZERO,
        adaptive: None,
    })?;
    Ok((retry, hedge, breaker, limiter))
}

async fn flaky_replica(sent: Arc<AtomicU64>) -> Result<http::Uri, BoxError> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let sent = sent.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    move |_req: hyper::Request<hyper::body::Incoming>| {
                        let n = sent.fetch_add(1, Ordering::Relaxed);
                        let mut r = hyper::Response::new(Full::new(Bytes::from_static(b"SAFE")));
                        if n % 10 < 3 {
                            *r.status_mut() = hyper::StatusCode::SERVICE_UNAVAILABLE;
                        }
                        async move { Ok::<_, Infallible>(r) }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok(format!("http://{addr}/").parse()?)
}
