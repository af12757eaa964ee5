//! The load engine behind `finpay load` (and, in-process, the chaos harness): real payments over
//! pooled keep-alive HTTP connections, each with its own `Idempotency-Key`, bounded by a request
//! count and by time, with latency in an HDR histogram and a per-second timeline.
//!
//! "Succeeded" is what a user would call success: a 201 whose payment is `succeeded`, or `declined`
//! for a business reason (fraud DENY, insufficient funds); declined ones are also counted on their
//! own. Everything else is a failure, counted by status: the HTTP code (`503`), a 2xx whose payment
//! ended elsewhere (`201:failed`), or `transport` when no response came back at all.
//!
//! Request `n` of a run is a pure function of `(seed, n)` (customer and amount), so two runs with the
//! same seed send the same payments whatever the scheduling; keys carry a per-run random prefix so two
//! runs never replay each other.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::Context as _;

use tokio::time::Instant;

use finpay_api::headers::IDEMPOTENCY_KEY;
use finpay_api::payment::CreatePayment;
use finpay_core::{AccountId, Amount};
use finpay_resilience::retry::backoff::{Backoff, Jitter};

use crate::plan::splitmix64;

mod args;
mod html;
mod report;
pub use args::LoadArgs;
use report::Aggregate;
pub use report::{classify, Bucket, Class, Latency, LoadReport, Outcome, Progress, Second};

/// Slowest latency the histogram distinguishes; slower ones are recorded as this.
const LATENCY_MAX_US: u64 = 600_000_000;
/// At most this many seconds of timeline are kept (a day).
const TIMELINE_MAX: usize = 86_400;
/// At most this many per-request outcomes are kept when `record_outcomes` is set.
pub const OUTCOMES_MAX: usize = 1_000_000;
/// The careful client's backoff between retries: 50 ms doubling to 1 s, full jitter.
const RETRY_BACKOFF_BASE: Duration = Duration::from_millis(50);
const RETRY_BACKOFF_MAX: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, PartialEq)]
pub struct LoadConfig {
    /// Payment's base URL, e.g. `http://127.0.0.1:8080`.
    pub url: String,
    /// Stop after this many requests (None: only the duration bounds the run).
    pub requests: Option<u64>,
    /// Stop starting requests after this long (None: only the count bounds the run).
    pub duration: Option<Duration>,
    pub concurrency: usize,
    /// Customers `cust-0000` .. `cust-{accounts-1}` pay.
    pub accounts: u32,
    pub amount_min_minor: u64,
    pub amount_max_minor: u64,
    pub currency: String,
    pub merchant: String,
    pub seed: u64,
    /// Per-request bound, after which the request counts as `transport`.
    pub request_timeout: Duration,
    /// Keep each request's key, amount and outcome in the report (for reconciliation).
    pub record_outcomes: bool,
    /// Open loop: start request `n` at `n / rate` seconds, whatever the answers, and measure its
    /// latency from that intended start (so queueing behind a slow system counts, with no
    /// coordinated omission). None: closed loop, each worker sends as soon as its last answer came.
    pub rate_per_s: Option<f64>,
    /// Retries of a careful client, with the same Idempotency-Key: after a transport error, a 409,
    /// a 429, or a 503 with `Retry-After`. 0: every request is sent once.
    pub client_retries: u32,
}

impl Default for LoadConfig {
    fn default() -> Self {
        Self {
            url: "http://127.0.0.1:8080".into(),
            requests: Some(1000),
            duration: None,
            concurrency: 16,
            accounts: 100,
            amount_min_minor: 100,
            amount_max_minor: 10_000,
            currency: "USD".into(),
            merchant: crate::seed::MERCHANT.into(),
            seed: 1,
            request_timeout: Duration::from_secs(30),
            record_outcomes: false,
            rate_per_s: None,
            client_retries: 0,
        }
    }
}

impl LoadConfig {
    pub const CONCURRENCY_MAX: usize = 4096;
    pub const CLIENT_RETRIES_MAX: u32 = 20;

    pub fn validate(&self) -> Result<(), crate::ConfigError> {
        let err = |m: String| Err(crate::ConfigError(m));
        if self.requests.is_none() && self.duration.is_none() {
            return err("give --requests, --duration or both".into());
        }
        if self.requests == Some(0) {
            return err("--requests must be at least 1".into());
        }
        if self.concurrency == 0 || self.concurrency > Self::CONCURRENCY_MAX {
            return err(format!(
                "--concurrency must be between 1 and {}, got {}",
                Self::CONCURRENCY_MAX,
                self.concurrency
            ));
        }
        if self.accounts == 0 || self.accounts > 10_000 {
            return err(format!(
                "--accounts must be between 1 and 10000, got {}",
                self.accounts
            ));
        }
        if self.amount_min_minor == 0
            || self.amount_min_minor > self.amount_max_minor
            || self.amount_max_minor > Amount::MAX_MINOR
        {
            return err(format!(
                "amounts must satisfy 1 <= --amount-min ({}) <= --amount-max ({}) <= {}",
                self.amount_min_minor,
                self.amount_max_minor,
                Amount::MAX_MINOR
            ));
        }
        if AccountId::try_from(self.merchant.as_str()).is_err()
            || self.currency.parse::<finpay_core::Currency>().is_err()
        {
            return err(format!(
                "the merchant {:?} and currency {:?} must be a valid account id and currency",
                self.merchant, self.currency
            ));
        }
        if let Some(rate) = self.rate_per_s {
            if !(rate.is_finite() && rate > 0.0 && rate <= 1e6) {
                return err(format!(
                    "--rate must be between 0 and 1000000 per second, got {rate}"
                ));
            }
        }
        if self.client_retries > Self::CLIENT_RETRIES_MAX {
            return err(format!(
                "--client-retries must be at most {}, got {}",
                Self::CLIENT_RETRIES_MAX,
                self.client_retries
            ));
        }
        if !(self.url.starts_with("http://") || self.url.starts_with("https://")) {
            return err(format!("--url {:?} must start with http://", self.url));
        }
        Ok(())
    }

    /// When request `n` is due after the start, in open-loop mode.
    pub fn due_after_start(&self, n: u64) -> Option<Duration> {
        self.rate_per_s
            .map(|rate| Duration::from_secs_f64((n as f64 / rate).min(1e9)))
    }

    /// The body of a payment from `account` of `amount` minor units to the merchant.
    pub fn body(&self, account: &str, amount: u64) -> anyhow::Result<CreatePayment> {
        Ok(CreatePayment {
            account_id: AccountId::try_from(account).context("account id")?,
            merchant_account_id: AccountId::try_from(self.merchant.as_str())
                .context("merchant id")?,
            amount_minor: Amount::try_new(amount).context("amount")?,
            currency: self.currency.parse().context("currency")?,
            description: Some("finpay load".into()),
        })
    }

    /// Customer and amount of request `n`: a pure function of the seed and `n`.
    pub fn request(&self, n: u64) -> (String, u64) {
        let h = splitmix64(self.seed ^ splitmix64(n));
        let account = crate::seed::customer_id((h % u64::from(self.accounts)) as u32);
        let span = self.amount_max_minor - self.amount_min_minor + 1;
        let amount = self.amount_min_minor + (splitmix64(h) % span);
        (account, amount)
    }
}

pub async fn run(cfg: LoadConfig) -> anyhow::Result<LoadReport> {
    run_observed(cfg, |_| {}).await
}

/// Runs the load, calling `observe` about five times a second with the progress so far.
pub async fn run_observed(
    cfg: LoadConfig,
    mut observe: impl FnMut(&Progress),
) -> anyhow::Result<LoadReport> {
    cfg.validate()?;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(cfg.concurrency)
        .timeout(cfg.request_timeout)
        .connect_timeout(cfg.request_timeout.min(Duration::from_secs(5)))
        .tcp_nodelay(true)
        .build()
        .context("build HTTP client")?;
    let endpoint = format!("{}/v1/payments", cfg.url.trim_end_matches('/'));
    let prefix = format!("load-{}", uuid::Uuid::new_v4().simple());
    let start = Instant::now();
    let deadline = cfg.duration.map(|d| start + d);
    let limit = cfg.requests.unwrap_or(u64::MAX);

    let backoff = Backoff::try_new(
        RETRY_BACKOFF_BASE,
        RETRY_BACKOFF_MAX,
        Jitter::Full,
        Some(cfg.seed),
    )
    .context("client retry backoff")?;
    let run = Arc::new(Run {
        client,
        backoff,
        endpoint,
        prefix,
        next: AtomicU64::new(0),
        agg: Mutex::new(Aggregate::new(start)?),
        cfg,
        start,
        deadline,
        limit,
    });
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..run.cfg.concurrency {
        workers.spawn(worker(run.clone()));
    }
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    loop {
        tokio::select! {
            joined = workers.join_next() => match joined {
                None => break,
                Some(Err(e)) => anyhow::bail!("load worker failed: {e}"),
                Some(Ok(())) => {}
            },
            _ = tick.tick() => {
                let p = run.agg.lock().unwrap_or_else(PoisonError::into_inner).progress();
                observe(&p);
            }
        }
    }
    let elapsed = start.elapsed();
    let agg = Arc::try_unwrap(run)
        .map_err(|_| anyhow::anyhow!("load workers still hold the aggregate"))?
        .agg
        .into_inner()
        .unwrap_or_else(PoisonError::into_inner);
    observe(&agg.progress());
    let mut report = agg.report(elapsed);
    report.outcomes.sort_by_key(|o| o.n);
    Ok(report)
}

/// What the workers of one run share.
struct Run {
    client: reqwest::Client,
    /// The careful client's backoff between retries of one payment.
    backoff: Backoff,
    endpoint: String,
    prefix: String,
    next: AtomicU64,
    agg: Mutex<Aggregate>,
    cfg: LoadConfig,
    start: Instant,
    deadline: Option<Instant>,
    limit: u64,
}

/// One worker: takes the next request number until the count or the time is spent.
async fn worker(run: Arc<Run>) {
    let cfg = &run.cfg;
    loop {
        if run.deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        let n = run.next.fetch_add(1, Ordering::Relaxed);
        if n >= run.limit {
            break;
        }
        let due = cfg.due_after_start(n).map(|d| run.start + d);
        if let Some(due) = due {
            if run.deadline.is_some_and(|d| due >= d) {
                break;
            }
            tokio::time::sleep_until(due).await;
        }
        let (account, amount) = cfg.request(n);
        let key = format!("{}-{n}", run.prefix);
        let body = match cfg.body(&account, amount) {
            Ok(b) => b,
            Err(e) => {
                // `validate` keeps every request of the run inside the contract's bounds.
                tracing::error!(error = %e, n, "load: request outside the contract; worker stops");
                break;
            }
        };
        let sent = due.unwrap_or_else(Instant::now);
        let tried = send_with_retries(&run, &key, &body).await;
        let latency = sent.elapsed();
        let Answer {
            http_status,
            payment_id,
            payment_status,
            ..
        } = tried.last;
        let last = classify(http_status, payment_status.as_deref());
        let mut a = run.agg.lock().unwrap_or_else(PoisonError::into_inner);
        a.record(latency, &tried.first, &last, amount, tried.retries);
        if cfg.record_outcomes && a.outcomes.len() < OUTCOMES_MAX {
            a.outcomes.push(Outcome {
                n,
                idempotency_key: key,
                account_id: account,
                amount_minor: amount,
                http_status,
                payment_id,
                payment_status,
                attempts: tried.retries + 1,
                first_ok: !matches!(tried.first, Class::Failed(_)),
                started_us: u64::try_from(sent.saturating_duration_since(run.start).as_micros())
                    .unwrap_or(u64::MAX),
                latency_us: u64::try_from(latency.as_micros()).unwrap_or(u64::MAX),
            });
        }
    }
}

/// What one send of a payment got back.
#[derive(Debug, Clone, Default)]
struct Answer {
    /// None when no response arrived.
    http_status: Option<u16>,
    payment_id: Option<String>,
    payment_status: Option<String>,
    retry_after: Option<Duration>,
}

impl Answer {
    /// Whether a careful client sends the same request again: nothing came back, the key is still
    /// being processed (409), the client is being slowed (429), or the service says when to come
    /// back (503 with `Retry-After`).
    fn retryable(&self) -> bool {
        match self.http_status {
            None | Some(409) | Some(429) => true,
            Some(503) => self.retry_after.is_some(),
            _ => false,
        }
    }
}

/// The first answer's class, the last answer, and how many times the request was sent again.
struct Tried {
    first: Class,
    last: Answer,
    retries: u32,
}

/// Longest `Retry-After` a careful client honours before it tries again anyway.
const RETRY_AFTER_MAX: Duration = Duration::from_secs(2);

/// Sends one payment, and again (same key) while the answer is retryable and retries are left,
/// sleeping `Retry-After` (at most [`RETRY_AFTER_MAX`]) or a capped exponential backoff with full
/// jitter between the sends.
async fn send_with_retries(run: &Run, key: &str, body: &CreatePayment) -> Tried {
    let mut last = send(&run.client, &run.endpoint, key, body).await;
    let first = classify(last.http_status, last.payment_status.as_deref());
    let mut retries = 0;
    while retries < run.cfg.client_retries && last.retryable() {
        retries += 1;
        let wait = match last.retry_after {
            Some(after) => after.min(RETRY_AFTER_MAX),
            None => run.backoff.delay(retries, Duration::ZERO),
        };
        tokio::time::sleep(wait).await;
        last = send(&run.client, &run.endpoint, key, body).await;
    }
    Tried {
        first,
        last,
        retries,
    }
}

/// Sends one payment once.
async fn send(client: &reqwest::Client, endpoint: &str, key: &str, body: &CreatePayment) -> Answer {
    let resp = match client
        .post(endpoint)
        .header(IDEMPOTENCY_KEY, key)
        .json(body)
        .send()
        .await
    {
        Ok(r) => r,
        Err(_) => return Answer::default(),
    };
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let Ok(bytes) = resp.bytes().await else {
        return Answer::default();
    };
    let fields = serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .map(|v| {
            let field = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_owned);
            // A 201 carries the payment (`id`, `status`); a 503 problem names it in extensions
            // (`payment_id`, `payment_status`), where RFC 9457's numeric `status` is not a string.
            (field("id").or_else(|| field("payment_id")), field("status"))
        })
        .unwrap_or_default();
    Answer {
        http_status: Some(status),
        payment_id: fields.0,
        payment_status: fields.1,
        retry_after,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn business_declines_count_as_success_and_everything_else_by_status() {
        assert_eq!(classify(Some(201), Some("succeeded")), Class::Succeeded);
        assert_eq!(classify(Some(201), Some("declined")), Class::Declined);
        assert_eq!(
            classify(Some(201), Some("failed")),
            Class::Failed("201:failed".into())
        );
        assert_eq!(classify(Some(503), None), Class::Failed("503".into()));
        assert_eq!(
            classify(Some(409), Some("succeeded")),
            Class::Failed("409".into())
        );
        assert_eq!(classify(None, None), Class::Failed("transport".into()));
    }

    #[test]
    fn report_math_counts_rates_percentiles_and_errors() {
        let start = Instant::now();
        let mut a = Aggregate::new(start).expect("aggregate");
        for i in 1..=96u64 {
            a.record(
                Duration::from_millis(i),
                &Class::Succeeded,
                &Class::Succeeded,
                10,
                0,
            );
        }
        a.record(
            Duration::from_millis(97),
            &Class::Declined,
            &Class::Declined,
            10,
            0,
        );
        a.record(
            Duration::from_millis(98),
            &Class::Failed("503".into()),
            &Class::Failed("503".into()),
            10,
            0,
        );
        a.record(
            Duration::from_millis(99),
            &Class::Failed("503".into()),
            &Class::Failed("503".into()),
            10,
            0,
        );
        // A transport error the client's retry turned into a success.
        a.record(
            Duration::from_millis(1000),
            &Class::Failed("transport".into()),
            &Class::Succeeded,
            10,
            1,
        );
        let r = a.report(Duration::from_secs(2));
        assert_eq!(r.succeeded_after_retries, 98);
        assert_eq!(r.retries, 1);
        assert_eq!(r.errors_after_retries.get("503"), Some(&2));
        assert!((r.success_rate_after_retries - 0.98).abs() < 1e-9);
        assert_eq!(r.requests, 100);
        assert_eq!(r.succeeded, 97);
        assert_eq!(r.declined, 1);
        assert_eq!(r.failed, 3);
        assert!((r.success_rate - 0.97).abs() < 1e-12);
        assert!((r.throughput_rps - 50.0).abs() < 1e-9);
        // 96 succeeded at once and 1 after its retry; the declined one moved nothing.
        assert_eq!(r.succeeded_amount_minor, 970);
        assert_eq!(r.errors.get("503"), Some(&2));
        assert_eq!(r.errors.get("transport"), Some(&1));
        // HDR with 3 significant digits: within 0.1%.
        assert!((r.latency_ms.p50 - 50.0).abs() < 0.1, "{:?}", r.latency_ms);
        assert!((r.latency_ms.p90 - 90.0).abs() < 0.1, "{:?}", r.latency_ms);
        assert!((r.latency_ms.p99 - 99.0).abs() < 0.1, "{:?}", r.latency_ms);
        assert!(
            (r.latency_ms.max - 1000.0).abs() < 1.0,
            "{:?}",
            r.latency_ms
        );
        let h = &r.latency_histogram;
        assert_eq!(h.iter().map(|b| b.count).sum::<u64>(), 100, "{h:?}");
        assert_eq!(h[0].le_ms, 0.25);
        assert!(
            h.windows(2).all(|w| w[1].le_ms == 2.0 * w[0].le_ms),
            "{h:?}"
        );
        let last = h.last().expect("a bucket");
        assert_eq!((last.le_ms, last.count), (1024.0, 1), "the 1 s request");
        let page = html::html(&r, "http://127.0.0.1:1", 4);
        assert_eq!(
            page.matches("<svg").count(),
            3,
            "success, latency, histogram"
        );
        assert!(
            page.contains("<td>503</td><td>2</td><td>2</td>"),
            "errors by kind"
        );
        assert!(page.contains("<td>transport</td><td>1</td><td>0</td>"));
        assert!(!page.contains("<script") && !page.contains("src="));
        assert_eq!(r.timeline.len(), 1);
        assert_eq!(r.timeline[0].requests, 100);
        assert_eq!(r.timeline[0].success_rate, Some(0.97));
        let json = r.summary_json();
        for key in [
            "requests",
            "succeeded",
            "failed",
            "declined",
            "success_rate",
            "throughput_rps",
            "latency_ms",
            "errors",
        ] {
            assert!(json.get(key).is_some(), "missing {key}");
        }
        for key in ["p50", "p90", "p99", "p999", "max"] {
            assert!(
                json["latency_ms"].get(key).is_some(),
                "missing latency {key}"
            );
        }
    }

    #[test]
    fn empty_run_reports_zero_not_nan() {
        let r = Aggregate::new(Instant::now())
            .expect("aggregate")
            .report(Duration::ZERO);
        assert_eq!(r.requests, 0);
        assert_eq!(r.success_rate, 0.0);
        assert!(r.throughput_rps.is_finite());
        assert!(r.timeline.is_empty());
    }

    #[test]
    fn requests_are_a_pure_function_of_seed_and_index_within_bounds() {
        let cfg = LoadConfig {
            accounts: 7,
            amount_min_minor: 5,
            amount_max_minor: 9,
            ..LoadConfig::default()
        };
        let mut accounts = std::collections::BTreeSet::new();
        for n in 0..1000 {
            let (acct, amount) = cfg.request(n);
            assert_eq!(cfg.request(n), (acct.clone(), amount));
            assert!((5..=9).contains(&amount));
            accounts.insert(acct);
        }
        assert_eq!(accounts.len(), 7);
        assert!(accounts.contains("cust-0006"));
    }

    #[test]
    fn open_loop_schedule_spaces_requests_by_the_rate() {
        let cfg = LoadConfig {
            rate_per_s: Some(200.0),
            ..LoadConfig::default()
        };
        assert_eq!(cfg.due_after_start(0), Some(Duration::ZERO));
        assert_eq!(cfg.due_after_start(200), Some(Duration::from_secs(1)));
        assert_eq!(cfg.due_after_start(1), Some(Duration::from_millis(5)));
        assert_eq!(LoadConfig::default().due_after_start(7), None);
    }

    #[test]
    fn config_bounds_are_checked() {
        let bad = [
            LoadConfig {
                rate_per_s: Some(0.0),
                ..LoadConfig::default()
            },
            LoadConfig {
                requests: None,
                duration: None,
                ..LoadConfig::default()
            },
            LoadConfig {
                concurrency: 0,
                ..LoadConfig::default()
            },
            LoadConfig {
                amount_min_minor: 10,
                amount_max_minor: 5,
                ..LoadConfig::default()
            },
            LoadConfig {
                url: "127.0.0.1:8080".into(),
                ..LoadConfig::default()
            },
        ];
        for cfg in bad {
            assert!(cfg.validate().is_err(), "{cfg:?}");
        }
        assert!(LoadConfig::default().validate().is_ok());
    }

    /// A fake payment service: odd-numbered requests succeed, even ones get 503.
    #[tokio::test]
    async fn engine_drives_a_server_and_counts_what_it_answered() {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let counter = Arc::new(AtomicU64::new(0));
        tokio::spawn(async move {
            for _ in 0..100 {
                let Ok((mut sock, _)) = listener.accept().await else {
                    return;
                };
                let counter = counter.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 8192];
                    for _ in 0..1000 {
                        // One request per read is enough for this client (small bodies).
                        match sock.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(_) => {}
                        }
                        let n = counter.fetch_add(1, Ordering::Relaxed);
                        let (status, body) = if n % 2 == 1 {
                            ("201 Created", r#"{"id":"p","status":"succeeded"}"#)
                        } else {
                            ("503 Service Unavailable", r#"{"type":"x"}"#)
                        };
                        let resp = format!(
                            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                            body.len()
                        );
                        if sock.write_all(resp.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        let report = run(LoadConfig {
            url: format!("http://127.0.0.1:{port}"),
            requests: Some(200),
            concurrency: 1,
            record_outcomes: true,
            ..LoadConfig::default()
        })
        .await
        .expect("load runs");
        assert_eq!(report.requests, 200);
        assert_eq!(report.succeeded, 100);
        assert_eq!(report.errors.get("503"), Some(&100));
        assert_eq!(report.outcomes.len(), 200);
        assert!(report.outcomes.windows(2).all(|w| w[0].n < w[1].n));
        let total: u64 = report
            .outcomes
            .iter()
            .filter(|o| o.payment_status.as_deref() == Some("succeeded"))
            .map(|o| o.amount_minor)
            .sum();
        assert_eq!(total, report.succeeded_amount_minor);
    }
}
