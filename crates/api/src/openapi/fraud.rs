//! The fraud service's document: an internal API payment calls.

use utoipa::openapi::path::HttpMethod;
use utoipa::openapi::OpenApi;

use super::common::{business_op, json_body, json_response, text_response, Doc, Problems};
use crate::fraud::{CheckRequest, CheckResponse, CHECKS, LEGACY_CHECK};

const TAG: &str = "checks";

pub fn document() -> OpenApi {
    let mut doc = Doc::new(
        "FinPay fraud API",
        "Stateless fraud rules. `POST /v1/checks` is a pure read: safe to retry and to hedge.",
    );
    doc.tag(TAG, "Fraud checks.");
    let body = doc.schema::<CheckRequest>();
    let answer = doc.schema::<CheckResponse>();
    let check = business_op(
        "create_check",
        TAG,
        "A verdict on one payment: SAFE or DENY.",
    )
    .request_body(Some(json_body(body)))
    .response(
        "200",
        json_response("The verdict, with a reason per rule that denied.", answer),
    );
    doc.path(
        CHECKS,
        HttpMethod::Post,
        Problems::new().business().body().apply(check),
    );
    let legacy = business_op(
        "legacy_check",
        TAG,
        "The demo's fraud endpoint (docs/scenarios.md): answers `SAFE`.",
    )
    .response("200", text_response("`SAFE`."));
    doc.path(
        LEGACY_CHECK,
        HttpMethod::Get,
        Problems::new().business().apply(legacy),
    );
    doc.build()
}
