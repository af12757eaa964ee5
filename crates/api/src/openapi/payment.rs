//! The payment service's document: the public API.

use utoipa::openapi::path::{HttpMethod, ParameterBuilder, ParameterIn};
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::{ContentBuilder, OpenApi, Required};

use super::common::{
    admin_body_op, business_op, json_body, json_response, replayed, retry_after, text_response,
    Doc, Problems,
};
use crate::admin::{Endpoints, DEPENDENCY};
use crate::headers::{IDEMPOTENCY_KEY, IDEMPOTENT_REPLAYED};
use crate::payment::{CreatePayment, Payment, DEMO_PAY, PAYMENT, PAYMENTS};
use crate::problem::{slug, PROBLEM_JSON};
use finpay_core::{IdempotencyKey, PaymentId};

const TAG: &str = "payments";

pub fn document() -> OpenApi {
    let mut doc = Doc::new(
        "FinPay payment API",
        "Take a payment: fraud check (fail closed), a debit on the double-entry wallet, a \
         notification through the outbox. `POST /v1/payments` needs an `Idempotency-Key`; the same \
         key and body replay the stored answer.",
    );
    doc.tag(TAG, "Payments.");
    doc.tag(
        "demo",
        "The demo of docs/scenarios.md, when `demo.enabled = true`.",
    );
    create(&mut doc);
    get(&mut doc);
    demo(&mut doc);
    dependencies(&mut doc);
    doc.build()
}

fn create(doc: &mut Doc) {
    let body = doc.schema::<CreatePayment>();
    let payment = doc.schema::<Payment>();
    let key = ParameterBuilder::new()
        .name(IDEMPOTENCY_KEY)
        .parameter_in(ParameterIn::Header)
        .required(Required::True)
        .description(Some(
            "The client's key for this payment. The same key and body replay the stored answer; \
             the same key with another body is 422 `idempotency-key-reused`; the same key while \
             the first request runs is 409 `request-in-progress`.",
        ))
        .schema(Some(doc.schema::<IdempotencyKey>()))
        .build();
    let op = business_op(
        "create_payment",
        TAG,
        "Makes a payment: answers once it succeeded, was declined or could not be made.",
    )
    .parameter(key)
    .request_body(Some(json_body(body)))
    .response(
        "201",
        json_response(
            "The payment, `succeeded` or `declined` (with its `reason`).",
            payment,
        )
        .header(IDEMPOTENT_REPLAYED, replayed()),
    );
    let op = Problems::new()
        .business()
        .body()
        .add(400, &[slug::INVALID_REQUEST])
        .add(409, &[slug::REQUEST_IN_PROGRESS])
        .add(422, &[slug::IDEMPOTENCY_KEY_REUSED])
        .add(
            503,
            &[
                slug::FRAUD_UNAVAILABLE,
                slug::DEPENDENCY_UNAVAILABLE,
                slug::STORAGE_UNAVAILABLE,
            ],
        )
        .add(500, &[slug::INTERNAL])
        .replayable()
        .apply(op);
    doc.path(PAYMENTS, HttpMethod::Post, op);
}

fn get(doc: &mut Doc) {
    let payment = doc.schema::<Payment>();
    let id = ParameterBuilder::new()
        .name("id")
        .parameter_in(ParameterIn::Path)
        .required(Required::True)
        .schema(Some(doc.schema::<PaymentId>()))
        .build();
    let op = business_op(
        "get_payment",
        TAG,
        "A payment by id, in whatever state it is.",
    )
    .parameter(id)
    .response("200", json_response("The payment.", payment));
    let op = Problems::new()
        .business()
        .add(404, &[slug::UNKNOWN_PAYMENT])
        .add(503, &[slug::STORAGE_UNAVAILABLE])
        .apply(op);
    doc.path(PAYMENT, HttpMethod::Get, op);
}

fn demo(doc: &mut Doc) {
    let problem = doc.schema::<crate::problem::Problem>();
    let unavailable = text_response(
        "The payment did not succeed for a dependency's sake: one line of text, `retry later`. A \
         problem document (`storage-unavailable`, `service-down`, `injected-fault`) when the \
         payment could not even be stored or the service is down.",
    )
    .content(
        PROBLEM_JSON,
        ContentBuilder::new().schema(Some(problem)).build(),
    )
    .header("Retry-After", retry_after());
    let op = business_op(
        "demo_pay",
        "demo",
        "Makes a small demo payment with a fresh key and answers one line of text. Only with \
         `demo.enabled = true` (as `finpay up` runs it); 404 `not-found` otherwise.",
    )
    .response(
        "200",
        text_response("`payment <id> succeeded: ...` or `payment <id> declined: ... (<reason>)`."),
    );
    let op = Problems::new()
        .business()
        .add(404, &[slug::NOT_FOUND])
        .add(500, &[slug::INTERNAL])
        .apply(op)
        .response("503", unavailable);
    doc.path(DEMO_PAY, HttpMethod::Get, op);
}

fn dependencies(doc: &mut Doc) {
    let endpoints = doc.schema::<Endpoints>();
    let service = ParameterBuilder::new()
        .name("service")
        .parameter_in(ParameterIn::Path)
        .required(Required::True)
        .description(Some(
            "A service payment calls: `fraud`, `wallet` or `notification`.",
        ))
        .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
        .build();
    let op = admin_body_op(
        "put_dependency",
        "Replaces the replica list of one dependency; kept endpoints keep their statistics.",
        endpoints.clone(),
    )
    .parameter(service)
    .response("200", json_response("The list now in use.", endpoints));
    doc.path(DEPENDENCY, HttpMethod::Put, op);
}
