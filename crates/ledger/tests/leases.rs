//! Leases and claims, the same rules on both backends: two stores on one database stand for two
//! payment replicas. Each scenario runs on one SQLite file (two `SqlitePayments` on it) and on one
//! PostgreSQL schema (two `PgPayments` on it); the PostgreSQL half prints a note and passes when no
//! server answers (`FINPAY_TEST_PG_URL`, default `postgres://postgres@127.0.0.1:5432/test`).

mod common;

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use finpay_core::{Currency, Fingerprint, IdempotencyKey, PaymentId, PaymentStatus};
use finpay_ledger::payments::{
    Begin, Lease, LeaseOwner, NewPayment, OutboxMessage, Payment, PaymentStore, PaymentStoreError,
    StepNote,
};
use finpay_ledger::postgres::{PgOptions, PgPayments};
use finpay_ledger::sqlite::SqlitePayments;

type Store = Arc<dyn PaymentStore>;

/// A lease that runs out while a test sleeps a little past it.
const SHORT: Duration = Duration::from_millis(50);

fn replica(name: &str) -> LeaseOwner {
    LeaseOwner::try_from(name).expect("valid owner")
}

fn new_payment(key: &str) -> NewPayment {
    NewPayment {
        id: PaymentId::new_v7(),
        idempotency_key: IdempotencyKey::try_from(key).expect("key"),
        fingerprint: Fingerprint::of(&[key]),
        account_id: acct("cust-1"),
        merchant_account_id: acct("merchant-0"),
        amount: amount(100),
        currency: Currency::Usd,
        description: None,
    }
}

fn outbox_for(p: &Payment) -> OutboxMessage {
    OutboxMessage {
        id: p.id.notification_id(),
        payment_id: p.id,
        account_id: p.account_id.clone(),
        message: "paid".to_owned(),
        attempts: 0,
        next_attempt_at_ms: 0,
        delivered_at_ms: None,
        last_error: None,
    }
}

async fn create(s: &Store, key: &str, owner: &LeaseOwner, ttl: Duration) -> (Payment, Lease) {
    match s.begin(new_payment(key), owner, ttl).await.expect("begins") {
        Begin::Created(p, lease) => (p, lease),
        other => panic!("a fresh key creates, got {other:?}"),
    }
}

/// Sleeps past `ttl` by the wall clock, which the database's clock follows on this machine.
async fn outlive(ttl: Duration) {
    tokio::time::sleep(ttl + Duration::from_millis(30)).await;
}

/// Runs `scenario` with two stores on one SQLite file.
async fn on_sqlite<F, Fut>(scenario: F)
where
    F: FnOnce(Store, Store) -> Fut,
    Fut: Future<Output = ()>,
{
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("payments.db");
    let a = SqlitePayments::open(&path, &fast()).await.expect("opens");
    let b = SqlitePayments::open(&path, &fast()).await.expect("opens");
    scenario(Arc::new(a), Arc::new(b)).await;
}

/// Runs `scenario` with two stores on one fresh PostgreSQL schema, dropped afterwards.
async fn on_postgres<F, Fut>(test: &str, scenario: F)
where
    F: FnOnce(Store, Store) -> Fut,
    Fut: Future<Output = ()>,
{
    let url = std::env::var("FINPAY_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let probe = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(2))
        .connect(&url)
        .await;
    let Ok(admin) = probe else {
        eprintln!("note: {test} skipped on PostgreSQL: no server answers");
        return;
    };
    let id = PaymentId::new_v7().debit_transfer_id();
    let mut opts = PgOptions::new(url);
    opts.schema = Some(format!("finpay_lease_{}", &id.as_str()[4..]));
    opts.max_connections = 4;
    let a = PgPayments::open(&opts).await.expect("opens");
    let b = PgPayments::open(&opts).await.expect("opens");
    let outcome = futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(scenario(
        Arc::new(a),
        Arc::new(b),
    )))
    .await;
    if let Some(schema) = &opts.schema {
        let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
            .execute(&admin)
            .await;
    }
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// Declares one test per backend for a scenario.
macro_rules! both_backends {
    ($scenario:ident) => {
        mod $scenario {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn on_sqlite() {
                super::on_sqlite(super::$scenario).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn on_postgres() {
                super::on_postgres(stringify!($scenario), super::$scenario).await;
            }
        }
    };
}

async fn a_second_begin_while_the_lease_is_live_gets_no_lease(a: Store, b: Store) {
    let (p, lease) = create(&a, "k-live", &replica("one"), TTL).await;
    assert_eq!(lease.token, 1);
    for s in [&a, &b] {
        match s.begin(new_payment("k-live"), &replica("two"), TTL).await {
            Ok(Begin::Existing {
                payment,
                lease: None,
            }) => assert_eq!(payment.id, p.id),
            other => panic!("a live lease is not taken over: {other:?}"),
        }
    }
    // Nor does the resumer of another replica take it.
    let taken = b
        .take_expired(&replica("two"), TTL, 10)
        .await
        .expect("takes");
    assert!(taken.is_empty(), "{taken:?}");
}
both_backends!(a_second_begin_while_the_lease_is_live_gets_no_lease);

async fn an_expired_lease_is_taken_over_and_the_old_token_changes_nothing(a: Store, b: Store) {
    let (p, old) = create(&a, "k-paused", &replica("one"), SHORT).await;
    // Replica one pauses past its lease; replica two's request takes the payment over.
    outlive(SHORT).await;
    let new = match b.begin(new_payment("k-paused"), &replica("two"), TTL).await {
        Ok(Begin::Existing {
            payment,
            lease: Some(lease),
        }) => {
            assert_eq!(payment.id, p.id);
            lease
        }
        other => panic!("an expired lease is taken over: {other:?}"),
    };
    assert!(new.token > old.token, "{new:?} after {old:?}");
    assert_eq!(new.owner, replica("two"));
    // Replica one wakes up and writes with its old token: refused, nothing changes.
    let checked = PaymentStatus::FraudChecked;
    let err = a
        .advance(
            p.id,
            PaymentStatus::Received,
            checked,
            StepNote::default(),
            &old,
        )
        .await
        .expect_err("a stale token is refused");
    assert!(
        matches!(err, PaymentStoreError::LeaseLost { token, .. } if token == old.token),
        "{err:?}"
    );
    let err = a
        .release(p.id, &old)
        .await
        .expect_err("a stale release is refused");
    assert!(
        matches!(err, PaymentStoreError::LeaseLost { .. }),
        "{err:?}"
    );
    assert_eq!(
        a.get(p.id).await.expect("reads").map(|p| p.status),
        Some(PaymentStatus::Received)
    );
    // The new holder's writes go through, and its lease is still live afterwards.
    let moved = b
        .advance(
            p.id,
            PaymentStatus::Received,
            checked,
            StepNote::default(),
            &new,
        )
        .await
        .expect("the holder writes");
    assert_eq!(moved.status, checked);
    let err = a
        .succeed_from(p.id, checked, outbox_for(&p), &old)
        .await
        .expect_err("a stale token cannot succeed the payment");
    assert!(
        matches!(err, PaymentStoreError::LeaseLost { .. }),
        "{err:?}"
    );
    assert_eq!(a.outbox_pending().await.expect("counts"), 0);
    assert!(a
        .take_expired(&replica("one"), TTL, 10)
        .await
        .expect("takes")
        .is_empty());
    // A stale token outranks a stale state: the old holder learns it lost the payment.
    let err = a
        .advance(
            p.id,
            PaymentStatus::Received,
            PaymentStatus::Failed,
            StepNote::default(),
            &old,
        )
        .await
        .expect_err("refused");
    assert!(
        matches!(err, PaymentStoreError::LeaseLost { .. }),
        "{err:?}"
    );
    let done = b
        .succeed_from(p.id, checked, outbox_for(&p), &new)
        .await
        .expect("succeeds");
    assert_eq!(done.status, PaymentStatus::Succeeded);
}
both_backends!(an_expired_lease_is_taken_over_and_the_old_token_changes_nothing);

async fn a_fenced_write_renews_the_lease_and_a_terminal_one_clears_it(a: Store, b: Store) {
    let lease_ms = Duration::from_millis(600);
    let (p, lease) = create(&a, "k-renew", &replica("one"), lease_ms).await;
    // Written twice, each before the lease would run out: it never does.
    tokio::time::sleep(lease_ms / 2).await;
    let p = a
        .advance(
            p.id,
            PaymentStatus::Received,
            PaymentStatus::FraudChecked,
            StepNote::default(),
            &lease,
        )
        .await
        .expect("renews");
    tokio::time::sleep(lease_ms * 2 / 3).await;
    assert!(b
        .take_expired(&replica("two"), TTL, 10)
        .await
        .expect("takes")
        .is_empty());
    let p = a
        .advance(
            p.id,
            PaymentStatus::FraudChecked,
            PaymentStatus::Declined,
            StepNote::default(),
            &lease,
        )
        .await
        .expect("terminal");
    outlive(lease_ms).await;
    // Terminal: nobody takes it, and a begin of its key gets the payment without a lease.
    assert!(b
        .take_expired(&replica("two"), TTL, 10)
        .await
        .expect("takes")
        .is_empty());
    match b.begin(new_payment("k-renew"), &replica("two"), TTL).await {
        Ok(Begin::Existing {
            payment,
            lease: None,
        }) => assert_eq!(payment, p),
        other => panic!("a terminal payment is answered without a lease: {other:?}"),
    }
}
both_backends!(a_fenced_write_renews_the_lease_and_a_terminal_one_clears_it);

async fn a_released_lease_is_taken_at_once_and_another_body_never_takes_over(a: Store, b: Store) {
    let (p, lease) = create(&a, "k-release", &replica("one"), TTL).await;
    let mut other = new_payment("k-release");
    other.fingerprint = Fingerprint::of(&["another body"]);
    a.release(p.id, &lease).await.expect("releases");
    // Another body with the same key finds the payment but never takes it over.
    match b.begin(other, &replica("two"), TTL).await {
        Ok(Begin::Existing {
            payment,
            lease: None,
        }) => assert_eq!(payment.id, p.id),
        other => panic!("another body gets no lease: {other:?}"),
    }
    let taken = b
        .take_expired(&replica("two"), TTL, 10)
        .await
        .expect("takes");
    assert_eq!(taken.len(), 1);
    let (taken, new) = &taken[0];
    assert_eq!(taken.id, p.id);
    assert_eq!(new.token, lease.token + 1);
    assert_eq!(new.owner, replica("two"));
}
both_backends!(a_released_lease_is_taken_at_once_and_another_body_never_takes_over);

async fn expiry_is_judged_by_the_database_clock(a: Store, b: Store) {
    let (short, _) = create(&a, "k-short", &replica("one"), SHORT).await;
    let (_long, _) = create(&a, "k-long", &replica("one"), TTL).await;
    assert!(
        b.take_expired(&replica("two"), TTL, 10)
            .await
            .expect("takes")
            .is_empty(),
        "nothing has run out yet"
    );
    // Bounded: the short lease runs out within a few of its lengths.
    let mut taken = Vec::new();
    for _ in 0..20 {
        outlive(SHORT).await;
        taken = b
            .take_expired(&replica("two"), TTL, 10)
            .await
            .expect("takes");
        if !taken.is_empty() {
            break;
        }
    }
    let ids: Vec<PaymentId> = taken.iter().map(|(p, _)| p.id).collect();
    assert_eq!(ids, vec![short.id], "only the lease that ran out is taken");
}
both_backends!(expiry_is_judged_by_the_database_clock);

async fn two_replicas_taking_expired_payments_at_once_never_get_the_same_one(a: Store, b: Store) {
    const N: usize = 60;
    for i in 0..N {
        create(&a, &format!("k-crashed-{i}"), &replica("dead"), SHORT).await;
    }
    outlive(SHORT).await;
    let take = |s: Store, name: &'static str| {
        tokio::spawn(async move {
            let mut mine = Vec::new();
            for _ in 0..40 {
                let batch = s.take_expired(&replica(name), TTL, 7).await.expect("takes");
                mine.extend(batch.into_iter().map(|(p, _)| p.id));
                tokio::task::yield_now().await;
            }
            mine
        })
    };
    let (one, two) = (take(a.clone(), "one"), take(b.clone(), "two"));
    let (one, two) = (one.await.expect("joined"), two.await.expect("joined"));
    let all: HashSet<PaymentId> = one.iter().chain(&two).copied().collect();
    assert_eq!(
        one.len() + two.len(),
        N,
        "each payment is taken exactly once"
    );
    assert_eq!(all.len(), N);
}
both_backends!(two_replicas_taking_expired_payments_at_once_never_get_the_same_one);

async fn two_dispatchers_claiming_at_once_never_get_the_same_outbox_row(a: Store, b: Store) {
    const N: usize = 40;
    for i in 0..N {
        let (p, lease) = create(&a, &format!("k-ntf-{i}"), &replica("one"), TTL).await;
        a.advance(
            p.id,
            PaymentStatus::Received,
            PaymentStatus::FraudChecked,
            StepNote::default(),
            &lease,
        )
        .await
        .expect("checked");
        a.succeed_from(p.id, PaymentStatus::FraudChecked, outbox_for(&p), &lease)
            .await
            .expect("succeeds");
    }
    let claim = |s: Store, name: &'static str| {
        tokio::spawn(async move {
            let mut mine = Vec::new();
            for _ in 0..30 {
                let batch = s
                    .claim_outbox(&replica(name), TTL, 5)
                    .await
                    .expect("claims");
                mine.extend(batch);
                tokio::task::yield_now().await;
            }
            mine
        })
    };
    let (one, two) = (claim(a.clone(), "one"), claim(b.clone(), "two"));
    let (one, two) = (one.await.expect("joined"), two.await.expect("joined"));
    let ids: HashSet<_> = one.iter().chain(&two).map(|(m, _)| m.id.clone()).collect();
    assert_eq!(one.len() + two.len(), N, "each row is claimed exactly once");
    assert_eq!(ids.len(), N);
    // A failed delivery ends the claim and is due again after its delay; the next claim is a new
    // token, and the old claim's report is refused.
    let (m, old) = one.first().or(two.first()).cloned().expect("a claim");
    a.outbox_retry_later(&m.id, &old, 1, Duration::ZERO, "down")
        .await
        .expect("recorded");
    let again = b
        .claim_outbox(&replica("two"), TTL, 100)
        .await
        .expect("claims");
    assert_eq!(again.len(), 1, "{again:?}");
    assert_eq!(again[0].0.attempts, 1);
    assert!(again[0].1.token > old.token);
    let err = a
        .outbox_retry_later(&m.id, &old, 2, Duration::ZERO, "stale")
        .await
        .expect_err("a stale claim is refused");
    assert!(
        matches!(err, PaymentStoreError::LeaseLost { .. }),
        "{err:?}"
    );
    let all: Vec<_> = one.iter().chain(&two).map(|(m, _)| m.id.clone()).collect();
    b.outbox_delivered_many(&all, 1).await.expect("delivered");
    assert_eq!(a.outbox_pending().await.expect("counts"), 0);
    assert!(a
        .claim_outbox(&replica("one"), TTL, 100)
        .await
        .expect("claims")
        .is_empty());
}
both_backends!(two_dispatchers_claiming_at_once_never_get_the_same_outbox_row);

async fn an_expired_outbox_claim_is_claimed_again(a: Store, b: Store) {
    let (p, lease) = create(&a, "k-claim", &replica("one"), TTL).await;
    a.advance(
        p.id,
        PaymentStatus::Received,
        PaymentStatus::FraudChecked,
        StepNote::default(),
        &lease,
    )
    .await
    .expect("checked");
    a.succeed_from(p.id, PaymentStatus::FraudChecked, outbox_for(&p), &lease)
        .await
        .expect("succeeds");
    let first = a
        .claim_outbox(&replica("one"), SHORT, 10)
        .await
        .expect("claims");
    assert_eq!(first.len(), 1);
    assert!(b
        .claim_outbox(&replica("two"), TTL, 10)
        .await
        .expect("claims")
        .is_empty());
    outlive(SHORT).await;
    let second = b
        .claim_outbox(&replica("two"), TTL, 10)
        .await
        .expect("claims");
    assert_eq!(
        second.len(),
        1,
        "a dispatcher that died leaves its rows to the others"
    );
    assert!(second[0].1.token > first[0].1.token);
}
both_backends!(an_expired_outbox_claim_is_claimed_again);

#[test]
fn a_lease_owner_is_visible_ascii_and_bounded() {
    assert!(LeaseOwner::try_from("payment-1:42:9f3a").is_ok());
    for bad in [
        String::new(),
        "has space".to_owned(),
        "x".repeat(LeaseOwner::MAX_LEN + 1),
    ] {
        assert!(LeaseOwner::try_from(bad.clone()).is_err(), "{bad:?}");
    }
}
