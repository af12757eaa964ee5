//! The notification service's document: an inbox that stores each notification once.

use utoipa::openapi::path::{HttpMethod, ParameterBuilder, ParameterIn};
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::{OpenApi, Required};

use super::common::{business_op, json_body, json_response, Doc, Problems};
use crate::notification::{
    CreateNotification, Notification, NotificationList, LIST_LIMIT_DEFAULT, LIST_LIMIT_MAX,
    NOTIFICATIONS,
};
use crate::problem::slug;
use finpay_core::AccountId;

const TAG: &str = "notifications";

pub fn document() -> OpenApi {
    let mut doc = Doc::new(
        "FinPay notification API",
        "An inbox keyed by the notification id: a repeat of the same notification stores nothing \
         new.",
    );
    doc.tag(TAG, "The inbox.");
    let body = doc.schema::<CreateNotification>();
    let n = doc.schema::<Notification>();
    let deliver = business_op(
        "deliver_notification",
        TAG,
        "Stores a notification once: 201 when stored now, 200 for a repeat of the same one.",
    )
    .request_body(Some(json_body(body)))
    .response("201", json_response("Stored now.", n.clone()))
    .response("200", json_response("Stored before; nothing new.", n));
    let deliver = Problems::new()
        .business()
        .body()
        .add(409, &[slug::IDEMPOTENCY_CONFLICT])
        .add(503, &[slug::STORAGE_UNAVAILABLE])
        .apply(deliver);
    let account = ParameterBuilder::new()
        .name("account_id")
        .parameter_in(ParameterIn::Query)
        .required(Required::True)
        .schema(Some(doc.schema::<AccountId>()))
        .build();
    let limit = ParameterBuilder::new()
        .name("limit")
        .parameter_in(ParameterIn::Query)
        .required(Required::False)
        .description(Some("Most notifications to answer."))
        .schema(Some(
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .minimum(Some(1))
                .maximum(Some(LIST_LIMIT_MAX as usize))
                .default(Some(LIST_LIMIT_DEFAULT.into())),
        ))
        .build();
    let list = doc.schema::<NotificationList>();
    let list = business_op("list_notifications", TAG, "An account's notifications.")
        .parameter(account)
        .parameter(limit)
        .response("200", json_response("The notifications.", list));
    let list = Problems::new()
        .business()
        .add(503, &[slug::STORAGE_UNAVAILABLE])
        .apply(list);
    doc.path(NOTIFICATIONS, HttpMethod::Post, deliver);
    doc.path(NOTIFICATIONS, HttpMethod::Get, list);
    doc.build()
}
