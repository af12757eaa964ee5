//! What an operator does to a PostgreSQL database of FinPay's from outside the services: cut its
//! connections (the chaos harness's database failover) and drop a cluster's schemas.

use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection};

/// Terminates every connection whose application name starts with `prefix` (the stores name their
/// connections after their schema), except this one. Returns how many it terminated.
pub async fn terminate_connections(url: &str, prefix: &str) -> Result<u64, sqlx::Error> {
    let opts: PgConnectOptions = url.parse()?;
    let mut conn = opts.connect().await?;
    let pattern = format!("{}%", like_escape(prefix));
    let killed: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE application_name LIKE $1 ESCAPE '\\' AND pid <> pg_backend_pid()",
    )
    .bind(pattern)
    .fetch_all(&mut conn)
    .await?;
    conn.close().await?;
    Ok(killed.into_iter().filter(|k| *k).count() as u64)
}

/// Drops `schemas` and everything in them.
pub async fn drop_schemas(url: &str, schemas: &[&str]) -> Result<(), sqlx::Error> {
    let opts: PgConnectOptions = url.parse()?;
    let mut conn = opts.connect().await?;
    for schema in schemas {
        if !plain(schema) {
            return Err(sqlx::Error::Protocol(format!(
                "schema name {schema:?} must be letters, digits and '_'"
            )));
        }
        // The name was checked above to be a plain identifier.
        sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
            .execute(&mut conn)
            .await?;
    }
    conn.close().await
}

fn plain(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn like_escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_patterns_match_the_prefix_literally() {
        assert_eq!(like_escape("finpay_ab"), "finpay\\_ab");
        assert_eq!(like_escape("a%b"), "a\\%b");
        assert!(plain("finpay_ab_wallet"));
        assert!(!plain("x; drop"));
    }
}
