//! The audit's SQLite runner: the three files of a data directory on one read-only connection, in
//! one read transaction.

use std::path::Path;

use futures::TryStreamExt;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection, SqliteRow};
use sqlx::{ConnectOptions, Row};

use super::sql::{Dialect, Scope, Tables};
use super::{AuditError, Rows, Source};
use crate::files;

/// The stores of a data directory, each read at one moment for the whole audit.
pub(crate) struct Snapshot {
    conn: SqliteConnection,
    payments_snapshot_ms: i64,
}

impl Snapshot {
    /// Opens the stores of `data_dir` and takes the three snapshots in causal order.
    pub(crate) async fn open(data_dir: &Path) -> Result<Self, AuditError> {
        let mut conn = connect(data_dir).await?;
        // One read transaction: each file is read at one moment for the whole audit.
        exec(&mut conn, "begin", "BEGIN").await?;
        // Taken before the payments snapshot: a transfer the wallet wrote after this moment may
        // belong to a payment whose newer state the payments snapshot cannot show, so two checks
        // skip it.
        let payments_snapshot_ms = crate::now_ms();
        // SQLite takes each attached file's snapshot when the transaction first reads it. Reading
        // the payments file first, the wallet second and the inbox last makes the audit exact even
        // while the services run: a payment seen as debited or succeeded committed its transfer
        // before, and an outbox row seen as delivered was stored in the inbox before, so the later
        // snapshots contain them.
        let Tables {
            wallet,
            payments,
            inbox,
        } = tables();
        for (what, sql) in [
            (
                "snapshot payments",
                format!("SELECT count(*) FROM {payments}.payments"),
            ),
            (
                "snapshot wallet",
                format!("SELECT count(*) FROM {wallet}.accounts"),
            ),
            (
                "snapshot inbox",
                format!("SELECT count(*) FROM {inbox}.notifications"),
            ),
        ] {
            exec(&mut conn, what, &sql).await?;
        }
        Ok(Self {
            conn,
            payments_snapshot_ms,
        })
    }

    /// What the checks' SQL is written against on this connection.
    pub(crate) fn scope(&self) -> Scope {
        Scope {
            tables: tables(),
            dialect: Dialect::Sqlite,
            payments_snapshot_ms: self.payments_snapshot_ms,
        }
    }

    pub(crate) fn source(&mut self) -> &mut SqliteConnection {
        &mut self.conn
    }

    /// Ends the read transaction; the audit only read, so nothing is lost if this fails.
    pub(crate) async fn close(mut self) {
        let _ = sqlx::query("ROLLBACK").execute(&mut self.conn).await;
    }
}

/// `wallet.db` opened read-only, with `payments.db` and `notifications.db` attached under the names
/// of [`tables`].
async fn connect(data_dir: &Path) -> Result<SqliteConnection, AuditError> {
    let wallet = data_dir.join(files::WALLET_DB);
    let payments = data_dir.join(files::PAYMENTS_DB);
    let notifications = data_dir.join(files::NOTIFICATIONS_DB);
    for path in [&wallet, &payments, &notifications] {
        if !path.is_file() {
            return Err(AuditError::MissingFile { path: path.clone() });
        }
    }
    let mut conn = SqliteConnectOptions::new()
        .filename(&wallet)
        .read_only(true)
        .create_if_missing(false)
        .disable_statement_logging()
        .connect()
        .await
        .map_err(|source| AuditError::Open {
            path: wallet.clone(),
            source,
        })?;
    let t = tables();
    for (path, schema) in [(&payments, t.payments), (&notifications, t.inbox)] {
        // The schema names are constants ([`tables`]); the path is bound, never spliced into the SQL.
        sqlx::query(&format!("ATTACH DATABASE ?1 AS {schema}"))
            .bind(path.to_string_lossy().into_owned())
            .execute(&mut conn)
            .await
            .map_err(|source| AuditError::Open {
                path: path.clone(),
                source,
            })?;
    }
    Ok(conn)
}

/// The attached databases: the wallet file is `main`, the payments file `p`, the inbox file `n`.
fn tables() -> Tables {
    Tables {
        wallet: "main".to_owned(),
        payments: "p".to_owned(),
        inbox: "n".to_owned(),
    }
}

async fn exec(
    conn: &mut SqliteConnection,
    check: &'static str,
    sql: &str,
) -> Result<(), AuditError> {
    sqlx::query(sql)
        .execute(&mut *conn)
        .await
        .map(|_| ())
        .map_err(|source| AuditError::Query { check, source })
}

/// Every column of a row as text. The checks cast what they select to text, so a value of any
/// stored type (a corrupt row may hold anything) reaches the report as it is.
fn texts(row: &SqliteRow) -> Result<Vec<Option<String>>, sqlx::Error> {
    (0..row.len()).map(|i| row.try_get(i)).collect()
}

impl Source for SqliteConnection {
    async fn int(&mut self, check: &'static str, sql: &str) -> Result<i64, AuditError> {
        sqlx::query_scalar(sql)
            .fetch_one(&mut *self)
            .await
            .map_err(|source| AuditError::Query { check, source })
    }

    async fn keyed_ints(
        &mut self,
        check: &'static str,
        sql: &str,
        ints: usize,
    ) -> Result<Vec<(Option<String>, Vec<i64>)>, AuditError> {
        let err = |source| AuditError::Query { check, source };
        let rows = sqlx::query(sql).fetch_all(&mut *self).await.map_err(err)?;
        rows.iter()
            .map(|row| {
                let key = row.try_get(0)?;
                let values = (1..=ints)
                    .map(|i| row.try_get(i))
                    .collect::<Result<_, _>>()?;
                Ok((key, values))
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(err)
    }

    async fn rows(
        &mut self,
        check: &'static str,
        sql: &str,
        keep: usize,
    ) -> Result<Rows, AuditError> {
        let err = |source| AuditError::Query { check, source };
        let mut stream = sqlx::query(sql).fetch(&mut *self);
        let mut rows = Rows::default();
        while let Some(row) = stream.try_next().await.map_err(err)? {
            rows.found += 1;
            if rows.listed.len() < keep {
                rows.listed.push(texts(&row).map_err(err)?);
            }
        }
        Ok(rows)
    }
}
