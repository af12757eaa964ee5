//! TLS to PostgreSQL, as the url asks for it (sqlx with rustls):
//!
//! - `sslmode=require` against the local server (ssl on, Debian's snakeoil certificate) opens a
//!   store over an encrypted connection (`pg_stat_ssl` says so);
//! - `sslmode=verify-full` with `sslrootcert=` the snakeoil certificate works when the host is the
//!   name the certificate carries (`localhost`), and is refused for a host it does not name
//!   (`127.0.0.1`) or without that root: the certificate is really checked;
//! - against a fake server that answers the SSLRequest with `N` (no TLS), `sslmode=require`
//!   fails and no plaintext startup message is ever sent, while `sslmode=prefer` does fall back
//!   to plaintext (so the fake server is one a client would talk to).
//!
//! The tests against the local server print a note and pass when it does not answer or has no
//! snakeoil certificate; the fake-server tests always run.

use std::time::Duration;

use finpay_ledger::inbox::InboxStore;
use finpay_ledger::postgres::{PgInbox, PgOpenError, PgOptions};
use sqlx::{Connection, PgConnection};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const SNAKEOIL: &str = "/etc/ssl/certs/ssl-cert-snakeoil.pem";

/// The local server's url without scheme and query, its host `{host}` (from `FINPAY_TEST_PG_URL`
/// or the default); `None` (after a note) when it does not answer.
async fn local(test: &str) -> Option<String> {
    let url = std::env::var("FINPAY_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let probe = tokio::time::timeout(Duration::from_secs(2), PgConnection::connect(&url)).await;
    match probe {
        Ok(Ok(conn)) => {
            let _ = conn.close().await;
            // The host is the part each test chooses: the certificate names `localhost`.
            let rest = url
                .trim_start_matches("postgresql://")
                .trim_start_matches("postgres://");
            let rest = rest.split('?').next().unwrap_or(rest);
            Some(rest.replacen("127.0.0.1", "{host}", 1))
        }
        _ => {
            eprintln!("note: {test} skipped: no PostgreSQL answers");
            None
        }
    }
}

fn url(base: &str, host: &str, query: &str) -> String {
    format!("postgres://{}?{query}", base.replace("{host}", host))
}

/// Whether the connection `url` makes is encrypted, by the server's own account.
async fn encrypted(url: &str) -> bool {
    let mut conn = PgConnection::connect(url).await.expect("connects");
    let ssl: bool = sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .fetch_one(&mut conn)
        .await
        .expect("reads pg_stat_ssl");
    let _ = conn.close().await;
    ssl
}

/// Opens an inbox store on a fresh schema through `url`, pings it and drops the schema.
async fn open_store(url: &str) -> Result<(), PgOpenError> {
    let schema = format!(
        "finpay_tls_{}",
        &finpay_core::PaymentId::new_v7()
            .debit_transfer_id()
            .as_str()[4..]
    );
    let mut opts = PgOptions::new(url.to_owned());
    opts.schema = Some(schema.clone());
    opts.max_connections = 1;
    opts.acquire_timeout = Duration::from_secs(3);
    let store = PgInbox::open(&opts).await?;
    store.ping().await.expect("pings");
    drop(store);
    let mut conn = PgConnection::connect(url).await.expect("connects");
    let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .execute(&mut conn)
        .await;
    Ok(())
}

#[tokio::test]
async fn sslmode_require_opens_a_store_over_tls() {
    let Some(base) = local("sslmode_require_opens_a_store_over_tls").await else {
        return;
    };
    let require = url(&base, "127.0.0.1", "sslmode=require");
    assert!(encrypted(&require).await, "sslmode=require is encrypted");
    open_store(&require).await.expect("a store opens");
    // The contrast: the same server without TLS.
    assert!(!encrypted(&url(&base, "127.0.0.1", "sslmode=disable")).await);
}

#[tokio::test]
async fn verify_full_checks_the_certificate_and_the_host_name() {
    let test = "verify_full_checks_the_certificate_and_the_host_name";
    let Some(base) = local(test).await else {
        return;
    };
    if !std::path::Path::new(SNAKEOIL).exists() {
        eprintln!("note: {test} skipped: no {SNAKEOIL}");
        return;
    }
    let full = |host| {
        url(
            &base,
            host,
            &format!("sslmode=verify-full&sslrootcert={SNAKEOIL}"),
        )
    };
    // The snakeoil certificate names `localhost` (its CN and its one DNS SAN).
    assert!(encrypted(&full("localhost")).await);
    open_store(&full("localhost"))
        .await
        .expect("a store opens with verify-full");
    // An address the certificate does not name is refused, as is a certificate with no root.
    let wrong_name = PgConnection::connect(&full("127.0.0.1")).await;
    assert!(wrong_name.is_err(), "a host the certificate does not name");
    let no_root = PgConnection::connect(&url(&base, "localhost", "sslmode=verify-full")).await;
    assert!(no_root.is_err(), "a certificate no trusted root signed");
    let err = open_store(&full("127.0.0.1"))
        .await
        .expect_err("the store refuses too");
    assert!(matches!(err, PgOpenError::Connect(_)), "{err:?}");
}

/// What the fake server saw on its one connection: the SSLRequest, and any bytes after its `N`.
struct Seen {
    ssl_request: bool,
    after_refusal: Vec<u8>,
}

/// A server that answers one SSLRequest with `N` and records what the client sends next.
async fn fake_server_without_tls() -> (u16, tokio::task::JoinHandle<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("binds");
    let port = listener.local_addr().expect("addr").port();
    let seen = tokio::spawn(async move {
        let (mut sock, _) = listener.accept().await.expect("accepts");
        let mut first = [0u8; 8];
        sock.read_exact(&mut first)
            .await
            .expect("reads the request");
        // Length 8, then the SSLRequest code 80877103 (1234 << 16 | 5679).
        let ssl_request = first == [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];
        sock.write_all(b"N").await.expect("refuses TLS");
        let mut after_refusal = Vec::new();
        let mut buf = [0u8; 1024];
        // Bounded: a client that gives up closes the socket; one that falls back sends a startup.
        while let Ok(Ok(n)) =
            tokio::time::timeout(Duration::from_millis(500), sock.read(&mut buf)).await
        {
            if n == 0 {
                break;
            }
            after_refusal.extend_from_slice(&buf[..n]);
        }
        Seen {
            ssl_request,
            after_refusal,
        }
    });
    (port, seen)
}

#[tokio::test]
async fn sslmode_require_never_falls_back_to_plaintext() {
    let (port, seen) = fake_server_without_tls().await;
    let url = format!("postgres://postgres@127.0.0.1:{port}/test?sslmode=require");
    let mut opts = PgOptions::new(url);
    opts.acquire_timeout = Duration::from_secs(3);
    let err = PgInbox::open(&opts)
        .await
        .expect_err("no TLS, no connection");
    assert!(matches!(err, PgOpenError::Connect(_)), "{err:?}");
    let seen = seen.await.expect("joined");
    assert!(seen.ssl_request, "the client asked for TLS first");
    assert!(
        seen.after_refusal.is_empty(),
        "nothing was sent in plaintext after the refusal: {:?}",
        seen.after_refusal
    );
}

#[tokio::test]
async fn sslmode_prefer_does_fall_back_so_the_fake_server_is_a_fair_one() {
    let (port, seen) = fake_server_without_tls().await;
    let url = format!("postgres://finpay-user@127.0.0.1:{port}/test?sslmode=prefer");
    // The fake server never completes a startup, so the connect fails either way; what matters is
    // what reached it.
    let _ = tokio::time::timeout(Duration::from_secs(3), PgConnection::connect(&url)).await;
    let seen = seen.await.expect("joined");
    assert!(seen.ssl_request);
    let text = String::from_utf8_lossy(&seen.after_refusal);
    assert!(
        text.contains("finpay-user"),
        "a plaintext startup message followed: {text:?}"
    );
}
