//! Versioned migrations: a database the previous build made (its DDL kept in `tests/fixtures/`)
//! upgrades in place and keeps its rows; a database a newer build migrated refuses to open, naming
//! the file or schema, the version found and the newest this build knows; two opens of one fresh
//! file at once apply each migration once. PostgreSQL halves print a note and pass when no server
//! answers (`FINPAY_TEST_PG_URL`).

mod common;

use std::time::Duration;

use common::*;
use finpay_core::{Currency, PaymentStatus, TransferId};
use finpay_ledger::payments::{LeaseOwner, PaymentStore};
use finpay_ledger::postgres::{PgOpenError, PgOptions, PgPayments};
use finpay_ledger::sqlite::{OpenError, SqliteOptions, SqlitePayments, SqliteWallet};
use finpay_ledger::wallet::WalletStore;
use sqlx::{Connection, SqliteConnection};

const OLD_SQLITE_PAYMENTS: &str = include_str!("fixtures/sqlite_payments_unversioned.sql");
const OLD_SQLITE_WALLET: &str = include_str!("fixtures/sqlite_wallet_unversioned.sql");
const OLD_POSTGRES_PAYMENTS: &str = include_str!("fixtures/postgres_payments_unversioned.sql");

/// The newest payments version this build knows (`migrations/*/payments/`).
const PAYMENTS_NEWEST: i64 = 2002;

const PAYMENT_ID: &str = "0190f3a0-0000-7000-8000-000000000001";

/// Rows as the previous build wrote them: one unfinished payment, one succeeded with its
/// delivered outbox row.
fn old_payment_rows() -> String {
    format!(
        "INSERT INTO payments VALUES ('{PAYMENT_ID}', 'old-key', 'ff', 'cust-1', 'merchant-0', \
             100, 'USD', NULL, 'fraud_checked', NULL, {f}, 1, 2); \
         INSERT INTO payments VALUES ('0190f3a0-0000-7000-8000-000000000002', 'old-done', 'ff', \
             'cust-1', 'merchant-0', 200, 'USD', 'tea', 'succeeded', NULL, {f}, 1, 3); \
         INSERT INTO outbox VALUES ('ntf-old', '0190f3a0-0000-7000-8000-000000000002', 'cust-1', \
             'paid', 1, 5, 9, NULL, 3);",
        f = "{false}"
    )
}

async fn sqlite_file(path: &std::path::Path, sql: &str) {
    let url = format!("sqlite://{}?mode=rwc", path.display());
    let mut conn = SqliteConnection::connect(&url).await.expect("opens");
    sqlx::raw_sql(sql).execute(&mut conn).await.expect("runs");
    conn.close().await.expect("closes");
}

#[tokio::test]
async fn a_sqlite_payments_file_of_the_previous_build_upgrades_and_keeps_its_rows() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("payments.db");
    let rows = old_payment_rows().replace("{false}", "0");
    sqlite_file(
        &path,
        &format!("{OLD_SQLITE_PAYMENTS}\nPRAGMA user_version = 1;\n{rows}"),
    )
    .await;
    let s = SqlitePayments::open(&path, &fast())
        .await
        .expect("upgrades");
    let id = PAYMENT_ID.parse().expect("id");
    let kept = s.get(id).await.expect("reads").expect("kept");
    assert_eq!(
        (kept.status, kept.amount_minor.minor()),
        (PaymentStatus::FraudChecked, 100)
    );
    assert_eq!(s.outbox_pending().await.expect("counts"), 0);
    // The old unfinished payment has an expired lease (token 0): the resumer takes it at once.
    let owner = LeaseOwner::try_from("upgraded").expect("owner");
    let taken = s.take_expired(&owner, TTL, 10).await.expect("takes");
    assert_eq!(taken.len(), 1);
    assert_eq!((taken[0].0.id, taken[0].1.token), (id, 1));
    drop(s);
    // Reopening applies nothing twice; the pragma records the newest version.
    SqlitePayments::open(&path, &fast()).await.expect("reopens");
    let mut conn = SqliteConnection::connect(&format!("sqlite://{}", path.display()))
        .await
        .expect("opens");
    let versions: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations ORDER BY version")
            .fetch_all(&mut conn)
            .await
            .expect("reads");
    assert_eq!(versions, vec![2001, PAYMENTS_NEWEST]);
    let pragma: i64 = sqlx::query_scalar("PRAGMA user_version")
        .fetch_one(&mut conn)
        .await
        .expect("reads");
    assert_eq!(pragma, PAYMENTS_NEWEST);
}

#[tokio::test]
async fn a_sqlite_wallet_file_of_the_previous_build_upgrades_and_keeps_its_rows() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("wallet.db");
    sqlite_file(
        &path,
        &format!(
            "{OLD_SQLITE_WALLET}\nPRAGMA user_version = 1;\n\
             INSERT INTO accounts VALUES ('a0', 'USD', 70, 100, 1), ('a1', 'USD', 30, 0, 1); \
             INSERT INTO transfers VALUES ('t-old', 'a0', 'a1', 30, 'USD', 2); \
             INSERT INTO entries VALUES ('t-old', 'a0', 'debit', 30), ('t-old', 'a1', 'credit', 30);"
        ),
    )
    .await;
    let w = SqliteWallet::open(&path, &fast()).await.expect("upgrades");
    assert_eq!(balance_of(&w, "a0").await, 70);
    let t = TransferId::try_from("t-old").expect("id");
    assert!(w.transfer_by_id(&t).await.expect("reads").is_some());
    // And it goes on working: the old transfer replays, a new one applies.
    w.transfer(&req("t-old", "a0", "a1", 30))
        .await
        .expect("replays");
    w.transfer(&req("t-new", "a0", "a1", 5))
        .await
        .expect("applies");
    assert_eq!(total(&w, 2).await, 100);
}

#[tokio::test]
async fn a_sqlite_file_migrated_by_a_newer_build_refuses_to_open_and_says_why() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("payments.db");
    drop(SqlitePayments::open(&path, &fast()).await.expect("creates"));
    sqlite_file(
        &path,
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (2003, 'from the future', TRUE, x'00', 0)",
    )
    .await;
    let err = SqlitePayments::open(&path, &fast())
        .await
        .expect_err("a newer schema is refused");
    assert!(
        matches!(
            &err,
            OpenError::NewerSchema {
                found: 2003,
                known: PAYMENTS_NEWEST,
                ..
            }
        ),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains("payments.db") && text.contains("2003") && text.contains("2002"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opens_of_one_fresh_file_at_once_apply_each_migration_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("payments.db");
    let opens: Vec<_> = (0..4)
        .map(|_| {
            let path = path.clone();
            tokio::spawn(
                async move { SqlitePayments::open(&path, &SqliteOptions::default()).await },
            )
        })
        .collect();
    for open in opens {
        // A second application of 2002 would fail on its duplicate columns.
        open.await.expect("joined").expect("every open succeeds");
    }
    let mut conn = SqliteConnection::connect(&format!("sqlite://{}", path.display()))
        .await
        .expect("opens");
    let versions: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations ORDER BY version")
            .fetch_all(&mut conn)
            .await
            .expect("reads");
    assert_eq!(versions, vec![2001, PAYMENTS_NEWEST]);
}

/// A fresh schema on a reachable server and a pool on it, or `None` (after a note).
async fn pg_schema(test: &str) -> Option<(sqlx::PgPool, PgOptions)> {
    let url = std::env::var("FINPAY_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(2))
        .connect(&url)
        .await;
    let Ok(pool) = pool else {
        eprintln!("note: {test} skipped: no PostgreSQL answers");
        return None;
    };
    let id = finpay_core::PaymentId::new_v7().debit_transfer_id();
    let mut opts = PgOptions::new(url);
    opts.schema = Some(format!("finpay_mig_{}", &id.as_str()[4..]));
    opts.max_connections = 2;
    Some((pool, opts))
}

async fn drop_pg_schema(pool: &sqlx::PgPool, opts: &PgOptions) {
    if let Some(schema) = &opts.schema {
        let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
            .execute(pool)
            .await;
    }
}

#[tokio::test]
async fn a_postgres_schema_of_the_previous_build_upgrades_and_keeps_its_rows() {
    let Some((pool, opts)) = pg_schema("a_postgres_schema_of_the_previous_build_upgrades").await
    else {
        return;
    };
    let schema = opts.schema.clone().expect("schema");
    let rows = old_payment_rows().replace("{false}", "FALSE");
    sqlx::raw_sql(&format!(
        "CREATE SCHEMA {schema}; SET search_path TO {schema}; {OLD_POSTGRES_PAYMENTS} {rows} \
         RESET search_path;"
    ))
    .execute(&pool)
    .await
    .expect("the previous build's schema");
    let s = PgPayments::open(&opts).await.expect("upgrades");
    let id = PAYMENT_ID.parse().expect("id");
    let kept = s.get(id).await.expect("reads").expect("kept");
    assert_eq!(kept.status, PaymentStatus::FraudChecked);
    let owner = LeaseOwner::try_from("upgraded").expect("owner");
    let taken = s.take_expired(&owner, TTL, 10).await.expect("takes");
    assert_eq!(taken.len(), 1);
    assert_eq!((taken[0].0.id, taken[0].1.token), (id, 1));
    drop(s);
    // A newer build recorded a version this one does not know: refused, naming the schema.
    sqlx::query(&format!(
        "INSERT INTO {schema}._sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (2003, 'from the future', TRUE, '\\x00', 0)"
    ))
    .execute(&pool)
    .await
    .expect("a future version");
    let err = PgPayments::open(&opts)
        .await
        .expect_err("a newer schema is refused");
    assert!(
        matches!(
            &err,
            PgOpenError::NewerSchema {
                found: 2003,
                known: PAYMENTS_NEWEST,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains(&schema), "{err}");
    // The wallet in the same schema is another store: the payments version does not concern it.
    let wallet = finpay_ledger::postgres::PgWallet::open(&opts)
        .await
        .expect("the wallet opens beside it");
    wallet
        .open_account(&acct("a0"), Currency::Usd, balance(1))
        .await
        .expect("opens an account");
    drop(wallet);
    drop_pg_schema(&pool, &opts).await;
}
