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

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::Context as _;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::plan::splitmix64;

mod args;
pub use args::LoadArgs;

/// Slowest latency the histogram distinguishes; slower ones are recorded as this.
const LATENCY_MAX_US: u64 = 600_000_000;
/// At most this many seconds of timeline are kept (a day).
const TIMELINE_MAX: usize = 86_400;
/// At most this many per-request outcomes are kept when `record_outcomes` is set.
pub const OUTCOMES_MAX: usize = 1_000_000;

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
        }
    }
}

impl LoadConfig {
    pub const CONCURRENCY_MAX: usize = 4096;

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
        if self.amount_min_minor == 0 || self.amount_min_minor > self.amount_max_minor {
            return err(format!(
                "amounts must satisfy 1 <= --amount-min ({}) <= --amount-max ({})",
                self.amount_min_minor, self.amount_max_minor
            ));
        }
        if let Some(rate) = self.rate_per_s {
            if !(rate.is_finite() && rate > 0.0 && rate <= 1e6) {
                return err(format!(
                    "--rate must be between 0 and 1000000 per second, got {rate}"
                ));
            }
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

    /// Customer and amount of request `n`: a pure function of the seed and `n`.
    pub fn request(&self, n: u64) -> (String, u64) {
        let h = splitmix64(self.seed ^ splitmix64(n));
        let account = crate::seed::customer_id((h % u64::from(self.accounts)) as u32);
        let span = self.amount_max_minor - self.amount_min_minor + 1;
        let amount = self.amount_min_minor + (splitmix64(h) % span);
        (account, amount)
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

/// One second of the run (by completion time).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Second {
    pub second: u64,
    pub requests: u64,
    pub succeeded: u64,
    /// None when no request completed in this second.
    pub success_rate: Option<f64>,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// What happened to one request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    pub n: u64,
    pub idempotency_key: String,
    pub account_id: String,
    pub amount_minor: u64,
    /// HTTP status, None for a transport error.
    pub http_status: Option<u16>,
    pub payment_id: Option<String>,
    pub payment_status: Option<String>,
    /// When the request was due (open loop) or sent, in µs after the start of the run.
    #[serde(default)]
    pub started_us: u64,
    /// From `started_us` to the answer (or the transport error), in µs.
    #[serde(default)]
    pub latency_us: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoadReport {
    pub requests: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub declined: u64,
    pub success_rate: f64,
    pub throughput_rps: f64,
    pub elapsed_s: f64,
    pub latency_ms: Latency,
    pub errors: BTreeMap<String, u64>,
    /// Sum of the amounts of payments answered `succeeded`.
    pub succeeded_amount_minor: u64,
    pub timeline: Vec<Second>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outcomes: Vec<Outcome>,
}

/// A live view for progress bars: how far the run is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Progress {
    pub done: u64,
    pub succeeded: u64,
    pub elapsed: Duration,
    /// The last complete second, if any.
    pub last_second: Option<(f64, f64)>,
}

/// How one response is counted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Class {
    Succeeded,
    Declined,
    Failed(String),
}

/// Classifies a response: HTTP status (None = transport error) and the payment's `status` field.
pub fn classify(http_status: Option<u16>, payment_status: Option<&str>) -> Class {
    match (http_status, payment_status) {
        (None, _) => Class::Failed("transport".into()),
        (Some(code), Some("succeeded")) if (200..300).contains(&code) => Class::Succeeded,
        (Some(code), Some("declined")) if (200..300).contains(&code) => Class::Declined,
        (Some(code), Some(other)) if (200..300).contains(&code) => {
            Class::Failed(format!("{code}:{other}"))
        }
        (Some(code), None) if (200..300).contains(&code) => {
            Class::Failed(format!("{code}:unparsed"))
        }
        (Some(code), _) => Class::Failed(code.to_string()),
    }
}

/// The running totals; one lock, held for a few hundred nanoseconds per request.
struct Aggregate {
    start: Instant,
    all: Histogram<u64>,
    requests: u64,
    succeeded: u64,
    declined: u64,
    succeeded_amount_minor: u64,
    errors: BTreeMap<String, u64>,
    second: u64,
    second_hist: Histogram<u64>,
    second_requests: u64,
    second_succeeded: u64,
    timeline: Vec<Second>,
    outcomes: Vec<Outcome>,
}

fn histogram() -> anyhow::Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, LATENCY_MAX_US, 3).context("latency histogram")
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

impl Aggregate {
    fn new(start: Instant) -> anyhow::Result<Self> {
        Ok(Self {
            start,
            all: histogram()?,
            requests: 0,
            succeeded: 0,
            declined: 0,
            succeeded_amount_minor: 0,
            errors: BTreeMap::new(),
            second: 0,
            second_hist: histogram()?,
            second_requests: 0,
            second_succeeded: 0,
            timeline: Vec::new(),
            outcomes: Vec::new(),
        })
    }

    fn record(&mut self, latency: Duration, class: &Class, amount_minor: u64) {
        let sec = self.start.elapsed().as_secs();
        while self.second < sec {
            self.close_second();
        }
        let us = u64::try_from(latency.as_micros())
            .unwrap_or(LATENCY_MAX_US)
            .clamp(1, LATENCY_MAX_US);
        let _ = self.all.record(us);
        let _ = self.second_hist.record(us);
        self.requests += 1;
        self.second_requests += 1;
        match class {
            Class::Succeeded => {
                self.succeeded += 1;
                self.second_succeeded += 1;
                self.succeeded_amount_minor =
                    self.succeeded_amount_minor.saturating_add(amount_minor);
            }
            Class::Declined => {
                self.succeeded += 1;
                self.second_succeeded += 1;
                self.declined += 1;
            }
            Class::Failed(key) => *self.errors.entry(key.clone()).or_insert(0) += 1,
        }
    }

    fn close_second(&mut self) {
        if self.timeline.len() < TIMELINE_MAX {
            self.timeline.push(Second {
                second: self.second,
                requests: self.second_requests,
                succeeded: self.second_succeeded,
                success_rate: (self.second_requests > 0)
                    .then(|| self.second_succeeded as f64 / self.second_requests as f64),
                p50_ms: ms(self.second_hist.value_at_quantile(0.5)),
                p99_ms: ms(self.second_hist.value_at_quantile(0.99)),
            });
        }
        self.second_hist.reset();
        self.second_requests = 0;
        self.second_succeeded = 0;
        self.second += 1;
    }

    fn progress(&self) -> Progress {
        Progress {
            done: self.requests,
            succeeded: self.succeeded,
            elapsed: self.start.elapsed(),
            last_second: self
                .timeline
                .last()
                .map(|s| (s.success_rate.unwrap_or(0.0), s.p99_ms)),
        }
    }

    fn report(mut self, elapsed: Duration) -> LoadReport {
        if self.second_requests > 0 {
            self.close_second();
        }
        let secs = elapsed.as_secs_f64().max(1e-9);
        let q = |p: f64| ms(self.all.value_at_quantile(p));
        LoadReport {
            requests: self.requests,
            succeeded: self.succeeded,
            failed: self.requests - self.succeeded,
            declined: self.declined,
            success_rate: if self.requests == 0 {
                0.0
            } else {
                self.succeeded as f64 / self.requests as f64
            },
            throughput_rps: self.requests as f64 / secs,
            elapsed_s: elapsed.as_secs_f64(),
            latency_ms: Latency {
                p50: q(0.5),
                p90: q(0.9),
                p99: q(0.99),
                p999: q(0.999),
                max: ms(self.all.max()),
            },
            errors: self.errors,
            succeeded_amount_minor: self.succeeded_amount_minor,
            timeline: self.timeline,
            outcomes: self.outcomes,
        }
    }
}

/// Runs the load and returns its report.
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
    let next = Arc::new(AtomicU64::new(0));
    let agg = Arc::new(Mutex::new(Aggregate::new(start)?));
    let cfg = Arc::new(cfg);

    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..cfg.concurrency {
        let (client, endpoint, prefix, next, agg, cfg) = (
            client.clone(),
            endpoint.clone(),
            prefix.clone(),
            next.clone(),
            agg.clone(),
            cfg.clone(),
        );
        workers.spawn(async move {
            loop {
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    break;
                }
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= limit {
                    break;
                }
                let due = cfg.due_after_start(n).map(|d| start + d);
                if let Some(due) = due {
                    if deadline.is_some_and(|d| due >= d) {
                        break;
                    }
                    tokio::time::sleep_until(due).await;
                }
                let (account, amount) = cfg.request(n);
                let key = format!("{prefix}-{n}");
                let body = serde_json::json!({
                    "account_id": account,
                    "merchant_account_id": cfg.merchant,
                    "amount_minor": amount,
                    "currency": cfg.currency,
                    "description": "finpay load",
                });
                let sent = due.unwrap_or_else(Instant::now);
                let (http_status, payment) = send(&client, &endpoint, &key, &body).await;
                let latency = sent.elapsed();
                let (payment_id, payment_status) = payment.unwrap_or_default();
                let class = classify(http_status, payment_status.as_deref());
                let mut a = agg.lock().unwrap_or_else(PoisonError::into_inner);
                a.record(latency, &class, amount);
                if cfg.record_outcomes && a.outcomes.len() < OUTCOMES_MAX {
                    a.outcomes.push(Outcome {
                        n,
                        idempotency_key: key,
                        account_id: account,
                        amount_minor: amount,
                        http_status,
                        payment_id,
                        payment_status,
                        started_us: u64::try_from(
                            sent.saturating_duration_since(start).as_micros(),
                        )
                        .unwrap_or(u64::MAX),
                        latency_us: u64::try_from(latency.as_micros()).unwrap_or(u64::MAX),
                    });
                }
            }
        });
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
                let p = agg.lock().unwrap_or_else(PoisonError::into_inner).progress();
                observe(&p);
            }
        }
    }
    let elapsed = start.elapsed();
    let agg = Arc::try_unwrap(agg)
        .map_err(|_| anyhow::anyhow!("load workers still hold the aggregate"))?
        .into_inner()
        .unwrap_or_else(PoisonError::into_inner);
    observe(&agg.progress());
    let mut report = agg.report(elapsed);
    report.outcomes.sort_by_key(|o| o.n);
    Ok(report)
}

/// Sends one payment. Returns the HTTP status (None when no response arrived) and, when the body is
/// a payment, its id and status.
async fn send(
    client: &reqwest::Client,
    endpoint: &str,
    key: &str,
    body: &serde_json::Value,
) -> (Option<u16>, Option<(Option<String>, Option<String>)>) {
    let resp = match client
        .post(endpoint)
        .header("Idempotency-Key", key)
        .json(body)
        .send()
        .await
    {
        Ok(r) => r,
        Err(_) => return (None, None),
    };
    let status = resp.status().as_u16();
    let Ok(bytes) = resp.bytes().await else {
        return (None, None);
    };
    let payment = serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .map(|v| {
            let field = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_owned);
            // A 201 carries the payment (`id`, `status`); a 503 problem names it in extensions
            // (`payment_id`, `status`), where RFC 9457's numeric `status` is not a string.
            (field("id").or_else(|| field("payment_id")), field("status"))
        });
    (Some(status), payment)
}

impl LoadReport {
    /// The report for a person.
    pub fn human(&self, url: &str, concurrency: usize) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "finpay load: {} requests to {url} in {:.2} s, {:.1} req/s (concurrency {concurrency})",
            self.requests, self.elapsed_s, self.throughput_rps
        );
        let _ = writeln!(
            out,
            "  succeeded   {} ({:.2}%), of which declined {}",
            self.succeeded,
            self.success_rate * 100.0,
            self.declined
        );
        let _ = writeln!(out, "  failed      {}", self.failed);
        if !self.errors.is_empty() {
            let errs: Vec<String> = self
                .errors
                .iter()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect();
            let _ = writeln!(out, "  errors      {}", errs.join(", "));
        }
        let l = &self.latency_ms;
        let _ = writeln!(
            out,
            "  latency ms  p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}",
            l.p50, l.p90, l.p99, l.p999, l.max
        );
        out
    }

    /// The one JSON object of `finpay load --json` (outcomes are written elsewhere).
    pub fn summary_json(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).unwrap_or(serde_json::Value::Null);
        if let Some(o) = v.as_object_mut() {
            o.remove("outcomes");
        }
        v
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
            a.record(Duration::from_millis(i), &Class::Succeeded, 10);
        }
        a.record(Duration::from_millis(97), &Class::Declined, 10);
        a.record(Duration::from_millis(98), &Class::Failed("503".into()), 10);
        a.record(Duration::from_millis(99), &Class::Failed("503".into()), 10);
        a.record(
            Duration::from_millis(1000),
            &Class::Failed("transport".into()),
            10,
        );
        let r = a.report(Duration::from_secs(2));
        assert_eq!(r.requests, 100);
        assert_eq!(r.succeeded, 97);
        assert_eq!(r.declined, 1);
        assert_eq!(r.failed, 3);
        assert!((r.success_rate - 0.97).abs() < 1e-12);
        assert!((r.throughput_rps - 50.0).abs() < 1e-9);
        assert_eq!(r.succeeded_amount_minor, 960);
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
