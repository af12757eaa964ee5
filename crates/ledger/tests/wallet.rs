//! The SQLite wallet against the ledger's rules: idempotency, no negative balances, conservation.

mod common;

use std::sync::Arc;

use common::*;
use finpay_core::{Currency, TransferId};
use finpay_ledger::sqlite::SqliteWallet;
use finpay_ledger::wallet::{TransferOutcome, WalletError, WalletStore};
use proptest::prelude::*;

#[tokio::test]
async fn a_transfer_moves_money_and_a_replay_changes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let w = wallet_with(dir.path(), 2, 1_000).await;
    let r = req("t-1", "a0", "a1", 300);
    let first = w.transfer(&r).await.expect("applies");
    assert!(matches!(first, TransferOutcome::Created(_)));
    let again = w.transfer(&r).await.expect("replays");
    assert_eq!(again, TransferOutcome::Replayed(first.transfer().clone()));
    assert_eq!(balance_of(&w, "a0").await, 700);
    assert_eq!(balance_of(&w, "a1").await, 1_300);
    let stored = w
        .transfer_by_id(&r.id)
        .await
        .expect("read")
        .expect("stored");
    assert!(stored.matches(&r));
}

#[tokio::test]
async fn the_same_id_with_another_body_is_a_conflict_and_changes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let w = wallet_with(dir.path(), 3, 1_000).await;
    w.transfer(&req("t-1", "a0", "a1", 300))
        .await
        .expect("applies");
    for other in [
        req("t-1", "a0", "a1", 301),
        req("t-1", "a0", "a2", 300),
        req("t-1", "a2", "a1", 300),
    ] {
        let err = w.transfer(&other).await.expect_err("conflict");
        assert!(
            matches!(err, WalletError::IdempotencyConflict(ref id) if id.as_str() == "t-1"),
            "{err:?}"
        );
    }
    assert_eq!(balance_of(&w, "a0").await, 700);
    assert_eq!(balance_of(&w, "a1").await, 1_300);
    assert_eq!(balance_of(&w, "a2").await, 1_000);
}

#[tokio::test]
async fn insufficient_funds_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let w = wallet_with(dir.path(), 2, 100).await;
    let r = req("t-1", "a0", "a1", 101);
    let err = w.transfer(&r).await.expect_err("refused");
    match err {
        WalletError::InsufficientFunds {
            account,
            balance,
            amount,
        } => {
            assert_eq!(account.as_str(), "a0");
            assert_eq!(balance.minor(), 100);
            assert_eq!(amount.minor(), 101);
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(balance_of(&w, "a0").await, 100);
    assert_eq!(balance_of(&w, "a1").await, 100);
    assert_eq!(w.transfer_by_id(&r.id).await.expect("read"), None);
    // The refused id is not burnt: once funds suffice, the same id applies.
    let exact = req("t-1", "a0", "a1", 100);
    assert!(matches!(
        w.transfer(&exact).await,
        Ok(TransferOutcome::Created(_))
    ));
    assert_eq!(balance_of(&w, "a0").await, 0);
}

#[tokio::test]
async fn an_unknown_account_is_named_and_nothing_changes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let w = wallet_with(dir.path(), 1, 100).await;
    let err = w
        .transfer(&req("t-1", "a0", "ghost", 10))
        .await
        .expect_err("unknown credit");
    assert!(matches!(err, WalletError::UnknownAccount(ref a) if a.as_str() == "ghost"));
    let err = w
        .transfer(&req("t-2", "nobody", "a0", 10))
        .await
        .expect_err("unknown debit");
    assert!(matches!(err, WalletError::UnknownAccount(ref a) if a.as_str() == "nobody"));
    assert_eq!(balance_of(&w, "a0").await, 100);
}

#[tokio::test]
async fn a_currency_mismatch_and_a_self_transfer_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let w = wallet_with(dir.path(), 1, 100).await;
    w.open_account(&acct("eur"), Currency::Eur, balance(100))
        .await
        .expect("opens");
    let err = w
        .transfer(&req("t-1", "a0", "eur", 10))
        .await
        .expect_err("mismatch");
    assert!(
        matches!(err, WalletError::CurrencyMismatch { ref account, account_currency: Currency::Eur, transfer_currency: Currency::Usd } if account.as_str() == "eur"),
        "{err:?}"
    );
    let err = w
        .transfer(&req("t-2", "a0", "a0", 10))
        .await
        .expect_err("same account");
    assert!(matches!(err, WalletError::SameAccount(_)));
    assert_eq!(balance_of(&w, "a0").await, 100);
    assert_eq!(balance_of(&w, "eur").await, 100);
}

#[tokio::test]
async fn opening_an_account_is_idempotent_and_a_different_seed_conflicts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let w = wallet_with(dir.path(), 2, 100).await;
    w.transfer(&req("t-1", "a0", "a1", 40))
        .await
        .expect("applies");
    // Re-seeding after activity keeps the live balance.
    let again = w
        .open_account(&acct("a0"), Currency::Usd, balance(100))
        .await
        .expect("same seed is a no-op");
    assert_eq!(again.balance.minor(), 60);
    let err = w
        .open_account(&acct("a0"), Currency::Usd, balance(5))
        .await
        .expect_err("different opening");
    assert!(matches!(err, WalletError::AccountConflict(_)));
    let err = w
        .open_account(&acct("a0"), Currency::Eur, balance(100))
        .await
        .expect_err("different currency");
    assert!(matches!(err, WalletError::AccountConflict(_)));
    let seeded = w
        .open_accounts(vec![
            (acct("b0"), Currency::Usd, balance(1)),
            (acct("b1"), Currency::Usd, balance(2)),
        ])
        .await
        .expect("batch seed");
    assert_eq!(seeded.len(), 2);
    assert_eq!(balance_of(&w, "b1").await, 2);
}

#[tokio::test]
async fn the_ledger_survives_reopening_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let w = wallet_with(dir.path(), 2, 100).await;
        w.transfer(&req("t-1", "a0", "a1", 30))
            .await
            .expect("applies");
    }
    let w = SqliteWallet::open(&dir.path().join("wallet.db"), &fast())
        .await
        .expect("reopens");
    assert_eq!(balance_of(&w, "a0").await, 70);
    assert!(matches!(
        w.transfer(&req("t-1", "a0", "a1", 30)).await,
        Ok(TransferOutcome::Replayed(_))
    ));
    w.ping().await.expect("ready");
}

/// Many tasks, many transfers in one batch: failures (overdrafts) are undone alone by their savepoint
/// while the others commit; the total is conserved and nothing goes negative.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_transfers_never_go_negative_and_conserve_the_total() {
    const ACCOUNTS: usize = 6;
    const OPENING: u64 = 500;
    let dir = tempfile::tempdir().expect("tempdir");
    let w = Arc::new(wallet_with(dir.path(), ACCOUNTS, OPENING).await);
    let mut tasks = Vec::new();
    for task in 0..32u64 {
        let w = Arc::clone(&w);
        tasks.push(tokio::spawn(async move {
            let mut created = 0u32;
            let mut refused = 0u32;
            for i in 0..25u64 {
                let from = ((task + i) % ACCOUNTS as u64) as usize;
                let to = ((task * 7 + i * 3 + 1) % ACCOUNTS as u64) as usize;
                if from == to {
                    continue;
                }
                let r = req(
                    &format!("t-{task}-{i}"),
                    &format!("a{from}"),
                    &format!("a{to}"),
                    1 + (task * 31 + i * 17) % 400,
                );
                match w.transfer(&r).await {
                    Ok(TransferOutcome::Created(_)) => created += 1,
                    Err(WalletError::InsufficientFunds { .. }) => refused += 1,
                    other => panic!("unexpected {other:?}"),
                }
            }
            (created, refused)
        }));
    }
    let mut created = 0;
    let mut refused = 0;
    for t in tasks {
        let (c, r) = t.await.expect("task finished");
        created += c;
        refused += r;
    }
    assert!(
        created > 0 && refused > 0,
        "{created} created, {refused} refused: both paths exercised"
    );
    assert_eq!(total(&w, ACCOUNTS).await, ACCOUNTS as u64 * OPENING);
}

/// Two wallet replicas (two connections, two writers, like two processes) racing on the same
/// transfer id: exactly one debit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_wallets_on_one_file_apply_the_same_transfer_exactly_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let one = Arc::new(wallet_with(dir.path(), 2, 1_000_000).await);
    let two = Arc::new(
        SqliteWallet::open(&dir.path().join("wallet.db"), &fast())
            .await
            .expect("second opens"),
    );
    let mut tasks = Vec::new();
    for round in 0..50 {
        for (k, w) in [&one, &two, &one, &two].into_iter().enumerate() {
            let w = Arc::clone(w);
            tasks.push(tokio::spawn(async move {
                let id = format!("pay-{round}");
                // Alternate the direction of other traffic so the two writers contend.
                let noise = req(&format!("n-{round}-{k}"), "a1", "a0", 1);
                let same = req(&id, "a0", "a1", 10);
                let (same, _) = tokio::join!(w.transfer(&same), w.transfer(&noise));
                same
            }));
        }
    }
    let mut created = 0;
    let mut replayed = 0;
    for t in tasks {
        match t.await.expect("task finished").expect("transfer applies") {
            TransferOutcome::Created(_) => created += 1,
            TransferOutcome::Replayed(_) => replayed += 1,
        }
    }
    assert_eq!(created, 50, "exactly one debit per id");
    assert_eq!(replayed, 150);
    // 50 debits of 10 one way, 200 noise transfers of 1 the other way.
    assert_eq!(balance_of(&one, "a0").await, 1_000_000 - 500 + 200);
    assert_eq!(balance_of(&two, "a1").await, 1_000_000 + 500 - 200);
}

/// Two processes opening a fresh file at the same moment both succeed and share one schema.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_opens_of_a_fresh_file_at_once_both_succeed() {
    for _ in 0..5 {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("nested").join("wallet.db");
        let (fast, full) = (fast(), Default::default());
        let (a, b) = tokio::join!(
            SqliteWallet::open(&path, &fast),
            SqliteWallet::open(&path, &full)
        );
        let (a, b) = (a.expect("first opens"), b.expect("second opens"));
        a.open_account(&acct("x"), Currency::Usd, balance(5))
            .await
            .expect("opens");
        assert!(b.account(&acct("x")).await.expect("read").is_some());
    }
}

#[derive(Debug, Clone)]
struct Op {
    id: u8,
    from: usize,
    to: usize,
    minor: u64,
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(
        (0u8..40, 0usize..4, 0usize..4, 1u64..600).prop_map(|(id, from, to, minor)| Op {
            id,
            from,
            to,
            minor,
        }),
        1..60,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Against a model: the store agrees with a plain in-memory ledger on every outcome and balance,
    /// the total is conserved and no balance goes negative. Reused ids exercise replay and conflict.
    #[test]
    fn random_transfer_sequences_match_the_model(seq in ops()) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        rt.block_on(async {
            let dir = tempfile::tempdir().expect("tempdir");
            let w = wallet_with(dir.path(), 4, 1_000).await;
            let mut model = [1_000i64; 4];
            let mut seen: std::collections::HashMap<u8, (usize, usize, u64)> = Default::default();
            // Submit concurrently (so batches form) but check in order of submission: the writer
            // applies in queue order.
            let futs: Vec<_> = seq.iter().map(|op| {
                let w = w.clone();
                let r = req(&format!("t{}", op.id), &format!("a{}", op.from), &format!("a{}", op.to), op.minor);
                tokio::spawn(async move { w.transfer(&r).await })
            }).collect();
            let mut results = Vec::new();
            for f in futs {
                results.push(f.await.expect("task"));
            }
            // Tasks reach the queue in any order, so which overdraft is refused is not predictable;
            // what is: each id is created at most once with one body, and the balances are the
            // opening balances moved by exactly the created transfers.
            for (op, res) in seq.iter().zip(&results) {
                match res {
                    Ok(TransferOutcome::Created(t)) => {
                        prop_assert!(seen.insert(op.id, (op.from, op.to, op.minor)).is_none(), "created twice: {:?}", t.id);
                        model[op.from] -= op.minor as i64;
                        model[op.to] += op.minor as i64;
                    }
                    Ok(TransferOutcome::Replayed(_)) => {}
                    Err(WalletError::IdempotencyConflict(_)) | Err(WalletError::InsufficientFunds { .. }) | Err(WalletError::SameAccount(_)) => {}
                    Err(other) => prop_assert!(false, "unexpected {other:?}"),
                }
            }
            for op in &seq {
                let res = w.transfer_by_id(&TransferId::try_from(format!("t{}", op.id)).expect("id")).await.expect("read");
                match (seen.get(&op.id), res) {
                    (Some(&(f, t, m)), Some(stored)) => {
                        prop_assert_eq!(stored.debit_account_id.as_str(), format!("a{f}"));
                        prop_assert_eq!(stored.credit_account_id.as_str(), format!("a{t}"));
                        prop_assert_eq!(stored.amount.minor(), m);
                    }
                    (None, None) => {}
                    (a, b) => prop_assert!(false, "model {a:?} vs store {b:?}"),
                }
            }
            for (i, expected) in model.iter().enumerate() {
                prop_assert!(*expected >= 0, "a{i} went negative in the model: {expected}");
                prop_assert_eq!(balance_of(&w, &format!("a{i}")).await as i64, *expected);
            }
            prop_assert_eq!(total(&w, 4).await, 4_000);
            Ok(())
        })?;
    }
}

/// Another process holds the write lock for longer than the busy timeout: the transfer waits and
/// retries instead of failing, and applies once the lock is released.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_lock_held_past_the_busy_timeout_is_waited_out_not_reported() {
    use sqlx::{ConnectOptions, Connection};
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("wallet.db");
    let opts = finpay_ledger::sqlite::SqliteOptions {
        busy_timeout: std::time::Duration::from_millis(50),
        ..fast()
    };
    let w = SqliteWallet::open(&path, &opts).await.expect("opens");
    for i in 0..2 {
        w.open_account(&acct(&format!("a{i}")), Currency::Usd, balance(100))
            .await
            .expect("opens");
    }
    let mut other = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(&path)
        .connect()
        .await
        .expect("other connection");
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut other)
        .await
        .expect("takes the write lock");
    let transfer = {
        let w = w.clone();
        tokio::spawn(async move { w.transfer(&req("t-1", "a0", "a1", 10)).await })
    };
    // Several busy timeouts pass while the lock is held.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(
        !transfer.is_finished(),
        "the transfer must wait for the lock"
    );
    sqlx::query("COMMIT")
        .execute(&mut other)
        .await
        .expect("releases");
    other.close().await.expect("closes");
    let outcome = transfer
        .await
        .expect("task")
        .expect("applied after the wait");
    assert!(matches!(outcome, TransferOutcome::Created(_)));
    assert_eq!(balance_of(&w, "a0").await, 90);
}
