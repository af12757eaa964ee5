//! Stored rows back into domain values, written once for both backends.
//!
//! The SQLite and PostgreSQL stores keep the same columns under the same names; only the row types
//! differ (and a flag is an integer in SQLite, a `boolean` in PostgreSQL). [`Columns`] is the little
//! each row type must offer, and the decoders below validate every value on the way in: a row that
//! does not decode (a bad id, a negative amount, an unknown status) is a [`CorruptRow`] naming the
//! column and the row, never a panic and never a silently wrong value.

use finpay_core::{AccountId, Amount, Fingerprint, IdempotencyKey, NotificationId, TransferId};
use sqlx::postgres::PgRow;
use sqlx::sqlite::SqliteRow;
use sqlx::Row;

use crate::error::BoxError;
use crate::inbox::Notification;
use crate::payments::{OutboxMessage, Payment};
use crate::wallet::Transfer;

/// A stored value that does not parse back into its domain type: the file or table was changed
/// behind the store's back. Reported as a storage failure, never papered over.
#[derive(Debug, thiserror::Error)]
#[error("corrupt {what} in row {row}: {detail}")]
pub struct CorruptRow {
    pub what: &'static str,
    pub row: String,
    pub detail: String,
}

pub(crate) fn corrupt(
    what: &'static str,
    row: impl std::fmt::Display,
    detail: impl std::fmt::Display,
) -> CorruptRow {
    CorruptRow {
        what,
        row: row.to_string(),
        detail: detail.to_string(),
    }
}

/// The column reads the decoders need.
pub(crate) trait Columns {
    fn text(&self, col: &str) -> Result<String, sqlx::Error>;
    fn opt_text(&self, col: &str) -> Result<Option<String>, sqlx::Error>;
    fn int(&self, col: &str) -> Result<i64, sqlx::Error>;
    fn opt_int(&self, col: &str) -> Result<Option<i64>, sqlx::Error>;
    fn flag(&self, col: &str) -> Result<bool, sqlx::Error>;
}

macro_rules! columns {
    ($row:ty, |$r:ident, $c:ident| $flag:expr) => {
        impl Columns for $row {
            fn text(&self, col: &str) -> Result<String, sqlx::Error> {
                self.try_get(col)
            }
            fn opt_text(&self, col: &str) -> Result<Option<String>, sqlx::Error> {
                self.try_get(col)
            }
            fn int(&self, col: &str) -> Result<i64, sqlx::Error> {
                self.try_get(col)
            }
            fn opt_int(&self, col: &str) -> Result<Option<i64>, sqlx::Error> {
                self.try_get(col)
            }
            fn flag(&self, col: &str) -> Result<bool, sqlx::Error> {
                let ($r, $c) = (self, col);
                $flag
            }
        }
    };
}

columns!(SqliteRow, |row, col| row
    .try_get::<i64, _>(col)
    .map(|v| v != 0));
columns!(PgRow, |row, col| row.try_get::<bool, _>(col));

/// The `bad(what, error)` helper of one row: a [`CorruptRow`] naming the row's id.
fn bad_in(id: &str) -> impl Fn(&'static str, &dyn std::fmt::Display) -> BoxError + '_ {
    move |what, e| Box::new(corrupt(what, id, e))
}

/// A `payments` row.
pub(crate) fn payment(row: &impl Columns) -> Result<Payment, BoxError> {
    let id = row.text("id")?;
    let bad = bad_in(&id);
    Ok(Payment {
        idempotency_key: IdempotencyKey::try_from(row.text("idempotency_key")?)
            .map_err(|e| bad("idempotency key", &e))?,
        fingerprint: Fingerprint::from_hex(row.text("fingerprint")?),
        account_id: AccountId::try_from(row.text("account_id")?)
            .map_err(|e| bad("account id", &e))?,
        merchant_account_id: AccountId::try_from(row.text("merchant_account_id")?)
            .map_err(|e| bad("merchant account id", &e))?,
        amount_minor: Amount::try_from_i64(row.int("amount")?).map_err(|e| bad("amount", &e))?,
        currency: row
            .text("currency")?
            .parse()
            .map_err(|e| bad("currency", &e))?,
        description: row.opt_text("description")?,
        status: row
            .text("status")?
            .parse()
            .map_err(|e: String| bad("status", &e))?,
        reason: row.opt_text("reason")?,
        needs_review: row.flag("needs_review")?,
        created_at_ms: row.int("created_at_ms")?,
        updated_at_ms: row.int("updated_at_ms")?,
        id: id.parse().map_err(|e| bad("payment id", &e))?,
    })
}

/// An `outbox` row.
pub(crate) fn outbox_message(row: &impl Columns) -> Result<OutboxMessage, BoxError> {
    let id = row.text("id")?;
    let bad = bad_in(&id);
    Ok(OutboxMessage {
        payment_id: row
            .text("payment_id")?
            .parse()
            .map_err(|e| bad("payment id", &e))?,
        account_id: AccountId::try_from(row.text("account_id")?)
            .map_err(|e| bad("account id", &e))?,
        message: row.text("message")?,
        attempts: u32::try_from(row.int("attempts")?).map_err(|e| bad("attempts", &e))?,
        next_attempt_at_ms: row.int("next_attempt_at_ms")?,
        delivered_at_ms: row.opt_int("delivered_at_ms")?,
        last_error: row.opt_text("last_error")?,
        id: NotificationId::try_from(id.as_str()).map_err(|e| bad("notification id", &e))?,
    })
}

/// A `transfers` row.
pub(crate) fn transfer(row: &impl Columns) -> Result<Transfer, BoxError> {
    let id = row.text("id")?;
    let bad = bad_in(&id);
    Ok(Transfer {
        debit_account_id: AccountId::try_from(row.text("debit_account_id")?)
            .map_err(|e| bad("debit account", &e))?,
        credit_account_id: AccountId::try_from(row.text("credit_account_id")?)
            .map_err(|e| bad("credit account", &e))?,
        amount: Amount::try_from_i64(row.int("amount")?).map_err(|e| bad("transfer amount", &e))?,
        currency: row
            .text("currency")?
            .parse()
            .map_err(|e| bad("transfer currency", &e))?,
        created_at_ms: row.int("created_at_ms")?,
        id: TransferId::try_from(id.as_str()).map_err(|e| bad("transfer id", &e))?,
    })
}

/// A `notifications` row.
pub(crate) fn notification(row: &impl Columns) -> Result<Notification, BoxError> {
    let id = row.text("id")?;
    let bad = bad_in(&id);
    Ok(Notification {
        payment_id: row
            .text("payment_id")?
            .parse()
            .map_err(|e| bad("payment id", &e))?,
        account_id: AccountId::try_from(row.text("account_id")?)
            .map_err(|e| bad("account id", &e))?,
        message: row.text("message")?,
        received_at_ms: row.int("received_at_ms")?,
        id: NotificationId::try_from(id.as_str()).map_err(|e| bad("notification id", &e))?,
    })
}

#[cfg(test)]
mod tests {
    use sqlx::{Connection, SqliteConnection};

    use super::*;

    async fn row(sql: &str) -> SqliteRow {
        let mut conn = SqliteConnection::connect("sqlite::memory:")
            .await
            .expect("in-memory database");
        sqlx::query(sql).fetch_one(&mut conn).await.expect("row")
    }

    const TRANSFER: &str = "SELECT 'tr-1' AS id, 'cust-0001' AS debit_account_id, \
                            'merchant-0' AS credit_account_id, {amount} AS amount, \
                            'USD' AS currency, 7 AS created_at_ms";

    #[tokio::test]
    async fn a_good_row_decodes_and_a_bad_value_names_its_column_and_row() {
        let ok = row(&TRANSFER.replace("{amount}", "1250")).await;
        let t = transfer(&ok).expect("decodes");
        assert_eq!(t.amount, Amount::try_from_i64(1250).expect("amount"));
        assert_eq!(t.created_at_ms, 7);

        let negative = row(&TRANSFER.replace("{amount}", "-5")).await;
        let e = transfer(&negative).expect_err("a negative amount is corrupt");
        let c = e.downcast_ref::<CorruptRow>().expect("a CorruptRow");
        assert_eq!(c.what, "transfer amount");
        assert_eq!(c.row, "tr-1");
    }

    #[tokio::test]
    async fn an_sqlite_flag_is_an_integer() {
        let r = row("SELECT 0 AS a, 1 AS b").await;
        assert!(!r.flag("a").expect("flag"));
        assert!(r.flag("b").expect("flag"));
    }
}
