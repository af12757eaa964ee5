//! The ready-made HTTP client stack: every layer of this crate composed in front of a pooled hyper
//! client, over a set of replicas. This is what `finpay-services` uses for fraud, wallet and
//! notification.
//!
//! This module composes; what the layers are set to comes from a [`ClientPolicy`]
//! ([`crate::policy`]), and the bottom of the stack is an [`HttpEndpoint`] per replica
//! ([`crate::endpoint`]). It re-exports both modules' public items (and [`Idempotent`],
//! [`Deadline`]), so `client::ClientPolicy` and `policy::ClientPolicy` name the same type.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tower::util::BoxCloneSyncService;
use tower::{Service, ServiceBuilder, ServiceExt};

use crate::balance::health;
use crate::balance::{Balance, EndpointSet, NoEndpoint};
use crate::breaker::{Breaker, BreakerOpen, CircuitBreakerLayer, State as BreakerState};
use crate::bulkhead::{BulkheadFull, BulkheadLayer, Limiter};
use crate::classify::{BoxError, HttpClassify};
use crate::deadline::{DeadlineExceeded, DeadlineLayer, PerTryTimeoutLayer};
use crate::endpoint::{check_urls, http_probe, hyper_client, HttpRequestEndpoint};
pub use crate::events::{EventHooks, Events};
use crate::hedge::HedgeLayer;
use crate::outbound::Outbound;
use crate::policy::bad;
use crate::retry::RetryLayer;
use crate::telemetry::{CallMetrics, CallOutcome};

pub use crate::classify::{is_idempotent, Idempotent};
pub use crate::deadline::{Deadline, DEADLINE_HEADER};
pub use crate::endpoint::{HttpEndpoint, HyperClient};
pub use crate::policy::{
    balance_config, breaker_config, AdaptiveLimit, BalanceStrategy, BalancerPolicy, BreakerPolicy,
    BudgetModeName, BudgetPolicy, BulkheadPolicy, ClientPolicy, HealthCheckPolicy, HedgePolicy,
    InvalidConfig, OutlierPolicy, WindowKind,
};

/// Why a call produced no usable response.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The deadline was spent before an answer came (or before anything was sent).
    #[error("deadline exceeded")]
    DeadlineExceeded,
    /// The dependency's breaker is open; try again after `retry_after`.
    #[error("circuit breaker open")]
    BreakerOpen {
        /// When the breaker will next admit a probe.
        retry_after: Duration,
    },
    /// Too many calls to this dependency are in flight.
    #[error("bulkhead full")]
    BulkheadFull,
    /// No endpoint is configured.
    #[error("no endpoint available")]
    NoEndpoint,
    /// Every allowed try failed (or the budget allowed no more).
    #[error("attempts exhausted: {last}")]
    Exhausted {
        /// The last failure, for logs.
        last: String,
        /// The last HTTP status seen, if the last failure was a response.
        status: Option<http::StatusCode>,
    },
}

impl CallError {
    /// How long the caller should tell its own client to wait (`Retry-After`), for the errors where
    /// waiting helps: an open breaker or a full bulkhead.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            CallError::BreakerOpen { retry_after } => Some(*retry_after),
            CallError::BulkheadFull => Some(Duration::from_secs(1)),
            _ => None,
        }
    }
}

/// The type-erased layer stack every call goes through.
pub type Stack = BoxCloneSyncService<Outbound, http::Response<Bytes>, BoxError>;

type UpdateFn = dyn Fn(Vec<http::Uri>) + Send + Sync;

struct Inner {
    name: &'static str,
    calls: CallMetrics,
    stack: Stack,
    breaker: Option<Breaker>,
    ejected: Box<dyn Fn() -> usize + Send + Sync>,
    update: Option<Box<UpdateFn>>,
    _health: Option<AbortOnDrop>,
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A pooled, retrying, hedging, deadline-aware HTTP client for one dependency over its replicas.
/// Cloning is cheap (an `Arc`).
///
/// The stack, outermost first: deadline (fail fast, propagate) -> bulkhead -> circuit breaker (per
/// service) -> retry (budget, backoff) -> hedge (same budget) -> per-try timeout -> balancer (p2c
/// peak-EWMA, outlier ejection, health checks) -> endpoint (pooled hyper client).
#[derive(Clone)]
pub struct ResilientClient {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ResilientClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResilientClient")
            .field("name", &self.inner.name)
            .finish_non_exhaustive()
    }
}

/// Builds the layer stack of `policy` over `set`. Public so other clients (and simulations) can reuse
/// exactly what [`ResilientClient`] uses.
pub fn build_stack<S>(
    name: &'static str,
    policy: &ClientPolicy,
    set: EndpointSet<http::Uri, S>,
) -> Result<(Stack, Option<Breaker>), InvalidConfig>
where
    S: Service<Outbound, Response = http::Response<Bytes>, Error = BoxError>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    build_stack_with_events(name, policy, set, &EventHooks::none())
}

/// [`build_stack`], telling `events` of every layer's decisions (the set's ejections are told to
/// the hooks of its own [`crate::balance::BalanceConfig`]; [`balance_config_with_events`] sets them).
pub fn build_stack_with_events<S>(
    name: &'static str,
    policy: &ClientPolicy,
    set: EndpointSet<http::Uri, S>,
    events: &EventHooks,
) -> Result<(Stack, Option<Breaker>), InvalidConfig>
where
    S: Service<Outbound, Response = http::Response<Bytes>, Error = BoxError>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    policy.validate()?;
    let budget = policy.retry_budget()?;
    let mut retry = policy.retry_config(name, budget.clone())?;
    retry.events = events.clone();
    let mut hedge = policy.hedge_config(name, budget)?;
    hedge.events = events.clone();
    let breaker = if policy.breaker.enabled {
        let mut cfg = breaker_config(name, policy);
        cfg.events = events.clone();
        Some(Breaker::try_new(cfg).map_err(|e| bad("breaker", e.to_string()))?)
    } else {
        None
    };
    let limiter = Limiter::try_new(policy.bulkhead_config()).map_err(|e| bad("bulkhead", e))?;
    let balance = Balance::new(set, HttpClassify);
    let stack = ServiceBuilder::new()
        // Every wait below is bounded by the deadline (per-try timeout, retry backoff, bulkhead
        // wait), so the outer layer only fails fast and propagates.
        .layer(DeadlineLayer::new(None).propagate_only())
        .layer(BulkheadLayer::new(limiter, HttpClassify).with_events(name, events.clone()))
        .option_layer(
            breaker
                .clone()
                .map(|b| CircuitBreakerLayer::new(b, HttpClassify)),
        )
        .layer(RetryLayer::new(retry, HttpClassify))
        .layer(HedgeLayer::new(hedge, HttpClassify))
        .layer(PerTryTimeoutLayer::new(policy.per_try_timeout()))
        .service(balance)
        .map_err(Into::<BoxError>::into);
    Ok((BoxCloneSyncService::new(stack), breaker))
}

impl ResilientClient {
    /// Builds the client over real HTTP endpoints; the policy is validated here too. Active health
    /// checks start when enabled and a tokio runtime is running.
    pub fn new(
        name: &'static str,
        endpoints: Vec<http::Uri>,
        policy: ClientPolicy,
    ) -> Result<Self, InvalidConfig> {
        Self::new_with_events(name, endpoints, policy, EventHooks::none())
    }

    /// [`Self::new`], telling `events` of every layer's decisions (retries, hedges, budget
    /// refusals, breaker transitions, ejections, rejections); see [`crate::events`].
    pub fn new_with_events(
        name: &'static str,
        endpoints: Vec<http::Uri>,
        policy: ClientPolicy,
        events: EventHooks,
    ) -> Result<Self, InvalidConfig> {
        policy.validate()?;
        check_urls(&endpoints)?;
        let http = hyper_client(&policy);
        let set = EndpointSet::new(balance_config_with_events(name, &policy, &events));
        for e in &endpoints {
            set.insert(
                e.clone(),
                HttpEndpoint::new(e.clone(), http.clone(), policy.max_response_bytes),
            );
        }
        let (stack, breaker) = build_stack_with_events(name, &policy, set.clone(), &events)?;
        let health = start_health_checks(&set, &policy, &http);
        let update = endpoint_updater(set.clone(), http, policy.max_response_bytes);
        Ok(Self {
            inner: Arc::new(Inner {
                name,
                calls: CallMetrics::new(name),
                stack,
                breaker,
                ejected: Box::new(move || set.ejected()),
                update: Some(update),
                _health: health,
            }),
        })
    }

    /// Builds the client over any endpoint services (a simulation, another transport). No health
    /// checks; `update_endpoints` is a no-op.
    pub fn with_endpoints<S>(
        name: &'static str,
        endpoints: Vec<(http::Uri, S)>,
        policy: ClientPolicy,
    ) -> Result<Self, InvalidConfig>
    where
        S: Service<http::Request<Bytes>, Response = http::Response<Bytes>, Error = BoxError>
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        Self::with_endpoints_and_events(name, endpoints, policy, EventHooks::none())
    }

    /// [`Self::with_endpoints`], telling `events` of every layer's decisions.
    pub fn with_endpoints_and_events<S>(
        name: &'static str,
        endpoints: Vec<(http::Uri, S)>,
        policy: ClientPolicy,
        events: EventHooks,
    ) -> Result<Self, InvalidConfig>
    where
        S: Service<http::Request<Bytes>, Response = http::Response<Bytes>, Error = BoxError>
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        policy.validate()?;
        if endpoints.is_empty() {
            return Err(bad("urls", "at least one endpoint is needed"));
        }
        let set = EndpointSet::new(balance_config_with_events(name, &policy, &events));
        for (u, s) in endpoints {
            set.insert(u, HttpRequestEndpoint(s));
        }
        let (stack, breaker) = build_stack_with_events(name, &policy, set.clone(), &events)?;
        Ok(Self {
            inner: Arc::new(Inner {
                name,
                calls: CallMetrics::new(name),
                stack,
                breaker,
                ejected: Box::new(move || set.ejected()),
                update: None,
                _health: None,
            }),
        })
    }

    /// The dependency name used as the metrics label.
    pub fn name(&self) -> &'static str {
        self.inner.name
    }

    /// The service-level breaker's state (`None` when disabled).
    pub fn breaker_state(&self) -> Option<BreakerState> {
        self.inner.breaker.as_ref().map(Breaker::state)
    }

    /// Endpoints ejected right now.
    pub fn ejected_endpoints(&self) -> usize {
        (self.inner.ejected)()
    }

    /// Replaces the endpoint set (endpoints kept keep their statistics).
    pub fn update_endpoints(&self, endpoints: Vec<http::Uri>) -> Result<(), InvalidConfig> {
        check_urls(&endpoints)?;
        if let Some(u) = &self.inner.update {
            u(endpoints);
        }
        Ok(())
    }

    /// The layer stack, for callers that want a tower `Service`.
    pub fn stack(&self) -> Stack {
        self.inner.stack.clone()
    }

    /// Sends `req` (its URI needs only path and query) to one of the endpoints, retrying and hedging
    /// as the policy allows, and finishing by `deadline`. 4xx answers are `Ok`; a 5xx that survives
    /// every try is [`CallError::Exhausted`] with its status.
    pub async fn call(
        &self,
        req: http::Request<Bytes>,
        deadline: Deadline,
    ) -> Result<http::Response<Bytes>, CallError> {
        let started = tokio::time::Instant::now();
        // A spent deadline fails in the stack's deadline layer, before anything is sent.
        let req = Outbound::new(req, Some(deadline));
        let result = match self.inner.stack.clone().oneshot(req).await {
            Ok(resp) if resp.status().is_server_error() => {
                let status = resp.status();
                Err(CallError::Exhausted {
                    last: format!("status {status}"),
                    status: Some(status),
                })
            }
            Ok(resp) => Ok(resp),
            Err(e) => Err(map_error(e)),
        };
        let outcome = match &result {
            Ok(_) => CallOutcome::Ok,
            Err(CallError::Exhausted { .. }) => CallOutcome::Exhausted,
            Err(CallError::DeadlineExceeded) => CallOutcome::Deadline,
            Err(CallError::BreakerOpen { .. }) => CallOutcome::BreakerOpen,
            Err(CallError::BulkheadFull) => CallOutcome::BulkheadFull,
            Err(CallError::NoEndpoint) => CallOutcome::NoEndpoint,
        };
        self.inner.calls.record(outcome, started.elapsed());
        result
    }
}

/// The balancer settings of `policy` (see [`balance_config`]), telling `events` of every ejection.
pub fn balance_config_with_events(
    name: &'static str,
    policy: &ClientPolicy,
    events: &EventHooks,
) -> crate::balance::BalanceConfig {
    let mut cfg = balance_config(name, policy);
    cfg.events = events.clone();
    if let Some(b) = cfg.endpoint_breaker.as_mut() {
        b.events = events.clone();
    }
    cfg
}

/// Starts the active health checks of `policy` over `set`, if they are enabled and a tokio runtime
/// is running; the task ends when the returned guard is dropped.
fn start_health_checks(
    set: &EndpointSet<http::Uri, HttpEndpoint>,
    policy: &ClientPolicy,
    http: &HyperClient,
) -> Option<AbortOnDrop> {
    let hc = &policy.health_check;
    if !hc.enabled || tokio::runtime::Handle::try_current().is_err() {
        return None;
    }
    let probe = http_probe(http.clone(), hc.path.clone());
    Some(AbortOnDrop(health::spawn(
        set,
        policy.health_check_config(),
        probe,
    )))
}

/// What [`ResilientClient::update_endpoints`] runs: removes the endpoints not in the new list and
/// adds the new ones, so the endpoints kept keep their statistics.
fn endpoint_updater(
    set: EndpointSet<http::Uri, HttpEndpoint>,
    http: HyperClient,
    max_body: usize,
) -> Box<UpdateFn> {
    Box::new(move |uris: Vec<http::Uri>| {
        let current: Vec<http::Uri> = set.snapshot().iter().map(|e| e.key().clone()).collect();
        for u in &current {
            if !uris.contains(u) {
                set.remove(u);
            }
        }
        for u in uris {
            if !current.contains(&u) {
                set.insert(u.clone(), HttpEndpoint::new(u, http.clone(), max_body));
            }
        }
    })
}

/// The [`CallError`] for what the stack failed with: its typed cause, else the whole error chain.
fn map_error(e: BoxError) -> CallError {
    if e.is::<DeadlineExceeded>() {
        return CallError::DeadlineExceeded;
    }
    if let Some(o) = e.downcast_ref::<BreakerOpen>() {
        return CallError::BreakerOpen {
            retry_after: o.retry_after,
        };
    }
    if e.is::<BulkheadFull>() {
        return CallError::BulkheadFull;
    }
    if e.is::<NoEndpoint>() {
        return CallError::NoEndpoint;
    }
    CallError::Exhausted {
        last: error_chain(e.as_ref()),
        status: None,
    }
}

/// `e` and each of its sources, joined by `: `.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
