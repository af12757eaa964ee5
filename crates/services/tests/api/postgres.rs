//! The payment path with the wallet, payment and notification stores on PostgreSQL
//! (`storage.backend = "postgres"`), fraud as usual. Each test gets its own PostgreSQL schema,
//! dropped afterwards. When no server answers (set `FINPAY_TEST_PG_URL`, default
//! `postgres://postgres@127.0.0.1:5432/test`), each test prints a note and passes without running.

use std::panic::AssertUnwindSafe;
use std::time::Duration;

use finpay_core::PaymentId;
use finpay_ledger::postgres::{PgOptions, PgWallet};
use finpay_services::http::{Secret, StorageBackend};
use finpay_services::{wallet, ServeError};
use futures::FutureExt;
use serde_json::Value;
use sqlx::postgres::{PgPool, PgPoolOptions};

use crate::helpers::*;

/// A fresh schema name on a reachable server, or `None` (after printing why) when PostgreSQL does
/// not answer. The note does not print the url: it may carry a password.
pub(crate) async fn pg(test: &str) -> Option<(PgPool, PgOptions)> {
    let url = std::env::var("FINPAY_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let pool = match PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(2))
        .connect(&url)
        .await
    {
        Ok(pool) => pool,
        Err(e) => {
            eprintln!("note: {test} skipped: PostgreSQL unreachable (FINPAY_TEST_PG_URL): {e}");
            return None;
        }
    };
    // A fresh uuid per test; with '-' as '_' it is a plain identifier.
    let id = PaymentId::new_v7().to_string().replace('-', "_");
    let mut opts = PgOptions::new(url);
    opts.schema = Some(format!("finpay_svc_test_{id}"));
    Some((pool, opts))
}

async fn drop_schema(pool: &PgPool, opts: &PgOptions) {
    if let Some(schema) = &opts.schema {
        let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
            .execute(pool)
            .await;
    }
}

/// Runs `body`, then drops the schema whether `body` passed or panicked.
pub(crate) async fn with_schema<F, Fut>(test: &str, body: F)
where
    F: FnOnce(PgPool, PgOptions) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let Some((pool, opts)) = pg(test).await else {
        return;
    };
    let outcome = AssertUnwindSafe(body(pool.clone(), opts.clone()))
        .catch_unwind()
        .await;
    drop_schema(&pool, &opts).await;
    pool.close().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// Points a service's storage at the test schema.
pub(crate) fn on_postgres(c: &mut finpay_services::http::CommonSettings, opts: &PgOptions) {
    c.storage.backend = StorageBackend::Postgres;
    c.storage.url = Some(Secret::new(opts.url.clone()));
    c.storage.schema = opts.schema.clone();
    c.storage.max_connections = 4;
}

async fn count(pool: &PgPool, schema: &str, table: &str) -> i64 {
    sqlx::query_scalar::<_, i64>(&format!("SELECT count(*) FROM {schema}.{table}"))
        .fetch_one(pool)
        .await
        .expect("count")
}

#[tokio::test]
async fn a_payment_succeeds_end_to_end_on_postgres() {
    with_schema(
        "a_payment_succeeds_end_to_end_on_postgres",
        |pool, opts| async move {
            let store = PgWallet::open(&opts).await.expect("wallet opens");
            store
                .open_accounts(test_accounts())
                .await
                .expect("accounts open");

            let (w, p, n) = (opts.clone(), opts.clone(), opts.clone());
            let c = Cluster::start(ClusterOpts {
                wallet: Box::new(move |s| on_postgres(&mut s.common, &w)),
                payment: Box::new(move |s| on_postgres(&mut s.common, &p)),
                notification: Box::new(move |s| on_postgres(&mut s.common, &n)),
                ..ClusterOpts::default()
            })
            .await;

            let r = c.pay("pg-1", &payment_body(1_250)).await;
            let status = r.status();
            let body = r.text().await.expect("body");
            assert_eq!(status, 201, "{body}");
            let v: Value = serde_json::from_str(&body).expect("json");
            assert_eq!(v["status"], "succeeded");
            let id = v["id"].as_str().expect("id").to_owned();

            // A retry with the same key replays the stored payment and does not debit again.
            let again = c.pay("pg-1", &payment_body(1_250)).await;
            assert_eq!(
                again
                    .headers()
                    .get("Idempotent-Replayed")
                    .and_then(|h| h.to_str().ok()),
                Some("true")
            );
            let replayed: Value = again.json().await.expect("json");
            assert_eq!(replayed["id"], id.as_str());

            assert_eq!(c.balance(CUSTOMER).await, OPENING - 1_250);
            assert_eq!(c.balance(MERCHANT).await, 1_250);
            let delivered = eventually(Duration::from_secs(10), || async {
                let n = c.notifications(CUSTOMER).await;
                (!n.is_empty()).then_some(n)
            })
            .await
            .expect("the outbox delivers the notification");
            assert_eq!(delivered.len(), 1);
            assert_eq!(delivered[0]["payment_id"], id.as_str());

            // The rows are in PostgreSQL, not in SQLite files in the data directory.
            let schema = opts.schema.as_deref().expect("schema");
            assert_eq!(count(&pool, schema, "payments").await, 1);
            assert_eq!(count(&pool, schema, "transfers").await, 1);
            assert_eq!(count(&pool, schema, "notifications").await, 1);
        },
    )
    .await;
}

#[tokio::test]
async fn a_postgres_backend_without_a_url_is_a_config_error_naming_the_field() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = wallet::Settings::default();
    s.common.data_dir = dir.path().to_path_buf();
    s.common.admin_token = Secret::new(ADMIN);
    s.common.storage.backend = StorageBackend::Postgres;
    let err = match wallet::Application::build(s).await {
        Ok(_) => panic!("a postgres backend without a url must not start"),
        Err(e) => e,
    };
    assert!(matches!(err, ServeError::Config(_)), "{err}");
    assert!(err.to_string().contains("storage.url"), "{err}");
}
