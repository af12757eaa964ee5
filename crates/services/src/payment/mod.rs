//! The payment service, the orchestrator.
//!
//! `POST /v1/payments` (with an `Idempotency-Key`) persists the payment in `received` before calling
//! anything, then drives it (see [`engine`]): fraud check (fail closed), wallet debit with a transfer
//! id derived from the payment id, and `succeed()`, which marks the payment succeeded and queues its
//! notification in one transaction. Idempotency follows the IETF draft and Stripe:
//!
//! | the key...                               | answer                                          |
//! |------------------------------------------|-------------------------------------------------|
//! | is new                                   | 201 with the payment (503 problem if `failed`)  |
//! | has the same body, payment terminal      | the stored outcome, `Idempotent-Replayed: true` |
//! | has the same body, left by a crash       | driven to the end here, then as above           |
//! | is in flight in this process             | 409 `request-in-progress`                       |
//! | has a different body                     | 422 `idempotency-key-reused`                    |
//!
//! A payment never answers 500: fraud unavailable is `failed` (503 with `Retry-After` and the payment
//! id), an unreachable wallet leaves the payment to the resumer (503 too), storage trouble is 503.

pub mod background;
pub mod engine;
pub mod settings;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use finpay_core::{
    AccountId, Amount, Currency, Fingerprint, IdempotencyKey, PaymentId, PaymentStatus,
};
use finpay_ledger::payments::{Begin, NewPayment, Payment, PaymentStore};
use finpay_resilience::ResilientClient;
use serde::Deserialize;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::Instrument;

use crate::http::config::{config_err, ServiceSettings};
use crate::http::faults::Faults;
use crate::http::server::{app_router, ReadyCheck, RequestDeadline, Server};
use crate::http::{json_response, ApiError, ApiJson};
use crate::ServeError;
use engine::{key_slot, payment_slot, Driven, Engine};
pub use settings::Settings;
use settings::{parse_urls, Demo};

pub const IDEMPOTENCY_KEY_HEADER: &str = "Idempotency-Key";
pub const REPLAYED_HEADER: &str = "Idempotent-Replayed";

/// `POST /v1/payments` body.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaymentBody {
    pub account_id: AccountId,
    pub merchant_account_id: AccountId,
    pub amount_minor: Amount,
    pub currency: Currency,
    #[serde(default)]
    pub description: Option<String>,
}

impl PaymentBody {
    /// The canonical form idempotency compares: the parsed values, not the JSON text.
    pub fn fingerprint(&self) -> Fingerprint {
        let amount = self.amount_minor.minor().to_string();
        let (marker, desc) = match &self.description {
            Some(d) => ("some", d.as_str()),
            None => ("none", ""),
        };
        Fingerprint::of(&[
            "payment/v1",
            self.account_id.as_str(),
            self.merchant_account_id.as_str(),
            &amount,
            self.currency.code(),
            marker,
            desc,
        ])
    }

    fn validate(&self, max_chars: usize) -> Result<(), ApiError> {
        if self.account_id == self.merchant_account_id {
            return Err(ApiError::invalid_request(
                "merchant_account_id",
                "merchant_account_id: must differ from account_id",
            ));
        }
        if let Some(d) = &self.description {
            let n = d.chars().count();
            if n > max_chars {
                return Err(ApiError::invalid_request(
                    "description",
                    format!("description: must be at most {max_chars} characters, got {n}"),
                ));
            }
            if d.chars().any(char::is_control) {
                return Err(ApiError::invalid_request(
                    "description",
                    "description: must not contain control characters",
                ));
            }
        }
        Ok(())
    }
}

/// The result of one payment request, before it is rendered as JSON or as `/pay` text.
struct Outcome {
    payment: Payment,
    replayed: bool,
    /// Set when the wallet could not be reached and the payment waits for the resumer.
    pending_why: Option<String>,
}

struct AppState {
    engine: Arc<Engine>,
    demo: Demo,
}

fn parse_key(headers: &HeaderMap) -> Result<IdempotencyKey, ApiError> {
    let field = IDEMPOTENCY_KEY_HEADER;
    let mut values = headers.get_all(field).iter();
    let Some(value) = values.next() else {
        return Err(ApiError::bad_request(
            field,
            format!("{field}: header is required"),
        ));
    };
    if values.next().is_some() {
        return Err(ApiError::bad_request(
            field,
            format!("{field}: send the header once"),
        ));
    }
    let s = value.to_str().map_err(|_| {
        ApiError::bad_request(field, format!("{field}: must be visible ASCII characters"))
    })?;
    IdempotencyKey::try_from(s).map_err(|e| ApiError::bad_request(field, format!("{field}: {e}")))
}

fn record(outcome: &str, started: Instant) {
    metrics::counter!("finpay_payments_total", "outcome" => outcome.to_owned()).increment(1);
    metrics::histogram!("finpay_payment_duration_seconds", "outcome" => outcome.to_owned())
        .record(started.elapsed().as_secs_f64());
}

/// The whole request path, shared by `POST /v1/payments` and `GET /pay`.
async fn pay(
    engine: Arc<Engine>,
    key: IdempotencyKey,
    body: PaymentBody,
    deadline: RequestDeadline,
    request_id: Option<HeaderValue>,
) -> Result<Outcome, ApiError> {
    let started = Instant::now();
    let fingerprint = body.fingerprint();
    let Some(mut claim) = engine.inflight.try_claim(vec![key_slot(key.as_str())]) else {
        record("in_progress", started);
        return Err(in_progress());
    };
    let new = NewPayment {
        id: PaymentId::new_v7(),
        idempotency_key: key,
        fingerprint: fingerprint.clone(),
        account_id: body.account_id,
        merchant_account_id: body.merchant_account_id,
        amount: body.amount_minor,
        currency: body.currency,
        description: body.description,
    };
    let (payment, replayed) = match engine
        .store
        .begin(new)
        .await
        .map_err(|e| ApiError::storage(&e))?
    {
        Begin::Created(p) => (p, false),
        Begin::Existing(p) => {
            if p.fingerprint != fingerprint {
                record("key_reused", started);
                return Err(ApiError::unprocessable(
                    "idempotency-key-reused",
                    "Idempotency key reused",
                    "this Idempotency-Key was used for a different payment; use a new key for a new payment",
                )
                .with_field(IDEMPOTENCY_KEY_HEADER)
                .with_extension("payment_id", p.id.to_string()));
            }
            if p.status.is_terminal() {
                record("replayed", started);
                return Ok(Outcome {
                    payment: p,
                    replayed: true,
                    pending_why: None,
                });
            }
            (p, true)
        }
    };
    if !claim.add(payment_slot(payment.id)) {
        // The resumer is driving it right now.
        record("in_progress", started);
        return Err(in_progress());
    }
    let deadline = deadline.bounded(engine.cfg.deadline());
    // Driven in its own task: a client that hangs up does not cut a payment off between two steps.
    let task_engine = engine.clone();
    let span = tracing::info_span!("payment", payment_id = %payment.id);
    let driven = tokio::spawn(
        engine::REQUEST_ID.scope(
            request_id,
            async move {
                let out = task_engine.drive(payment, deadline).await;
                drop(claim);
                out
            }
            .instrument(span),
        ),
    )
    .await
    .map_err(|e| ApiError::internal(&e))?
    .map_err(|e| ApiError::storage(&e))?;
    let outcome = match driven {
        Driven::Done(payment) => Outcome {
            payment,
            replayed,
            pending_why: None,
        },
        Driven::WalletUnavailable { payment, why } => Outcome {
            payment,
            replayed,
            pending_why: Some(why),
        },
    };
    let label = match (&outcome.pending_why, outcome.payment.status) {
        (Some(_), _) => "pending",
        (None, s) => s.as_str(),
    };
    record(label, started);
    Ok(outcome)
}

fn in_progress() -> ApiError {
    ApiError::conflict(
        "request-in-progress",
        "Request in progress",
        "a request with this Idempotency-Key is still being processed; retry later",
    )
    .with_field(IDEMPOTENCY_KEY_HEADER)
    .with_retry_after(Duration::from_secs(1))
}

/// The 503 for a payment that did not (yet) succeed for a dependency's sake.
fn unavailable_problem(o: &Outcome, retry_after: Duration) -> ApiError {
    let p = &o.payment;
    let e = match (&o.pending_why, p.status) {
        (None, PaymentStatus::Failed) => ApiError::unavailable(
            "fraud-unavailable",
            "Fraud check unavailable",
            "the fraud check could not be completed, so the payment was not made (nothing was debited)",
        ),
        _ => ApiError::unavailable(
            "dependency-unavailable",
            "Wallet unavailable",
            "the payment passed the fraud check but the wallet could not be reached; it will be completed \
             in the background: retry with the same Idempotency-Key or GET the payment",
        ),
    };
    e.with_retry_after(retry_after)
        .with_extension("payment_id", p.id.to_string())
        .with_extension("payment_status", p.status.as_str())
}

fn replay_header(mut resp: Response, replayed: bool) -> Response {
    if replayed {
        resp.headers_mut()
            .insert(REPLAYED_HEADER, HeaderValue::from_static("true"));
    }
    resp
}

async fn create_payment(
    State(st): State<Arc<AppState>>,
    deadline: Option<Extension<RequestDeadline>>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<PaymentBody>,
) -> Result<Response, ApiError> {
    let key = parse_key(&headers)?;
    body.validate(st.engine.cfg.description_max_chars)?;
    let deadline = deadline.map_or(RequestDeadline(None), |Extension(d)| d);
    let request_id = headers.get(crate::http::server::REQUEST_ID_HEADER).cloned();
    let o = pay(st.engine.clone(), key, body, deadline, request_id).await?;
    let resp = match (&o.pending_why, o.payment.status) {
        (None, PaymentStatus::Succeeded | PaymentStatus::Declined) => {
            json_response(StatusCode::CREATED, &o.payment)
        }
        _ => unavailable_problem(&o, st.engine.cfg.retry_after()).into_response(),
    };
    Ok(replay_header(resp, o.replayed))
}

async fn get_payment(
    State(st): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id: PaymentId = id
        .parse()
        .map_err(|e| ApiError::bad_request("id", format!("payment id: {e}")))?;
    match st.engine.store.get(id).await {
        Ok(Some(p)) => Ok(json_response(StatusCode::OK, &p)),
        Ok(None) => Err(ApiError::not_found(
            "unknown-payment",
            "Unknown payment",
            format!("payment {id} does not exist"),
        )
        .with_field("id")),
        Err(e) => Err(ApiError::storage(&e)),
    }
}

/// The design note's `GET /pay`: a small demo payment with a fresh key, answered in one line of text.
async fn demo_pay(
    State(st): State<Arc<AppState>>,
    deadline: Option<Extension<RequestDeadline>>,
    headers: HeaderMap,
) -> Response {
    let key = match IdempotencyKey::try_from(format!("pay-{}", uuid::Uuid::new_v4())) {
        Ok(k) => k,
        Err(e) => return ApiError::internal(&e).into_response(),
    };
    let d = &st.demo;
    let body = PaymentBody {
        account_id: d.customer.clone(),
        merchant_account_id: d.merchant.clone(),
        amount_minor: d.amount,
        currency: d.currency,
        description: Some("GET /pay demo".into()),
    };
    let deadline = deadline.map_or(RequestDeadline(None), |Extension(d)| d);
    let text = |status: StatusCode, s: String| {
        (
            status,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("{s}\n"),
        )
            .into_response()
    };
    let request_id = headers.get(crate::http::server::REQUEST_ID_HEADER).cloned();
    match pay(st.engine.clone(), key, body, deadline, request_id).await {
        Ok(o) => {
            let p = &o.payment;
            let money = format!(
                "{} {}",
                engine::format_amount(p.amount_minor, p.currency),
                p.currency
            );
            match (&o.pending_why, p.status) {
                (None, PaymentStatus::Succeeded) => text(
                    StatusCode::OK,
                    format!(
                        "payment {} succeeded: {money} from {} to {}",
                        p.id, p.account_id, p.merchant_account_id
                    ),
                ),
                (None, PaymentStatus::Declined) => text(
                    StatusCode::OK,
                    format!(
                        "payment {} declined: {money} from {} to {} ({})",
                        p.id,
                        p.account_id,
                        p.merchant_account_id,
                        p.reason.as_deref().unwrap_or("no reason")
                    ),
                ),
                _ => {
                    let mut resp = text(
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!("payment {} {}: {money}, retry later", p.id, p.status),
                    );
                    resp.headers_mut().insert(
                        header::RETRY_AFTER,
                        HeaderValue::from(st.engine.cfg.retry_after_s),
                    );
                    resp
                }
            }
        }
        Err(e) => e.into_response(),
    }
}

pub struct Application {
    server: Server,
    engine: Arc<Engine>,
}

fn client(
    name: &'static str,
    urls: &[String],
    policy: &finpay_resilience::ClientPolicy,
) -> Result<ResilientClient, ServeError> {
    let uris = parse_urls(name, urls)?;
    ResilientClient::new(name, uris, policy.clone()).map_err(|e| {
        let field = if e.field == "urls" {
            format!("{name}.urls")
        } else {
            format!("{name}.client.{}", e.field)
        };
        config_err(&field, e.reason)
    })
}

impl Application {
    /// Opens the store `storage.backend` names (`payments.db` in `data_dir`, or PostgreSQL) and builds
    /// the service.
    pub async fn build(settings: Settings) -> Result<Self, ServeError> {
        settings.common.validate()?;
        settings.validate()?;
        let store = crate::http::storage::open_payments(&settings.common).await?;
        Self::build_with_store(settings, store).await
    }

    /// Builds the service over any [`PaymentStore`].
    pub async fn build_with_store(
        settings: Settings,
        store: Arc<dyn PaymentStore>,
    ) -> Result<Self, ServeError> {
        settings.common.validate()?;
        settings.validate()?;
        let demo = settings.demo.parse()?;
        let fraud = client("fraud", &settings.fraud.urls, &settings.fraud.client)?;
        let wallet = client("wallet", &settings.wallet.urls, &settings.wallet.client)?;
        let notification = client(
            "notification",
            &settings.notification.urls,
            &settings.notification.client,
        )?;
        let engine = Arc::new(Engine::new(
            store.clone(),
            fraud,
            wallet,
            notification,
            settings.payment.clone(),
            settings.fraud.fallback.clone(),
        ));
        let faults = Faults::new("payment", settings.common.faults.clone());
        let ready: ReadyCheck = Arc::new(move || {
            let s = store.clone();
            Box::pin(async move { s.ping().await.map_err(|e| e.to_string()) })
        });
        let state = Arc::new(AppState {
            engine: engine.clone(),
            demo,
        });
        let business = Router::new()
            .route("/v1/payments", post(create_payment))
            .route("/v1/payments/{id}", get(get_payment))
            .route("/pay", get(demo_pay))
            .with_state(state);
        let router = app_router("payment", &settings.common, business, faults, ready);
        let server = Server::bind("payment", &settings.common, router).await?;
        Ok(Self { server, engine })
    }

    pub fn port(&self) -> u16 {
        self.server.port()
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// Serves, with the resumer and the outbox dispatcher running beside, until `shutdown`; then
    /// finishes in-flight requests and stops the loops.
    pub async fn run_until_stopped<F>(self, shutdown: F) -> Result<(), ServeError>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let (tx, rx) = watch::channel(false);
        let resumer = tokio::spawn(background::resumer(self.engine.clone(), rx.clone()));
        let dispatcher = tokio::spawn(background::outbox_dispatcher(self.engine.clone(), rx));
        let stop_tx = tx.clone();
        let result = self
            .server
            .run(async move {
                shutdown.await;
                let _ = stop_tx.send(true);
            })
            .await;
        let _ = tx.send(true);
        // The loops stop between steps; give an in-flight pass a bounded time to finish.
        let drain = async {
            let _ = resumer.await;
            let _ = dispatcher.await;
        };
        if tokio::time::timeout(Duration::from_secs(10), drain)
            .await
            .is_err()
        {
            tracing::warn!("background loops did not stop in time");
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(desc: Option<&str>) -> PaymentBody {
        PaymentBody {
            account_id: AccountId::try_from("cust-0001").expect("valid"),
            merchant_account_id: AccountId::try_from("merchant-0").expect("valid"),
            amount_minor: Amount::try_new(100).expect("valid"),
            currency: Currency::Usd,
            description: desc.map(str::to_owned),
        }
    }

    #[test]
    fn fingerprint_depends_on_values_and_tells_none_from_empty() {
        assert_eq!(body(None).fingerprint(), body(None).fingerprint());
        assert_ne!(body(None).fingerprint(), body(Some("")).fingerprint());
        assert_ne!(body(Some("a")).fingerprint(), body(Some("b")).fingerprint());
        let mut other = body(None);
        other.amount_minor = Amount::try_new(101).expect("valid");
        assert_ne!(body(None).fingerprint(), other.fingerprint());
    }

    #[test]
    fn idempotency_key_header_is_required_and_bounded() {
        let mut h = HeaderMap::new();
        assert_eq!(
            parse_key(&h).map_err(|e| e.status()).err(),
            Some(StatusCode::BAD_REQUEST)
        );
        h.insert(
            IDEMPOTENCY_KEY_HEADER,
            HeaderValue::from_str(&"k".repeat(256)).expect("header"),
        );
        let e = parse_key(&h).expect_err("too long");
        assert_eq!(e.field(), Some(IDEMPOTENCY_KEY_HEADER));
        h.insert(IDEMPOTENCY_KEY_HEADER, HeaderValue::from_static("order-1"));
        assert_eq!(parse_key(&h).expect("valid").as_str(), "order-1");
    }

    #[test]
    fn description_is_bounded() {
        assert!(body(Some("ok")).validate(10).is_ok());
        let e = body(Some(&"x".repeat(11)))
            .validate(10)
            .expect_err("too long");
        assert_eq!(e.field(), Some("description"));
    }
}
