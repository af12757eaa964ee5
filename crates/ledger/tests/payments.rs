//! The SQLite payments store: idempotency keys, compare-and-set steps, and the atomic outbox.

mod common;

use common::*;
use finpay_core::{
    Currency, Fingerprint, IdempotencyKey, NotificationId, PaymentId, PaymentStatus,
};
use std::time::Duration;

use finpay_ledger::payments::{
    Begin, Lease, NewPayment, OutboxMessage, Payment, PaymentStore, PaymentStoreError, StepNote,
};
use finpay_ledger::sqlite::SqlitePayments;

async fn store(dir: &std::path::Path) -> SqlitePayments {
    SqlitePayments::open(&dir.join("payments.db"), &fast())
        .await
        .expect("payments open")
}

fn new_payment(key: &str, minor: u64) -> NewPayment {
    NewPayment {
        id: PaymentId::new_v7(),
        idempotency_key: IdempotencyKey::try_from(key).expect("valid key"),
        fingerprint: Fingerprint::of(&[key, &minor.to_string()]),
        account_id: acct("cust-1"),
        merchant_account_id: acct("merchant-0"),
        amount: amount(minor),
        currency: Currency::Usd,
        description: Some("coffee".to_owned()),
    }
}

fn outbox_for(p: &Payment) -> OutboxMessage {
    OutboxMessage {
        id: p.id.notification_id(),
        payment_id: p.id,
        account_id: p.account_id.clone(),
        message: format!("paid {}", p.amount_minor),
        attempts: 0,
        next_attempt_at_ms: 0,
        delivered_at_ms: None,
        last_error: None,
    }
}

async fn created(s: &SqlitePayments, new: NewPayment) -> (Payment, Lease) {
    match s.begin(new, &owner(), TTL).await.expect("begins") {
        Begin::Created(p, lease) => (p, lease),
        Begin::Existing { payment, .. } => panic!("fresh key expected, found {}", payment.id),
    }
}

async fn debited(s: &SqlitePayments, key: &str) -> (Payment, Lease) {
    let (p, lease) = created(s, new_payment(key, 100)).await;
    s.advance(
        p.id,
        PaymentStatus::Received,
        PaymentStatus::FraudChecked,
        StepNote::default(),
        &lease,
    )
    .await
    .expect("fraud checked");
    let p = s
        .advance(
            p.id,
            PaymentStatus::FraudChecked,
            PaymentStatus::Debited,
            StepNote::default(),
            &lease,
        )
        .await
        .expect("debited");
    (p, lease)
}

#[tokio::test]
async fn begin_stores_once_per_idempotency_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = store(dir.path()).await;
    let new = new_payment("key-1", 100);
    let (created, lease) = created(&s, new.clone()).await;
    assert_eq!(lease.token, 1, "the first lease of a payment");
    assert_eq!(lease.owner, owner());
    assert_eq!(created.status, PaymentStatus::Received);
    assert_eq!(created.fingerprint, new.fingerprint);
    // A second request with the same key (even another body and id) finds the first.
    let mut other = new_payment("key-1", 999);
    other.id = PaymentId::new_v7();
    let Begin::Existing {
        payment: existing,
        lease: None,
    } = s.begin(other, &owner(), TTL).await.expect("finds")
    else {
        panic!("second begin finds the first, and no lease while the first is live")
    };
    assert_eq!(existing, created);
    assert_eq!(s.get(created.id).await.expect("read"), Some(created));
    assert_eq!(s.get(PaymentId::new_v7()).await.expect("read"), None);
}

#[tokio::test]
async fn advance_is_a_compare_and_set_that_loses_on_stale_state() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = store(dir.path()).await;
    let (p, lease) = created(&s, new_payment("k", 100)).await;
    let note = StepNote {
        reason: Some("fallback".to_owned()),
        needs_review: true,
    };
    let moved = s
        .advance(
            p.id,
            PaymentStatus::Received,
            PaymentStatus::FraudChecked,
            note,
            &lease,
        )
        .await
        .expect("moves");
    assert_eq!(moved.status, PaymentStatus::FraudChecked);
    assert!(moved.needs_review);
    assert_eq!(moved.reason.as_deref(), Some("fallback"));
    // A second worker that read `received` earlier loses.
    let err = s
        .advance(
            p.id,
            PaymentStatus::Received,
            PaymentStatus::Failed,
            StepNote::default(),
            &lease,
        )
        .await
        .expect_err("stale");
    assert!(
        matches!(
            err,
            PaymentStoreError::StaleState {
                expected: PaymentStatus::Received,
                actual: PaymentStatus::FraudChecked,
                ..
            }
        ),
        "{err:?}"
    );
    // Illegal moves never reach the store; `succeeded` only through `succeed`.
    for (from, to) in [
        (PaymentStatus::FraudChecked, PaymentStatus::Received),
        (PaymentStatus::Debited, PaymentStatus::Succeeded),
    ] {
        let err = s
            .advance(p.id, from, to, StepNote::default(), &lease)
            .await
            .expect_err("refused");
        assert!(matches!(err, PaymentStoreError::Transition(_)), "{err:?}");
    }
    let err = s
        .advance(
            PaymentId::new_v7(),
            PaymentStatus::Received,
            PaymentStatus::FraudChecked,
            StepNote::default(),
            &lease,
        )
        .await
        .expect_err("unknown");
    assert!(matches!(err, PaymentStoreError::NotFound(_)));
    let still = s.get(p.id).await.expect("read").expect("exists");
    assert_eq!(still.status, PaymentStatus::FraudChecked);
}

#[tokio::test]
async fn succeed_writes_the_outbox_row_in_the_same_transaction() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = store(dir.path()).await;
    let (p, lease) = debited(&s, "k1").await;
    let done = s
        .succeed(p.id, outbox_for(&p), &lease)
        .await
        .expect("succeeds");
    assert_eq!(done.status, PaymentStatus::Succeeded);
    let due = s.outbox_due(crate_now(), 10).await.expect("read");
    assert_eq!(due.len(), 1);
    assert_eq!(due[0], outbox_for(&p));
    assert_eq!(s.outbox_pending().await.expect("count"), 1);

    // Succeeding twice loses the compare-and-set and adds no second row.
    let err = s
        .succeed(p.id, outbox_for(&p), &lease)
        .await
        .expect_err("stale");
    assert!(matches!(
        err,
        PaymentStoreError::StaleState {
            actual: PaymentStatus::Succeeded,
            ..
        }
    ));
    assert_eq!(s.outbox_pending().await.expect("count"), 1);

    // When the outbox insert fails (here: a notification id already taken), the status change is
    // rolled back with it.
    let (q, q_lease) = debited(&s, "k2").await;
    let mut clash = outbox_for(&q);
    clash.id = p.id.notification_id();
    let err = s
        .succeed(q.id, clash, &q_lease)
        .await
        .expect_err("outbox insert fails");
    assert!(matches!(err, PaymentStoreError::Storage(_)), "{err:?}");
    let q_now = s.get(q.id).await.expect("read").expect("exists");
    assert_eq!(q_now.status, PaymentStatus::Debited, "nothing half-done");
    assert_eq!(s.outbox_pending().await.expect("count"), 1);

    // An outbox row for another payment is refused.
    let mut foreign = outbox_for(&q);
    foreign.payment_id = p.id;
    assert!(s.succeed(q.id, foreign, &q_lease).await.is_err());
    assert_eq!(
        s.get(q.id).await.expect("read").map(|p| p.status),
        Some(PaymentStatus::Debited)
    );
}

fn crate_now() -> i64 {
    finpay_ledger::now_ms()
}

#[tokio::test]
async fn the_outbox_retries_later_and_stays_delivered() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = store(dir.path()).await;
    let (p, lease) = debited(&s, "k").await;
    s.succeed(p.id, outbox_for(&p), &lease)
        .await
        .expect("succeeds");
    let id = p.id.notification_id();
    let claimed = s.claim_outbox(&owner(), TTL, 10).await.expect("claims");
    assert_eq!(claimed.len(), 1);
    let claim = claimed[0].1.clone();
    let before = crate_now();
    s.outbox_retry_later(&id, &claim, 1, Duration::from_secs(60), "notification down")
        .await
        .expect("rescheduled");
    // Not due again for a minute by the database's clock: nothing to claim.
    assert!(s
        .claim_outbox(&owner(), TTL, 10)
        .await
        .expect("claims")
        .is_empty());
    assert!(s
        .outbox_due(before + 59_000, 10)
        .await
        .expect("read")
        .is_empty());
    let due = s.outbox_due(i64::MAX, 10).await.expect("read");
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].attempts, 1);
    assert_eq!(due[0].last_error.as_deref(), Some("notification down"));
    assert!(due[0].next_attempt_at_ms >= before + 60_000);
    s.outbox_delivered(&id, 6_000).await.expect("delivered");
    s.outbox_delivered(&id, 7_000).await.expect("idempotent");
    // A late failure report from another dispatcher does not undeliver it.
    s.outbox_retry_later(&id, &claim, 2, Duration::ZERO, "late")
        .await
        .expect("ignored");
    assert!(s.outbox_due(i64::MAX, 10).await.expect("read").is_empty());
    assert_eq!(s.outbox_pending().await.expect("count"), 0);
    let unknown = NotificationId::try_from("ntf-unknown").expect("id");
    assert!(s.outbox_delivered(&unknown, 1).await.is_err());
}

async fn fraud_checked(s: &SqlitePayments, key: &str) -> (Payment, Lease) {
    let (p, lease) = created(s, new_payment(key, 100)).await;
    let p = s
        .advance(
            p.id,
            PaymentStatus::Received,
            PaymentStatus::FraudChecked,
            StepNote::default(),
            &lease,
        )
        .await
        .expect("fraud checked");
    (p, lease)
}

#[tokio::test]
async fn succeed_from_fraud_checked_goes_through_debited_in_one_write() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = store(dir.path()).await;
    let (p, lease) = fraud_checked(&s, "k1").await;
    let done = s
        .succeed_from(p.id, PaymentStatus::FraudChecked, outbox_for(&p), &lease)
        .await
        .expect("succeeds");
    assert_eq!(done.status, PaymentStatus::Succeeded);
    assert_eq!(s.outbox_due(crate_now(), 10).await.expect("read").len(), 1);

    // Repeating it (a resumer racing the request path) loses the compare-and-set, adds no row.
    let err = s
        .succeed_from(p.id, PaymentStatus::FraudChecked, outbox_for(&p), &lease)
        .await
        .expect_err("stale");
    assert!(matches!(
        err,
        PaymentStoreError::StaleState {
            expected: PaymentStatus::FraudChecked,
            actual: PaymentStatus::Succeeded,
            ..
        }
    ));
    assert_eq!(s.outbox_pending().await.expect("count"), 1);

    // Never from `received`: that would be a debit without a SAFE verdict.
    let (q, q_lease) = created(&s, new_payment("k2", 100)).await;
    let err = s
        .succeed_from(q.id, PaymentStatus::Received, outbox_for(&q), &q_lease)
        .await
        .expect_err("illegal");
    assert!(matches!(err, PaymentStoreError::Transition(_)), "{err:?}");
    assert_eq!(
        s.get(q.id).await.expect("read").map(|p| p.status),
        Some(PaymentStatus::Received)
    );

    // A payment that is not in `from` any more is left alone, outbox included.
    let (r, r_lease) = fraud_checked(&s, "k3").await;
    s.advance(
        r.id,
        PaymentStatus::FraudChecked,
        PaymentStatus::Declined,
        StepNote::default(),
        &r_lease,
    )
    .await
    .expect("declined");
    assert!(s
        .succeed_from(r.id, PaymentStatus::FraudChecked, outbox_for(&r), &r_lease)
        .await
        .is_err());
    assert_eq!(s.outbox_pending().await.expect("count"), 1);
}

#[tokio::test]
async fn outbox_rows_are_marked_delivered_many_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = store(dir.path()).await;
    let mut ids = Vec::new();
    for k in ["a", "b", "c"] {
        let (p, lease) = debited(&s, k).await;
        s.succeed(p.id, outbox_for(&p), &lease)
            .await
            .expect("succeeds");
        ids.push(p.id.notification_id());
    }
    s.outbox_delivered(&ids[0], 1_000).await.expect("first");
    // Duplicates in the list are fine; a delivered row keeps its first time.
    let twice = vec![ids[0].clone(), ids[1].clone(), ids[1].clone()];
    s.outbox_delivered_many(&twice, 2_000)
        .await
        .expect("delivered");
    assert_eq!(s.outbox_pending().await.expect("count"), 1);
    let due = s.outbox_due(i64::MAX, 10).await.expect("read");
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].id, ids[2]);

    // An unknown id refuses the whole call: nothing of it is marked.
    let unknown = NotificationId::try_from("ntf-unknown").expect("id");
    assert!(s
        .outbox_delivered_many(&[ids[2].clone(), unknown], 3_000)
        .await
        .is_err());
    assert_eq!(s.outbox_pending().await.expect("count"), 1);
    s.outbox_delivered_many(&ids, 4_000)
        .await
        .expect("delivered");
    assert_eq!(s.outbox_pending().await.expect("count"), 0);
}

#[tokio::test]
async fn unfinished_lists_non_terminal_payments_oldest_first() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = store(dir.path()).await;
    let mut ids = Vec::new();
    let mut leases = Vec::new();
    for i in 0..5 {
        let (p, lease) = created(&s, new_payment(&format!("k{i}"), 10)).await;
        ids.push(p.id);
        leases.push(lease);
    }
    s.advance(
        ids[1],
        PaymentStatus::Received,
        PaymentStatus::Declined,
        StepNote::default(),
        &leases[1],
    )
    .await
    .expect("declined");
    s.advance(
        ids[3],
        PaymentStatus::Received,
        PaymentStatus::FraudChecked,
        StepNote::default(),
        &leases[3],
    )
    .await
    .expect("checked");
    let open: Vec<PaymentId> = s
        .unfinished(10)
        .await
        .expect("read")
        .into_iter()
        .map(|p| p.id)
        .collect();
    assert_eq!(open, vec![ids[0], ids[2], ids[3], ids[4]]);
    assert_eq!(s.unfinished(2).await.expect("read").len(), 2);
    s.ping().await.expect("ready");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_workers_move_a_payment_exactly_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = store(dir.path()).await;
    let (p, lease) = created(&s, new_payment("k", 10)).await;
    let mut tasks = Vec::new();
    for i in 0..20 {
        let s = s.clone();
        let lease = lease.clone();
        let to = if i % 2 == 0 {
            PaymentStatus::FraudChecked
        } else {
            PaymentStatus::Failed
        };
        tasks.push(tokio::spawn(async move {
            s.advance(
                p.id,
                PaymentStatus::Received,
                to,
                StepNote::default(),
                &lease,
            )
            .await
        }));
    }
    let mut won = 0;
    for t in tasks {
        match t.await.expect("task") {
            Ok(_) => won += 1,
            Err(PaymentStoreError::StaleState { .. }) => {}
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(won, 1);
}
