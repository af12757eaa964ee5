//! The payment service's routes: `POST /v1/payments`, `GET /v1/payments/{id}` and the demo's
//! `GET /pay` (docs/scenarios.md), all through one request path, [`pay`].

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Extension;
use finpay_api::headers::{IDEMPOTENCY_KEY, IDEMPOTENT_REPLAYED, REQUEST_ID};
use finpay_api::payment::{self as api, CreatePayment};
use finpay_api::problem::slug;
use finpay_core::{Fingerprint, IdempotencyKey, PaymentId, PaymentStatus};
use finpay_ledger::payments::{Begin, Lease, NewPayment, Payment};
use tokio::time::Instant;
use tracing::Instrument;

use super::engine::{self, Driven, Engine};
use super::settings::Demo;
use crate::app::Routes;
use crate::http::server::RequestDeadline;
use crate::http::{json_response, ApiError, ApiJson};

struct AppState {
    engine: Arc<Engine>,
    demo: Demo,
}

/// The business routes over `engine`.
pub fn router(engine: Arc<Engine>, demo: Demo) -> Routes {
    register_outcomes();
    let enabled = demo.enabled;
    let st = Arc::new(AppState { engine, demo });
    let mut routes = Routes::new()
        .route(api::PAYMENTS, post(create_payment).with_state(st.clone()))
        .route(api::PAYMENT, get(get_payment).with_state(st.clone()));
    // Without the demo the route does not exist: 404, like any unknown path.
    if enabled {
        routes = routes.route(api::DEMO_PAY, get(demo_pay).with_state(st));
    }
    routes
}

/// A payment as the API shows it.
pub fn view(p: &Payment) -> api::Payment {
    api::Payment {
        id: p.id,
        account_id: p.account_id.clone(),
        merchant_account_id: p.merchant_account_id.clone(),
        amount_minor: p.amount_minor,
        currency: p.currency,
        description: p.description.clone(),
        status: p.status,
        reason: p.reason.clone(),
        needs_review: p.needs_review,
        created_at_ms: p.created_at_ms,
        updated_at_ms: p.updated_at_ms,
    }
}

/// The canonical form idempotency compares: the parsed values, not the JSON text.
pub fn fingerprint(body: &CreatePayment) -> Fingerprint {
    let amount = body.amount_minor.minor().to_string();
    let (marker, desc) = match &body.description {
        Some(d) => ("some", d.as_str()),
        None => ("none", ""),
    };
    Fingerprint::of(&[
        "payment/v1",
        body.account_id.as_str(),
        body.merchant_account_id.as_str(),
        &amount,
        body.currency.code(),
        marker,
        desc,
    ])
}

/// What the types cannot say about a payment body.
fn validate(body: &CreatePayment, max_chars: usize) -> Result<(), ApiError> {
    if body.account_id == body.merchant_account_id {
        return Err(ApiError::invalid_request(
            "merchant_account_id",
            "merchant_account_id: must differ from account_id",
        ));
    }
    if let Some(d) = &body.description {
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

/// The result of one payment request, before it is rendered as JSON or as `/pay` text.
struct Outcome {
    payment: Payment,
    replayed: bool,
    /// Set when the wallet could not be reached and the payment waits for the resumer.
    pending_why: Option<String>,
}

fn parse_key(headers: &HeaderMap) -> Result<IdempotencyKey, ApiError> {
    let field = IDEMPOTENCY_KEY;
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

/// The outcomes [`record`] counts whatever the traffic: a payment's terminal status, `pending`, and
/// the answers that start no work. Registered at zero when the routes are built, so a success rate
/// or an SLO burn rate has both of its sides before the first failure (a counter born at 1 loses
/// that first increase to `rate()`).
const OUTCOMES: [&str; 8] = [
    "succeeded",
    "declined",
    "failed",
    "pending",
    "replayed",
    "key_reused",
    "in_progress",
    ERROR,
];

/// The outcome of a request this replica could not answer with a payment: its store failed (503),
/// or the task driving the payment died (500). It counts against the success rate.
const ERROR: &str = "error";

fn register_outcomes() {
    for outcome in OUTCOMES {
        metrics::counter!("finpay_payments_total", "outcome" => outcome).increment(0);
    }
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
    body: CreatePayment,
    deadline: RequestDeadline,
    request_id: Option<HeaderValue>,
) -> Result<Outcome, ApiError> {
    let started = Instant::now();
    let fingerprint = fingerprint(&body);
    let (payment, lease, replayed) = match begin(&engine, key, body, fingerprint, started).await? {
        Begun::Drive(p, lease, replayed) => (p, lease, replayed),
        Begun::Done(outcome) => return Ok(outcome),
    };
    let deadline = deadline.bounded(engine.cfg.deadline());
    // Driven in its own task: a client that hangs up does not cut a payment off between two steps.
    let task_engine = engine.clone();
    let span = tracing::info_span!("payment", payment_id = %payment.id);
    let driven = tokio::spawn(engine::REQUEST_ID.scope(
        request_id,
        async move { task_engine.drive(payment, lease, deadline).await }.instrument(span),
    ))
    .await
    .map_err(|e| {
        record(ERROR, started);
        ApiError::internal(&e)
    })?
    .map_err(|e| {
        record(ERROR, started);
        ApiError::storage(&e)
    })?;
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
        // Another replica took the payment over while this one paused; it finishes it.
        Driven::LeaseLost(_) => {
            record("in_progress", started);
            return Err(in_progress());
        }
    };
    let label = match (&outcome.pending_why, outcome.payment.status) {
        (Some(_), _) => "pending",
        (None, s) => s.as_str(),
    };
    record(label, started);
    Ok(outcome)
}

/// What `begin` found: a payment to drive under its lease (and whether it existed), or an outcome
/// to answer at once.
enum Begun {
    Drive(Payment, Lease, bool),
    Done(Outcome),
}

/// Stores the payment in `received` with this replica's lease, or finds the one this key already
/// made: a live lease on it, from any replica, is a request in progress (409).
async fn begin(
    engine: &Engine,
    key: IdempotencyKey,
    body: CreatePayment,
    fingerprint: Fingerprint,
    started: Instant,
) -> Result<Begun, ApiError> {
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
    let begun = engine
        .store
        .begin(new, &engine.owner, engine.cfg.lease_ttl())
        .await
        .map_err(|e| {
            record(ERROR, started);
            ApiError::storage(&e)
        })?;
    match begun {
        Begin::Created(p, lease) => Ok(Begun::Drive(p, lease, false)),
        // The store takes a lease over only for the same fingerprint, so another body has none.
        Begin::Existing { payment, .. } if payment.fingerprint != fingerprint => {
            record("key_reused", started);
            Err(key_reused(&payment))
        }
        Begin::Existing { payment, .. } if payment.status.is_terminal() => {
            record("replayed", started);
            Ok(Begun::Done(Outcome {
                payment,
                replayed: true,
                pending_why: None,
            }))
        }
        Begin::Existing {
            payment,
            lease: Some(lease),
        } => Ok(Begun::Drive(payment, lease, true)),
        Begin::Existing { lease: None, .. } => {
            record("in_progress", started);
            Err(in_progress())
        }
    }
}

fn key_reused(existing: &Payment) -> ApiError {
    ApiError::unprocessable(
        slug::IDEMPOTENCY_KEY_REUSED,
        "Idempotency key reused",
        "this Idempotency-Key was used for a different payment; use a new key for a new payment",
    )
    .with_field(IDEMPOTENCY_KEY)
    .with_extension("payment_id", existing.id.to_string())
}

fn in_progress() -> ApiError {
    ApiError::conflict(
        slug::REQUEST_IN_PROGRESS,
        "Request in progress",
        "a request with this Idempotency-Key is still being processed; retry later",
    )
    .with_field(IDEMPOTENCY_KEY)
    .with_retry_after(Duration::from_secs(1))
}

/// The 503 for a payment that did not (yet) succeed for a dependency's sake.
fn unavailable_problem(o: &Outcome, retry_after: Duration) -> ApiError {
    let p = &o.payment;
    let e = match (&o.pending_why, p.status) {
        (None, PaymentStatus::Failed) => ApiError::unavailable(
            slug::FRAUD_UNAVAILABLE,
            "Fraud check unavailable",
            "the fraud check could not be completed, so the payment was not made (nothing was debited)",
        ),
        _ => ApiError::unavailable(
            slug::DEPENDENCY_UNAVAILABLE,
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
            .insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
    }
    resp
}

async fn create_payment(
    State(st): State<Arc<AppState>>,
    deadline: Option<Extension<RequestDeadline>>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<CreatePayment>,
) -> Result<Response, ApiError> {
    let key = parse_key(&headers)?;
    validate(&body, st.engine.cfg.description_max_chars)?;
    let deadline = deadline.map_or(RequestDeadline(None), |Extension(d)| d);
    let request_id = headers.get(REQUEST_ID).cloned();
    let o = pay(st.engine.clone(), key, body, deadline, request_id).await?;
    let resp = match (&o.pending_why, o.payment.status) {
        (None, PaymentStatus::Succeeded | PaymentStatus::Declined) => {
            json_response(StatusCode::CREATED, &view(&o.payment))
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
        Ok(Some(p)) => Ok(json_response(StatusCode::OK, &view(&p))),
        Ok(None) => Err(ApiError::not_found(
            slug::UNKNOWN_PAYMENT,
            "Unknown payment",
            format!("payment {id} does not exist"),
        )
        .with_field("id")),
        Err(e) => Err(ApiError::storage(&e)),
    }
}

/// The demo's `GET /pay` (docs/scenarios.md): a small demo payment with a fresh key, answered in one line of text.
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
    let body = CreatePayment {
        account_id: d.customer.clone(),
        merchant_account_id: d.merchant.clone(),
        amount_minor: d.amount,
        currency: d.currency,
        description: Some("GET /pay demo".into()),
    };
    let deadline = deadline.map_or(RequestDeadline(None), |Extension(d)| d);
    let request_id = headers.get(REQUEST_ID).cloned();
    match pay(st.engine.clone(), key, body, deadline, request_id).await {
        Ok(o) => demo_text(&o, st.engine.cfg.retry_after_s),
        Err(e) => e.into_response(),
    }
}

/// `/pay`'s one line: succeeded, declined (with the reason) or 503 "retry later".
fn demo_text(o: &Outcome, retry_after_s: u64) -> Response {
    let text = |status: StatusCode, s: String| {
        (
            status,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("{s}\n"),
        )
            .into_response()
    };
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
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_s));
            resp
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use finpay_core::{AccountId, Amount, Currency};

    fn body(desc: Option<&str>) -> CreatePayment {
        CreatePayment {
            account_id: AccountId::try_from("cust-0001").expect("valid"),
            merchant_account_id: AccountId::try_from("merchant-0").expect("valid"),
            amount_minor: Amount::try_new(100).expect("valid"),
            currency: Currency::Usd,
            description: desc.map(str::to_owned),
        }
    }

    #[test]
    fn fingerprint_depends_on_values_and_tells_none_from_empty() {
        assert_eq!(fingerprint(&body(None)), fingerprint(&body(None)));
        assert_ne!(fingerprint(&body(None)), fingerprint(&body(Some(""))));
        assert_ne!(fingerprint(&body(Some("a"))), fingerprint(&body(Some("b"))));
        let mut other = body(None);
        other.amount_minor = Amount::try_new(101).expect("valid");
        assert_ne!(fingerprint(&body(None)), fingerprint(&other));
    }

    #[test]
    fn idempotency_key_header_is_required_and_bounded() {
        let mut h = HeaderMap::new();
        assert_eq!(
            parse_key(&h).map_err(|e| e.status()).err(),
            Some(StatusCode::BAD_REQUEST)
        );
        h.insert(
            IDEMPOTENCY_KEY,
            HeaderValue::from_str(&"k".repeat(256)).expect("header"),
        );
        let e = parse_key(&h).expect_err("too long");
        assert_eq!(e.field(), Some(IDEMPOTENCY_KEY));
        h.insert(IDEMPOTENCY_KEY, HeaderValue::from_static("order-1"));
        assert_eq!(parse_key(&h).expect("valid").as_str(), "order-1");
    }

    #[test]
    fn description_is_bounded() {
        assert!(validate(&body(Some("ok")), 10).is_ok());
        let e = validate(&body(Some(&"x".repeat(11))), 10).expect_err("too long");
        assert_eq!(e.field(), Some("description"));
    }
}
