//! The one `Application` every service runs as.
//!
//! A service contributes only what is its own ([`Parts`]: business routes, a readiness check of its
//! own storage, background loops); [`Application::build`] wraps it in the shape every service shares
//! (operational routes, middleware, fault injection, listener) and [`Application::run_until_stopped`]
//! serves it, runs its loops beside, and on shutdown stops accepting, finishes in-flight requests, then
//! stops the loops. Main and the tests share this path, as zero-to-production's `Application::build`
//! does.

use std::future::Future;
use std::io::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use axum::routing::MethodRouter;
use axum::Router;
use futures::future::BoxFuture;
use serde::Serialize;
use tokio::sync::watch;

use crate::http::config::{CommonSettings, ServiceSettings};
use crate::http::faults::Faults;
use crate::http::metrics::metrics_handle;
use crate::http::server::{app_router, ReadyCheck, Server};
use crate::{ServeError, ServiceKind};

/// How long background loops may take to finish their pass after the server stopped.
pub const BACKGROUND_STOP_MAX: Duration = Duration::from_secs(10);

/// A loop that runs beside the server until its receiver turns `true`.
pub type Background = Box<dyn FnOnce(watch::Receiver<bool>) -> BoxFuture<'static, ()> + Send>;

/// A service's business routes: each path with its methods and their state applied. Kept apart
/// until the edge lays the deadline and the fault injection on the handlers alone, so a method a
/// route does not take is the router's 405 before any deadline is judged or fault drawn.
#[derive(Default)]
pub struct Routes(pub(crate) Vec<(&'static str, MethodRouter)>);

impl Routes {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `path` with the methods of `methods` (one entry per path).
    pub fn route(mut self, path: &'static str, methods: MethodRouter) -> Self {
        self.0.push((path, methods));
        self
    }
}

/// What one service brings to its [`Application`].
pub struct Parts {
    /// The business routes.
    pub routes: Routes,
    /// Routes under `/admin/` of the service's own, behind the admin token (payment's dependency
    /// endpoints); empty for most.
    pub admin: Router,
    /// The readiness probe: the service's own storage, never a downstream service.
    pub ready: ReadyCheck,
    /// Loops that run beside the server (payment's resumer and outbox dispatcher).
    pub background: Vec<Background>,
}

/// A service's settings type, and how the service is assembled from them.
pub trait Assemble: ServiceSettings + Send + 'static {
    const KIND: ServiceKind;

    /// Opens the service's storage and builds its parts. The settings are validated already.
    fn assemble(&self) -> impl Future<Output = Result<Parts, ServeError>>;
}

/// A bound, ready-to-run service.
pub struct Application {
    kind: ServiceKind,
    server: Server,
    background: Vec<Background>,
}

impl Application {
    /// Validates `settings`, assembles the service and binds its listener. The metrics recorder
    /// is installed first, so the series the service's clients register at zero when they are
    /// built are kept (see [`crate::http::metrics`]).
    pub async fn build<S: Assemble>(settings: S) -> Result<Self, ServeError> {
        settings.common().validate()?;
        settings.validate()?;
        let _ = metrics_handle();
        let parts = settings.assemble().await?;
        Self::from_parts(S::KIND, settings.common(), parts).await
    }

    /// Wraps `parts` in what every service has and binds the listener.
    pub async fn from_parts(
        kind: ServiceKind,
        common: &CommonSettings,
        parts: Parts,
    ) -> Result<Self, ServeError> {
        let faults = Faults::new(kind.as_str(), common.faults.clone());
        let routers = app_router(
            kind.as_str(),
            kind.openapi_json(),
            common,
            parts.routes,
            parts.admin,
            faults,
            parts.ready,
        );
        let server = Server::bind(kind.as_str(), common, routers).await?;
        Ok(Self {
            kind,
            server,
            background: parts.background,
        })
    }

    pub fn kind(&self) -> ServiceKind {
        self.kind
    }

    pub fn port(&self) -> u16 {
        self.server.port()
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// The admin listener's address: `/admin/*`, `/metrics` and the probes.
    pub fn admin_addr(&self) -> SocketAddr {
        self.server.admin_addr()
    }

    /// Serves, with the background loops beside, until `shutdown`; then finishes in-flight requests
    /// and gives the loops [`BACKGROUND_STOP_MAX`] to end their pass.
    pub async fn run_until_stopped<F>(self, shutdown: F) -> Result<(), ServeError>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let (tx, rx) = watch::channel(false);
        let loops: Vec<_> = self
            .background
            .into_iter()
            .map(|start| tokio::spawn(start(rx.clone())))
            .collect();
        let stop = tx.clone();
        let result = self
            .server
            .run(async move {
                shutdown.await;
                let _ = stop.send(true);
            })
            .await;
        let _ = tx.send(true);
        let drain = futures::future::join_all(loops);
        if tokio::time::timeout(BACKGROUND_STOP_MAX, drain)
            .await
            .is_err()
        {
            tracing::warn!(service = %self.kind, "background loops did not stop in time");
        }
        result
    }
}

/// The one line printed on stdout once a service listens; supervisors and tests read it.
#[derive(Serialize)]
pub(crate) struct ListeningLine<'a> {
    pub event: &'static str,
    pub service: &'a str,
    pub addr: String,
    pub admin_addr: String,
    pub pid: u32,
}

pub(crate) fn print_listening(kind: ServiceKind, app: &Application) -> Result<(), ServeError> {
    let line = ListeningLine {
        event: "listening",
        service: kind.as_str(),
        addr: app.local_addr().to_string(),
        admin_addr: app.admin_addr().to_string(),
        pid: std::process::id(),
    };
    let json =
        serde_json::to_string(&line).map_err(|e| ServeError::Io(std::io::Error::other(e)))?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{json}")?;
    out.flush()?;
    Ok(())
}

/// A readiness check that asks `ping` of a store.
pub fn ready_when<F, Fut, E>(ping: F) -> ReadyCheck
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), E>> + Send + 'static,
    E: std::fmt::Display,
{
    std::sync::Arc::new(move || {
        let fut = ping();
        Box::pin(async move { fut.await.map_err(|e| e.to_string()) })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listening_line_has_the_contract_field_order() {
        let line = ListeningLine {
            event: "listening",
            service: "fraud",
            addr: "127.0.0.1:40123".into(),
            admin_addr: "127.0.0.1:40124".into(),
            pid: 1234,
        };
        assert_eq!(
            serde_json::to_string(&line).expect("serializes"),
            r#"{"event":"listening","service":"fraud","addr":"127.0.0.1:40123","admin_addr":"127.0.0.1:40124","pid":1234}"#
        );
    }
}
