//! The audit's checks, one table: each is a query whose every row is a violation, and the words that
//! describe one such row.
//!
//! Adding a check is two small functions here and one entry in [`CHECKS`]. The SQL must run on both
//! SQLite and PostgreSQL (see [`super::sql`]): tables through the [`Scope`]'s `Tables`, and every
//! selected column `CAST(... AS TEXT)`, so a row reaches `describe` as text (`None` for NULL). The
//! order of [`CHECKS`] is the order of the report.

use finpay_core::PaymentStatus;

use super::sql::{Scope, DEBIT_TRANSFER_ID_SQL, PAYMENT_ID_OF_TRANSFER_SQL};

/// One row of a check's result, every column as text (`None`: SQL NULL).
pub(crate) type Row = [Option<String>];

/// Which report a check's violations go to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A money invariant: any violation makes [`AuditReport::ok`](super::AuditReport::ok) false.
    Money,
    /// A delivery invariant, reported apart in [`DeliveryReport`](super::DeliveryReport): a lost
    /// notification is not lost money.
    Delivery,
}

/// One named audit check.
pub(crate) struct Check {
    /// Names the check in query errors and in the line that counts the violations not listed.
    pub name: &'static str,
    pub kind: Kind,
    /// The query; each row it returns is one violation.
    pub sql: fn(&Scope) -> String,
    /// The report's words for one violating row.
    pub describe: fn(&Row) -> String,
}

use Kind::{Delivery, Money};

/// Every check, in the order of the report: the wallet, then payments against the wallet, then the
/// outbox against the inbox.
pub(crate) const CHECKS: &[Check] = &[
    Check {
        name: "negative balance",
        kind: Money,
        sql: negative_balance_sql,
        describe: negative_balance,
    },
    Check {
        name: "unbalanced transfer",
        kind: Money,
        sql: unbalanced_transfer_sql,
        describe: unbalanced_transfer,
    },
    Check {
        name: "invalid transfer",
        kind: Money,
        sql: invalid_transfer_sql,
        describe: invalid_transfer,
    },
    Check {
        name: "orphan entry",
        kind: Money,
        sql: orphan_entry_sql,
        describe: orphan_entry,
    },
    Check {
        name: "account balance",
        kind: Money,
        sql: account_balance_sql,
        describe: account_balance,
    },
    Check {
        name: "entry on unknown account",
        kind: Money,
        sql: entry_on_unknown_account_sql,
        describe: entry_on_unknown_account,
    },
    Check {
        name: "payment state",
        kind: Money,
        sql: payment_state_sql,
        describe: payment_state,
    },
    Check {
        name: "missing or wrong debit",
        kind: Money,
        sql: missing_or_wrong_debit_sql,
        describe: missing_or_wrong_debit,
    },
    Check {
        name: "debit without success",
        kind: Money,
        sql: debit_without_success_sql,
        describe: debit_without_success,
    },
    Check {
        name: "debit without payment",
        kind: Money,
        sql: debit_without_payment_sql,
        describe: debit_without_payment,
    },
    Check {
        name: "terminal payment holds a lease",
        kind: Money,
        sql: terminal_payment_holds_a_lease_sql,
        describe: terminal_payment_holds_a_lease,
    },
    Check {
        name: "outbox row state",
        kind: Money,
        sql: outbox_row_state_sql,
        describe: outbox_row_state,
    },
    Check {
        name: "outbox without success",
        kind: Money,
        sql: outbox_without_success_sql,
        describe: outbox_without_success,
    },
    Check {
        name: "succeeded without one outbox row",
        kind: Money,
        sql: succeeded_without_one_outbox_row_sql,
        describe: succeeded_without_one_outbox_row,
    },
    Check {
        name: "delivered but not in inbox",
        kind: Delivery,
        sql: delivered_but_not_in_inbox_sql,
        describe: delivered_but_not_in_inbox,
    },
    Check {
        name: "inbox differs from outbox",
        kind: Delivery,
        sql: inbox_differs_from_outbox_sql,
        describe: inbox_differs_from_outbox,
    },
];

/// Column `i` of a row as the report shows it: the text, or `NULL`.
fn col(row: &Row, i: usize) -> &str {
    debug_assert!(i < row.len(), "column {i} of a {}-column row", row.len());
    row.get(i).and_then(Option::as_deref).unwrap_or("NULL")
}

fn statuses<const N: usize>(list: [PaymentStatus; N]) -> String {
    PaymentStatus::sql_list(list)
}

// ---- wallet

fn negative_balance_sql(s: &Scope) -> String {
    let wallet = &s.tables.wallet;
    format!(
        "SELECT CAST(id AS TEXT), CAST(balance AS TEXT) FROM {wallet}.accounts \
         WHERE balance < 0 OR opening_balance < 0"
    )
}

fn negative_balance(r: &Row) -> String {
    format!("account {}: negative balance {}", col(r, 0), col(r, 1))
}

fn unbalanced_transfer_sql(s: &Scope) -> String {
    let wallet = &s.tables.wallet;
    format!(
        "SELECT CAST(t.id AS TEXT), CAST(t.amount AS TEXT), CAST(t.debit_account_id AS TEXT), \
                CAST(t.credit_account_id AS TEXT), CAST(COUNT(e.transfer_id) AS TEXT), \
                CAST(COALESCE(SUM(CASE WHEN e.direction = 'debit' THEN 1 ELSE 0 END), 0) AS TEXT), \
                CAST(COALESCE(SUM(CASE WHEN e.direction = 'credit' THEN 1 ELSE 0 END), 0) AS TEXT) \
         FROM {wallet}.transfers t LEFT JOIN {wallet}.entries e ON e.transfer_id = t.id \
         GROUP BY t.id \
         HAVING COUNT(e.transfer_id) <> 2 \
             OR COALESCE(SUM(CASE WHEN e.direction = 'debit' AND e.account_id = t.debit_account_id \
                                   AND e.amount = t.amount THEN 1 ELSE 0 END), 0) <> 1 \
             OR COALESCE(SUM(CASE WHEN e.direction = 'credit' AND e.account_id = t.credit_account_id \
                                   AND e.amount = t.amount THEN 1 ELSE 0 END), 0) <> 1"
    )
}

fn unbalanced_transfer(r: &Row) -> String {
    format!(
        "transfer {}: unbalanced: {} entries ({} debit, {} credit); expected one debit of {} from {} and one credit of {} to {}",
        col(r, 0), col(r, 4), col(r, 5), col(r, 6), col(r, 1), col(r, 2), col(r, 1), col(r, 3)
    )
}

fn invalid_transfer_sql(s: &Scope) -> String {
    let wallet = &s.tables.wallet;
    format!(
        "SELECT CAST(t.id AS TEXT), CAST(t.amount AS TEXT), CAST(t.debit_account_id AS TEXT), \
                CAST(t.credit_account_id AS TEXT), CAST(t.currency AS TEXT), \
                CAST(COALESCE(a.currency, 'missing') AS TEXT), CAST(COALESCE(b.currency, 'missing') AS TEXT) \
         FROM {wallet}.transfers t \
         LEFT JOIN {wallet}.accounts a ON a.id = t.debit_account_id \
         LEFT JOIN {wallet}.accounts b ON b.id = t.credit_account_id \
         WHERE t.amount <= 0 OR t.debit_account_id = t.credit_account_id \
            OR a.id IS NULL OR b.id IS NULL OR a.currency <> t.currency OR b.currency <> t.currency"
    )
}

fn invalid_transfer(r: &Row) -> String {
    format!(
        "transfer {}: invalid: amount {} {} from {} ({}) to {} ({})",
        col(r, 0),
        col(r, 1),
        col(r, 4),
        col(r, 2),
        col(r, 5),
        col(r, 3),
        col(r, 6)
    )
}

fn orphan_entry_sql(s: &Scope) -> String {
    let wallet = &s.tables.wallet;
    format!(
        "SELECT CAST(e.transfer_id AS TEXT), CAST(e.direction AS TEXT), CAST(e.account_id AS TEXT) \
         FROM {wallet}.entries e LEFT JOIN {wallet}.transfers t ON t.id = e.transfer_id \
         WHERE t.id IS NULL"
    )
}

fn orphan_entry(r: &Row) -> String {
    format!(
        "entry {} {} on account {}: its transfer does not exist",
        col(r, 0),
        col(r, 1),
        col(r, 2)
    )
}

fn account_balance_sql(s: &Scope) -> String {
    let wallet = &s.tables.wallet;
    format!(
        "SELECT CAST(a.id AS TEXT), CAST(a.balance AS TEXT), CAST(a.opening_balance AS TEXT), \
                CAST(COALESCE(d.total, 0) AS TEXT), CAST(COALESCE(c.total, 0) AS TEXT), \
                CAST(a.opening_balance - COALESCE(d.total, 0) + COALESCE(c.total, 0) AS TEXT) \
         FROM {wallet}.accounts a \
         LEFT JOIN (SELECT account_id, SUM(amount) AS total FROM {wallet}.entries \
                    WHERE direction = 'debit' GROUP BY account_id) d ON d.account_id = a.id \
         LEFT JOIN (SELECT account_id, SUM(amount) AS total FROM {wallet}.entries \
                    WHERE direction = 'credit' GROUP BY account_id) c ON c.account_id = a.id \
         WHERE a.balance <> a.opening_balance - COALESCE(d.total, 0) + COALESCE(c.total, 0)"
    )
}

fn account_balance(r: &Row) -> String {
    format!(
        "account {}: balance {} but opening {} - debits {} + credits {} = {}",
        col(r, 0),
        col(r, 1),
        col(r, 2),
        col(r, 3),
        col(r, 4),
        col(r, 5)
    )
}

fn entry_on_unknown_account_sql(s: &Scope) -> String {
    let wallet = &s.tables.wallet;
    format!(
        "SELECT CAST(e.transfer_id AS TEXT), CAST(e.direction AS TEXT), CAST(e.account_id AS TEXT) \
         FROM {wallet}.entries e LEFT JOIN {wallet}.accounts a ON a.id = e.account_id \
         WHERE a.id IS NULL"
    )
}

fn entry_on_unknown_account(r: &Row) -> String {
    format!(
        "entry {} {}: account {} does not exist",
        col(r, 0),
        col(r, 1),
        col(r, 2)
    )
}

// ---- payments, and payments against the wallet

fn payment_state_sql(s: &Scope) -> String {
    let payments = &s.tables.payments;
    format!(
        "SELECT CAST(id AS TEXT), CAST(status AS TEXT) FROM {payments}.payments \
         WHERE status IS NULL OR status NOT IN ({})",
        PaymentStatus::sql_list(PaymentStatus::ALL)
    )
}

fn payment_state(r: &Row) -> String {
    format!(
        "payment {}: status {:?} is neither terminal nor resumable",
        col(r, 0),
        col(r, 1)
    )
}

fn missing_or_wrong_debit_sql(s: &Scope) -> String {
    let (wallet, payments) = (&s.tables.wallet, &s.tables.payments);
    format!(
        "SELECT CAST(p.id AS TEXT), CAST(p.status AS TEXT), CAST(p.account_id AS TEXT), \
                CAST(p.merchant_account_id AS TEXT), CAST(p.amount AS TEXT), CAST(p.currency AS TEXT), \
                CAST(t.id AS TEXT), CAST(t.debit_account_id AS TEXT), CAST(t.credit_account_id AS TEXT), \
                CAST(t.amount AS TEXT), CAST(t.currency AS TEXT) \
         FROM {payments}.payments p LEFT JOIN {wallet}.transfers t ON t.id = {DEBIT_TRANSFER_ID_SQL} \
         WHERE p.status IN ({}) \
           AND (t.id IS NULL OR t.debit_account_id <> p.account_id \
                OR t.credit_account_id <> p.merchant_account_id \
                OR t.amount <> p.amount OR t.currency <> p.currency)",
        statuses([PaymentStatus::Debited, PaymentStatus::Succeeded])
    )
}

fn missing_or_wrong_debit(r: &Row) -> String {
    let (id, status) = (col(r, 0), col(r, 1));
    let has_transfer = r.get(6).is_some_and(Option::is_some);
    if !has_transfer {
        return format!("payment {id}: {status} but has no debit transfer");
    }
    format!(
        "payment {id}: {status} for {} {} from {} to {}, but its debit transfer {} moved {} {} from {} to {}",
        col(r, 4), col(r, 5), col(r, 2), col(r, 3),
        col(r, 6), col(r, 9), col(r, 10), col(r, 7), col(r, 8)
    )
}

fn debit_without_success_sql(s: &Scope) -> String {
    let (wallet, payments) = (&s.tables.wallet, &s.tables.payments);
    format!(
        "SELECT CAST(p.id AS TEXT), CAST(p.status AS TEXT), CAST(t.id AS TEXT) \
         FROM {payments}.payments p JOIN {wallet}.transfers t ON t.id = {DEBIT_TRANSFER_ID_SQL} \
         WHERE (p.status IN ({}) \
                OR (p.status IN ({}) AND t.created_at_ms < {snapshot_ms}))",
        statuses([PaymentStatus::Declined, PaymentStatus::Failed]),
        statuses([PaymentStatus::Received]),
        snapshot_ms = s.payments_snapshot_ms,
    )
}

fn debit_without_success(r: &Row) -> String {
    format!(
        "payment {}: {} but was debited by transfer {}",
        col(r, 0),
        col(r, 1),
        col(r, 2)
    )
}

fn debit_without_payment_sql(s: &Scope) -> String {
    let (wallet, payments) = (&s.tables.wallet, &s.tables.payments);
    // Listed in id order, on either backend.
    format!(
        "SELECT CAST(t.id AS TEXT), CAST(t.amount AS TEXT), CAST(t.debit_account_id AS TEXT) \
         FROM {wallet}.transfers t \
         WHERE substr(t.id, 1, 4) = 'pay-' AND {hex} \
           AND t.created_at_ms < {snapshot_ms} AND NOT EXISTS \
           (SELECT 1 FROM {payments}.payments WHERE id = {PAYMENT_ID_OF_TRANSFER_SQL}) \
         ORDER BY t.id",
        hex = s.dialect.is_hex32("substr(t.id, 5)"),
        snapshot_ms = s.payments_snapshot_ms,
    )
}

fn debit_without_payment(r: &Row) -> String {
    format!(
        "transfer {}: debits {} from {} for a payment that does not exist",
        col(r, 0),
        col(r, 1),
        col(r, 2)
    )
}

/// Every write that makes a payment terminal clears its lease in the same statement, so a terminal
/// payment with a lease owner is a broken write, never a race with a running driver.
fn terminal_payment_holds_a_lease_sql(s: &Scope) -> String {
    let payments = &s.tables.payments;
    format!(
        "SELECT CAST(id AS TEXT), CAST(status AS TEXT), CAST(lease_owner AS TEXT) \
         FROM {payments}.payments WHERE status IN ({}) AND lease_owner IS NOT NULL",
        statuses([
            PaymentStatus::Succeeded,
            PaymentStatus::Declined,
            PaymentStatus::Failed
        ])
    )
}

fn terminal_payment_holds_a_lease(r: &Row) -> String {
    format!(
        "payment {}: {} but still leased to {}",
        col(r, 0),
        col(r, 1),
        col(r, 2)
    )
}

fn outbox_row_state_sql(s: &Scope) -> String {
    let payments = &s.tables.payments;
    format!(
        "SELECT CAST(id AS TEXT), CAST(attempts AS TEXT), CAST(next_attempt_at_ms AS TEXT) \
         FROM {payments}.outbox \
         WHERE delivered_at_ms IS NULL \
           AND (next_attempt_at_ms IS NULL OR attempts IS NULL OR attempts < 0)"
    )
}

fn outbox_row_state(r: &Row) -> String {
    format!(
        "outbox {}: neither delivered nor pending (attempts {}, next attempt {})",
        col(r, 0),
        col(r, 1),
        col(r, 2)
    )
}

fn outbox_without_success_sql(s: &Scope) -> String {
    let payments = &s.tables.payments;
    format!(
        "SELECT CAST(o.id AS TEXT), CAST(o.payment_id AS TEXT), CAST(COALESCE(p.status, 'missing') AS TEXT) \
         FROM {payments}.outbox o LEFT JOIN {payments}.payments p ON p.id = o.payment_id \
         WHERE p.id IS NULL OR p.status NOT IN ({})",
        statuses([PaymentStatus::Succeeded])
    )
}

fn outbox_without_success(r: &Row) -> String {
    format!(
        "outbox {}: its payment {} is {}, not succeeded",
        col(r, 0),
        col(r, 1),
        col(r, 2)
    )
}

fn succeeded_without_one_outbox_row_sql(s: &Scope) -> String {
    let payments = &s.tables.payments;
    format!(
        "SELECT CAST(p.id AS TEXT), CAST(COUNT(o.id) AS TEXT) \
         FROM {payments}.payments p LEFT JOIN {payments}.outbox o ON o.payment_id = p.id \
         WHERE p.status IN ({}) GROUP BY p.id HAVING COUNT(o.id) <> 1",
        statuses([PaymentStatus::Succeeded])
    )
}

fn succeeded_without_one_outbox_row(r: &Row) -> String {
    format!(
        "payment {}: succeeded with {} outbox rows, expected exactly 1",
        col(r, 0),
        col(r, 1)
    )
}

// ---- delivery: the outbox against the inbox

fn delivered_but_not_in_inbox_sql(s: &Scope) -> String {
    let (payments, inbox) = (&s.tables.payments, &s.tables.inbox);
    format!(
        "SELECT CAST(o.id AS TEXT), CAST(o.payment_id AS TEXT) \
         FROM {payments}.outbox o LEFT JOIN {inbox}.notifications x ON x.id = o.id \
         WHERE o.delivered_at_ms IS NOT NULL AND x.id IS NULL"
    )
}

fn delivered_but_not_in_inbox(r: &Row) -> String {
    format!(
        "outbox {} (payment {}): marked delivered but absent from the inbox",
        col(r, 0),
        col(r, 1)
    )
}

fn inbox_differs_from_outbox_sql(s: &Scope) -> String {
    let (payments, inbox) = (&s.tables.payments, &s.tables.inbox);
    format!(
        "SELECT CAST(o.id AS TEXT) \
         FROM {payments}.outbox o JOIN {inbox}.notifications x ON x.id = o.id \
         WHERE x.payment_id <> o.payment_id OR x.account_id <> o.account_id \
            OR x.message <> o.message"
    )
}

fn inbox_differs_from_outbox(r: &Row) -> String {
    format!(
        "notification {}: the inbox holds a different payment, account or message than the outbox",
        col(r, 0)
    )
}
