//! The PostgreSQL backend: the same three stores as [`crate::sqlite`], for when the ledger outgrows one
//! machine's file.
//!
//! Concurrency is the database's, with two shapes:
//!
//! - **payments and the inbox**: every step is one statement (data-modifying CTEs where a step
//!   writes two tables), so one round trip and one transaction from a pool; PostgreSQL's own group
//!   commit batches the WAL flushes of concurrent commits. Leases and claims are taken with
//!   `FOR UPDATE SKIP LOCKED`, so two replicas' resumers and dispatchers pass each other.
//! - **the wallet**: a writer task per store batches queued transfers into one transaction of a
//!   fixed number of round trips, locking the batch's accounts at once in id order (see
//!   [`PgWallet`]'s module for the design and its arithmetic): every payment credits one merchant
//!   row, which one-transfer-per-transaction would lock once per transfer.
//!
//! Idempotency keys and ids are unique constraints, so two racing requests resolve to one row;
//! serialization failures, deadlocks and unique races are retried a bounded number of times.
//!
//! TLS is the url's (`sslmode`, `sslrootcert`; rustls): `require` never falls back to plaintext.
//!
//! The schema is migrated at `open` (`migrations/postgres/<store>/`, embedded with
//! `sqlx::migrate!`) under sqlx's advisory lock, so two processes opening an empty database at once
//! migrate it once. [`PgOptions::schema`] puts the tables in their own PostgreSQL schema (tests use
//! one per test).

pub mod admin;
mod inbox;
mod payments;
mod steps;
mod wallet;

use std::time::Duration;

use sqlx::migrate::{MigrateError, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use crate::error::StorageError;

pub use inbox::PgInbox;
pub use payments::PgPayments;
pub use wallet::PgWallet;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgOptions {
    /// e.g. `postgres://postgres@127.0.0.1:5432/test`
    pub url: String,
    pub max_connections: u32,
    /// A PostgreSQL schema for the tables (created if absent); `None` uses the default search path.
    pub schema: Option<String>,
    pub acquire_timeout: Duration,
}

impl PgOptions {
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            max_connections: 8,
            schema: None,
            acquire_timeout: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PgOpenError {
    #[error("invalid PostgreSQL url")]
    Url(#[source] sqlx::Error),
    #[error("schema name {0:?} must be letters, digits and '_'")]
    SchemaName(String),
    #[error("cannot connect to PostgreSQL")]
    Connect(#[source] sqlx::Error),
    #[error("cannot create the schema")]
    Schema(#[source] sqlx::Error),
    #[error("cannot migrate schema {schema}")]
    Migrate {
        schema: String,
        #[source]
        source: MigrateError,
    },
    #[error("schema {schema} has version {found} of this store, newer than this build knows (up to {known}): it was migrated by a newer build")]
    NewerSchema {
        schema: String,
        found: i64,
        known: i64,
    },
}

/// How many times a transient failure (serialization, deadlock, unique race) is retried.
pub(crate) const RETRIES_MAX: u32 = 8;

/// Whether the database asks us to try again: serialization failure, deadlock, or a unique
/// violation from a concurrent insert of the same key (the retry then finds the winner's row).
pub(crate) fn is_transient(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => matches!(
            db.code().as_deref(),
            Some("40001") | Some("40P01") | Some("23505")
        ),
        sqlx::Error::PoolTimedOut => true,
        _ => false,
    }
}

pub(crate) async fn pause(attempt: u32) {
    tokio::time::sleep(Duration::from_millis(2u64 << attempt.min(6))).await;
}

/// Runs `op` (one transaction) again while the database reports a transient failure, at most
/// [`RETRIES_MAX`] times. The inner `Result` is the business answer; the outer one the database's.
pub(crate) async fn retrying<T, E, F, Fut>(mut op: F) -> Result<T, E>
where
    E: StorageError,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Result<T, E>, sqlx::Error>>,
{
    let mut attempt = 0;
    loop {
        match op().await {
            Ok(answer) => return answer,
            Err(e) if is_transient(&e) && attempt < RETRIES_MAX => {
                attempt += 1;
                pause(attempt).await;
            }
            Err(e) => return Err(E::storage(Box::new(e))),
        }
    }
}

/// Opens the pool (creating `opts.schema` when named and absent) and migrates the store.
pub(crate) async fn open_pool(
    opts: &PgOptions,
    migrator: &'static Migrator,
) -> Result<PgPool, PgOpenError> {
    let mut connect: PgConnectOptions = opts.url.parse().map_err(PgOpenError::Url)?;
    if let Some(schema) = &opts.schema {
        if schema.is_empty()
            || !schema
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return Err(PgOpenError::SchemaName(schema.clone()));
        }
        // Create it through a plain connection first, then point every pooled connection at it.
        let bootstrap = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(opts.acquire_timeout)
            .connect_with(connect.clone())
            .await
            .map_err(PgOpenError::Connect)?;
        // The name was checked above to be a plain identifier.
        sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS {schema}"))
            .execute(&bootstrap)
            .await
            .or_else(|e| {
                // Two processes creating the same schema at once: the loser's error is harmless.
                if matches!(&e, sqlx::Error::Database(db) if db.code().as_deref() == Some("23505"))
                {
                    Ok(Default::default())
                } else {
                    Err(e)
                }
            })
            .map_err(PgOpenError::Schema)?;
        bootstrap.close().await;
        // The application name is the schema, so an operator (and the chaos harness) can tell a
        // cluster's connections apart in `pg_stat_activity`.
        connect = connect
            .options([("search_path", schema.as_str())])
            .application_name(schema);
    }
    // Every statement of the stores finds its rows by key, is prepared once per connection and
    // runs thousands of times with a batch's arrays as parameters. Two session settings keep its
    // plan an index lookup per row for the connection's life:
    // - `force_generic_plan`: the plan is made once, not re-made for the first executions and
    //   whenever PostgreSQL judges a custom plan cheaper (planning costs more than the statement);
    // - `enable_seqscan = off`: a plan made while a table is new and nearly empty would otherwise
    //   be a sequential scan joined by hash, and a cached plan keeps that shape after the table has
    //   grown to millions of rows, until the next ANALYZE happens to invalidate it.
    // The audit reads whole tables on its own connection, without these settings.
    //
    // A third bounds what a frozen or partitioned replica costs the others: a session that sits
    // inside a transaction waiting for its client (a wallet batch holds the merchant's row lock
    // between its statements) is ended by the server after IDLE_IN_TRANSACTION, which rolls the
    // transaction back and frees its locks. A live writer's pause between two statements is
    // microseconds of Rust; a SIGSTOPped one's lasts until its supervisor kills it, seconds later,
    // and every payment would wait behind the lock until then.
    let idle = format!("{}ms", IDLE_IN_TRANSACTION.as_millis());
    connect = connect.options([
        ("plan_cache_mode", "force_generic_plan"),
        ("enable_seqscan", "off"),
        ("idle_in_transaction_session_timeout", idle.as_str()),
    ]);
    let pool = PgPoolOptions::new()
        .max_connections(opts.max_connections.max(1))
        .acquire_timeout(opts.acquire_timeout)
        .connect_with(connect)
        .await
        .map_err(PgOpenError::Connect)?;
    migrate(&pool, opts, migrator).await?;
    Ok(pool)
}

/// Applies the store's migrations. sqlx's PostgreSQL migrator holds an advisory lock meanwhile, so
/// two processes opening an empty schema at once apply them once.
///
/// The three stores may share one schema, and so one `_sqlx_migrations` table; each numbers its
/// versions in its own thousand (wallet 1001.., payments 2001.., inbox 3001..). So the migrator
/// ignores versions it does not know, and the check for a newer build is made here, within this
/// store's thousand.
async fn migrate(
    pool: &PgPool,
    opts: &PgOptions,
    migrator: &'static Migrator,
) -> Result<(), PgOpenError> {
    let schema = || {
        opts.schema
            .clone()
            .unwrap_or_else(|| "(search_path)".to_owned())
    };
    let mut shared = Migrator {
        migrations: migrator.migrations.clone(),
        ..Migrator::DEFAULT
    };
    shared.set_ignore_missing(true);
    shared
        .run(pool)
        .await
        .map_err(|source| PgOpenError::Migrate {
            schema: schema(),
            source,
        })?;
    let known = crate::newest_migration(migrator);
    let thousand = known / 1000 * 1000;
    let found: Option<i64> = sqlx::query_scalar(
        "SELECT MAX(version) FROM _sqlx_migrations WHERE version >= $1 AND version < $1 + 1000",
    )
    .bind(thousand)
    .fetch_one(pool)
    .await
    .map_err(PgOpenError::Schema)?;
    match found {
        Some(found) if found > known => Err(PgOpenError::NewerSchema {
            schema: schema(),
            found,
            known,
        }),
        _ => Ok(()),
    }
}

/// The database clock, in milliseconds since the epoch: every lease and claim is judged by it.
/// The statement's own start time, so one statement reads one clock.
/// How long the server lets a session of the stores wait for its client inside a transaction
/// before ending it (and with it the transaction's locks); see [`open_pool`].
pub(crate) const IDLE_IN_TRANSACTION: Duration = Duration::from_millis(500);

pub(crate) const NOW_MS: &str = "(extract(epoch from statement_timestamp()) * 1000)::bigint";
