//! Settings: typed, layered, validated at start.
//!
//! Layers, later wins: the type's `Default` -> a TOML file -> `FINPAY_*` environment variables
//! (`FINPAY_HTTP__PORT=9000`, `__` splits tables) -> dotted overrides from flags, whose values are
//! TOML values (`("faults.error_rate", "0.3")`, `("fraud.urls", "[\"http://127.0.0.1:9001\"]")`;
//! a value that is not valid TOML is taken as a string, so `data_dir=/tmp/x` works).
//!
//! Every table denies unknown keys; an unknown top-level key from a file or an override is an error,
//! one from the environment only a warning (the environment is shared with other programs).

use std::fmt;
use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Serialized, Toml};
use figment::{Figment, Provider};
use finpay_ledger::sqlite::Synchronous;
use serde::de::DeserializeOwned;
use serde::Serialize as SerializeTrait;
use serde::{Deserialize, Serialize};

use crate::ServeError;

/// A secret that never prints (Debug and logs show `***`).
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Json,
    Pretty,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpSettings {
    pub host: String,
    /// This replica's own port: its business routes and its health probes.
    pub port: u16,
    pub body_limit_bytes: usize,
    /// A port shared with the other replicas of the same service (`SO_REUSEPORT`), which the
    /// kernel spreads new connections over, as a Kubernetes Service spreads them over its pods.
    /// Absent: only `port`.
    pub shared_port: Option<u16>,
    /// The admin listener: `/admin/*` (behind `admin_token`), `/metrics` and the health probes.
    /// Apart from the business port, so a caller of the API never reaches the fault switches or the
    /// metrics; on loopback unless a deployment opens it to its scraper.
    pub admin_host: String,
    pub admin_port: u16,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 0,
            body_limit_bytes: 16 * 1024,
            shared_port: None,
            admin_host: "127.0.0.1".into(),
            admin_port: 0,
        }
    }
}

/// Injected faults: the `[faults]` table and the body of `PUT /admin/faults`, one type in the
/// contract crate.
pub use finpay_api::admin::{FaultSettings, MAX_FAULT_DELAY_MS};

/// The shortest admin token a service accepts: 32 characters, 128 bits and more when random.
pub const ADMIN_TOKEN_MIN_CHARS: usize = 32;

/// Which database a service's store lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageBackend {
    /// A file in `data_dir`, one per service.
    Sqlite,
    /// A PostgreSQL server at `storage.url`.
    Postgres,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageSettings {
    pub backend: StorageBackend,
    /// SQLite only.
    pub synchronous: Synchronous,
    /// Both backends: SQLite's read pool, PostgreSQL's connection pool.
    pub max_connections: u32,
    /// SQLite only: how long to wait on a locked file. PostgreSQL waits this long for a pooled
    /// connection instead.
    pub busy_timeout_ms: u64,
    /// PostgreSQL only, required there. It may carry a password, so it is a [`Secret`] and never
    /// printed. Its forms, by what they ask of TLS (`sslmode`, as libpq spells it):
    ///
    /// - `postgres://user[:password]@host[:port]/db`: `sslmode=prefer`, TLS when the server offers
    ///   it, else plaintext;
    /// - `...?sslmode=disable`: never TLS;
    /// - `...?sslmode=require`: TLS or no connection at all (never a plaintext fallback), the
    ///   server's certificate not checked;
    /// - `...?sslmode=verify-ca&sslrootcert=/path/ca.pem`: TLS, the certificate signed by that CA;
    /// - `...?sslmode=verify-full&sslrootcert=/path/ca.pem`: as verify-ca, and `host` must be a name
    ///   the certificate carries (connect by that name, e.g. `localhost` for Debian's snakeoil
    ///   certificate, not by address).
    ///
    /// Without `sslrootcert` the verifying modes trust the Mozilla roots built into the binary.
    pub url: Option<Secret>,
    /// PostgreSQL only: put the tables in this schema (created if absent); absent = the default
    /// search path.
    pub schema: Option<String>,
}

impl Default for StorageSettings {
    fn default() -> Self {
        Self {
            backend: StorageBackend::Sqlite,
            synchronous: Synchronous::Full,
            max_connections: 8,
            busy_timeout_ms: 5000,
            url: None,
            schema: None,
        }
    }
}

impl StorageSettings {
    /// Checks the backend-specific keys; the error names the field (without `storage.`).
    fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.max_connections == 0 || self.max_connections > 64 {
            return Err(("max_connections", "must be between 1 and 64".into()));
        }
        match self.backend {
            StorageBackend::Sqlite => {
                if self.url.is_some() {
                    return Err(("url", "is only used when backend = \"postgres\"".into()));
                }
                if self.schema.is_some() {
                    return Err(("schema", "is only used when backend = \"postgres\"".into()));
                }
            }
            StorageBackend::Postgres => {
                let Some(url) = &self.url else {
                    return Err(("url", "is required when backend = \"postgres\"".into()));
                };
                // The reason never quotes the url: it may hold a password.
                let url = url.expose().trim();
                if url.is_empty() {
                    return Err(("url", "must not be empty".into()));
                }
                if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                    return Err(("url", "must start with postgres:// or postgresql://".into()));
                }
                if let Some(schema) = &self.schema {
                    let ok = !schema.is_empty()
                        && schema.len() <= 63
                        && schema
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '_')
                        && !schema.starts_with(|c: char| c.is_ascii_digit());
                    if !ok {
                        return Err((
                            "schema",
                            format!(
                                "must be 1..=63 letters, digits and '_', not starting with a digit, got {schema:?}"
                            ),
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

/// The keys every service has, at the top level of its TOML.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct CommonSettings {
    pub data_dir: PathBuf,
    pub admin_token: Secret,
    pub log_format: LogFormat,
    pub http: HttpSettings,
    pub faults: FaultSettings,
    pub storage: StorageSettings,
}

impl Default for CommonSettings {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from(".finpay"),
            // No default: a token everyone knows would guard nothing.
            admin_token: Secret::new(""),
            log_format: LogFormat::Json,
            http: HttpSettings::default(),
            faults: FaultSettings::default(),
            storage: StorageSettings::default(),
        }
    }
}

impl CommonSettings {
    pub fn validate(&self) -> Result<(), ServeError> {
        let token = self.admin_token.expose().chars().count();
        if token < ADMIN_TOKEN_MIN_CHARS {
            return Err(config_err(
                "admin_token",
                format!(
                    "is required, at least {ADMIN_TOKEN_MIN_CHARS} characters (got {token}); \
                     set FINPAY_ADMIN_TOKEN, e.g. to the output of `openssl rand -hex 32`"
                ),
            ));
        }
        if self.http.host.trim().is_empty() {
            return Err(config_err("http.host", "must not be empty"));
        }
        if self.http.admin_host.trim().is_empty() {
            return Err(config_err("http.admin_host", "must not be empty"));
        }
        if self.http.admin_port != 0
            && (Some(self.http.admin_port) == self.http.shared_port
                || self.http.admin_port == self.http.port)
        {
            return Err(config_err(
                "http.admin_port",
                format!(
                    "must differ from http.port and http.shared_port, got {}",
                    self.http.admin_port
                ),
            ));
        }
        if !(256..=64 * 1024 * 1024).contains(&self.http.body_limit_bytes) {
            return Err(config_err(
                "http.body_limit_bytes",
                format!(
                    "must be between 256 and 67108864, got {}",
                    self.http.body_limit_bytes
                ),
            ));
        }
        self.faults
            .validate()
            .map_err(|(field, reason)| config_err(&format!("faults.{field}"), reason))?;
        self.storage
            .validate()
            .map_err(|(field, reason)| config_err(&format!("storage.{field}"), reason))?;
        Ok(())
    }

    /// The SQLite options for this service's store.
    pub fn sqlite_options(&self) -> finpay_ledger::sqlite::SqliteOptions {
        finpay_ledger::sqlite::SqliteOptions {
            synchronous: self.storage.synchronous,
            max_connections: self.storage.max_connections,
            busy_timeout: std::time::Duration::from_millis(self.storage.busy_timeout_ms),
        }
    }

    /// The PostgreSQL options for this service's store, or `None` when the backend is SQLite.
    /// `PgOptions` prints its url in `Debug`: never log the value returned here.
    pub fn pg_options(&self) -> Option<finpay_ledger::postgres::PgOptions> {
        if self.storage.backend != StorageBackend::Postgres {
            return None;
        }
        let url = self.storage.url.as_ref()?;
        let mut opts = finpay_ledger::postgres::PgOptions::new(url.expose().trim());
        opts.max_connections = self.storage.max_connections;
        opts.schema = self.storage.schema.clone();
        opts.acquire_timeout = std::time::Duration::from_millis(self.storage.busy_timeout_ms);
        Some(opts)
    }

    /// Makes sure the data directory exists and returns the path of `file` inside it.
    pub fn db_path(&self, file: &str) -> Result<PathBuf, ServeError> {
        std::fs::create_dir_all(&self.data_dir).map_err(|e| {
            config_err(
                "data_dir",
                format!("cannot create {}: {e}", self.data_dir.display()),
            )
        })?;
        Ok(self.data_dir.join(file))
    }
}

pub fn config_err(field: &str, reason: impl fmt::Display) -> ServeError {
    ServeError::Config(format!("{field}: {reason}"))
}

/// A service's settings type. Its `Default` is the one place its defaults are written: the loader
/// puts the serialised default under every other layer, so a partial table in a file (`[wallet.client]
/// max_attempts = 6`) keeps every other default of that table, and the top-level keys it knows are
/// the keys of that default.
pub trait ServiceSettings: DeserializeOwned + SerializeTrait + Default {
    fn common(&self) -> &CommonSettings;
    /// The common keys are extracted on their own (so errors keep their key path); the service's
    /// type skips them in serde and gets them here.
    fn set_common(&mut self, common: CommonSettings);
    /// Checks what serde cannot (ranges, cross-field rules); a service with none keeps this.
    fn validate(&self) -> Result<(), ServeError> {
        Ok(())
    }
}

/// Loads `S` from its layers and validates it.
pub fn load<S: ServiceSettings>(
    file: Option<&Path>,
    overrides: &[(String, String)],
) -> Result<S, ServeError> {
    let defaults = Figment::from(Serialized::defaults(CommonSettings::default()))
        .merge(Serialized::defaults(S::default()));
    let known = top_level_keys(&defaults)?;
    let mut figment = defaults;
    if let Some(path) = file {
        if !path.exists() {
            return Err(ServeError::Config(format!(
                "config file {} does not exist",
                path.display()
            )));
        }
        figment = figment.merge(Toml::file(path));
    }
    figment = figment.merge(Env::prefixed("FINPAY_").split("__"));
    for (key, value) in overrides {
        figment = figment.merge(Toml::string(&override_toml(key, value)?));
    }
    check_unknown_top_level(&figment, &known)?;
    let common: CommonSettings = figment
        .extract()
        .map_err(|e| ServeError::Config(figment_error(&e)))?;
    let mut settings: S = figment
        .extract()
        .map_err(|e| ServeError::Config(figment_error(&e)))?;
    settings.set_common(common);
    settings.common().validate()?;
    settings.validate()?;
    Ok(settings)
}

/// Renders one override as a TOML line with a dotted key.
fn override_toml(key: &str, value: &str) -> Result<String, ServeError> {
    let key_ok = !key.is_empty()
        && key.split('.').all(|part| {
            !part.is_empty()
                && part
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        });
    if !key_ok {
        return Err(ServeError::Config(format!(
            "override key {key:?}: use dotted names such as faults.error_rate"
        )));
    }
    let line = format!("{key} = {value}");
    if Toml::string(&line).data().is_ok() {
        return Ok(line);
    }
    // Not a TOML value: take it as a string. JSON string escapes are valid TOML basic-string escapes.
    let quoted = serde_json::to_string(value)
        .map_err(|e| ServeError::Config(format!("override {key}: {e}")))?;
    Ok(format!("{key} = {quoted}"))
}

fn top_level_keys(figment: &Figment) -> Result<Vec<String>, ServeError> {
    let dict: std::collections::BTreeMap<String, figment::value::Value> = figment
        .extract()
        .map_err(|e| ServeError::Config(figment_error(&e)))?;
    Ok(dict.into_keys().collect())
}

fn check_unknown_top_level(figment: &Figment, known: &[String]) -> Result<(), ServeError> {
    for key in top_level_keys(figment)? {
        if known.contains(&key) {
            continue;
        }
        let from_env = figment
            .find_metadata(&key)
            .map(|m| m.name.contains("environment"))
            .unwrap_or(false);
        if from_env {
            tracing::warn!(key, "ignoring unknown FINPAY_ environment setting");
        } else {
            return Err(ServeError::Config(format!("{key}: unknown setting")));
        }
    }
    Ok(())
}

fn figment_error(e: &figment::Error) -> String {
    // figment's Display already names the key path ("for key `faults.error_rate`").
    let mut out = Vec::new();
    for err in e.clone() {
        let path = err.path.join(".");
        if path.is_empty() {
            out.push(err.kind.to_string());
        } else {
            out.push(format!("{path}: {}", err.kind));
        }
    }
    out.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default, Serialize, Deserialize)]
    #[serde(default)]
    struct TestSettings {
        #[serde(skip)]
        common: CommonSettings,
        extra: Extra,
    }

    #[derive(Debug, Default, Serialize, Deserialize)]
    #[serde(default, deny_unknown_fields)]
    struct Extra {
        n: u32,
        urls: Vec<String>,
    }

    impl ServiceSettings for TestSettings {
        fn common(&self) -> &CommonSettings {
            &self.common
        }
        fn set_common(&mut self, common: CommonSettings) {
            self.common = common;
        }
        fn validate(&self) -> Result<(), ServeError> {
            Ok(())
        }
    }

    const TOKEN: &str = "a-test-admin-token-of-32-chars-!";

    /// The overrides, after an admin token every test needs to load at all.
    fn ov(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        std::iter::once(&("admin_token", TOKEN))
            .chain(pairs)
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_missing_or_short_admin_token_is_refused_by_name() {
        let none: Vec<(String, String)> = Vec::new();
        let err = load::<TestSettings>(None, &none).expect_err("no token");
        assert!(err.to_string().contains("admin_token"), "{err}");
        let err = load::<TestSettings>(None, &ov(&[("admin_token", "finpay-admin")]))
            .expect_err("too short");
        assert!(err.to_string().contains("admin_token"), "{err}");
        assert!(!err.to_string().contains("finpay-admin"), "{err}");
        load::<TestSettings>(None, &ov(&[])).expect("a 32-character token loads");
    }

    #[test]
    fn the_admin_port_must_be_a_port_of_its_own() {
        let err = load::<TestSettings>(
            None,
            &ov(&[("http.port", "9000"), ("http.admin_port", "9000")]),
        )
        .expect_err("same port");
        assert!(err.to_string().contains("http.admin_port"), "{err}");
    }

    #[test]
    fn overrides_are_toml_values_with_dotted_keys() {
        let s: TestSettings = load(
            None,
            &ov(&[
                ("faults.error_rate", "0.3"),
                ("extra.urls", "[\"http://a\", \"http://b\"]"),
                ("data_dir", "/tmp/finpay x"),
                ("http.port", "9000"),
            ]),
        )
        .expect("loads");
        assert_eq!(s.common.faults.error_rate, 0.3);
        assert_eq!(s.extra.urls.len(), 2);
        assert_eq!(s.common.data_dir, PathBuf::from("/tmp/finpay x"));
        assert_eq!(s.common.http.port, 9000);
    }

    #[test]
    fn a_file_layer_is_read_and_overrides_win() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f.toml");
        std::fs::write(
            &path,
            "[faults]\nerror_rate = 0.5\nseed = 7\n[extra]\nn = 3\n",
        )
        .expect("write");
        let s: TestSettings =
            load(Some(&path), &ov(&[("faults.error_rate", "0.1")])).expect("loads");
        assert_eq!(s.common.faults.error_rate, 0.1);
        assert_eq!(s.common.faults.seed, 7);
        assert_eq!(s.extra.n, 3);
    }

    #[test]
    fn invalid_values_name_the_field() {
        let err =
            load::<TestSettings>(None, &ov(&[("faults.error_rate", "1.5")])).expect_err("refused");
        assert!(err.to_string().contains("faults.error_rate"), "{err}");
        let err = load::<TestSettings>(None, &ov(&[("faults.bogus", "1")])).expect_err("refused");
        assert!(err.to_string().contains("bogus"), "{err}");
        let err = load::<TestSettings>(None, &ov(&[("extra.n", "-1")])).expect_err("refused");
        assert!(err.to_string().contains("extra.n"), "{err}");
        let err = load::<TestSettings>(None, &ov(&[("nonsense", "1")])).expect_err("refused");
        assert!(err.to_string().contains("nonsense"), "{err}");
        let err = load::<TestSettings>(None, &ov(&[("http.port", "\"x\"")])).expect_err("refused");
        assert!(err.to_string().contains("http.port"), "{err}");
        assert!(matches!(err, ServeError::Config(_)));
    }

    #[test]
    fn postgres_backend_requires_a_url_and_names_the_field() {
        let err = load::<TestSettings>(None, &ov(&[("storage.backend", "postgres")]))
            .expect_err("refused");
        assert!(err.to_string().contains("storage.url"), "{err}");
        let err = load::<TestSettings>(
            None,
            &ov(&[
                ("storage.backend", "postgres"),
                ("storage.url", "mysql://x"),
            ]),
        )
        .expect_err("refused");
        assert!(err.to_string().contains("storage.url"), "{err}");
        let err = load::<TestSettings>(
            None,
            &ov(&[
                ("storage.backend", "postgres"),
                ("storage.url", "postgres://u@h/db"),
                ("storage.schema", "bad-name"),
            ]),
        )
        .expect_err("refused");
        assert!(err.to_string().contains("storage.schema"), "{err}");
        let err = load::<TestSettings>(None, &ov(&[("storage.url", "postgres://u@h/db")]))
            .expect_err("refused");
        assert!(err.to_string().contains("storage.url"), "{err}");
        let err =
            load::<TestSettings>(None, &ov(&[("storage.backend", "oracle")])).expect_err("refused");
        assert!(err.to_string().contains("storage.backend"), "{err}");
    }

    #[test]
    fn postgres_settings_become_pg_options() {
        let s: TestSettings = load(
            None,
            &ov(&[
                ("storage.backend", "postgres"),
                ("storage.url", "postgres://u@h:5432/db"),
                ("storage.schema", "finpay"),
                ("storage.max_connections", "4"),
            ]),
        )
        .expect("loads");
        let opts = s.common.pg_options().expect("postgres");
        assert_eq!(opts.url, "postgres://u@h:5432/db");
        assert_eq!(opts.schema.as_deref(), Some("finpay"));
        assert_eq!(opts.max_connections, 4);
        assert!(CommonSettings::default().pg_options().is_none());
    }

    #[test]
    fn the_storage_url_does_not_print() {
        let url = "postgres://finpay:hunter2@db:5432/finpay";
        let s: TestSettings = load(
            None,
            &ov(&[("storage.backend", "postgres"), ("storage.url", url)]),
        )
        .expect("loads");
        assert!(!format!("{:?}", s.common).contains("hunter2"));
        let err = load::<TestSettings>(
            None,
            &ov(&[
                ("storage.backend", "postgres"),
                ("storage.url", "pg://u:hunter2@h"),
            ]),
        )
        .expect_err("refused");
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }

    #[test]
    fn secrets_do_not_print() {
        let s: TestSettings = load(None, &ov(&[])).expect("loads");
        assert!(!format!("{:?}", s.common).contains(TOKEN));
    }
}
