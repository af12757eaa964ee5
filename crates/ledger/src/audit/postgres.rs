//! The audit's PostgreSQL runner: the three stores' schemas on one connection, in one
//! `REPEATABLE READ READ ONLY` transaction, so every check reads one snapshot of all three.
//!
//! One snapshot is exact while the services run: a payment seen as debited or succeeded committed
//! after its transfer, and an outbox row seen as delivered after its inbox row, so a snapshot
//! that holds the one holds the other (PostgreSQL makes a transaction visible to every snapshot
//! taken after its commit returned).

use futures::TryStreamExt;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgRow};
use sqlx::{ConnectOptions, Connection, Row};

use super::sql::{Dialect, Scope, Tables};
use super::{AuditError, Rows, Source};

/// The PostgreSQL schema of each store. Two or three may be the same schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgSchemas {
    /// `accounts`, `transfers`, `entries`.
    pub wallet: String,
    /// `payments`, `outbox`.
    pub payments: String,
    /// `notifications`.
    pub inbox: String,
}

impl PgSchemas {
    /// All three stores in one schema.
    pub fn one(schema: impl Into<String>) -> Self {
        let schema = schema.into();
        Self {
            wallet: schema.clone(),
            payments: schema.clone(),
            inbox: schema,
        }
    }
}

/// Whether `s` is a schema name the audit splices into its SQL: letters, digits and `_`.
fn plain_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !s.starts_with(|c: char| c.is_ascii_digit())
}

/// The connection, inside its read transaction, and the clock just before its snapshot.
pub(crate) struct Snapshot {
    conn: PgConnection,
    tables: Tables,
    payments_snapshot_ms: i64,
}

impl Snapshot {
    /// Connects to `url` (its TLS settings apply: see the storage settings), checks that every
    /// table is there, and opens the read transaction whose snapshot every check reads.
    pub(crate) async fn open(url: &str, schemas: &PgSchemas) -> Result<Self, AuditError> {
        for schema in [&schemas.wallet, &schemas.payments, &schemas.inbox] {
            if !plain_identifier(schema) {
                return Err(AuditError::SchemaName(schema.clone()));
            }
        }
        let options: PgConnectOptions = url.parse().map_err(AuditError::Connect)?;
        let mut conn = options
            .disable_statement_logging()
            .connect()
            .await
            .map_err(AuditError::Connect)?;
        let tables = Tables {
            wallet: schemas.wallet.clone(),
            payments: schemas.payments.clone(),
            inbox: schemas.inbox.clone(),
        };
        for (schema, table) in [
            (&tables.wallet, "accounts"),
            (&tables.wallet, "transfers"),
            (&tables.wallet, "entries"),
            (&tables.payments, "payments"),
            (&tables.payments, "outbox"),
            (&tables.inbox, "notifications"),
        ] {
            let found: Option<String> = sqlx::query_scalar("SELECT to_regclass($1)::text")
                .bind(format!("{schema}.{table}"))
                .fetch_one(&mut conn)
                .await
                .map_err(|source| AuditError::Query {
                    check: "tables",
                    source,
                })?;
            if found.is_none() {
                return Err(AuditError::MissingTable {
                    schema: schema.clone(),
                    table,
                });
            }
        }
        // Taken before the snapshot: a transfer the wallet wrote after this moment is skipped by
        // the two checks that pair a transfer with its payment's state, as on SQLite.
        let payments_snapshot_ms = crate::now_ms();
        for (check, sql) in [
            ("begin", "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"),
            // The snapshot is taken by the transaction's first query.
            ("snapshot", "SELECT 1"),
        ] {
            sqlx::query(sql)
                .execute(&mut conn)
                .await
                .map_err(|source| AuditError::Query { check, source })?;
        }
        Ok(Self {
            conn,
            tables,
            payments_snapshot_ms,
        })
    }

    pub(crate) fn scope(&self) -> Scope {
        Scope {
            tables: self.tables.clone(),
            dialect: Dialect::Postgres,
            payments_snapshot_ms: self.payments_snapshot_ms,
        }
    }

    pub(crate) fn source(&mut self) -> &mut PgConnection {
        &mut self.conn
    }

    /// Ends the read transaction; the audit only read, so nothing is lost if this fails.
    pub(crate) async fn close(mut self) {
        let _ = sqlx::query("ROLLBACK").execute(&mut self.conn).await;
        let _ = self.conn.close().await;
    }
}

impl Source for PgConnection {
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
                let texts: Result<Vec<Option<String>>, _> =
                    (0..row.len()).map(|i| PgRow::try_get(&row, i)).collect();
                rows.listed.push(texts.map_err(err)?);
            }
        }
        Ok(rows)
    }
}
