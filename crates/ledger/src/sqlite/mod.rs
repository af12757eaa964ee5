//! The SQLite backend: one file per store, WAL journal, `synchronous=FULL` by default, through sqlx.
//!
//! # Shape
//!
//! Every store ([`SqliteWallet`], [`SqlitePayments`], [`SqliteInbox`]) owns two things:
//!
//! - **one writer task** with a dedicated connection, fed by a bounded channel. It takes whatever is
//!   queued (up to [`writer::MAX_BATCH`] operations), opens one `BEGIN IMMEDIATE` transaction, runs
//!   each operation inside its own `SAVEPOINT` (rolled back alone when that operation fails), commits
//!   once, and only then answers each caller. This is group commit: with `synchronous=FULL` one fsync
//!   pays for the whole batch, which is what makes thousands of durable operations per second possible
//!   on a small machine. A caller is never told "done" before its COMMIT returned.
//! - **a read pool** for queries, which in WAL mode never wait for the writer.
//!
//! # Why `BEGIN IMMEDIATE`
//!
//! Two wallet replicas (two processes) share one file. A deferred transaction that reads first and
//! writes later must upgrade its lock, and SQLite answers a contended upgrade with `SQLITE_BUSY` at
//! once, without waiting: the busy timeout does not help there. Taking the write lock at `BEGIN` makes
//! a second writer wait on the busy timeout instead; if even that runs out, the writer retries the
//! `BEGIN` a bounded number of times before it reports a storage error.
//!
//! # Schema
//!
//! Versioned migrations (`migrations/sqlite/<store>/`, embedded with `sqlx::migrate!`) are applied
//! at `open`, under an exclusive `flock` on a lock file beside the database, so two processes
//! opening a fresh file at once apply them exactly once. Each store numbers its versions in its own
//! thousand (wallet 1001.., payments 2001.., inbox 3001..), the same on both backends. A file with a
//! version newer than this build knows is refused ([`OpenError::NewerSchema`]).
//! `PRAGMA user_version` holds the newest applied version too.

mod inbox;
mod outbox;
mod payments;
mod wallet;
pub(crate) mod writer;

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};
use sqlx::migrate::{MigrateError, Migrator};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use sqlx::{ConnectOptions, Connection};

pub use inbox::SqliteInbox;
pub use payments::SqlitePayments;
pub use wallet::SqliteWallet;

pub use crate::rows::CorruptRow;

/// How hard a commit waits for the disk. `Full` (the default) fsyncs the WAL at every commit: a
/// committed transfer survives power loss. `Normal` survives a process crash but may lose the last
/// commits on power loss. `Off` is for benchmarks only.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Synchronous {
    #[default]
    Full,
    Normal,
    Off,
}

impl Synchronous {
    fn to_sqlx(self) -> SqliteSynchronous {
        match self {
            Synchronous::Full => SqliteSynchronous::Full,
            Synchronous::Normal => SqliteSynchronous::Normal,
            Synchronous::Off => SqliteSynchronous::Off,
        }
    }
}

impl FromStr for Synchronous {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "full" => Ok(Synchronous::Full),
            "normal" => Ok(Synchronous::Normal),
            "off" => Ok(Synchronous::Off),
            other => Err(format!(
                "unknown synchronous mode {other:?}: expected full, normal or off"
            )),
        }
    }
}

/// Options shared by the three SQLite stores. The journal mode is always WAL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqliteOptions {
    pub synchronous: Synchronous,
    /// Connections in the read pool (the writer has its own, extra connection).
    pub max_connections: u32,
    /// How long one statement waits for a lock held by another process before SQLite gives up.
    pub busy_timeout: Duration,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        Self {
            synchronous: Synchronous::Full,
            max_connections: 4,
            busy_timeout: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot create the directory {path}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open the database {path}")]
    Connect {
        path: PathBuf,
        #[source]
        source: sqlx::Error,
    },
    #[error("cannot create the schema of {path}")]
    Schema {
        path: PathBuf,
        #[source]
        source: sqlx::Error,
    },
    #[error("cannot migrate the schema of {path}")]
    Migrate {
        path: PathBuf,
        #[source]
        source: MigrateError,
    },
    #[error("cannot lock {path} to migrate the database beside it")]
    Lock {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} has schema version {found}, newer than this build knows (up to {known}): it was migrated by a newer build")]
    NewerSchema {
        path: PathBuf,
        found: i64,
        known: i64,
    },
}

/// How many times a busy database is retried (after each wait of `busy_timeout`) before giving up.
pub(crate) const BUSY_RETRIES_MAX: u32 = 8;

/// Whether an error is SQLite's "busy" or "locked": transient, worth retrying.
pub(crate) fn is_busy(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => db
            .code()
            .and_then(|c| c.parse::<i32>().ok())
            // The primary result code is the low byte of the extended one: 5 BUSY, 6 LOCKED.
            .map(|code| matches!(code & 0xff, 5 | 6))
            .unwrap_or(false),
        _ => false,
    }
}

/// A short pause between busy retries, growing with the attempt, so two processes desynchronise.
pub(crate) async fn busy_pause(attempt: u32) {
    let ms = 5u64.saturating_mul(1u64 << attempt.min(6));
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

fn connect_options(path: &Path, opts: &SqliteOptions) -> SqliteConnectOptions {
    SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(opts.synchronous.to_sqlx())
        .busy_timeout(opts.busy_timeout)
        .foreign_keys(true)
        // Pooled connections get a generous statement cache: every store runs a few fixed statements.
        .statement_cache_capacity(64)
        .disable_statement_logging()
}

/// What each store needs from `open`: the writer connection (schema migrated) and the read pool.
pub(crate) struct Opened {
    pub writer: SqliteConnection,
    pub readers: SqlitePool,
}

/// Opens (creating if needed) a database file, migrates it to `migrator`'s newest version, and
/// returns the connections.
pub(crate) async fn open_db(
    path: &Path,
    opts: &SqliteOptions,
    migrator: &'static Migrator,
) -> Result<Opened, OpenError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| OpenError::CreateDir {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    let options = connect_options(path, opts);
    let connect_err = |source| OpenError::Connect {
        path: path.to_path_buf(),
        source,
    };
    // Two processes opening one fresh file at once (the two wallet replicas of `finpay up`) take
    // turns here, so only the first applies the migrations and the second finds them recorded.
    let lock = MigrationLock::take(path).await?;
    let mut attempt = 0;
    let writer = loop {
        // Switching a fresh file to WAL needs a moment of exclusive access: another process doing
        // the same at the same time makes this busy, which is worth a retry.
        match SqliteConnection::connect_with(&options).await {
            Ok(c) => break c,
            Err(e) if is_busy(&e) && attempt < BUSY_RETRIES_MAX => {
                attempt += 1;
                busy_pause(attempt).await;
            }
            Err(e) => return Err(connect_err(e)),
        }
    };
    // Migrated through a pool of one more connection (the writer's has switched the file to WAL
    // already): sqlx's migrator over `&Pool` keeps the open future `Send`, which over
    // `&mut SqliteConnection` it is not, so a store can be opened inside a spawned task.
    let one = SqlitePoolOptions::new()
        .max_connections(1)
        .min_connections(0)
        .connect_with(options.clone())
        .await
        .map_err(connect_err)?;
    let migrated = migrate(path, &one, migrator).await;
    one.close().await;
    migrated?;
    drop(lock);
    let readers = SqlitePoolOptions::new()
        .max_connections(opts.max_connections.max(1))
        .min_connections(0)
        .connect_with(options)
        .await
        .map_err(connect_err)?;
    Ok(Opened { writer, readers })
}

/// Applies what `migrator` has and the file lacks, then records the newest version in
/// `PRAGMA user_version` too, so that a build from before versioned migrations (which checks only
/// that pragma) refuses a file a newer build migrated. A file with a version this build does not
/// know was migrated by a newer build: it is refused, and nothing is changed.
async fn migrate(
    path: &Path,
    conn: &SqlitePool,
    migrator: &'static Migrator,
) -> Result<(), OpenError> {
    let known = crate::newest_migration(migrator);
    let schema_err = |source| OpenError::Schema {
        path: path.to_path_buf(),
        source,
    };
    match migrator.run(conn).await {
        Ok(()) => {}
        Err(MigrateError::VersionMissing(_)) => {
            let found: i64 = sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations")
                .fetch_one(conn)
                .await
                .map_err(schema_err)?;
            return Err(OpenError::NewerSchema {
                path: path.to_path_buf(),
                found,
                known,
            });
        }
        Err(e) => {
            return Err(OpenError::Migrate {
                path: path.to_path_buf(),
                source: e,
            })
        }
    }
    // PRAGMA takes no bound parameters; `known` is a constant of this crate.
    sqlx::raw_sql(&format!("PRAGMA user_version = {known}"))
        .execute(conn)
        .await
        .map_err(schema_err)?;
    Ok(())
}

/// An exclusive `flock` on `<file>-migrate.lock` beside the database, held while it is migrated.
/// The lock is the kernel's: it goes with the process, so a crash never leaves it held.
struct MigrationLock(#[allow(dead_code)] Flock<std::fs::File>);

impl MigrationLock {
    async fn take(db: &Path) -> Result<Self, OpenError> {
        let mut name = db.as_os_str().to_owned();
        name.push("-migrate.lock");
        let path = PathBuf::from(name);
        let at = path.clone();
        let locked = tokio::task::spawn_blocking(move || {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&at)?;
            Flock::lock(file, FlockArg::LockExclusive)
                .map_err(|(_, errno)| std::io::Error::from(errno))
        })
        .await
        .map_err(std::io::Error::other)
        .and_then(|r| r);
        locked
            .map(MigrationLock)
            .map_err(|source| OpenError::Lock { path, source })
    }
}

/// `BEGIN IMMEDIATE`, retried a bounded number of times while another process holds the write lock.
pub(crate) async fn begin_immediate(conn: &mut SqliteConnection) -> Result<(), sqlx::Error> {
    let mut attempt = 0;
    loop {
        match sqlx::query("BEGIN IMMEDIATE").execute(&mut *conn).await {
            Ok(_) => return Ok(()),
            Err(e) if is_busy(&e) && attempt < BUSY_RETRIES_MAX => {
                attempt += 1;
                tracing::debug!(attempt, "database busy at BEGIN IMMEDIATE, retrying");
                busy_pause(attempt).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Runs a read, retrying a bounded number of times while the database is busy (e.g. WAL recovery
/// after another process crashed), so a transient lock is never reported as a failure.
pub(crate) async fn read_retrying<T, F, Fut>(mut f: F) -> Result<T, sqlx::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, sqlx::Error>>,
{
    let mut attempt = 0;
    loop {
        match f().await {
            Err(e) if is_busy(&e) && attempt < BUSY_RETRIES_MAX => {
                attempt += 1;
                busy_pause(attempt).await;
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synchronous_parses_its_config_names_and_defaults_to_full() {
        assert_eq!("full".parse(), Ok(Synchronous::Full));
        assert_eq!("normal".parse(), Ok(Synchronous::Normal));
        assert_eq!("off".parse(), Ok(Synchronous::Off));
        assert!("FULL".parse::<Synchronous>().is_err());
        assert_eq!(SqliteOptions::default().synchronous, Synchronous::Full);
    }
}
