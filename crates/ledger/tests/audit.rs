//! The offline audit: passes on a store built through the public API, and names the record when
//! data is corrupted behind the stores' backs.

mod common;

use std::path::Path;

use common::*;
use finpay_core::{Currency, Fingerprint, IdempotencyKey, PaymentId, PaymentStatus};
use finpay_ledger::audit::{audit, AuditReport, CurrencyTotals, DeliveryReport};
use finpay_ledger::inbox::{InboxStore, Notification};
use finpay_ledger::payments::{Begin, Lease, NewPayment, OutboxMessage, PaymentStore, StepNote};
use finpay_ledger::sqlite::{SqliteInbox, SqlitePayments, SqliteWallet};
use finpay_ledger::wallet::{TransferRequest, WalletStore};
use sqlx::{ConnectOptions, Connection};

struct World {
    succeeded: Vec<PaymentId>,
    declined: PaymentId,
    failed: PaymentId,
    in_flight: PaymentId,
}

/// Runs payments the way the payment service does: persist, check, debit, succeed with outbox,
/// deliver.
async fn build(dir: &Path) -> (World, SqliteWallet, SqlitePayments, SqliteInbox) {
    let wallet = wallet_with(dir, 0, 0).await;
    wallet
        .open_accounts(vec![
            (acct("cust-1"), Currency::Usd, balance(1_000)),
            (acct("cust-2"), Currency::Usd, balance(50)),
            (acct("merchant-0"), Currency::Usd, balance(0)),
            (acct("eur-1"), Currency::Eur, balance(70)),
        ])
        .await
        .expect("seeded");
    let payments = SqlitePayments::open(&dir.join("payments.db"), &fast())
        .await
        .expect("payments");
    let inbox = SqliteInbox::open(&dir.join("notifications.db"), &fast())
        .await
        .expect("inbox");

    let start = |key: &str, from: &str, minor: u64| NewPayment {
        id: PaymentId::new_v7(),
        idempotency_key: IdempotencyKey::try_from(key).expect("key"),
        fingerprint: Fingerprint::of(&[key]),
        account_id: acct(from),
        merchant_account_id: acct("merchant-0"),
        amount: amount(minor),
        currency: Currency::Usd,
        description: None,
    };
    let begin = |n: NewPayment| {
        let payments = payments.clone();
        async move {
            match payments.begin(n, &owner(), TTL).await.expect("begins") {
                Begin::Created(p, lease) => (p, lease),
                Begin::Existing { payment, .. } => {
                    panic!("fresh key expected, found {}", payment.id)
                }
            }
        }
    };
    let step = |id, lease: &Lease, from, to| {
        let payments = payments.clone();
        let lease = lease.clone();
        async move {
            payments
                .advance(id, from, to, StepNote::default(), &lease)
                .await
                .expect("steps")
        }
    };

    let mut succeeded = Vec::new();
    for i in 0..3 {
        let (p, lease) = begin(start(&format!("ok-{i}"), "cust-1", 100 + i)).await;
        step(
            p.id,
            &lease,
            PaymentStatus::Received,
            PaymentStatus::FraudChecked,
        )
        .await;
        wallet
            .transfer(&TransferRequest {
                id: p.id.debit_transfer_id(),
                debit_account_id: p.account_id.clone(),
                credit_account_id: p.merchant_account_id.clone(),
                amount: p.amount_minor,
                currency: p.currency,
            })
            .await
            .expect("debit");
        step(
            p.id,
            &lease,
            PaymentStatus::FraudChecked,
            PaymentStatus::Debited,
        )
        .await;
        let message = OutboxMessage {
            id: p.id.notification_id(),
            payment_id: p.id,
            account_id: p.account_id.clone(),
            message: format!("paid {}", p.amount_minor),
            attempts: 0,
            next_attempt_at_ms: 0,
            delivered_at_ms: None,
            last_error: None,
        };
        payments
            .succeed(p.id, message.clone(), &lease)
            .await
            .expect("succeeds");
        if i < 2 {
            inbox
                .deliver(Notification {
                    id: message.id.clone(),
                    payment_id: p.id,
                    account_id: message.account_id.clone(),
                    message: message.message.clone(),
                    received_at_ms: 1,
                })
                .await
                .expect("delivered");
            payments
                .outbox_delivered(&message.id, 2)
                .await
                .expect("marked");
        }
        succeeded.push(p.id);
    }
    // Declined for insufficient funds: the wallet refused, nothing was debited.
    let (declined, lease) = begin(start("poor", "cust-2", 500)).await;
    step(
        declined.id,
        &lease,
        PaymentStatus::Received,
        PaymentStatus::FraudChecked,
    )
    .await;
    step(
        declined.id,
        &lease,
        PaymentStatus::FraudChecked,
        PaymentStatus::Declined,
    )
    .await;
    let (failed, lease) = begin(start("fraud-down", "cust-1", 10)).await;
    step(
        failed.id,
        &lease,
        PaymentStatus::Received,
        PaymentStatus::Failed,
    )
    .await;
    let (in_flight, _) = begin(start("crashed", "cust-1", 10)).await;
    // Unrelated ledger activity (not a payment) is fine too.
    wallet
        .transfer(&req("manual-1", "cust-2", "cust-1", 5))
        .await
        .expect("manual transfer");
    (
        World {
            succeeded,
            declined: declined.id,
            failed: failed.id,
            in_flight: in_flight.id,
        },
        wallet,
        payments,
        inbox,
    )
}

async fn raw_sql(dir: &Path, file: &str, sql: &str) {
    let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(dir.join(file))
        .busy_timeout(std::time::Duration::from_secs(5))
        .connect()
        .await
        .expect("raw connection");
    sqlx::raw_sql(sql)
        .execute(&mut conn)
        .await
        .expect("raw sql runs");
    conn.close().await.expect("closes");
}

fn has(report: &AuditReport, needles: &[&str]) -> bool {
    report
        .violations
        .iter()
        .any(|v| needles.iter().all(|n| v.contains(n)))
}

#[tokio::test]
async fn a_store_built_through_the_api_passes_with_correct_counts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_world, _w, _p, _i) = build(dir.path()).await;
    // Audited while the stores are still open, as `finpay check` may be.
    let report = audit(dir.path()).await.expect("audits");
    assert!(report.ok, "{:#?}", report.violations);
    assert!(report.delivery.ok, "{:#?}", report.delivery.violations);
    assert_eq!(report.accounts, 4);
    assert_eq!(report.transfers, 4);
    assert_eq!(report.entries, 8);
    assert_eq!(report.payments, 6);
    assert_eq!(report.payments_by_status.get("succeeded"), Some(&3));
    assert_eq!(report.payments_by_status.get("declined"), Some(&1));
    assert_eq!(report.payments_by_status.get("failed"), Some(&1));
    assert_eq!(report.payments_by_status.get("received"), Some(&1));
    assert_eq!(report.payments_resumable, 1);
    assert_eq!((report.outbox_delivered, report.outbox_pending), (2, 1));
    assert_eq!(report.notifications, 2);
    assert_eq!(report.delivery.delivered_in_inbox, 2);
    assert_eq!(report.totals["USD"].balance_minor, 1_050);
    assert_eq!(report.totals["EUR"].opening_minor, 70);
    let json = serde_json::to_value(&report).expect("serializes");
    assert_eq!(json["ok"], true);
    assert!(json["violations"].as_array().is_some_and(|v| v.is_empty()));
}

#[tokio::test]
async fn a_balance_changed_by_hand_is_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let _stores = build(dir.path()).await;
    raw_sql(
        dir.path(),
        "wallet.db",
        "UPDATE accounts SET balance = balance + 7 WHERE id = 'cust-2'",
    )
    .await;
    let report = audit(dir.path()).await.expect("audits");
    assert!(!report.ok);
    assert!(
        has(&report, &["USD", "created"]),
        "{:#?}",
        report.violations
    );
    assert!(
        has(&report, &["account cust-2", "balance"]),
        "{:#?}",
        report.violations
    );
}

#[tokio::test]
async fn a_negative_balance_and_a_lost_entry_are_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (world, ..) = build(dir.path()).await;
    let t = world.succeeded[0].debit_transfer_id();
    // The CHECK constraint forbids a negative balance; only a deliberately broken writer gets past it.
    raw_sql(
        dir.path(),
        "wallet.db",
        &format!(
            "PRAGMA ignore_check_constraints = ON; \
             UPDATE accounts SET balance = -1 WHERE id = 'eur-1'; \
             DELETE FROM entries WHERE transfer_id = '{t}' AND direction = 'credit';"
        ),
    )
    .await;
    let report = audit(dir.path()).await.expect("audits");
    assert!(
        has(&report, &["account eur-1", "negative"]),
        "{:#?}",
        report.violations
    );
    assert!(
        has(
            &report,
            &[&format!("transfer {t}"), "unbalanced", "1 entries"]
        ),
        "{:#?}",
        report.violations
    );
    assert!(
        has(&report, &["account merchant-0", "balance"]),
        "{:#?}",
        report.violations
    );
}

#[tokio::test]
async fn payment_states_that_disagree_with_the_ledger_are_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (world, ..) = build(dir.path()).await;
    let declined = world.declined;
    let succeeded = world.succeeded[1];
    let failed = world.failed;
    raw_sql(
        dir.path(),
        "payments.db",
        &format!(
            "UPDATE payments SET status = 'succeeded' WHERE id = '{declined}'; \
             UPDATE payments SET status = 'declined' WHERE id = '{succeeded}';"
        ),
    )
    .await;
    // A debit the failed payment never asked for.
    let t = failed.debit_transfer_id();
    raw_sql(
        dir.path(),
        "wallet.db",
        &format!(
            "INSERT INTO transfers VALUES ('{t}', 'cust-1', 'merchant-0', 10, 'USD', 0); \
             INSERT INTO entries VALUES ('{t}', 'cust-1', 'debit', 10), ('{t}', 'merchant-0', 'credit', 10); \
             UPDATE accounts SET balance = balance - 10 WHERE id = 'cust-1'; \
             UPDATE accounts SET balance = balance + 10 WHERE id = 'merchant-0';"
        ),
    )
    .await;
    let report = audit(dir.path()).await.expect("audits");
    let d = declined.to_string();
    let s = succeeded.to_string();
    let f = failed.to_string();
    assert!(
        has(&report, &[&d, "no debit transfer"]),
        "{:#?}",
        report.violations
    );
    assert!(
        has(&report, &[&d, "0 outbox rows"]),
        "{:#?}",
        report.violations
    );
    assert!(
        has(&report, &[&s, "declined but was debited"]),
        "{:#?}",
        report.violations
    );
    assert!(
        has(&report, &[&f, "failed but was debited"]),
        "{:#?}",
        report.violations
    );
    assert!(
        has(&report, &["outbox", &s, "not succeeded"]),
        "{:#?}",
        report.violations
    );
    // The money itself still adds up: these are payment/ledger disagreements only.
    assert!(!has(&report, &["sum to"]), "{:#?}", report.violations);
    let _ = world.in_flight;
}

#[tokio::test]
async fn a_debit_without_its_payment_and_a_wrong_amount_are_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (world, ..) = build(dir.path()).await;
    let gone = world.succeeded[2];
    let wrong = world.succeeded[0];
    raw_sql(
        dir.path(),
        "payments.db",
        &format!(
            "DELETE FROM outbox WHERE payment_id = '{gone}'; DELETE FROM payments WHERE id = '{gone}'; \
             UPDATE payments SET amount = amount + 1 WHERE id = '{wrong}';"
        ),
    )
    .await;
    let report = audit(dir.path()).await.expect("audits");
    assert!(
        has(
            &report,
            &[gone.debit_transfer_id().as_str(), "does not exist"]
        ),
        "{:#?}",
        report.violations
    );
    assert!(
        has(&report, &[&wrong.to_string(), "but its debit transfer"]),
        "{:#?}",
        report.violations
    );
}

#[tokio::test]
async fn a_delivered_notification_missing_from_the_inbox_fails_only_the_delivery_check() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (world, ..) = build(dir.path()).await;
    let lost = world.succeeded[0].notification_id();
    raw_sql(
        dir.path(),
        "notifications.db",
        &format!("DELETE FROM notifications WHERE id = '{lost}'"),
    )
    .await;
    let report = audit(dir.path()).await.expect("audits");
    assert!(report.ok, "money is fine: {:#?}", report.violations);
    assert!(!report.delivery.ok);
    assert_eq!(report.delivery.delivered_in_inbox, 1);
    assert!(
        report
            .delivery
            .violations
            .iter()
            .any(|v| v.contains(lost.as_str())),
        "{:#?}",
        report.delivery.violations
    );
}

/// Breaks every invariant the audit checks at once and pins the whole report: every count and
/// total, and every violation in its exact words and order (including the line that counts what a
/// check leaves unlisted).
#[tokio::test]
async fn every_check_reports_its_records_in_its_exact_words() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (world, ..) = build(dir.path()).await;
    let [s0, s1, s2] = [world.succeeded[0], world.succeeded[1], world.succeeded[2]];
    let (t0, t1, t2) = (
        s0.debit_transfer_id(),
        s1.debit_transfer_id(),
        s2.debit_transfer_id(),
    );
    let (o0, o1, o2) = (
        s0.notification_id(),
        s1.notification_id(),
        s2.notification_id(),
    );
    let (declined, in_flight) = (world.declined, world.in_flight);
    let orphans: String = (0..102)
        .map(|i| format!("INSERT INTO entries VALUES ('orphan-{i:03}', 'eur-1', 'debit', 1);"))
        .collect();
    raw_sql(
        dir.path(),
        "wallet.db",
        &format!(
            "PRAGMA foreign_keys = OFF; PRAGMA ignore_check_constraints = ON; \
             UPDATE accounts SET balance = -1 WHERE id = 'eur-1'; \
             DELETE FROM entries WHERE transfer_id = '{t0}' AND direction = 'credit'; \
             INSERT INTO transfers VALUES ('bad-1', 'cust-2', 'ghost', 3, 'USD', 0); \
             INSERT INTO entries VALUES ('bad-1', 'nobody', 'credit', 3); {orphans}"
        ),
    )
    .await;
    raw_sql(
        dir.path(),
        "payments.db",
        &format!(
            "PRAGMA foreign_keys = OFF; PRAGMA ignore_check_constraints = ON; \
             UPDATE payments SET status = 'bogus' WHERE id = '{in_flight}'; \
             UPDATE payments SET status = 'succeeded' WHERE id = '{declined}'; \
             UPDATE payments SET amount = amount + 1 WHERE id = '{s1}'; \
             UPDATE payments SET status = 'failed' WHERE id = '{s2}'; \
             DELETE FROM payments WHERE id = '{s0}'; \
             UPDATE outbox SET attempts = -1 WHERE id = '{o2}';"
        ),
    )
    .await;
    raw_sql(
        dir.path(),
        "notifications.db",
        &format!(
            "DELETE FROM notifications WHERE id = '{o0}'; \
             UPDATE notifications SET message = 'changed' WHERE id = '{o1}';"
        ),
    )
    .await;
    let report = audit(dir.path()).await.expect("audits");

    let mut violations = vec![
        "wallet: EUR balances sum to -1 but opening balances sum to 70: money was destroyed".to_owned(),
        "account eur-1: negative balance -1".to_owned(),
        "transfer bad-1: unbalanced: 1 entries (0 debit, 1 credit); expected one debit of 3 from cust-2 and one credit of 3 to ghost".to_owned(),
        format!("transfer {t0}: unbalanced: 1 entries (1 debit, 0 credit); expected one debit of 100 from cust-1 and one credit of 100 to merchant-0"),
        "transfer bad-1: invalid: amount 3 USD from cust-2 (USD) to ghost (missing)".to_owned(),
    ];
    violations.extend((0..100).map(|i| {
        format!("entry orphan-{i:03} debit on account eur-1: its transfer does not exist")
    }));
    violations.extend([
        "orphan entry: 2 more violations not listed".to_owned(),
        "account merchant-0: balance 303 but opening 0 - debits 0 + credits 203 = 203".to_owned(),
        "account eur-1: balance -1 but opening 70 - debits 102 + credits 0 = -32".to_owned(),
        "entry bad-1 credit: account nobody does not exist".to_owned(),
        format!("payment {in_flight}: status \"bogus\" is neither terminal nor resumable"),
        format!("payment {s1}: succeeded for 102 USD from cust-1 to merchant-0, but its debit transfer {t1} moved 101 USD from cust-1 to merchant-0"),
        format!("payment {declined}: succeeded but has no debit transfer"),
        format!("payment {s2}: failed but was debited by transfer {t2}"),
        format!("transfer {t0}: debits 100 from cust-1 for a payment that does not exist"),
        format!("outbox {o2}: neither delivered nor pending (attempts -1, next attempt 0)"),
        format!("outbox {o0}: its payment {s0} is missing, not succeeded"),
        format!("outbox {o2}: its payment {s2} is failed, not succeeded"),
        format!("payment {declined}: succeeded with 0 outbox rows, expected exactly 1"),
    ]);
    let totals = |balance_minor, opening_minor| CurrencyTotals {
        balance_minor,
        opening_minor,
    };
    let expected = AuditReport {
        ok: false,
        violations,
        accounts: 4,
        transfers: 5,
        entries: 110,
        totals: [
            ("EUR".to_owned(), totals(-1, 70)),
            ("USD".to_owned(), totals(1_050, 1_050)),
        ]
        .into(),
        payments: 5,
        payments_by_status: [
            ("bogus".to_owned(), 1),
            ("failed".to_owned(), 2),
            ("succeeded".to_owned(), 2),
        ]
        .into(),
        payments_resumable: 0,
        outbox_pending: 1,
        outbox_delivered: 2,
        notifications: 1,
        delivery: DeliveryReport {
            ok: false,
            violations: vec![
                format!("outbox {o0} (payment {s0}): marked delivered but absent from the inbox"),
                format!("notification {o1}: the inbox holds a different payment, account or message than the outbox"),
            ],
            outbox_delivered: 2,
            outbox_pending: 1,
            delivered_in_inbox: 1,
            pending_already_in_inbox: 0,
            notifications: 1,
        },
    };
    for (i, (got, want)) in report
        .violations
        .iter()
        .zip(&expected.violations)
        .enumerate()
    {
        assert_eq!(got, want, "violation {i}");
    }
    assert_eq!(report, expected);
}
