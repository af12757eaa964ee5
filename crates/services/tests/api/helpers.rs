//! Test helpers: real servers on port 0 through the same `Application::build` as `main`, each test
//! with fresh stores in its own temporary directory.

use std::path::Path;
use std::time::Duration;

use finpay_core::{AccountId, Balance, Currency};
use finpay_ledger::sqlite::{SqliteOptions, SqliteWallet};
use finpay_services::{fraud, notification, payment, wallet};
use serde_json::Value;

pub const ADMIN: &str = "test-admin-token-of-32-characters";
pub const CUSTOMER: &str = "cust-0001";
pub const MERCHANT: &str = "merchant-0";
pub const OPENING: u64 = 1_000_000_000;

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client builds")
}

pub struct Running {
    /// The business port.
    pub url: String,
    /// The admin listener: `/admin/*`, `/metrics`.
    pub admin: String,
    handle: tokio::task::JoinHandle<()>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

fn common(c: &mut finpay_services::http::CommonSettings, dir: &Path) {
    c.data_dir = dir.to_path_buf();
    c.admin_token = finpay_services::http::Secret::new(ADMIN);
    c.http.port = 0;
    c.storage.synchronous = finpay_ledger::sqlite::Synchronous::Normal;
}

macro_rules! run {
    ($app:expr) => {{
        let app = $app.await.expect("app builds");
        let url = format!("http://127.0.0.1:{}", app.port());
        let admin = format!("http://{}", app.admin_addr());
        let handle = tokio::spawn(async move {
            let _ = app
                .run_until_stopped(futures::future::pending::<()>())
                .await;
        });
        Running { url, admin, handle }
    }};
}

pub async fn spawn_fraud(dir: &Path, f: impl FnOnce(&mut fraud::Settings)) -> Running {
    let mut s = fraud::Settings::default();
    common(&mut s.common, dir);
    f(&mut s);
    run!(fraud::Application::build(s))
}

/// Seeds the wallet file with the test accounts, then starts a wallet on it.
pub async fn spawn_wallet(dir: &Path, f: impl FnOnce(&mut wallet::Settings)) -> Running {
    seed_wallet(dir).await;
    let mut s = wallet::Settings::default();
    common(&mut s.common, dir);
    f(&mut s);
    run!(wallet::Application::build(s))
}

pub async fn seed_wallet(dir: &Path) {
    let store = SqliteWallet::open(
        &dir.join(finpay_ledger::files::WALLET_DB),
        &SqliteOptions::default(),
    )
    .await
    .expect("wallet opens");
    store
        .open_accounts(test_accounts())
        .await
        .expect("accounts open");
}

/// The accounts every test wallet starts with, whatever its backend.
pub fn test_accounts() -> Vec<(AccountId, Currency, Balance)> {
    let acct = |s: &str| AccountId::try_from(s).expect("valid id");
    let bal = |m: u64| Balance::try_new(m).expect("valid balance");
    vec![
        (acct(CUSTOMER), Currency::Usd, bal(OPENING)),
        (acct("cust-0002"), Currency::Usd, bal(OPENING)),
        (acct("cust-poor"), Currency::Usd, bal(50)),
        (acct("cust-blocked"), Currency::Usd, bal(1_000_000)),
        (acct("cust-eur"), Currency::Eur, bal(OPENING)),
        (acct(MERCHANT), Currency::Usd, bal(0)),
    ]
}

pub async fn spawn_notification(
    dir: &Path,
    f: impl FnOnce(&mut notification::Settings),
) -> Running {
    let mut s = notification::Settings::default();
    common(&mut s.common, dir);
    f(&mut s);
    run!(notification::Application::build(s))
}

pub fn payment_settings(
    dir: &Path,
    fraud: &str,
    wallet: &str,
    notification: &str,
) -> payment::Settings {
    let mut s = payment::Settings::default();
    common(&mut s.common, dir);
    s.fraud.urls = vec![fraud.to_owned()];
    s.wallet.urls = vec![wallet.to_owned()];
    s.notification.urls = vec![notification.to_owned()];
    // Debug builds on a shared 2-core machine are slow; tests assert behaviour, not latency.
    for c in [
        &mut s.fraud.client,
        &mut s.wallet.client,
        &mut s.notification.client,
    ] {
        c.per_try_timeout_ms = 2_000;
        c.max_attempts = 10;
        c.seed = Some(7);
        c.hedge.enabled = false;
    }
    s.payment.deadline_ms = 10_000;
    // A lease outlives the deadline (validated); tests that need one to run out make their own.
    s.payment.lease_ms = 15_000;
    s.payment.outbox_interval_ms = 50;
    s.payment.outbox_backoff_base_ms = 20;
    s.payment.outbox_backoff_max_ms = 200;
    s.payment.resume_interval_ms = 100;
    s.demo.enabled = true;
    s.demo.customer_account = CUSTOMER.into();
    s
}

pub async fn spawn_payment(s: payment::Settings) -> Running {
    run!(payment::Application::build(s))
}

/// Fraud, wallet, notification and payment in one process, on one data directory.
pub struct Cluster {
    /// Held so the stores live as long as the cluster.
    _dir: tempfile::TempDir,
    pub fraud: Running,
    pub wallet: Running,
    pub notification: Running,
    pub payment: Running,
    pub http: reqwest::Client,
}

pub struct ClusterOpts {
    pub fraud: Box<dyn FnOnce(&mut fraud::Settings)>,
    pub wallet: Box<dyn FnOnce(&mut wallet::Settings)>,
    pub notification: Box<dyn FnOnce(&mut notification::Settings)>,
    pub payment: Box<dyn FnOnce(&mut payment::Settings)>,
}

impl Default for ClusterOpts {
    fn default() -> Self {
        Self {
            fraud: Box::new(|_| {}),
            wallet: Box::new(|_| {}),
            notification: Box::new(|_| {}),
            payment: Box::new(|_| {}),
        }
    }
}

impl Cluster {
    pub async fn start(opts: ClusterOpts) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let fraud = spawn_fraud(dir.path(), opts.fraud).await;
        let wallet = spawn_wallet(dir.path(), opts.wallet).await;
        let notification = spawn_notification(dir.path(), opts.notification).await;
        let mut s = payment_settings(dir.path(), &fraud.url, &wallet.url, &notification.url);
        (opts.payment)(&mut s);
        let payment = spawn_payment(s).await;
        Self {
            _dir: dir,
            fraud,
            wallet,
            notification,
            payment,
            http: client(),
        }
    }

    pub async fn pay(&self, key: &str, body: &Value) -> reqwest::Response {
        self.http
            .post(format!("{}/v1/payments", self.payment.url))
            .header("Idempotency-Key", key)
            .json(body)
            .send()
            .await
            .expect("payment request sent")
    }

    pub async fn balance(&self, account: &str) -> u64 {
        balance(&self.http, &self.wallet.url, account).await
    }

    pub async fn notifications(&self, account: &str) -> Vec<Value> {
        let v: Value = self
            .http
            .get(format!(
                "{}/v1/notifications?account_id={account}",
                self.notification.url
            ))
            .send()
            .await
            .expect("sent")
            .json()
            .await
            .expect("json");
        v["notifications"].as_array().cloned().unwrap_or_default()
    }

    pub async fn put_faults(&self, base: &str, faults: Value) {
        let r = self
            .http
            .put(format!("{base}/admin/faults"))
            .bearer_auth(ADMIN)
            .json(&faults)
            .send()
            .await
            .expect("sent");
        assert_eq!(r.status(), 200, "faults set");
    }
}

pub async fn balance(http: &reqwest::Client, wallet: &str, account: &str) -> u64 {
    let v: Value = http
        .get(format!("{wallet}/v1/accounts/{account}"))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    v["balance"]
        .as_u64()
        .unwrap_or_else(|| panic!("account {account} has a balance: {v}"))
}

pub fn payment_body(amount: u64) -> Value {
    serde_json::json!({
        "account_id": CUSTOMER,
        "merchant_account_id": MERCHANT,
        "amount_minor": amount,
        "currency": "USD",
        "description": "test",
    })
}

/// Asserts a problem+json answer with `status`, returning its body.
pub async fn assert_problem(resp: reqwest::Response, status: u16) -> Value {
    let got = resp.status().as_u16();
    let ct = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let body = resp.text().await.expect("body");
    assert_eq!(got, status, "status; body {body}");
    assert!(
        ct.starts_with("application/problem+json"),
        "content type {ct:?}; body {body}"
    );
    let v: Value = serde_json::from_str(&body).expect("problem is json");
    assert!(
        v["type"]
            .as_str()
            .is_some_and(|t| t.starts_with("urn:finpay:problem:")),
        "problem type: {v}"
    );
    assert_eq!(v["status"], status);
    v
}

/// Polls `f` until it returns `Some`, for at most `within`.
pub async fn eventually<T, F, Fut>(within: Duration, mut f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = tokio::time::Instant::now();
    loop {
        if let Some(v) = f().await {
            return Some(v);
        }
        if start.elapsed() > within {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
