//! Every bad-input example of the issue answers a 4xx problem+json naming the field, and changes
//! nothing.

use serde_json::{json, Value};

use crate::helpers::*;

fn with(field: &str, value: Value) -> Value {
    let mut b = payment_body(100);
    b[field] = value;
    b
}

fn bad_payment_bodies() -> Vec<(&'static str, Value, &'static str)> {
    let mut unknown = payment_body(100);
    unknown["colour"] = json!("red");
    let mut missing = payment_body(100);
    missing
        .as_object_mut()
        .expect("object")
        .remove("amount_minor");
    vec![
        ("zero amount", with("amount_minor", json!(0)), "amount_minor"),
        ("negative amount", with("amount_minor", json!(-100)), "amount_minor"),
        ("overflowing amount", with("amount_minor", json!(1_000_000_000_000_000_001u64)), "amount_minor"),
        ("u64 overflowing amount", serde_json::from_str(
            r#"{"account_id":"cust-0001","merchant_account_id":"merchant-0","amount_minor":100000000000000000000000,"currency":"USD"}"#,
        ).expect("json"), "amount_minor"),
        ("float amount", with("amount_minor", json!(1.5)), "amount_minor"),
        ("string amount", with("amount_minor", json!("100")), "amount_minor"),
        ("unknown currency", with("currency", json!("XXX")), "currency"),
        ("lowercase currency", with("currency", json!("usd")), "currency"),
        ("unknown field", unknown, "colour"),
        ("missing amount", missing, "amount_minor"),
        ("bad account id", with("account_id", json!("../etc/passwd")), "account_id"),
        ("same account", with("merchant_account_id", json!(CUSTOMER)), "merchant_account_id"),
        ("long description", with("description", json!("x".repeat(201))), "description"),
    ]
}

#[tokio::test]
async fn bad_payment_requests_are_4xx_problems_naming_the_field_and_change_nothing() {
    let c = Cluster::start(ClusterOpts::default()).await;
    let url = format!("{}/v1/payments", c.payment.url);
    for (i, (name, body, field)) in bad_payment_bodies().into_iter().enumerate() {
        let key = format!("bad-{i}");
        let r = c.pay(&key, &body).await;
        let status = r.status().as_u16();
        assert!((400..500).contains(&status), "{name}: got {status}");
        let p = assert_problem(r, status).await;
        assert_eq!(p["field"], field, "{name}: {p}");
        // Nothing was stored under the key: a valid request with it is fresh, not a replay.
        if i == 0 {
            let ok = c.pay(&key, &payment_body(100)).await;
            assert_eq!(ok.status(), 201, "{name}");
            assert!(
                ok.headers().get("idempotent-replayed").is_none(),
                "{name}: nothing was stored"
            );
        }
    }
    let before = c.balance(CUSTOMER).await;

    // Malformed JSON.
    for raw in ["{", "not json", r#"{"account_id": "cust-0001",}"#, ""] {
        let r = c
            .http
            .post(&url)
            .header("Idempotency-Key", "malformed")
            .header("content-type", "application/json")
            .body(raw)
            .send()
            .await
            .expect("sent");
        let p = assert_problem(r, 400).await;
        assert_eq!(p["field"], "body", "{raw:?}");
    }

    // A body over the limit.
    let big = with("description", json!("x".repeat(40_000)));
    let r = c.pay("too-big", &big).await;
    let p = assert_problem(r, 413).await;
    assert_eq!(p["field"], "body");

    // Missing, empty, over-long and non-visible idempotency keys.
    let r = c
        .http
        .post(&url)
        .json(&payment_body(100))
        .send()
        .await
        .expect("sent");
    let p = assert_problem(r, 400).await;
    assert_eq!(p["field"], "Idempotency-Key");
    for key in ["".to_owned(), "k".repeat(256), "has space".to_owned()] {
        let r = c
            .http
            .post(&url)
            .header("Idempotency-Key", key.as_str())
            .json(&payment_body(100))
            .send()
            .await
            .expect("sent");
        let p = assert_problem(r, 400).await;
        assert_eq!(p["field"], "Idempotency-Key", "key of {} chars", key.len());
    }
    let ok = c.pay(&"k".repeat(255), &payment_body(100)).await;
    assert_eq!(ok.status(), 201, "255 visible characters are fine");

    assert_eq!(
        c.balance(CUSTOMER).await,
        before - 100,
        "only the one valid payment moved money"
    );

    // Bad ids in paths.
    let r = c
        .http
        .get(format!("{}/v1/payments/not-a-uuid", c.payment.url))
        .send()
        .await
        .expect("sent");
    let p = assert_problem(r, 400).await;
    assert_eq!(p["field"], "id");
    let r = c
        .http
        .get(format!(
            "{}/v1/payments/0190b7d2-7d3e-7cc0-8000-000000000001",
            c.payment.url
        ))
        .send()
        .await
        .expect("sent");
    assert_problem(r, 404).await;
}

#[tokio::test]
async fn bad_transfers_are_4xx_problems_naming_the_field_and_change_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let w = spawn_wallet(dir.path(), |_| {}).await;
    let http = client();
    let base = json!({
        "id": "t-1",
        "debit_account_id": CUSTOMER,
        "credit_account_id": MERCHANT,
        "amount_minor": 100,
        "currency": "USD",
    });
    let w_ = |f: &str, v: Value| {
        let mut b = base.clone();
        b[f] = v;
        b
    };
    let mut unknown = base.clone();
    unknown["memo"] = json!("hi");
    let cases = vec![
        (w_("amount_minor", json!(0)), "amount_minor"),
        (w_("amount_minor", json!(-1)), "amount_minor"),
        (w_("amount_minor", json!(2.5)), "amount_minor"),
        (w_("amount_minor", json!("100")), "amount_minor"),
        (w_("amount_minor", json!(u64::MAX)), "amount_minor"),
        (w_("currency", json!("DOGE")), "currency"),
        (w_("id", json!("")), "id"),
        (w_("id", json!("x".repeat(65))), "id"),
        (unknown, "memo"),
    ];
    for (body, field) in cases {
        let r = http
            .post(format!("{}/v1/transfers", w.url))
            .json(&body)
            .send()
            .await
            .expect("sent");
        let status = r.status().as_u16();
        assert!((400..500).contains(&status), "{body}: {status}");
        let p = assert_problem(r, status).await;
        assert_eq!(p["field"], field, "{body}");
    }
    let r = http
        .post(format!("{}/v1/transfers", w.url))
        .header("content-type", "application/json")
        .body("{\"id\": ")
        .send()
        .await
        .expect("sent");
    assert_problem(r, 400).await;
    let r = http
        .post(format!("{}/v1/transfers", w.url))
        .header("content-type", "application/json")
        .body(vec![b' '; 20_000])
        .send()
        .await
        .expect("sent");
    assert_problem(r, 413).await;
    assert_eq!(balance(&http, &w.url, CUSTOMER).await, OPENING);
    assert_eq!(balance(&http, &w.url, MERCHANT).await, 0);
    let r = http
        .get(format!("{}/v1/transfers/t-1", w.url))
        .send()
        .await
        .expect("sent");
    assert_problem(r, 404).await;
}

#[tokio::test]
async fn bad_notifications_and_checks_are_4xx_problems_naming_the_field() {
    let dir = tempfile::tempdir().expect("tempdir");
    let n = spawn_notification(dir.path(), |_| {}).await;
    let f = spawn_fraud(dir.path(), |_| {}).await;
    let http = client();
    let good = json!({
        "id": "ntf-1",
        "payment_id": "0190b7d2-7d3e-7cc0-8000-000000000001",
        "account_id": CUSTOMER,
        "message": "hello",
    });
    for (field, value) in [
        ("payment_id", json!("nope")),
        ("message", json!("")),
        ("message", json!(12)),
        ("extra", json!(1)),
    ] {
        let mut b = good.clone();
        b[field] = value;
        let r = http
            .post(format!("{}/v1/notifications", n.url))
            .json(&b)
            .send()
            .await
            .expect("sent");
        let p = assert_problem(r, 422).await;
        assert_eq!(p["field"], field);
    }
    let r = http
        .get(format!("{}/v1/notifications", n.url))
        .send()
        .await
        .expect("sent");
    let p = assert_problem(r, 400).await;
    assert_eq!(p["field"], "account_id");
    assert!(
        http.get(format!("{}/v1/notifications?account_id={CUSTOMER}", n.url))
            .send()
            .await
            .expect("sent")
            .json::<Value>()
            .await
            .expect("json")["notifications"]
            .as_array()
            .is_some_and(Vec::is_empty),
        "nothing stored"
    );
    let r = http
        .post(format!("{}/v1/checks", f.url))
        .json(&json!({
            "payment_id": "0190b7d2-7d3e-7cc0-8000-000000000001",
            "account_id": CUSTOMER,
            "amount_minor": 1.25,
            "currency": "USD",
        }))
        .send()
        .await
        .expect("sent");
    let p = assert_problem(r, 422).await;
    assert_eq!(p["field"], "amount_minor");
}
