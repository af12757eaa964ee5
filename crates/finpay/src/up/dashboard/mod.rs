//! The live dashboard of `finpay up`, on the supervisor's own port (127.0.0.1 only):
//!
//! - `GET /`: one page (HTML, CSS and script embedded in this binary; nothing from a CDN) that polls
//!   `GET /v1/dashboard` every second and draws the replicas, the breakers and the live charts;
//! - `GET /v1/dashboard`: every replica (phase, ready, restarts, last exit), each breaker of
//!   payment's clients, and the last five minutes of points from [`sampler`];
//! - `POST /v1/actions/{action}`: the design note's faults, applied server-side with the cluster's
//!   admin token, which never reaches the page: `fraud-errors` (30% of fraud's answers fail),
//!   `fraud-hangs` (30% hang for 3 s), `kill-fraud` (SIGKILL to one fraud replica),
//!   `kill-payment` (SIGKILL to a payment process), `notification-down` and `restore` (every
//!   fault off).
//!
//! An action must carry the `x-finpay-dashboard` header and a `Host` of 127.0.0.1 or localhost: a
//! page of another origin cannot add the header without a CORS preflight (which this server does
//! not answer), and a DNS-rebound name does not pass the `Host` check.

pub mod sampler;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use finpay_services::http::FaultSettings;
use finpay_services::ServiceKind;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde::Serialize;

use self::sampler::{BreakerView, History, Point};
use crate::chaos::inject::Injector;
use crate::chaos::schedule::Target;
use crate::cluster::ReplicaState;
use crate::supervisor::Shared;

/// The page.
const INDEX: &str = include_str!("index.html");
/// The header every action must carry.
pub const ACTION_HEADER: &str = "x-finpay-dashboard";
/// The share of fraud's answers that fail or hang under `fraud-errors` and `fraud-hangs`.
const FAULT_RATE: f64 = 0.3;

/// What `GET /v1/dashboard` answers.
#[derive(Debug, Serialize)]
pub struct View {
    pub payment_url: String,
    pub replicas: Vec<ReplicaState>,
    pub breakers: Vec<BreakerView>,
    pub points: Vec<Point>,
}

#[derive(Clone)]
struct Dash {
    shared: Arc<Shared>,
    history: Arc<Mutex<History>>,
    http: reqwest::Client,
}

/// The dashboard's routes, and the sampler task that feeds them (abort it when the cluster stops).
pub fn routes(shared: Arc<Shared>) -> (Router, tokio::task::JoinHandle<()>) {
    let history = Arc::new(Mutex::new(History::default()));
    let sampler = tokio::spawn(sampler::run(shared.clone(), history.clone()));
    let router = Router::new()
        .route("/", get(|| async { Html(INDEX) }))
        .route("/v1/dashboard", get(view))
        .route("/v1/actions/{action}", post(action))
        .with_state(Dash {
            shared,
            history,
            http: reqwest::Client::new(),
        });
    (router, sampler)
}

async fn view(State(d): State<Dash>) -> Json<View> {
    let state = d.shared.snapshot();
    let history = d.history.lock().unwrap_or_else(PoisonError::into_inner);
    Json(View {
        payment_url: state.payment_url,
        replicas: state.replicas,
        breakers: history.breakers(),
        points: history.points(),
    })
}

/// Whether a request may change the cluster: it names itself as the dashboard's and comes to a
/// loopback host name.
fn allowed(headers: &HeaderMap) -> bool {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    let name = host.rsplit_once(':').map_or(host, |(name, _)| name);
    headers.contains_key(ACTION_HEADER) && matches!(name, "127.0.0.1" | "localhost")
}

async fn action(State(d): State<Dash>, Path(action): Path<String>, headers: HeaderMap) -> Response {
    if !allowed(&headers) {
        return problem(
            StatusCode::FORBIDDEN,
            format!("actions need the {ACTION_HEADER} header and a 127.0.0.1 or localhost Host"),
        );
    }
    match apply(&d, &action).await {
        Ok(Some(did)) => Json(serde_json::json!({ "action": action, "did": did })).into_response(),
        Ok(None) => problem(
            StatusCode::NOT_FOUND,
            format!(
                "unknown action {action:?}; one of fraud-errors, fraud-hangs, kill-fraud, \
                 kill-payment, notification-down, restore"
            ),
        ),
        Err(e) => problem(StatusCode::CONFLICT, format!("{e:#}")),
    }
}

fn problem(status: StatusCode, detail: String) -> Response {
    (status, Json(serde_json::json!({ "error": detail }))).into_response()
}

/// Applies one action; `None` for a name that is not one.
async fn apply(d: &Dash, action: &str) -> anyhow::Result<Option<String>> {
    let proxies = BTreeMap::new();
    let injector = Injector {
        shared: &d.shared,
        http: &d.http,
        proxies: &proxies,
    };
    let fraud = Target::Service(ServiceKind::Fraud);
    let seed = u64::try_from(crate::cluster::now_ms()).unwrap_or_default();
    let did = match action {
        "fraud-errors" => {
            let faults = FaultSettings {
                seed,
                error_rate: FAULT_RATE,
                ..FaultSettings::default()
            };
            injector.set_faults(&fraud, &faults).await?;
            "30% of fraud's answers fail".to_owned()
        }
        "fraud-hangs" => {
            let faults = FaultSettings {
                seed,
                hang_rate: FAULT_RATE,
                ..FaultSettings::default()
            };
            injector.set_faults(&fraud, &faults).await?;
            "30% of fraud's answers hang for 3 s".to_owned()
        }
        "notification-down" => {
            let faults = FaultSettings {
                down: true,
                ..FaultSettings::default()
            };
            let target = Target::Service(ServiceKind::Notification);
            injector.set_faults(&target, &faults).await?;
            "notification answers 503 to everything".to_owned()
        }
        "restore" => {
            injector.restore(&[]).await?;
            "every fault off".to_owned()
        }
        "kill-fraud" => kill_one(&d.shared, ServiceKind::Fraud)?,
        "kill-payment" => kill_one(&d.shared, ServiceKind::Payment)?,
        _ => return Ok(None),
    };
    Ok(Some(did))
}

/// SIGKILL to the first running replica of `service`; the supervisor restarts it.
fn kill_one(shared: &Shared, service: ServiceKind) -> anyhow::Result<String> {
    let state = shared.snapshot();
    let (name, pid) = state
        .by_service(service)
        .find_map(|r| Some((r.name.clone(), r.pid?)))
        .ok_or_else(|| anyhow::anyhow!("no running {} replica", service.as_str()))?;
    let raw = i32::try_from(pid)?;
    kill(Pid::from_raw(raw), Signal::SIGKILL)?;
    Ok(format!("kill -9 {name} (pid {pid})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_need_the_header_and_a_loopback_host() {
        let with = |host: &str, marked: bool| {
            let mut h = HeaderMap::new();
            h.insert(header::HOST, host.parse().expect("header"));
            if marked {
                h.insert(ACTION_HEADER, "1".parse().expect("header"));
            }
            allowed(&h)
        };
        assert!(with("127.0.0.1:4000", true));
        assert!(with("localhost:4000", true));
        assert!(
            !with("127.0.0.1:4000", false),
            "no header: a plain form post"
        );
        assert!(!with("evil.example:4000", true), "a rebound name");
    }

    #[test]
    fn the_page_is_self_contained() {
        assert!(!INDEX.contains("src=\"http") && !INDEX.contains("href=\"http"));
        for id in ["replicas", "breakers", "success-rate", "chart"] {
            assert!(INDEX.contains(&format!("id=\"{id}\"")), "{id}");
        }
    }
}
