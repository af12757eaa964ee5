//! The server shape every service shares: the operational routes, the middleware stack, the listener
//! and graceful shutdown.
//!
//! Two listeners, each router behind the same edge:
//!
//! ```text
//! request id (set, propagate) -> trace span -> http metrics -> problem fallback -> body limit
//! business port (http.port, http.shared_port):
//!   ├─ /health/live, /health/ready, /openapi.json               (never faulted, never deadlined)
//!   └─ business routes -> deadline (finpay-deadline-ms: 400 when malformed, 504 when spent)
//!                      -> faults -> handler
//! admin listener (http.admin_host:http.admin_port):
//!   ├─ /health/live, /health/ready, /openapi.json, /metrics
//!   └─ /admin/* -> bearer admin_token (401/403 before the body is read) -> handler
//! ```

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use futures::future::BoxFuture;
use tokio::net::TcpListener;
use tower::ServiceBuilder;
use tower_http::request_id::{
    MakeRequestUuid, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::trace::{DefaultOnFailure, TraceLayer};

use finpay_resilience::{Deadline, DEADLINE_HEADER};

use super::config::CommonSettings;
use super::faults::{self, Faults};
use super::json::BodyLimit;
use super::metrics::metrics_handle;
use super::problem::{ApiError, PROBLEM_JSON};
use crate::ServeError;
use finpay_api::{ops, problem::slug};

pub use finpay_api::headers::REQUEST_ID as REQUEST_ID_HEADER;

/// A readiness probe of the service's own storage. Never a downstream service.
pub type ReadyCheck = Arc<dyn Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

/// A probe that is always ready (a service without storage).
pub fn always_ready() -> ReadyCheck {
    Arc::new(|| Box::pin(async { Ok(()) }))
}

/// The request's deadline, from `finpay-deadline-ms`, in the request extensions of business routes.
#[derive(Debug, Clone, Copy)]
pub struct RequestDeadline(pub Option<Deadline>);

impl RequestDeadline {
    /// The earlier of the caller's deadline and `now + budget`.
    pub fn bounded(&self, budget: Duration) -> Deadline {
        let own = Deadline::after(budget);
        match self.0 {
            Some(d) if d.0 < own.0 => d,
            _ => own,
        }
    }
}

/// Reads the caller's deadline so the work here is bounded by it: 504 when already spent, and the
/// handler (with every fault delay) is cut off when it runs out. A header that is not an integer
/// is refused (400) rather than ignored, so a caller never believes it bounded work it did not.
async fn deadline_mw(mut req: Request, next: Next) -> Response {
    let deadline = Deadline::from_headers(req.headers());
    if deadline.is_none() && req.headers().contains_key(DEADLINE_HEADER) {
        return ApiError::bad_request(
            DEADLINE_HEADER,
            format!("{DEADLINE_HEADER}: must be Unix epoch milliseconds, an integer"),
        )
        .into_response();
    }
    req.extensions_mut().insert(RequestDeadline(deadline));
    match deadline {
        None => next.run(req).await,
        Some(d) if d.is_spent() => ApiError::deadline_exceeded().into_response(),
        Some(d) => match tokio::time::timeout_at(d.0, next.run(req)).await {
            Ok(resp) => resp,
            Err(_) => ApiError::deadline_exceeded().into_response(),
        },
    }
}

/// Answers errors that reach the edge without a body (405 from the router, 413 from a limit) as
/// problem+json too, so a client never has to parse two error formats.
async fn problem_fallback_mw(State(limit): State<usize>, mut req: Request, next: Next) -> Response {
    req.extensions_mut().insert(BodyLimit(limit));
    let resp = next.run(req).await;
    let status = resp.status();
    let content_type = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    // Extractor rejections (a malformed path segment or query) come as 4xx text/plain.
    let rejection = status.is_client_error() && content_type.starts_with("text/plain");
    if !(status.is_client_error() || status.is_server_error())
        || (!content_type.is_empty() && !rejection)
    {
        return resp;
    }
    if rejection {
        let (parts, body) = resp.into_parts();
        let text = axum::body::to_bytes(body, 4096).await.unwrap_or_default();
        let detail = String::from_utf8_lossy(&text).into_owned();
        let mut out = ApiError::new(
            parts.status,
            slug::INVALID_REQUEST,
            "Invalid request",
            detail,
        )
        .into_response();
        if let Some(v) = parts.headers.get(header::ALLOW) {
            out.headers_mut().insert(header::ALLOW, v.clone());
        }
        return out;
    }
    let problem = match status {
        StatusCode::METHOD_NOT_ALLOWED => ApiError::new(
            status,
            slug::METHOD_NOT_ALLOWED,
            "Method not allowed",
            "this route does not take that method",
        ),
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::payload_too_large(limit),
        StatusCode::NOT_FOUND => ApiError::route_not_found(),
        s if s.is_client_error() => ApiError::new(
            s,
            slug::INVALID_REQUEST,
            "Invalid request",
            "the request was refused",
        ),
        s => ApiError::new(
            s,
            slug::INTERNAL,
            "Internal error",
            "an internal error occurred",
        ),
    };
    let mut out = problem.into_response();
    for name in [header::ALLOW, header::RETRY_AFTER] {
        if let Some(v) = resp.headers().get(&name) {
            out.headers_mut().insert(name, v.clone());
        }
    }
    out
}

async fn http_metrics_mw(
    State(service): State<&'static str>,
    req: Request,
    next: Next,
) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = req.method().to_string();
    let start = tokio::time::Instant::now();
    let resp = next.run(req).await;
    let status = resp.status().as_u16().to_string();
    metrics::counter!("finpay_http_requests_total", "service" => service, "method" => method.clone(), "route" => route.clone(), "status" => status).increment(1);
    metrics::histogram!("finpay_http_request_duration_seconds", "service" => service, "method" => method, "route" => route)
        .record(start.elapsed().as_secs_f64());
    resp
}

async fn live() -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        r#"{"status":"live"}"#,
    )
        .into_response()
}

async fn ready(State(check): State<ReadyCheck>) -> Response {
    match check().await {
        Ok(()) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            r#"{"status":"ready"}"#,
        )
            .into_response(),
        Err(reason) => {
            tracing::warn!(%reason, "not ready");
            ApiError::unavailable(slug::NOT_READY, "Not ready", "own storage is not available")
                .into_response()
        }
    }
}

async fn metrics_route() -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        super::metrics::render(),
    )
        .into_response()
}

async fn openapi_route(document: bytes::Bytes) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        document,
    )
        .into_response()
}

async fn not_found() -> ApiError {
    ApiError::route_not_found()
}

/// A service's two routers: the business port's and the admin listener's.
pub struct Routers {
    /// Business routes (deadlined, faulted) and the health probes.
    pub public: Router,
    /// `/admin/*` behind the admin token, `/metrics`, and the health probes.
    pub admin: Router,
}

/// Wraps a service's business and admin routes with everything every service has, and keeps them
/// on separate routers: nothing of `/admin/*` or `/metrics` is reachable on the business port.
/// `openapi` is the service's document, served on both.
pub fn app_router(
    service: &'static str,
    openapi: String,
    common: &CommonSettings,
    business: crate::app::Routes,
    admin: Router,
    faults: Arc<Faults>,
    ready_check: ReadyCheck,
) -> Routers {
    // Install the recorder now, before the first request records anything (`Application::build`
    // has done so already; parts built by hand come this way too).
    let _ = metrics_handle();
    // On each route's handlers (`MethodRouter::route_layer`), not around the route: a method the
    // route does not take is the router's 405 before any deadline is judged or fault drawn.
    let inject = middleware::from_fn_with_state(faults.clone(), faults::inject);
    let deadline = middleware::from_fn(deadline_mw);
    let business = business
        .0
        .into_iter()
        .fold(Router::new(), |router, (path, methods)| {
            let methods = methods
                .route_layer(inject.clone())
                .route_layer(deadline.clone());
            router.route(path, methods)
        });
    let document = bytes::Bytes::from(openapi);
    let health = Router::new()
        .route(ops::LIVE, get(live))
        .route(ops::READY, get(ready).with_state(ready_check))
        .route(ops::OPENAPI, get(move || openapi_route(document.clone())));
    let admin = Router::new()
        .route(ops::METRICS, get(metrics_route))
        .merge(
            faults::admin_routes(faults)
                .merge(admin)
                .layer(middleware::from_fn_with_state(
                    common.admin_token.clone(),
                    super::admin::require_admin,
                )),
        )
        .merge(health.clone());
    let limit = common.http.body_limit_bytes;
    Routers {
        public: edge(service, limit, business.merge(health)),
        admin: edge(service, limit, admin),
    }
}

/// What every listener's router has around its routes: request ids, a trace span, the HTTP
/// metrics, problem+json for bare errors, the body limit, and a problem+json 404.
fn edge(service: &'static str, limit: usize, routes: Router) -> Router {
    let request_id = HeaderName::from_static(REQUEST_ID_HEADER);
    routes
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(limit))
        .layer(middleware::from_fn_with_state(limit, problem_fallback_mw))
        .layer(middleware::from_fn_with_state(service, http_metrics_mw))
        .layer(
            ServiceBuilder::new()
                .layer(SetRequestIdLayer::new(request_id.clone(), MakeRequestUuid))
                .layer(
                    TraceLayer::new_for_http()
                        // A 5xx is logged where it is made (ApiError::internal, storage); injected
                        // faults would otherwise flood the log at error level.
                        .on_failure(DefaultOnFailure::new().level(tracing::Level::DEBUG))
                        .make_span_with(move |req: &Request| {
                        let id = req
                            .extensions()
                            .get::<RequestId>()
                            .and_then(|id| id.header_value().to_str().ok())
                            .unwrap_or("-");
                        tracing::info_span!("request", service, request_id = %id, method = %req.method(), path = %req.uri().path())
                    }),
                )
                .layer(PropagateRequestIdLayer::new(request_id)),
        )
}

/// The bound listeners (the replica's own, the service's shared one when configured, and the
/// admin listener) and their routers; the common half of every service's `Application`.
pub struct Server {
    service: &'static str,
    listener: TcpListener,
    shared: Option<TcpListener>,
    admin: TcpListener,
    addr: SocketAddr,
    admin_addr: SocketAddr,
    routers: Routers,
}

/// Binds `host:port` for this replica alone.
async fn bind(host: &str, port: u16) -> Result<TcpListener, ServeError> {
    let target = format!("{host}:{port}");
    TcpListener::bind(&target)
        .await
        .map_err(|source| ServeError::Bind {
            addr: target,
            source,
        })
}

/// Binds `host:port` with `SO_REUSEPORT`, so the other replicas of the service can bind it too and
/// the kernel spreads new connections over all of them.
fn bind_shared(host: &str, port: u16) -> Result<TcpListener, ServeError> {
    let target = format!("{host}:{port}");
    let err = |source| ServeError::Bind {
        addr: target.clone(),
        source,
    };
    let addr: SocketAddr = target
        .parse()
        .map_err(|e| err(std::io::Error::new(std::io::ErrorKind::InvalidInput, e)))?;
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()
    } else {
        tokio::net::TcpSocket::new_v6()
    }
    .map_err(err)?;
    socket.set_reuseport(true).map_err(err)?;
    socket.set_reuseaddr(true).map_err(err)?;
    socket.set_nodelay(true).map_err(err)?;
    socket.bind(addr).map_err(err)?;
    socket.listen(1024).map_err(err)
}

impl Server {
    pub async fn bind(
        service: &'static str,
        common: &CommonSettings,
        routers: Routers,
    ) -> Result<Self, ServeError> {
        let listener = bind(&common.http.host, common.http.port).await?;
        let admin = bind(&common.http.admin_host, common.http.admin_port).await?;
        let addr = listener.local_addr()?;
        let admin_addr = admin.local_addr()?;
        let shared = common
            .http
            .shared_port
            .map(|port| bind_shared(&common.http.host, port))
            .transpose()?;
        Ok(Self {
            service,
            listener,
            shared,
            admin,
            addr,
            admin_addr,
            routers,
        })
    }

    /// This replica's own address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The admin listener's address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Serves until `shutdown` resolves, then stops accepting on every listener and finishes
    /// in-flight requests.
    pub async fn run<F>(self, shutdown: F) -> Result<(), ServeError>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let service = self.service;
        tracing::info!(service, addr = %self.addr, admin = %self.admin_addr, shared = ?self.shared.as_ref().and_then(|l| l.local_addr().ok()), "listening");
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let until_stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|v| *v).await;
        };
        let Routers { public, admin } = self.routers;
        let own = axum::serve(self.listener, public.clone().into_make_service())
            .with_graceful_shutdown(until_stopped(stopped.clone()));
        let admin = axum::serve(self.admin, admin.into_make_service())
            .with_graceful_shutdown(until_stopped(stopped.clone()));
        let shared = self.shared.map(|l| {
            axum::serve(l, public.into_make_service())
                .with_graceful_shutdown(until_stopped(stopped))
        });
        let signal = async move {
            shutdown.await;
            tracing::info!(service, "shutting down: finishing in-flight requests");
            let _ = stop.send(true);
        };
        let served = async {
            match shared {
                Some(shared) => tokio::try_join!(own, admin, shared).map(|_| ()),
                None => tokio::try_join!(own, admin).map(|_| ()),
            }
        };
        tokio::pin!(served);
        tokio::select! {
            // A listener failed before any shutdown was asked.
            r = &mut served => r?,
            () = signal => served.await?,
        }
        tracing::info!(service, "stopped");
        Ok(())
    }
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            futures::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                futures::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = futures::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

/// A response header value from a string we built; falls back to nothing rather than failing.
pub fn header_value(s: &str) -> Option<HeaderValue> {
    HeaderValue::from_str(s).ok()
}

/// `true` when the response is a problem document.
pub fn is_problem(resp: &Response) -> bool {
    resp.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with(PROBLEM_JSON))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_contract_names_the_deadline_header_the_client_stack_sends() {
        assert_eq!(finpay_api::headers::DEADLINE, DEADLINE_HEADER);
    }
}
