//! The supervisor's own HTTP port, on 127.0.0.1 only: what `finpay scale` (and a person with curl)
//! asks of a running `finpay up`.
//!
//! - `GET /v1/state`: the cluster state, as `cluster.json` holds it less the admin token.
//! - `POST /v1/scale` `{"service": "fraud", "replicas": 5}`: scale a service; answers when the new
//!   replicas are ready and removed ones are drained.
//! - `POST /v1/replace` `{"replica": "fraud-1"}`: replace one replica as a rolling update does.
//! - `GET /` and the rest of [`super::dashboard`]: the live dashboard.

use std::sync::Arc;

use anyhow::Context as _;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use finpay_services::ServiceKind;
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use super::Cluster;
use crate::supervisor::Shared;

/// `POST /v1/scale` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScaleRequest {
    pub service: ServiceKind,
    pub replicas: u16,
}

/// `POST /v1/replace` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplaceRequest {
    pub replica: String,
}

#[derive(Clone)]
struct ControlState {
    cluster: Arc<Mutex<Cluster>>,
    shared: Arc<Shared>,
}

/// Binds 127.0.0.1:`port` (0: a free one) and serves until the cluster stops. Returns the base URL
/// and the dashboard's sampler task, to abort when the cluster stops.
pub async fn start(
    cluster: Arc<Mutex<Cluster>>,
    shared: Arc<Shared>,
    port: u16,
) -> anyhow::Result<(String, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .with_context(|| format!("bind the dashboard port 127.0.0.1:{port}"))?;
    let url = format!("http://{}", listener.local_addr()?);
    let (dashboard, sampler) = super::dashboard::routes(shared.clone());
    let app = Router::new()
        .route("/v1/state", get(state))
        .route("/v1/scale", post(scale))
        .route("/v1/replace", post(replace))
        .with_state(ControlState { cluster, shared })
        .merge(dashboard);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::warn!(error = %e, "the control port stopped");
        }
    });
    Ok((url, sampler))
}

/// The cluster state without its admin token: the page of the dashboard shares this origin, and
/// the token stays in `cluster.json` (mode 0600) and on the server side.
fn public_state(shared: &Shared) -> crate::cluster::ClusterState {
    let mut state = shared.snapshot();
    state.admin_token.clear();
    state
}

async fn state(State(st): State<ControlState>) -> Response {
    Json(public_state(&st.shared)).into_response()
}

fn failed(e: anyhow::Error) -> Response {
    let status = if e.chain().any(|c| c.is::<crate::ConfigError>()) {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::CONFLICT
    };
    (
        status,
        Json(serde_json::json!({ "error": format!("{e:#}") })),
    )
        .into_response()
}

async fn scale(State(st): State<ControlState>, Json(req): Json<ScaleRequest>) -> Response {
    let result = st
        .cluster
        .lock()
        .await
        .scale(req.service, req.replicas)
        .await;
    match result {
        Ok(()) => Json(public_state(&st.shared)).into_response(),
        Err(e) => failed(e),
    }
}

async fn replace(State(st): State<ControlState>, Json(req): Json<ReplaceRequest>) -> Response {
    let result = st.cluster.lock().await.replace(&req.replica).await;
    match result {
        Ok(_) => Json(public_state(&st.shared)).into_response(),
        Err(e) => failed(e),
    }
}
