//! Two payment replicas on one payments store, as production runs them: they share the work
//! through the store's leases, never through memory. On one SQLite file and on one PostgreSQL
//! schema (skipped with a note when no PostgreSQL answers).

use std::path::Path;
use std::time::Duration;

use finpay_core::{
    AccountId, Amount, Currency, Fingerprint, IdempotencyKey, PaymentId, PaymentStatus,
};
use finpay_ledger::payments::{Begin, LeaseOwner, NewPayment, PaymentStore, StepNote};
use finpay_ledger::postgres::{PgOptions, PgPayments};
use finpay_ledger::sqlite::{SqliteOptions, SqlitePayments};
use finpay_services::payment;
use serde_json::Value;

use crate::helpers::*;
use crate::postgres::{on_postgres, with_schema};

/// Fraud, wallet and notification on SQLite in `dir`, and two payment apps (`payment-a`,
/// `payment-b`) on the store `storage` points them at.
struct TwoReplicas {
    _fraud: Running,
    wallet: Running,
    _notification: Running,
    payments: [Running; 2],
    http: reqwest::Client,
}

impl TwoReplicas {
    async fn start(dir: &Path, storage: impl Fn(&mut payment::Settings)) -> Self {
        let fraud = spawn_fraud(dir, |_| {}).await;
        let wallet = spawn_wallet(dir, |_| {}).await;
        let notification = spawn_notification(dir, |_| {}).await;
        let mut apps = Vec::new();
        for name in ["payment-a", "payment-b"] {
            let mut s = payment_settings(dir, &fraud.url, &wallet.url, &notification.url);
            s.payment.replica = Some(name.to_owned());
            storage(&mut s);
            apps.push(spawn_payment(s).await);
        }
        let [a, b]: [Running; 2] = apps.try_into().unwrap_or_else(|_| panic!("two apps"));
        Self {
            _fraud: fraud,
            wallet,
            _notification: notification,
            payments: [a, b],
            http: client(),
        }
    }

    async fn get_payment(&self, id: PaymentId) -> Option<Value> {
        self.http
            .get(format!("{}/v1/payments/{id}", self.payments[1].url))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()
    }
}

/// Fifty requests with one key, alternating between the two replicas, all at once.
async fn fifty_requests_with_one_key(c: &TwoReplicas) {
    let mut tasks = Vec::new();
    for i in 0..50 {
        let http = c.http.clone();
        let url = format!("{}/v1/payments", c.payments[i % 2].url);
        tasks.push(tokio::spawn(async move {
            let r = http
                .post(url)
                .header("Idempotency-Key", "one-key-two-replicas")
                .json(&payment_body(500))
                .send()
                .await
                .expect("sent");
            let replayed = r.headers().contains_key("idempotent-replayed");
            let status = r.status().as_u16();
            let body: Value = r.json().await.unwrap_or(Value::Null);
            (status, replayed, body)
        }));
    }
    let mut fresh = Vec::new();
    let mut ids = std::collections::HashSet::new();
    for t in tasks {
        let (status, replayed, body) = t.await.expect("joined");
        assert!(
            matches!(status, 200 | 201 | 409),
            "every answer is 201, 200 or 409, got {status}: {body}"
        );
        if status == 201 {
            ids.insert(body["id"].as_str().expect("id").to_owned());
            if !replayed {
                fresh.push(body);
            }
        }
    }
    assert_eq!(fresh.len(), 1, "exactly one request created the payment");
    assert_eq!(ids.len(), 1, "every 201 names the one payment: {ids:?}");
    assert_eq!(fresh[0]["status"], "succeeded");
    assert_eq!(
        balance(&c.http, &c.wallet.url, CUSTOMER).await,
        OPENING - 500,
        "one debit"
    );
    assert_eq!(balance(&c.http, &c.wallet.url, MERCHANT).await, 500);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_requests_with_one_key_over_two_replicas_on_one_sqlite_file_make_one_payment() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = TwoReplicas::start(dir.path(), |_| {}).await;
    fifty_requests_with_one_key(&c).await;
    let url = format!(
        "sqlite://{}",
        dir.path().join(finpay_ledger::files::PAYMENTS_DB).display()
    );
    let mut conn = <sqlx::SqliteConnection as sqlx::Connection>::connect(&url)
        .await
        .expect("opens");
    let (payments, outbox): (i64, i64) =
        sqlx::query_as("SELECT (SELECT count(*) FROM payments), (SELECT count(*) FROM outbox)")
            .fetch_one(&mut conn)
            .await
            .expect("counts");
    assert_eq!((payments, outbox), (1, 1), "one payment, one notification");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_requests_with_one_key_over_two_replicas_on_one_postgres_schema_make_one_payment() {
    with_schema(
        "fifty_requests_with_one_key_over_two_replicas_on_one_postgres_schema",
        |pool, opts| async move {
            let dir = tempfile::tempdir().expect("tempdir");
            let c = TwoReplicas::start(dir.path(), |s| on_postgres(&mut s.common, &opts)).await;
            fifty_requests_with_one_key(&c).await;
            let schema = opts.schema.as_deref().expect("schema");
            let (payments, outbox): (i64, i64) = sqlx::query_as(&format!(
                "SELECT (SELECT count(*) FROM {schema}.payments), \
                        (SELECT count(*) FROM {schema}.outbox)"
            ))
            .fetch_one(&pool)
            .await
            .expect("counts");
            assert_eq!((payments, outbox), (1, 1), "one payment, one notification");
        },
    )
    .await;
}

/// A payment in `status`, whose driver died: its lease (owner `dead-replica`) already ran out.
fn orphan(key: &str) -> NewPayment {
    NewPayment {
        id: PaymentId::new_v7(),
        idempotency_key: IdempotencyKey::try_from(key).expect("key"),
        fingerprint: Fingerprint::of(&["orphan", key]),
        account_id: AccountId::try_from(CUSTOMER).expect("id"),
        merchant_account_id: AccountId::try_from(MERCHANT).expect("id"),
        amount: Amount::try_new(321).expect("amount"),
        currency: Currency::Usd,
        description: None,
    }
}

async fn leave_orphans(store: &dyn PaymentStore) -> Vec<PaymentId> {
    let dead = LeaseOwner::try_from("dead-replica:1:0").expect("owner");
    let mut ids = Vec::new();
    for (key, to) in [
        ("orphan-received", None),
        ("orphan-checked", Some(PaymentStatus::FraudChecked)),
    ] {
        let Begin::Created(p, lease) = store
            .begin(orphan(key), &dead, Duration::from_millis(1))
            .await
            .expect("begins")
        else {
            panic!("fresh key")
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
                .expect("advances");
        }
        ids.push(p.id);
    }
    ids
}

async fn both_finished_once(c: &TwoReplicas, ids: &[PaymentId]) {
    for &id in ids {
        let done = eventually(Duration::from_secs(20), || async {
            let v = c.get_payment(id).await?;
            (v["status"] == "succeeded").then_some(v)
        })
        .await;
        assert!(done.is_some(), "payment {id} is finished by a live replica");
    }
    assert_eq!(
        balance(&c.http, &c.wallet.url, CUSTOMER).await,
        OPENING - 321 * ids.len() as u64,
        "one debit each"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_whose_driver_died_is_finished_by_a_live_replica_on_sqlite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqlitePayments::open(
        &dir.path().join(finpay_ledger::files::PAYMENTS_DB),
        &SqliteOptions::default(),
    )
    .await
    .expect("opens");
    let ids = leave_orphans(&store).await;
    let c = TwoReplicas::start(dir.path(), |_| {}).await;
    both_finished_once(&c, &ids).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_whose_driver_died_is_finished_by_a_live_replica_on_postgres() {
    with_schema(
        "a_payment_whose_driver_died_is_finished_by_a_live_replica_on_postgres",
        |_pool, opts: PgOptions| async move {
            let store = PgPayments::open(&opts).await.expect("opens");
            let ids = leave_orphans(&store).await;
            let dir = tempfile::tempdir().expect("tempdir");
            let c = TwoReplicas::start(dir.path(), |s| on_postgres(&mut s.common, &opts)).await;
            both_finished_once(&c, &ids).await;
        },
    )
    .await;
}
