//! `ResilientClient` against real HTTP servers on port 0: the contract services code against.

#![allow(clippy::unwrap_used)]

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use finpay_resilience::{
    CallError, ClientPolicy, Deadline, Idempotent, ResilientClient, DEADLINE_HEADER,
};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

#[derive(Default)]
struct Counters {
    hits: AtomicUsize,
    flaky: AtomicUsize,
}

async fn handle(
    req: hyper::Request<Incoming>,
    c: Arc<Counters>,
) -> Result<hyper::Response<Full<Bytes>>, Infallible> {
    c.hits.fetch_add(1, Ordering::SeqCst);
    let deadline = req
        .headers()
        .get(DEADLINE_HEADER)
        .map(|v| v.to_str().unwrap_or("").to_owned())
        .unwrap_or_default();
    let status = match req.uri().path() {
        "/ok" => 200,
        "/flaky" => {
            if c.flaky.fetch_add(1, Ordering::SeqCst) < 2 {
                503
            } else {
                200
            }
        }
        "/always500" => 500,
        "/conflict" => 409,
        "/slow" => {
            tokio::time::sleep(Duration::from_secs(5)).await;
            200
        }
        "/health/ready" => 200,
        _ => 404,
    };
    let mut resp = hyper::Response::new(Full::new(Bytes::from(deadline)));
    *resp.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
    Ok(resp)
}

async fn server() -> (http::Uri, Arc<Counters>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let counters = Arc::new(Counters::default());
    let c = counters.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let c = c.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| handle(req, c.clone()));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (format!("http://{addr}").parse().unwrap(), counters)
}

/// A port that refuses connections: bind, note the port, close.
async fn dead_endpoint() -> http::Uri {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    format!("http://{addr}").parse().unwrap()
}

fn policy() -> ClientPolicy {
    let mut p = ClientPolicy {
        seed: Some(5),
        per_try_timeout_ms: 500,
        ..ClientPolicy::default()
    };
    p.health_check.enabled = false;
    p
}

fn get(path: &str) -> http::Request<Bytes> {
    http::Request::get(path).body(Bytes::new()).unwrap()
}

fn secs(s: u64) -> Deadline {
    Deadline::after(Duration::from_secs(s))
}

#[tokio::test]
async fn the_deadline_reaches_the_callee_as_epoch_milliseconds() {
    let (uri, _) = server().await;
    let client = ResilientClient::new("t", vec![uri], policy()).unwrap();
    let resp = client.call(get("/ok"), secs(2)).await.unwrap();
    let ms: u64 = std::str::from_utf8(resp.body()).unwrap().parse().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    assert!(ms > now && ms <= now + 2_100, "{ms} vs {now}");
}

#[tokio::test]
async fn an_answer_over_the_body_limit_is_an_error_not_a_cut_body() {
    let (uri, _) = server().await;
    let mut p = policy();
    p.max_response_bytes = 8; // the answer is the 13-digit deadline
    let client = ResilientClient::new("t", vec![uri], p).unwrap();
    let err = client.call(get("/ok"), secs(2)).await.unwrap_err();
    assert!(
        matches!(&err, CallError::Exhausted { status: None, last } if last.contains("length limit")),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_503_is_retried_until_it_succeeds() {
    let (uri, c) = server().await;
    let client = ResilientClient::new("t", vec![uri], policy()).unwrap();
    let resp = client.call(get("/flaky"), secs(2)).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(c.hits.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn a_4xx_comes_back_as_ok_without_retry() {
    let (uri, c) = server().await;
    let client = ResilientClient::new("t", vec![uri], policy()).unwrap();
    let resp = client.call(get("/conflict"), secs(2)).await.unwrap();
    assert_eq!(resp.status(), 409);
    assert_eq!(c.hits.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_persistent_500_is_exhausted_with_its_status() {
    let (uri, _) = server().await;
    let client = ResilientClient::new("t", vec![uri], policy()).unwrap();
    match client.call(get("/always500"), secs(2)).await {
        Err(CallError::Exhausted { status, .. }) => {
            assert_eq!(status, Some(http::StatusCode::INTERNAL_SERVER_ERROR))
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_post_without_idempotency_key_is_sent_once() {
    let (uri, c) = server().await;
    let client = ResilientClient::new("t", vec![uri], policy()).unwrap();
    let req = http::Request::post("/always500")
        .body(Bytes::new())
        .unwrap();
    assert!(client.call(req, secs(2)).await.is_err());
    assert_eq!(c.hits.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_post_with_the_idempotent_marker_is_retried() {
    let (uri, c) = server().await;
    let client = ResilientClient::new("t", vec![uri], policy()).unwrap();
    let mut req = http::Request::post("/flaky").body(Bytes::new()).unwrap();
    req.extensions_mut().insert(Idempotent);
    assert_eq!(client.call(req, secs(2)).await.unwrap().status(), 200);
    assert_eq!(c.hits.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn a_refused_connection_moves_even_a_plain_post_to_another_replica() {
    let (live, c) = server().await;
    let dead = dead_endpoint().await;
    let client = ResilientClient::new("t", vec![dead, live], policy()).unwrap();
    for _ in 0..5 {
        let req = http::Request::post("/ok").body(Bytes::new()).unwrap();
        assert_eq!(client.call(req, secs(2)).await.unwrap().status(), 200);
    }
    assert_eq!(c.hits.load(Ordering::SeqCst), 5);
}

#[tokio::test]
async fn a_spent_deadline_fails_fast_without_sending() {
    let (uri, c) = server().await;
    let client = ResilientClient::new("t", vec![uri], policy()).unwrap();
    let err = client
        .call(get("/ok"), Deadline::after(Duration::ZERO))
        .await
        .unwrap_err();
    assert!(matches!(err, CallError::DeadlineExceeded));
    assert_eq!(c.hits.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_hanging_callee_is_cut_off_at_the_deadline() {
    let (uri, _) = server().await;
    let client = ResilientClient::new("t", vec![uri], policy()).unwrap();
    let start = tokio::time::Instant::now();
    let err = client
        .call(get("/slow"), Deadline::after(Duration::from_millis(300)))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            CallError::DeadlineExceeded | CallError::Exhausted { .. }
        ),
        "{err:?}"
    );
    assert!(start.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn bad_policy_and_urls_are_rejected_naming_the_field() {
    let mut p = policy();
    p.budget.ratio = -1.0;
    let e = ResilientClient::new("t", vec!["http://127.0.0.1:1".parse().unwrap()], p).unwrap_err();
    assert_eq!(e.field, "budget.ratio");
    let e = ResilientClient::new("t", vec![], policy()).unwrap_err();
    assert_eq!(e.field, "urls");
}

#[test]
fn policy_reads_from_toml_and_refuses_unknown_keys() {
    let p: ClientPolicy = toml::from_str(
        "per_try_timeout_ms = 250\n[budget]\nratio = 0.7\n[hedge]\nenabled = false\n",
    )
    .unwrap();
    assert_eq!(p.per_try_timeout_ms, 250);
    assert!((p.budget.ratio - 0.7).abs() < 1e-9);
    assert!(!p.hedge.enabled);
    assert_eq!(p.max_attempts, ClientPolicy::default().max_attempts);
    p.validate().unwrap();
    assert!(toml::from_str::<ClientPolicy>("retries = 3\n").is_err());
    assert!(toml::from_str::<ClientPolicy>("[breaker]\nthreshold = 3\n").is_err());
    ClientPolicy::default().validate().unwrap();
}

#[test]
fn the_client_is_a_cheap_send_sync_clone() {
    fn assert_traits<T: Clone + Send + Sync + 'static>() {}
    assert_traits::<ResilientClient>();
}
