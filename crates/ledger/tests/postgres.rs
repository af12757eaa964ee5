//! The PostgreSQL backend against the same rules as SQLite. Each test gets its own PostgreSQL
//! schema. When no server answers (set `FINPAY_TEST_PG_URL`, default
//! `postgres://postgres@127.0.0.1:5432/test`), each test prints a note and passes without running.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use finpay_core::{Currency, Fingerprint, IdempotencyKey, PaymentId, PaymentStatus};
use finpay_ledger::inbox::{Delivery, InboxError, InboxStore, Notification};
use finpay_ledger::payments::{
    Begin, NewPayment, OutboxMessage, PaymentStore, PaymentStoreError, StepNote,
};
use finpay_ledger::postgres::{PgInbox, PgOptions, PgPayments, PgWallet};
use finpay_ledger::wallet::{TransferOutcome, WalletError, WalletStore};

/// Options for a fresh schema, or `None` (after printing why) when PostgreSQL is unreachable.
async fn pg(test: &str) -> Option<PgOptions> {
    let url = std::env::var("FINPAY_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let probe = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(2))
        .connect(&url)
        .await;
    if let Err(e) = probe {
        eprintln!("note: {test} skipped: PostgreSQL unreachable at {url}: {e}");
        return None;
    }
    let id = PaymentId::new_v7().debit_transfer_id();
    let mut opts = PgOptions::new(url);
    opts.schema = Some(format!("finpay_test_{}", &id.as_str()[4..]));
    Some(opts)
}

async fn drop_schema(opts: &PgOptions) {
    if let (Some(schema), Ok(pool)) = (
        &opts.schema,
        sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .connect(&opts.url)
            .await,
    ) {
        let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
            .execute(&pool)
            .await;
    }
}

async fn pg_wallet(opts: &PgOptions, n: usize, opening: u64) -> PgWallet {
    let w = PgWallet::open(opts).await.expect("wallet opens");
    let accounts = (0..n)
        .map(|i| (acct(&format!("a{i}")), Currency::Usd, balance(opening)))
        .collect();
    w.open_accounts(accounts).await.expect("seeded");
    w
}

async fn bal(w: &PgWallet, id: &str) -> u64 {
    w.account(&acct(id))
        .await
        .expect("read")
        .expect("exists")
        .balance
        .minor()
}

#[tokio::test]
async fn pg_wallet_follows_the_ledger_rules() {
    let Some(opts) = pg("pg_wallet_follows_the_ledger_rules").await else {
        return;
    };
    let w = pg_wallet(&opts, 2, 100).await;
    let r = req("t-1", "a0", "a1", 60);
    assert!(matches!(
        w.transfer(&r).await,
        Ok(TransferOutcome::Created(_))
    ));
    assert!(matches!(
        w.transfer(&r).await,
        Ok(TransferOutcome::Replayed(_))
    ));
    assert!(matches!(
        w.transfer(&req("t-1", "a0", "a1", 61)).await,
        Err(WalletError::IdempotencyConflict(_))
    ));
    assert!(matches!(
        w.transfer(&req("t-2", "a0", "a1", 41)).await,
        Err(WalletError::InsufficientFunds { .. })
    ));
    assert!(matches!(
        w.transfer(&req("t-3", "a0", "ghost", 1)).await,
        Err(WalletError::UnknownAccount(ref a)) if a.as_str() == "ghost"
    ));
    assert!(matches!(
        w.transfer(&req("t-4", "a0", "a0", 1)).await,
        Err(WalletError::SameAccount(_))
    ));
    w.open_account(&acct("eur"), Currency::Eur, balance(5))
        .await
        .expect("opens");
    assert!(matches!(
        w.transfer(&req("t-5", "a0", "eur", 1)).await,
        Err(WalletError::CurrencyMismatch { .. })
    ));
    assert!(matches!(
        w.open_account(&acct("a0"), Currency::Usd, balance(7)).await,
        Err(WalletError::AccountConflict(_))
    ));
    assert_eq!((bal(&w, "a0").await, bal(&w, "a1").await), (40, 160));
    assert!(w
        .transfer_by_id(&r.id)
        .await
        .expect("read")
        .is_some_and(|t| t.matches(&r)));
    w.ping().await.expect("ready");
    drop_schema(&opts).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_two_wallets_racing_on_one_id_debit_once_and_conserve_money() {
    let Some(opts) = pg("pg_two_wallets_racing_on_one_id_debit_once_and_conserve_money").await
    else {
        return;
    };
    let one = Arc::new(pg_wallet(&opts, 4, 1_000).await);
    let two = Arc::new(PgWallet::open(&opts).await.expect("second opens"));
    let mut tasks = Vec::new();
    for i in 0..40u64 {
        for w in [&one, &two] {
            let w = Arc::clone(w);
            tasks.push(tokio::spawn(async move {
                // Same id from both instances, and crossing directions to provoke lock order issues.
                let same = w.transfer(&req(&format!("p-{i}"), "a0", "a1", 5)).await;
                let cross = w
                    .transfer(&req(
                        &format!("x-{i}-{}", Arc::as_ptr(&w) as usize),
                        &format!("a{}", 2 + i % 2),
                        &format!("a{}", 3 - i % 2),
                        1 + i % 7,
                    ))
                    .await;
                (same, cross)
            }));
        }
    }
    let mut created = 0;
    for t in tasks {
        let (same, cross) = t.await.expect("task");
        if let TransferOutcome::Created(_) = same.expect("applies") {
            created += 1;
        }
        cross.expect("cross transfer applies");
    }
    assert_eq!(created, 40);
    assert_eq!(bal(&one, "a0").await, 1_000 - 200);
    let mut total = 0;
    for i in 0..4 {
        total += bal(&one, &format!("a{i}")).await;
    }
    assert_eq!(total, 4_000);
    drop_schema(&opts).await;
}

#[tokio::test]
async fn pg_payments_move_by_compare_and_set_and_succeed_with_their_outbox_row() {
    let Some(opts) = pg("pg_payments_move_by_compare_and_set").await else {
        return;
    };
    let s = PgPayments::open(&opts).await.expect("opens");
    let new = NewPayment {
        id: PaymentId::new_v7(),
        idempotency_key: IdempotencyKey::try_from("k-1").expect("key"),
        fingerprint: Fingerprint::of(&["k-1"]),
        account_id: acct("cust-1"),
        merchant_account_id: acct("merchant-0"),
        amount: amount(100),
        currency: Currency::Usd,
        description: None,
    };
    let Begin::Created(p, lease) = s.begin(new.clone(), &owner(), TTL).await.expect("begins")
    else {
        panic!("created")
    };
    assert!(matches!(
        s.begin(new, &owner(), TTL).await,
        Ok(Begin::Existing { ref payment, lease: None }) if payment.id == p.id
    ));
    let step = |from, to| s.advance(p.id, from, to, StepNote::default(), &lease);
    step(PaymentStatus::Received, PaymentStatus::FraudChecked)
        .await
        .expect("checked");
    assert!(matches!(
        step(PaymentStatus::Received, PaymentStatus::Failed).await,
        Err(PaymentStoreError::StaleState {
            actual: PaymentStatus::FraudChecked,
            ..
        })
    ));
    step(PaymentStatus::FraudChecked, PaymentStatus::Debited)
        .await
        .expect("debited");
    let m = OutboxMessage {
        id: p.id.notification_id(),
        payment_id: p.id,
        account_id: p.account_id.clone(),
        message: "paid".to_owned(),
        attempts: 0,
        next_attempt_at_ms: 0,
        delivered_at_ms: None,
        last_error: None,
    };
    assert_eq!(
        s.succeed(p.id, m.clone(), &lease)
            .await
            .expect("succeeds")
            .status,
        PaymentStatus::Succeeded
    );
    assert!(matches!(
        s.succeed(p.id, m.clone(), &lease).await,
        Err(PaymentStoreError::StaleState { .. })
    ));
    assert_eq!(s.outbox_due(1, 10).await.expect("due"), vec![m.clone()]);
    let claimed = s.claim_outbox(&owner(), TTL, 10).await.expect("claims");
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].0, m);
    s.outbox_retry_later(&m.id, &claimed[0].1, 1, Duration::from_secs(60), "down")
        .await
        .expect("later");
    assert!(s
        .claim_outbox(&owner(), TTL, 10)
        .await
        .expect("claims")
        .is_empty());
    let due = s.outbox_due(i64::MAX, 10).await.expect("due");
    assert_eq!(
        (due[0].attempts, due[0].last_error.as_deref()),
        (1, Some("down"))
    );
    s.outbox_delivered(&m.id, 60).await.expect("delivered");
    assert_eq!(s.outbox_pending().await.expect("count"), 0);
    assert!(s.unfinished(10).await.expect("read").is_empty());
    drop_schema(&opts).await;
}

#[tokio::test]
async fn pg_inbox_stores_a_notification_once() {
    let Some(opts) = pg("pg_inbox_stores_a_notification_once").await else {
        return;
    };
    let inbox = PgInbox::open(&opts).await.expect("opens");
    let p = PaymentId::new_v7();
    let n = Notification {
        id: p.notification_id(),
        payment_id: p,
        account_id: acct("cust-1"),
        message: "paid".to_owned(),
        received_at_ms: 1,
    };
    assert_eq!(
        inbox.deliver(n.clone()).await.expect("stored"),
        Delivery::Stored(n.clone())
    );
    let mut again = n.clone();
    again.received_at_ms = 2;
    assert_eq!(
        inbox.deliver(again).await.expect("dup"),
        Delivery::Duplicate(n.clone())
    );
    let mut other = n.clone();
    other.message = "other".to_owned();
    assert!(matches!(
        inbox.deliver(other).await,
        Err(InboxError::Conflict(_))
    ));
    assert_eq!(
        inbox.list(&acct("cust-1"), 10).await.expect("list"),
        vec![n]
    );
    drop_schema(&opts).await;
}

/// On a current-thread runtime every transfer below is queued before the writer task runs, so
/// they form one batch: one transaction, decided in order.
#[tokio::test]
async fn pg_one_batch_decides_in_order_replays_a_repeated_id_and_refuses_alone() {
    let Some(opts) = pg("pg_one_batch_decides_in_order").await else {
        return;
    };
    let w = pg_wallet(&opts, 3, 100).await;
    let batch = [
        req("b-1", "a0", "a1", 60),
        // The same id again in the same batch: a replay of the first, no second debit.
        req("b-1", "a0", "a1", 60),
        // Same id, another body: a conflict with the first.
        req("b-1", "a0", "a2", 60),
        // a0 has 40 left after b-1: refused, alone.
        req("b-2", "a0", "a2", 41),
        // ...and 40 is exactly enough.
        req("b-3", "a0", "a2", 40),
        req("b-4", "a1", "a2", 160),
        req("b-5", "a0", "ghost", 1),
    ];
    let answers = futures::future::join_all(batch.iter().map(|r| w.transfer(r))).await;
    assert!(
        matches!(answers[0], Ok(TransferOutcome::Created(_))),
        "{answers:?}"
    );
    assert!(
        matches!(answers[1], Ok(TransferOutcome::Replayed(_))),
        "{answers:?}"
    );
    assert!(
        matches!(answers[2], Err(WalletError::IdempotencyConflict(_))),
        "{answers:?}"
    );
    assert!(
        matches!(answers[3], Err(WalletError::InsufficientFunds { .. })),
        "{answers:?}"
    );
    assert!(
        matches!(answers[4], Ok(TransferOutcome::Created(_))),
        "{answers:?}"
    );
    assert!(
        matches!(answers[5], Ok(TransferOutcome::Created(_))),
        "{answers:?}"
    );
    assert!(
        matches!(answers[6], Err(WalletError::UnknownAccount(_))),
        "{answers:?}"
    );
    let balances = (
        bal(&w, "a0").await,
        bal(&w, "a1").await,
        bal(&w, "a2").await,
    );
    assert_eq!(balances, (0, 0, 300));
    let entries: i64 = count_in(&opts, "entries").await;
    assert_eq!(
        entries,
        2 * 3,
        "two entries per applied transfer, none for the others"
    );
    drop_schema(&opts).await;
}

async fn count_in(opts: &PgOptions, table: &str) -> i64 {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&opts.url)
        .await
        .expect("connects");
    let schema = opts.schema.as_deref().expect("schema");
    sqlx::query_scalar(&format!("SELECT count(*) FROM {schema}.{table}"))
        .fetch_one(&pool)
        .await
        .expect("counts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_two_wallets_crediting_one_merchant_in_batches_conserve_money_and_never_deadlock() {
    let Some(opts) = pg("pg_two_wallets_crediting_one_merchant").await else {
        return;
    };
    const CUSTOMERS: usize = 30;
    const EACH: u64 = 12;
    let one = Arc::new(pg_wallet(&opts, CUSTOMERS + 1, 1_000).await);
    let two = Arc::new(PgWallet::open(&opts).await.expect("second opens"));
    let mut tasks = Vec::new();
    for c in 1..=CUSTOMERS {
        for i in 0..EACH {
            let w = Arc::clone(if (c + i as usize).is_multiple_of(2) {
                &one
            } else {
                &two
            });
            tasks.push(tokio::spawn(async move {
                // Every transfer credits a0 (the merchant); some also pay a neighbour back, so
                // batches lock overlapping sets of accounts from both sides.
                let id = format!("m-{c}-{i}");
                let main = w.transfer(&req(&id, &format!("a{c}"), "a0", 3)).await;
                let next = 1 + c % CUSTOMERS;
                let side = w
                    .transfer(&req(
                        &format!("s-{c}-{i}"),
                        &format!("a{next}"),
                        &format!("a{c}"),
                        1,
                    ))
                    .await;
                (main, side)
            }));
        }
    }
    for t in tasks {
        let (main, side) = t.await.expect("joined");
        assert!(matches!(main, Ok(TransferOutcome::Created(_))), "{main:?}");
        assert!(matches!(side, Ok(TransferOutcome::Created(_))), "{side:?}");
    }
    let n = (CUSTOMERS as u64) * EACH;
    assert_eq!(bal(&one, "a0").await, 1_000 + 3 * n);
    let mut total = 0;
    for i in 0..=CUSTOMERS {
        total += bal(&one, &format!("a{i}")).await;
    }
    assert_eq!(total, 1_000 * (CUSTOMERS as u64 + 1), "money is conserved");
    assert_eq!(count_in(&opts, "transfers").await, 2 * n as i64);
    assert_eq!(count_in(&opts, "entries").await, 4 * n as i64);
    drop_schema(&opts).await;
}

#[tokio::test]
async fn pg_a_thousand_accounts_open_in_one_transaction_all_or_nothing() {
    let Some(opts) = pg("pg_a_thousand_accounts_open_in_one_transaction").await else {
        return;
    };
    let w = PgWallet::open(&opts).await.expect("opens");
    let seed: Vec<_> = (0..1_002)
        .map(|i| (acct(&format!("seed-{i:04}")), Currency::Usd, balance(1_000)))
        .collect();
    let opened = w.open_accounts(seed.clone()).await.expect("opens all");
    assert_eq!(opened.len(), 1_002);
    assert_eq!(opened[7].id, acct("seed-0007"));
    // Opening the same seed again is a no-op.
    w.open_accounts(seed.clone()).await.expect("idempotent");
    assert_eq!(count_in(&opts, "accounts").await, 1_002);
    // One conflicting account refuses the whole call: the new accounts beside it are not opened.
    let mut clash = vec![(acct("fresh-1"), Currency::Usd, balance(5))];
    clash.push((acct("seed-0001"), Currency::Usd, balance(999)));
    let err = w.open_accounts(clash).await.expect_err("conflicts");
    assert!(
        matches!(&err, WalletError::AccountConflict(a) if a.as_str() == "seed-0001"),
        "{err:?}"
    );
    assert!(w.account(&acct("fresh-1")).await.expect("reads").is_none());
    drop_schema(&opts).await;
}
