//! Two real processes (this test binary, re-executed) share one wallet file, as the two wallet
//! replicas of `finpay up` do: each id is debited exactly once, money is conserved, nobody sees a
//! busy error.

mod common;

use std::process::Command;

use common::*;
use finpay_ledger::sqlite::{SqliteInbox, SqliteOptions, SqlitePayments, SqliteWallet};
use finpay_ledger::wallet::{TransferOutcome, WalletStore};

const DB_ENV: &str = "FINPAY_LEDGER_CHILD_DB";
const ACK_ENV: &str = "FINPAY_LEDGER_CHILD_ACKS";
const ROLE_ENV: &str = "FINPAY_LEDGER_CHILD_ROLE";
const IDS: u64 = 150;

/// The child's work; a no-op (and a pass) when run as an ordinary test.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_process_entry() {
    let (Ok(db), Ok(role)) = (std::env::var(DB_ENV), std::env::var(ROLE_ENV)) else {
        return;
    };
    let w = SqliteWallet::open(std::path::Path::new(&db), &SqliteOptions::default())
        .await
        .expect("child opens the shared wallet");
    let mut tasks = Vec::new();
    for i in 0..IDS {
        let w = w.clone();
        let role = role.clone();
        tasks.push(tokio::spawn(async move {
            let same = w
                .transfer(&req(&format!("shared-{i}"), "a0", "a1", 3))
                .await;
            let noise = w
                .transfer(&req(&format!("noise-{role}-{i}"), "a1", "a0", 1))
                .await;
            (same, noise)
        }));
    }
    let mut created = 0;
    for t in tasks {
        let (same, noise) = t.await.expect("task");
        if let TransferOutcome::Created(_) = same.expect("shared-id transfer applies") {
            created += 1;
        }
        noise.expect("noise transfer applies");
    }
    println!("created={created}");
}

#[test]
fn two_processes_on_one_wallet_file_debit_each_id_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("wallet.db");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let w = wallet_with(dir.path(), 2, 1_000_000).await;
        // Empty payment and notification stores, so the audit below has all three files.
        SqlitePayments::open(&dir.path().join("payments.db"), &fast())
            .await
            .expect("payments");
        SqliteInbox::open(&dir.path().join("notifications.db"), &fast())
            .await
            .expect("inbox");
        drop(w);
    });
    let exe = std::env::current_exe().expect("test binary");
    // Both children start before either is waited for, so their writes interleave.
    let spawned: Vec<_> = ["one", "two"]
        .into_iter()
        .map(|role| {
            Command::new(&exe)
                .args(["child_process_entry", "--exact", "--nocapture"])
                .env(DB_ENV, &db)
                .env(ROLE_ENV, role)
                .stdout(std::process::Stdio::piped())
                .spawn()
                .expect("child starts")
        })
        .collect();
    let mut created = 0;
    for child in spawned {
        let out = child.wait_with_output().expect("child ends");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "child failed: {stdout}");
        created += stdout
            .lines()
            .find_map(|l| l.strip_prefix("created="))
            .and_then(|n| n.trim().parse::<u64>().ok())
            .expect("child reports its count");
    }
    assert_eq!(
        created, IDS,
        "each shared id created exactly once across both processes"
    );
    rt.block_on(async {
        let w = SqliteWallet::open(&db, &fast()).await.expect("reopens");
        // The shared debits of 3 applied once; each child's noise credits of 1 applied.
        assert_eq!(balance_of(&w, "a0").await, 1_000_000 - 3 * IDS + 2 * IDS);
        assert_eq!(total(&w, 2).await, 2_000_000);
        let report = finpay_ledger::audit::audit(dir.path())
            .await
            .expect("audits");
        assert!(report.ok, "{:#?}", report.violations);
        assert_eq!(report.transfers, IDS + 2 * IDS);
    });
}

/// The child of the crash test: transfers forever from many tasks, printing each id once the store
/// acknowledged it. A no-op when run as an ordinary test.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_acknowledging_writer() {
    use std::io::Write;
    let Ok(db) = std::env::var(ACK_ENV) else {
        return;
    };
    let w = SqliteWallet::open(std::path::Path::new(&db), &SqliteOptions::default())
        .await
        .expect("child opens the wallet");
    let mut tasks = Vec::new();
    for task in 0..32u64 {
        let w = w.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0u64.. {
                let id = format!("ack-{task}-{i}");
                let (from, to) = if i % 2 == 0 {
                    ("a0", "a1")
                } else {
                    ("a1", "a0")
                };
                w.transfer(&req(&id, from, to, 1 + i % 5))
                    .await
                    .expect("transfer applies");
                // Only now is the transfer acknowledged to the outside world.
                let mut out = std::io::stdout().lock();
                writeln!(out, "{id} {from} {to} {}", 1 + i % 5).expect("stdout");
                out.flush().expect("stdout");
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
}

/// `kill -9` of a process in the middle of a stream of writes loses nothing it acknowledged, and
/// leaves a ledger that still balances.
#[test]
fn a_killed_process_loses_no_acknowledged_transfer() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("wallet.db");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        drop(wallet_with(dir.path(), 2, 1_000_000).await);
        SqlitePayments::open(&dir.path().join("payments.db"), &fast())
            .await
            .expect("payments");
        SqliteInbox::open(&dir.path().join("notifications.db"), &fast())
            .await
            .expect("inbox");
    });
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args(["child_acknowledging_writer", "--exact", "--nocapture"])
        .env(ACK_ENV, &db)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("child starts");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut acked = Vec::new();
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line.expect("reads");
        if line.starts_with("ack-") {
            acked.push(line);
        }
        if acked.len() >= 2_000 {
            break;
        }
    }
    child.kill().expect("kill -9");
    child.wait().expect("reaped");
    assert!(acked.len() >= 2_000, "child stopped early");
    rt.block_on(async {
        let w = SqliteWallet::open(&db, &fast())
            .await
            .expect("reopens after the crash");
        for line in &acked {
            let mut parts = line.split(' ');
            let id = parts.next().expect("id");
            let t = w
                .transfer_by_id(&finpay_core::TransferId::try_from(id).expect("id"))
                .await
                .expect("reads")
                .unwrap_or_else(|| panic!("acknowledged transfer {id} lost"));
            assert_eq!(t.debit_account_id.as_str(), parts.next().expect("from"));
        }
        let report = finpay_ledger::audit::audit(dir.path())
            .await
            .expect("audits");
        assert!(report.ok, "{:#?}", report.violations);
        assert!(report.transfers >= acked.len() as u64);
        assert_eq!(total(&w, 2).await, 2_000_000);
    });
}
