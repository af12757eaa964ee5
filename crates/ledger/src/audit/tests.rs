//! The check table on both backends: the same stores, broken the same way, give the same report on
//! SQLite (through [`audit`]) and on PostgreSQL (through [`audit_postgres`] over three PostgreSQL
//! schemas). PostgreSQL is optional here, as in `tests/postgres.rs`: when no server
//! answers, the PostgreSQL half prints a note and is skipped.

use std::time::Duration;

use finpay_core::{
    AccountId, Amount, Balance, Currency, Fingerprint, IdempotencyKey, PaymentId, PaymentStatus,
};
use sqlx::postgres::PgConnection;
use sqlx::Connection;

use super::*;
use crate::files;
use crate::inbox::{InboxStore, Notification};
use crate::payments::{Begin, LeaseOwner, NewPayment, OutboxMessage, PaymentStore, StepNote};
use crate::postgres::{PgInbox, PgOptions, PgPayments, PgWallet};
use crate::sqlite::{SqliteInbox, SqliteOptions, SqlitePayments, SqliteWallet, Synchronous};
use crate::wallet::{TransferRequest, WalletStore};

#[tokio::test]
async fn a_missing_file_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let err = audit(dir.path()).await.expect_err("nothing to audit");
    assert!(matches!(err, AuditError::MissingFile { .. }));
    assert!(err.to_string().contains("wallet.db"), "{err}");
}

#[test]
fn every_check_has_its_own_name() {
    let mut names: Vec<_> = CHECKS.iter().map(|c| c.name).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), CHECKS.len());
}

fn acct(s: &str) -> AccountId {
    AccountId::try_from(s).expect("account id")
}

/// Five payments through the stores' traits, the way the payment service runs them: each debited
/// by the wallet, succeeded with its outbox row, delivered to the inbox and marked delivered.
async fn build(
    ids: &[PaymentId],
    wallet: &dyn WalletStore,
    payments: &dyn PaymentStore,
    inbox: &dyn InboxStore,
) {
    for (id, currency, minor) in [
        ("cust-1", Currency::Usd, 1_000),
        ("merchant-0", Currency::Usd, 0),
        ("eur-1", Currency::Eur, 70),
    ] {
        let opening = Balance::try_new(minor).expect("balance");
        wallet
            .open_account(&acct(id), currency, opening)
            .await
            .expect("opens");
    }
    for (i, &id) in ids.iter().enumerate() {
        let key = format!("key-{i}");
        let new = NewPayment {
            id,
            idempotency_key: IdempotencyKey::try_from(key.as_str()).expect("key"),
            fingerprint: Fingerprint::of(&[&key]),
            account_id: acct("cust-1"),
            merchant_account_id: acct("merchant-0"),
            amount: Amount::try_new(100 + i as u64).expect("amount"),
            currency: Currency::Usd,
            description: None,
        };
        let owner = LeaseOwner::try_from("audit-test").expect("owner");
        let ttl = Duration::from_secs(600);
        let Begin::Created(p, lease) = payments.begin(new, &owner, ttl).await.expect("begins")
        else {
            panic!("a fresh key")
        };
        let (received, checked) = (PaymentStatus::Received, PaymentStatus::FraudChecked);
        payments
            .advance(id, received, checked, StepNote::default(), &lease)
            .await
            .expect("fraud checked");
        let debit = TransferRequest {
            id: id.debit_transfer_id(),
            debit_account_id: p.account_id.clone(),
            credit_account_id: p.merchant_account_id.clone(),
            amount: p.amount_minor,
            currency: p.currency,
        };
        wallet.transfer(&debit).await.expect("debits");
        let message = OutboxMessage {
            id: id.notification_id(),
            payment_id: id,
            account_id: p.account_id.clone(),
            message: format!("paid {}", p.amount_minor),
            attempts: 0,
            next_attempt_at_ms: 0,
            delivered_at_ms: None,
            last_error: None,
        };
        payments
            .succeed_from(id, checked, message.clone(), &lease)
            .await
            .expect("succeeds");
        let delivered = Notification {
            id: message.id.clone(),
            payment_id: id,
            account_id: message.account_id,
            message: message.message,
            received_at_ms: 1,
        };
        inbox.deliver(delivered).await.expect("delivered");
        payments
            .outbox_delivered(&message.id, 2)
            .await
            .expect("marked");
    }
}

/// The same damage on either backend, per store, in SQL both run: at least one violation of every
/// check in [`CHECKS`] and a money total that no longer adds up.
fn damage(ids: &[PaymentId]) -> [String; 3] {
    let t = |i: usize| ids[i].debit_transfer_id();
    let o = |i: usize| ids[i].notification_id();
    let p = |i: usize| ids[i];
    [
        format!(
            "UPDATE accounts SET balance = -1 WHERE id = 'eur-1'; \
             DELETE FROM entries WHERE transfer_id = '{t0}' AND direction = 'credit'; \
             INSERT INTO transfers VALUES ('bad-1', 'cust-1', 'ghost', 3, 'USD', 0); \
             INSERT INTO entries VALUES ('orphan-1', 'nobody', 'debit', 1);",
            t0 = t(0)
        ),
        format!(
            "DELETE FROM payments WHERE id = '{p0}'; \
             UPDATE payments SET amount = amount + 1 WHERE id = '{p1}'; \
             UPDATE payments SET status = 'bogus' WHERE id = '{p2}'; \
             DELETE FROM outbox WHERE id = '{o3}'; \
             UPDATE payments SET status = 'declined', lease_owner = 'ghost' WHERE id = '{p4}'; \
             UPDATE outbox SET delivered_at_ms = NULL, attempts = -1 WHERE id = '{o1}';",
            p0 = p(0),
            p1 = p(1),
            p2 = p(2),
            o3 = o(3),
            p4 = p(4),
            o1 = o(1)
        ),
        format!(
            "DELETE FROM notifications WHERE id = '{o0}'; \
             UPDATE notifications SET message = 'changed' WHERE id = '{o2}';",
            o0 = o(0),
            o2 = o(2)
        ),
    ]
}

async fn sqlite_report(ids: &[PaymentId]) -> AuditReport {
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = SqliteOptions {
        synchronous: Synchronous::Off,
        ..SqliteOptions::default()
    };
    let files = [
        files::WALLET_DB,
        files::PAYMENTS_DB,
        files::NOTIFICATIONS_DB,
    ];
    let path = |i: usize| dir.path().join(files[i]);
    let wallet = SqliteWallet::open(&path(0), &opts).await.expect("wallet");
    let payments = SqlitePayments::open(&path(1), &opts)
        .await
        .expect("payments");
    let inbox = SqliteInbox::open(&path(2), &opts).await.expect("inbox");
    build(ids, &wallet, &payments, &inbox).await;
    for (i, sql) in damage(ids).iter().enumerate() {
        let url = format!("sqlite://{}", path(i).display());
        let mut conn = sqlx::SqliteConnection::connect(&url).await.expect("raw");
        let off = "PRAGMA foreign_keys = OFF; PRAGMA ignore_check_constraints = ON; ";
        sqlx::raw_sql(&format!("{off}{sql}"))
            .execute(&mut conn)
            .await
            .expect("damage");
        conn.close().await.expect("closes");
    }
    audit(dir.path()).await.expect("audits")
}

/// The PostgreSQL report, or `None` when no server answers.
async fn postgres_report(ids: &[PaymentId]) -> Option<AuditReport> {
    let url = std::env::var("FINPAY_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let connect = tokio::time::timeout(Duration::from_secs(2), PgConnection::connect(&url));
    let mut conn = match connect.await {
        Ok(Ok(conn)) => conn,
        other => {
            eprintln!("note: the PostgreSQL half skipped: no server at {url}: {other:?}");
            return None;
        }
    };
    let transfer_id = ids[0].debit_transfer_id();
    let unique = &transfer_id.as_str()[4..];
    let tables = Tables {
        wallet: format!("audit_w_{unique}"),
        payments: format!("audit_p_{unique}"),
        inbox: format!("audit_n_{unique}"),
    };
    let opts = |schema: &str| PgOptions {
        schema: Some(schema.to_owned()),
        ..PgOptions::new(url.clone())
    };
    let wallet = PgWallet::open(&opts(&tables.wallet)).await.expect("wallet");
    let payments = PgPayments::open(&opts(&tables.payments))
        .await
        .expect("payments");
    let inbox = PgInbox::open(&opts(&tables.inbox)).await.expect("inbox");
    build(ids, &wallet, &payments, &inbox).await;
    // PostgreSQL cannot switch CHECK constraints off: the damage drops the ones it breaks, and runs
    // as a replica so that foreign keys are not enforced.
    let drop_checks = [
        "ALTER TABLE accounts DROP CONSTRAINT accounts_balance_check;",
        "ALTER TABLE payments DROP CONSTRAINT payments_status_check; \
         ALTER TABLE outbox DROP CONSTRAINT outbox_attempts_check;",
        "",
    ];
    let schemas = [&tables.wallet, &tables.payments, &tables.inbox];
    for ((schema, checks), sql) in schemas.iter().zip(drop_checks).zip(damage(ids)) {
        let sql = format!(
            "SET search_path TO {schema}; SET session_replication_role = replica; {checks} {sql} \
             RESET session_replication_role; RESET search_path;"
        );
        sqlx::raw_sql(&sql)
            .execute(&mut conn)
            .await
            .expect("damage");
    }
    let pg_schemas = PgSchemas {
        wallet: tables.wallet.clone(),
        payments: tables.payments.clone(),
        inbox: tables.inbox.clone(),
    };
    let report = audit_postgres(&url, &pg_schemas).await;
    for schema in schemas {
        let drop = format!("DROP SCHEMA IF EXISTS {schema} CASCADE");
        let _ = sqlx::query(&drop).execute(&mut conn).await;
    }
    Some(report.expect("the checks run on PostgreSQL"))
}

#[tokio::test]
async fn the_check_table_reports_the_same_records_in_the_same_words_on_both_backends() {
    let ids: Vec<PaymentId> = (0..5).map(|_| PaymentId::new_v7()).collect();
    let sqlite = sqlite_report(&ids).await;
    // Every check found something, so the comparison below covers the whole table.
    let money_checks = CHECKS.iter().filter(|c| c.kind == Kind::Money).count();
    assert!(sqlite.violations.len() > money_checks, "{sqlite:#?}");
    assert_eq!(sqlite.delivery.violations.len(), 2, "{sqlite:#?}");
    let Some(postgres) = postgres_report(&ids).await else {
        return;
    };
    // The checks without an ORDER BY may list rows in another order on PostgreSQL.
    let comparable = |mut r: AuditReport| {
        r.ok = r.violations.is_empty();
        r.delivery.ok = r.delivery.violations.is_empty();
        r.violations.sort();
        r.delivery.violations.sort();
        r
    };
    assert_eq!(comparable(postgres), comparable(sqlite));
}

#[tokio::test]
async fn a_postgres_audit_names_a_missing_table_and_refuses_a_bad_schema_name() {
    let url = std::env::var("FINPAY_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let err = audit_postgres(&url, &PgSchemas::one("bad-name; DROP"))
        .await
        .expect_err("refused before connecting");
    assert!(matches!(err, AuditError::SchemaName(_)), "{err:?}");
    match audit_postgres(&url, &PgSchemas::one("finpay_no_such_schema")).await {
        Err(AuditError::MissingTable { schema, table }) => {
            assert_eq!(
                (schema.as_str(), table),
                ("finpay_no_such_schema", "accounts")
            );
        }
        Err(AuditError::Connect(e)) => {
            eprintln!("note: the PostgreSQL half skipped: no server: {e}");
        }
        other => panic!("a missing schema is named: {other:?}"),
    }
}
