//! `finpay check` on PostgreSQL while the cluster runs: two wallet replicas (both taking writes)
//! and two payment replicas, each store in its own schema, audited from one snapshot again and
//! again while payments go on, and once more when they are done. Skipped with a note when no
//! PostgreSQL answers.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use finpay_ledger::audit::{audit_postgres, PgSchemas};
use finpay_ledger::postgres::{PgOptions, PgWallet};
use finpay_resilience::client::BalanceStrategy;
use futures::FutureExt;

use crate::helpers::*;
use crate::postgres::{on_postgres, pg};

const PAYMENTS: usize = 60;

fn in_schema(opts: &PgOptions, schema: &str) -> PgOptions {
    PgOptions {
        schema: Some(schema.to_owned()),
        ..opts.clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_two_replica_postgres_cluster_audits_clean_while_payments_go_on() {
    let test = "a_two_replica_postgres_cluster_audits_clean_while_payments_go_on";
    let Some((pool, base)) = pg(test).await else {
        return;
    };
    let root = base.schema.clone().expect("schema");
    let schemas = PgSchemas {
        wallet: format!("{root}_w"),
        payments: format!("{root}_p"),
        inbox: format!("{root}_n"),
    };
    let outcome = AssertUnwindSafe(run(&base, &schemas)).catch_unwind().await;
    for schema in [&schemas.wallet, &schemas.payments, &schemas.inbox] {
        let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
            .execute(&pool)
            .await;
    }
    pool.close().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

async fn run(base: &PgOptions, schemas: &PgSchemas) {
    let (w, p, n) = (
        in_schema(base, &schemas.wallet),
        in_schema(base, &schemas.payments),
        in_schema(base, &schemas.inbox),
    );
    PgWallet::open(&w)
        .await
        .expect("wallet opens")
        .open_accounts(test_accounts())
        .await
        .expect("seeded");
    let dir = tempfile::tempdir().expect("tempdir");
    let fraud = spawn_fraud(dir.path(), |_| {}).await;
    let mut wallets = Vec::new();
    for _ in 0..2 {
        let w = w.clone();
        wallets.push(spawn_wallet(dir.path(), move |s| on_postgres(&mut s.common, &w)).await);
    }
    let notification = {
        let n = n.clone();
        spawn_notification(dir.path(), move |s| on_postgres(&mut s.common, &n)).await
    };
    let mut payments = Vec::new();
    for name in ["payment-a", "payment-b"] {
        let mut s = payment_settings(dir.path(), &fraud.url, &wallets[0].url, &notification.url);
        // Both wallet replicas take writes: PostgreSQL has no single-writer file to protect.
        s.wallet.urls = wallets.iter().map(|w| w.url.clone()).collect();
        s.wallet.client.balancer.strategy = BalanceStrategy::P2cEwma;
        s.payment.replica = Some(name.to_owned());
        on_postgres(&mut s.common, &p);
        payments.push(spawn_payment(s).await);
    }
    let http = client();
    let done = Arc::new(AtomicBool::new(false));
    let mut load = Vec::new();
    for t in 0..4 {
        let (http, done) = (http.clone(), Arc::clone(&done));
        let urls: Vec<String> = payments.iter().map(|p| p.url.clone()).collect();
        load.push(tokio::spawn(async move {
            for i in (t..PAYMENTS).step_by(4) {
                let r = http
                    .post(format!("{}/v1/payments", urls[i % 2]))
                    .header("Idempotency-Key", format!("audit-live-{i}"))
                    .json(&payment_body(100 + i as u64))
                    .send()
                    .await
                    .expect("sent");
                assert_eq!(r.status(), 201, "payment {i}");
            }
            done.store(true, Ordering::Relaxed);
        }));
    }
    // Audited while the payments go on: every snapshot is consistent.
    let mut audits = 0;
    while !load.iter().all(|t| t.is_finished()) || audits == 0 {
        let report = audit_postgres(&base.url, schemas).await.expect("audits");
        assert!(report.ok, "{:#?}", report.violations);
        assert!(report.delivery.ok, "{:#?}", report.delivery.violations);
        audits += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for t in load {
        t.await.expect("load task");
    }
    assert!(done.load(Ordering::Relaxed));
    // Once every notification is delivered, the whole report adds up.
    let settled = eventually(Duration::from_secs(20), || async {
        let r = audit_postgres(&base.url, schemas).await.ok()?;
        (r.outbox_pending == 0 && r.notifications == PAYMENTS as u64).then_some(r)
    })
    .await
    .expect("every notification is delivered");
    assert!(settled.ok && settled.delivery.ok, "{settled:#?}");
    assert_eq!(settled.payments, PAYMENTS as u64);
    assert_eq!(
        settled.payments_by_status.get("succeeded"),
        Some(&(PAYMENTS as u64))
    );
    assert_eq!(settled.transfers, PAYMENTS as u64);
    assert_eq!(settled.entries, 2 * PAYMENTS as u64);
    assert_eq!(settled.outbox_delivered, PAYMENTS as u64);
    eprintln!("audited {audits} times while payments went on");
}
