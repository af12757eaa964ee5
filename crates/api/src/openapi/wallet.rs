//! The wallet service's document: the double-entry ledger payment debits through.

use utoipa::openapi::path::{HttpMethod, ParameterBuilder, ParameterIn};
use utoipa::openapi::schema::Schema;
use utoipa::openapi::{OpenApi, RefOr, Required};

use super::common::{business_op, json_body, json_response, Doc, Problems};
use crate::headers::IDEMPOTENCY_KEY;
use crate::problem::slug;
use crate::wallet::{Account, CreateTransfer, Transfer, ACCOUNT, TRANSFER, TRANSFERS};
use finpay_core::{AccountId, TransferId};

const TAG: &str = "wallet";

pub fn document() -> OpenApi {
    let mut doc = Doc::new(
        "FinPay wallet API",
        "Double-entry transfers keyed by the caller's transfer id, and accounts. A transfer's \
         amount has no sign: it moves from the debit account to the credit account.",
    );
    doc.tag(TAG, "Transfers and accounts.");
    transfer(&mut doc);
    let id = doc.schema::<TransferId>();
    let t = doc.schema::<Transfer>();
    let get = by_id("get_transfer", "A committed transfer.", id)
        .response("200", json_response("The transfer.", t));
    let get = Problems::new()
        .business()
        .add(404, &[slug::UNKNOWN_TRANSFER])
        .add(503, &[slug::STORAGE_UNAVAILABLE])
        .apply(get);
    doc.path(TRANSFER, HttpMethod::Get, get);
    let id = doc.schema::<AccountId>();
    let a = doc.schema::<Account>();
    let get = by_id("get_account", "An account and its balance.", id)
        .response("200", json_response("The account.", a));
    let get = Problems::new()
        .business()
        .add(404, &[slug::UNKNOWN_ACCOUNT])
        .add(503, &[slug::STORAGE_UNAVAILABLE])
        .apply(get);
    doc.path(ACCOUNT, HttpMethod::Get, get);
    doc.build()
}

fn by_id(op_id: &str, summary: &str, id: RefOr<Schema>) -> utoipa::openapi::path::OperationBuilder {
    let id = ParameterBuilder::new()
        .name("id")
        .parameter_in(ParameterIn::Path)
        .required(Required::True)
        .schema(Some(id))
        .build();
    business_op(op_id, TAG, summary).parameter(id)
}

fn transfer(doc: &mut Doc) {
    let body = doc.schema::<CreateTransfer>();
    let t = doc.schema::<Transfer>();
    let key = ParameterBuilder::new()
        .name(IDEMPOTENCY_KEY)
        .parameter_in(ParameterIn::Header)
        .required(Required::False)
        .description(Some("When sent, equal to the body's `id` (400 otherwise)."))
        .schema(Some(doc.schema::<TransferId>()))
        .build();
    let op = business_op(
        "create_transfer",
        TAG,
        "Applies a transfer once: 201 when applied now, 200 when the same id and body were applied \
         before (nothing changes).",
    )
    .parameter(key)
    .request_body(Some(json_body(body)))
    .response("201", json_response("Applied now.", t.clone()))
    .response("200", json_response("Applied before; nothing changed.", t));
    let op = Problems::new()
        .business()
        .body()
        .add(409, &[slug::IDEMPOTENCY_CONFLICT, slug::ACCOUNT_CONFLICT])
        .add(422, &slug::WALLET_DECLINES)
        .add(503, &[slug::STORAGE_UNAVAILABLE])
        .apply(op);
    doc.path(TRANSFERS, HttpMethod::Post, op);
}
