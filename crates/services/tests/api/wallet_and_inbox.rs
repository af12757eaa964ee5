//! Wallet idempotency and refusals; notification dedup.

use serde_json::{json, Value};

use crate::helpers::*;

fn transfer(id: &str, debit: &str, credit: &str, amount: u64, currency: &str) -> Value {
    json!({
        "id": id,
        "debit_account_id": debit,
        "credit_account_id": credit,
        "amount_minor": amount,
        "currency": currency,
    })
}

#[tokio::test]
async fn a_transfer_id_applies_once_and_refuses_another_body() {
    let dir = tempfile::tempdir().expect("tempdir");
    let w = spawn_wallet(dir.path(), |_| {}).await;
    let http = client();
    let url = format!("{}/v1/transfers", w.url);
    let t = transfer("t-1", CUSTOMER, MERCHANT, 250, "USD");
    let first = http.post(&url).json(&t).send().await.expect("sent");
    assert_eq!(first.status(), 201);
    let first: Value = first.json().await.expect("json");
    let again = http.post(&url).json(&t).send().await.expect("sent");
    assert_eq!(again.status(), 200, "same id, same body: replay");
    assert_eq!(again.json::<Value>().await.expect("json"), first);
    let other = http
        .post(&url)
        .json(&transfer("t-1", CUSTOMER, MERCHANT, 999, "USD"))
        .send()
        .await
        .expect("sent");
    let p = assert_problem(other, 409).await;
    assert_eq!(p["type"], "urn:finpay:problem:idempotency-conflict");
    assert_eq!(p["field"], "id");
    assert_eq!(balance(&http, &w.url, CUSTOMER).await, OPENING - 250);
    assert_eq!(balance(&http, &w.url, MERCHANT).await, 250);
    let got: Value = http
        .get(format!("{url}/t-1"))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    assert_eq!(got["amount_minor"], 250);
}

#[tokio::test]
async fn business_refusals_are_422_with_a_clear_type_and_change_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let w = spawn_wallet(dir.path(), |_| {}).await;
    let http = client();
    let url = format!("{}/v1/transfers", w.url);
    let cases = [
        (
            transfer("r-1", "cust-poor", MERCHANT, 51, "USD"),
            "insufficient-funds",
            "amount_minor",
        ),
        (
            transfer("r-2", "cust-nobody", MERCHANT, 1, "USD"),
            "unknown-account",
            "debit_account_id",
        ),
        (
            transfer("r-3", CUSTOMER, "merchant-nobody", 1, "USD"),
            "unknown-account",
            "credit_account_id",
        ),
        (
            transfer("r-4", "cust-eur", MERCHANT, 1, "EUR"),
            "currency-mismatch",
            "currency",
        ),
        (
            transfer("r-5", CUSTOMER, MERCHANT, 1, "EUR"),
            "currency-mismatch",
            "currency",
        ),
        (
            transfer("r-6", CUSTOMER, CUSTOMER, 1, "USD"),
            "same-account",
            "credit_account_id",
        ),
    ];
    for (body, slug, field) in cases {
        let r = http.post(&url).json(&body).send().await.expect("sent");
        let p = assert_problem(r, 422).await;
        assert_eq!(p["type"], format!("urn:finpay:problem:{slug}"), "{body}");
        assert_eq!(p["field"], field, "{body}");
    }
    assert_eq!(balance(&http, &w.url, "cust-poor").await, 50);
    assert_eq!(balance(&http, &w.url, CUSTOMER).await, OPENING);
    assert_eq!(balance(&http, &w.url, MERCHANT).await, 0);
    let exact = http
        .post(&url)
        .json(&transfer("r-7", "cust-poor", MERCHANT, 50, "USD"))
        .send()
        .await
        .expect("sent");
    assert_eq!(exact.status(), 201, "a balance may reach zero");
    assert_eq!(balance(&http, &w.url, "cust-poor").await, 0);

    let r = http
        .get(format!("{}/v1/accounts/cust-nobody", w.url))
        .send()
        .await
        .expect("sent");
    let p = assert_problem(r, 404).await;
    assert_eq!(p["type"], "urn:finpay:problem:unknown-account");
    let r = http
        .get(format!("{}/v1/accounts/bad%20id", w.url))
        .send()
        .await
        .expect("sent");
    assert_problem(r, 400).await;
}

#[tokio::test]
async fn notifications_are_stored_once_by_id() {
    let dir = tempfile::tempdir().expect("tempdir");
    let n = spawn_notification(dir.path(), |_| {}).await;
    let http = client();
    let url = format!("{}/v1/notifications", n.url);
    let body = json!({
        "id": "ntf-1",
        "payment_id": "0190b7d2-7d3e-7cc0-8000-000000000001",
        "account_id": CUSTOMER,
        "message": "Payment of 1.00 USD succeeded.",
    });
    assert_eq!(
        http.post(&url)
            .json(&body)
            .send()
            .await
            .expect("sent")
            .status(),
        201
    );
    assert_eq!(
        http.post(&url)
            .json(&body)
            .send()
            .await
            .expect("sent")
            .status(),
        200
    );
    let mut other = body.clone();
    other["message"] = json!("something else");
    let p = assert_problem(
        http.post(&url).json(&other).send().await.expect("sent"),
        409,
    )
    .await;
    assert_eq!(p["field"], "id");
    let list: Value = http
        .get(format!("{url}?account_id={CUSTOMER}"))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    let items = list["notifications"].as_array().expect("array");
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["message"], "Payment of 1.00 USD succeeded.");
}
