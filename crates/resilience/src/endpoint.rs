//! The bottom of the client stack: one replica reached over HTTP through a pooled hyper client.
//!
//! [`HttpEndpoint`] is what [`crate::ResilientClient::new`] puts in its endpoint set, one per
//! replica, all sharing one [`HyperClient`]; `HttpRequestEndpoint` adapts a caller's own
//! `http::Request` service (a simulation, another transport) to the [`Outbound`] the stack carries.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tower::Service;

use crate::balance::health::ProbeFuture;
use crate::classify::BoxError;
use crate::outbound::Outbound;
use crate::policy::{bad, ClientPolicy, InvalidConfig};

/// The pooled hyper client every [`HttpEndpoint`] of a [`crate::ResilientClient`] shares.
pub type HyperClient = Client<HttpConnector, Full<Bytes>>;

/// The pooled hyper client of `policy` (connect timeout, idle connections per host, idle timeout),
/// with `TCP_NODELAY` on so that a small request is not held back waiting for more to send.
pub(crate) fn hyper_client(policy: &ClientPolicy) -> HyperClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_millis(policy.connect_timeout_ms)));
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_millis(policy.pool_idle_timeout_ms))
        .pool_max_idle_per_host(policy.pool_max_idle_per_host)
        .build(connector)
}

/// One replica reached through the pooled hyper client: builds the try's request on the endpoint's
/// base URI ([`Outbound::to_http`]), sends it, and reads the body (bounded). Cloning is one `Arc`.
#[derive(Clone, Debug)]
pub struct HttpEndpoint(Arc<EndpointInner>);

#[derive(Debug)]
struct EndpointInner {
    base: http::Uri,
    client: HyperClient,
    max_body: usize,
}

impl HttpEndpoint {
    /// An endpoint at `base` (scheme, authority and an optional base path) using `client`'s pool,
    /// reading at most `max_body` bytes of an answer. For a stack of your own over an
    /// [`crate::balance::EndpointSet`]; [`crate::ResilientClient::new`] makes its endpoints with it.
    pub fn new(base: http::Uri, client: HyperClient, max_body: usize) -> Self {
        Self(Arc::new(EndpointInner {
            base,
            client,
            max_body,
        }))
    }
}

impl Service<Outbound> for HttpEndpoint {
    type Response = http::Response<Bytes>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<http::Response<Bytes>, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Outbound) -> Self::Future {
        let ep = &self.0;
        let uri = match join_uri(&ep.base, &req.head().uri) {
            Ok(uri) => uri,
            Err(e) => return Box::pin(std::future::ready(Err(BoxError::from(e)))),
        };
        // Started here, so the future owns nothing of the endpoint's but its body limit.
        let sent = ep
            .client
            .request(req.to_http(uri, Full::new(req.body().clone())));
        drop(req);
        let max_body = ep.max_body;
        Box::pin(async move {
            let (p, b) = sent.await?.into_parts();
            let bytes = http_body_util::Limited::new(b, max_body)
                .collect()
                .await?
                .to_bytes();
            Ok(http::Response::from_parts(p, bytes))
        })
    }
}

/// An endpoint service of the caller's (a simulation, another transport) that takes an
/// `http::Request`: each try is built with [`Outbound::to_http`] on the request's own URI.
#[derive(Clone, Debug)]
pub(crate) struct HttpRequestEndpoint<S>(pub(crate) S);

impl<S> Service<Outbound> for HttpRequestEndpoint<S>
where
    S: Service<http::Request<Bytes>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: Outbound) -> Self::Future {
        self.0
            .call(req.to_http(req.head().uri.clone(), req.body().clone()))
    }
}

/// The active health check of an HTTP endpoint: `GET` of `path` on the endpoint's base URI through
/// `client`'s pool; healthy when the answer is a 2xx.
pub(crate) fn http_probe(
    client: HyperClient,
    path: String,
) -> impl Fn(http::Uri) -> ProbeFuture + Send + Sync + 'static {
    move |base: http::Uri| {
        let client = client.clone();
        let uri = join_uri(
            &base,
            &http::Uri::from_maybe_shared(path.clone()).unwrap_or_default(),
        );
        Box::pin(async move {
            let Ok(uri) = uri else { return false };
            let mut req = http::Request::new(Full::new(Bytes::new()));
            *req.uri_mut() = uri;
            matches!(client.request(req).await, Ok(r) if r.status().is_success())
        })
    }
}

/// Every URL is an absolute `http://` URL, and there is at least one.
pub(crate) fn check_urls(endpoints: &[http::Uri]) -> Result<(), InvalidConfig> {
    if endpoints.is_empty() {
        return Err(bad("urls", "at least one endpoint is needed"));
    }
    for e in endpoints {
        if e.scheme_str() != Some("http") || e.authority().is_none() {
            return Err(bad("urls", format!("{e} is not an absolute http:// URL")));
        }
    }
    Ok(())
}

/// `endpoint` (scheme + authority + optional base path) joined with the request's path and query.
pub(crate) fn join_uri(endpoint: &http::Uri, req: &http::Uri) -> Result<http::Uri, String> {
    let base = endpoint.path().trim_end_matches('/');
    if base.is_empty() {
        // The common case (no base path): reuse the parts as they are, no formatting or parsing.
        let mut parts = http::uri::Parts::default();
        parts.scheme = endpoint.scheme().cloned();
        parts.authority = endpoint.authority().cloned();
        parts.path_and_query = Some(
            req.path_and_query()
                .cloned()
                .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/")),
        );
        return http::Uri::from_parts(parts).map_err(|e| e.to_string());
    }
    let pq = req
        .path_and_query()
        .map_or("/", http::uri::PathAndQuery::as_str);
    let mut b = http::Uri::builder();
    if let Some(s) = endpoint.scheme() {
        b = b.scheme(s.clone());
    }
    if let Some(a) = endpoint.authority() {
        b = b.authority(a.clone());
    }
    b.path_and_query(format!("{base}{pq}"))
        .build()
        .map_err(|e| e.to_string())
}
