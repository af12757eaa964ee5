//! Where a `finpay up` cluster keeps its data: SQLite files in the data dir (the default), or a
//! PostgreSQL database with one schema per store, unique to the cluster.
//!
//! The schemas are `<prefix>_wallet`, `<prefix>_payments` and `<prefix>_inbox`; the prefix is drawn
//! once per data dir and kept in `cluster.json`, so restarting `finpay up` on the same data dir
//! finds its money again, and two clusters on one server never share a table. The database URL may
//! carry a password: it reaches the replicas in their environment (`FINPAY_STORAGE__URL`), never in
//! their config files.

use std::path::Path;

use anyhow::Context as _;
use finpay_services::ServiceKind;
use serde::{Deserialize, Serialize};

/// The default `--database-url`.
pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// The pool of each stateful PostgreSQL replica: six such processes share one server.
pub const PG_MAX_CONNECTIONS: u32 = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// The storage of a cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Storage {
    Sqlite,
    Postgres {
        url: String,
        /// Schemas are `<prefix>_wallet`, `<prefix>_payments`, `<prefix>_inbox`.
        prefix: String,
    },
}

/// The three PostgreSQL schemas of a cluster, as `cluster.json` names them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schemas {
    pub wallet: String,
    pub payments: String,
    pub inbox: String,
}

impl Schemas {
    pub fn of(prefix: &str) -> Self {
        Self {
            wallet: format!("{prefix}_wallet"),
            payments: format!("{prefix}_payments"),
            inbox: format!("{prefix}_inbox"),
        }
    }

    /// The schema of `service`'s store; `None` for fraud, which keeps none.
    pub fn of_service(&self, service: ServiceKind) -> Option<&str> {
        match service {
            ServiceKind::Wallet => Some(&self.wallet),
            ServiceKind::Payment => Some(&self.payments),
            ServiceKind::Notification => Some(&self.inbox),
            ServiceKind::Fraud => None,
        }
    }
}

/// What `cluster.json` says about the storage: enough for `finpay check --data-dir`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StorageInfo {
    pub backend: Backend,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema_prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schemas: Option<Schemas>,
}

impl Default for StorageInfo {
    fn default() -> Self {
        Self {
            backend: Backend::Sqlite,
            database_url: None,
            schema_prefix: None,
            schemas: None,
        }
    }
}

/// The `[storage]` table `finpay up` writes into a replica's config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReplicaStorage {
    pub backend: Backend,
    pub schema: String,
    pub max_connections: u32,
}

/// A schema prefix no other cluster on the server has: `finpay_` and 8 hex digits.
pub fn new_prefix() -> String {
    format!("finpay_{}", &uuid::Uuid::new_v4().simple().to_string()[..8])
}

/// Checks a prefix given by a person (`--schema-prefix`): the schema names must be plain
/// identifiers.
pub fn check_prefix(prefix: &str) -> Result<(), crate::ConfigError> {
    let ok = !prefix.is_empty()
        && prefix.len() <= 40
        && prefix
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !prefix.starts_with(|c: char| c.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(crate::ConfigError(format!(
            "schema prefix {prefix:?}: use 1 to 40 lowercase letters, digits and '_', not starting with a digit"
        )))
    }
}

impl Storage {
    pub fn backend(&self) -> Backend {
        match self {
            Storage::Sqlite => Backend::Sqlite,
            Storage::Postgres { .. } => Backend::Postgres,
        }
    }

    pub fn schemas(&self) -> Option<Schemas> {
        match self {
            Storage::Sqlite => None,
            Storage::Postgres { prefix, .. } => Some(Schemas::of(prefix)),
        }
    }

    pub fn info(&self) -> StorageInfo {
        match self {
            Storage::Sqlite => StorageInfo::default(),
            Storage::Postgres { url, prefix } => StorageInfo {
                backend: Backend::Postgres,
                database_url: Some(url.clone()),
                schema_prefix: Some(prefix.clone()),
                schemas: Some(Schemas::of(prefix)),
            },
        }
    }

    /// The `[storage]` table of `service`'s replicas; `None` keeps the SQLite defaults.
    pub fn replica(&self, service: ServiceKind) -> Option<ReplicaStorage> {
        let schemas = self.schemas()?;
        Some(ReplicaStorage {
            backend: Backend::Postgres,
            schema: schemas.of_service(service)?.to_owned(),
            max_connections: PG_MAX_CONNECTIONS,
        })
    }

    /// The environment of a replica: the database URL, kept out of files.
    pub fn env(&self, service: ServiceKind) -> Vec<(String, String)> {
        match self {
            Storage::Postgres { url, .. } if service.is_stateful() => {
                vec![("FINPAY_STORAGE__URL".into(), url.clone())]
            }
            _ => Vec::new(),
        }
    }

    /// Payment's client settings that depend on the storage: on PostgreSQL every wallet replica
    /// takes writes (p2c), where one SQLite file takes one writer (failover).
    pub fn payment_overrides(&self) -> Vec<(String, String)> {
        match self {
            Storage::Sqlite => Vec::new(),
            Storage::Postgres { .. } => vec![(
                "wallet.client.balancer.strategy".into(),
                "\"p2c_ewma\"".into(),
            )],
        }
    }

    /// Opens the demo accounts before any wallet starts (idempotent). Returns how many exist.
    pub async fn seed(&self, data_dir: &Path) -> anyhow::Result<usize> {
        match self {
            Storage::Sqlite => {
                crate::seed::seed_demo_accounts(&data_dir.join(finpay_ledger::files::WALLET_DB))
                    .await
            }
            Storage::Postgres { url, prefix } => {
                let mut opts = finpay_ledger::postgres::PgOptions::new(url.as_str());
                opts.schema = Some(Schemas::of(prefix).wallet);
                opts.max_connections = 2;
                let wallet = finpay_ledger::postgres::PgWallet::open(&opts)
                    .await
                    .context("open the wallet schema on PostgreSQL")?;
                let accounts = wallet
                    .open_accounts(crate::seed::demo_accounts()?)
                    .await
                    .context("open demo accounts")?;
                Ok(accounts.len())
            }
        }
    }
}

/// The audit of a PostgreSQL cluster's three schemas, from one snapshot.
pub async fn audit_postgres(
    url: &str,
    schemas: &Schemas,
) -> anyhow::Result<finpay_ledger::audit::AuditReport> {
    let schemas = finpay_ledger::audit::PgSchemas {
        wallet: schemas.wallet.clone(),
        payments: schemas.payments.clone(),
        inbox: schemas.inbox.clone(),
    };
    finpay_ledger::audit::audit_postgres(url, &schemas)
        .await
        .with_context(|| {
            format!(
                "audit the schemas {}, {} and {}",
                schemas.wallet, schemas.payments, schemas.inbox
            )
        })
}

/// Terminates every database connection of the cluster `info` names (the stores name their
/// connections after their schema, all of which start with the cluster's prefix); how many.
pub async fn terminate_connections(info: &StorageInfo) -> anyhow::Result<u64> {
    let (Some(url), Some(prefix)) = (&info.database_url, &info.schema_prefix) else {
        anyhow::bail!("the cluster keeps no database connections: its storage is SQLite");
    };
    finpay_ledger::postgres::admin::terminate_connections(url, &format!("{prefix}_"))
        .await
        .context("terminate the cluster's database connections")
}

/// Drops the cluster's three schemas (the chaos harness, after a scenario that passed).
pub async fn drop_schemas(info: &StorageInfo) -> anyhow::Result<()> {
    let (Some(url), Some(s)) = (&info.database_url, &info.schemas) else {
        return Ok(());
    };
    finpay_ledger::postgres::admin::drop_schemas(url, &[&s.wallet, &s.payments, &s.inbox])
        .await
        .context("drop the cluster's schemas")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_unique_plain_identifiers_and_name_three_schemas() {
        let a = new_prefix();
        assert_ne!(a, new_prefix());
        check_prefix(&a).expect("a drawn prefix is valid");
        let s = Schemas::of(&a);
        assert_eq!(
            s.of_service(ServiceKind::Wallet),
            Some(format!("{a}_wallet").as_str())
        );
        assert_eq!(s.of_service(ServiceKind::Fraud), None);
        for bad in ["", "1abc", "Finpay", "a-b", "a;drop"] {
            assert!(check_prefix(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_database_url_reaches_stateful_replicas_in_their_environment_only() {
        let pg = Storage::Postgres {
            url: "postgres://u:secret@h/db".into(),
            prefix: "finpay_t".into(),
        };
        assert!(pg.env(ServiceKind::Fraud).is_empty());
        assert_eq!(pg.env(ServiceKind::Wallet).len(), 1);
        let table = toml::to_string(&pg.replica(ServiceKind::Payment)).expect("toml");
        assert!(!table.contains("secret"));
        assert!(table.contains("finpay_t_payments"));
        assert!(Storage::Sqlite.replica(ServiceKind::Wallet).is_none());
        assert!(Storage::Sqlite.env(ServiceKind::Wallet).is_empty());
    }
}
