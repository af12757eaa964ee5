//! The payment service end to end, with real fraud, wallet and notification apps in-process.

use std::time::Duration;

use finpay_core::{
    AccountId, Amount, Currency, Fingerprint, IdempotencyKey, PaymentId, PaymentStatus,
};
use finpay_ledger::payments::{Begin, LeaseOwner, NewPayment, PaymentStore, StepNote};
use finpay_ledger::sqlite::{SqliteOptions, SqlitePayments};
use serde_json::{json, Value};

use crate::helpers::*;

async fn created(r: reqwest::Response) -> Value {
    let status = r.status();
    let body = r.text().await.expect("body");
    assert_eq!(status, 201, "{body}");
    serde_json::from_str(&body).expect("json")
}

async fn transfer_exists(c: &Cluster, payment_id: &str) -> bool {
    let id: PaymentId = payment_id.parse().expect("uuid");
    let r = c
        .http
        .get(format!(
            "{}/v1/transfers/{}",
            c.wallet.url,
            id.debit_transfer_id()
        ))
        .send()
        .await
        .expect("sent");
    r.status() == 200
}

#[tokio::test]
async fn a_payment_succeeds_debits_once_and_notifies_once() {
    let c = Cluster::start(ClusterOpts::default()).await;
    let p = created(c.pay("happy-1", &payment_body(1_250)).await).await;
    assert_eq!(p["status"], "succeeded");
    assert_eq!(p["amount_minor"], 1_250);
    assert_eq!(p["needs_review"], false);
    let id = p["id"].as_str().expect("id").to_owned();
    assert_eq!(c.balance(CUSTOMER).await, OPENING - 1_250);
    assert_eq!(c.balance(MERCHANT).await, 1_250);
    assert!(transfer_exists(&c, &id).await);
    let got: Value = c
        .http
        .get(format!("{}/v1/payments/{id}", c.payment.url))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    assert_eq!(got["status"], "succeeded");
    let delivered = eventually(Duration::from_secs(10), || async {
        let n = c.notifications(CUSTOMER).await;
        (!n.is_empty()).then_some(n)
    })
    .await
    .expect("the outbox delivers the notification");
    assert_eq!(delivered.len(), 1);
    assert_eq!(delivered[0]["payment_id"], id.as_str());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        c.notifications(CUSTOMER).await.len(),
        1,
        "delivered exactly once"
    );

    let metrics = c
        .http
        .get(format!("{}/metrics", c.payment.admin))
        .send()
        .await
        .expect("sent");
    let text = metrics.text().await.expect("text");
    assert!(
        text.contains("finpay_payments_total"),
        "payments metric exported"
    );
}

#[tokio::test]
async fn the_same_key_replays_and_another_body_is_refused() {
    let c = Cluster::start(ClusterOpts::default()).await;
    let first = created(c.pay("replay-1", &payment_body(300)).await).await;
    let again = c.pay("replay-1", &payment_body(300)).await;
    assert_eq!(again.status(), 201);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let again: Value = again.json().await.expect("json");
    assert_eq!(again["id"], first["id"]);
    assert_eq!(again["status"], "succeeded");

    let other = c.pay("replay-1", &payment_body(301)).await;
    let p = assert_problem(other, 422).await;
    assert_eq!(p["type"], "urn:finpay:problem:idempotency-key-reused");
    assert_eq!(p["field"], "Idempotency-Key");
    assert_eq!(c.balance(CUSTOMER).await, OPENING - 300, "one debit only");
}

#[tokio::test]
async fn payments_succeed_while_fraud_fails_30_percent_of_calls() {
    let c = Cluster::start(ClusterOpts {
        fraud: Box::new(|s| {
            s.common.faults.error_rate = 0.3;
            s.common.faults.seed = 11;
        }),
        ..ClusterOpts::default()
    })
    .await;
    let n = 20u64;
    for i in 0..n {
        let p = created(c.pay(&format!("flaky-{i}"), &payment_body(100)).await).await;
        assert_eq!(p["status"], "succeeded", "payment {i}");
    }
    assert_eq!(c.balance(CUSTOMER).await, OPENING - 100 * n);
    assert_eq!(c.balance(MERCHANT).await, 100 * n);
}

#[tokio::test]
async fn a_fraud_deny_or_insufficient_funds_declines_without_a_debit() {
    let c = Cluster::start(ClusterOpts::default()).await;
    let p = created(c.pay("deny-1", &payment_body(2_000_000)).await).await;
    assert_eq!(p["status"], "declined");
    // A stable code, never the rule or its threshold (1000000 here).
    assert_eq!(p["reason"], "fraud_denied", "{p}");
    assert!(!p.to_string().contains("1000000"), "{p}");
    assert!(!transfer_exists(&c, p["id"].as_str().expect("id")).await);

    let mut poor = payment_body(100);
    poor["account_id"] = json!("cust-poor");
    let p = created(c.pay("poor-1", &poor).await).await;
    assert_eq!(p["status"], "declined");
    assert_eq!(p["reason"], "insufficient_funds", "{p}");
    assert_eq!(c.balance("cust-poor").await, 50);
    assert_eq!(c.balance(CUSTOMER).await, OPENING);
    assert_eq!(c.balance(MERCHANT).await, 0);
}

#[tokio::test]
async fn fraud_fully_down_fails_closed_with_503_and_no_debit() {
    let c = Cluster::start(ClusterOpts {
        fraud: Box::new(|s| s.common.faults.down = true),
        ..ClusterOpts::default()
    })
    .await;
    let r = c.pay("down-1", &payment_body(100)).await;
    assert!(r.headers().contains_key("retry-after"));
    let p = assert_problem(r, 503).await;
    assert_eq!(p["type"], "urn:finpay:problem:fraud-unavailable");
    assert_eq!(p["status"], 503);
    assert_eq!(p["payment_status"], "failed");
    let id = p["payment_id"].as_str().expect("payment id").to_owned();
    let got: Value = c
        .http
        .get(format!("{}/v1/payments/{id}", c.payment.url))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    assert_eq!(got["status"], "failed");
    assert!(!transfer_exists(&c, &id).await);
    assert_eq!(c.balance(CUSTOMER).await, OPENING);

    let again = c.pay("down-1", &payment_body(100)).await;
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_problem(again, 503).await;
}

#[tokio::test]
async fn the_same_key_while_in_flight_is_409() {
    let c = Cluster::start(ClusterOpts {
        fraud: Box::new(|s| {
            s.common.faults.hang_rate = 1.0;
            s.common.faults.hang_ms = 1_500;
        }),
        payment: Box::new(|s| s.fraud.client.max_attempts = 1),
        ..ClusterOpts::default()
    })
    .await;
    let first = {
        let http = c.http.clone();
        let url = format!("{}/v1/payments", c.payment.url);
        tokio::spawn(async move {
            http.post(url)
                .header("Idempotency-Key", "slow-1")
                .json(&payment_body(100))
                .send()
                .await
                .expect("sent")
        })
    };
    tokio::time::sleep(Duration::from_millis(400)).await;
    let second = c.pay("slow-1", &payment_body(100)).await;
    let p = assert_problem(second, 409).await;
    assert_eq!(p["type"], "urn:finpay:problem:request-in-progress");
    let first = first.await.expect("joined");
    let p = created(first).await;
    assert_eq!(p["status"], "succeeded");
    assert_eq!(c.balance(CUSTOMER).await, OPENING - 100);
}

#[tokio::test]
async fn a_lost_wallet_answer_still_debits_exactly_once() {
    let c = Cluster::start(ClusterOpts {
        wallet: Box::new(|s| {
            s.common.faults.commit_then_fail_rate = 0.5;
            s.common.faults.seed = 3;
        }),
        ..ClusterOpts::default()
    })
    .await;
    let n = 10u64;
    for i in 0..n {
        let p = created(c.pay(&format!("ctf-{i}"), &payment_body(100 + i)).await).await;
        assert_eq!(p["status"], "succeeded", "payment {i}");
    }
    let total: u64 = (0..n).map(|i| 100 + i).sum();
    assert_eq!(
        c.balance(CUSTOMER).await,
        OPENING - total,
        "exactly one debit each"
    );
    assert_eq!(c.balance(MERCHANT).await, total);
}

#[tokio::test]
async fn an_unreachable_wallet_leaves_the_payment_for_the_resumer() {
    let c = Cluster::start(ClusterOpts {
        wallet: Box::new(|s| s.common.faults.down = true),
        payment: Box::new(|s| s.wallet.client.max_attempts = 2),
        ..ClusterOpts::default()
    })
    .await;
    let r = c.pay("wallet-down-1", &payment_body(700)).await;
    assert!(r.headers().contains_key("retry-after"));
    let p = assert_problem(r, 503).await;
    assert_eq!(p["type"], "urn:finpay:problem:dependency-unavailable");
    assert_eq!(p["payment_status"], "fraud_checked");
    let id = p["payment_id"].as_str().expect("payment id").to_owned();
    c.put_faults(&c.wallet.admin, json!({})).await;
    let done = eventually(Duration::from_secs(15), || async {
        let v: Value = c
            .http
            .get(format!("{}/v1/payments/{id}", c.payment.url))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        (v["status"] == "succeeded").then_some(v)
    })
    .await;
    assert!(done.is_some(), "the resumer finishes the payment");
    assert_eq!(c.balance(CUSTOMER).await, OPENING - 700);
    let replay = c.pay("wallet-down-1", &payment_body(700)).await;
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    assert_eq!(created(replay).await["id"], id.as_str());
}

async fn insert_payment(
    dir: &std::path::Path,
    key: &str,
    amount: u64,
    to: Option<PaymentStatus>,
) -> PaymentId {
    let store = SqlitePayments::open(
        &dir.join(finpay_ledger::files::PAYMENTS_DB),
        &SqliteOptions::default(),
    )
    .await
    .expect("payments open");
    let new = NewPayment {
        id: PaymentId::new_v7(),
        idempotency_key: IdempotencyKey::try_from(key).expect("key"),
        fingerprint: Fingerprint::of(&["crashed", key]),
        account_id: AccountId::try_from(CUSTOMER).expect("id"),
        merchant_account_id: AccountId::try_from(MERCHANT).expect("id"),
        amount: Amount::try_new(amount).expect("amount"),
        currency: Currency::Usd,
        description: None,
    };
    // The process that made it "crashed": its lease runs out at once.
    let owner = LeaseOwner::try_from("crashed-replica").expect("owner");
    let (p, lease) = match store
        .begin(new, &owner, Duration::from_millis(1))
        .await
        .expect("begin")
    {
        Begin::Created(p, lease) => (p, lease),
        other => panic!("fresh key expected, found {other:?}"),
    };
    if let Some(to) = to {
        store
            .advance(
                p.id,
                PaymentStatus::Received,
                to,
                StepNote::default(),
                &lease,
            )
            .await
            .expect("advance");
    }
    p.id
}

#[tokio::test]
async fn the_resumer_finishes_payments_a_crash_left_behind_with_one_debit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fraud = spawn_fraud(dir.path(), |_| {}).await;
    let wallet = spawn_wallet(dir.path(), |_| {}).await;
    let notification = spawn_notification(dir.path(), |_| {}).await;
    let received = insert_payment(dir.path(), "crash-received", 111, None).await;
    let checked = insert_payment(
        dir.path(),
        "crash-checked",
        222,
        Some(PaymentStatus::FraudChecked),
    )
    .await;
    // A crash after the debit but before `debited` was recorded: the transfer already exists.
    let debited_before = insert_payment(
        dir.path(),
        "crash-after-debit",
        333,
        Some(PaymentStatus::FraudChecked),
    )
    .await;
    let http = client();
    let r = http
        .post(format!("{}/v1/transfers", wallet.url))
        .json(&json!({
            "id": debited_before.debit_transfer_id().as_str(),
            "debit_account_id": CUSTOMER,
            "credit_account_id": MERCHANT,
            "amount_minor": 333,
            "currency": "USD",
        }))
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status(), 201);

    let payment = spawn_payment(payment_settings(
        dir.path(),
        &fraud.url,
        &wallet.url,
        &notification.url,
    ))
    .await;
    for id in [received, checked, debited_before] {
        let done = eventually(Duration::from_secs(15), || async {
            let v: Value = http
                .get(format!("{}/v1/payments/{id}", payment.url))
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            (v["status"] == "succeeded").then_some(v)
        })
        .await;
        assert!(done.is_some(), "payment {id} converges");
    }
    assert_eq!(
        balance(&http, &wallet.url, CUSTOMER).await,
        OPENING - 111 - 222 - 333,
        "one debit each"
    );
    assert_eq!(balance(&http, &wallet.url, MERCHANT).await, 111 + 222 + 333);
}

#[tokio::test]
async fn payments_succeed_while_notification_is_down_and_the_outbox_delivers_later() {
    let c = Cluster::start(ClusterOpts {
        notification: Box::new(|s| s.common.faults.down = true),
        ..ClusterOpts::default()
    })
    .await;
    let p = created(c.pay("ntf-down-1", &payment_body(100)).await).await;
    assert_eq!(p["status"], "succeeded");
    tokio::time::sleep(Duration::from_millis(300)).await;
    c.put_faults(&c.notification.admin, json!({})).await;
    let delivered = eventually(Duration::from_secs(15), || async {
        let n = c.notifications(CUSTOMER).await;
        (!n.is_empty()).then_some(n)
    })
    .await
    .expect("delivered after notification comes back");
    assert_eq!(delivered.len(), 1);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        c.notifications(CUSTOMER).await.len(),
        1,
        "exactly one notification"
    );
}

#[tokio::test]
async fn get_pay_makes_a_demo_payment_and_answers_one_line() {
    let c = Cluster::start(ClusterOpts::default()).await;
    for _ in 0..3 {
        let r = c
            .http
            .get(format!("{}/pay", c.payment.url))
            .send()
            .await
            .expect("sent");
        assert_eq!(r.status(), 200);
        let text = r.text().await.expect("text");
        assert!(text.starts_with("payment "), "{text}");
        assert!(
            text.trim_end()
                .ends_with("succeeded: 1.00 USD from cust-0001 to merchant-0"),
            "{text}"
        );
        assert_eq!(text.lines().count(), 1);
    }
    assert_eq!(c.balance(CUSTOMER).await, OPENING - 300);
}

#[tokio::test]
async fn without_the_demo_setting_get_pay_does_not_exist_and_moves_nothing() {
    let c = Cluster::start(ClusterOpts {
        payment: Box::new(|s| s.demo.enabled = false),
        ..ClusterOpts::default()
    })
    .await;
    let r = c
        .http
        .get(format!("{}/pay", c.payment.url))
        .send()
        .await
        .expect("sent");
    assert_problem(r, 404).await;
    assert_eq!(c.balance(CUSTOMER).await, OPENING);
    assert!(
        !finpay_services::payment::Settings::default().demo.enabled,
        "off by default"
    );
}

#[tokio::test]
async fn the_fraud_fallback_lets_small_payments_of_known_accounts_pass_for_review() {
    let c = Cluster::start(ClusterOpts {
        payment: Box::new(|s| {
            s.fraud.fallback.enabled = true;
            s.fraud.fallback.max_amount_minor = 1_000;
            s.fraud.client.max_attempts = 2;
        }),
        ..ClusterOpts::default()
    })
    .await;
    let p = created(c.pay("fb-1", &payment_body(100)).await).await;
    assert_eq!(p["needs_review"], false);
    c.put_faults(&c.fraud.admin, json!({"down": true})).await;
    let p = created(c.pay("fb-2", &payment_body(100)).await).await;
    assert_eq!(p["status"], "succeeded");
    assert_eq!(p["needs_review"], true, "recorded on the payment");
    let big = c.pay("fb-3", &payment_body(5_000)).await;
    assert_problem(big, 503).await;
    let mut stranger = payment_body(100);
    stranger["account_id"] = json!("cust-0002");
    assert_problem(c.pay("fb-4", &stranger).await, 503).await;
    assert_eq!(c.balance(CUSTOMER).await, OPENING - 200);
    assert_eq!(c.balance("cust-0002").await, OPENING);
}

#[tokio::test]
async fn concurrent_requests_with_one_key_debit_once() {
    let c = Cluster::start(ClusterOpts::default()).await;
    let url = format!("{}/v1/payments", c.payment.url);
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let http = c.http.clone();
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let r = http
                .post(url)
                .header("Idempotency-Key", "same-key")
                .json(&payment_body(500))
                .send()
                .await
                .expect("sent");
            let replayed = r.headers().contains_key("idempotent-replayed");
            (r.status().as_u16(), replayed)
        }));
    }
    let mut fresh = 0;
    for t in tasks {
        let (status, replayed) = t.await.expect("joined");
        assert!(status == 201 || status == 409, "got {status}");
        if status == 201 && !replayed {
            fresh += 1;
        }
    }
    assert_eq!(fresh, 1, "exactly one request created the payment");
    assert_eq!(c.balance(CUSTOMER).await, OPENING - 500);

    // Many keys at once: each debits once.
    let mut tasks = Vec::new();
    for i in 0..24u64 {
        let http = c.http.clone();
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            http.post(url)
                .header("Idempotency-Key", format!("many-{i}"))
                .json(&payment_body(10))
                .send()
                .await
                .expect("sent")
                .status()
                .as_u16()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.expect("joined"), 201);
    }
    assert_eq!(c.balance(CUSTOMER).await, OPENING - 500 - 240);
}
