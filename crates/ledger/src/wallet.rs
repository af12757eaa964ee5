//! The wallet ledger: accounts and double-entry transfers in integer minor units.
//!
//! The rules of a transfer are written once, here, and both backends apply them:
//!
//! - [`decide`] takes what a backend read inside its write transaction (a transfer stored under the
//!   request's id, the two accounts) and says what to do: answer a replay, refuse, or apply the
//!   transfer with two new balances. It is pure, so every branch is unit-tested below.
//! - [`check_written`] takes what the backend read back after writing, still inside the transaction,
//!   and refuses to let it commit unless the transfer is exactly one debit and one credit entry of its
//!   amount and both balances are the ones decided (TigerBeetle's pairing, checked where it is
//!   written). A failure there is a bug, reported as [`Unbalanced`] and never committed.
//!
//! A backend keeps only its I/O: read what the decision needs, call it, write, read back, check.

use async_trait::async_trait;
use finpay_core::{AccountId, Amount, Balance, Currency, TransferId};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    pub id: AccountId,
    pub currency: Currency,
    pub balance: Balance,
}

/// A transfer as the caller asks for it. `id` is the idempotency key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferRequest {
    pub id: TransferId,
    pub debit_account_id: AccountId,
    pub credit_account_id: AccountId,
    pub amount: Amount,
    pub currency: Currency,
}

impl TransferRequest {
    /// The transfer this request asks for, as committed at `created_at_ms`.
    pub fn transfer_at(&self, created_at_ms: i64) -> Transfer {
        Transfer {
            id: self.id.clone(),
            debit_account_id: self.debit_account_id.clone(),
            credit_account_id: self.credit_account_id.clone(),
            amount: self.amount,
            currency: self.currency,
            created_at_ms,
        }
    }

    /// The money rules of [`decide`], once both accounts are known: both in the transfer's
    /// currency, no overdraft on the debit side, no overflow on the credit side. Returns the two
    /// balances after the transfer.
    pub fn balances_after(
        &self,
        debit: &Account,
        credit: &Account,
    ) -> Result<(Balance, Balance), WalletError> {
        for account in [debit, credit] {
            if account.currency != self.currency {
                return Err(WalletError::CurrencyMismatch {
                    account: account.id.clone(),
                    account_currency: account.currency,
                    transfer_currency: self.currency,
                });
            }
        }
        let debit_after =
            debit
                .balance
                .debit(self.amount)
                .map_err(|_| WalletError::InsufficientFunds {
                    account: debit.id.clone(),
                    balance: debit.balance,
                    amount: self.amount,
                })?;
        let credit_after = credit
            .balance
            .credit(self.amount)
            .map_err(|_| WalletError::Overflow(credit.id.clone()))?;
        Ok((debit_after, credit_after))
    }
}

/// A committed transfer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transfer {
    pub id: TransferId,
    pub debit_account_id: AccountId,
    pub credit_account_id: AccountId,
    pub amount: Amount,
    pub currency: Currency,
    pub created_at_ms: i64,
}

impl Transfer {
    /// Whether `req` asks for exactly this transfer (same id and same body).
    pub fn matches(&self, req: &TransferRequest) -> bool {
        self.id == req.id
            && self.debit_account_id == req.debit_account_id
            && self.credit_account_id == req.credit_account_id
            && self.amount == req.amount
            && self.currency == req.currency
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransferOutcome {
    /// The transfer was applied now.
    Created(Transfer),
    /// The same transfer (same id, same body) was applied before; nothing changed.
    Replayed(Transfer),
}

impl TransferOutcome {
    pub fn transfer(&self) -> &Transfer {
        match self {
            TransferOutcome::Created(t) | TransferOutcome::Replayed(t) => t,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WalletError {
    #[error("account {0} does not exist")]
    UnknownAccount(AccountId),
    #[error("account {account} holds {account_currency}, the transfer is in {transfer_currency}")]
    CurrencyMismatch {
        account: AccountId,
        account_currency: Currency,
        transfer_currency: Currency,
    },
    #[error("account {account} has {balance} minor units, the transfer needs {amount}")]
    InsufficientFunds {
        account: AccountId,
        balance: Balance,
        amount: Amount,
    },
    #[error("a transfer cannot debit and credit the same account {0}")]
    SameAccount(AccountId),
    #[error("transfer {0} already exists with a different body")]
    IdempotencyConflict(TransferId),
    #[error("account {0} already exists with a different currency or opening balance")]
    AccountConflict(AccountId),
    #[error("credit would overflow account {0}")]
    Overflow(AccountId),
    #[error("storage failed")]
    Storage(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// One account's balance before and after a transfer. A backend that does not lock the account
/// guards its update with `before`: a balance changed under it is left alone, and [`check_written`]
/// then refuses the transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BalanceChange {
    pub before: Balance,
    pub after: Balance,
}

/// What a transfer request comes to, given what the store holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The same transfer (same id, same body) was applied before: answer it again, write nothing.
    Replay(Transfer),
    /// Write the transfer, its debit and credit entries, and these two balances.
    Apply {
        debit: BalanceChange,
        credit: BalanceChange,
    },
}

/// The transfer decision, for every backend. `existing` is the transfer stored under `req.id`, and
/// `debit` and `credit` are the accounts `req` names (`None`: no such account), all as read inside
/// the transaction that will write.
///
/// In order: a stored transfer is a replay when it matches `req` and an idempotency conflict when it
/// does not (whatever the accounts look like now); a transfer from an account to itself is refused;
/// both accounts must exist, debit side first; then [`TransferRequest::balances_after`] applies the
/// currency, overdraft and overflow rules.
pub fn decide(
    req: &TransferRequest,
    existing: Option<Transfer>,
    debit: Option<Account>,
    credit: Option<Account>,
) -> Result<Decision, WalletError> {
    if let Some(stored) = existing {
        return if stored.matches(req) {
            Ok(Decision::Replay(stored))
        } else {
            Err(WalletError::IdempotencyConflict(req.id.clone()))
        };
    }
    if req.debit_account_id == req.credit_account_id {
        return Err(WalletError::SameAccount(req.debit_account_id.clone()));
    }
    let debit = debit.ok_or_else(|| WalletError::UnknownAccount(req.debit_account_id.clone()))?;
    let credit =
        credit.ok_or_else(|| WalletError::UnknownAccount(req.credit_account_id.clone()))?;
    debug_assert_eq!(debit.id, req.debit_account_id, "the debit account read");
    debug_assert_eq!(credit.id, req.credit_account_id, "the credit account read");
    let (debit_after, credit_after) = req.balances_after(&debit, &credit)?;
    Ok(Decision::Apply {
        debit: BalanceChange {
            before: debit.balance,
            after: debit_after,
        },
        credit: BalanceChange {
            before: credit.balance,
            after: credit_after,
        },
    })
}

/// What a backend reads back after writing a transfer, inside the same transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadBack {
    /// Entries stored under the transfer's id.
    pub entries: i64,
    /// Sum of the debit entries' amounts, and of the credit entries'.
    pub debits_minor: i64,
    pub credits_minor: i64,
    /// The stored balances of the debit and the credit account (`None`: no row came back).
    pub debit_balance: Option<i64>,
    pub credit_balance: Option<i64>,
}

/// A written transfer that is not what [`decide`] asked for: a bug in a backend, never committed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unbalanced {
    #[error("transfer {id} is unbalanced after writing: {entries} entries, debits {debits}, credits {credits}, amount {amount}")]
    Entries {
        id: TransferId,
        entries: i64,
        debits: i64,
        credits: i64,
        amount: i64,
    },
    #[error("balance of {account} is not {expected} after writing transfer {id}: it changed under the write transaction")]
    Balance {
        id: TransferId,
        account: AccountId,
        expected: Balance,
    },
}

/// The pairing check both backends run after writing `transfer` with the two balance changes of
/// [`Decision::Apply`], before committing: exactly one debit and one credit entry of the amount, and
/// each account holding the balance decided for it.
pub fn check_written(
    transfer: &Transfer,
    debit: BalanceChange,
    credit: BalanceChange,
    back: &ReadBack,
) -> Result<(), Unbalanced> {
    let amount = transfer.amount.as_i64();
    if back.entries != 2 || back.debits_minor != back.credits_minor || back.debits_minor != amount {
        return Err(Unbalanced::Entries {
            id: transfer.id.clone(),
            entries: back.entries,
            debits: back.debits_minor,
            credits: back.credits_minor,
            amount,
        });
    }
    for (account, change, stored) in [
        (&transfer.debit_account_id, debit, back.debit_balance),
        (&transfer.credit_account_id, credit, back.credit_balance),
    ] {
        if stored != Some(change.after.as_i64()) {
            return Err(Unbalanced::Balance {
                id: transfer.id.clone(),
                account: account.clone(),
                expected: change.after,
            });
        }
    }
    Ok(())
}

/// One transfer a batch applies, in the batch's order: the transfer and its two balance changes,
/// each decided against the balances the transfers before it in the batch left.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub transfer: Transfer,
    pub debit: BalanceChange,
    pub credit: BalanceChange,
}

/// What a batch backend reads back for one transfer's entries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EntrySums {
    pub entries: i64,
    pub debits_minor: i64,
    pub credits_minor: i64,
}

/// [`check_written`] for a batch that writes each account's balance once, at the end: every
/// transfer's entries pair up to its amount, and each account's balance changes chain (the
/// balance one transfer leaves is the one the next transfer on that account started from) to the
/// balance stored after the batch. `entries` and `stored` are what the backend read back.
pub fn check_batch_written(
    applied: &[Applied],
    entries: &std::collections::HashMap<TransferId, EntrySums>,
    stored: &std::collections::HashMap<AccountId, i64>,
) -> Result<(), Unbalanced> {
    // The balance each account holds after each transfer, as the rest of the batch leaves it:
    // the next change's `before` on that account, or the stored balance after the last.
    let mut after_this: Vec<(Option<i64>, Option<i64>)> = vec![(None, None); applied.len()];
    let mut next_before: std::collections::HashMap<&AccountId, i64> =
        std::collections::HashMap::new();
    for (i, a) in applied.iter().enumerate().rev() {
        let t = &a.transfer;
        let left = |account: &AccountId, next: &std::collections::HashMap<&AccountId, i64>| {
            next.get(account)
                .copied()
                .or_else(|| stored.get(account).copied())
        };
        after_this[i] = (
            left(&t.debit_account_id, &next_before),
            left(&t.credit_account_id, &next_before),
        );
        next_before.insert(&t.debit_account_id, a.debit.before.as_i64());
        next_before.insert(&t.credit_account_id, a.credit.before.as_i64());
    }
    for (a, (debit_balance, credit_balance)) in applied.iter().zip(after_this) {
        let sums = entries.get(&a.transfer.id).copied().unwrap_or_default();
        let back = ReadBack {
            entries: sums.entries,
            debits_minor: sums.debits_minor,
            credits_minor: sums.credits_minor,
            debit_balance,
            credit_balance,
        };
        check_written(&a.transfer, a.debit, a.credit, &back)?;
    }
    Ok(())
}

#[async_trait]
pub trait WalletStore: Send + Sync + 'static {
    /// Opens an account with an opening balance (the seed). Idempotent: opening the same account with
    /// the same currency and opening balance again is a no-op; a different one is `AccountConflict`.
    async fn open_account(
        &self,
        id: &AccountId,
        currency: Currency,
        opening: Balance,
    ) -> Result<Account, WalletError>;

    async fn account(&self, id: &AccountId) -> Result<Option<Account>, WalletError>;

    /// Applies a transfer atomically: both entries and both balances, or nothing.
    /// Same id + same body returns `Replayed`; same id + other body is `IdempotencyConflict`.
    async fn transfer(&self, req: &TransferRequest) -> Result<TransferOutcome, WalletError>;

    async fn transfer_by_id(&self, id: &TransferId) -> Result<Option<Transfer>, WalletError>;

    /// Succeeds when the store can be read and written; backs `/health/ready`.
    async fn ping(&self) -> Result<(), WalletError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acct(id: &str) -> AccountId {
        AccountId::try_from(id).expect("account id")
    }

    fn account(id: &str, currency: Currency, minor: u64) -> Option<Account> {
        Some(Account {
            id: acct(id),
            currency,
            balance: Balance::try_new(minor).expect("balance"),
        })
    }

    fn bal(minor: u64) -> Balance {
        Balance::try_new(minor).expect("balance")
    }

    fn req(minor: u64) -> TransferRequest {
        TransferRequest {
            id: TransferId::try_from("tr-1").expect("transfer id"),
            debit_account_id: acct("alice"),
            credit_account_id: acct("bob"),
            amount: Amount::try_new(minor).expect("amount"),
            currency: Currency::Usd,
        }
    }

    fn alice(minor: u64) -> Option<Account> {
        account("alice", Currency::Usd, minor)
    }

    fn bob(minor: u64) -> Option<Account> {
        account("bob", Currency::Usd, minor)
    }

    fn change(before: u64, after: u64) -> BalanceChange {
        BalanceChange {
            before: bal(before),
            after: bal(after),
        }
    }

    #[test]
    fn a_transfer_between_two_funded_accounts_is_applied_with_both_new_balances() {
        let d = decide(&req(30), None, alice(100), bob(5)).expect("applies");
        assert_eq!(
            d,
            Decision::Apply {
                debit: change(100, 70),
                credit: change(5, 35),
            }
        );
    }

    #[test]
    fn the_whole_balance_may_be_spent() {
        let d = decide(&req(100), None, alice(100), bob(0)).expect("applies");
        assert_eq!(
            d,
            Decision::Apply {
                debit: change(100, 0),
                credit: change(0, 100),
            }
        );
    }

    #[test]
    fn a_stored_transfer_with_the_same_body_is_a_replay_whatever_the_accounts_hold_now() {
        let stored = req(30).transfer_at(7);
        // Even with no accounts read, or an account that could no longer pay, a replay is a replay.
        for (debit, credit) in [(None, None), (alice(0), bob(0))] {
            let d = decide(&req(30), Some(stored.clone()), debit, credit).expect("replays");
            assert_eq!(d, Decision::Replay(stored.clone()));
        }
    }

    #[test]
    fn a_stored_transfer_with_another_body_is_an_idempotency_conflict() {
        let stored = req(30).transfer_at(7);
        let other_bodies = [
            req(31),
            TransferRequest {
                currency: Currency::Eur,
                ..req(30)
            },
            TransferRequest {
                credit_account_id: acct("carol"),
                ..req(30)
            },
            TransferRequest {
                debit_account_id: acct("carol"),
                ..req(30)
            },
        ];
        for other in other_bodies {
            let e =
                decide(&other, Some(stored.clone()), alice(100), bob(0)).expect_err("conflicts");
            assert!(
                matches!(&e, WalletError::IdempotencyConflict(id) if id.as_str() == "tr-1"),
                "{e:?}"
            );
        }
    }

    #[test]
    fn a_transfer_to_the_same_account_is_refused_before_the_accounts_are_looked_at() {
        let r = TransferRequest {
            credit_account_id: acct("alice"),
            ..req(10)
        };
        let e = decide(&r, None, None, None).expect_err("refused");
        assert!(
            matches!(&e, WalletError::SameAccount(a) if a.as_str() == "alice"),
            "{e:?}"
        );
    }

    #[test]
    fn a_missing_account_is_named_debit_side_first() {
        let e = decide(&req(10), None, None, None).expect_err("unknown");
        assert!(
            matches!(&e, WalletError::UnknownAccount(a) if a.as_str() == "alice"),
            "{e:?}"
        );
        let e = decide(&req(10), None, alice(100), None).expect_err("unknown");
        assert!(
            matches!(&e, WalletError::UnknownAccount(a) if a.as_str() == "bob"),
            "{e:?}"
        );
    }

    #[test]
    fn an_account_in_another_currency_is_named_debit_side_first() {
        let eur_alice = account("alice", Currency::Eur, 100);
        let eur_bob = account("bob", Currency::Eur, 0);
        let e = decide(&req(10), None, eur_alice, eur_bob.clone()).expect_err("mismatch");
        assert!(
            matches!(&e, WalletError::CurrencyMismatch { account, account_currency: Currency::Eur, transfer_currency: Currency::Usd } if account.as_str() == "alice"),
            "{e:?}"
        );
        let e = decide(&req(10), None, alice(100), eur_bob).expect_err("mismatch");
        assert!(
            matches!(&e, WalletError::CurrencyMismatch { account, .. } if account.as_str() == "bob"),
            "{e:?}"
        );
    }

    #[test]
    fn an_overdraft_is_insufficient_funds_with_the_balance_and_the_amount() {
        let e = decide(&req(101), None, alice(100), bob(0)).expect_err("overdraft");
        assert!(
            matches!(&e, WalletError::InsufficientFunds { account, balance, amount } if account.as_str() == "alice" && balance.minor() == 100 && amount.minor() == 101),
            "{e:?}"
        );
    }

    #[test]
    fn a_credit_past_the_largest_balance_is_an_overflow() {
        let full = bob(Amount::MAX_MINOR);
        let e = decide(&req(1), None, alice(100), full).expect_err("overflow");
        assert!(
            matches!(&e, WalletError::Overflow(a) if a.as_str() == "bob"),
            "{e:?}"
        );
    }

    fn good_read_back() -> ReadBack {
        ReadBack {
            entries: 2,
            debits_minor: 30,
            credits_minor: 30,
            debit_balance: Some(70),
            credit_balance: Some(35),
        }
    }

    fn check(back: ReadBack) -> Result<(), Unbalanced> {
        check_written(
            &req(30).transfer_at(7),
            change(100, 70),
            change(5, 35),
            &back,
        )
    }

    #[test]
    fn a_transfer_written_as_decided_passes_the_pairing_check() {
        assert_eq!(check(good_read_back()), Ok(()));
    }

    #[test]
    fn entries_that_do_not_pair_up_to_the_amount_are_unbalanced() {
        let broken = [
            ReadBack {
                entries: 1,
                credits_minor: 0,
                ..good_read_back()
            },
            ReadBack {
                entries: 3,
                ..good_read_back()
            },
            ReadBack {
                credits_minor: 29,
                ..good_read_back()
            },
            ReadBack {
                debits_minor: 31,
                credits_minor: 31,
                ..good_read_back()
            },
        ];
        for back in broken {
            let e = check(back).expect_err("unbalanced");
            assert!(matches!(e, Unbalanced::Entries { .. }), "{e:?}");
            assert!(
                e.to_string()
                    .starts_with("transfer tr-1 is unbalanced after writing"),
                "{e}"
            );
        }
    }

    fn applied(id: &str, from: &str, to: &str, debit: (u64, u64), credit: (u64, u64)) -> Applied {
        let r = TransferRequest {
            id: TransferId::try_from(id).expect("transfer id"),
            debit_account_id: acct(from),
            credit_account_id: acct(to),
            amount: Amount::try_new(debit.0 - debit.1).expect("amount"),
            currency: Currency::Usd,
        };
        Applied {
            transfer: r.transfer_at(7),
            debit: change(debit.0, debit.1),
            credit: change(credit.0, credit.1),
        }
    }

    fn sums(amount: i64) -> EntrySums {
        EntrySums {
            entries: 2,
            debits_minor: amount,
            credits_minor: amount,
        }
    }

    #[test]
    fn a_batch_whose_balances_chain_to_the_stored_ones_passes() {
        // alice pays bob 30, then bob pays carol 10, then alice pays carol 5.
        let batch = [
            applied("t1", "alice", "bob", (100, 70), (5, 35)),
            applied("t2", "bob", "carol", (35, 25), (0, 10)),
            applied("t3", "alice", "carol", (70, 65), (10, 15)),
        ];
        let entries = [("t1", 30), ("t2", 10), ("t3", 5)]
            .map(|(id, a)| (TransferId::try_from(id).expect("id"), sums(a)))
            .into();
        let stored = [("alice", 65), ("bob", 25), ("carol", 15)]
            .map(|(id, b)| (acct(id), b))
            .into();
        assert_eq!(check_batch_written(&batch, &entries, &stored), Ok(()));

        // A stored balance that is not where the chain ends is named, on the last transfer that
        // touched it.
        let mut wrong = stored.clone();
        wrong.insert(acct("carol"), 16);
        let e = check_batch_written(&batch, &entries, &wrong).expect_err("lost update");
        assert!(
            matches!(&e, Unbalanced::Balance { id, account, .. } if id.as_str() == "t3" && account.as_str() == "carol"),
            "{e:?}"
        );
        // A chain with a gap (t2 decided from a balance t1 did not leave) is refused.
        let mut gap = batch.clone();
        gap[1] = applied("t2", "bob", "carol", (36, 26), (0, 10));
        let mut stored_gap = stored.clone();
        stored_gap.insert(acct("bob"), 26);
        let e = check_batch_written(&gap, &entries, &stored_gap).expect_err("gap");
        assert!(
            matches!(&e, Unbalanced::Balance { id, account, .. } if id.as_str() == "t1" && account.as_str() == "bob"),
            "{e:?}"
        );
        // A transfer whose entries did not come back is unbalanced.
        let mut missing = entries.clone();
        missing.remove(&TransferId::try_from("t2").expect("id"));
        let e = check_batch_written(&batch, &missing, &stored).expect_err("no entries");
        assert!(matches!(e, Unbalanced::Entries { .. }), "{e:?}");
    }

    #[test]
    fn a_balance_other_than_the_decided_one_is_named() {
        for (back, who) in [
            (
                ReadBack {
                    debit_balance: Some(71),
                    ..good_read_back()
                },
                "alice",
            ),
            (
                ReadBack {
                    debit_balance: None,
                    ..good_read_back()
                },
                "alice",
            ),
            (
                ReadBack {
                    credit_balance: Some(5),
                    ..good_read_back()
                },
                "bob",
            ),
        ] {
            let e = check(back).expect_err("lost update");
            assert!(
                matches!(&e, Unbalanced::Balance { account, .. } if account.as_str() == who),
                "{e:?}"
            );
        }
    }
}
