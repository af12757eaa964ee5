//! The SQLite notification inbox: a notification is stored once, however often it arrives.

mod common;

use common::*;
use finpay_core::{NotificationId, PaymentId};
use finpay_ledger::inbox::{Delivery, InboxError, InboxStore, Notification};
use finpay_ledger::sqlite::SqliteInbox;

fn note(payment: PaymentId, message: &str, at: i64) -> Notification {
    Notification {
        id: payment.notification_id(),
        payment_id: payment,
        account_id: acct("cust-1"),
        message: message.to_owned(),
        received_at_ms: at,
    }
}

#[tokio::test]
async fn a_redelivery_stores_nothing_new_and_returns_the_first() {
    let dir = tempfile::tempdir().expect("tempdir");
    let inbox = SqliteInbox::open(&dir.path().join("notifications.db"), &fast())
        .await
        .expect("opens");
    let p = PaymentId::new_v7();
    let first = note(p, "paid 100", 1);
    assert_eq!(
        inbox.deliver(first.clone()).await.expect("stored"),
        Delivery::Stored(first.clone())
    );
    assert_eq!(
        inbox.deliver(note(p, "paid 100", 2)).await.expect("dup"),
        Delivery::Duplicate(first.clone())
    );
    let err = inbox
        .deliver(note(p, "paid 999", 3))
        .await
        .expect_err("conflict");
    assert!(matches!(err, InboxError::Conflict(ref id) if *id == p.notification_id()));
    let listed = inbox.list(&acct("cust-1"), 10).await.expect("list");
    assert_eq!(listed, vec![first]);
    assert!(inbox
        .list(&acct("other"), 10)
        .await
        .expect("list")
        .is_empty());
    inbox.ping().await.expect("ready");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_deliveries_of_one_notification_store_it_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("notifications.db");
    let a = SqliteInbox::open(&path, &fast()).await.expect("opens");
    let b = SqliteInbox::open(&path, &fast())
        .await
        .expect("opens again");
    let p = PaymentId::new_v7();
    let mut tasks = Vec::new();
    for i in 0..20 {
        let inbox = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            inbox.deliver(note(p, "hi", i)).await
        }));
    }
    let mut stored = 0;
    for t in tasks {
        if let Delivery::Stored(_) = t.await.expect("task").expect("delivered") {
            stored += 1;
        }
    }
    assert_eq!(stored, 1);
    let id = NotificationId::try_from(p.notification_id().as_str()).expect("id");
    assert_eq!(a.list(&acct("cust-1"), 100).await.expect("list").len(), 1);
    assert_eq!(a.list(&acct("cust-1"), 100).await.expect("list")[0].id, id);
}
