//! Every service serves its OpenAPI document at `/openapi.json`, on both listeners, and the
//! document lists the routes the service answers.

use serde_json::Value;

use crate::helpers::*;
use finpay_services::ServiceKind;

async fn document(http: &reqwest::Client, base: &str) -> Value {
    let resp = http
        .get(format!("{base}/openapi.json"))
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), 200, "{base}");
    assert_eq!(resp.headers()["content-type"], "application/json");
    resp.json().await.expect("the document is JSON")
}

/// The document of `kind` from both listeners of `app`: the same, OpenAPI 3.1, with `routes`.
async fn check(http: &reqwest::Client, kind: ServiceKind, app: &Running, routes: &[(&str, &str)]) {
    let doc = document(http, &app.url).await;
    assert_eq!(
        document(http, &app.admin).await,
        doc,
        "{kind}: both listeners"
    );
    assert_eq!(doc["openapi"], "3.1.0");
    let served: Value = serde_json::from_str(&kind.openapi_json()).expect("parses");
    assert_eq!(doc, served, "{kind}");
    let common = [
        ("/health/live", "get"),
        ("/health/ready", "get"),
        ("/openapi.json", "get"),
        ("/metrics", "get"),
        ("/admin/faults", "put"),
    ];
    for (path, method) in routes.iter().chain(common.iter()) {
        assert!(
            doc["paths"][path][method].is_object(),
            "{kind}: {method} {path} is listed"
        );
    }
}

#[tokio::test]
async fn every_service_serves_its_document_listing_its_routes() {
    let c = Cluster::start(ClusterOpts::default()).await;
    let http = &c.http;
    check(
        http,
        ServiceKind::Payment,
        &c.payment,
        &[
            ("/v1/payments", "post"),
            ("/v1/payments/{id}", "get"),
            ("/pay", "get"),
            ("/admin/dependencies/{service}", "put"),
        ],
    )
    .await;
    check(
        http,
        ServiceKind::Fraud,
        &c.fraud,
        &[("/v1/checks", "post"), ("/check", "get")],
    )
    .await;
    check(
        http,
        ServiceKind::Wallet,
        &c.wallet,
        &[
            ("/v1/transfers", "post"),
            ("/v1/transfers/{id}", "get"),
            ("/v1/accounts/{id}", "get"),
        ],
    )
    .await;
    check(
        http,
        ServiceKind::Notification,
        &c.notification,
        &[("/v1/notifications", "post"), ("/v1/notifications", "get")],
    )
    .await;
}

#[test]
fn every_service_kind_has_the_document_of_its_name() {
    let named: Vec<&str> = finpay_api::openapi::DOCUMENTS
        .iter()
        .map(|(name, _)| *name)
        .collect();
    let kinds: Vec<&str> = ServiceKind::ALL.iter().map(|k| k.as_str()).collect();
    assert_eq!(named, kinds);
    for (name, build) in finpay_api::openapi::DOCUMENTS {
        let kind: ServiceKind = name.parse().expect("a service");
        assert_eq!(kind.openapi_json(), finpay_api::openapi::to_json(&build()));
    }
}
