//! What the audit's SQL is written against: the three stores' tables by schema, and the one
//! construct the two backends spell differently.
//!
//! Every query of the audit is plain SQL that SQLite and PostgreSQL both run: tables are named
//! through [`Tables`], reported columns are `CAST(x AS TEXT)`, counts of matching rows are
//! `SUM(CASE WHEN ... THEN 1 ELSE 0 END)` (PostgreSQL does not sum booleans), and a sum read as an
//! integer is `CAST(SUM(...) AS BIGINT)` (PostgreSQL's sum of `BIGINT` is `numeric`). The exception
//! is the hex test on transfer ids, which is [`Dialect::is_hex32`].

/// The schema holding each store's tables: attached database names on SQLite (`main`, `p`, `n`),
/// PostgreSQL schema names on PostgreSQL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Tables {
    /// `accounts`, `transfers`, `entries`.
    pub wallet: String,
    /// `payments`, `outbox`.
    pub payments: String,
    /// `notifications`.
    pub inbox: String,
}

/// The SQL dialect of the database the audit reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    /// SQL that is true when `expr` is exactly 32 lowercase hexadecimal digits.
    pub(crate) fn is_hex32(self, expr: &str) -> String {
        match self {
            Dialect::Sqlite => format!("NOT ({expr} GLOB '*[^0-9a-f]*') AND length({expr}) = 32"),
            Dialect::Postgres => format!("{expr} ~ '^[0-9a-f]{{32}}$'"),
        }
    }
}

/// Everything a check's SQL depends on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Scope {
    pub tables: Tables,
    pub dialect: Dialect,
    /// The clock just before the payments snapshot was taken: a transfer the wallet wrote after it
    /// may belong to a payment whose newer state the payments snapshot cannot show, so the checks
    /// that pair a transfer with its payment's state skip it.
    pub payments_snapshot_ms: i64,
}

/// The wallet transfer id of a payment, as SQL over `p.id` (a hyphenated UUID). Must agree with
/// `PaymentId::debit_transfer_id`; a unit test pins the two together.
pub(crate) const DEBIT_TRANSFER_ID_SQL: &str = "('pay-' || replace(p.id, '-', ''))";

/// The payment id of a `pay-<32 hex>` transfer id, as SQL over `t.id`: the inverse of the above.
pub(crate) const PAYMENT_ID_OF_TRANSFER_SQL: &str =
    "(substr(t.id, 5, 8) || '-' || substr(t.id, 13, 4) || '-' \
     || substr(t.id, 17, 4) || '-' || substr(t.id, 21, 4) || '-' || substr(t.id, 25, 12))";

#[cfg(test)]
mod tests {
    use sqlx::sqlite::SqliteConnectOptions;
    use sqlx::ConnectOptions;

    use super::*;

    #[tokio::test]
    async fn debit_transfer_id_sql_agrees_with_the_domain_type() {
        let mut conn = SqliteConnectOptions::new()
            .filename(":memory:")
            .connect()
            .await
            .expect("in-memory database");
        for _ in 0..20 {
            let id = finpay_core::PaymentId::new_v7();
            let sql = format!("SELECT {DEBIT_TRANSFER_ID_SQL} FROM (SELECT ?1 AS id) AS p");
            let derived: String = sqlx::query_scalar(&sql)
                .bind(id.to_string())
                .fetch_one(&mut conn)
                .await
                .expect("query runs");
            assert_eq!(derived, id.debit_transfer_id().as_str());
            let sql = format!("SELECT {PAYMENT_ID_OF_TRANSFER_SQL} FROM (SELECT ?1 AS id) AS t");
            let back: String = sqlx::query_scalar(&sql)
                .bind(derived)
                .fetch_one(&mut conn)
                .await
                .expect("query runs");
            assert_eq!(back, id.to_string());
        }
    }

    #[tokio::test]
    async fn the_sqlite_hex_test_accepts_exactly_32_lowercase_hex_digits() {
        let mut conn = SqliteConnectOptions::new()
            .filename(":memory:")
            .connect()
            .await
            .expect("in-memory database");
        let hex = "0123456789abcdef0123456789abcdef";
        let sql = format!(
            "SELECT {} FROM (SELECT ?1 AS x)",
            Dialect::Sqlite.is_hex32("x")
        );
        for (x, want) in [
            (hex.to_owned(), true),
            (hex.to_uppercase(), false),
            (hex[1..].to_owned(), false),
            (format!("{hex}0"), false),
            (hex.replace('a', "g"), false),
            (String::new(), false),
        ] {
            let got: bool = sqlx::query_scalar(&sql)
                .bind(&x)
                .fetch_one(&mut conn)
                .await
                .expect("query runs");
            assert_eq!(got, want, "{x:?}");
        }
    }
}
